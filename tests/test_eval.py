"""Evaluation metrics against hand-computed values, eval and resynth on a tiny trained run, long inputs."""

import json
from html.parser import HTMLParser
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mlx_ddsp import eval as evaluation
from mlx_ddsp import metrics
from mlx_ddsp import resynth
from mlx_ddsp.config import Config, load_config
from mlx_ddsp.features import estimate_f0
from mlx_ddsp.models import render_long
from mlx_ddsp.preprocess import analyse
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
    same = metrics.clip_metrics(target, target, features, cfg)
    share = same.pop("comb_harmonic_share")
    assert same == {"spectral_loss": 0.0, "mel_l1_db": 0.0, "loudness_l1_db": 0.0, "f0_l1_cents": 0.0,
                    "f0_outlier_ratio": 0.0}
    assert share > 0.99  # five harmonics and nothing else
    sharp = metrics.clip_metrics(target, harmonic_tone(330.0 * 2 ** (50 / 1200)), features, cfg)
    assert sharp["f0_l1_cents"] == pytest.approx(50, abs=2) and sharp["f0_outlier_ratio"] == 0.0
    louder = metrics.clip_metrics(target, target * 10 ** (6 / 20), features, cfg)
    assert louder["loudness_l1_db"] == pytest.approx(6.0, abs=0.05) and louder["f0_l1_cents"] < 0.5
    fifth = metrics.clip_metrics(target, harmonic_tone(330.0 * 1.5), features, cfg)
    assert fifth["f0_outlier_ratio"] > 0.95  # 702 cents off on every confident frame
    assert louder["spectral_loss"] > 0 and fifth["spectral_loss"] > louder["spectral_loss"]


def test_mel_distance_reads_the_envelope_not_the_fine_structure():
    rng = np.random.default_rng(0)
    noise, other_draw = (rng.standard_normal(2 * SR).astype(np.float32) * 0.1 for _ in range(2))
    assert metrics.mel_distance_db(noise, noise, SR) == 0.0
    assert metrics.mel_distance_db(noise, noise * 0.5, SR) == pytest.approx(20 * np.log10(2), abs=0.01)
    # Two draws of the same white noise: per bin, their log magnitudes differ by ~0.69 nats (6 dB) on average, as a
    # room's random gains differ from any other room's; over a mel band's bins the difference averages out.
    frames = np.lib.stride_tricks.sliding_window_view(np.stack([noise, other_draw]), 1024, axis=1)[:, ::256]
    per_bin = np.abs(np.diff(np.log(np.abs(np.fft.rfft(frames * np.hanning(1024), axis=-1)) + 1e-9), axis=0))
    assert 20 / np.log(10) * per_bin.mean() > 5.0
    white = metrics.mel_distance_db(noise, other_draw, SR)
    assert white < 3.0  # 2.3 dB: the lowest bands hold only 2-3 bins each
    spectrum = np.fft.rfft(other_draw)
    spectrum[np.fft.rfftfreq(len(other_draw), 1 / SR) > 2000] *= 0.1  # 20 dB less above 2 kHz: a new envelope
    darker = np.fft.irfft(spectrum, len(other_draw)).astype(np.float32)
    assert metrics.mel_distance_db(noise, darker, SR) > 3 * white  # 20 dB less in 46 % of the bands


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
        at_16k = set(metrics.METRICS) - {"band_spectral_loss", "band_energy_db"}  # no band above 8 kHz here
        assert set(clip["model"]) == at_16k | {"branch_harmonic_share"} and set(clip["baseline"]) == at_16k
        assert 0.0 <= clip["model"]["branch_harmonic_share"] <= 1.0
        assert set(clip["target"]) == {"comb_harmonic_share"}
    assert set(saved["mean"]) == {"model", "baseline", "target"}
    checker = _Checker()
    checker.feed((out / "report.html").read_text())
    assert not checker.errors and not checker.stack
    images = [link for link in checker.links if link.endswith(".png")]
    assert images == ["summary.png", "curves.png", "flute_06/figure.png", "flute_07/figure.png"]
    assert len(checker.links) == len(images) + 2 * 5  # and 5 players per clip
    for link in checker.links:
        assert (out / link).is_file(), link
    for image in images:
        with Image.open(out / image) as decoded:
            assert decoded.format == "PNG" and decoded.width >= 900 and np.asarray(decoded).std() > 10


def test_eval_on_a_folder_skips_bad_files_and_renders_any_length(run_dir, tmp_path):
    (tmp_path / "data").mkdir()
    sf.write(tmp_path / "data" / "long.wav", harmonic_tone(262.0, seconds=7.3), SR)
    (tmp_path / "data" / "broken.wav").write_bytes(b"RIFF not really")
    result = evaluation.evaluate(run_dir, data=str(tmp_path / "data"), which="last", out=tmp_path / "out")
    assert [c["name"] for c in result["clips"]] == ["long"]
    assert len(sf.read(tmp_path / "out" / "long" / "recon.wav")[0]) == int(7.3 * SR)
    assert evaluation.main([str(tmp_path / "no_run")]) == 1


