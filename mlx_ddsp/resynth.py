"""Timbre transfer: drive a trained model with the pitch and loudness of any recording.

usage: python -m mlx_ddsp.resynth RUN_DIR INPUT OUTPUT [--pitch-shift SEMITONES] [--loudness-shift DB]
                                  [--auto-adjust] [--voiced-threshold C] [--z-from FILE]
                                  [--room keep|dry|RUN_DIR] [--checkpoint best|last|PATH]

  python -m mlx_ddsp.resynth runs/flute_cpu voice.wav voice_as_flute.wav --auto-adjust
  python -m mlx_ddsp.resynth runs/flute_cpu cello.flac cello_as_flute.wav --pitch-shift 12 --loudness-shift -6
  python -m mlx_ddsp.resynth runs/cello_hall take.wav take_dry.wav --room dry

The input (any length, any format the preprocessing reads) is resampled to the model's rate, its f0, voicing
confidence and loudness are extracted, adjusted, and rendered through the model; the output has the input's
duration. --auto-adjust moves the pitch by whole octaves towards the training data's mean pitch and maps the
loudness of the voiced frames onto the training loudness distribution by quantiles; --pitch-shift and
--loudness-shift then apply on top. Frames whose voicing confidence is below --voiced-threshold (0.5) are rendered
40 dB quieter, so silence and breaths stay quiet. A model with an encoder takes z from INPUT, or with --z-from
from another recording (its mean z over audible frames).

--room: a model trained with a room (synth.reverb=true) plays through it by default (`keep`): it then sounds like
its training recordings, room included, and the room is part of what it learned. `dry` leaves the room out: the
instrument alone, for a mix that adds its own reverb (as a DAW plugin would). A run dir puts that run's learned
room on instead (resampled to this model's rate when they differ), e.g. a dry-trained model into a hall.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlx.core as mx
import numpy as np
from rich.console import Console

from mlx_ddsp import checkpoint
from mlx_ddsp.audio import AudioError, load_audio, save_audio
from mlx_ddsp.cli import UserError, entry_point, run
from mlx_ddsp.metrics import AUDIBLE_DB, VOICED  # VOICED: confidence below which a frame counts as unvoiced
from mlx_ddsp.features import LOUDNESS_FLOOR_DB, frame_loudness
from mlx_ddsp.models import DDSP, RENDER_NOISE_SEED, render_long
from mlx_ddsp.preprocess import analyse
from mlx_ddsp.rooms import resample_impulse_response
from mlx_ddsp.synth import reverb

UNVOICED_ATTENUATION_DB = 40.0


class ResynthError(UserError):
    """Resynthesis cannot run; the message says why and what to do."""


def quantile_map(values: np.ndarray, reference: dict) -> np.ndarray:
    """Map `values` onto a distribution given by its quantiles {"0.0": v0, ..., "1.0": v1} (level -> value)."""
    levels = np.array(sorted(float(q) for q in reference))
    targets = np.array([reference[k] for k in sorted(reference, key=float)])
    ranks = (np.argsort(np.argsort(values)) + 0.5) / len(values)  # each value's quantile within `values`
    return np.interp(ranks, levels, targets)


def adjust(features: dict, stats: dict, pitch_shift: float = 0.0, loudness_shift: float = 0.0,
           auto_adjust: bool = False, voiced_threshold: float = VOICED) -> tuple[np.ndarray, np.ndarray, dict]:
    """(f0_hz, loudness_db, notes) to feed the model, from an input's features (T,) and the training statistics."""
    f0_hz, loudness_db = features["f0_hz"].astype(np.float64), features["loudness_db"].astype(np.float64)
    voiced = features["confidence"] >= voiced_threshold
    notes = {"voiced_fraction": float(voiced.mean()), "octaves": 0, "pitch_shift": pitch_shift,
             "loudness_shift": loudness_shift}
    if auto_adjust and voiced.any():
        if stats.get("f0_midi"):
            input_midi = np.mean(12.0 * np.log2(f0_hz[voiced] / 440.0) + 69.0)
            notes["octaves"] = int(np.round((stats["f0_midi"]["mean"] - input_midi) / 12.0))
            f0_hz = f0_hz * 2.0 ** notes["octaves"]
        if stats.get("loudness_db"):
            loudness_db[voiced] = quantile_map(loudness_db[voiced], stats["loudness_db"]["quantiles"])
    f0_hz = f0_hz * 2.0 ** (pitch_shift / 12.0)
    loudness_db = loudness_db + loudness_shift
    loudness_db[~voiced] -= UNVOICED_ATTENUATION_DB
    loudness_db = np.maximum(loudness_db, LOUDNESS_FLOOR_DB)
    return f0_hz.astype(np.float32), loudness_db.astype(np.float32), notes


def read_input(path: str | Path, sample_rate: int) -> np.ndarray:
    """`load_audio` for a command's input file: a missing or unusable file is a ResynthError naming it."""
    if not Path(path).is_file():
        raise ResynthError(f"input file {path} does not exist")
    try:
        return load_audio(path, sample_rate)
    except AudioError as e:
        raise ResynthError(f"cannot use {path}: {e}") from e


def reference_z(model: DDSP, audio: np.ndarray, cfg) -> mx.array:
    """(1, z_dims): the encoder's z of a reference recording, averaged over its audible frames."""
    loudness_db = frame_loudness(audio, cfg.data.sample_rate, cfg.features.frame_rate, cfg.features.loudness)
    z = model.encoder(mx.array(audio[None]), len(loudness_db))[0]  # (T, z_dims) at the feature frames
    audible = mx.array(loudness_db > AUDIBLE_DB if (loudness_db > AUDIBLE_DB).any() else np.ones(len(z), bool))
    return (mx.sum(z * audible[:, None], axis=0) / mx.sum(audible))[None]


