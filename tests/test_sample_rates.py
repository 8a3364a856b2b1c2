"""Studio sample rates: frames a whole hop apart, features that read the same at every rate, loss sizes that keep
their durations, an exact phase, the 8-20 kHz metrics, and the pipeline end to end at 16 to 48 kHz."""

import json

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf

from mlx_ddsp import metrics, resynth
from mlx_ddsp.config import load_config
from mlx_ddsp.features import compute_loudness, estimate_f0, frame_hop
from mlx_ddsp.losses import scaled_fft_sizes
from mlx_ddsp.synth import wrapped_cumsum
from mlx_ddsp.train import train

RATES = (16000, 22050, 24000, 32000, 44100, 48000)


def glide(sample_rate, seconds=2.0, step_at=1.0):
    """Five harmonics of 220 Hz with 5 Hz vibrato (±30 cents), jumping to 330 Hz at `step_at` s; its f0 track."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = np.where(t < step_at, 220.0, 330.0) * 2 ** (0.3 / 12 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    audio = 0.3 * sum(np.sin(k * phase) / k for k in range(1, 6))
    return audio.astype(np.float32), f0


def test_frame_hop_is_the_nearest_whole_number_of_samples():
    assert [frame_hop(r, 250) for r in RATES] == [64, 88, 96, 128, 176, 192]
    assert frame_hop(44100, 100) == 441 and frame_hop(22050, 50) == 441
    with pytest.raises(ValueError, match="above sample_rate"):
        frame_hop(100, 250)


@pytest.mark.parametrize("sample_rate", RATES)
def test_f0_tracks_the_same_pitch_on_the_same_frame_times_at_every_rate(sample_rate):
    audio, f0_true = glide(sample_rate)
    f0_hz, confidence = estimate_f0(audio, sample_rate)
    hop = frame_hop(sample_rate, 250)
    assert len(f0_hz) == len(audio) // hop + 1
    frames = np.arange(len(f0_hz)) * hop  # frame t sits on sample t * hop, whatever the rate
    inside = (frames >= 0.05 * sample_rate) & (frames < len(audio) - 0.05 * sample_rate)
    away_from_step = np.abs(frames / sample_rate - 1.0) > 0.03
    check = inside & away_from_step
    cents = 1200 * np.abs(np.log2(f0_hz[check] / f0_true[frames[check]]))
    assert confidence[check].min() > 0.9
    assert np.percentile(cents, 95) < 5.0, np.percentile(cents, 95)
    # The jump lands on the frame of its time: the last 220 Hz frame is within 10 ms of 1.0 s.
    jump = np.argmax(f0_hz > 270.0) * hop / sample_rate
    assert jump == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("sample_rate", RATES)
def test_loudness_reads_the_same_at_every_rate(sample_rate):
    t = np.arange(sample_rate) / sample_rate
    for amplitude in (1.0, 0.1):
        loudness = compute_loudness(amplitude * np.sin(2 * np.pi * 1000 * t), sample_rate)
        middle = loudness[len(loudness) // 4 : 3 * len(loudness) // 4]
        np.testing.assert_allclose(middle, 20 * np.log10(amplitude) - 3.01, atol=0.02)
    # A-weighting, not a flat sum: 100 Hz reads 19.1 dB below 1 kHz (IEC 61672: -19.145 dB)
    low = compute_loudness(np.sin(2 * np.pi * 100 * t), sample_rate)
    assert np.median(low) == pytest.approx(-3.01 - 19.145, abs=0.1)


def test_loss_fft_sizes_keep_their_durations():
    assert scaled_fft_sizes([2048, 1024, 512, 256, 128, 64], 16000, 48000) == [6144, 3072, 1536, 768, 384, 192]
    assert scaled_fft_sizes([2048, 64], 16000, 16000) == [2048, 64]
    assert scaled_fft_sizes([6144, 192], 48000, 48000) == [6144, 192]
    for rate in RATES:
        sizes = scaled_fft_sizes([2048, 1024, 512, 256, 128, 64], 16000, rate)
        for size, given in zip(sizes, [2048, 1024, 512, 256, 128, 64]):
            assert size % 4 == 0
            assert size / rate == pytest.approx(given / 16000, rel=0.1)


def partials(sample_rate, amplitudes, seconds=1.0, f0_hz=311.0):
    """A sum of harmonics of f0_hz with the given amplitudes (all below 8 kHz), sampled at sample_rate, faded in and
    out over 0.1 s (an abrupt start would click across the whole band)."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    fade = np.sin(np.pi / 2 * np.clip(np.minimum(t, seconds - t) / 0.1, 0, 1)) ** 2
    return (fade * sum(a * np.sin(2 * np.pi * (k + 1) * f0_hz * t) for k, a in enumerate(amplitudes))).astype(np.float32)


