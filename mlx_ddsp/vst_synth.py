"""What DDSP-VST plays from its model's four outputs: the plugin's per-frame synthesis, in numpy, to hear in advance.

    audio = render_like_plugin(amplitude, harmonics, noise, f0_hz)   # (T,), (T, 60), (T, 65), (T,) -> (T * 320,)

Written from the plugin's sources (src/audio/HarmonicSynthesizer.cpp, NoiseSynthesizer.cpp, InferencePipeline.cpp),
at its 16 kHz and 320-sample hop. For each frame the plugin
- zeroes the harmonics at and above 8 kHz for the frame's f0, renormalises them to sum to 1 and multiplies them by
  the amplitude;
- interpolates f0 and every harmonic's amplitude from the previous frame to this one over the first half of the
  hop and holds this frame's value over the second half ("midway lerp"), accumulates the phase sample by sample
  (carried and wrapped across hops) and sums sin(k * phase) * amplitude_k;
- designs a 128-tap linear-phase filter from the 65 noise magnitudes (inverse real FFT, zero-phase Hann window,
  rotated to be causal), filters 512 samples of fresh uniform noise in [-1, 1] with it (circular convolution by a
  512-point FFT) and keeps 320 samples after the filter's delay.
Timing: the hop rendered when frame t arrives runs from frame t-1 to frame t, one hop (20 ms) behind mlx_ddsp's
synth, where frame t sits at sample t * 320 and the hop after it runs from frame t to frame t+1. Not modelled: the
plugin's input and output resampling, its gain knobs and its own reverb.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
HOP = 320
NOISE_FFT = 512  # the plugin's convolution size (a JUCE FFT of order 9)


def _midway(previous: np.ndarray, current: np.ndarray, hop: int = HOP) -> np.ndarray:
    """(T, ...) frame values -> (T, hop, ...): linear from the previous frame's value over the first half of each
    hop (the current value not reached), the current value over the second half."""
    ramp = np.minimum(np.arange(hop) / (hop // 2), 1.0)
    ramp = ramp.reshape((1, hop) + (1,) * (current.ndim - 1))
    return previous[:, None] + (current - previous)[:, None] * ramp


def harmonic_part(amplitude: np.ndarray, harmonics: np.ndarray, f0_hz: np.ndarray) -> np.ndarray:
    """The plugin's additive synth. amplitude: (T,); harmonics: (T, K) (the model's distribution); f0_hz: (T,).
    Returns (T * HOP,) float32, starting from phase 0 and, before the first frame, silence at the first f0."""
    n_harmonics = harmonics.shape[1]
    numbers = np.arange(1, n_harmonics + 1)
    kept = np.where(f0_hz[:, None] * numbers < SAMPLE_RATE / 2, harmonics, 0.0)
    total = kept.sum(axis=1, keepdims=True)
    kept = np.divide(kept, total, out=kept.copy(), where=total != 0) * amplitude[:, None]
    f0_env = _midway(np.concatenate([f0_hz[:1], f0_hz[:-1]]), f0_hz).reshape(-1)
    amps = _midway(np.concatenate([np.zeros_like(kept[:1]), kept[:-1]]), kept).reshape(-1, n_harmonics)
    phase = np.mod(np.cumsum(2.0 * np.pi * f0_env.astype(np.float64) / SAMPLE_RATE), 2.0 * np.pi)
    out = np.empty(len(phase))
    for start in range(0, len(phase), 64 * HOP):  # bounded memory: (64 hops, K) sines at a time
        block = slice(start, start + 64 * HOP)
        out[block] = np.sum(np.sin(phase[block, None] * numbers) * amps[block], axis=1)
    return out.astype(np.float32)


def noise_part(noise: np.ndarray, seed: int = 42) -> np.ndarray:
    """The plugin's filtered noise. noise: (T, F) magnitudes of F bands from 0 Hz to Nyquist (F = 65: a 128-tap
    filter). Returns (T * HOP,) float32; `seed` seeds the uniform noise (the plugin seeds its own with 42)."""
    n_frames, n_bands = noise.shape
    ir_size = 2 * (n_bands - 1)
    window = np.roll(0.5 * (1.0 - np.cos(2.0 * np.pi * np.arange(ir_size) / ir_size)), -(ir_size // 2))
    impulse = np.roll(np.fft.irfft(noise, n=ir_size, axis=1) * window, ir_size // 2, axis=1)  # causal, delay 64
    white = np.random.default_rng(seed).uniform(-1.0, 1.0, (n_frames, NOISE_FFT))
    filtered = np.fft.irfft(np.fft.rfft(white, axis=1) * np.fft.rfft(impulse, n=NOISE_FFT, axis=1), n=NOISE_FFT, axis=1)
    start = (ir_size - 1) // 2 - 1  # where the plugin crops (its group-delay compensation)
    return filtered[:, start : start + HOP].reshape(-1).astype(np.float32)


def render_like_plugin(amplitude: np.ndarray, harmonics: np.ndarray, noise: np.ndarray, f0_hz: np.ndarray,
                       seed: int = 42) -> np.ndarray:
    """Harmonic plus noise, one HOP per frame in the plugin's timing (see the module docstring): (T * HOP,)."""
    return harmonic_part(amplitude, harmonics, f0_hz) + noise_part(noise, seed)