def resynthesize(run_dir: str | Path, input_path: str | Path, output_path: str | Path, pitch_shift: float = 0.0,
                 loudness_shift: float = 0.0, auto_adjust: bool = False, which: str = "best",
                 voiced_threshold: float = VOICED, z_from: str | Path | None = None, room: str = "keep",
                 console: Console | None = None) -> dict:
    """Render INPUT's performance through the trained model into OUTPUT. Returns the adjustment notes.

    With an encoder, z comes from INPUT itself, or from the recording `z_from` (its mean z, held constant).
    room: "keep" (the model's own room, if it learned one), "dry" (none), or a run dir whose learned room is used.
    """
    console = console or Console(stderr=True)
    read_input(input_path, 8000)  # fail on a missing or unreadable input before loading the model
    model, cfg, state = checkpoint.load_trained(run_dir, which)
    if z_from is not None and not model.use_encoder:
        raise ResynthError("--z-from needs a model trained with model.encoder=true; this one has no encoder")
    room_ir = played_room(model, room, cfg.data.sample_rate)
    audio = read_input(input_path, cfg.data.sample_rate)
    features = analyse(audio, cfg)
    f0_hz, loudness_db, notes = adjust(features, state.get("stats", {}), pitch_shift, loudness_shift, auto_adjust,
                                     voiced_threshold)
    z = reference_z(model, read_input(z_from, cfg.data.sample_rate), cfg) if z_from is not None else None
    out = render_long(model, mx.array(f0_hz[None]), mx.array(loudness_db[None]), len(audio),
                      key=mx.random.key(RENDER_NOISE_SEED), audio=mx.array(audio[None]), z=z)
    played = np.array(with_room(mx.array(out.get("dry", out["audio"])), room_ir))
    save_audio(output_path, played[0], cfg.data.sample_rate)
    notes["seconds"], notes["room"] = len(audio) / cfg.data.sample_rate, room
    console.print(f"wrote {output_path}: {notes['seconds']:.1f} s, {notes['voiced_fraction']:.0%} voiced frames, "
                  f"octave shift {notes['octaves']:+d}, pitch shift {pitch_shift:+g} st, loudness shift "
                  f"{loudness_shift:+g} dB{' (auto-adjusted)' if auto_adjust else ''}")
    return notes


def played_room(model: DDSP, room: str, sample_rate: int) -> np.ndarray | None:
    """(n_taps,) the impulse response (first tap 0) that `room` asks for: "keep" the model's own (None if it learned
    none), "dry" None, else the learned room of the run dir `room` (`room_of`) at `sample_rate` Hz."""
    if room == "dry":
        return None
    if room == "keep":
        ir = model.room_impulse_response()
        return None if ir is None else np.array(ir)
    return room_of(room, sample_rate)


def with_room(dry: mx.array, room_ir: np.ndarray | None) -> mx.array:
    """(B, n) dry audio played through `room_ir` (`played_room`; None: as it is), as `DDSP.apply_reverb` does."""
    return dry if room_ir is None else reverb(dry, mx.array(room_ir[: dry.shape[-1]]))


def room_of(run_dir: str | Path, sample_rate: int) -> np.ndarray:
    """(n_taps,) the learned room of another run at `sample_rate` Hz."""
    try:
        model, cfg, _ = checkpoint.load_trained(run_dir)
    except checkpoint.CheckpointError as e:
        raise ResynthError(f"--room '{run_dir}' is neither keep, dry nor a run dir with a checkpoint ({e})") from e
    ir = model.room_impulse_response()
    if ir is None:
        raise ResynthError(f"--room '{run_dir}': that model learned no room (it was trained with synth.reverb=false)")
    return resample_impulse_response(np.array(ir), cfg.data.sample_rate, sample_rate)


def add_adjust_arguments(parser: argparse.ArgumentParser) -> None:
    """--pitch-shift, --loudness-shift and --voiced-threshold (`adjust`'s settings), for resynth and stream."""
    parser.add_argument("--pitch-shift", type=float, default=0.0, help="semitones added to the input's pitch")
    parser.add_argument("--loudness-shift", type=float, default=0.0, help="dB added to the input's loudness")
    parser.add_argument("--voiced-threshold", type=float, default=VOICED,
                        help=f"voicing confidence below which frames are rendered {UNVOICED_ATTENUATION_DB:g} dB "
                             f"quieter (default {VOICED}; lower it for breathy or noisy inputs)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mlx_ddsp.resynth", description=__doc__.split("\n\n")[0],
                                     epilog="example: python -m mlx_ddsp.resynth runs/flute_cpu voice.wav "
                                            "flute_voice.wav --auto-adjust",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a training run dir (holding checkpoints/)")
    parser.add_argument("input", help="a recording (WAV, FLAC, ...)")
    parser.add_argument("output", help="where to write the result (.wav or .flac)")
    add_adjust_arguments(parser)
    parser.add_argument("--auto-adjust", action="store_true",
                        help="match octave and loudness distribution to the training data")
    parser.add_argument("--z-from", help="models with an encoder: take z from this recording instead of INPUT")
    parser.add_argument("--room", default="keep",
                        help="keep (default: the model's own learned room, if any), dry (no room), or a run dir "
                             "whose learned room to play through")
    parser.add_argument("--checkpoint", default="best", help="best (default), last, or a checkpoint folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(lambda console: resynthesize(args.run_dir, args.input, args.output, args.pitch_shift,
                                            args.loudness_shift, args.auto_adjust, args.checkpoint,
                                            args.voiced_threshold, args.z_from, args.room, console))


if __name__ == "__main__":
    entry_point(main)
