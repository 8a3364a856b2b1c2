"""Preprocessing: a folder of recordings -> a feature cache of whole files plus the examples cut from them.

    python -m mlx_ddsp.preprocess RECIPE [key=value ...]

Scans `data.dir` recursively (hidden files and folders, such as the cache itself, are ignored), converts each
audio file to mono at `data.sample_rate`, computes f0 / confidence / loudness over the whole file, and cuts examples
of `data.example_seconds` every `data.hop_seconds`, dropping those with more than `data.max_silent_fraction` of
frames below `data.silence_db`. A file shorter than one example is zero-padded to one example (and kept if it is
not mostly silence). Files are split into train / validation by file (`data.val_files`, or a seeded
`data.val_fraction`), so no recording lands in both.

Cache (`cache_dir_for`: under `data.cache_dir`, default `<data.dir>/.mlx_ddsp_cache`, one folder per sample rate and
frame rate, e.g. `16000hz_250fps/`):
    manifest.json      {"params": {...}, "files": [{"path", "status", "reason", "split", "chunks", ...}], "stats", ...}
    files/<key>.npz    audio (n_samples,), f0_hz, confidence, loudness_db (T,) for one file
The key hashes the file's path, size, modification time and the feature parameters, so a re-run with nothing
changed reads no audio, and a changed file or parameter recomputes only what it affects. Every write is atomic.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from mlx_ddsp.atomic import atomic_path
from mlx_ddsp.audio import AUDIO_EXTENSIONS, AudioError, file_rate, load_audio
from mlx_ddsp.cli import UserError, run
from mlx_ddsp.config import Config, ConfigError, load_config, resolve_defaults
from mlx_ddsp.features import FEATURE_NAMES, VOICED_THRESHOLD, estimate_f0, frame_hop, frame_loudness

CACHE_VERSION = 4  # 2: frames a whole hop apart at any rate, pitch analysed at 16 kHz, 64 ms loudness window;
# 3: unpitched frames hold the last pitch; 4: the octave check weighs sharp weak partials and missing fundamentals
MANIFEST = "manifest.json"


class PreprocessError(UserError):
    """Nothing usable: the message is one sentence saying why and what to do."""


def cache_dir_for(cfg: Config) -> Path:
    """`<data.cache_dir or data.dir/.mlx_ddsp_cache>/<rate>hz_<frame rate>fps`: one cache per sample and frame rate,
    so recipes at 16 and 48 kHz on one folder keep their features side by side."""
    root = Path(cfg.data.cache_dir) if cfg.data.cache_dir else Path(cfg.data.dir) / ".mlx_ddsp_cache"
    return root / f"{cfg.data.sample_rate}hz_{cfg.features.frame_rate:g}fps"


def f0_dereverb_for(cfg: Config) -> bool:
    """features.f0_dereverb, None resolved: on with synth.reverb (a model of a room is trained on room recordings)."""
    return resolve_defaults(cfg).features.f0_dereverb


def feature_params(cfg: Config) -> dict:
    """Parameters that change the per-file features (and so the cache keys)."""
    return {
        "version": CACHE_VERSION,
        "sample_rate": cfg.data.sample_rate,
        "frame_rate": cfg.features.frame_rate,
        "f0_min_hz": cfg.features.f0_min_hz,
        "f0_max_hz": cfg.features.f0_max_hz,
        "loudness": cfg.features.loudness,
        "min_samples": example_samples(cfg),
        **({"f0_dereverb": True} if f0_dereverb_for(cfg) else {}),  # absent when off: earlier caches stay valid
    }


def example_hops(cfg: Config) -> int:
    """Frame hops in one example: an example spans frames [s, s + example_hops] (example_hops + 1 frames), counted
    at the nominal frame rate (4 s at 250 frames/s: 1000 hops, 176000 samples = 3.99 s at 44.1 kHz)."""
    hops = cfg.data.example_seconds * cfg.features.frame_rate
    if abs(hops - round(hops)) > 1e-9:
        raise ConfigError("data.example_seconds * features.frame_rate must be a whole number of frames")
    return int(round(hops))


def example_samples(cfg: Config) -> int:
    return example_hops(cfg) * frame_hop(cfg.data.sample_rate, cfg.features.frame_rate)


def scan(data_dir: Path) -> list[tuple[Path, str | None]]:
    """Every non-hidden file under data_dir (following links, once each), with a reason if it is unusable.

    Of several paths to one file (symbolic links), the real one is kept and the others are named as its links."""
    found, seen_dirs, by_real = [], set(), {}
    for root, dirs, files in os.walk(data_dir, followlinks=True):
        real_root = os.path.realpath(root)
        if real_root in seen_dirs:  # a link back up the tree
            dirs[:] = []
            continue
        seen_dirs.add(real_root)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            path = Path(root) / name
            reason = None
            if not path.exists():
                reason = "broken symbolic link"
            elif path.suffix.lower() not in AUDIO_EXTENSIONS:
                reason = f"not an audio file (extension '{path.suffix or 'none'}')"
            else:
                by_real.setdefault(os.path.realpath(path), []).append(len(found))
            found.append((path, reason))
    real_dir = os.path.realpath(data_dir)
    for real, indices in by_real.items():
        if len(indices) > 1:  # keep the path with no link inside data_dir
            keep = next((i for i in indices
                         if os.path.join(real_dir, *found[i][0].relative_to(data_dir).parts) == real), indices[0])
            kept = found[keep][0].relative_to(data_dir).as_posix()
            for i in indices:
                if i != keep:
                    found[i] = (found[i][0], f"same file as {kept} (link)")
    return found


def file_key(relpath: str, stat: os.stat_result, params: dict) -> str:
    text = json.dumps([relpath, stat.st_size, stat.st_mtime_ns, params], sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def compute_file_features(path: Path, cfg: Config) -> dict:
    """Audio and whole-file features, padded to at least one example. Raises AudioError."""
    audio = load_audio(path, cfg.data.sample_rate)
    min_samples = example_samples(cfg)
    if len(audio) < min_samples:
        audio = np.pad(audio, (0, min_samples - len(audio)))
    return analyse(audio, cfg)


def analyse(audio: np.ndarray, cfg: Config) -> dict:
    """{"audio": (N,), "f0_hz", "confidence", "loudness_db": (T,)} with T = N // hop + 1, for audio at data.sample_rate."""
    f0_hz, confidence = estimate_f0(audio, cfg.data.sample_rate, cfg.features.frame_rate, cfg.features.f0_min_hz,
                                    cfg.features.f0_max_hz, dereverb=f0_dereverb_for(cfg))
    loudness_db = frame_loudness(audio, cfg.data.sample_rate, cfg.features.frame_rate, cfg.features.loudness)
    return {"audio": audio, "f0_hz": f0_hz, "confidence": confidence, "loudness_db": loudness_db}


