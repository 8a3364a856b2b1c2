"""The plugin-style renderer against closed-form signals: what DDSP-VST plays from its model's outputs."""

import numpy as np

from mlx_ddsp.vst_synth import HOP, SAMPLE_RATE, harmonic_part, noise_part, render_like_plugin

T = 40


def one_harmonic(k: int = 1, n_harmonics: int = 60) -> np.ndarray:
    distribution = np.zeros((T, n_harmonics))
    distribution[:, k - 1] = 3.0  # any scale: the plugin renormalises
    return distribution


def test_a_steady_harmonic_is_a_sine_whose_phase_runs_across_hops():
    omega = 2 * np.pi * 440.0 / SAMPLE_RATE
    out = harmonic_part(np.full(T, 0.5), one_harmonic(), np.full(T, 440.0))
    n = np.arange(T * HOP)
    expected = 0.5 * np.sin(omega * (n + 1))  # the phase sums the frequency sample by sample, the first included
    expected[:HOP] *= np.minimum(np.arange(HOP) / (HOP // 2), 1.0)  # the first hop rises from silence
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_harmonics_at_or_above_nyquist_are_dropped_and_the_rest_renormalised():
    f0 = 3000.0  # harmonic 3 is at 9 kHz, above 8 kHz
    distribution = np.zeros((T, 60))
    distribution[:, :3] = 1.0
    out = harmonic_part(np.ones(T), distribution, np.full(T, f0))[HOP:]
    phase = 2 * np.pi * f0 / SAMPLE_RATE * (np.arange(HOP, T * HOP) + 1)
    np.testing.assert_allclose(out, 0.5 * np.sin(phase) + 0.5 * np.sin(2 * phase), atol=1e-4)


def test_controls_move_over_the_first_half_of_a_hop_and_hold_over_the_second():
    amplitude = np.where(np.arange(T) >= 5, 1.0, 0.0)
    out = harmonic_part(amplitude, one_harmonic(), np.full(T, 400.0))
    phase = 2 * np.pi * 400.0 / SAMPLE_RATE * (np.arange(T * HOP) + 1)
    envelope = np.clip((np.arange(T * HOP) - 5 * HOP) / (HOP // 2), 0.0, 1.0)  # frame 5's hop: 0 -> 1 in 160 samples
    np.testing.assert_allclose(out, envelope * np.sin(phase), atol=1e-5)


def test_noise_all_ones_is_white_uniform_noise_and_a_low_band_is_low_passed():
    white = noise_part(np.ones((200, 65)))
    assert abs(white.var() - 1.0 / 3.0) < 0.01  # uniform in [-1, 1]
    assert abs(white.mean()) < 0.01
    low = np.zeros((200, 65))
    low[:, :17] = 1.0  # bands 0..16: 0-2 kHz (65 bands span 0-8 kHz, 125 Hz apart)
    power = np.abs(np.fft.rfft(noise_part(low).reshape(-1, HOP), axis=1)) ** 2
    frequencies = np.fft.rfftfreq(HOP, 1.0 / SAMPLE_RATE)
    assert power[:, frequencies > 3000].sum() < 0.02 * power.sum()
    silent = noise_part(np.zeros((10, 65)))
    assert np.all(silent == 0.0)


def test_render_is_harmonic_plus_noise_of_fixed_seed():
    args = (np.full(T, 0.3), one_harmonic(2), np.ones((T, 65)) * 0.01, np.full(T, 220.0))
    out = render_like_plugin(*args)
    assert out.shape == (T * HOP,) and out.dtype == np.float32
    np.testing.assert_array_equal(out, render_like_plugin(*args))
    np.testing.assert_allclose(out, harmonic_part(*args[:2], args[3]) + noise_part(args[2]), atol=1e-6)
