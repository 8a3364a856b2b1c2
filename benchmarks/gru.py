"""Recurrent layers at Magenta's decoder shape: mlx.nn.GRU vs. mlx_ddsp's GRU and minGRU, forward and
forward+backward, compiled as in a training step (--eager: not), median of --repeats after a warm-up.

    python benchmarks/gru.py [--batch 4] [--frames 1000] [--units 512] [--inputs 1024] [--repeats 3] [--eager]
                             [--out FILE]

The input size 1024 is the decoder's (two 512-unit MLP stacks concatenated). mlx.nn.GRU's forward+backward is
autodiff through its Python loop over frames; mlx_ddsp's GRU has a hand-written backward pass.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

import mlx.core as mx
import mlx.nn as nn
from rich.console import Console
from rich.table import Table

from common import machine, summary_ms, time_calls, write_json
from mlx_ddsp.native import use_native_libraries
from mlx_ddsp.models import GRU, MinGRU


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--units", type=int, default=512)
    parser.add_argument("--inputs", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eager", action="store_true", help="do not compile (mx.compile) the timed functions")
    parser.add_argument("--out", help="write the records as JSON here")
    args = parser.parse_args()
    mx.random.seed(0)
    x = mx.random.normal((args.batch, args.frames, args.inputs))
    layers = {"mlx.nn.GRU": nn.GRU(args.inputs, args.units), "mlx_ddsp GRU": GRU(args.inputs, args.units),
              "mlx_ddsp minGRU": MinGRU(args.inputs, args.units)}
    console = Console(width=150)
    info = machine()
    console.print(f"{info['device']}, mlx {info['mlx_version']}, BLAS: {info['blas']}; batch {args.batch} x "
                  f"{args.frames} frames x {args.units} units, {args.inputs} inputs, "
                  f"{'eager' if args.eager else 'compiled'}")
    records = []
    for name, layer in layers.items():
        states = (lambda x, layer=layer: layer(x)) if name == "mlx.nn.GRU" else (lambda x, layer=layer: layer(x)[0])
        loss_and_grad = nn.value_and_grad(layer, lambda x, states=states: (states(x) ** 2).mean())
        for mode, fn in (("forward", states), ("forward+backward", loss_and_grad)):
            if not args.eager:  # the parameters are captured state, as in the training step
                fn = partial(mx.compile, inputs=layer.state, outputs=layer.state)(fn)
            ms = summary_ms(time_calls(lambda fn=fn: fn(x), args.repeats + 1)[1:])
            records.append({"layer": name, "mode": mode, "compiled": not args.eager, "ms_median": ms["median"],
                            "ms_min": ms["min"]})
            console.print(f"  {name} {mode}: {ms['median']:.0f} ms")
    write_json(args.out, records)
    table = Table(title="recurrent layers")
    for column in ("layer", "mode", "median ms", "min ms"):
        table.add_column(column, justify="right")
    for r in records:
        table.add_row(r["layer"], r["mode"], f"{r['ms_median']:.0f}", f"{r['ms_min']:.0f}")
    console.print(table)


if __name__ == "__main__":
    use_native_libraries()
    sys.exit(main())
