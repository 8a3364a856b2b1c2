"""Evaluate a trained run on held-out recordings: A/B renders, metrics against a no-learning baseline, a report.

usage: python -m mlx_ddsp.eval RUN_DIR [--data DIR] [--truth DIR] [--dry DIR] [--checkpoint best|last|PATH]
                               [--out DIR]

  python -m mlx_ddsp.eval runs/flute_cpu
  python -m mlx_ddsp.eval runs/flute_cpu --data my_recordings/ --checkpoint last --out /tmp/eval
  python -m mlx_ddsp.eval runs/flute_cpu --truth data/flute_truth
  python -m mlx_ddsp.eval runs/flute_hall --dry data/flute

Clips are the run's validation files (from its cache), or every recording in --data (any length, any format the
preprocessing reads), rendered whole. For each clip, OUT/<clip>/ gets target.wav, recon.wav, harmonic.wav,
noise.wav and baseline.wav (and dry.wav with a reverb; recon.wav is then the wet signal) and figure.png;
OUT/metrics.json and OUT/report.html summarise (with a per-clip chart, summary.png, and the run's training curves,
curves.png). OUT defaults to RUN_DIR/eval.

Metrics (model and baseline, per clip and mean; defined in `mlx_ddsp.metrics`): spectral_loss, loudness_l1_db,
f0_l1_cents, f0_outlier_ratio, comb_harmonic_share and, above 16 kHz, band_spectral_loss and band_energy_db (the
8-20 kHz band). The model's branch_harmonic_share is the energy of its harmonic branch over both branches'; the
target's comb_harmonic_share stands beside the recon's (the same estimator on both).
With --truth DIR (CLIP.npz per clip: `f0_hz`, `voiced` at `frame_rate` frames/s, as data/flute_truth holds), the
f0 is also scored against the true pitch, over the truly voiced frames, so a tracker error that the output
copies (a wrong-note dive) shows up:
  f0_truth_rpa      share of truly voiced frames where the output's f0 is within 50 cents of the truth
  f0_truth_l1_cents mean |f0(output) - truth| in cents over the truly voiced frames
  (for the target itself too: how well the tracker that fed the model did)
  dry_f0_truth_rpa  f0_truth_rpa of the model's dry output (without a room: of all of it), what the model plays
                    before its room's tail blurs the tracker at each note's start
OUT/<clip>/tracks.npz keeps the f0 / confidence / loudness tracks; figure.png draws them under the spectrograms.
With --dry DIR (CLIP.wav, .flac, ...: the same clips without their room, as scripts/render_rooms.py keeps them),
the model's dry output is scored against them (dry_spectral_loss): a model that learned the room leaves it out of
its dry output, a model without one has baked the room into its sound. For a model with a room, metrics.json's
"room" gives its decay time (RT60, s) and level.
The baseline resynthesises the clip's own features with no learning: its f0, harmonics rolling off as 1/k, the
amplitude of a 1 kHz sine of the clip's loudness, no noise.
"""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import mlx.core as mx
import numpy as np
from rich.console import Console
from rich.table import Table

from mlx_ddsp import checkpoint
from mlx_ddsp.atomic import atomic_path
from mlx_ddsp.audio import AUDIO_EXTENSIONS, AudioError, load_audio, save_audio
from mlx_ddsp.cli import UserError, entry_point, run
from mlx_ddsp.config import Config
from mlx_ddsp.features import frame_hop
from mlx_ddsp.metrics import (REPORTED, branch_harmonic_share, clip_metrics, comb_harmonic_share, dry_metrics,
                              track, truth_metrics)
from mlx_ddsp.models import DDSP, RENDER_NOISE_SEED, render_long
from mlx_ddsp.preprocess import analyse, cache_dir_for, load_manifest, scan
from mlx_ddsp.report import write_report
from mlx_ddsp.rooms import rt60_from_ir
from mlx_ddsp.synth import harmonic_synth


