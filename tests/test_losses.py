"""STFT and multi-scale spectral loss against numpy, plus gradients through synth + loss."""

import mlx.core as mx
import numpy as np
import pytest

from mlx_ddsp.losses import complex_magnitude, frame_signal, magnitude_spectrogram, multiscale_spectral_loss
from mlx_ddsp.synth import exp_sigmoid, filtered_noise, harmonic_synth

SR = 16000


def numpy_magnitudes(audio, fft_size):
    hop = fft_size // 4
    n_frames = -(-len(audio) // hop)
    padded = np.concatenate([audio, np.zeros(n_frames * hop + fft_size - len(audio))])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(fft_size) / fft_size)
    frames = np.stack([padded[i * hop : i * hop + fft_size] * window for i in range(n_frames)])
    return np.abs(np.fft.rfft(frames, axis=-1))


def numpy_loss(target, pred, fft_sizes):
    total = 0.0
    for size in fft_sizes:
        st, sp = numpy_magnitudes(target, size), numpy_magnitudes(pred, size)
        total += np.mean(np.abs(st - sp))
        total += np.mean(np.abs(np.log(np.maximum(st, 1e-5)) - np.log(np.maximum(sp, 1e-5))))
    return total


def test_frames_match_manual_slicing():
    audio = mx.arange(10, dtype=mx.float32)[None]
    frames = np.array(frame_signal(audio, 4, 2))[0]
    assert frames.shape == (5, 4)
    np.testing.assert_array_equal(frames[0], [0, 1, 2, 3])
    np.testing.assert_array_equal(frames[4], [8, 9, 0, 0])


def test_windowed_frames_are_frames_times_window():
    audio = mx.array(np.random.default_rng(5).normal(size=(2, 37)).astype(np.float32))
    window = mx.arange(8, dtype=mx.float32) + 1.0
    np.testing.assert_allclose(np.array(frame_signal(audio, 8, 2, window)),
                               np.array(frame_signal(audio, 8, 2)) * np.arange(1, 9), rtol=1e-6)


def test_complex_magnitude_value_and_gradient():
    """|z| and its gradient z / |z| (as real and imaginary parts), checked by central differences; 0 at z = 0."""
    rng = np.random.default_rng(6)
    re, im = (rng.normal(size=50).astype(np.float32) for _ in range(2))
    re[:3], im[:3] = 0.0, 0.0
    weights = mx.array(rng.normal(size=50).astype(np.float32))

    def loss(re, im):
        return mx.sum(weights * complex_magnitude(re + 1j * im))

    np.testing.assert_allclose(np.array(complex_magnitude(mx.array(re) + 1j * mx.array(im))), np.hypot(re, im),
                               rtol=1e-6)
    grad_re, grad_im = mx.grad(loss, argnums=(0, 1))(mx.array(re), mx.array(im))
    w, norm = np.array(weights)[3:], np.hypot(re, im)[3:]
    np.testing.assert_allclose(np.array(grad_re)[3:], w * re[3:] / norm, rtol=1e-5)
    np.testing.assert_allclose(np.array(grad_im)[3:], w * im[3:] / norm, rtol=1e-5)
    assert np.all(np.array(grad_re)[:3] == 0) and np.all(np.array(grad_im)[:3] == 0)


@pytest.mark.parametrize("fft_size", [2048, 256, 64])
def test_magnitude_spectrogram_matches_numpy(fft_size):
    rng = np.random.default_rng(0)
    audio = rng.normal(size=(2, 5000)).astype(np.float32)
    got = np.array(magnitude_spectrogram(mx.array(audio), fft_size))
    for b in range(2):
        np.testing.assert_allclose(got[b], numpy_magnitudes(audio[b].astype(np.float64), fft_size), rtol=1e-3, atol=1e-3)


def test_sine_peak_magnitude():
    """A sine of amplitude A centred on a bin peaks at A * N / 4 with a Hann window."""
    fft_size, amplitude = 1024, 0.5
    t = np.arange(8192) / SR
    audio = amplitude * np.sin(2 * np.pi * (SR / fft_size * 64) * t).astype(np.float32)
    mags = np.array(magnitude_spectrogram(mx.array(audio)[None], fft_size))[0]
    assert mags[2:-4].max(axis=-1) == pytest.approx(amplitude * fft_size / 4, rel=1e-3)
    assert np.all(np.argmax(mags[2:-4], axis=-1) == 64)


