"""The encoder (MFCC -> z) and the learned reverb: numpy references, toggles, and z steering a trained model."""

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_ddsp import ablate, checkpoint
from mlx_ddsp.config import ModelConfig, SynthConfig, load_config
from mlx_ddsp.mfcc import mfcc
from mlx_ddsp.models import DDSP, render_long
from mlx_ddsp.train import train

ROOT = Path(__file__).resolve().parents[1]
SR, FRAME_RATE = 16000, 250


def numpy_mfcc(audio, sample_rate, hop, n_fft=1024, n_mels=128, n_mfcc=30, lo_hz=20.0, hi_hz=8000.0):
    """The module docstring's definition, written independently with loops where that is clearer."""
    padded = np.pad(audio.astype(np.float64), n_fft // 2)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.stack([padded[t * hop : t * hop + n_fft] for t in range(len(audio) // hop + 1)])
    magnitudes = np.abs(np.fft.rfft(frames * window, axis=1))
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    edges = np.linspace(mel(lo_hz), mel(hi_hz), n_mels + 2)
    weights = np.zeros((n_fft // 2 + 1, n_mels))
    for k in range(1, n_fft // 2 + 1):
        m_k = mel(k * sample_rate / n_fft)
        for m in range(n_mels):
            rise = (m_k - edges[m]) / (edges[m + 1] - edges[m])
            fall = (edges[m + 2] - m_k) / (edges[m + 2] - edges[m + 1])
            weights[k, m] = max(0.0, min(rise, fall))
    log_mel = np.log(np.maximum(magnitudes @ weights, 1e-5))
    n = np.arange(n_mels)
    basis = np.stack([np.cos(np.pi * k * (2 * n + 1) / (2 * n_mels)) for k in range(n_mfcc)], axis=1)
    return np.sqrt(2.0 / n_mels) * log_mel @ basis


def test_mfcc_matches_numpy_reference():
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    audio = (0.4 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(SR)).astype(np.float32)
    expected = numpy_mfcc(audio, SR, hop=320)
    got = np.array(mfcc(mx.array(audio[None]), SR, hop=320))[0]
    assert got.shape == expected.shape == (51, 30)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=2e-3)


def tiny(encoder=False, reverb=False):
    return (ModelConfig(hidden_size=16, n_mlp_layers=1, gru_size=12, frame_rate=50, encoder=encoder, z_dims=4,
                        encoder_gru_size=8),
            SynthConfig(n_harmonics=8, n_noise_bands=5, reverb=reverb, reverb_model="free", reverb_seconds=0.05))


def inputs(batch=2, seconds=0.4):
    n_frames = int(seconds * FRAME_RATE) + 1
    f0 = mx.full((batch, n_frames), 330.0)
    loudness = mx.full((batch, n_frames), -25.0)
    audio = mx.random.uniform(-0.3, 0.3, (batch, int(seconds * SR)), key=mx.random.key(3))
    return f0, loudness, int(seconds * SR), audio


def n_parameters(model) -> int:
    return sum(v.size for _, v in tree_flatten(model.parameters()))


def test_toggles_off_is_the_plain_decoder():
    """With encoder and reverb off the model is the decoder-only model: same parameters, same count, same output."""
    mx.random.seed(7)
    plain = DDSP(*tiny(), SR, FRAME_RATE)
    h, g, k, f = 16, 12, 8, 5  # hidden, GRU, harmonics, noise bands; one MLP layer per stack
    mlp = lambda n_in: n_in * h + h + 2 * h  # noqa: E731  one Dense + LayerNorm layer
    expected = 2 * mlp(1) + (3 * g * 2 * h + 3 * g * g + 3 * g + g) + mlp(2 * h + g) + h * (1 + k + f) + 1 + k + f
    assert n_parameters(plain) == expected
    mx.random.seed(7)
    full = DDSP(*tiny(encoder=True, reverb=True), SR, FRAME_RATE)
    keys = {k for k, _ in tree_flatten(full.parameters())} - {k for k, _ in tree_flatten(plain.parameters())}
    assert any(k.startswith("encoder.") for k in keys) and "reverb_ir" in keys
    mx.random.seed(7)
    again = DDSP(*tiny(), SR, FRAME_RATE)
    f0, loudness, n, audio = inputs()
    key = mx.random.key(1)
    np.testing.assert_array_equal(np.array(again(f0, loudness, n, key=key, audio=audio)["audio"]),
                                  np.array(plain(f0, loudness, n, key=key)["audio"]))


def test_reverb_is_dry_plus_numpy_convolution():
    mx.random.seed(0)
    model = DDSP(*tiny(reverb=True), SR, FRAME_RATE)
    ir = np.random.default_rng(1).standard_normal(800).astype(np.float32) * np.exp(-np.arange(800) / 200)
    model.reverb_ir = mx.array(ir)
    f0, loudness, n, _ = inputs()
    out = model(f0, loudness, n, key=mx.random.key(0))
    dry, wet = np.array(out["dry"]), np.array(out["audio"])
    np.testing.assert_allclose(dry, np.array(out["harmonic"] + out["noise"]), atol=1e-6)
    tail = np.concatenate([[0.0], ir[1:]])  # the first tap is the dry path's
    expected = dry + np.stack([np.convolve(d, tail)[:n] for d in dry])
    np.testing.assert_allclose(wet, expected, atol=1e-4)
    long = render_long(model, f0, loudness, n, block_frames=7, key=mx.random.key(0))
    np.testing.assert_allclose(long["audio"] - long["dry"],
                               np.stack([np.convolve(d, tail)[:n] for d in long["dry"]]), atol=1e-4)


def test_reverb_taps_beyond_the_example_get_exactly_zero_gradient():
    """Taps that cannot reach a training example's output must not move (Adam would amplify rounding noise)."""
    mx.random.seed(0)
    model = DDSP(*tiny(reverb=True), SR, FRAME_RATE)  # 800-tap IR
    n = 320
    target = mx.random.uniform(-0.1, 0.1, (2, n), key=mx.random.key(2))
    dry = target * 0.5 + 0.1

    def loss():
        return ((model.apply_reverb(dry)["audio"] - target) ** 2).sum()

    grads = np.array(nn.value_and_grad(model, loss)()[1]["reverb_ir"])
    assert np.abs(grads[1:n]).max() > 0 and np.all(grads[n:] == 0.0)


def test_encoder_needs_audio_and_z_has_the_right_shape():
    mx.random.seed(0)
    model = DDSP(*tiny(encoder=True), SR, FRAME_RATE)
    f0, loudness, n, audio = inputs()
    with pytest.raises(ValueError, match="needs the audio"):
        model(f0, loudness, n)
    z = model.encoder(audio, 21)
    assert z.shape == (2, 21, 4)
    out = model(f0, loudness, n, audio=audio)
    assert out["audio"].shape == (2, n)


def test_z_steers_a_trained_model(tmp_path):
    """A tiny encoder model trained on the flute: the same f0 and loudness with different z give different spectra."""
    cfg = load_config(ROOT / "recipes" / "smoke.yaml",
                      [f"run_dir={tmp_path}", f"data.dir={ROOT / 'data' / 'flute'}", f"data.cache_dir={tmp_path}/c",
                       "model.encoder=true", "model.z_dims=4", "model.encoder_gru_size=16", "train.steps=80",
                       "train.eval_every=40", "train.render_every=1000", "train.eval_at_end=false"])
    summary = train(cfg)
    assert np.isfinite(summary["loss"])
    model, _, _ = checkpoint.load_trained(tmp_path, "last")
    n_frames = 2 * FRAME_RATE + 1
    f0, loudness = mx.full((1, n_frames), 523.0), mx.full((1, n_frames), -25.0)
    spectra = []
    for z in (-2.0, 2.0):
        audio = render_long(model, f0, loudness, 2 * SR, key=mx.random.key(0), z=mx.full((1, 4), z))["harmonic"][0]
        spectra.append(np.abs(np.fft.rfft(audio[SR // 2 :])))
    change = np.abs(spectra[0] - spectra[1]).sum() / np.abs(spectra[0]).sum()
    assert change > 0.05, change


def test_ablate_writes_a_table(tmp_path, monkeypatch):
    branches = {"harmonic": ["synth.noise=false"],
                "harmonic+noise+reverb+z": ["synth.reverb=true", "model.encoder=true", "model.encoder_gru_size=8"]}
    monkeypatch.setitem(ablate.VARIANT_SETS, "branches", branches)
    out = tmp_path / "ablation"
    smoke = str(ROOT / "recipes" / "smoke.yaml")
    assert ablate.main([smoke, f"data.dir={ROOT / 'data' / 'flute'}", f"data.cache_dir={tmp_path}/c",
                        "train.steps=6", "train.eval_every=3", "synth.reverb_seconds=0.2", "--out", str(out),
                        "--variants", "harmonic", "harmonic+noise+reverb+z", "--dry", str(ROOT / "data" / "flute"),
                        "--truth", str(ROOT / "data" / "flute_truth")]) == 0
    import json

    records = json.loads((out / "ablation.json").read_text())
    assert [r["name"] for r in records] == ["harmonic", "harmonic+noise+reverb+z"]
    assert all(set(r["metrics"]) == {"spectral_loss", "mel_l1_db", "loudness_l1_db", "f0_l1_cents",
                                     "f0_outlier_ratio", "comb_harmonic_share", "branch_harmonic_share",
                                     "f0_truth_rpa", "f0_truth_l1_cents", "dry_spectral_loss", "dry_f0_truth_rpa"}
               for r in records)
    assert records[0]["metrics"]["branch_harmonic_share"] == 1.0  # the harmonic-only variant has no noise
    # No room: its dry output is its output, and the flute's dry recordings are the clips themselves.
    assert records[0]["metrics"]["dry_spectral_loss"] == pytest.approx(records[0]["metrics"]["spectral_loss"], rel=1e-5)
    assert records[0]["metrics"]["dry_f0_truth_rpa"] == records[0]["metrics"]["f0_truth_rpa"]
    assert "room" not in records[0] and records[1]["room"]["wet_to_dry_db"] < 0
    # The variant without a room trains on the same examples as the one with: the room's lead-in, left unset.
    assert [r["lead_in_seconds"] for r in records] == [1.0, 1.0]
    # Run alone, it still gets the lead-in its set's room variants have: the same examples as in the run above.
    alone = tmp_path / "alone"
    assert ablate.main([smoke, f"data.dir={ROOT / 'data' / 'flute'}", f"data.cache_dir={tmp_path}/c", "train.steps=2",
                        "train.eval_every=2", "--out", str(alone), "--variants", "harmonic"]) == 0
    assert [r["lead_in_seconds"] for r in json.loads((alone / "ablation.json").read_text())] == [1.0]
    table = (out / "ablation.md").read_text()
    assert "harmonic+noise+reverb+z" in table and "baseline" in table
    assert (out / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "harmonic_noise_reverb_z" / "eval" / "flute_06" / "dry.wav").exists()


def test_ablate_shares_the_rooms_lead_in_and_pitch_tracking_unless_set():
    smoke = str(ROOT / "recipes" / "smoke.yaml")
    rooms = ablate.VARIANT_SETS["rooms"]
    both = ["data.lead_in_seconds=1.0", "features.f0_dereverb=true"]
    assert ablate.shared_examples(smoke, [], rooms) == both
    assert ablate.shared_examples(smoke, ["data.lead_in_seconds=0.5"], rooms) == both[1:]  # the user's value wins
    assert ablate.shared_examples(smoke, ["features.f0_dereverb=false"], rooms) == both[:1]
    assert ablate.shared_examples(smoke, [], ablate.VARIANT_SETS["speed"]) == []  # no room: neither
