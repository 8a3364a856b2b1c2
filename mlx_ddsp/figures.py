"""Figures drawn with matplotlib: each function builds one `Figure`; `save` writes it as a PNG, atomically.

  clip_figure        one evaluated clip: target and output spectrograms (time in s, log frequency in Hz, a dB colour
                     bar), f0 and loudness curves (truth, target, output), the output's harmonic share over time
  clips_chart        the per-clip metrics of an evaluation as bars, model beside baseline, worst clip on top
  training_curves    a run's logs/metrics.jsonl: training and validation loss against steps and minutes, learning
                     rate and gradient norm
  variants_chart     the ablation's variants, one panel per metric, the no-learning baseline as a dashed line

Figures use matplotlib's object API (`matplotlib.figure.Figure`, rendered by Agg), never pyplot: no global state,
no GUI backend, safe in a training process.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogFormatter, LogLocator, NullFormatter

from mlx_ddsp.atomic import atomic_path
from mlx_ddsp.features import VOICED_THRESHOLD, nearest_fft_size
from mlx_ddsp.metrics import BETTER

COLOURS = {"truth": "#888888", "target": "#1f77b4", "recon": "#ff7f0e", "baseline": "#9ecae1",
           "train": "#1f77b4", "val": "#d62728"}
LABELS = {"target": "target", "recon": "output", "truth": "truth", "baseline": "baseline"}
RANGE_DB = 80.0  # spectrogram colour range below the target's peak
LOWEST_HZ = 30.0  # the spectrograms' lowest frequency (their axis is logarithmic)
DPI = 90


def save(fig: Figure, path: Path) -> Path:
    """Write `fig` as a PNG at `path` (atomically: a reader never sees half a file)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def spectrogram_db(audio: np.ndarray, sample_rate: int, max_frames: int = 800) -> tuple[np.ndarray, np.ndarray,
                                                                                         np.ndarray]:
    """Log-magnitude spectrogram with a 64 ms Hann window.

    Args:
      audio: (n_samples,) float.
    Returns:
      times_s (n_frames,) window centres in s, freqs_hz (n_bins,), db (n_bins, n_frames) in dB re full scale;
      the hop is chosen so that n_frames <= max_frames (at least a quarter window).
    """
    audio = np.asarray(audio, dtype=np.float64)
    n_fft = nearest_fft_size(1024 * sample_rate / 16000, 2)
    hop = max(n_fft // 4, int(np.ceil(len(audio) / max_frames)))
    padded = np.pad(audio, (n_fft // 2, n_fft // 2 + max(0, n_fft - len(audio))))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) * 2 / np.hanning(n_fft).sum()
    db = 20 * np.log10(spectrum.T + 1e-10)
    return np.arange(frames.shape[0]) * hop / sample_rate, np.fft.rfftfreq(n_fft, 1 / sample_rate), db


def log_frequency_rows(freqs_hz: np.ndarray, db: np.ndarray, lo_hz: float, hi_hz: float,
                       n_rows: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """A spectrogram resampled to rows evenly spaced in log frequency (linear interpolation between bins).

    Args:
      freqs_hz: (n_bins,) increasing; db: (n_bins, n_frames).
    Returns:
      log2_hz (n_rows,) from log2(lo_hz) to log2(hi_hz), rows (n_rows, n_frames).
    """
    log2_hz = np.linspace(np.log2(lo_hz), np.log2(hi_hz), n_rows)
    position = np.interp(2.0**log2_hz, freqs_hz, np.arange(len(freqs_hz)))  # fractional bin index
    lower = np.minimum(np.floor(position).astype(int), len(freqs_hz) - 2)
    weight = (position - lower)[:, None]
    return log2_hz, (1 - weight) * db[lower] + weight * db[lower + 1]


def _hz(value: float, _position=None) -> str:
    return f"{value / 1000:g}k" if value >= 1000 else f"{value:g}"


def _log_hz_axis(ax, lo_hz: float, hi_hz: float) -> None:
    ax.set_yscale("log")
    ax.set_ylim(lo_hz, hi_hz)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(_hz))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _frame_rms_db(audio: np.ndarray, hop: int) -> np.ndarray:
    """(n_frames,) RMS level in dB of consecutive `hop`-sample blocks."""
    n = len(audio) // hop
    return 10 * np.log10(np.mean(np.asarray(audio[: n * hop], np.float64).reshape(n, hop) ** 2, axis=1) + 1e-12)


def clip_figure(folder: Path, tracks: dict | None, sample_rate: int, title: str) -> Figure:
    """The figure of one evaluated clip, from its folder (target.wav, recon.wav, harmonic.wav, noise.wav) and its
    tracks (tracks.npz as eval writes it: frame_rate, target_/recon_ f0_hz, confidence, loudness_db, optionally
    truth_f0_hz and truth_voiced; None: no curves). Both spectrograms share one colour scale, 0 dB = full scale."""
    audio = {who: sf.read(Path(folder) / f"{who}.wav", dtype="float32")[0]
             for who in ("target", "recon", "harmonic", "noise") if (Path(folder) / f"{who}.wav").exists()}
    seconds = len(audio["target"]) / sample_rate
    spectra = {who: spectrogram_db(audio[who], sample_rate) for who in ("target", "recon")}
    top_db = float(spectra["target"][2].max())
    rows = ["target", "recon"] + (["f0", "loudness"] if tracks is not None else []) + (
        ["balance"] if "harmonic" in audio and "noise" in audio else [])
    heights = {"target": 2.2, "recon": 2.2, "f0": 1.6, "loudness": 1.3, "balance": 1.0}
    height_in = 1.0 + sum(heights[r] for r in rows)
    fig = Figure(figsize=(11, height_in))  # a fixed layout: constrained layout would double the drawing time
    grid = fig.add_gridspec(len(rows), 2, width_ratios=[60, 1], height_ratios=[heights[r] for r in rows],
                            left=0.075, right=0.935, bottom=0.55 / height_in, top=1 - 0.55 / height_in,
                            wspace=0.03, hspace=0.35)
    axes = {}
    for i, row in enumerate(rows):
        axes[row] = fig.add_subplot(grid[i, 0], sharex=axes.get("target"))
    image = None
    for who in ("target", "recon"):
        times, freqs, db = spectra[who]
        log2_hz, image_rows = log_frequency_rows(freqs, db, LOWEST_HZ, sample_rate / 2)
        ax = axes[who]
        image = ax.imshow(image_rows, origin="lower", aspect="auto", interpolation="nearest", cmap="magma",
                          vmin=top_db - RANGE_DB, vmax=top_db,
                          extent=(times[0], times[-1], log2_hz[0], log2_hz[-1]))
        ticks = [f for f in (50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000) if LOWEST_HZ <= f <= sample_rate / 2]
        ax.set_yticks(np.log2(ticks), [_hz(f) for f in ticks])
        ax.set_ylabel("frequency (Hz)")
        ax.set_title(f"{LABELS[who]} spectrogram", loc="left", fontsize=10)
    bar = fig.colorbar(image, cax=fig.add_subplot(grid[0:2, 1]))
    bar.set_label("level (dB re full scale)")
    if tracks is not None:
        _f0_panel(axes["f0"], tracks)
        _loudness_panel(axes["loudness"], tracks)
    if "balance" in axes:
        _balance_panel(axes["balance"], audio["harmonic"], audio["noise"], sample_rate)
    for row in rows[:-1]:
        axes[row].tick_params(labelbottom=False)
    axes[rows[-1]].set_xlabel("time (s)")
    axes["target"].set_xlim(0, seconds)
    fig.suptitle(title, fontsize=12)
    return fig


def _f0_panel(ax, tracks: dict) -> None:
    times = np.arange(len(tracks["target_f0_hz"])) / float(tracks["frame_rate"])
    lines = {who: (tracks[f"{who}_f0_hz"], tracks[f"{who}_confidence"] >= VOICED_THRESHOLD)
             for who in ("target", "recon")}
    if "truth_f0_hz" in tracks:
        lines = {"truth": (tracks["truth_f0_hz"], np.asarray(tracks["truth_voiced"], bool)), **lines}
    shown = np.concatenate([f0[voiced] for f0, voiced in lines.values()] + [np.array([110.0, 880.0])])
    for who, (f0, voiced) in lines.items():
        ax.plot(times, np.where(voiced, f0, np.nan), color=COLOURS[who], lw=2.5 if who == "truth" else 1.2,
                label=f"{LABELS[who]} f0 (where voiced)" if who != "truth" else "true f0")
    _log_hz_axis(ax, max(float(shown.min()) / 1.15, 20.0), float(shown.max()) * 1.15)
    ax.set_ylabel("f0 (Hz)")
    _legend_above(ax, ncols=3)


def _loudness_panel(ax, tracks: dict) -> None:
    times = np.arange(len(tracks["target_loudness_db"])) / float(tracks["frame_rate"])
    for who in ("target", "recon"):
        ax.plot(times, tracks[f"{who}_loudness_db"], color=COLOURS[who], lw=1.2, label=LABELS[who])
    ax.set_ylabel("loudness (dB)")
    _legend_above(ax, ncols=2)


def _legend_above(ax, ncols: int) -> None:
    """The panel's legend in one row above its top right corner, clear of the curves."""
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=ncols, fontsize=8, frameon=False,
              borderaxespad=0.1)


def _balance_panel(ax, harmonic: np.ndarray, noise: np.ndarray, sample_rate: int) -> None:
    """Harmonic branch's share of the output energy per 20 ms, drawn where the output is within 60 dB of its peak."""
    hop = sample_rate // 50
    h_db, n_db = _frame_rms_db(harmonic, hop), _frame_rms_db(noise, hop)
    total_db = 10 * np.log10(10 ** (h_db / 10) + 10 ** (n_db / 10))
    share = np.where(total_db > total_db.max() - 60, 1 / (1 + 10 ** ((n_db - h_db) / 10)), np.nan)
    times = (np.arange(len(share)) + 0.5) * hop / sample_rate
    ax.fill_between(times, 0, share, color=COLOURS["recon"], alpha=0.5, lw=0)
    ax.set_ylim(0, 1)
    ax.set_ylabel("harmonic\nshare")


def clips_chart(clips: list[dict], metric_names: list[str]) -> Figure:
    """One horizontal bar panel per metric (four to a row): each clip's model value beside its baseline's, clips
    ordered by the model's first metric, worst on top. clips: eval's records (name, model, baseline)."""
    order = sorted(clips, key=lambda c: c["model"].get(metric_names[0]) or 0.0)
    y = np.arange(len(order))
    n_cols = min(4, len(metric_names))
    n_rows = -(-len(metric_names) // n_cols)
    fig = Figure(figsize=(2.9 * n_cols + 1.5, n_rows * (0.9 + 0.3 * len(order)) + 0.5), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, sharey=True, squeeze=False).ravel()
    for ax, metric in zip(axes, metric_names):
        for offset, who in ((0.2, "model"), (-0.2, "baseline")):
            values = [np.nan if c[who].get(metric) is None else c[who][metric] for c in order]
            bars = ax.barh(y + offset, values, height=0.4, color=COLOURS["recon" if who == "model" else who],
                           label="model" if who == "model" else "baseline (no learning)")
            ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=2)
        ax.set_title(_metric_title(metric), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.15)  # room for the value labels
        ax.set_yticks(y, [c["name"] for c in order], fontsize=8)
    for ax in axes[len(metric_names):]:
        ax.set_visible(False)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8)
    fig.suptitle(f"per clip, sorted by the model's {metric_names[0]} (worst on top)", fontsize=10)
    return fig


def read_metrics_log(path: Path) -> list[dict]:
    """The records of a logs/metrics.jsonl, skipping lines cut short by a kill."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def training_curves(records: list[dict], grad_clip_norm: float | None = None) -> Figure:
    """Loss (training and validation) against steps and against training minutes, learning rate and gradient norm
    against steps, from a run's metrics records (see `read_metrics_log`); skipped (non-finite) steps are marked."""
    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_loss" in r]
    skipped = [r["step"] for r in records if "skipped" in r]
    fig = Figure(figsize=(11, 6.5))  # a fixed layout, as in clip_figure
    (by_step, by_time), (lr, norm) = fig.subplots(2, 2, gridspec_kw=dict(left=0.075, right=0.985, bottom=0.08,
                                                                         top=0.93, wspace=0.25, hspace=0.3))
    for ax, x_of, x_label in ((by_step, lambda r: r["step"], "step"),
                              (by_time, lambda r: r.get("elapsed_s", 0.0) / 60, "wall time in training (min)")):
        x, loss = [x_of(r) for r in train], [r["loss"] for r in train]
        ax.plot(x, loss, color=COLOURS["train"], lw=0.6, alpha=0.35, label="training loss (batch)")
        if len(loss) >= 20:
            ax.plot(x, _smooth(loss, len(loss) // 20), color=COLOURS["train"], lw=1.5,
                    label=f"training loss (mean of {len(loss) // 20} log lines)")
        ax.plot([x_of(r) for r in val], [r["val_loss"] for r in val], "o-", color=COLOURS["val"], ms=3,
                label="validation loss")
        _log_if_positive(ax, [r["loss"] for r in train] + [r["val_loss"] for r in val])
        ax.set_xlabel(x_label)
        ax.set_ylabel("spectral loss")
        ax.grid(alpha=0.3, which="both")
    if skipped:
        by_step.plot(skipped, np.full(len(skipped), by_step.get_ylim()[0]), "x", color="black",
                     label="skipped step (NaN/Inf)")
    by_step.legend(fontsize=8)
    lr.plot([r["step"] for r in train if "lr" in r], [r["lr"] for r in train if "lr" in r], color="#2ca02c")
    lr.set_ylabel("learning rate")
    norm.plot([r["step"] for r in train if "grad_norm" in r], [r["grad_norm"] for r in train if "grad_norm" in r],
              color="#9467bd", lw=0.8)
    if grad_clip_norm:
        norm.axhline(grad_clip_norm, color="black", ls="--", lw=0.8, label=f"clip norm {grad_clip_norm:g}")
        norm.legend(fontsize=8)
    norm.set_ylabel("gradient norm (before clipping)")
    for ax in (lr, norm):
        _log_if_positive(ax, [r.get("lr" if ax is lr else "grad_norm", 1.0) for r in train])
        ax.set_xlabel("step")
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("training", fontsize=12)
    return fig


def _log_if_positive(ax, values: list[float]) -> None:
    """A log y axis labelled in plain numbers (20, 30, 0.001) when every value is positive."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if finite and min(finite) > 0:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(LogFormatter())
        ax.yaxis.set_minor_formatter(LogFormatter(minor_thresholds=(2, 0.5)))


def _smooth(values: list[float], width: int) -> np.ndarray:
    """Centred moving average of `values` over `width` points (shorter at the ends)."""
    values = np.asarray(values, np.float64)
    kernel = np.ones(max(1, width))
    return np.convolve(values, kernel, "same") / np.convolve(np.ones_like(values), kernel, "same")


def variants_chart(records: list[dict], metric_names: list[str]) -> Figure:
    """One bar panel per metric, one bar per ablation variant, the no-learning baseline (of the first variant's
    clips, the same for all) as a dashed line. records: ablate's (name, metrics, baseline)."""
    y = np.arange(len(records))
    fig = Figure(figsize=(2.8 * len(metric_names) + 2.0, 1.2 + 0.35 * len(records)), layout="constrained")
    axes = fig.subplots(1, len(metric_names), sharey=True, squeeze=False)[0]
    for ax, metric in zip(axes, metric_names):
        values = [np.nan if r["metrics"].get(metric) is None else r["metrics"][metric] for r in records]
        ax.bar_label(ax.barh(y, values, color=COLOURS["recon"]), fmt="%.3g", fontsize=7, padding=2)
        base = records[0]["baseline"].get(metric)
        if base is not None:
            ax.axvline(base, color="black", ls="--", lw=1, label="baseline (no learning)")
        ax.set_title(_metric_title(metric), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.15)
    axes[0].set_yticks(y, [r["name"] for r in records], fontsize=8)
    axes[0].invert_yaxis()
    fig.legend(*axes[-1].get_legend_handles_labels(), loc="outside lower center", fontsize=8)
    fig.suptitle("ablation: held-out metrics of each variant (best checkpoint)", fontsize=10)
    return fig


def _metric_title(metric: str) -> str:
    return metric + {"lower": " (lower is better)", "higher": " (higher is better)"}.get(BETTER.get(metric), "")