class EvalError(UserError):
    """Evaluation cannot run; the message says why and what to do."""


def load_truth(truth_dir: Path, name: str, n_frames: int, frame_rate: float, delay_s: float = 0.0) -> dict | None:
    """DIR/NAME.npz resampled (nearest frame in time) to n_frames at frame_rate frames/s (the true rate,
    sample_rate / hop), `delay_s` later (frames before it or past its end are unvoiced), or None if there is no
    such file.

    Raises EvalError for a truth file without `f0_hz` / `voiced` / `frame_rate`."""
    path = Path(truth_dir) / f"{name}.npz"
    if not path.exists():
        return None
    with np.load(path) as arrays:
        missing = [k for k in ("f0_hz", "voiced", "frame_rate") if k not in arrays.files]
        if missing:
            raise EvalError(f"truth file {path} lacks {', '.join(missing)}")
        f0_hz, voiced, truth_rate = arrays["f0_hz"], arrays["voiced"].astype(bool), float(arrays["frame_rate"])
    index = np.rint((np.arange(n_frames) / frame_rate - delay_s) * truth_rate).astype(int)
    inside = (index >= 0) & (index < len(f0_hz))
    index = np.clip(index, 0, len(f0_hz) - 1)
    return {"f0_hz": f0_hz[index].astype(np.float32), "voiced": voiced[index] & inside}


def load_dry(dry_dir: str | Path, name: str, sample_rate: int) -> np.ndarray | None:
    """(N,) DIR/NAME.<any audio extension> at sample_rate, or None if there is none."""
    found = [path for path in sorted(Path(dry_dir).glob(f"{glob.escape(name)}.*"))
             if path.suffix.lower() in AUDIO_EXTENSIONS]
    return load_audio(found[0], sample_rate) if found else None


