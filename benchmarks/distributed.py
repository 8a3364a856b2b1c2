"""Data-parallel training step: steps/s and the time of the gradient reduction, for 1 or more processes.

    python benchmarks/distributed.py [--recipe R] [--steps N] [--out FILE] [key=value ...]        # one process
    MLX_DDSP_THREADS=1 OPENBLAS_NUM_THREADS=1 mlx.launch -n 2 --backend ring -- \\
        python benchmarks/distributed.py --out FILE                                             # two, one core each

Each rank runs the recipe's compiled training step on its shard of a synthetic global batch (train.batch_size x
data.example_seconds, as benchmarks/chunk_length.py makes it): one compiled step and two warm-up steps, then
--steps timed ones. Reported by rank 0: the median step time, steps/s, and the median time of the reduction
(`distributed.sum_gradients`, timed after the gradients are computed, so it holds the wait for the slowest rank
plus the transfer), with the gradient bytes each rank sends per step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_flatten

from chunk_length import synthetic_batch
from common import write_json
from mlx_ddsp import distributed
from mlx_ddsp.config import load_config
from mlx_ddsp.models import build_model
from mlx_ddsp.native import use_native_libraries
from mlx_ddsp.train import learning_rate_schedule, make_train_step

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "flute_cpu.yaml"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", help="write the record as JSON here (rank 0)")
    args, overrides = parser.parse_known_args()
    cfg = load_config(args.recipe, overrides)
    world = distributed.init()
    mx.random.seed(0)
    model = build_model(cfg)
    optimizer = optim.Adam(learning_rate=learning_rate_schedule(cfg), bias_correction=True)
    optimizer.init(model.trainable_parameters())
    reductions = []
    summed = distributed.sum_gradients

    def timed(loss, grads, weight, world_):
        mx.eval(loss, grads)
        start = time.perf_counter()
        out = summed(loss, grads, weight, world_)
        mx.eval(out)
        reductions.append(time.perf_counter() - start)
        return out

    distributed.sum_gradients = timed  # make_train_step calls it through the module
    step = make_train_step(model, optimizer, cfg, world)
    first, stop = distributed.shard(cfg.train.batch_size, world)
    audio, f0, loudness = (x[first:stop] for x in synthetic_batch(cfg.train.batch_size, cfg.data.example_seconds, cfg))
    times = []
    for i in range(args.steps + 3):
        start = time.perf_counter()
        mx.eval(step(audio, f0, loudness), model.state, optimizer.state)
        times.append(time.perf_counter() - start)
    times, reductions = times[3:], reductions[3:]
    grad_bytes = sum(v.nbytes for _, v in tree_flatten(model.trainable_parameters()))
    record = {"recipe": Path(args.recipe).name, "processes": world.size, "batch_size": cfg.train.batch_size,
              "rows_per_rank": stop - first, "chunk_seconds": cfg.data.example_seconds,
              "step_ms_median": 1e3 * statistics.median(times), "steps_per_s": 1 / statistics.median(times),
              "reduction_ms_median": 1e3 * statistics.median(reductions) if world.size > 1 else 0.0,
              "gradient_bytes": grad_bytes}
    if world.is_writer:
        print(record)
        write_json(args.out, [record])


if __name__ == "__main__":
    use_native_libraries()
    sys.exit(main())
