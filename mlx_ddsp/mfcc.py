"""MFCCs in MLX, the encoder's input (Magenta's `compute_mfcc`: magnitude STFT -> mel -> log -> DCT-II).

Definitions (tested against numpy in tests/test_encoder_reverb.py):
- frames: Hann-windowed, `n_fft` long, centred on samples t * hop (zero padding at both ends), T = N // hop + 1;
- mel: HTK scale 1127 ln(1 + f / 700), `n_mels` triangles evenly spaced in mel between lo_hz and hi_hz, built in
  the mel domain with no area normalisation, DC bin unused (TensorFlow's `linear_to_mel_weight_matrix`);
- log: natural log of the mel magnitudes floored at 1e-5;
- MFCC_k = sqrt(2 / n_mels) * sum_m log_mel_m * cos(pi * k * (2m + 1) / (2 n_mels)), k < n_mfcc (TensorFlow's
  `mfccs_from_log_mel_spectrograms`).
"""

from __future__ import annotations

import math
from functools import lru_cache

import mlx.core as mx
import numpy as np

from mlx_ddsp.losses import safe_log
from mlx_ddsp.synth import hann_window


def hz_to_mel(f_hz):
    return 1127.0 * np.log1p(np.asarray(f_hz, dtype=np.float64) / 700.0)


@lru_cache(maxsize=8)
def mel_matrix(sample_rate: int, n_fft: int, n_mels: int = 128, lo_hz: float = 20.0, hi_hz: float = 8000.0):
    """(n_fft // 2 + 1, n_mels) float32 triangular weights from linear-frequency bins to mel bands."""
    hi_hz = min(hi_hz, sample_rate / 2)
    bin_mel = hz_to_mel(np.arange(n_fft // 2 + 1) * sample_rate / n_fft)[:, None]
    edges = np.linspace(hz_to_mel(lo_hz), hz_to_mel(hi_hz), n_mels + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    weights = np.maximum(0.0, np.minimum((bin_mel - lower) / (centre - lower), (upper - bin_mel) / (upper - centre)))
    weights[0] = 0.0  # the DC bin carries no pitch information
    return mx.array(weights.astype(np.float32))


@lru_cache(maxsize=8)
def dct_matrix(n_mels: int, n_mfcc: int):
    """(n_mels, n_mfcc) DCT-II basis scaled by sqrt(2 / n_mels)."""
    m, k = np.arange(n_mels)[:, None], np.arange(n_mfcc)[None, :]
    return mx.array((math.sqrt(2.0 / n_mels) * np.cos(np.pi * k * (2 * m + 1) / (2 * n_mels))).astype(np.float32))


def centred_stft_magnitude(audio: mx.array, n_fft: int, hop: int) -> mx.array:
    """|STFT| of Hann frames centred on samples t * hop. audio: (B, N). Returns (B, N // hop + 1, n_fft // 2 + 1)."""
    n_frames = audio.shape[1] // hop + 1
    padded = mx.pad(audio, [(0, 0), (n_fft // 2, n_fft // 2)])
    index = mx.arange(n_frames)[:, None] * hop + mx.arange(n_fft)[None, :]  # (T, n_fft)
    frames = mx.take(padded, index.reshape(-1), axis=1).reshape(audio.shape[0], n_frames, n_fft)
    return mx.abs(mx.fft.rfft(frames * hann_window(n_fft), axis=-1))


def mfcc(audio: mx.array, sample_rate: int, hop: int, n_fft: int = 1024, n_mels: int = 128, n_mfcc: int = 30,
         lo_hz: float = 20.0, hi_hz: float = 8000.0) -> mx.array:
    """MFCCs (B, N // hop + 1, n_mfcc) of audio (B, N), frame t centred on sample t * hop."""
    magnitudes = centred_stft_magnitude(audio, n_fft, hop)
    log_mel = safe_log(magnitudes @ mel_matrix(sample_rate, n_fft, n_mels, lo_hz, hi_hz))
    return log_mel @ dct_matrix(n_mels, n_mfcc)