def baseline(features: dict, n_samples: int, cfg: Config) -> np.ndarray:
    """No-learning harmonic resynthesis: the clip's f0, 1/k harmonics, amplitude of a 1 kHz sine at its loudness."""
    f0_hz, loudness_db = features["f0_hz"], features["loudness_db"]
    hop = frame_hop(cfg.data.sample_rate, cfg.features.frame_rate)
    n_frames = -(-n_samples // hop) + 1
    positions = np.minimum(np.arange(n_frames), len(f0_hz) - 1)
    amplitude = 10.0 ** ((loudness_db[positions] + 3.01) / 20.0)  # a 1 kHz sine of amplitude A measures 20 log A - 3 dB
    k = np.arange(1, cfg.synth.n_harmonics + 1, dtype=np.float32)
    distribution = np.broadcast_to(1.0 / k, (n_frames, len(k)))
    audio = harmonic_synth(mx.array(f0_hz[positions][None]), mx.array(amplitude[None].astype(np.float32)),
                           mx.array(distribution[None]), (n_frames - 1) * hop, cfg.data.sample_rate)
    return np.array(audio[0, :n_samples])


def collect_clips(cfg: Config, data: str | None, console: Console) -> list[tuple[str, dict]]:
    """(name, features with audio) of every clip: the run's validation files, or the recordings in `data`."""
    if data is None:
        cache_dir = cache_dir_for(cfg)
        manifest = load_manifest(cache_dir)
        if manifest is None:
            raise EvalError(f"the run's cache {cache_dir} is missing; pass --data DIR to evaluate on recordings")
        entries = [e for e in manifest["files"] if e["status"] == "ok" and e["split"] == "validation"]
        if not entries:
            raise EvalError("the run has no validation files; pass --data DIR to evaluate on recordings")
        clips = []
        for e in entries:
            with np.load(cache_dir / "files" / f"{e['key']}.npz") as arrays:
                clips.append((Path(e["path"]).stem, {k: arrays[k] for k in arrays.files}))
        return clips
    root = Path(data)
    if not root.exists():
        raise EvalError(f"--data {root} does not exist")
    found = [(root, None)] if root.is_file() else scan(root)
    clips = []
    for path, reason in found:
        try:
            if reason is None:
                clips.append((path.stem, analyse(load_audio(path, cfg.data.sample_rate), cfg)))
                continue
        except AudioError as e:
            reason = str(e)
        console.print(f"  [yellow]skipped[/yellow] {path}: {reason}")
    if not clips:
        raise EvalError(f"no readable recording in {root}")
    return clips


def evaluate(run_dir: str | Path, data: str | None = None, which: str = "best", out: str | Path | None = None,
             console: Console | None = None, truth_dir: str | Path | None = None,
             dry_dir: str | Path | None = None) -> dict:
    """Render and score every clip; write the clip folders, metrics.json and report.html. Returns the metrics."""
    console = console or Console(stderr=True)
    model, cfg, state = checkpoint.load_trained(run_dir, which)
    out = Path(out) if out else Path(run_dir) / "eval"
    clips = collect_clips(cfg, data, console)
    for flag, folder in (("--truth", truth_dir), ("--dry", dry_dir)):
        if folder is not None and not Path(folder).is_dir():
            raise EvalError(f"{flag} {folder} is not a folder")
    records, used = [], set()
    sample_rate = cfg.data.sample_rate
    hop = frame_hop(sample_rate, cfg.features.frame_rate)
    for name, features in clips:
        name = _unique(name, used)
        target = features["audio"]
        renders = render_clip(model, features, len(target))
        renders["baseline"] = baseline(features, len(target), cfg)
        folder = out / name
        save_audio(folder / "target.wav", target, sample_rate)
        for part, audio in renders.items():
            save_audio(folder / f"{'recon' if part == 'audio' else part}.wav", audio, sample_rate)
        truth = None if truth_dir is None else load_truth(truth_dir, name, len(features["f0_hz"]), sample_rate / hop)
        if truth_dir is not None and truth is None:
            console.print(f"  [yellow]no truth[/yellow] for {name} in {truth_dir}")
        recon = track(renders["audio"], cfg)
        record = {"name": name, "n_samples": len(target), "seconds": round(len(target) / sample_rate, 3),
                  "model": clip_metrics(target, renders["audio"], features, cfg, recon, truth),
                  "baseline": clip_metrics(target, renders["baseline"], features, cfg, None, truth),
                  "target": {"comb_harmonic_share": comb_harmonic_share(target, features["f0_hz"],
                                                                        features["confidence"], sample_rate, hop)}}
        record["model"]["branch_harmonic_share"] = branch_harmonic_share(renders["harmonic"], renders["noise"])
        if truth is not None:
            record["target"].update(truth_metrics(features["f0_hz"], truth))
            dry_f0_hz = track(renders["dry"], cfg)["f0_hz"] if "dry" in renders else recon["f0_hz"]
            record["model"]["dry_f0_truth_rpa"] = truth_metrics(dry_f0_hz, truth)["f0_truth_rpa"]
        dry = None if dry_dir is None else load_dry(dry_dir, name, sample_rate)
        if dry is not None:
            record["model"].update(dry_metrics(dry, renders.get("dry", renders["audio"]), cfg))
            record["baseline"].update(dry_metrics(dry, renders["baseline"], cfg))
        elif dry_dir is not None:
            console.print(f"  [yellow]no dry recording[/yellow] of {name} in {dry_dir}")
        records.append(record)
        tracks = {f"target_{k}": features[k] for k in ("f0_hz", "confidence", "loudness_db")}
        tracks.update({f"recon_{k}": v for k, v in recon.items()})
        if truth is not None:
            tracks.update(truth_f0_hz=truth["f0_hz"], truth_voiced=truth["voiced"])
        with atomic_path(folder / "tracks.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, frame_rate=sample_rate / hop, **tracks)
        console.print(f"  {name}: spectral loss {records[-1]['model']['spectral_loss']:.3f} "
                      f"(baseline {records[-1]['baseline']['spectral_loss']:.3f})")
    result = {"run_dir": str(run_dir), "checkpoint": state["path"], "step": state["step"],
              "mean": {who: _mean([r[who] for r in records]) for who in ("model", "baseline", "target")},
              "clips": records}
    room = room_summary(model)
    if room:
        result["room"] = room
        rt60 = "-" if room["rt60_s"] is None else f"{room['rt60_s']:.2f} s"
        console.print(f"learned room: RT60 {rt60}, reverberation {room['wet_to_dry_db']:+.1f} dB over the dry sound")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "metrics.json") as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1))
    write_report(out, result, sample_rate, Path(run_dir) / "logs" / "metrics.jsonl", cfg.train.grad_clip_norm)
    print_table(result, console)
    console.print(f"wrote {out / 'report.html'} and {out / 'metrics.json'}")
    return result