def chunk_starts(loudness_db: np.ndarray, cfg: Config) -> tuple[list[int], str | None]:
    """Start frames of the examples kept from one file, or a reason why none is."""
    example_frames = example_hops(cfg)
    hop_frames = max(1, round(cfg.data.hop_seconds * cfg.data.sample_rate / frame_hop(cfg.data.sample_rate,
                                                                                      cfg.features.frame_rate)))
    n_frames = len(loudness_db)
    starts = range(0, n_frames - example_frames, hop_frames)  # example i spans frames [s, s + example_frames]
    silent = loudness_db < cfg.data.silence_db
    if silent.all():
        return [], f"silent (every frame below {cfg.data.silence_db:g} dB)"
    kept = [s for s in starts if silent[s : s + example_frames + 1].mean() <= cfg.data.max_silent_fraction]
    if not kept:
        return [], f"no example with more than {1 - cfg.data.max_silent_fraction:.0%} of frames above {cfg.data.silence_db:g} dB"
    return kept, None


def split_files(relpaths: list[str], cfg: Config) -> dict[str, str]:
    """'train' or 'validation' for each usable file: data.val_files if given, else a seeded share."""
    if cfg.data.val_files:
        wanted = set(cfg.data.val_files)
        names = set(relpaths) | {Path(p).name for p in relpaths}
        for entry in cfg.data.val_files:
            if entry not in names:  # a silently empty validation split would mean no validation loss, no eval
                close = difflib.get_close_matches(entry, sorted(names), n=3, cutoff=0.5)
                hint = f"; closest: {', '.join(close)}" if close else ""
                raise PreprocessError(f"data.val_files entry '{entry}' matches no usable file in {cfg.data.dir}{hint} "
                                      "(set data.val_files=[] to hold out a seeded data.val_fraction instead)")
        return {p: "validation" if (p in wanted or Path(p).name in wanted) else "train" for p in relpaths}
    order = np.random.default_rng(cfg.seed).permutation(len(relpaths))
    n_val = 0 if len(relpaths) < 2 else min(len(relpaths) - 1, max(1, round(cfg.data.val_fraction * len(relpaths))))
    val = {relpaths[i] for i in order[:n_val]}
    return {p: "validation" if p in val else "train" for p in relpaths}


