"""Audio I/O: any file soundfile reads -> mono float32 at the recipe's sample rate (soxr); WAV/FLAC writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from mlx_ddsp.atomic import atomic_path
from mlx_ddsp.cli import UserError

AUDIO_EXTENSIONS = {".wav", ".flac", ".aiff", ".aif", ".ogg", ".oga", ".mp3", ".au", ".caf", ".w64", ".rf64"}


class AudioError(UserError):
    """A file that cannot be used as audio; the message is the reason, fit for a summary table."""


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read `path`, average its channels and resample to `sample_rate` (soxr, high quality).

    Returns (n_samples,) float32. Raises AudioError for unreadable, empty, or non-finite audio.
    """
    path = Path(path)
    try:
        audio, file_rate = sf.read(path, dtype="float32", always_2d=True)
    except PermissionError:
        raise AudioError("permission denied") from None
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as e:
        raise AudioError(f"unreadable audio ({str(e).strip() or type(e).__name__})") from None
    if audio.shape[0] == 0:
        raise AudioError("empty (no samples)")
    if not np.all(np.isfinite(audio)):
        raise AudioError("contains NaN or Inf samples")
    mono = audio.mean(axis=1)
    if file_rate != sample_rate:
        mono = soxr.resample(mono, file_rate, sample_rate, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)


def file_rate(path: str | Path) -> int | None:
    """The sample rate a file was recorded at (its header), or None if it cannot be read."""
    try:
        return int(sf.info(str(path)).samplerate)
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError):
        return None


def save_audio(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono audio (WAV or FLAC by extension, 16-bit for FLAC, float for WAV), atomically."""
    path = Path(path)
    audio = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
    subtype = "PCM_16" if path.suffix.lower() == ".flac" else "FLOAT"
    with atomic_path(path) as tmp:
        sf.write(tmp, audio, sample_rate, subtype=subtype, format=path.suffix.lstrip(".").upper())
