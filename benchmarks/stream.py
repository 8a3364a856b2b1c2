"""The streaming engine live, on one core: latency, per-block time (median, p99, max) against the block's duration,
and memory over a long stream.

    python benchmarks/stream.py [--run runs/flute_cpu] [--input data/flute/flute_06.flac] [--rate 48000]
                                [--block 256] [--minutes 10] [--out benchmarks/results/stream_flute_cpu.json]
                                [--recipe recipes/vst_cpu.yaml]
    python benchmarks/stream.py --latency-table [--run runs/flute_cpu]
    python benchmarks/stream.py --equality 10 [--run runs/flute_cpu] [--input ...] [--rate 48000]

--latency-table prints, without timing anything, the latency of every recipe's model at 16, 44.1 and 48 kHz input
(the default pitch range from the run's training statistics, and the recipe's own 38 Hz floor): the latency
depends on the recipe and the rates, not on the weights. --equality S streams the input's first S seconds in
blocks of 64, 256 and 1000 samples and of random sizes (1-1500) and prints the largest difference from
`render_offline` after the latency shift.

The input (by default a held-out flute file) is read at --rate and played in a loop, as blocks of --block samples,
through `Streamer.process` for --minutes of audio, with the process pinned to one core (as `taskset -c 0`). Per
block: wall time of `process` (nothing else is timed). Memory: the process's peak resident set (ru_maxrss) and
MLX's active memory after 1 minute and at the end, so a stream that holds on to anything shows it.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_json  # noqa: E402
from mlx_ddsp import checkpoint  # noqa: E402
from mlx_ddsp.audio import load_audio  # noqa: E402
from mlx_ddsp.config import load_config  # noqa: E402
from mlx_ddsp.models import build_model  # noqa: E402
from mlx_ddsp.native import use_native_libraries  # noqa: E402
from mlx_ddsp.stream import Streamer, render_offline  # noqa: E402


RATES = (16000, 44100, 48000)


def memory_mib() -> dict:
    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "mlx_active_mib": mx.get_active_memory() / 2**20}


def latency_table(run_dir: str) -> None:
    stats = checkpoint.load_trained(run_dir)[2].get("stats", {})
    print(f"{'recipe':<26}{'f0 range':>12}" + "".join(f"{rate:>10} Hz" for rate in RATES))
    for recipe in sorted(Path("recipes").glob("*.yaml")):
        cfg = load_config(recipe)
        model = build_model(cfg)
        for f0_min_hz in (None, cfg.features.f0_min_hz):
            streamers = [Streamer(model, cfg, stats, rate, f0_min_hz=f0_min_hz) for rate in RATES]
            print(f"{recipe.name:<26}{streamers[0].f0_min_hz:>7.0f}+ Hz" + "".join(
                f"{1e3 * s.latency_samples / s.sample_rate:>10.1f} ms" for s in streamers))


def equality(streamer: Streamer, audio: np.ndarray) -> None:
    offline = render_offline(streamer, audio)
    rng = np.random.default_rng(0)
    for pattern in (64, 256, 1000, "random 1-1500"):
        streamer.reset()
        sizes = pattern if isinstance(pattern, int) else iter(lambda: int(rng.integers(1, 1501)), None)
        streamed = streamer.play(audio, sizes)[0]
        print(f"blocks of {pattern}: max |streamed - offline| = {np.abs(streamed - offline).max():.2e} "
              f"(offline RMS {np.sqrt(np.mean(offline**2)):.3f}, {len(audio) / streamer.sample_rate:.1f} s)")


def main() -> None:
    use_native_libraries()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/flute_cpu")
    parser.add_argument("--recipe", help="time a freshly initialised model of this recipe instead of the run's (the "
                        "per-block work does not depend on the weights; the run gives the training statistics)")
    parser.add_argument("--input", default="data/flute/flute_06.flac")
    parser.add_argument("--rate", type=int, default=48000)
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out")
    parser.add_argument("--latency-table", action="store_true", help="print every recipe's latency and stop")
    parser.add_argument("--equality", type=float, metavar="SECONDS",
                        help="compare the stream with render_offline on the input's first SECONDS and stop")
    args = parser.parse_args()
    if args.latency_table:
        latency_table(args.run)
        return
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    audio = load_audio(args.input, args.rate)
    streamer = Streamer.from_run(args.run, args.rate)
    if args.recipe:
        cfg = load_config(args.recipe)
        streamer = Streamer(build_model(cfg), cfg, streamer.stats, args.rate)
    if args.equality:
        equality(streamer, audio[: int(args.equality * args.rate)])
        return
    streamer.warm_up()
    n_blocks = int(args.minutes * 60 * args.rate / args.block)
    seconds = np.empty(n_blocks)
    at_one_minute = None
    position = 0
    for i in range(n_blocks):
        block = np.take(audio, np.arange(position, position + args.block), mode="wrap")
        position = (position + args.block) % len(audio)
        start = time.perf_counter()
        streamer.process(block)
        seconds[i] = time.perf_counter() - start
        if at_one_minute is None and (i + 1) * args.block >= 60 * args.rate:
            at_one_minute = memory_mib()
    times_ms = 1e3 * seconds
    block_ms = 1e3 * args.block / args.rate
    record = {"run": args.run, "recipe": args.recipe, "input": args.input, "rate": args.rate, "block": args.block,
              "block_ms": block_ms, "minutes": args.minutes, "latency_samples": streamer.latency_samples,
              "latency_ms": 1e3 * streamer.latency_samples / args.rate,
              "f0_range_hz": [streamer.f0_min_hz, streamer.f0_max_hz], "decoder_step": streamer.decoder,
              "median_ms": float(np.median(times_ms)), "p99_ms": float(np.percentile(times_ms, 99)),
              "p999_ms": float(np.percentile(times_ms, 99.9)), "max_ms": float(times_ms.max()),
              "late_blocks": int(np.sum(times_ms > block_ms)), "blocks": n_blocks,
              "real_time_factor": float(seconds.sum() / (n_blocks * args.block / args.rate)),
              "memory_at_1_min": at_one_minute, "memory_at_end": memory_mib(), "machine": machine(),
              "one_core": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}
    print(f"{args.recipe or args.run} at {args.rate} Hz, blocks of {args.block} ({block_ms:.2f} ms), "
          f"{args.minutes:g} min: latency "
          f"{record['latency_samples']} samples = {record['latency_ms']:.1f} ms; per block median "
          f"{record['median_ms']:.3f} ms, p99 {record['p99_ms']:.3f} ms, p99.9 {record['p999_ms']:.3f} ms, max "
          f"{record['max_ms']:.3f} ms; {record['late_blocks']} of {n_blocks} blocks late; real-time factor "
          f"{record['real_time_factor']:.3f}")
    print(f"memory at 1 min {at_one_minute}, at the end {record['memory_at_end']}")
    write_json(args.out, [record])


if __name__ == "__main__":
    main()