@pytest.mark.parametrize("sample_rate", [32000, 48000])
def test_the_loss_of_a_band_limited_sound_does_not_depend_on_the_rate(sample_rate):
    from mlx_ddsp.config import LossConfig
    from mlx_ddsp.losses import DEFAULT_FFT_SIZES, multiscale_spectral_loss, recipe_loss

    rng = np.random.default_rng(0)
    target_amplitudes = 0.3 / np.arange(1, 21)
    pred_amplitudes = target_amplitudes * rng.uniform(0.5, 1.5, 20)

    def loss(rate):
        target, pred = (mx.array(partials(rate, a)[None]) for a in (target_amplitudes, pred_amplitudes))
        return recipe_loss(LossConfig(), rate, target, pred).item()

    at_16k = loss(16000)
    assert at_16k == pytest.approx(multiscale_spectral_loss(mx.array(partials(16000, target_amplitudes)[None]),
                                                            mx.array(partials(16000, pred_amplitudes)[None])).item())
    # Nothing above 8 kHz: the 16 kHz loss, but for the short windows' leakage above 8 kHz (a few %). Magenta's plain
    # means over 3x the bins would put the log term at a third of its weight, far off.
    assert loss(sample_rate) == pytest.approx(at_16k, rel=0.06)
    target, pred = (mx.array(partials(sample_rate, a)[None]) for a in (target_amplitudes, pred_amplitudes))
    plain = multiscale_spectral_loss(target, pred, scaled_fft_sizes(DEFAULT_FFT_SIZES, 16000, sample_rate)).item()
    assert abs(plain / at_16k - 1) > 0.15


def test_phase_stays_exact_over_four_seconds_at_48k():
    sample_rate, n = 48000, 4 * 48000
    f0 = 261.63 * 2 ** (0.5 * np.sin(np.arange(n) / n * 2 * np.pi))  # a slow half-octave swing, irrational steps
    increments = (f0 / sample_rate).astype(np.float32)
    expected = np.mod(np.cumsum(increments.astype(np.float64)), 1.0)
    got = np.array(wrapped_cumsum(mx.array(increments[None]))[0])
    error = np.abs(got - expected)
    assert np.minimum(error, 1 - error).max() < 1e-5  # float32 quantisation of the inputs bounds it, not drift


def test_band_metrics_see_only_the_top_octaves():
    sample_rate = 48000
    t = np.arange(sample_rate) / sample_rate
    low = 0.3 * np.sin(2 * np.pi * 440 * t)
    high = 0.03 * np.sin(2 * np.pi * 12000 * t)
    cfg = load_config(None, [f"data.sample_rate={sample_rate}"])
    assert metrics.band_energy(high, sample_rate, (8000, 20000)) == pytest.approx(0.03**2 / 2 * sample_rate, rel=1e-3)
    assert metrics.band_energy(low, sample_rate, (8000, 20000)) < 1e-12
    same = metrics.band_metrics(low + high, low + high, cfg)
    assert same == {"band_spectral_loss": 0.0, "band_energy_db": 0.0}
    half = metrics.band_metrics(low + high, low + high / 2, cfg)
    assert half["band_energy_db"] == pytest.approx(-6.02, abs=0.01)
    missing = metrics.band_metrics(low + high, low, cfg)  # a 16 kHz model's output: nothing above 8 kHz
    assert missing["band_energy_db"] < -100 and missing["band_spectral_loss"] > half["band_spectral_loss"] > 0


def test_comb_harmonic_share_of_tones_and_noise():
    sample_rate = 48000
    audio, _ = glide(sample_rate)
    f0_hz, confidence = estimate_f0(audio, sample_rate)
    hop = frame_hop(sample_rate, 250)
    assert metrics.comb_harmonic_share(audio, f0_hz, confidence, sample_rate, hop) > 0.95  # vibrato smears a little
    noise = np.random.default_rng(0).uniform(-0.3, 0.3, len(audio)).astype(np.float32)
    share = metrics.comb_harmonic_share(noise, f0_hz, confidence, sample_rate, hop)
    assert share < 0.3  # the comb's own share of the band (its tolerance over f0), far from a tone's 1
    mixed = metrics.comb_harmonic_share(audio + noise, f0_hz, confidence, sample_rate, hop)
    assert share < mixed < 0.95
    assert metrics.branch_harmonic_share(audio, np.zeros_like(audio)) == 1.0
    assert metrics.branch_harmonic_share(audio, audio) == pytest.approx(0.5)


