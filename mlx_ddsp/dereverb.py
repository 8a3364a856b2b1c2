"""Room-tail suppression before pitch tracking: keep what is new in the spectrum, damp what the recent past explains.

In a room, the previous note's reverberant tail sounds under the next note's start, often louder than it for the
first 100-150 ms (harmonic energy, median over note changes: 7 dB above the new note at its start, 1.5 dB at
100 ms, in a pyroomacoustics room of RT60 0.8 s), and a tracker there reads the old note. What tells the two apart
is time: the tail is a decaying copy of what sounded before, the new note is not. So each short-time spectrum bin
is scaled by a Wiener gain against what its own recent past predicts (spectral subtraction whose noise estimate is
the signal's past):

    predicted(t, f) = REMOVED * (mean power of bin f over PAST_SPAN_S, ending PAST_DELAY_S before frame t)
    gain(t, f) = xi / (1 + xi) in amplitude, at least FLOOR_DB; xi: the power over the prediction, estimated
                 "decision-directed" (Ephraim and Malah, 1984): SMOOTHING of the previous frame's kept power, the
                 rest this frame's excess; the smoothing keeps a noise bin's gain from flickering ("musical noise").

Each frame is then scaled back to its own power, so a tracker's silence gate reads the sound's level. A steady
sound and a decaying tail fall to the floor together (the steady sound keeps its spectrum's shape, and a tracker's
scale-invariant difference function reads it as before); a note that has just begun stands up to -FLOOR_DB over
both. Numpy, offline: a frame's gain needs its whole window (WINDOW_S), so a stream would wait that much longer
(the streaming engine does not run this).
"""

from __future__ import annotations

import numpy as np

WINDOW_S = 0.128  # short-time window (2048 samples at 16 kHz: 7.8 Hz bins, so a low note's partials and the
# previous note's a tone away fall in bins of their own), periodic Hann, 7/8 overlap
HOP_FRACTION = 8  # frames per window length
PAST_DELAY_S = 0.024  # the past ends this long before the current frame (rounded to whole hops, at least one)
PAST_SPAN_S = 0.256  # the past: the mean power over this long
REMOVED = 0.9  # the prediction: this share of the past's power
SMOOTHING = 0.98  # decision-directed weight of the previous frame's kept power
FLOOR_DB = -12.0  # a bin loses at most this much


def suppress_tail(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """audio (n_samples,) float at sample_rate Hz -> (n_samples,) float32, each spectral bin damped where the
    recent past predicts it (see the module docstring). Short-time analysis and weighted overlap-add with a Hann
    window of WINDOW_S (rounded to a power of two) and a hop of 1/HOP_FRACTION of it, so a gain of 1 everywhere
    returns the input."""
    audio = np.asarray(audio, dtype=np.float64)
    n = 1 << int(round(np.log2(WINDOW_S * sample_rate)))
    hop = n // HOP_FRACTION
    window = np.hanning(n + 1)[:-1]
    padded = np.concatenate([np.zeros(n), audio, np.zeros(n + hop)])  # every sample under HOP_FRACTION frames
    n_frames = (len(padded) - n) // hop + 1
    frames = np.lib.stride_tricks.sliding_window_view(padded, n)[::hop][:n_frames]
    spectrum = np.fft.rfft(frames * window, axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    delay = max(1, int(round(PAST_DELAY_S * sample_rate / hop)))
    span = max(1, int(round(PAST_SPAN_S * sample_rate / hop)))
    sums = np.concatenate([np.zeros((1, power.shape[1])), np.cumsum(power, axis=0)])  # [t]: frames 0..t-1
    last = np.maximum(np.arange(n_frames) - delay + 1, 0)  # the past: frames [first, last), none before frame 0
    first = np.maximum(last - span, 0)
    past = (sums[last] - sums[first]) / np.maximum(last - first, 1)[:, None]
    predicted = np.maximum(REMOVED * past, 1e-20)
    floor = 10.0 ** (FLOOR_DB / 10.0)
    gain = np.empty_like(power)  # power gains
    kept = np.zeros(power.shape[1])  # the previous frame's power after its gain
    for t in range(n_frames):  # decision-directed: each frame's estimate leans on the last one's result
        xi = (SMOOTHING * kept + (1.0 - SMOOTHING) * np.maximum(power[t] - predicted[t], 0.0)) / predicted[t]
        gain[t] = np.maximum((xi / (1.0 + xi)) ** 2, floor)
        kept = gain[t] * power[t]
    # Each frame keeps its power: the tracker's silence gate reads the sound's level, not the suppression's.
    gain *= np.sum(power, axis=-1, keepdims=True) / np.maximum(np.sum(gain * power, axis=-1, keepdims=True), 1e-30)
    pieces = np.fft.irfft(spectrum * np.sqrt(gain), n, axis=-1) * window
    out = np.zeros(len(padded))
    weight = np.zeros(len(padded))
    for k in range(HOP_FRACTION):  # overlap-add: frame t's k-th hop-long piece lands at sample (t + k) * hop
        out[k * hop : k * hop + n_frames * hop].reshape(n_frames, hop)[:] += pieces[:, k * hop : (k + 1) * hop]
        weight[k * hop : k * hop + n_frames * hop].reshape(n_frames, hop)[:] += window[k * hop : (k + 1) * hop] ** 2
    return (out[n : n + len(audio)] / weight[n : n + len(audio)]).astype(np.float32)
