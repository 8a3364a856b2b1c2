"""report.html: one self-contained page per evaluation, opened from disk with no server.

Per clip: audio players (target, recon, harmonic, noise, baseline), log-spectrograms of target and recon side by
side, and the clip's metrics; the mean metrics on top. Spectrograms are PNGs written with numpy and zlib (no
plotting library needed).
"""

from __future__ import annotations

import html
import struct
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

from mlx_ddsp.atomic import atomic_path

PLAYERS = ("target", "recon", "dry", "harmonic", "noise", "baseline")
# a dark-to-bright colour map (black, violet, red, orange, pale yellow) for dB images
_ANCHORS = np.array([[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]], dtype=np.float64)


def png_bytes(rgb: np.ndarray) -> bytes:
    """A PNG file of an (H, W, 3) uint8 image."""
    height, width, _ = rgb.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, width * 3)], axis=1)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + chunk(b"IEND", b""))


def spectrogram_image(audio: np.ndarray, n_fft: int = 1024, hop: int = 256, max_width: int = 1000,
                      height: int = 256, range_db: float = 80.0) -> np.ndarray:
    """(height, width, 3) uint8 log-magnitude spectrogram, low frequencies at the bottom, 0 dB = the clip's peak."""
    audio = np.asarray(audio, dtype=np.float64)
    n_frames = max(1, 1 + (len(audio) - n_fft) // hop) if len(audio) >= n_fft else 1
    padded = np.pad(audio, (0, max(0, (n_frames - 1) * hop + n_fft - len(audio))))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:n_frames] * np.hanning(n_fft)
    db = 20 * np.log10(np.abs(np.fft.rfft(frames, axis=1)) + 1e-9)  # (frames, bins)
    db = np.clip((db - db.max()) / range_db + 1.0, 0.0, 1.0)
    columns = np.linspace(0, n_frames - 1, min(n_frames, max_width)).round().astype(int)
    rows = np.linspace(0, db.shape[1] - 1, height).round().astype(int)
    image = db[columns][:, rows].T[::-1]  # (height, width), low frequencies at the bottom
    levels = np.linspace(0, 1, len(_ANCHORS))
    rgb = np.stack([np.interp(image, levels, _ANCHORS[:, c]) for c in range(3)], axis=-1)
    return rgb.round().astype(np.uint8)


def _metrics_table(rows: list[tuple[str, dict]], metric_names: list[str]) -> str:
    head = "".join(f"<th>{html.escape(m)}</th>" for m in metric_names)
    body = "".join(
        f"<tr><td>{html.escape(who)}</td>"
        + "".join(f"<td>{'-' if values.get(m) is None else f'{values[m]:.3f}'}</td>" for m in metric_names)
        + "</tr>"
        for who, values in rows
    )
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def write_report(out_dir: Path, result: dict, sample_rate: int) -> Path:
    """Write out_dir/report.html (and the clips' spectrogram PNGs) for evaluation `result` (see mlx_ddsp.eval)."""
    out_dir = Path(out_dir)
    metric_names = list(result["mean"]["model"])
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>mlx_ddsp evaluation</title>',
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{width:49%;image-rendering:pixelated}"
        "figure{display:inline-block;margin:0;width:16%}audio{width:100%}</style></head><body>",
        "<h1>mlx_ddsp evaluation</h1>",
        f"<p>run <code>{html.escape(result['run_dir'])}</code>, checkpoint <code>{html.escape(result['checkpoint'])}"
        f"</code> (step {result['step']}), {len(result['clips'])} clips.</p>",
        "<h2>Mean over clips</h2>",
        _metrics_table([("model", result["mean"]["model"]), ("baseline", result["mean"]["baseline"])], metric_names),
    ]
    for clip in result["clips"]:
        name = clip["name"]
        folder = out_dir / name
        for which in ("target", "recon"):
            audio, _ = sf.read(folder / f"{which}.wav", dtype="float32")
            with atomic_path(folder / f"{which}.png") as tmp:
                Path(tmp).write_bytes(png_bytes(spectrogram_image(audio)))
        players = "".join(
            f'<figure><figcaption>{p}</figcaption>'
            f'<audio controls preload="none" src="{html.escape(name)}/{p}.wav"></audio></figure>'
            for p in PLAYERS if (folder / f"{p}.wav").exists()
        )
        parts += [
            f"<h2>{html.escape(name)} ({clip['seconds']:.1f} s)</h2>",
            f"<div>{players}</div>",
            f'<p><img alt="target spectrogram" src="{html.escape(name)}/target.png">'
            f'<img alt="reconstruction spectrogram" src="{html.escape(name)}/recon.png"></p>',
            f"<p>left: target, right: reconstruction (0 to {sample_rate / 2000:g} kHz, 80 dB range)</p>",
            _metrics_table([("model", clip["model"]), ("baseline", clip["baseline"])], metric_names),
        ]
    parts.append("</body></html>")
    path = out_dir / "report.html"
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(parts))
    return path
