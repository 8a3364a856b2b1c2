"""Figures (matplotlib) against known signals and logs, and the TensorBoard event files read back by TensorBoard's
own reader."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mlx_ddsp import figures
from mlx_ddsp.cli import UserError
from mlx_ddsp.config import load_config
from mlx_ddsp.tensorboard_log import TensorBoardLog
from mlx_ddsp.train import MetricsLog, train

ROOT = Path(__file__).resolve().parents[1]


def _decoded(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("sample_rate", [16000, 48000])
def test_spectrogram_of_a_sine_peaks_at_its_frequency_and_level(sample_rate):
    t = np.arange(2 * sample_rate) / sample_rate
    times, freqs, db = figures.spectrogram_db(0.5 * np.sin(2 * np.pi * 1000.0 * t), sample_rate)
    middle = db[:, len(times) // 2]
    assert freqs[np.argmax(middle)] == pytest.approx(1000.0, abs=freqs[1])
    assert middle.max() == pytest.approx(20 * np.log10(0.5), abs=0.2)  # -6 dB re full scale, within the window
    assert len(times) <= 800 and times[-1] == pytest.approx(2.0, abs=0.07)
    log2_hz, rows = figures.log_frequency_rows(freqs, db, 30.0, sample_rate / 2)
    assert 2 ** log2_hz[np.argmax(rows[:, len(times) // 2])] == pytest.approx(1000.0, rel=0.02)
    assert rows.shape == (len(log2_hz), len(times)) and 2 ** log2_hz[-1] == pytest.approx(sample_rate / 2)


def test_clip_figure_draws_labelled_panels_from_the_tracks(tmp_path):
    sr, n_frames = 16000, 501
    t = np.arange(2 * sr) / sr
    tone = 0.3 * np.sin(2 * np.pi * 440.0 * t)
    for name, audio in (("target", tone), ("recon", 0.5 * tone), ("harmonic", 0.5 * tone),
                        ("noise", 0.001 * np.random.default_rng(0).standard_normal(len(t)))):
        sf.write(tmp_path / f"{name}.wav", audio.astype(np.float32), sr)
    voiced = np.arange(n_frames) > 50
    tracks = {"frame_rate": 250.0, "truth_f0_hz": np.full(n_frames, 440.0), "truth_voiced": voiced}
    for who, f0 in (("target", 440.0), ("recon", 445.0)):
        tracks.update({f"{who}_f0_hz": np.full(n_frames, f0), f"{who}_confidence": voiced.astype(float),
                       f"{who}_loudness_db": np.full(n_frames, -20.0)})
    fig = figures.clip_figure(tmp_path, tracks, sr, "clip")
    labels = {ax.get_ylabel() for ax in fig.axes}
    assert {"frequency (Hz)", "f0 (Hz)", "loudness (dB)", "harmonic\nshare", "level (dB re full scale)"} <= labels
    assert fig.axes[4].get_xlabel() == "time (s)"  # the bottom panel; the others share its time axis
    f0_axes = next(ax for ax in fig.axes if ax.get_ylabel() == "f0 (Hz)")
    assert f0_axes.get_yscale() == "log"
    assert [text.get_text() for text in f0_axes.get_legend().get_texts()][0] == "true f0"
    output = f0_axes.get_lines()[2].get_ydata()
    assert np.isnan(output[:51]).all() and np.all(output[51:] == 445.0)  # drawn only where voiced
    image = _decoded(figures.save(fig, tmp_path / "figure.png"))
    assert image.shape[0] > 500 and image.shape[1] > 900 and image.std() > 20


def test_clips_chart_puts_the_worst_clip_on_top():
    clips = [{"name": name, "model": {"spectral_loss": loss, "f0_l1_cents": 3.0},
              "baseline": {"spectral_loss": 9.0, "f0_l1_cents": None}}
             for name, loss in (("a", 1.0), ("b", 3.0), ("c", 2.0))]
    fig = figures.clips_chart(clips, ["spectral_loss", "f0_l1_cents"])
    ax = fig.axes[0]
    bottom_to_top = [label.get_text() for label in ax.get_yticklabels()]
    assert bottom_to_top == ["a", "c", "b"]
    assert ax.get_title() == "spectral_loss (lower is better)"


def test_training_curves_of_a_resumed_log_are_one_curve(tmp_path):
    path = tmp_path / "logs" / "metrics.jsonl"
    log = MetricsLog(path, 0)
    for step in range(1, 21):  # a run killed after step 20 whose last checkpoint was step 10
        log.write({"step": step, "loss": 10.0 / step, "grad_norm": 2.0, "lr": 1e-3, "elapsed_s": step * 1.0})
    path.write_text(path.read_text() + '{"step": 21, "lo')  # a line cut short by the kill
    log = MetricsLog(path, 10)
    for step in range(11, 31):
        log.write({"step": step, "loss": 9.0 / step, "grad_norm": 2.0, "lr": 1e-3, "elapsed_s": step * 1.0})
        if step % 10 == 0:
            log.write({"step": step, "val_loss": 9.0 / step, "elapsed_s": step * 1.0})
    fig = figures.training_curves(figures.read_metrics_log(path), grad_clip_norm=3.0)
    by_step, by_time = fig.axes[:2]
    steps = by_step.get_lines()[0].get_xdata()
    np.testing.assert_array_equal(steps, np.arange(1, 31))
    np.testing.assert_allclose(by_step.get_lines()[0].get_ydata()[10:], 9.0 / np.arange(11, 31))
    assert by_step.get_yscale() == "log" and by_step.get_xlabel() == "step"
    assert by_time.get_xlabel().startswith("wall time") and by_step.get_ylabel() == "spectral loss"
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)


def test_smoke_run_draws_curves_and_tensorboard_reads_its_events(tmp_path):
    pytest.importorskip("tensorboardX", reason="the tensorboard extra is not installed")
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                      reason="TensorBoard (the reader) is not installed")
    run_dir = tmp_path / "run"
    words = [f"run_dir={run_dir}", f"data.dir={ROOT / 'data' / 'flute'}", f"data.cache_dir={tmp_path / 'cache'}",
             "train.eval_at_end=false", "train.tensorboard=true", "train.eval_every=10", "train.render_every=10",
             "train.checkpoint_every=10", "train.log_every=1"]
    train(load_config(ROOT / "recipes" / "smoke.yaml", [*words, "train.steps=20"]))
    assert _decoded(run_dir / "logs" / "curves.png").std() > 10
    shutil.rmtree(run_dir / "checkpoints" / "step_000020")  # as if killed before its last checkpoint
    train(load_config(ROOT / "recipes" / "smoke.yaml", [*words, "train.steps=30"]))
    events = accumulator.EventAccumulator(str(run_dir / "logs" / "tensorboard"), size_guidance={"audio": 0,
                                                                                                 "scalars": 0})
    events.Reload()
    assert {"train/loss", "train/grad_norm", "train/lr", "val/loss"} <= set(events.Tags()["scalars"])
    logged = {r["step"]: r["loss"] for r in map(json.loads, (run_dir / "logs" / "metrics.jsonl").read_text()
                                                .splitlines()) if "loss" in r}
    scalars = events.Scalars("train/loss")
    assert [e.step for e in scalars] == list(range(1, 31))  # the steps re-run after the resume are not doubled
    np.testing.assert_allclose([e.value for e in scalars], [logged[s] for s in range(1, 31)], rtol=1e-6)
    assert [e.step for e in events.Scalars("val/loss")] == [0, 10, 20, 30]
    audio = events.Audio(events.Tags()["audio"][0])
    assert audio[0].sample_rate == 16000 and audio[0].length_frames == 16000


def test_tensorboard_without_its_extra_names_the_setting(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tensorboardX", None)  # import fails as when not installed
    with pytest.raises(UserError, match=r"train.tensorboard=true needs tensorboardX"):
        TensorBoardLog(tmp_path, 0)
