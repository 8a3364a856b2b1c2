"""Evaluation metrics against hand-computed values, eval and resynth on a tiny trained run, long inputs."""

import json
from html.parser import HTMLParser
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf

from mlx_ddsp import eval as evaluation
from mlx_ddsp import resynth
from mlx_ddsp.config import Config, load_config
from mlx_ddsp.features import estimate_f0
from mlx_ddsp.models import render_long
from mlx_ddsp.preprocess import analyse
from mlx_ddsp.report import png_bytes
from mlx_ddsp.train import train

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def harmonic_tone(f0_hz, seconds=2.0, amplitude=0.3, silence_s=0.0):
    t = np.arange(int(SR * seconds)) / SR
    phase = 2 * np.pi * f0_hz * t
    audio = amplitude * sum(np.sin(k * phase) / k for k in range(1, 6)) * np.minimum(1, t / 0.05)
    return np.concatenate([np.zeros(int(SR * silence_s)), audio]).astype(np.float32)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    cfg = load_config(ROOT / "recipes" / "smoke.yaml",
                      [f"run_dir={root}", f"data.dir={ROOT / 'data' / 'flute'}", f"data.cache_dir={root / 'cache'}",
                       "train.steps=60", "train.eval_every=30", "train.render_every=1000", "train.eval_at_end=false"])
    train(cfg)
    return root


def test_metrics_against_hand_computed_values():
    cfg = Config()
    target = harmonic_tone(330.0)
    features = analyse(target, cfg)
    same = evaluation.clip_metrics(target, target, features, cfg)
    assert same == {"spectral_loss": 0.0, "loudness_l1_db": 0.0, "f0_l1_cents": 0.0, "f0_outlier_ratio": 0.0}
    sharp = evaluation.clip_metrics(target, harmonic_tone(330.0 * 2 ** (50 / 1200)), features, cfg)
    assert sharp["f0_l1_cents"] == pytest.approx(50, abs=2) and sharp["f0_outlier_ratio"] == 0.0
    louder = evaluation.clip_metrics(target, target * 10 ** (6 / 20), features, cfg)
    assert louder["loudness_l1_db"] == pytest.approx(6.0, abs=0.05) and louder["f0_l1_cents"] < 0.5
    fifth = evaluation.clip_metrics(target, harmonic_tone(330.0 * 1.5), features, cfg)
    assert fifth["f0_outlier_ratio"] > 0.95  # 702 cents off on every confident frame
    assert louder["spectral_loss"] > 0 and fifth["spectral_loss"] > louder["spectral_loss"]


def test_baseline_follows_pitch_and_loudness():
    cfg = Config()
    target = harmonic_tone(440.0)
    features = analyse(target, cfg)
    audio = evaluation.baseline(features, len(target), cfg)
    assert audio.shape == target.shape
    f0, confidence = estimate_f0(audio, SR)
    assert np.median(f0[confidence > 0.85]) == pytest.approx(440.0, rel=0.005)


