"""f0 tracker accuracy and speed on recordings with a known f0, per instrument and overall, beside pYIN if asked.

    python benchmarks/f0_accuracy.py [--audio DIR [DIR ...]] [--truth DIR] [--reference pyin] [--causal] [--dereverb]
                                     [--out f0.json]
    python benchmarks/f0_accuracy.py --audio corpus/dev/clean corpus/dev/reverb --truth corpus/dev/truth --reference pyin

Each --audio folder is one condition (e.g. the clean development corpus and a degraded copy, see
scripts/render_dev_corpus.py); every file in it is scored against the truth file of the same name (f0_hz,
voiced, ambiguous at the truth's frame rate; `instrument` names the group, else the file name does). Defaults: the
bundled flute. Scores, over frames the truth does not mark `ambiguous` (note attacks; scores with them are in
the JSON too):
  RPA         raw pitch accuracy: share of truly voiced frames whose f0 is within 50 cents of the truth
  RCA         raw chroma accuracy: the same with octave errors forgiven
  octave      share of truly voiced frames that are octave errors (within 50 cents of a whole number of octaves
              off, but not of the truth): RCA - RPA
  recall      share of truly voiced frames the tracker calls voiced (confidence >= --threshold, the pipeline's 0.5)
  false_alarm share of truly unvoiced frames it calls voiced
Each condition also prints, per tracker, recall and false alarm at the thresholds 0.1 .. 0.9 (all groups pooled):
where the one threshold the pipeline uses sits on each condition's trade-off.
Speed is in multiples of real time with the process pinned to one core (audio resampled beforehand, not timed).
--sample-rate (default 16000) is the rate the audio is read at and tracked from; where the truth's frames are not
the tracker's (44.1 kHz: 176-sample hops, 250.57 frames/s), the truth is read at the nearest frame in time.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from mlx_ddsp.audio import AUDIO_EXTENSIONS, load_audio
from mlx_ddsp.features import VOICED_THRESHOLD, estimate_f0, frame_hop

METRICS = ("RPA", "RCA", "octave", "recall", "false_alarm")


SWEEP = np.round(np.arange(0.1, 0.95, 0.1), 1)  # the thresholds of the voicing trade-off


def voicing_counts(confidence, true_voiced, keep, thresholds) -> np.ndarray:
    """(len(thresholds), 4) frame counts at each threshold: truly voiced called voiced, truly voiced, truly unvoiced
    called voiced, truly unvoiced."""
    said = confidence[None] >= np.asarray(thresholds)[:, None]
    voiced, unvoiced = true_voiced & keep, ~true_voiced & keep
    return np.stack([(said & voiced).sum(1), np.full(len(said), voiced.sum()), (said & unvoiced).sum(1),
                     np.full(len(said), unvoiced.sum())], axis=1)


def scores(f0_hz, confidence, true_f0_hz, true_voiced, keep, threshold) -> dict:
    """Frame counts behind each metric, so groups can be pooled: {metric: (hits, frames)}."""
    voiced = true_voiced & keep
    cents = 1200.0 * np.log2(np.maximum(f0_hz[voiced], 1e-3) / true_f0_hz[voiced])
    chroma = np.abs(cents - 1200.0 * np.round(cents / 1200.0))
    right, right_chroma = np.abs(cents) < 50.0, chroma < 50.0
    called_voiced, n_voiced, false_alarms, n_unvoiced = voicing_counts(confidence, true_voiced, keep, [threshold])[0]
    return {"RPA": (right.sum(), voiced.sum()), "RCA": (right_chroma.sum(), voiced.sum()),
            "octave": ((right_chroma & ~right).sum(), voiced.sum()),
            "recall": (called_voiced, n_voiced), "false_alarm": (false_alarms, n_unvoiced)}


def pooled(counts: list[dict]) -> dict:
    return {m: float(sum(c[m][0] for c in counts) / max(sum(c[m][1] for c in counts), 1)) for m in METRICS}


def pyin(audio: np.ndarray, sample_rate: int, frame_rate: int, f0_min_hz: float, f0_max_hz: float):
    import librosa

    hop = frame_hop(sample_rate, frame_rate)
    frame_length = 1 << int(np.ceil(np.log2(2.2 * sample_rate / f0_min_hz)))  # two periods of the lowest note
    f0, _, probability = librosa.pyin(audio, fmin=f0_min_hz, fmax=f0_max_hz, sr=sample_rate, frame_length=frame_length,
                                      hop_length=hop, fill_na=None, center=True)
    return f0.astype(np.float32), probability.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio", type=Path, nargs="+", default=[Path("data/flute")])
    parser.add_argument("--truth", type=Path, default=Path("data/flute_truth"))
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--threshold", type=float, default=VOICED_THRESHOLD)
    parser.add_argument("--reference", choices=["pyin"], help="also score librosa's pYIN (needs librosa)")
    parser.add_argument("--causal", action="store_true",
                        help="also score the causal variant the streaming engine runs (estimate_f0(causal=True))")
    parser.add_argument("--dereverb", action="store_true",
                        help="also score the tracker with room-tail suppression (estimate_f0(dereverb=True))")
    parser.add_argument("--f0-min-hz", type=float, help="range given to the trackers (default: estimate_f0's)")
    parser.add_argument("--f0-max-hz", type=float)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    defaults = estimate_f0.__kwdefaults__ or {}
    f0_range = {k: v for k, v in (("f0_min_hz", args.f0_min_hz), ("f0_max_hz", args.f0_max_hz)) if v is not None}
    trackers = {"ours": lambda audio, sr, rate: estimate_f0(audio, sr, rate, **f0_range)}
    if args.causal:
        trackers["causal"] = lambda audio, sr, rate: estimate_f0(audio, sr, rate, causal=True, **f0_range)
    if args.dereverb:
        trackers["dereverb"] = lambda audio, sr, rate: estimate_f0(audio, sr, rate, dereverb=True, **f0_range)
    if args.reference == "pyin":
        lo = f0_range.get("f0_min_hz", defaults.get("f0_min_hz", 40.0))
        hi = f0_range.get("f0_max_hz", defaults.get("f0_max_hz", 2100.0))
        trackers["pyin"] = lambda audio, sr, rate: pyin(audio, sr, rate, lo, hi)

    report = {"threshold": args.threshold, "sample_rate": args.sample_rate, "conditions": {}}
    for folder in args.audio:
        counts = defaultdict(lambda: defaultdict(list))  # tracker -> group -> [counts]
        with_attacks = defaultdict(list)
        sweep = defaultdict(lambda: np.zeros((len(SWEEP), 4)))
        compute, seconds = defaultdict(float), 0.0
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS)
        for path in files:
            truth_path = args.truth / f"{path.stem}.npz"
            if not truth_path.exists():
                continue
            truth = dict(np.load(truth_path))
            group = str(truth["instrument"]) if "instrument" in truth else path.stem
            audio = load_audio(path, args.sample_rate)
            seconds += len(audio) / args.sample_rate
            truth_rate = float(truth["frame_rate"])
            hop = frame_hop(args.sample_rate, truth_rate)
            times = np.arange(len(audio) // hop + 1) * hop / args.sample_rate  # the tracker's frames
            index = np.rint(times * truth_rate).astype(int)
            index = index[index < len(truth["f0_hz"])]
            true_f0, true_voiced, ambiguous = (truth[k][index] for k in ("f0_hz", "voiced", "ambiguous"))
            for name, tracker in trackers.items():
                start = time.perf_counter()
                f0_hz, confidence = tracker(audio, args.sample_rate, truth_rate)
                compute[name] += time.perf_counter() - start
                n = min(len(f0_hz), len(index))
                arrays = (f0_hz[:n], confidence[:n], true_f0[:n], true_voiced[:n])
                counts[name][group].append(scores(*arrays, ~ambiguous[:n], args.threshold))
                with_attacks[name].append(scores(*arrays, np.ones(n, bool), args.threshold))
                sweep[name] += voicing_counts(confidence[:n], true_voiced[:n], ~ambiguous[:n], SWEEP)
        condition = {"seconds": seconds, "trackers": {}}
        print(f"\n{folder} ({len(files)} files, {seconds:.0f} s of audio at {args.sample_rate} Hz)")
        print(f"{'group':<14}" + "".join(f"{name + ' ' + m:>18}" for m in METRICS for name in trackers))
        groups = sorted(counts["ours"])
        for group in groups + ["overall"]:
            row = {name: pooled(sum(counts[name].values(), []) if group == "overall" else counts[name][group])
                   for name in trackers}
            print(f"{group:<14}" + "".join(f"{row[name][m]:>18.4f}" for m in METRICS for name in trackers))
            for name in trackers:
                condition["trackers"].setdefault(name, {})[group] = row[name]
        for name in trackers:
            x_real_time = seconds / max(compute[name], 1e-9)
            condition["trackers"][name]["x_real_time_one_core"] = x_real_time
            condition["trackers"][name]["overall_with_attacks"] = pooled(with_attacks[name])
            print(f"{name}: {x_real_time:.1f}x real time on one core; with attacks RPA "
                  f"{condition['trackers'][name]['overall_with_attacks']['RPA']:.4f}")
            hits = sweep[name]
            recall, false_alarm = hits[:, 0] / np.maximum(hits[:, 1], 1), hits[:, 2] / np.maximum(hits[:, 3], 1)
            condition["trackers"][name]["voicing_sweep"] = {
                "threshold": SWEEP.tolist(), "recall": recall.tolist(), "false_alarm": false_alarm.tolist()}
            print(f"  {'threshold':<12}" + "".join(f"{t:>7.1f}" for t in SWEEP))
            print(f"  {'recall':<12}" + "".join(f"{x:>7.3f}" for x in recall))
            print(f"  {'false alarm':<12}" + "".join(f"{x:>7.3f}" for x in false_alarm))
        report["conditions"][str(folder)] = condition
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
