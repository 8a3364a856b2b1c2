"""Differentiable synthesis on MLX: harmonic oscillator bank, filtered noise, FFT convolution and reverb.

Conventions shared by every function here:
- Controls live at frame rate: `T` frames, frame t centred on audio sample t * n_samples / (T - 1), so for audio of
  `n_samples = (T - 1) * hop` samples the frames sit exactly on multiples of the hop (the features' convention,
  T = n_samples // hop + 1). Controls are upsampled to audio rate by linear interpolation.
- Audio is `(B, n_samples)` float32 in [-1, 1]; frequencies in Hz; phases accumulated in cycles (turns).
All functions are pure MLX and differentiable with respect to their float inputs.
"""

from __future__ import annotations

import math

import mlx.core as mx

from mlx_ddsp import kernels


def exp_sigmoid(x: mx.array, exponent: float = 10.0, max_value: float = 2.0, threshold: float = 1e-7) -> mx.array:
    """Magenta's scaled sigmoid for positive synth controls: max_value * sigmoid(x) ** ln(exponent) + threshold."""
    return max_value * mx.sigmoid(x) ** math.log(exponent) + threshold


def hz_to_midi(f_hz: mx.array) -> mx.array:
    """Frequency in Hz -> MIDI note number (A4 = 440 Hz = 69); 0 Hz maps to a very low note, never -inf."""
    return 12.0 * (mx.log2(mx.maximum(f_hz, 1e-5)) - math.log2(440.0)) + 69.0


def midi_to_hz(midi: mx.array) -> mx.array:
    """MIDI note number -> frequency in Hz."""
    return 440.0 * mx.power(2.0, (midi - 69.0) / 12.0)