@pytest.fixture(scope="module")
def tones_48k(tmp_path_factory):
    """Four 3 s harmonic phrases at 48 kHz, a folder any rate's recipe can read (resampling on load)."""
    folder = tmp_path_factory.mktemp("tones48k")
    t = np.arange(3 * 48000) / 48000
    for i, base in enumerate((196.0, 262.0, 330.0, 440.0)):
        phase = 2 * np.pi * np.cumsum(np.where(t < 1.5, base, 1.5 * base)) / 48000
        audio = 0.3 * sum(np.sin(k * phase) / k**1.5 for k in range(1, 12)) * np.minimum(1, t / 0.05)
        sf.write(folder / f"tone_{i}.wav", audio.astype(np.float32), 48000)
    return folder


def tiny_recipe(sample_rate, data_dir, run_dir, *overrides):
    return load_config(None, [
        f"data.dir={data_dir}", f"data.sample_rate={sample_rate}", "data.example_seconds=1.0",
        "data.val_files=[tone_3.wav]", f"run_dir={run_dir}", "model.hidden_size=16", "model.n_mlp_layers=1",
        "model.gru_size=16", "model.frame_rate=50", "synth.n_harmonics=24", "synth.n_noise_bands=16",
        "train.steps=3", "train.batch_size=2", "train.warmup_steps=1", "train.eval_every=3", "train.log_every=1",
        "train.render_every=3", "train.n_renders=1", "train.checkpoint_every=3", "train.val_max_examples=2",
        *overrides])


@pytest.mark.parametrize("sample_rate", RATES)
def test_preprocess_train_and_eval_at_every_rate(sample_rate, tones_48k, tmp_path):
    cfg = tiny_recipe(sample_rate, tones_48k, tmp_path / "run")
    summary = train(cfg)
    assert summary["step"] == 3 and np.isfinite(summary["best_val_loss"])
    (render,) = (tmp_path / "run" / "renders" / "step_000003").glob("*_recon.wav")
    audio, rate = sf.read(render)
    assert rate == sample_rate and len(audio) == 250 * frame_hop(sample_rate, 250)  # 1 s: 250 hops (0.998 s at 44.1k)
    result = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    (clip,) = result["clips"]
    assert clip["n_samples"] == 3 * sample_rate
    assert ("band_spectral_loss" in clip["model"]) == (sample_rate > 16000)
    with np.load(tmp_path / "run" / "eval" / "tone_3" / "tracks.npz") as tracks:
        assert float(tracks["frame_rate"]) == pytest.approx(sample_rate / frame_hop(sample_rate, 250))
        assert len(tracks["target_f0_hz"]) == 3 * sample_rate // frame_hop(sample_rate, 250) + 1


def test_a_44k_input_through_a_48k_model(tones_48k, tmp_path):
    train(tiny_recipe(48000, tones_48k, tmp_path / "run", "train.eval_at_end=false"))
    source, _ = glide(44100, seconds=1.5)
    sf.write(tmp_path / "in.wav", source, 44100)
    resynth.resynthesize(tmp_path / "run", tmp_path / "in.wav", tmp_path / "out.wav")
    out, rate = sf.read(tmp_path / "out.wav")
    assert rate == 48000 and len(out) == int(1.5 * 48000)
    f0_hz, confidence = estimate_f0(out.astype(np.float32), 48000)
    assert np.isfinite(out).all() and len(f0_hz) == len(out) // 192 + 1


def test_training_says_how_far_the_harmonics_reach():
    from mlx_ddsp.train import rate_notes

    cfg = load_config(None, ["data.sample_rate=48000"])
    low = {"f0_hz": {"quantiles": {"0.05": 82.0}}}  # a cello's low E: 100 harmonics reach 8.2 kHz
    rates, reach = rate_notes(cfg, low)
    assert "192 samples" in rates and "6144, 3072, 1536, 768, 384, 192" in rates
    assert "reach 8.2 of 24 kHz" in reach and "synth.n_harmonics=293" in reach
    (_, flute) = rate_notes(cfg, {"f0_hz": {"quantiles": {"0.05": 262.0}}})
    assert "reach 24.0 of 24 kHz" in flute and "n_harmonics=" not in flute
    assert len(rate_notes(cfg, {"f0_hz": None})) == 1  # no voiced frames: nothing to say about harmonics
