"""Compiled training step vs. chunk length: step time, audio trained per second, peak memory.

    python benchmarks/chunk_length.py [--recipe R] [--chunks 0.5 1 2 4 8] [--batch N] [--steps N] [--f0 HZ] [--quick]
                                      [--rates HZ ...] [--out FILE.json] [--figure FILE.png] [key=value ...]
    python benchmarks/chunk_length.py --plot FILE.json [--figure FILE.png]

For each model (the recipe's, and the tiny one of recipes/smoke.yaml) and each chunk length, two settings are timed:
the same batch for every chunk length ("fixed batch"), and the same seconds of audio per batch, i.e. batch x chunk =
the recipe's batch_size x example_seconds ("fixed audio"). Each setting: one compiled step (compile time reported
apart), two warm-up steps, then --steps timed steps (median, min, max). Inputs are synthetic (timing does not depend
on the audio), so no dataset is needed. On Linux the script re-runs itself with OpenBLAS and tcmalloc when they
are installed (see mlx_ddsp/native.py). --quick: chunks 0.5 1 2, fixed batch only, 3 steps (about a minute);
--chunks and --steps given explicitly win over it. --rates 16000 48000: the same settings at each sample rate (the
recipe at that `data.sample_rate`: same seconds of audio, same decoder; FFT sizes scale with the rate).
The figure (--figure, default: --out with .png) draws step time and peak memory against chunk length, one line per
model and setting; --plot redraws it from a JSON this script wrote, without measuring.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import json

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogFormatter
from rich.console import Console
from rich.table import Table

from common import machine, summary_ms, time_calls, write_json
from mlx_ddsp.native import use_native_libraries
from mlx_ddsp.config import load_config
from mlx_ddsp.features import frame_hop
from mlx_ddsp.figures import save
from mlx_ddsp.models import build_model
from mlx_ddsp.train import learning_rate_schedule, make_train_step

ROOT = Path(__file__).resolve().parents[1]


def synthetic_batch(batch: int, seconds: float, cfg, f0_hz: float = 330.0) -> tuple[mx.array, mx.array, mx.array]:
    """Audio, and f0 wandering half an octave around f0_hz (which sets how many harmonics can sound)."""
    n_frames = int(round(seconds * cfg.features.frame_rate)) + 1
    n_samples = (n_frames - 1) * frame_hop(cfg.data.sample_rate, cfg.features.frame_rate)
    t = np.linspace(0, seconds, n_frames, dtype=np.float32)
    f0 = f0_hz * 2 ** (0.5 * np.sin(2 * np.pi * 0.5 * t + np.arange(batch)[:, None]))
    loudness = -30 + 10 * np.sin(2 * np.pi * 0.3 * t + np.arange(batch)[:, None])
    audio = np.random.default_rng(0).uniform(-0.3, 0.3, (batch, n_samples)).astype(np.float32)
    return mx.array(audio), mx.array(f0.astype(np.float32)), mx.array(loudness.astype(np.float32))


def measure(cfg, batch: int, seconds: float, steps: int, f0_hz: float) -> dict:
    mx.random.seed(0)
    model = build_model(cfg)
    optimizer = optim.Adam(learning_rate=learning_rate_schedule(cfg), bias_correction=True)
    optimizer.init(model.trainable_parameters())
    step = make_train_step(model, optimizer, cfg)
    inputs = synthetic_batch(batch, seconds, cfg, f0_hz)

    def run():
        out = step(*inputs)
        return [model.state, optimizer.state, *out]

    start = time.perf_counter()
    mx.eval(run())
    compile_s = time.perf_counter() - start
    time_calls(run, 2)
    mx.synchronize()
    mx.reset_peak_memory()
    times = time_calls(run, steps)
    ms = summary_ms(times)
    peak = mx.get_peak_memory()
    audio_samples = batch * seconds * cfg.data.sample_rate
    return {"sample_rate": cfg.data.sample_rate, "chunk_seconds": seconds, "batch_size": batch, "step_ms_median": ms["median"], "step_ms_min": ms["min"],
            "step_ms_max": ms["max"], "compile_s": compile_s,
            "audio_seconds_per_second": batch * seconds / (ms["median"] / 1e3), "peak_memory_bytes": peak,
            "bytes_per_audio_sample": peak / audio_samples, "decoder_frame_rate": cfg.model.frame_rate,
            "recurrent": cfg.model.recurrent, "harmonics_oscillated": model.max_harmonics(inputs[1])}


def draw(records: list[dict], info: dict, path: str) -> None:
    """Step time and peak memory against chunk length, one line per (rate, model, setting), as a PNG."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    time_ax, memory_ax = fig.subplots(1, 2)
    key_of = lambda r: (r.get("sample_rate", 16000), r["model"], r["setting"])  # noqa: E731 (older JSON: 16 kHz)
    for key in dict.fromkeys(map(key_of, records)):
        rows = sorted((r for r in records if key_of(r) == key),
                      key=lambda r: r["chunk_seconds"])
        label = f"{key[0] / 1000:g} kHz, {key[1]} model, {key[2]}"
        seconds = [r["chunk_seconds"] for r in rows]
        time_ax.plot(seconds, [r["step_ms_median"] for r in rows], "o-", label=label)
        memory_ax.plot(seconds, [r["peak_memory_bytes"] / 2**20 for r in rows], "o-", label=label)
    for ax, label in ((time_ax, "median step time (ms)"), (memory_ax, "peak memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_major_formatter(LogFormatter())
        ax.set_xlabel("chunk length (s)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    time_ax.legend(fontsize=8)
    fig.suptitle(f"compiled train step: {info.get('device')}, {info.get('processor')} x{info.get('cpu_count')}, "
                 f"mlx {info.get('mlx_version')}", fontsize=10)
    save(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "flute.yaml"))
    parser.add_argument("--chunks", type=float, nargs="+", help="seconds (default 0.5 1 2 4 8; --quick: 0.5 1 2)")
    parser.add_argument("--batch", type=int, help="fixed batch size (default: the recipe's)")
    parser.add_argument("--steps", type=int, help="timed steps per setting (default 20; --quick: 3)")
    parser.add_argument("--models", nargs="+", default=["default", "tiny"], choices=["default", "tiny"])
    parser.add_argument("--f0", type=float, default=330.0,
                        help="centre of the synthetic f0 in Hz (it wanders half an octave either way); the synth "
                             "oscillates only harmonics that can sound, so a low f0 (e.g. 110) makes it use all")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rates", type=int, nargs="+", help="sample rates to compare (default: the recipe's)")
    parser.add_argument("--out", help="write the records as JSON here")
    parser.add_argument("--figure", help="write the figure here (default: --out with .png)")
    parser.add_argument("--plot", help="only draw the figure of this JSON (written by --out)")
    args, overrides = parser.parse_known_args()
    figure = args.figure or (str(Path(args.plot or args.out).with_suffix(".png")) if args.plot or args.out else None)
    if args.plot:
        saved = json.loads(Path(args.plot).read_text())
        draw(saved["records"], saved, figure)
        print(f"wrote {figure}")
        return
    cfg_default = load_config(args.recipe, overrides)
    tiny = load_config(ROOT / "recipes" / "smoke.yaml")
    # --quick is a preset: flags given explicitly win over it.
    chunks = args.chunks or ([0.5, 1, 2] if args.quick else [0.5, 1, 2, 4, 8])
    steps = args.steps or (3 if args.quick else 20)
    modes = ["fixed batch"] if args.quick else ["fixed batch", "fixed audio"]
    batch = args.batch or cfg_default.train.batch_size
    audio_per_batch = cfg_default.train.batch_size * cfg_default.data.example_seconds
    console = Console(width=150)
    info = machine()
    console.print(f"{info['device']}, mlx {info['mlx_version']}, {info['processor']} x{info['cpu_count']}, "
                  f"BLAS: {info['blas']}")
    records = []
    table = Table(title=f"compiled train step ({Path(args.recipe).name}, {steps} timed steps)")
    for column in ("rate", "model", "setting", "chunk s", "batch", "median ms", "min-max ms", "compile s", "audio s/s",
                   "peak MiB", "bytes/sample"):
        table.add_column(column, justify="right")
    for rate, name in [(r, n) for r in args.rates or [cfg_default.data.sample_rate] for n in args.models]:
        cfg = load_config(args.recipe, [*overrides, f"data.sample_rate={rate}"])
        if name == "tiny":
            cfg.model, cfg.synth = tiny.model, tiny.synth
        for mode in modes:
            for seconds in chunks:
                b = batch if mode == "fixed batch" else max(1, round(audio_per_batch / seconds))
                record = {"model": name, "setting": mode, **measure(cfg, b, seconds, steps, args.f0)}
                records.append(record)
                table.add_row(f"{rate / 1000:g} kHz", name, mode, f"{seconds:g}", str(b), f"{record['step_ms_median']:.0f}",
                              f"{record['step_ms_min']:.0f}-{record['step_ms_max']:.0f}", f"{record['compile_s']:.1f}",
                              f"{record['audio_seconds_per_second']:.1f}", f"{record['peak_memory_bytes'] / 2**20:.0f}",
                              f"{record['bytes_per_audio_sample']:.0f}")
                console.print(f"  {rate} Hz {name} {mode} {seconds:g} s x {b}: {record['step_ms_median']:.0f} ms")
                write_json(args.out, records)
    console.print(table)
    if figure:
        draw(records, info, figure)
        console.print(f"wrote {figure}")


if __name__ == "__main__":
    use_native_libraries()
    sys.exit(main())
