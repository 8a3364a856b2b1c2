"""Inference and feature-extraction speed: how many times faster than real time.

    python benchmarks/synthesis.py [--recipe R] [--repeats N] [--quick] [--out FILE] [key=value ...]

- render: decoder + synth (mlx_ddsp.models.render_long, the path eval and resynth use) of an untrained model of the
  recipe's size, batch 1 and 16, 4 s and 60 s; real-time factor = audio seconds rendered / wall seconds.
- features: estimate_f0 and compute_loudness on 60 s of a harmonic tone, x real time (one CPU process).
- preprocessing: `preprocess` of the bundled flute corpus into a fresh cache, minutes of audio per minute.
--quick skips batch 16 x 60 s and uses 2 repeats; about a minute.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
from rich.console import Console
from rich.table import Table

from common import machine, summary_ms, time_calls, write_json
from mlx_ddsp.native import use_native_libraries
from mlx_ddsp.config import load_config
from mlx_ddsp.features import compute_loudness, estimate_f0, frame_hop
from mlx_ddsp.models import build_model, render_long
from mlx_ddsp.preprocess import preprocess

ROOT = Path(__file__).resolve().parents[1]


def render_speed(cfg, batch: int, seconds: float, repeats: int) -> dict:
    mx.random.seed(0)
    model = build_model(cfg)
    n_frames = int(round(seconds * cfg.features.frame_rate)) + 1
    n_samples = (n_frames - 1) * frame_hop(cfg.data.sample_rate, cfg.features.frame_rate)
    f0 = mx.array(np.full((batch, n_frames), 440.0, np.float32) * (1 + 0.01 * np.arange(batch))[:, None])
    loudness = mx.full((batch, n_frames), -30.0)
    times = time_calls(lambda: mx.array(render_long(model, f0, loudness, n_samples)["audio"]), repeats + 1)[1:]
    ms = summary_ms(times)
    return {"kind": "render", "batch_size": batch, "seconds": seconds, "wall_ms_median": ms["median"],
            "wall_ms_min": ms["min"], "x_real_time": batch * seconds / (ms["median"] / 1e3)}


def feature_speed(sample_rate: int, repeats: int) -> list[dict]:
    t = np.arange(60 * sample_rate) / sample_rate
    audio = (0.3 * np.sin(2 * np.pi * 330 * t) + 0.1 * np.sin(2 * np.pi * 660 * t)).astype(np.float32)
    records = []
    for name, fn in (("f0", lambda: estimate_f0(audio, sample_rate)),
                     ("loudness", lambda: compute_loudness(audio, sample_rate))):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        ms = summary_ms(times)
        records.append({"kind": name, "seconds": 60.0, "wall_ms_median": ms["median"], "wall_ms_min": ms["min"],
                        "x_real_time": 60.0 / (ms["median"] / 1e3)})
    return records


def preprocess_speed(cfg) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        cfg.data.cache_dir = cache
        start = time.perf_counter()
        manifest = preprocess(cfg, Console(quiet=True))
        wall = time.perf_counter() - start
    minutes = sum(f.get("seconds", 0) for f in manifest["files"]) / 60
    return {"kind": "preprocess", "audio_minutes": minutes, "wall_s": wall, "minutes_per_minute": minutes / (wall / 60)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "flute.yaml"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", help="write the records as JSON here")
    args, overrides = parser.parse_known_args()
    cfg = load_config(args.recipe, [f"data.dir={ROOT / 'data' / 'flute'}", *overrides])
    repeats = 2 if args.quick else args.repeats
    console = Console(width=150)
    info = machine()
    console.print(f"{info['device']}, mlx {info['mlx_version']}, {info['processor']} x{info['cpu_count']}, "
                  f"BLAS: {info['blas']}; model of {Path(args.recipe).name} (decoder at {cfg.model.frame_rate} "
                  "frames/s)")
    records = []
    for batch, seconds in ((1, 4.0), (16, 4.0), (1, 60.0), (16, 60.0)):
        if args.quick and batch * seconds > 100:
            continue
        records.append(render_speed(cfg, batch, seconds, repeats))
        console.print(f"  render {batch} x {seconds:g} s: {records[-1]['x_real_time']:.1f}x real time")
    records += feature_speed(cfg.data.sample_rate, repeats)
    records.append(preprocess_speed(cfg))
    write_json(args.out, records)
    table = Table(title="inference and features")
    for column in ("what", "batch", "audio", "wall (median)", "speed"):
        table.add_column(column, justify="right")
    for r in records:
        if r["kind"] == "render":
            table.add_row("decoder + synth", str(r["batch_size"]), f"{r['seconds']:g} s",
                          f"{r['wall_ms_median'] / 1e3:.2f} s", f"{r['x_real_time']:.1f}x real time")
        elif r["kind"] == "preprocess":
            table.add_row("preprocess (flute corpus)", "", f"{r['audio_minutes']:.1f} min", f"{r['wall_s']:.1f} s",
                          f"{r['minutes_per_minute']:.0f} min/min")
        else:
            table.add_row(f"{r['kind']} extraction", "1", f"{r['seconds']:g} s",
                          f"{r['wall_ms_median'] / 1e3:.2f} s", f"{r['x_real_time']:.0f}x real time")
    console.print(table)


if __name__ == "__main__":
    use_native_libraries()
    sys.exit(main())
