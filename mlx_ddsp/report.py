"""report.html: one self-contained page per evaluation, opened from disk with no server.

Per clip: audio players (target, recon, harmonic, noise, baseline), log-spectrograms of target and recon with time
and frequency axes, the f0 (target's, output's and, with --truth, the true one) and loudness over time, and the
clip's metrics; the mean metrics on top. Spectrograms are PNGs written with numpy and zlib, figures inline SVG (no
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
from mlx_ddsp.features import VOICED_THRESHOLD, nearest_fft_size

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


FIGURE_WIDTH, FIGURE_HEIGHT, MARGIN_LEFT, MARGIN_BOTTOM = 1000, 220, 60, 34
LINE_COLOURS = {"truth": "#888888", "target": "#1f77b4", "recon": "#ff7f0e"}


def _ticks(lo: float, hi: float, count: int = 8) -> np.ndarray:
    """Round tick values (1, 2 or 5 times a power of ten apart) within [lo, hi]."""
    raw = (hi - lo) / max(count, 1)
    step = min((m * 10.0 ** np.floor(np.log10(raw)) for m in (1, 2, 5, 10)), key=lambda x: abs(x - raw))
    return np.arange(np.ceil(lo / step) * step, hi + 1e-9, step)


def _svg_axes(seconds: float, y_ticks: list[tuple[float, str]], y_label: str, body: str) -> str:
    """An SVG figure: plot area FIGURE_WIDTH x FIGURE_HEIGHT right of / above the axes; `body` drawn inside it in
    plot coordinates (x in pixels from the left of the plot area, y from its top). y_ticks: (pixel y, label)."""
    w, h = FIGURE_WIDTH, FIGURE_HEIGHT
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w + MARGIN_LEFT + 10}" height="{h + MARGIN_BOTTOM + 8}" '
             f'font-family="sans-serif" font-size="11"><g transform="translate({MARGIN_LEFT},4)">', body,
             f'<rect width="{w}" height="{h}" fill="none" stroke="#444"/>']
    for t in _ticks(0.0, seconds):
        x = w * t / max(seconds, 1e-9)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{h}" y2="{h + 4}" stroke="#444"/>'
                     f'<text x="{x:.1f}" y="{h + 15}" text-anchor="middle">{t:g}</text>')
    for y, label in y_ticks:
        parts.append(f'<line x1="-4" x2="0" y1="{y:.1f}" y2="{y:.1f}" stroke="#444"/>'
                     f'<text x="-6" y="{y + 4:.1f}" text-anchor="end">{html.escape(label)}</text>')
    parts.append(f'<text x="{w / 2}" y="{h + 30}" text-anchor="middle">time (s)</text>'
                 f'<text transform="translate(-46,{h / 2}) rotate(-90)" text-anchor="middle">'
                 f'{html.escape(y_label)}</text>')
    return "".join(parts) + "</g></svg>"


def spectrogram_figure(src: str, seconds: float, sample_rate: int, title: str) -> str:
    """SVG: the spectrogram PNG at `src` stretched over the plot area, with time and frequency (kHz) axes."""
    nyquist_khz = sample_rate / 2000.0
    ticks = [(FIGURE_HEIGHT * (1 - f / nyquist_khz), f"{f:g}") for f in _ticks(0.0, nyquist_khz, 4)]
    body = (f'<image href="{html.escape(src)}" width="{FIGURE_WIDTH}" height="{FIGURE_HEIGHT}" '
            f'preserveAspectRatio="none"/><text x="6" y="14" fill="white">{html.escape(title)}</text>')
    return _svg_axes(seconds, ticks, "frequency (kHz)", body)


def _polylines(values: np.ndarray, shown: np.ndarray, to_y, frame_rate: float, seconds: float, colour: str) -> str:
    """SVG polylines of `values` (T,) over the frames where `shown`, broken at the gaps."""
    x = np.arange(len(values)) / frame_rate * FIGURE_WIDTH / max(seconds, 1e-9)
    y = to_y(values)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], shown.astype(np.int8), [0]])))
    lines = []
    for start, stop in zip(edges[::2], edges[1::2]):
        step = max(1, (stop - start) // 2000)  # at most ~2000 points per run
        points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(x[start:stop:step], y[start:stop:step]))
        lines.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.3"/>')
    return "".join(lines)


def tracks_figures(tracks: dict, seconds: float) -> str:
    """Two SVGs: f0 on a log axis (truth, target, output where voiced) and loudness (target, output) over time."""
    rate = float(tracks["frame_rate"])
    voiced = {who: tracks[f"{who}_confidence"] >= VOICED_THRESHOLD for who in ("target", "recon")}
    lines = {who: (tracks[f"{who}_f0_hz"], voiced[who]) for who in ("target", "recon")}
    if "truth_f0_hz" in tracks:
        lines = {"truth": (tracks["truth_f0_hz"], tracks["truth_voiced"]), **lines}
    every = np.concatenate([f0[shown] for f0, shown in lines.values()] + [np.array([110.0, 880.0])])
    lo, hi = np.log2(max(np.min(every), 20.0)) - 0.2, np.log2(np.max(every)) + 0.2
    to_y = lambda f0: FIGURE_HEIGHT * (1 - (np.log2(np.maximum(f0, 1e-3)) - lo) / (hi - lo))
    notes = [55.0 * 2.0**k for k in range(-1, 8)]
    ticks = [(float(to_y(np.array(f))), f"{f:g}") for f in notes if lo <= np.log2(f) <= hi]
    f0_body = "".join(_polylines(f0, shown, to_y, rate, seconds, LINE_COLOURS[who])
                      for who, (f0, shown) in lines.items())
    loud = {who: tracks[f"{who}_loudness_db"] for who in ("target", "recon")}
    floor = min(float(np.min(v)) for v in loud.values())
    top = max(float(np.max(v)) for v in loud.values()) + 3.0
    to_db_y = lambda db: FIGURE_HEIGHT * (1 - (db - floor) / max(top - floor, 1e-9))
    db_ticks = [(float(to_db_y(d)), f"{d:g}") for d in _ticks(floor, top, 5)]
    loud_body = "".join(_polylines(v, np.ones(len(v), bool), to_db_y, rate, seconds, LINE_COLOURS[who])
                        for who, v in loud.items())
    return (_svg_axes(seconds, ticks, "f0 (Hz, log)", f0_body + _legend(lines, " f0"))
            + _svg_axes(seconds, db_ticks, "loudness (dB)", loud_body + _legend(loud, "")))


def _legend(names, suffix: str) -> str:
    """One coloured label per line drawn, left to right at the plot's top."""
    return "".join(f'<text x="{8 + 90 * i}" y="14" fill="{LINE_COLOURS[who]}">{who}{suffix}</text>'
                   for i, who in enumerate(names))


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
        "<style>body{font-family:sans-serif;margin:2em;max-width:1120px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}svg{display:block;margin:4px 0}"
        "figure{display:inline-block;margin:0;width:16%}audio{width:100%}</style></head><body>",
        "<h1>mlx_ddsp evaluation</h1>",
        f"<p>run <code>{html.escape(result['run_dir'])}</code>, checkpoint <code>{html.escape(result['checkpoint'])}"
        f"</code> (step {result['step']}), {len(result['clips'])} clips.</p>",
        "<h2>Mean over clips</h2>",
        _metrics_table([(who, result["mean"][who]) for who in ("model", "baseline", "target")], metric_names),
    ]
    for clip in result["clips"]:
        name = clip["name"]
        folder = out_dir / name
        for which in ("target", "recon"):
            audio, _ = sf.read(folder / f"{which}.wav", dtype="float32")
            with atomic_path(folder / f"{which}.png") as tmp:
                image = spectrogram_image(audio, n_fft=nearest_fft_size(1024 * sample_rate / 16000, 2))  # 64 ms
                Path(tmp).write_bytes(png_bytes(image))
        players = "".join(
            f'<figure><figcaption>{p}</figcaption>'
            f'<audio controls preload="none" src="{html.escape(name)}/{p}.wav"></audio></figure>'
            for p in PLAYERS if (folder / f"{p}.wav").exists()
        )
        rows = [("model", clip["model"]), ("baseline", clip["baseline"]), ("target", clip["target"])]
        parts += [
            f"<h2>{html.escape(name)} ({clip['seconds']:.1f} s)</h2>",
            f"<div>{players}</div>",
            "<div>" + "".join(spectrogram_figure(f"{name}/{which}.png", clip["seconds"], sample_rate,
                                                 f"{label} (80 dB range)")
                              for which, label in (("target", "target"), ("recon", "reconstruction"))) + "</div>",
        ]
        if (folder / "tracks.npz").exists():
            with np.load(folder / "tracks.npz") as tracks:
                parts.append("<div>" + tracks_figures(dict(tracks), clip["seconds"]) + "</div>")
        parts.append(_metrics_table(rows, metric_names))
    parts.append("</body></html>")
    path = out_dir / "report.html"
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(parts))
    return path
