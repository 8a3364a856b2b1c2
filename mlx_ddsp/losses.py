"""Spectral losses on MLX: STFT, magnitude spectrograms and Magenta's multi-scale spectral loss."""

from __future__ import annotations

import functools
import math

import mlx.core as mx

from mlx_ddsp.config import LossConfig
from mlx_ddsp.features import nearest_fft_size
from mlx_ddsp.synth import hann_window

DEFAULT_FFT_SIZES = (2048, 1024, 512, 256, 128, 64)


def frame_signal(audio: mx.array, frame_size: int, hop_size: int, window: mx.array | None = None) -> mx.array:
    """Cut audio into overlapping frames, zero-padding the end so every sample lands in a frame.

    audio: (B, N); hop_size must divide frame_size; window: optional (frame_size,) weights applied to every frame.
    Returns (B, n_frames, frame_size) with n_frames = ceil(N / hop_size); frame i starts at sample i * hop_size
    (TensorFlow's `pad_end=True` framing). The frames are built from hop-sized blocks, each weighted by its part of
    the window before they are joined: under `mx.compile` on the CPU, weighting the joined frames afterwards ran
    ten times slower.
    """
    if frame_size % hop_size:
        raise ValueError(f"hop_size {hop_size} must divide frame_size {frame_size}")
    batch, n_samples = audio.shape
    n_frames = -(-n_samples // hop_size)
    per_frame = frame_size // hop_size
    padded = mx.pad(audio, [(0, 0), (0, (n_frames + per_frame - 1) * hop_size - n_samples)])
    blocks = padded.reshape(batch, n_frames + per_frame - 1, hop_size)
    pieces = [blocks[:, i : i + n_frames] for i in range(per_frame)]
    if window is not None:
        window = window.reshape(per_frame, hop_size)
        pieces = [piece * window[i] for i, piece in enumerate(pieces)]
    return mx.concatenate(pieces, axis=-1)


@mx.custom_function
def complex_magnitude(spectrum: mx.array) -> mx.array:
    """|z| of a complex array, with a gradient that is 0 at z = 0 (real arithmetic; `mx.abs`'s complex gradient
    ran 3x slower on the CPU)."""
    return mx.sqrt(mx.square(mx.real(spectrum)) + mx.square(mx.imag(spectrum)))


@complex_magnitude.vjp
def _complex_magnitude_vjp(spectrum, cotangent, magnitude):
    scale = mx.where(magnitude > 0, cotangent / mx.maximum(magnitude, 1e-30), 0.0)
    return mx.real(spectrum) * scale + 1j * (mx.imag(spectrum) * scale)


def stft(audio: mx.array, fft_size: int, overlap: float = 0.75) -> mx.array:
    """Short-time Fourier transform with a Hann window.

    audio: (B, N). Returns complex (B, ceil(N / hop), fft_size // 2 + 1), hop = fft_size * (1 - overlap).
    """
    hop_size = int(fft_size * (1.0 - overlap))
    return mx.fft.rfft(frame_signal(audio, fft_size, hop_size, hann_window(fft_size)), axis=-1)


def magnitude_spectrogram(audio: mx.array, fft_size: int, overlap: float = 0.75) -> mx.array:
    """|STFT| (linear magnitude), (B, n_frames, fft_size // 2 + 1)."""
    return complex_magnitude(stft(audio, fft_size, overlap))


def safe_log(x: mx.array, eps: float = 1e-5) -> mx.array:
    """Natural log with inputs floored at eps (Magenta's `safe_log`)."""
    return mx.log(mx.maximum(x, eps))


@functools.lru_cache(maxsize=None)
def _cpu_streams() -> tuple:
    return mx.default_stream(mx.cpu), mx.new_stream(mx.cpu)


def _streams() -> tuple:
    """Streams to spread independent work over: two on the CPU, the default one elsewhere."""
    if mx.default_device() == mx.cpu:
        return _cpu_streams()
    return (mx.default_stream(mx.default_device()),)


def multiscale_spectral_loss(
    target: mx.array,
    pred: mx.array,
    fft_sizes=DEFAULT_FFT_SIZES,
    mag_weight: float = 1.0,
    logmag_weight: float = 1.0,
    waveform_weight: float = 0.0,
    band: tuple[float, float, int] | None = None,
    reference_sizes=None,
) -> mx.array:
    """Magenta DDSP's spectral reconstruction loss.

    target, pred: (B, N) audio. For each FFT size: mag_weight * mean|S_t - S_p| + logmag_weight *
    mean|log S_t - log S_p| over Hann-windowed, 75 %-overlap magnitude spectrograms; summed over sizes, plus
    waveform_weight * mean|target - pred|. Returns a scalar; 0 when target == pred.
    reference_sizes: the sizes fft_sizes were scaled from to another sample rate (`scaled_fft_sizes`), or None.
        Each spectrogram is then divided by size / reference size (a sound's magnitudes match the reference rate's)
        and its means are weighted by its bin count over the reference's, so the loss of a sound with nothing
        above the reference's Nyquist is its loss at the reference rate, and a band above adds its own part. (Plain
        means would spread the log term over 3x the bins at 48 kHz: a third of the weight on 0-8 kHz.)
    band: (lo_hz, hi_hz, sample_rate) to average over the bins in [lo_hz, hi_hz) only (a metric of one band).

    On the CPU the FFT sizes alternate between two streams (their forward and backward operations too), so the
    two halves run on two cores at once: MLX runs each CPU operation on one thread.
    """
    loss = mx.array(0.0)
    streams = _streams()
    for i, fft_size in enumerate(fft_sizes):
        with mx.stream(streams[i % len(streams)]):
            target_mag = magnitude_spectrogram(target, fft_size)
            pred_mag = magnitude_spectrogram(pred, fft_size)
            ratio, weight = 1.0, 1.0
            if reference_sizes is not None and reference_sizes[i] != fft_size:
                ratio = fft_size / reference_sizes[i]  # magnitudes / ratio, folded into the terms below
                weight = (fft_size // 2 + 1) / (reference_sizes[i] // 2 + 1)
            if band is not None:
                weight = 1.0  # a mean over the band's bins
                lo_hz, hi_hz, sample_rate = band
                lo, hi = (max(1, math.ceil(f * fft_size / sample_rate)) for f in (lo_hz, hi_hz))
                target_mag, pred_mag = target_mag[..., lo:hi], pred_mag[..., lo:hi]
            term = mx.array(0.0)
            if mag_weight:
                term = term + (mag_weight / ratio) * mx.mean(mx.abs(target_mag - pred_mag))
            if logmag_weight:  # log(max(S / ratio, eps)) differences = log(max(S, eps * ratio)) differences
                floor = 1e-5 * ratio
                term = term + logmag_weight * mx.mean(mx.abs(safe_log(target_mag, floor) - safe_log(pred_mag, floor)))
        loss = loss + weight * term
    if waveform_weight:
        loss = loss + waveform_weight * mx.mean(mx.abs(target - pred))
    return loss


def scaled_fft_sizes(fft_sizes, given_rate: int, sample_rate: int) -> list[int]:
    """FFT sizes given at `given_rate` Hz, for audio at `sample_rate`: the same durations, each rounded to the
    nearest multiple of 4 (the 75 % overlap's hop) that is 2^a 3^b 5^c (fast FFTs). Unchanged when the rates agree.
    48 kHz: 2048..64 at 16 kHz -> 6144..192 (Magenta's 48 kHz sizes); 44.1 kHz: -> 5760, 2880, ..., 180."""
    if given_rate == sample_rate:
        return list(fft_sizes)
    return [nearest_fft_size(size * sample_rate / given_rate, 4) for size in fft_sizes]


def recipe_loss(loss: LossConfig, sample_rate: int, target: mx.array, pred: mx.array,
                band_hz: tuple[float, float] | None = None) -> mx.array:
    """The recipe's `loss` section applied to (B, N) audio at sample_rate: the training, validation and eval loss.

    At a rate other than loss.fft_sizes_rate the sizes scale and the loss stays the reference rate's loss plus the
    band above its Nyquist (see `multiscale_spectral_loss`'s reference_sizes). band_hz: over that band only, a
    metric."""
    sizes = scaled_fft_sizes(loss.fft_sizes, loss.fft_sizes_rate, sample_rate)
    return multiscale_spectral_loss(target, pred, sizes, loss.mag_weight, loss.logmag_weight, loss.waveform_weight,
                                    None if band_hz is None else (*band_hz, sample_rate), loss.fft_sizes)