def test_loss_zero_for_identical_positive_and_growing_with_distortion():
    rng = np.random.default_rng(1)
    target = mx.array(rng.normal(size=(2, 8000)).astype(np.float32) * 0.3)
    noise = mx.array(rng.normal(size=(2, 8000)).astype(np.float32))
    assert float(multiscale_spectral_loss(target, target)) == 0.0
    losses = [float(multiscale_spectral_loss(target, target + eps * noise)) for eps in (0.001, 0.01, 0.1, 1.0)]
    assert losses[0] > 0
    assert all(a < b for a, b in zip(losses, losses[1:]))


def test_loss_matches_numpy_definition():
    rng = np.random.default_rng(2)
    target = rng.normal(size=(1, 6000)).astype(np.float32)
    pred = rng.normal(size=(1, 6000)).astype(np.float32) * 0.5
    sizes = (1024, 256, 64)
    got = float(multiscale_spectral_loss(mx.array(target), mx.array(pred), sizes))
    assert got == pytest.approx(numpy_loss(target[0].astype(np.float64), pred[0].astype(np.float64), sizes), rel=1e-4)


def test_waveform_term():
    target = mx.zeros((1, 256))
    pred = mx.full((1, 256), 0.5)
    spectral = float(multiscale_spectral_loss(target, pred, (64,)))
    both = float(multiscale_spectral_loss(target, pred, (64,), waveform_weight=2.0))
    assert both - spectral == pytest.approx(1.0, rel=1e-5)


# --- gradients through synth + loss -------------------------------------------------------------------------

N_SAMPLES, N_FRAMES = 1024, 17  # hop 64
FFT_SIZES = (256, 64)


def render(params, key):
    """Tiny DDSP forward pass: raw controls -> harmonic + noise audio."""
    amplitude = exp_sigmoid(params["amp"])
    distribution = exp_sigmoid(params["dist"])
    magnitudes = exp_sigmoid(params["noise"])
    f0 = mx.full((1, N_FRAMES), 330.0)
    harmonic = harmonic_synth(f0, amplitude, distribution, N_SAMPLES, SR)
    return harmonic + filtered_noise(magnitudes, N_SAMPLES, key=key)


def make_problem():
    rng = np.random.default_rng(3)
    params = {
        "amp": mx.array(rng.normal(size=(1, N_FRAMES)).astype(np.float32)),
        "dist": mx.array(rng.normal(size=(1, N_FRAMES, 6)).astype(np.float32)),
        "noise": mx.array(rng.normal(size=(1, N_FRAMES, 9)).astype(np.float32) - 2.0),
    }
    target_params = {k: v + 0.7 for k, v in params.items()}
    target = render(target_params, mx.random.key(8))

    def loss_fn(p, target=target, key=mx.random.key(7)):
        return multiscale_spectral_loss(target, render(p, key), FFT_SIZES)

    return params, target, loss_fn


def test_gradients_reach_every_control_finite_and_nonzero():
    params, target, loss_fn = make_problem()
    grads = mx.grad(loss_fn)(params)
    for name, g in grads.items():
        g = np.array(g)
        assert np.all(np.isfinite(g)), name
        assert np.abs(g).max() > 0, name


@pytest.mark.parametrize("name", ["amp", "dist", "noise"])
def test_gradients_agree_with_finite_differences(name):
    params, target, loss_fn = make_problem()
    grad = mx.grad(loss_fn)(params)[name]
    rng = np.random.default_rng(4)
    direction = mx.array(rng.normal(size=params[name].shape).astype(np.float32))
    analytic = float(mx.sum(grad * direction))
    h = 1e-3  # the L1 spectral loss curves sharply; float32 round-off at this h is ~1e-4 of the slope

    def shifted(sign):
        return float(loss_fn({**params, name: params[name] + sign * h * direction}))

    numeric = (shifted(1) - shifted(-1)) / (2 * h)
    assert analytic == pytest.approx(numeric, rel=0.03, abs=1e-4)


def test_compiled_and_eager_agree():
    params, target, loss_fn = make_problem()
    value_and_grad = mx.value_and_grad(loss_fn)
    key = mx.random.key(7)
    eager_loss, eager_grads = value_and_grad(params, target, key)
    compiled_loss, compiled_grads = mx.compile(value_and_grad)(params, target, key)
    assert float(compiled_loss) == pytest.approx(float(eager_loss), rel=1e-5)
    for name in params:
        np.testing.assert_allclose(np.array(compiled_grads[name]), np.array(eager_grads[name]), rtol=1e-3, atol=1e-6)