def note_stats(arrays: list[dict], starts: list[list[int]], cfg: Config) -> dict | None:
    """The range the training notes span, as DDSP-VST's model metadata gives it (`mean_min_pitch_note`, ...): per
    training example, the lowest and highest pitch (MIDI) and loudness (dB) of its notes (voiced frames above
    data.silence_db; the 5th and 95th percentiles, so one glitched frame does not set them), averaged over the
    examples that have notes. None without a note."""
    example_frames = example_hops(cfg) + 1
    lows, highs = [], []
    for a, file_starts in zip(arrays, starts):
        on = (a["confidence"] >= VOICED_THRESHOLD) & (a["loudness_db"] >= cfg.data.silence_db)
        for s in file_starts:
            window = slice(s, s + example_frames)
            if on[window].any():
                midi = 12.0 * np.log2(a["f0_hz"][window][on[window]] / 440.0) + 69.0
                notes = np.stack([midi, a["loudness_db"][window][on[window]]])
                lows.append(np.percentile(notes, 5, axis=1))
                highs.append(np.percentile(notes, 95, axis=1))
    if not lows:
        return None
    (low_pitch, low_db), (high_pitch, high_db) = np.mean(lows, axis=0), np.mean(highs, axis=0)
    return {"examples": len(lows), "mean_min_pitch_midi": float(low_pitch), "mean_max_pitch_midi": float(high_pitch),
            "mean_min_loudness_db": float(low_db), "mean_max_loudness_db": float(high_db)}


def training_stats(arrays: list[dict], starts: list[list[int]], cfg: Config) -> dict:
    """Mean, std and quantiles of f0 (confident frames, Hz and MIDI) and loudness over the training examples, and
    the training files' `note_stats`."""
    example_frames = example_hops(cfg)
    f0, loud = [], []
    for a, file_starts in zip(arrays, starts):
        for s in file_starts:
            window = slice(s, s + example_frames + 1)
            f0.append(a["f0_hz"][window][a["confidence"][window] >= VOICED_THRESHOLD])
            loud.append(a["loudness_db"][window])
    quantile_levels = [round(q, 2) for q in np.linspace(0.0, 1.0, 101)]  # percentiles, for quantile mapping

    def describe(x):
        if len(x) == 0:
            return None
        return {"mean": float(np.mean(x)), "std": float(np.std(x)),
                "quantiles": {str(q): float(v) for q, v in zip(quantile_levels, np.quantile(x, quantile_levels))}}

    f0 = np.concatenate(f0) if f0 else np.zeros(0)
    return {
        "f0_hz": describe(f0),
        "f0_midi": describe(12.0 * np.log2(f0 / 440.0) + 69.0) if len(f0) else None,
        "loudness_db": describe(np.concatenate(loud) if loud else np.zeros(0)),
        "notes": note_stats(arrays, starts, cfg),
    }


