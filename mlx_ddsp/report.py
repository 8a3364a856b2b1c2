"""report.html: one self-contained page per evaluation, opened from disk with no server.

On top: the mean metrics of model, baseline and target, a per-clip bar chart (summary.png: worst clips on top) and,
for a training run, its training curves (curves.png). Per clip: audio players (target, recon, dry, harmonic, noise,
baseline), one figure (CLIP/figure.png: target and output spectrograms, f0 and loudness curves, the output's
harmonic share over time) and the clip's metrics. Figures are drawn by `mlx_ddsp.figures` (matplotlib).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from mlx_ddsp import figures
from mlx_ddsp.atomic import atomic_path
from mlx_ddsp.metrics import BETTER

PLAYERS = ("target", "recon", "dry", "harmonic", "noise", "baseline")


def _metrics_table(rows: list[tuple[str, dict]], metric_names: list[str]) -> str:
    head = "".join(f"<th>{html.escape(m)}</th>" for m in metric_names)
    body = "".join(
        f"<tr><td>{html.escape(who)}</td>"
        + "".join(f"<td>{'-' if values.get(m) is None else f'{values[m]:.3f}'}</td>" for m in metric_names)
        + "</tr>"
        for who, values in rows
    )
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def _image(src: str, alt: str) -> str:
    return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}">'


def write_report(out_dir: Path, result: dict, sample_rate: int, metrics_log: Path | None = None,
                 grad_clip_norm: float | None = None) -> Path:
    """Write out_dir/report.html and its figures for evaluation `result` (see mlx_ddsp.eval); with `metrics_log`
    (a run's logs/metrics.jsonl) also its training curves."""
    out_dir = Path(out_dir)
    metric_names = list(result["mean"]["model"])
    charted = [m for m in metric_names if BETTER.get(m) and any(c["model"].get(m) is not None
                                                               for c in result["clips"])]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>mlx_ddsp evaluation</title>',
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{display:block;max-width:100%;margin:6px 0}"
        "figure{display:inline-block;margin:0;width:16%}audio{width:100%}</style></head><body>",
        "<h1>mlx_ddsp evaluation</h1>",
        f"<p>run <code>{html.escape(result['run_dir'])}</code>, checkpoint <code>{html.escape(result['checkpoint'])}"
        f"</code> (step {result['step']}), {len(result['clips'])} clips.</p>",
        "<h2>Mean over clips</h2>",
        _metrics_table([(who, result["mean"][who]) for who in ("model", "baseline", "target")], metric_names),
    ]
    if charted and result["clips"]:
        figures.save(figures.clips_chart(result["clips"], charted), out_dir / "summary.png")
        parts.append(_image("summary.png", "per-clip metrics, model and baseline"))
    if metrics_log is not None and Path(metrics_log).is_file():
        records = figures.read_metrics_log(metrics_log)
        if records:
            figures.save(figures.training_curves(records, grad_clip_norm), out_dir / "curves.png")
            parts += ["<h2>Training</h2>", _image("curves.png", "training and validation loss, learning rate, "
                                                                "gradient norm")]
    for clip in result["clips"]:
        name = clip["name"]
        folder = out_dir / name
        tracks = None
        if (folder / "tracks.npz").exists():
            with np.load(folder / "tracks.npz") as saved:
                tracks = dict(saved)
        title = f"{name} ({clip['seconds']:.1f} s)"
        figures.save(figures.clip_figure(folder, tracks, sample_rate, title), folder / "figure.png")
        players = "".join(
            f'<figure><figcaption>{p}</figcaption>'
            f'<audio controls preload="none" src="{html.escape(name)}/{p}.wav"></audio></figure>'
            for p in PLAYERS if (folder / f"{p}.wav").exists()
        )
        rows = [("model", clip["model"]), ("baseline", clip["baseline"]), ("target", clip["target"])]
        parts += [
            f"<h2>{html.escape(name)} ({clip['seconds']:.1f} s)</h2>",
            f"<div>{players}</div>",
            _image(f"{name}/figure.png", f"{name}: spectrograms, f0, loudness, harmonic share"),
            _metrics_table(rows, metric_names),
        ]
    parts.append("</body></html>")
    path = out_dir / "report.html"
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(parts))
    return path
