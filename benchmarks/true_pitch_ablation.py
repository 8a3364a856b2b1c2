"""An ablation whose decoder is given the true pitch instead of the tracked one: what the tracker costs a model.

    python benchmarks/true_pitch_ablation.py --pitch corpus/instruments/cello_truth --pitch-delay-s 0.0137 \
        recipes/flute_cpu.yaml data.dir=corpus/rooms/cello/rt60_0.8 "data.val_files=[cello_06.wav,cello_07.wav]" \
        train.steps=1000 train.max_minutes=0 --set rooms --variants reverb-off learned-noise+early \
        --dry corpus/rooms/cello/rt60_0.8_direct --truth corpus/instruments/cello_truth --out runs/true_pitch_cello

Everything after the two options below is `python -m mlx_ddsp.ablate`'s command line. Each file's f0_hz is
replaced by its truth (--pitch DIR/<name>.npz: f0_hz, voiced, frame_rate, as the development corpus holds),
read at the nearest truth frame `--pitch-delay-s` earlier (a room recording's direct path arrives that late:
`scripts/render_rooms.py` records it as direct_delay_samples in OUT/rooms.json), with unvoiced frames holding the
last voiced frame's f0 as the tracker's do; the confidence becomes the truth's voicing (0 or 1). The loudness and
the audio are the recording's. Training and evaluation both read these features (eval scores the held-out clips
against them, so its f0 metrics compare the output with the true pitch). They are cached in OUT/cache, never in
the recipe's cache.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mlx_ddsp import ablate, preprocess
from mlx_ddsp.cli import entry_point
from mlx_ddsp.features import frame_hop, hold_unpitched


def true_pitch(f0_hz: np.ndarray, voiced: np.ndarray, truth_rate: float, n_frames: int, frame_rate: float,
               delay_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(f0_hz (n_frames,) float32, confidence (n_frames,) float32) on the recipe's frames from a truth track at
    truth_rate frames/s, `delay_s` later; unvoiced frames hold the last voiced f0 (the first voiced one before it)."""
    index = np.rint((np.arange(n_frames) / frame_rate - delay_s) * truth_rate).astype(int)
    inside = (index >= 0) & (index < len(f0_hz))
    index = np.clip(index, 0, len(f0_hz) - 1)
    on = voiced[index].astype(bool) & inside
    first_hz = float(f0_hz[index][on][0]) if on.any() else float(np.median(f0_hz[f0_hz > 0]))
    return hold_unpitched(f0_hz[index].astype(np.float32), on, first_hz)[0], on.astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="the rest, python -m mlx_ddsp.ablate's:\n" + ablate.build_parser().format_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pitch", required=True, help="folder of truth files (<name>.npz: f0_hz, voiced, frame_rate)")
    parser.add_argument("--pitch-delay-s", type=float, default=0.0, help="the truth is read this much later (s)")
    args, rest = parser.parse_known_args()
    out = rest[rest.index("--out") + 1] if "--out" in rest else "runs/ablation"
    tracked = preprocess.compute_file_features

    def with_true_pitch(path, cfg):
        features = tracked(path, cfg)
        truth_path = Path(args.pitch) / f"{Path(path).stem}.npz"
        if not truth_path.exists():
            raise SystemExit(f"no truth for {path} in {args.pitch}")
        with np.load(truth_path) as truth:
            features["f0_hz"], features["confidence"] = true_pitch(
                truth["f0_hz"], truth["voiced"], float(truth["frame_rate"]), len(features["f0_hz"]),
                cfg.data.sample_rate / frame_hop(cfg.data.sample_rate, cfg.features.frame_rate), args.pitch_delay_s)
        return features

    preprocess.compute_file_features = with_true_pitch
    return ablate.main([*rest, f"data.cache_dir={Path(out) / 'cache'}"])


if __name__ == "__main__":
    entry_point(main)
