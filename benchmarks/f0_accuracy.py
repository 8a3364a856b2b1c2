"""f0 tracker accuracy and speed on recordings with a known f0 (default: the bundled flute corpus).

    python benchmarks/f0_accuracy.py [--audio data/flute] [--truth data/flute_truth] [--out f0.json]

Per file and overall: raw pitch accuracy (share of truly voiced frames within 50 cents of the truth), voicing
accuracy (share of frames whose voiced decision, confidence >= 0.5, matches the truth), gross octave errors, and
speed in multiples of real time on one core. Frames the truth marks `ambiguous` (note attacks) are left out; the
numbers with them are printed too.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mlx_ddsp.audio import load_audio
from mlx_ddsp.features import estimate_f0


def scores(f0_hz, confidence, true_f0_hz, true_voiced, keep):
    voiced = true_voiced & keep
    cents = 1200.0 * np.abs(np.log2(f0_hz[voiced] / true_f0_hz[voiced]))
    return {
        "raw_pitch_accuracy": float(np.mean(cents < 50.0)),
        "octave_error_rate": float(np.mean(np.abs(cents - 1200.0) < 100.0)),
        "median_abs_cents": float(np.median(cents)),
        "voicing_accuracy": float(np.mean((confidence[keep] >= 0.5) == true_voiced[keep])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio", type=Path, default=Path("data/flute"))
    parser.add_argument("--truth", type=Path, default=Path("data/flute_truth"))
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    records, totals, seconds, compute = [], {"clean": [], "all": []}, 0.0, 0.0
    for truth_path in sorted(args.truth.glob("*.npz")):
        audio_path = next(args.audio.glob(truth_path.stem + ".*"))
        audio = load_audio(audio_path, args.sample_rate)
        truth = np.load(truth_path)
        start = time.perf_counter()
        f0_hz, confidence = estimate_f0(audio, args.sample_rate, int(truth["frame_rate"]))
        compute += time.perf_counter() - start
        seconds += len(audio) / args.sample_rate
        n = min(len(f0_hz), len(truth["f0_hz"]))
        arrays = (f0_hz[:n], confidence[:n], truth["f0_hz"][:n], truth["voiced"][:n])
        clean = scores(*arrays, ~truth["ambiguous"][:n])
        every = scores(*arrays, np.ones(n, bool))
        totals["clean"].append((n, clean))
        totals["all"].append((n, every))
        records.append({"file": audio_path.name, **clean, "with_attacks": every})
        print(f"{audio_path.name}: RPA {clean['raw_pitch_accuracy']:.4f}  voicing {clean['voicing_accuracy']:.4f}  "
              f"octave errors {clean['octave_error_rate']:.4f}  (with attacks: RPA {every['raw_pitch_accuracy']:.4f}, "
              f"voicing {every['voicing_accuracy']:.4f})")
    summary = {}
    for name, rows in totals.items():
        weights = np.array([n for n, _ in rows], float)
        summary[name] = {k: float(np.average([r[k] for _, r in rows], weights=weights)) for k in rows[0][1]}
    summary["x_real_time"] = seconds / compute
    print(f"overall (attacks excluded): RPA {summary['clean']['raw_pitch_accuracy']:.4f}, voicing "
          f"{summary['clean']['voicing_accuracy']:.4f}; with attacks: RPA {summary['all']['raw_pitch_accuracy']:.4f}, "
          f"voicing {summary['all']['voicing_accuracy']:.4f}; speed {summary['x_real_time']:.0f}x real time "
          f"({seconds:.0f} s of audio)")
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "files": records}, indent=2))


if __name__ == "__main__":
    main()