class _Checker(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "source", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.links, self.errors = [], [], []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("src", "href")]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def test_eval_writes_clips_metrics_and_a_well_formed_report(run_dir):
    result = evaluation.evaluate(run_dir)
    out = run_dir / "eval"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["step"] == result["step"] and [c["name"] for c in saved["clips"]] == ["flute_06", "flute_07"]
    for clip in saved["clips"]:
        for part in ("target", "recon", "harmonic", "noise", "baseline"):
            audio, sr = sf.read(out / clip["name"] / f"{part}.wav")
            assert sr == SR and len(audio) == clip["n_samples"]  # whole clip, never truncated
        assert set(clip["model"]) == set(evaluation.METRICS) == set(clip["baseline"])
    assert set(saved["mean"]) == {"model", "baseline"}
    checker = _Checker()
    checker.feed((out / "report.html").read_text())
    assert not checker.errors and not checker.stack
    assert len(checker.links) == 2 * (5 + 2)  # 5 players and 2 spectrograms per clip
    for link in checker.links:
        assert (out / link).is_file(), link
    assert (out / "flute_06" / "target.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_on_a_folder_skips_bad_files_and_renders_any_length(run_dir, tmp_path):
    (tmp_path / "data").mkdir()
    sf.write(tmp_path / "data" / "long.wav", harmonic_tone(262.0, seconds=7.3), SR)
    (tmp_path / "data" / "broken.wav").write_bytes(b"RIFF not really")
    result = evaluation.evaluate(run_dir, data=str(tmp_path / "data"), which="last", out=tmp_path / "out")
    assert [c["name"] for c in result["clips"]] == ["long"]
    assert len(sf.read(tmp_path / "out" / "long" / "recon.wav")[0]) == int(7.3 * SR)
    assert evaluation.main([str(tmp_path / "no_run")]) == 1


def test_png_is_decodable():
    import zlib

    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    data = png_bytes(image)
    idat = data.index(b"IDAT")
    length = int.from_bytes(data[idat - 4 : idat], "big")
    rows = np.frombuffer(zlib.decompress(data[idat + 4 : idat + 4 + length]), np.uint8).reshape(2, 10)
    np.testing.assert_array_equal(rows[:, 1:].reshape(2, 3, 3), image)


def test_pitch_shift_doubles_f0_and_silence_stays_quiet(run_dir, tmp_path):
    source = harmonic_tone(220.0, seconds=2.0, silence_s=1.0)
    sf.write(tmp_path / "in.wav", source, SR)
    for shift in (0, 12):
        resynth.resynthesize(run_dir, tmp_path / "in.wav", tmp_path / f"out{shift}.wav", pitch_shift=shift)
    plain, shifted = sf.read(tmp_path / "out0.wav")[0], sf.read(tmp_path / "out12.wav")[0]
    assert len(plain) == len(shifted) == len(source)
    f0_plain, conf_plain = estimate_f0(plain[SR + 4000 :], SR)
    f0_shifted, conf_shifted = estimate_f0(shifted[SR + 4000 :], SR)
    ratio = np.median(f0_shifted[conf_shifted > 0.5]) / np.median(f0_plain[conf_plain > 0.5])
    assert ratio == pytest.approx(2.0, rel=0.02)
    rms = lambda x: np.sqrt(np.mean(x**2))  # noqa: E731
    assert rms(plain[2000 : SR - 2000]) < 0.05 * rms(plain[SR + 4000 :])  # the silent second stays quiet


def test_auto_adjust_moves_octaves_and_maps_loudness():
    cfg = Config()
    features = analyse(harmonic_tone(110.0, amplitude=0.05), cfg)
    stats = {"f0_midi": {"mean": 69.0},  # A4: two octaves above the input's A2
             "loudness_db": {"quantiles": {"0.0": -40.0, "0.5": -20.0, "1.0": -10.0}}}
    f0, loudness, notes = resynth.adjust(features, stats, auto_adjust=True)
    voiced = features["confidence"] >= resynth.VOICED
    assert notes["octaves"] == 2
    np.testing.assert_allclose(f0, features["f0_hz"] * 4, rtol=1e-6)
    assert np.median(loudness[voiced]) == pytest.approx(-20.0, abs=0.5)
    assert loudness[voiced].min() >= -40.0 and loudness[voiced].max() <= -10.0
    f0_up, _, _ = resynth.adjust(features, stats, pitch_shift=12.0)
    np.testing.assert_allclose(f0_up, features["f0_hz"] * 2, rtol=1e-6)


def test_sixty_second_render_keeps_length_and_bounded_memory(run_dir):
    from mlx_ddsp import checkpoint

    model, cfg, _ = checkpoint.load_trained(run_dir, "last")
    n_samples = 60 * SR
    n_frames = n_samples // 64 + 1
    f0 = mx.full((1, n_frames), 440.0)
    loudness = mx.full((1, n_frames), -25.0)
    mx.reset_peak_memory()
    out = render_long(model, f0, loudness, n_samples)
    assert out["audio"].shape == (1, n_samples) and np.isfinite(out["audio"]).all()
    assert mx.get_peak_memory() < 600 * 2**20  # blocks keep the (B, N, K) oscillator tensors small