def load_manifest(cache_dir: Path) -> dict | None:
    try:
        return json.loads((cache_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _save_npz(path: Path, arrays: dict) -> None:
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def _load_features(path: Path) -> dict | None:
    """A cached file's frame features (not its audio, which re-runs never need), or None if missing or damaged."""
    try:
        with np.load(path) as data:
            if "audio" not in data.files:
                return None
            return {k: data[k] for k in FEATURE_NAMES}
    except (OSError, ValueError, KeyError, EOFError):
        return None


def preprocess(cfg: Config, console: Console | None = None) -> dict:
    """Build or refresh the cache for cfg.data.dir; returns the manifest. Raises PreprocessError if nothing is usable."""
    console = console or Console(stderr=True)
    data_dir = Path(cfg.data.dir)
    if not data_dir.is_dir():
        raise PreprocessError(f"data folder '{data_dir}' does not exist; set data.dir to a folder of recordings")
    cache_dir = cache_dir_for(cfg)
    files_dir = cache_dir / "files"
    params = feature_params(cfg)
    started = time.perf_counter()
    entries, arrays, starts = [], [], []
    found = scan(data_dir)
    computed = 0
    with Progress(TextColumn("[bold]features"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.description}"), console=console, transient=True) as progress:
        task = progress.add_task("", total=len(found))
        for path, reason in found:
            relpath = path.relative_to(data_dir).as_posix()
            progress.update(task, description=relpath)
            entry = {"path": relpath, "status": "skipped", "reason": reason, "split": None, "chunks": 0}
            if reason is None:
                try:
                    key = file_key(relpath, path.stat(), params)
                    cached = _load_features(files_dir / f"{key}.npz")
                    if cached is None:
                        cached = compute_file_features(path, cfg)
                        _save_npz(files_dir / f"{key}.npz", cached)
                        computed += 1
                    file_starts, reason = chunk_starts(cached["loudness_db"], cfg)
                except AudioError as e:
                    reason = str(e)
                except Exception as e:  # never let one file stop the run
                    reason = f"error while processing ({type(e).__name__}: {e})"
                if reason is None:
                    entry.update(status="ok", reason=None, key=key, chunks=len(file_starts), starts=file_starts,
                                 source_rate=file_rate(path),
                                 seconds=round((len(cached["loudness_db"]) - 1) * frame_hop(
                                     cfg.data.sample_rate, cfg.features.frame_rate) / cfg.data.sample_rate, 3))
                    arrays.append(cached)
                    starts.append(file_starts)
                else:
                    entry["reason"] = reason
            entries.append(entry)
            progress.advance(task)
    usable = [e for e in entries if e["status"] == "ok"]
    if not usable:
        raise PreprocessError(
            f"no usable audio in '{data_dir}' ({len(entries)} files found, all skipped); "
            "point data.dir at a folder of WAV/FLAC recordings with audible sound"
        )
    splits = split_files([e["path"] for e in usable], cfg)
    for e in usable:
        e["split"] = splits[e["path"]]
    train = [(a, s) for e, a, s in zip(usable, arrays, starts) if e["split"] == "train"]
    manifest = {
        "params": {**params, **asdict(cfg.data), "features": asdict(cfg.features), "seed": cfg.seed},
        "files": entries,
        "stats": training_stats([a for a, _ in train], [s for _, s in train], cfg),
        "example_samples": example_samples(cfg),
        "example_frames": example_hops(cfg) + 1,
    }
    with atomic_path(cache_dir / MANIFEST) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=1))
    keep = {f"{e['key']}.npz" for e in usable}
    for stale in files_dir.glob("*.npz"):
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    print_summary(manifest, console, computed, time.perf_counter() - started, cache_dir)
    return manifest


def print_summary(manifest: dict, console: Console, computed: int, seconds: float, cache_dir: Path) -> None:
    files = manifest["files"]
    ok = [f for f in files if f["status"] == "ok"]
    table = Table(title=f"mlx_ddsp cache: {cache_dir}", show_header=True)
    table.add_column("")
    table.add_column("files", justify="right")
    table.add_column("minutes", justify="right")
    table.add_column("examples", justify="right")
    for split in ("train", "validation"):
        rows = [f for f in ok if f["split"] == split]
        table.add_row(split, str(len(rows)), f"{sum(f['seconds'] for f in rows) / 60:.1f}",
                      str(sum(f["chunks"] for f in rows)))
    skipped = [f for f in files if f["status"] == "skipped"]
    table.add_row("skipped", str(len(skipped)), "", "")
    console.print(table)
    for f in skipped:
        console.print(f"  [yellow]skipped[/yellow] {f['path']}: {f['reason']}")
    sample_rate = manifest["params"]["sample_rate"]
    below = sorted((f for f in ok if (f.get("source_rate") or sample_rate) < sample_rate),
                   key=lambda f: f["source_rate"])
    if below:
        low = below[0]
        console.print(f"  [yellow]note[/yellow] {len(below)} file(s) recorded below data.sample_rate={sample_rate} "
                      f"Hz (lowest: {low['path']}, {low['source_rate']} Hz): resampled up, they hold nothing above "
                      f"{low['source_rate'] / 2000:g} kHz, so the model learns less of the top band from them")
    console.print(f"{computed} file(s) analysed, {len(ok) - computed} reused from the cache, in {seconds:.1f} s")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    return run(lambda console: preprocess(load_config(argv[0], argv[1:]), console))


if __name__ == "__main__":
    sys.exit(main())
