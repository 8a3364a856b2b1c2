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
from mlx_ddsp.eval import load_truth
from mlx_ddsp.features import frame_hop, hold_unpitched


def main() -> int:
    rest_help = "the rest, python -m mlx_ddsp.ablate's:\n" + ablate.build_parser().format_help()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=rest_help,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pitch", required=True, help="folder of truth files (<name>.npz: f0_hz, voiced, frame_rate)")
    parser.add_argument("--pitch-delay-s", type=float, default=0.0, help="the truth is read this much later (s)")
    args, rest = parser.parse_known_args()
    out = ablate.build_parser().parse_intermixed_args(rest).out  # ablate's own reading of --out and its default
    tracked = preprocess.compute_file_features

    def with_true_pitch(path, cfg):
        """The file's features with the truth's f0 (rests hold the last note; before the first, the first) and its
        voicing as the confidence."""
        features = tracked(path, cfg)
        frame_rate = cfg.data.sample_rate / frame_hop(cfg.data.sample_rate, cfg.features.frame_rate)
        truth = load_truth(Path(args.pitch), Path(path).stem, len(features["f0_hz"]), frame_rate, args.pitch_delay_s)
        if truth is None or not truth["voiced"].any():
            raise SystemExit(f"no voiced truth for {path} in {args.pitch}")
        voiced = truth["voiced"]
        first_hz = float(truth["f0_hz"][voiced][0])
        features["f0_hz"] = hold_unpitched(truth["f0_hz"], voiced, first_hz)[0]
        features["confidence"] = voiced.astype(np.float32)
        return features

    preprocess.compute_file_features = with_true_pitch
    return ablate.main([*rest, f"data.cache_dir={Path(out) / 'cache'}"])


if __name__ == "__main__":
    entry_point(main)
