"""Synth functions against closed-form signals and numpy references."""

import math

import mlx.core as mx
import numpy as np
import pytest

from mlx_ddsp.synth import (
    audible_harmonics,
    exp_sigmoid,
    fft_convolve,
    filtered_noise,
    harmonic_bank,
    harmonic_synth,
    hz_to_midi,
    midi_to_hz,
    noise_impulse_responses,
    overlap_add,
    reverb,
    upsample_frames,
    wrapped_cumsum,
)

SR = 16000
HOP = 64


def constant_controls(f0_hz, n_harmonics, n_samples, hot=(1,), amplitude=1.0, batch=1):
    n_frames = n_samples // HOP + 1
    f0 = mx.full((batch, n_frames), f0_hz)
    amp = mx.full((batch, n_frames), amplitude)
    dist = np.zeros((batch, n_frames, n_harmonics), np.float32)
    for k in hot:
        dist[..., k - 1] = 1.0
    return f0, amp, mx.array(dist)


def spectrum_peak_hz(x, sr=SR):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)]


@pytest.mark.parametrize("f0_hz,amplitude", [(220.0, 0.5), (1000.0, 0.8), (3517.3, 0.3)])
def test_one_harmonic_is_a_sine_of_given_frequency_and_peak(f0_hz, amplitude):
    n = SR
    audio = np.array(harmonic_synth(*constant_controls(f0_hz, 8, n, amplitude=amplitude), n, SR))[0]
    assert abs(spectrum_peak_hz(audio) - f0_hz) < 1.0
    assert np.max(np.abs(audio)) == pytest.approx(amplitude, rel=1e-3)
    # Compare with the closed form sample by sample (the phase starts at one increment).
    expected = amplitude * np.sin(2 * np.pi * f0_hz * np.arange(1, n + 1) / SR)
    np.testing.assert_allclose(audio, expected, atol=1e-3)


def test_second_harmonic_sits_at_twice_f0():
    audio = np.array(harmonic_synth(*constant_controls(300.0, 8, SR, hot=(2,)), SR, SR))[0]
    assert abs(spectrum_peak_hz(audio) - 600.0) < 1.0


def test_distribution_is_renormalised():
    """Two equal harmonics share the amplitude: each has peak amplitude / 2."""
    audio = np.array(harmonic_synth(*constant_controls(200.0, 4, SR, hot=(1, 3)), SR, SR))[0]
    spec = np.abs(np.fft.rfft(audio)) * 2 / SR
    assert spec[200] == pytest.approx(0.5, rel=1e-2)
    assert spec[600] == pytest.approx(0.5, rel=1e-2)


def test_no_energy_above_nyquist_or_aliased():
    """f0 3 kHz, 10 equal harmonics at 16 kHz: only 3 and 6 kHz may sound; 9 kHz would alias to 7 kHz etc."""
    n = SR
    f0, amp, _ = constant_controls(3000.0, 10, n)
    dist = mx.ones((1, f0.shape[1], 10))
    audio = np.array(harmonic_synth(f0, amp, dist, n, SR))[0]
    spec = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(n, 1 / SR)
    allowed = (np.abs(freqs - 3000) < 20) | (np.abs(freqs - 6000) < 20)
    assert spec[~allowed].sum() / spec.sum() < 1e-6
    # The two audible harmonics share the amplitude equally.
    assert np.sqrt(spec[3000]) * 2 / n == pytest.approx(0.5, rel=1e-2)


def test_skipping_inaudible_harmonics_changes_nothing():
    """A glide 400 -> 900 Hz at 16 kHz: harmonics 21..60 never sound, so oscillating only 1..20 is exact."""
    n = SR // 2
    n_frames = n // 64 + 1
    f0 = mx.array(np.geomspace(400, 900, n_frames, dtype=np.float32)[None])
    amp = mx.full((1, n_frames), 0.5)
    dist = mx.random.uniform(0.1, 1.0, (1, n_frames, 60), key=mx.random.key(0))
    needed = audible_harmonics(400.0, SR, 60)
    assert needed == 20

    def render(dist, max_harmonics):
        return harmonic_synth(f0, amp, dist, n, SR, max_harmonics=max_harmonics)

    np.testing.assert_allclose(np.array(render(dist, needed)), np.array(render(dist, None)), atol=1e-6)
    weights = mx.random.normal((1, n), key=mx.random.key(1))
    grads = [mx.grad(lambda d: (render(d, k) * weights).sum())(dist) for k in (needed, None)]
    np.testing.assert_allclose(np.array(grads[0]), np.array(grads[1]), rtol=1e-4, atol=1e-6)
    assert not np.allclose(np.array(render(dist, needed - 5)), np.array(render(dist, None)), atol=1e-3)