def room_summary(model: DDSP) -> dict | None:
    """{"rt60_s", "wet_to_dry_db"} of the model's learned room (its IR's Schroeder RT60, and the IR's energy:
    the reverberation's level over a white dry sound's), or None without one."""
    ir = model.room_impulse_response()
    if ir is None:
        return None
    ir = np.array(ir, np.float64)
    energy = float(np.sum(ir**2))
    try:
        rt60 = rt60_from_ir(ir, model.sample_rate)
    except ValueError:  # a room that does not decay by 25 dB within its taps
        rt60 = None
    return {"rt60_s": rt60, "wet_to_dry_db": 10.0 * np.log10(max(energy, 1e-30))}


def render_clip(model: DDSP, features: dict, n_samples: int) -> dict[str, np.ndarray]:
    """{"audio", "harmonic", "noise"} (and "dry" with reverb): (n_samples,) renders of one clip, fixed noise."""
    out = render_long(model, mx.array(features["f0_hz"][None]), mx.array(features["loudness_db"][None]), n_samples,
                      key=mx.random.key(RENDER_NOISE_SEED), audio=mx.array(features["audio"][None, :n_samples]))
    return {k: v[0] for k, v in out.items()}


def _unique(name: str, used: set) -> str:
    candidate, i = name, 1
    while candidate in used:
        i += 1
        candidate = f"{name}_{i}"
    used.add(candidate)
    return candidate


def _mean(metrics: list[dict]) -> dict:
    out = {}
    for k in [k for k in REPORTED if any(k in m for m in metrics)]:
        values = [m[k] for m in metrics if m.get(k) is not None]
        out[k] = float(np.mean(values)) if values else None
    return out


def print_table(result: dict, console: Console) -> None:
    table = Table(title=f"held-out metrics, step {result['step']} ({len(result['clips'])} clips)")
    table.add_column("metric")
    table.add_column("model", justify="right")
    table.add_column("baseline", justify="right")
    table.add_column("target itself", justify="right")
    for k in result["mean"]["model"]:
        table.add_row(k, *[_fmt(result["mean"][who].get(k)) for who in ("model", "baseline", "target")])
    console.print(table)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mlx_ddsp.eval", description=__doc__.split("\n\n")[0],
                                     epilog="example: python -m mlx_ddsp.eval runs/flute_cpu",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a training run dir (holding checkpoints/)")
    parser.add_argument("--data", help="a folder (or file) of recordings to evaluate instead of the validation split")
    parser.add_argument("--truth", help="a folder of true f0 tracks to score against (CLIP.npz: f0_hz, voiced, "
                                        "frame_rate)")
    parser.add_argument("--dry", help="a folder of the clips' dry recordings (same names, no room) to score the "
                                      "model's dry output against")
    parser.add_argument("--checkpoint", default="best", help="best (default), last, or a checkpoint folder")
    parser.add_argument("--out", help="output folder (default RUN_DIR/eval)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(lambda console: evaluate(args.run_dir, args.data, args.checkpoint, args.out, console, args.truth,
                                        args.dry))


if __name__ == "__main__":
    entry_point(main)