def upsample_frames(frames: mx.array, n_samples: int) -> mx.array:
    """Linear interpolation from frame rate to audio rate.

    frames: (B, T, C) control values, frame t at sample t * n_samples / (T - 1).
    Returns (B, n_samples, C).
    """
    batch, n_frames, channels = frames.shape
    if n_frames == 1:
        return mx.broadcast_to(frames, (batch, n_samples, channels))
    if n_samples % (n_frames - 1) == 0:  # whole hop: interpolate segment by segment, no gather
        weight = interpolation_weights(n_samples // (n_frames - 1))[:, None]  # (hop, 1)
        segments = frames[:, :-1, None] * (1.0 - weight) + frames[:, 1:, None] * weight  # (B, T-1, hop, C)
        return segments.reshape(batch, n_samples, channels)
    position = mx.arange(n_samples, dtype=mx.float32) * ((n_frames - 1) / n_samples)
    lower = mx.floor(position).astype(mx.int32)
    upper = mx.minimum(lower + 1, n_frames - 1)
    weight = (position - lower.astype(mx.float32))[None, :, None]
    return mx.take(frames, lower, axis=1) * (1.0 - weight) + mx.take(frames, upper, axis=1) * weight


def resample_frames(frames: mx.array, n_out: int) -> mx.array:
    """Linear interpolation of (B, T, C) frames spanning a signal to (B, n_out, C) frames spanning the same signal
    (first and last frames kept)."""
    if frames.shape[1] == n_out:
        return frames
    if n_out == 1:
        return frames[:, :1]
    return mx.concatenate([upsample_frames(frames, n_out - 1), frames[:, -1:]], axis=1)


def interpolation_weights(hop: int) -> mx.array:
    """(hop,) weights j / hop of the next frame for the samples j = 0..hop-1 of a segment."""
    return mx.arange(hop, dtype=mx.float32) / hop


def wrapped_cumsum(cycles: mx.array) -> mx.array:
    """Running sum along the last axis, modulo 1, exact over any length (the oscillator phase).

    A float32 `cumsum` of 64000 per-sample phase increments drifts by radians, and blocked or tree-shaped float
    sums only slow the drift. Here the increments are quantised to 32-bit fixed point (1 cycle = 2**32, a rounding
    of at most 2**-32 cycles per sample) and summed in uint32, whose overflow *is* the wrap modulo one cycle, so
    the sum is exact. The gradient is that of the plain float cumsum (the two differ only by whole cycles).

    cycles: (..., N) increments in cycles (turns) in [0, 1). Returns (..., N) inclusive running sums in [0, 1).
    """
    exact = cycles_from_fixed_point(mx.cumsum(fixed_point_cycles(cycles), axis=-1))
    approx = mx.cumsum(cycles, axis=-1)
    return exact + (approx - mx.stop_gradient(approx))


def fixed_point_cycles(cycles: mx.array) -> mx.array:
    """Phase increments in cycles -> uint32 fixed point (1 cycle = 2**32), wrapped into [0, 1) first."""
    return (mx.remainder(cycles, 1.0) * 2.0**32).astype(mx.uint32)


def cycles_from_fixed_point(accumulated: mx.array) -> mx.array:
    """uint32 fixed-point phase -> float32 cycles in [0, 1) (the top 24 bits, all a float32 holds there)."""
    return (accumulated >> 8).astype(mx.float32) * 2.0**-24


def remove_above_nyquist(f0_hz: mx.array, harmonic_distribution: mx.array, sample_rate: int) -> mx.array:
    """Zero every harmonic k*f0 that reaches Nyquist in this frame or a neighbouring one, then renormalise.

    Checking the neighbours too means the linearly interpolated amplitude is already zero wherever the interpolated
    frequency can cross Nyquist, so nothing aliases between frames either.

    f0_hz: (B, T); harmonic_distribution: (B, T, K) non-negative. Returns (B, T, K) summing to 1 over the audible
    harmonics (all zeros where none is audible).
    """
    f0_max = f0_hz
    if f0_hz.shape[1] > 1:
        f0_max = mx.maximum(f0_max, mx.concatenate([f0_hz[:, 1:], f0_hz[:, -1:]], axis=1))
        f0_max = mx.maximum(f0_max, mx.concatenate([f0_hz[:, :1], f0_hz[:, :-1]], axis=1))
    n_harmonics = harmonic_distribution.shape[-1]
    harmonic_hz = f0_max[..., None] * mx.arange(1, n_harmonics + 1, dtype=mx.float32)
    audible = harmonic_hz < sample_rate / 2
    distribution = mx.where(audible, harmonic_distribution, 0.0)
    return distribution / mx.maximum(mx.sum(distribution, axis=-1, keepdims=True), 1e-7)


def audible_harmonics(min_f0_hz: float, sample_rate: int, n_harmonics: int) -> int:
    """How many of harmonics 1..n_harmonics can be below Nyquist when f0 never goes below `min_f0_hz`."""
    return int(min(n_harmonics, max(1, math.ceil(sample_rate / 2 / max(min_f0_hz, 1e-3)))))


def harmonic_synth(
    f0_hz: mx.array,
    amplitude: mx.array,
    harmonic_distribution: mx.array,
    n_samples: int,
    sample_rate: int,
    initial_phase: mx.array | None = None,
    max_harmonics: int | None = None,
) -> mx.array:
    """Additive synthesis of K harmonics of a time-varying fundamental.

    f0_hz: (B, T) fundamental in Hz at frame rate.
    amplitude: (B, T) overall linear amplitude (peak of the summed partials when one harmonic is on).
    harmonic_distribution: (B, T, K) non-negative weights of harmonics 1..K; renormalised to sum to 1 over the
        harmonics below Nyquist (see `remove_above_nyquist`).
    initial_phase: (B,) phase of the fundamental in cycles before the first sample (to continue a previous block);
        None is 0.
    max_harmonics: oscillate only harmonics 1..max_harmonics. The result is unchanged (values and gradients) when
        the others are at or above Nyquist in every frame, i.e. max_harmonics >= `audible_harmonics(min f0)`;
        with a high instrument most of the (B, n_samples, K) oscillator work is saved.
    Returns (B, n_samples): sum_k amplitude * dist_k * sin(2*pi*k*phase), phase = initial_phase + running sum of
    f0 / sample_rate (in cycles, accumulated with `wrapped_cumsum`).
    """
    harmonic_amplitudes = amplitude[..., None] * remove_above_nyquist(f0_hz, harmonic_distribution, sample_rate)
    harmonic_amplitudes = harmonic_amplitudes[..., :max_harmonics]
    f0_audio = upsample_frames(f0_hz[..., None], n_samples)[..., 0]
    phase = wrapped_cumsum(f0_audio / sample_rate)  # (B, N) cycles in [0, 1)
    if initial_phase is not None:
        phase = mx.remainder(phase + initial_phase[:, None], 1.0)
    return sum_of_harmonics(phase, harmonic_amplitudes)


def sum_of_harmonics(phase: mx.array, amplitudes: mx.array) -> mx.array:
    """sum_k a_k[n] sin(2*pi*k*phase[n]) with the (B, T, K) frame amplitudes linearly interpolated to audio rate.

    phase: (B, N) cycles; amplitudes: (B, T, K) of harmonics 1..K at frame rate. Returns (B, N).
    With a whole hop (N = (T - 1) * hop) the work is done segment by segment (see `harmonic_bank`) and nothing of
    shape (B, N, K) is ever built; otherwise the amplitudes are first upsampled to one segment per sample.
    """
    batch, n_samples = phase.shape
    n_frames = amplitudes.shape[1]
    if n_frames > 1 and n_samples % (n_frames - 1) == 0:
        segments = phase.reshape(batch, n_frames - 1, n_samples // (n_frames - 1))
        return harmonic_bank(segments, amplitudes[:, :-1], amplitudes[:, 1:]).reshape(batch, n_samples)
    per_sample = upsample_frames(amplitudes, n_samples)
    return harmonic_bank(phase[..., None], per_sample, per_sample).reshape(batch, n_samples)


def _clenshaw(cos_theta2: mx.array, start: mx.array, step: mx.array, weight: mx.array, scale_by_k: bool):
    """Clenshaw's recurrence b_k = c_k + 2 cos(theta) b_{k+1} - b_{k+2}, k = K..1, for coefficients
    c_k[n] = (k if scale_by_k else 1) * (start_k + weight[n] * step_k). Returns (b_1, b_2), each (B, S, hop):
    sum_k c_k sin(k theta) = sin(theta) b_1 and sum_k c_k cos(k theta) = cos(theta) b_1 - b_2."""
    b1 = mx.zeros_like(cos_theta2)
    b2 = b1
    for k in range(start.shape[-1], 0, -1):
        coefficient = start[..., k - 1 : k] + weight * step[..., k - 1 : k]
        if scale_by_k:
            coefficient = k * coefficient
        b1, b2 = coefficient + cos_theta2 * b1 - b2, b1
    return b1, b2


@mx.custom_function
def harmonic_bank(phase: mx.array, start: mx.array, end: mx.array) -> mx.array:
    """Oscillator bank over segments: sum_k a_k[n] sin(2*pi*k*phase[n]), a_k[n] = start_k + (n / hop)(end_k - start_k).

    phase: (B, S, hop) cycles; start, end: (B, S, K) amplitudes of harmonics 1..K at the segment's first sample and
    one hop after its last. Returns (B, S, hop).
    Only sin and cos of the fundamental are computed; the harmonics come from Clenshaw's recurrence on the
    Chebyshev polynomials (sin(k theta) = sin(theta) U_{k-1}(cos theta)), a few multiply-adds per harmonic and
    sample instead of a sine, and nothing of size (B, S, hop, K) is stored: the backward pass regenerates
    sin(k theta) with the same recurrence. Float32 error: ~1e-7 of the amplitude at k = 1 growing to ~2e-4 at
    k = 100 (measured against float64), below what a 16-bit WAV resolves. On the CPU the compiled kernel of
    csrc/harmonic_bank.cpp runs the same recurrence with each segment's samples in registers.
    """
    theta = (2.0 * math.pi) * phase
    native = kernels.cpu_kernels(phase, start, end)
    if native is not None:
        return native.harmonic_bank(mx.sin(theta), mx.cos(theta), start, end)
    b1, _ = _clenshaw(2.0 * mx.cos(theta), start, end - start, interpolation_weights(phase.shape[-1]), scale_by_k=False)
    return mx.sin(theta) * b1


@harmonic_bank.vjp
def _harmonic_bank_vjp(primals, cotangent, output):
    phase, start, end = primals
    theta = (2.0 * math.pi) * phase
    sin_theta, cos_theta = mx.sin(theta), mx.cos(theta)
    native = kernels.cpu_kernels(cotangent, phase, start, end)
    if native is not None:  # the phase gradient is only computed when something needs it (lazy graph)
        grad_start, grad_end = native.harmonic_bank_amplitude_grads(cotangent, sin_theta, cos_theta, start.shape[-1])
        return native.harmonic_bank_phase_grad(cotangent, cos_theta, start, end), grad_start, grad_end
    cos_theta2 = 2.0 * cos_theta
    weight = interpolation_weights(phase.shape[-1])
    to_end = cotangent * weight
    to_start = cotangent - to_end
    grad_start, grad_end = [], []
    previous, current = mx.zeros_like(sin_theta), sin_theta  # sin(0 theta), sin(1 theta)
    for _ in range(start.shape[-1]):
        grad_start.append(mx.sum(to_start * current, axis=-1))
        grad_end.append(mx.sum(to_end * current, axis=-1))
        previous, current = current, cos_theta2 * current - previous
    # d/dphase: 2 pi sum_k k a_k cos(k theta); only evaluated when something needs it (lazy graph)
    b1, b2 = _clenshaw(cos_theta2, start, end - start, weight, scale_by_k=True)
    grad_phase = cotangent * (2.0 * math.pi) * (0.5 * cos_theta2 * b1 - b2)
    return grad_phase, mx.stack(grad_start, axis=-1), mx.stack(grad_end, axis=-1)


def hann_window(n: int) -> mx.array:
    """Periodic Hann window of n samples (w[n/2] = 1; shifted copies at n/2 sum to 1)."""
    return 0.5 - 0.5 * mx.cos(2.0 * math.pi * mx.arange(n, dtype=mx.float32) / n)


def noise_impulse_responses(magnitudes: mx.array) -> mx.array:
    """Linear-phase FIR filters designed by frequency sampling.

    magnitudes: (..., F) linear gains of F bands evenly spaced from 0 Hz to Nyquist.
    Returns (..., 2 * (F - 1)) impulse responses: the zero-phase inverse FFT, centred (delay F - 1 samples) and
    Hann-windowed. All-ones magnitudes give a unit impulse.
    """
    n_bands = magnitudes.shape[-1]
    ir_size = 2 * (n_bands - 1)
    zero_phase = mx.fft.irfft(magnitudes.astype(mx.complex64), n=ir_size, axis=-1)
    centred = mx.concatenate([zero_phase[..., ir_size // 2 :], zero_phase[..., : ir_size // 2]], axis=-1)
    return centred * hann_window(ir_size)


def overlap_add(frames: mx.array, hop: int) -> mx.array:
    """Sum frames placed every `hop` samples.

    frames: (B, T, L). Returns (B, (T - 1) * hop + L).
    """
    batch, n_frames, length = frames.shape
    n_pieces = -(-length // hop)
    frames = mx.pad(frames, [(0, 0), (0, 0), (0, n_pieces * hop - length)])
    pieces = frames.reshape(batch, n_frames, n_pieces, hop)
    out = mx.zeros((batch, n_frames + n_pieces - 1, hop), dtype=frames.dtype)
    for i in range(n_pieces):
        out = out + mx.pad(pieces[:, :, i], [(0, 0), (i, n_pieces - 1 - i), (0, 0)])
    return out.reshape(batch, -1)[:, : (n_frames - 1) * hop + length]


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def filter_noise_frames(frames: mx.array, impulse_responses: mx.array) -> mx.array:
    """Each frame of white noise Hann-windowed and convolved with its filter (FFT): filtered_noise's frames.

    frames: (..., 2 hop) noise centred on the frame positions; impulse_responses: (..., L). Returns
    (..., 2 hop + L - 1), to be overlap-added `hop` apart (a stream adds them one frame at a time).
    """
    length = frames.shape[-1] + impulse_responses.shape[-1] - 1
    n_fft = _next_pow2(length)
    windowed = frames * hann_window(frames.shape[-1])
    spectrum = mx.fft.rfft(windowed, n=n_fft, axis=-1) * mx.fft.rfft(impulse_responses, n=n_fft, axis=-1)
    return mx.fft.irfft(spectrum, n=n_fft, axis=-1)[..., :length]


def filtered_noise(magnitudes: mx.array, n_samples: int, key: mx.array | None = None,
                   rows: tuple[int, int] | None = None, noise: mx.array | None = None) -> mx.array:
    """White noise shaped by a time-varying linear-phase FIR filter.

    magnitudes: (B, T, F) linear gains of F bands evenly spaced from 0 Hz to Nyquist, one filter per frame.
    key: optional PRNG key; the same key gives the same noise. Without it the global MLX random state is used.
    rows: (first, total): use rows first..first+B of the noise drawn for a batch of `total` (a shard of a larger
      batch then gets the noise its examples get in the whole batch: data-parallel training).
    noise: (B, (T + 1) * hop) white noise to use instead of drawing any, hop = ceil(n_samples / (T - 1)); its sample
      i is the one at signal sample i - hop (a streamed render reads a fixed table, `mlx_ddsp.stream`).
    Returns (B, n_samples). Uniform noise in [-1, 1] is cut into Hann-windowed frames of 2 * hop samples centred on
    the frame positions (the windows sum to one), each frame is convolved with its filter (FFT), and the results
    are overlap-added with the filters' group delay removed. All-ones magnitudes return the white noise itself.
    """
    if magnitudes.shape[1] == 1:  # one filter for the whole signal: hold it at both ends
        magnitudes = mx.concatenate([magnitudes, magnitudes], axis=1)
    batch, n_frames, _ = magnitudes.shape
    hop = -(-n_samples // (n_frames - 1))
    impulse_responses = noise_impulse_responses(magnitudes)  # (B, T, L)
    ir_size = impulse_responses.shape[-1]
    if noise is None:
        first, total = rows or (0, batch)
        noise = mx.random.uniform(-1.0, 1.0, (total, (n_frames + 1) * hop), key=key)
        if total != batch:
            noise = noise[first : first + batch]
    blocks = noise.reshape(batch, n_frames + 1, hop)
    frames = mx.concatenate([blocks[:, :-1], blocks[:, 1:]], axis=-1)  # (B, T, 2 hop)
    audio = overlap_add(filter_noise_frames(frames, impulse_responses), hop)
    start = hop + ir_size // 2  # frame t's centre sits at padded sample t*hop + hop, delayed by ir_size / 2
    return audio[:, start : start + n_samples]


def fft_convolve(audio: mx.array, impulse_response: mx.array) -> mx.array:
    """Causal linear convolution via FFT, cropped to the input length.

    audio: (B, N); impulse_response: (B, L) or (L,) (shared). Returns (B, N): y[n] = sum_m h[m] x[n - m].
    """
    if impulse_response.ndim == 1:
        impulse_response = impulse_response[None]
    n_samples = audio.shape[-1]
    n_fft = _next_pow2(n_samples + impulse_response.shape[-1] - 1)
    spectrum = mx.fft.rfft(audio, n=n_fft, axis=-1) * mx.fft.rfft(impulse_response, n=n_fft, axis=-1)
    return mx.fft.irfft(spectrum, n=n_fft, axis=-1)[..., :n_samples]


def reverb(audio: mx.array, impulse_response: mx.array) -> mx.array:
    """Dry signal plus its convolution with a reverb impulse response whose first tap is forced to zero.

    audio: (B, N); impulse_response: (B, L) or (L,). Returns (B, N) = audio + fft_convolve(audio, ir[1:] delayed).
    The first tap is the dry path's job, so a learned IR cannot double it.
    """
    first_tap_zero = mx.concatenate(
        [mx.zeros_like(impulse_response[..., :1]), impulse_response[..., 1:]], axis=-1
    )
    return audio + fft_convolve(audio, first_tap_zero)
