"""How much of the band above 8 kHz a model reproduces: trained runs at any rates, scored on the same recordings.

    python benchmarks/top_octave.py RUN [RUN ...] --data FILE_OR_DIR [--rate 48000] [--out FILE]
    python benchmarks/top_octave.py runs/flute_48k_cpu runs/flute_cpu --data data/flute/flute_06.flac \
        data/flute/flute_07.flac --out benchmarks/results/top_octave.json

Each recording is read at --rate (the reference: the target). Each run renders it at its own sample rate from
features it extracts itself (as `python -m mlx_ddsp.eval RUN --data` does), and the render is resampled to --rate
(soxr): a 16 kHz model's output upsampled has nothing above 8 kHz, which is the baseline the 48 kHz model has to
beat. Scores against the target (see mlx_ddsp/metrics.py): band_energy_db (the output's 8-20 kHz energy relative
to the target's; 0 dB is all of it), band_spectral_loss (the multi-scale spectral loss over 8-20 kHz only, with the
FFT sizes of the reference run, the first one), the full-band spectral_loss at --rate, and spectral_loss_16k: the
loss of the output and the target both resampled to 16 kHz (the band every model has; the 16 kHz loss).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import soxr
from rich.console import Console
from rich.table import Table

from common import machine, write_json
from mlx_ddsp import checkpoint
from mlx_ddsp.audio import load_audio
from mlx_ddsp.eval import render_clip
from mlx_ddsp.losses import recipe_loss
from mlx_ddsp.metrics import band_metrics
from mlx_ddsp.preprocess import analyse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="trained run dirs (their best checkpoints)")
    parser.add_argument("--data", nargs="+", required=True, help="recordings to score on (files or folders)")
    parser.add_argument("--rate", type=int, default=48000, help="the reference rate the target is read at")
    parser.add_argument("--out", help="write the records as JSON here")
    args = parser.parse_args()
    files = sorted(p for d in map(Path, args.data) for p in ([d] if d.is_file() else d.rglob("*.*")))
    models = [(run, *checkpoint.load_trained(run, "best")[:2]) for run in args.runs]
    reference = copy.deepcopy(next((cfg for _, _, cfg in models if cfg.data.sample_rate == args.rate), models[0][2]))
    reference.data.sample_rate = args.rate  # the loss and band of the target's rate
    records = []
    for path in files:
        target = load_audio(path, args.rate)
        for run, model, cfg in models:
            audio = target if cfg.data.sample_rate == args.rate else load_audio(path, cfg.data.sample_rate)
            recon = render_clip(model, analyse(audio, cfg), len(audio))["audio"]
            if cfg.data.sample_rate != args.rate:
                recon = soxr.resample(recon, cfg.data.sample_rate, args.rate, quality="HQ").astype(np.float32)
            recon = np.pad(recon, (0, max(0, len(target) - len(recon))))[: len(target)]
            full = recipe_loss(reference.loss, args.rate, mx.array(target[None]), mx.array(recon[None])).item()
            low = [mx.array(soxr.resample(x, args.rate, 16000, quality="HQ").astype(np.float32)[None])
                   for x in (target, recon)]
            records.append({"file": path.name, "run": str(run), "model_rate": cfg.data.sample_rate,
                            "spectral_loss": full, "spectral_loss_16k": recipe_loss(reference.loss, 16000, *low).item(),
                            **band_metrics(target, recon, reference)})
    console = Console(width=140)
    info = machine()
    table = Table(title=f"8-20 kHz against the target at {args.rate} Hz ({info['device']}, mlx {info['mlx_version']})")
    names = ("band_energy_db", "band_spectral_loss", "spectral_loss", "spectral_loss_16k")
    for column in ("run", "model rate", *names[:2], f"spectral_loss at {args.rate}", "at 16 kHz"):
        table.add_column(column, justify="right")
    summary = []
    for run, _, cfg in models:
        mine = [r for r in records if r["run"] == str(run)]
        mean = {k: float(np.mean([r[k] for r in mine])) for k in names}
        summary.append({"run": str(run), "model_rate": cfg.data.sample_rate, "files": len(mine), **mean})
        table.add_row(str(run), str(cfg.data.sample_rate), f"{mean['band_energy_db']:.1f}",
                      *(f"{mean[k]:.3f}" for k in names[1:]))
    console.print(table)
    write_json(args.out, [{"machine": info, "rate": args.rate, "mean": summary, "files": records}])


if __name__ == "__main__":
    sys.exit(main())