def test_truth_metrics_against_hand_counted_frames():
    truth = {"f0_hz": np.full(100, 220.0, np.float32), "voiced": np.arange(100) < 80}
    assert metrics.truth_metrics(np.full(100, 220.0), truth) == {"f0_truth_rpa": 1.0, "f0_truth_l1_cents": 0.0}
    track = np.where(np.arange(100) < 20, 440.0, 220.0 * 2 ** (30 / 1200))  # 20 octave errors, 60 frames 30 c sharp
    scored = metrics.truth_metrics(track, truth)
    assert scored["f0_truth_rpa"] == pytest.approx(60 / 80)
    assert scored["f0_truth_l1_cents"] == pytest.approx((20 * 1200 + 60 * 30) / 80)


def test_truth_files_are_read_at_the_features_rate(tmp_path):
    f0 = 100.0 + np.arange(251, dtype=np.float32)  # 250 frames/s, one second
    np.savez(tmp_path / "clip.npz", f0_hz=f0, voiced=np.arange(251) < 200, frame_rate=250)
    truth = evaluation.load_truth(tmp_path, "clip", 60, 50)  # 50 frames/s, longer than the truth
    np.testing.assert_array_equal(truth["f0_hz"][:51], f0[::5])
    assert truth["voiced"][:40].all() and not truth["voiced"][40:].any()
    late = evaluation.load_truth(tmp_path, "clip", 60, 50, delay_s=0.1)  # a room's direct path, 5 frames late
    np.testing.assert_array_equal(late["f0_hz"][5:56], f0[::5])
    assert not late["voiced"][:5].any() and late["voiced"][5:45].all() and not late["voiced"][45:].any()
    assert evaluation.load_truth(tmp_path, "other", 60, 50) is None
    np.savez(tmp_path / "bad.npz", f0_hz=f0)
    with pytest.raises(evaluation.EvalError, match="voiced, frame_rate"):
        evaluation.load_truth(tmp_path, "bad", 60, 50)


def test_eval_with_truth_scores_pitch_and_draws_tracks(run_dir, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "flute_03.flac").write_bytes((ROOT / "data" / "flute" / "flute_03.flac").read_bytes())
    result = evaluation.evaluate(run_dir, data=str(tmp_path / "data"), out=tmp_path / "out",
                                 truth_dir=ROOT / "data" / "flute_truth")
    clip = result["clips"][0]
    assert clip["target"]["f0_truth_rpa"] > 0.9  # the tracker that fed the model, on its own
    for who in ("model", "baseline"):
        assert 0.0 <= clip[who]["f0_truth_rpa"] <= 1.0 and clip[who]["f0_truth_l1_cents"] >= 0.0
    # The baseline plays the target's own f0: against the truth it scores about as the tracker does.
    assert clip["baseline"]["f0_truth_rpa"] == pytest.approx(clip["target"]["f0_truth_rpa"], abs=0.1)
    with np.load(tmp_path / "out" / "flute_03" / "tracks.npz") as tracks:
        assert len(tracks["truth_f0_hz"]) == len(tracks["target_f0_hz"]) == len(tracks["recon_f0_hz"])
    checker = _Checker()
    checker.feed((tmp_path / "out" / "report.html").read_text())
    assert not checker.errors and not checker.stack and "flute_03/figure.png" in checker.links
    with pytest.raises(evaluation.EvalError, match="not a folder"):
        evaluation.evaluate(run_dir, data=str(tmp_path / "data"), truth_dir=tmp_path / "missing")


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


def test_eval_with_dry_recordings_scores_the_dry_output(run_dir, tmp_path):
    """A model without a room: its dry output is all of it, so against the clip itself as the 'dry recording' the
    dry loss is its spectral loss; against the dry original of a reverberant clip it is another number; a clip
    without a dry file gets none."""
    data, dry = tmp_path / "data", tmp_path / "dry"
    data.mkdir(), dry.mkdir()
    tone = harmonic_tone(262.0, seconds=2.0)
    room = np.exp(-np.arange(8000) / 1600.0) * np.random.default_rng(0).standard_normal(8000) * 0.05
    room[0] = 1.0
    sf.write(data / "same.wav", tone, SR)
    sf.write(dry / "same.wav", tone, SR)
    sf.write(data / "hall.wav", np.convolve(tone, room)[: len(tone)] * 0.5, SR)
    sf.write(dry / "hall.flac", tone, SR)  # any audio extension
    sf.write(data / "alone.wav", tone, SR)
    result = evaluation.evaluate(run_dir, data=str(data), which="last", out=tmp_path / "out", dry_dir=dry)
    clips = {c["name"]: c for c in result["clips"]}
    for who in ("model", "baseline"):
        assert clips["same"][who]["dry_spectral_loss"] == pytest.approx(clips["same"][who]["spectral_loss"], rel=1e-5)
        assert abs(clips["hall"][who]["dry_spectral_loss"] - clips["hall"][who]["spectral_loss"]) > 0.01
        assert "dry_spectral_loss" not in clips["alone"][who]
    assert "dry_spectral_loss" in result["mean"]["model"]
    with pytest.raises(evaluation.EvalError, match="--dry"):
        evaluation.evaluate(run_dir, data=str(data), which="last", out=tmp_path / "out", dry_dir=tmp_path / "nope")