def direct_bank(phase, start, end):
    """float64 reference of `harmonic_bank`: every partial computed with np.sin."""
    phase, start, end = (np.array(a, dtype=np.float64) for a in (phase, start, end))
    weight = np.arange(phase.shape[-1]) / phase.shape[-1]
    amplitudes = start[:, :, None] + weight[:, None] * (end - start)[:, :, None]  # (B, S, hop, K)
    k = np.arange(1, start.shape[-1] + 1)
    return np.sum(amplitudes * np.sin(2 * np.pi * phase[..., None] * k), axis=-1)


@pytest.fixture(params=[("kernel", 16), ("kernel", 20), ("mlx ops", 16)], ids=["kernel", "kernel-hop20", "mlx-ops"])
def bank_hop(request, cpu_path):
    """Segment length for a harmonic_bank test, on one of its two CPU paths: the kernel of csrc/harmonic_bank.cpp
    (also with a hop that is not a whole number of SIMD registers) or MLX ops."""
    path, hop = request.param
    cpu_path(path)
    return hop


def bank_problem(n_harmonics=100, seed=0, hop=16):
    rng = np.random.default_rng(seed)
    phase = mx.array(rng.uniform(0, 1, (2, 5, hop)).astype(np.float32))
    start, end = (mx.array((rng.uniform(0, 1, (2, 5, n_harmonics)) / np.arange(1, n_harmonics + 1))
                           .astype(np.float32)) for _ in range(2))
    return phase, start, end


@pytest.mark.parametrize("hot", [1, 17, 100])
def test_harmonic_bank_matches_float64_partials(hot, bank_hop):
    phase, start, end = bank_problem(hop=bank_hop)
    expected = direct_bank(phase, start, end)  # sums of ~5: float32 rounding of the recurrence is ~1e-5
    np.testing.assert_allclose(np.array(harmonic_bank(phase, start, end)), expected, atol=3e-5)
    one = np.zeros((2, 5, 100), np.float32)  # worst case: all energy in one high harmonic, amplitude 1
    one[..., hot - 1] = 1.0
    got = np.array(harmonic_bank(phase, mx.array(one), mx.array(one)))
    np.testing.assert_allclose(got, np.sin(2 * np.pi * hot * np.array(phase, np.float64)), atol=3e-4)


def test_harmonic_bank_gradients_match_the_partials(bank_hop):
    """The hand-written backward pass against numpy's closed form (amplitudes) and central differences (phase)."""
    phase, start, end = bank_problem(n_harmonics=12, seed=1, hop=bank_hop)
    rng = np.random.default_rng(2)
    weights = mx.array(rng.normal(size=phase.shape).astype(np.float32))

    def loss(phase, start, end):
        return mx.sum(weights * harmonic_bank(phase, start, end))

    grad_phase, grad_start, grad_end = mx.grad(loss, argnums=(0, 1, 2))(phase, start, end)
    w = np.arange(bank_hop) / bank_hop
    partials = np.sin(2 * np.pi * np.array(phase, np.float64)[..., None] * np.arange(1, 13))  # (B, S, hop, K)
    g = np.array(weights, np.float64)[..., None]
    tolerance = 2e-5  # sums of hop float32 terms of size ~1
    np.testing.assert_allclose(np.array(grad_start), np.sum(g * (1 - w)[:, None] * partials, axis=2), atol=tolerance)
    np.testing.assert_allclose(np.array(grad_end), np.sum(g * w[:, None] * partials, axis=2), atol=tolerance)
    h = 1e-6  # the reference is float64
    direction = rng.normal(size=phase.shape)
    numeric = (np.sum(np.array(weights) * direct_bank(np.array(phase) + h * direction, start, end))
               - np.sum(np.array(weights) * direct_bank(np.array(phase) - h * direction, start, end))) / (2 * h)
    assert float(np.sum(np.array(grad_phase) * direction)) == pytest.approx(numeric, rel=1e-3)


def test_phase_exact_over_60_seconds():
    """A 60 s render at a constant 1 kHz matches a true sine to 1e-3 everywhere."""
    n = 60 * SR
    audio = np.array(harmonic_synth(*constant_controls(1000.0, 2, n), n, SR))[0]
    expected = np.sin(2 * np.pi * 1000.0 * np.arange(1, n + 1, dtype=np.float64) / SR)
    assert np.max(np.abs(audio - expected)) < 1e-3


def test_wrapped_cumsum_matches_float64_for_any_increment():
    rng = np.random.default_rng(0)
    cycles = rng.uniform(0.0, 0.5, (2, 500_000)).astype(np.float32)
    expected = np.cumsum(cycles.astype(np.float64), axis=-1) % 1.0
    got = np.array(wrapped_cumsum(mx.array(cycles)))
    error = (got - expected + 0.5) % 1.0 - 0.5
    assert np.max(np.abs(error)) < 1e-5
    # Plain float32 cumsum fails the same check: the test can tell.
    naive = (np.cumsum(cycles, axis=-1) % 1.0 - expected + 0.5) % 1.0 - 0.5
    assert np.max(np.abs(naive)) > 1e-3


