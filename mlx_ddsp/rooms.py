"""Rooms: a parametric reverb that starts as a plausible room, and the decay time of an impulse response.

    room = ParametricRoom(n_samples=48000, sample_rate=16000)     # octave bands, RT60 0.5 s, -15 dB wet
    ir = room.impulse_response()                                  # (n_samples,), first tap 0
    rt60_from_ir(np.array(ir), 16000)                             # ~0.5 s

A room's late reverberation is, to a good approximation, noise whose energy decays exponentially at a rate that
depends on frequency. `ParametricRoom` models it with a fixed white-noise draw split into octave bands (the bands
sum to the noise), each band shaped by an exponential decay with its own learned RT60 and its own learned level.
That is two parameters per band instead of tens of thousands of free taps. The levels set the wet-to-dry energy
ratio for a white input, 10 log10(mean_b 10^(level_b / 10)) dB (0 dB: the reverberation carries as much energy as
the dry sound), whatever the decays, so the initial values mean what they say. A real room is one particular draw,
which gives every frequency its own gain: with learn_noise the draw itself is learned (`synth.room_learn_noise`, the
model's default), still under the band decays.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import soxr

DECAY_DB = 60.0  # RT60: the time the energy takes to fall by 60 dB
LOWEST_CENTRE_HZ = 62.5
# Adam moves every parameter by about the learning rate per step, whatever its scale: stored in these units, a
# step of 1e-3 moves log(RT60) by 0.01 and a level by 0.1 dB (stored as raw log seconds and dB, 300 steps of
# the CPU recipe moved them by less than 0.3 and 0.3 dB: the room could not learn).
LOG_RT60_UNIT = 10.0
LEVEL_DB_UNIT = 100.0
# A learned noise tap starts as a unit-variance draw; stored in these units, a step of 1e-3 moves it by about 0.01, so a
# few hundred steps can reshape the draw (stored as is, 1000 steps could move a tap by about its own size at most).
# 10 rather than 30: on the reverberant cello, 1000 steps, held-out loss 5.91 against 6.00.
NOISE_UNIT = 10.0


def band_centres_hz(sample_rate: int) -> np.ndarray:
    """Octave-band centres from 62.5 Hz up to the last one an octave below Nyquist or lower, the highest band holding
    everything above it (16 kHz: 62.5 .. 4000 Hz, 7 bands; 44.1 and 48 kHz: .. 8000 Hz, 8 bands)."""
    count = int(np.floor(np.log2((sample_rate / 2) / LOWEST_CENTRE_HZ)))
    return LOWEST_CENTRE_HZ * 2.0 ** np.arange(max(count, 1))


def band_masks(n_fft: int, sample_rate: int) -> np.ndarray:
    """(n_bands, n_fft // 2 + 1) gains that sum to 1 at every bin: triangles on a log-frequency axis between the
    octave centres, the lowest band holding everything below its centre and the highest everything above."""
    centres = np.log2(band_centres_hz(sample_rate))
    freqs = np.log2(np.maximum(np.fft.rfftfreq(n_fft, 1.0 / sample_rate), 1e-3))
    eye = np.eye(len(centres))
    return np.stack([np.interp(freqs, centres, eye[b]) for b in range(len(centres))])


def band_noise(n_samples: int, sample_rate: int, seed: int = 0) -> np.ndarray:
    """(n_bands, n_samples) float32: one unit-variance white-noise draw split into octave bands (they sum to it)."""
    noise = np.random.default_rng(seed).standard_normal(n_samples)
    spectrum = np.fft.rfft(noise)
    return np.fft.irfft(spectrum[None] * band_masks(n_samples, sample_rate), n=n_samples).astype(np.float32)


class ParametricRoom(nn.Module):
    """Impulse response sum_b a_b * 10^(-3 t / rt60_b) * noise_b(t) (t in s), first tap 0.

    Learned per octave band: log_rt60 (natural log of the RT60 in s, over LOG_RT60_UNIT) and level (dB over
    LEVEL_DB_UNIT: the bands' levels relative to one another, and their mean energy ratio the IR's energy); a_b
    follows from the levels and the decays, so the levels hold while the decays move. noise_b is one white-noise
    draw split into octave bands: a constant, or with learn_noise the draw itself is learned tap by tap
    (`noise_taps`, over NOISE_UNIT), so the room can become the recording's own room, whose reflections give every
    frequency its own gain, while the envelopes keep its tail decaying (every tap of a free impulse response is
    learned too, but its tail fills with noise). With n_early > 0, taps 1..n_early also get a learned amplitude
    each (`early`, from 0), added to the statistical room: the early reflections, discrete echoes that colour the
    sound, which noise cannot place.
    """

    def __init__(self, n_samples: int, sample_rate: int, rt60_s: float = 0.5, level_db: float = -15.0,
                 seed: int = 0, n_early: int = 0, learn_noise: bool = False):
        super().__init__()
        self.sample_rate = sample_rate
        self.noise = _Constant(band_noise(n_samples, sample_rate, seed))
        n_bands = self.noise.value.shape[0]
        if learn_noise:  # the draw the bands sum to, learned from there
            self.noise_taps = mx.array(self.noise.value.sum(axis=0) / NOISE_UNIT)
            self.masks = _Constant(band_masks(n_samples, sample_rate).astype(np.float32))
        self.log_rt60 = mx.full((n_bands,), math.log(rt60_s) / LOG_RT60_UNIT)  # in LOG_RT60_UNIT
        self.level = mx.full((n_bands,), level_db / LEVEL_DB_UNIT)  # in LEVEL_DB_UNIT
        if not 0 <= n_early < n_samples:
            raise ValueError(f"synth.room_early_ms gives {n_early} early taps; the room has {n_samples}")
        if n_early:
            self.early = mx.zeros((n_early,))

    def rt60_s(self) -> mx.array:
        """(n_bands,) decay times in s."""
        return mx.exp(LOG_RT60_UNIT * self.log_rt60)

    def level_db(self) -> mx.array:
        """(n_bands,) levels in dB."""
        return LEVEL_DB_UNIT * self.level

    def noise_bands(self) -> mx.array:
        """(n_bands, n_samples) the noise under the envelopes: the fixed draw's bands, or the learned taps' bands."""
        if "noise_taps" not in self:
            return mx.array(self.noise.value)
        spectrum = mx.fft.rfft(NOISE_UNIT * self.noise_taps)
        return mx.fft.irfft(spectrum[None] * mx.array(self.masks.value), n=self.noise_taps.shape[0], axis=-1)

    def impulse_response(self) -> mx.array:
        """(n_samples,) the room's impulse response, first tap 0 (the dry path is the model's own)."""
        noise = self.noise_bands()  # (n_bands, n_samples)
        t = mx.arange(noise.shape[1]) / self.sample_rate
        envelope = mx.power(10.0, -(DECAY_DB / 20.0) * t[None] / self.rt60_s()[:, None])  # amplitude
        bands = envelope * noise
        level = mx.power(10.0, self.level_db() / 10.0)  # (n_bands,) energy ratios
        ir = mx.sum(mx.sqrt(level / mx.sum(mx.square(bands), axis=1) + 1e-20)[:, None] * bands, axis=0)
        ir = mx.concatenate([mx.zeros((1,)), ir[1:]])
        # Neighbouring bands overlap in frequency (their masks cross), so their energies do not simply add: scale
        # the sum to the mean of the levels.
        ir = ir * mx.sqrt(mx.mean(level) / (mx.sum(mx.square(ir)) + 1e-20))
        if "early" in self:
            n_early = self.early.shape[0]
            ir = mx.concatenate([ir[:1], ir[1 : n_early + 1] + self.early, ir[n_early + 1 :]])
        return ir


def resample_impulse_response(impulse_response: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """(n,) an impulse response at from_rate Hz as the same room at to_rate Hz: (about n * to_rate / from_rate,)
    float32, first tap 0. The taps are scaled by from_rate / to_rate so that the room's frequency response (the
    sum of taps times e^(-i 2 pi f k / rate)) stays the same below both Nyquists: a tap stands for 1 / rate seconds
    of the room's response, and the dry path it is added to does not depend on the rate."""
    ir = np.asarray(impulse_response, np.float64)
    if from_rate != to_rate:
        ir = soxr.resample(ir, from_rate, to_rate, quality="VHQ") * (from_rate / to_rate)
    ir = ir.astype(np.float32)
    ir[0] = 0.0
    return ir


class _Constant:
    """Holds a numpy array on a Module without making it a parameter (MLX treats mx.array members as parameters)."""

    def __init__(self, value: np.ndarray):
        self.value = value


def rt60_from_ir(impulse_response: np.ndarray, sample_rate: int, fit_db: tuple[float, float] = (-5.0, -25.0)) -> float:
    """RT60 in s of an impulse response: Schroeder's backward-integrated energy decay, a least-squares line through
    its `fit_db` range (T20 by default), extrapolated to -60 dB."""
    energy = np.asarray(impulse_response, np.float64) ** 2
    decay = np.cumsum(energy[::-1])[::-1]
    decay_db = 10.0 * np.log10(np.maximum(decay / decay[0], 1e-30))
    fit = (decay_db <= fit_db[0]) & (decay_db >= fit_db[1])
    if fit.sum() < 2:
        raise ValueError(f"the impulse response does not decay through {fit_db} dB")
    t = np.arange(len(energy))[fit] / sample_rate
    slope = np.polyfit(t, decay_db[fit], 1)[0]  # dB per s
    return float(-DECAY_DB / slope)