def test_upsample_hits_frames_and_interpolates_linearly():
    frames = mx.array([[[0.0], [1.0], [3.0]]])  # frames at samples 0, 4, 8
    up = np.array(upsample_frames(frames, 8))[0, :, 0]
    np.testing.assert_allclose(up, [0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5], atol=1e-6)


def test_glide_follows_f0_curve():
    """A linear glide 200 -> 400 Hz: instantaneous frequency from the phase follows the control."""
    n = SR
    n_frames = n // HOP + 1
    f0 = mx.array(np.linspace(200, 400, n_frames, dtype=np.float32))[None]
    dist = mx.ones((1, n_frames, 1))
    audio = np.array(harmonic_synth(f0, mx.ones((1, n_frames)), dist, n, SR))[0]
    expected_phase = np.cumsum(np.interp(np.arange(n) * (n_frames - 1) / n, np.arange(n_frames), np.array(f0[0])))
    np.testing.assert_allclose(audio, np.sin(2 * np.pi * expected_phase / SR), atol=1e-3)


def test_noise_with_unit_magnitudes_is_the_white_noise():
    key = mx.random.key(3)
    out = filtered_noise(mx.ones((2, 11, 33)), 640, key=key)
    assert out.shape == (2, 640)
    raw = np.array(mx.random.uniform(-1.0, 1.0, (2, 12 * HOP), key=key))
    np.testing.assert_allclose(np.array(out), raw[:, HOP : HOP + 640], atol=1e-5)


def test_noise_same_key_same_noise_and_zero_magnitudes_silent():
    mags = mx.random.uniform(shape=(1, 26, 65))
    a = filtered_noise(mags, 1600, key=mx.random.key(1))
    b = filtered_noise(mags, 1600, key=mx.random.key(1))
    c = filtered_noise(mags, 1600, key=mx.random.key(2))
    assert np.array_equal(np.array(a), np.array(b))
    assert not np.allclose(np.array(a), np.array(c))
    assert np.max(np.abs(np.array(filtered_noise(mx.zeros((1, 26, 65)), 1600)))) == 0.0


@pytest.mark.parametrize("band", [5, 20, 50])
def test_noise_one_open_band_keeps_90_percent_energy_in_that_band(band):
    n_bands, n = 65, 4 * SR
    band_hz = (SR / 2) / (n_bands - 1)
    mags = np.zeros((1, n // HOP + 1, n_bands), np.float32)
    mags[..., band] = 1.0
    audio = np.array(filtered_noise(mx.array(mags), n, key=mx.random.key(0)))[0]
    spec = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(n, 1 / SR)
    inside = np.abs(freqs - band * band_hz) <= band_hz
    assert spec[inside].sum() / spec.sum() >= 0.9


def test_noise_filter_response_matches_requested_shape():
    """A smooth requested magnitude curve is reproduced by the designed FIR (frequency sampling)."""
    n_bands = 65
    gains = np.linspace(1.0, 0.1, n_bands).astype(np.float32)
    ir = np.array(noise_impulse_responses(mx.array(gains)))
    response = np.abs(np.fft.rfft(ir))
    np.testing.assert_allclose(response[2:-2], gains[2:-2], rtol=0.02)


def test_overlap_add_against_loop():
    rng = np.random.default_rng(1)
    frames = rng.normal(size=(2, 5, 11)).astype(np.float32)
    expected = np.zeros((2, 4 * 3 + 11), np.float32)
    for t in range(5):
        expected[:, t * 3 : t * 3 + 11] += frames[:, t]
    np.testing.assert_allclose(np.array(overlap_add(mx.array(frames), 3)), expected, atol=1e-5)


def test_fft_convolve_and_reverb_match_numpy():
    rng = np.random.default_rng(2)
    audio = rng.normal(size=(2, 1000)).astype(np.float32)
    ir = rng.normal(size=(2, 300)).astype(np.float32)
    got = np.array(fft_convolve(mx.array(audio), mx.array(ir)))
    for b in range(2):
        np.testing.assert_allclose(got[b], np.convolve(audio[b], ir[b])[:1000], atol=1e-3)
    wet = np.array(reverb(mx.array(audio), mx.array(ir)))
    for b in range(2):
        tail = ir[b].copy()
        tail[0] = 0.0
        np.testing.assert_allclose(wet[b], audio[b] + np.convolve(audio[b], tail)[:1000], atol=1e-3)


def test_scaling_helpers():
    np.testing.assert_allclose(np.array(midi_to_hz(mx.array([69.0, 81.0, 60.0]))), [440, 880, 261.6256], rtol=1e-5)
    np.testing.assert_allclose(np.array(hz_to_midi(mx.array([440.0, 220.0]))), [69, 57], atol=1e-4)
    x = mx.array([-100.0, 0.0, 100.0])
    np.testing.assert_allclose(np.array(exp_sigmoid(x)), [1e-7, 2 * 0.5 ** math.log(10) + 1e-7, 2.0], rtol=1e-5)
