"""The DDSP autoencoder's networks (Magenta's RnnFcDecoder, a fast GRU, minGRU, the MFCC encoder) and the `DDSP`
module wiring them to the synth.

    model = DDSP(cfg.model, cfg.synth, sample_rate=16000, feature_frame_rate=250)
    out = model(f0_hz, loudness_db, n_samples)     # f0_hz, loudness_db: (B, T) at the feature frame rate
    out["audio"]                                    # (B, n_samples)

The decoder may run at a lower frame rate than the features (`model.frame_rate`, e.g. 50 frames/s as in DDSP-VST):
its inputs are taken every `stride` feature frames and its controls are upsampled to audio rate by the synth.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlx_ddsp import fastmath, kernels
from mlx_ddsp.config import Config, ModelConfig, SynthConfig
from mlx_ddsp.features import frame_hop, nearest_fft_size
from mlx_ddsp.mfcc import mfcc
from mlx_ddsp.rooms import ParametricRoom
from mlx_ddsp.synth import (audible_harmonics, exp_sigmoid, filtered_noise, harmonic_synth, hz_to_midi,
                            resample_frames, reverb, upsample_frames, wrapped_cumsum)

F0_RANGE_MIDI = 127.0  # f0 input scaling: MIDI note / 127, as in Magenta
LOUDNESS_RANGE_DB = 80.0  # loudness input scaling: dB / 80 + 1, as in Magenta (the loudness floor is -80 dB)
N_MFCC = 30  # encoder input: Magenta's 30 MFCCs
RENDER_NOISE_SEED = 1234  # fixed noise for validation, renders, eval and resynth (training RNG untouched)


def scale_f0(f0_hz: mx.array) -> mx.array:
    """(B, T) Hz -> (B, T, 1) MIDI / 127, about [0, 1] for musical pitches."""
    return (hz_to_midi(f0_hz) / F0_RANGE_MIDI)[..., None]


def scale_loudness(loudness_db: mx.array) -> mx.array:
    """(B, T) loudness in dB (A-weighted or power, floor -80) -> (B, T, 1) dB / 80 + 1, about [0, 1]."""
    return (loudness_db / LOUDNESS_RANGE_DB + 1.0)[..., None]


class MLP(nn.Module):
    """`n_layers` x (Dense -> LayerNorm -> leaky ReLU(0.2)), Magenta's fc_stack."""

    def __init__(self, input_size: int, hidden_size: int, n_layers: int):
        super().__init__()
        sizes = [input_size] + [hidden_size] * n_layers
        self.linears = [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        self.norms = [nn.LayerNorm(hidden_size) for _ in range(n_layers)]

    def __call__(self, x: mx.array) -> mx.array:
        for linear, norm in zip(self.linears, self.norms):
            x = fastmath.layer_norm_leaky_relu(linear(x), norm.weight, norm.bias, norm.eps, 0.2)
        return x


def _gru_gates(pre: mx.array, x_n: mx.array):
    """GRU gates from pre = [x_r + h Wr, x_z + h Wz, bhn + h Wn] (..., 3H) and the candidate's input projection
    x_n (..., H). Returns r, z, hn = bhn + h Wn, n."""
    size = x_n.shape[-1]
    r, z = mx.split(fastmath.sigmoid(pre[..., : 2 * size]), 2, axis=-1)
    hn = pre[..., 2 * size :]
    n = fastmath.tanh(x_n + r * hn)
    return r, z, hn, n


def _state_offsets(x: mx.array, bhn: mx.array) -> mx.array:
    """(B, T, 3H): what h @ Wh.T is added to in `_gru_gates`' pre (the gates' inputs and the candidate's bias)."""
    x_rz = x[..., : 2 * bhn.shape[0]]
    return mx.concatenate([x_rz, mx.broadcast_to(bhn, x_rz.shape[:-1] + bhn.shape)], axis=-1)


@mx.custom_function
def gru_recurrence(x: mx.array, Wh: mx.array, bhn: mx.array, h0: mx.array) -> tuple[mx.array, mx.array]:
    """The sequential part of a GRU, with a hand-written backward pass.

    x: (B, T, 3H) input projections [x_r, x_z, x_n] (biases included); Wh: (3H, H) recurrent weights; bhn: (H,)
    recurrent bias of the candidate; h0: (B, H) initial state. Returns the states h_1..h_T, (B, T, H), with
    h_t = (1 - z) * n + z * h_{t-1} (mlx.nn.GRU's equations), and the gates' pre-activations (B, T, 3H) that
    `_gru_gates` takes, kept for the backward pass.

    On the CPU the frame loop runs in a compiled kernel (`kernels.cpu_kernels`), except for a single frame (a
    stream's step: the kernel's set-up, transposing and packing Wh, took 4.9 ms on one core against 0.2 ms for the
    frame in MLX ops); elsewhere, or without it, each
    frame is one fused multiply-add (`mx.addmm`) and two elementwise kernels. Autodiff through that loop would add
    T outer products into dWh, one (3H, H) matrix per frame; the backward pass here keeps only the (B, H)
    recursion sequential and computes dWh with one matmul over all frames.
    """
    native = kernels.cpu_kernels(x, Wh, bhn, h0) if x.shape[1] > 1 else None  # one frame: its set-up costs more
    if native is not None:
        return tuple(native.gru_forward(x, bhn, Wh, h0))
    size = h0.shape[-1]
    Wh_T = Wh.T
    hidden, states, pres = h0, [], []
    for offset_t, x_n_t in zip(_frames(_state_offsets(x, bhn)), _frames(x[..., 2 * size :])):
        pres.append(mx.addmm(offset_t, hidden, Wh_T))
        _, z, _, n = _gru_gates(pres[-1], x_n_t)
        hidden = n + z * (hidden - n)
        states.append(hidden)
    return mx.stack(states, axis=1), mx.stack(pres, axis=1)


@gru_recurrence.vjp
def _gru_recurrence_vjp(primals, cotangents, outputs):
    x, Wh, bhn, h0 = primals
    states, pre = outputs
    size = h0.shape[-1]
    previous = _previous_states(h0, states)
    native = kernels.cpu_kernels(pre, x, previous, cotangents[0], Wh)
    if native is not None:
        d_pre, d_x_n, d_h0 = native.gru_backward(pre, x, previous, cotangents[0], Wh)
    else:
        d_pre, d_x_n, d_h0 = _gru_backward_loop(pre, x[..., 2 * size :], previous, cotangents[0], Wh)
    d_Wh = mx.reshape(d_pre, (-1, 3 * size)).T @ mx.reshape(previous, (-1, size))
    d_x = mx.concatenate([d_pre[..., : 2 * size], d_x_n], axis=-1)
    return d_x, d_Wh, mx.sum(d_pre[..., 2 * size :], axis=(0, 1)), d_h0


def _gru_backward_loop(pre: mx.array, x_n: mx.array, previous: mx.array, cotangent: mx.array, Wh: mx.array):
    """The backward recursion with MLX ops. pre: (B, T, 3H) as in `_gru_gates`; x_n, previous (h_{t-1}),
    cotangent: (B, T, H). Returns the gradients of pre (B, T, 3H), of x_n (B, T, H) and of h_0 (B, H)."""
    r, z, hn, n = _gru_gates(pre, x_n)
    # per-frame factors of the backward recursion, all (B, T, H)
    d_n = 1.0 - z
    d_z = (previous - n) * z * (1.0 - z)
    d_n_pre = 1.0 - n * n
    d_r = hn * r * (1.0 - r)
    factors = [_frames(a) for a in (d_n, d_z, d_n_pre, d_r, r, z)]
    cotangents = _frames(cotangent)
    d_hidden = mx.zeros_like(previous[:, 0])
    d_pres = [None] * len(cotangents)  # (B, 3H) gradients of the gates' pre-activations [r, z] and of h_n
    d_candidates = [None] * len(cotangents)  # (B, H) gradient of the candidate's pre-activation (= of x_n_t)
    for t in reversed(range(len(cotangents))):
        f_n, f_z, f_n_pre, f_r, r_t, z_t = (a[t] for a in factors)
        d_h = d_hidden + cotangents[t]
        d_pre_n = d_h * f_n * f_n_pre
        d_pre = mx.concatenate([d_pre_n * f_r, d_h * f_z, d_pre_n * r_t], axis=-1)
        d_pres[t], d_candidates[t] = d_pre, d_pre_n
        d_hidden = d_h * z_t + d_pre @ Wh
    return mx.stack(d_pres, axis=1), mx.stack(d_candidates, axis=1), d_hidden


class GRU(nn.GRU):
    """`mlx.nn.GRU` with the same parameters and equations, faster and stateful.

    The input projection of every frame is one matmul before the loop, the loop computes only h @ Wh, and the
    backward pass is `gru_recurrence`'s. The initial state may be given and the last state is returned, so a long
    signal can be decoded block by block with the same result as in one piece.
    """

    def __call__(self, x: mx.array, hidden: mx.array | None = None) -> tuple[mx.array, mx.array]:
        """x: (B, T, D); hidden: (B, H) or None (zeros). Returns the states (B, T, H) and the last state (B, H)."""
        size = self.hidden_size
        x = mx.addmm(self.b, x, self.Wx.T) if self.b is not None else x @ self.Wx.T
        if hidden is None:
            hidden = mx.zeros((x.shape[0], size), dtype=x.dtype)
        bhn = self.bhn if self.bhn is not None else mx.zeros((size,), dtype=x.dtype)
        states = gru_recurrence(x, self.Wh, bhn, hidden)[0]
        return states, states[:, -1]


def _log_g(x: mx.array) -> mx.array:
    """log of minGRU's positive activation g(x) = x + 0.5 for x >= 0, sigmoid(x) below."""
    return mx.where(x >= 0, mx.log(mx.maximum(x, 0.0) + 0.5), -nn.softplus(-x))


@mx.custom_function
def linear_recurrence(keep: mx.array, inputs: mx.array, h0: mx.array) -> mx.array:
    """h_t = keep_t * h_{t-1} + inputs_t, frame by frame, with a hand-written backward pass.

    keep, inputs: (B, T, H); h0: (B, H). Returns h_1..h_T, (B, T, H). The gradient runs the transposed recurrence
    lambda_t = G_t + keep_{t+1} lambda_{t+1} from the last frame back. On the CPU both run in a compiled kernel
    (`kernels.cpu_kernels`); otherwise each frame is one fused multiply-add on (B, H).
    """
    native = kernels.cpu_kernels(keep, inputs, h0)
    if native is not None:
        return native.linear_recurrence(keep, inputs, h0)
    hidden, states = h0, []
    for keep_t, input_t in zip(_frames(keep), _frames(inputs)):
        hidden = keep_t * hidden + input_t
        states.append(hidden)
    return mx.stack(states, axis=1)


@linear_recurrence.vjp
def _linear_recurrence_vjp(primals, cotangent, states):
    keep, _, h0 = primals
    native = kernels.cpu_kernels(keep, cotangent)
    if native is not None:
        d_inputs, carried = native.linear_recurrence_backward(keep, cotangent)
    else:
        keeps, cotangents = _frames(keep), _frames(cotangent)
        carried, d_inputs = mx.zeros_like(h0), [None] * len(keeps)
        for t in reversed(range(len(keeps))):
            d_inputs[t] = carried = cotangents[t] + carried
            carried = keeps[t] * carried
        d_inputs = mx.stack(d_inputs, axis=1)
    return d_inputs * _previous_states(h0, states), d_inputs, carried


def _frames(x: mx.array) -> list[mx.array]:
    """(B, T, H) -> T arrays (B, H)."""
    return [frame[:, 0] for frame in mx.split(x, x.shape[1], axis=1)]


def _previous_states(h0: mx.array, states: mx.array) -> mx.array:
    """h_{t-1} for every frame: (B, H) initial state and (B, T, H) states h_1..h_T -> (B, T, H)."""
    return mx.concatenate([h0[:, None], states[:, :-1]], axis=1)


class MinGRU(nn.Module):
    """minGRU (Feng et al. 2024, "Were RNNs All We Needed?"): a GRU whose gates see only the input, so the
    recurrence h_t = (1 - z_t) * h_{t-1} + z_t * g(x_t) is linear in h. On a GPU it is solved for all frames at
    once with a log-space scan (`mx.logcumsumexp`); on the CPU frame by frame in linear space (`linear_recurrence`:
    one multiply-add per frame, where the scan's exp/log and MLX's logcumsumexp backward cost ~10x more). Same
    interface as `GRU`: states (B, T, H) and the last state (B, H), which is positive and may be passed back in to
    continue a signal block by block.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.projection = nn.Linear(input_size, 2 * hidden_size)

    def __call__(self, x: mx.array, hidden: mx.array | None = None) -> tuple[mx.array, mx.array]:
        gate, candidate = mx.split(self.projection(x), 2, axis=-1)
        if mx.default_device() == mx.cpu:
            keep = fastmath.sigmoid(-gate)  # 1 - z
            g = mx.where(candidate >= 0, candidate + 0.5, fastmath.sigmoid(candidate))
            if hidden is None:
                hidden = mx.zeros((x.shape[0], self.hidden_size), dtype=x.dtype)
            states = linear_recurrence(keep, (1.0 - keep) * g, hidden)
            return states, states[:, -1]
        return self.log_space_scan(gate, candidate, hidden)

    @staticmethod
    def log_space_scan(gate: mx.array, candidate: mx.array, hidden: mx.array | None):
        """The same recurrence from the gate and candidate pre-activations (B, T, H), as in the paper."""
        log_keep = -nn.softplus(gate)  # log(1 - z)
        log_input = -nn.softplus(-gate) + _log_g(candidate)  # log(z * g(x))
        if hidden is not None:  # h_0 enters as a first input with nothing to keep before it
            log_keep = mx.concatenate([mx.zeros_like(log_keep[:, :1]), log_keep], axis=1)
            log_input = mx.concatenate([mx.log(mx.maximum(hidden, 1e-30))[:, None], log_input], axis=1)
        decay = mx.cumsum(log_keep, axis=1)  # log of the product of (1 - z) up to each frame
        states = mx.exp(decay + mx.logcumsumexp(log_input - decay, axis=1))
        if hidden is not None:
            states = states[:, 1:]
        return states, states[:, -1]


RECURRENT_LAYERS = {"gru": GRU, "mingru": MinGRU}


class RnnFcDecoder(nn.Module):
    """Magenta's RnnFcDecoder: (scaled f0, scaled loudness) -> one MLP each -> GRU -> MLP -> dense outputs.

    The recurrent layer is `model.recurrent`: "gru" (Magenta's) or "mingru" (parallel in time, see `MinGRU`).

    inputs: list of (B, T, size) arrays (sizes as `input_sizes`: 1 for f0 and loudness, z_dims for z).
    Returns (B, T, n_outputs) raw pre-activations and the GRU's last state (B, H).
    """

    def __init__(self, cfg: ModelConfig, input_sizes: list[int], n_outputs: int):
        super().__init__()
        n_inputs = len(input_sizes)
        self.input_stacks = [MLP(size, cfg.hidden_size, cfg.n_mlp_layers) for size in input_sizes]
        if cfg.recurrent not in RECURRENT_LAYERS:
            raise ValueError(f"model.recurrent must be one of {sorted(RECURRENT_LAYERS)}, not {cfg.recurrent!r}")
        self.gru = RECURRENT_LAYERS[cfg.recurrent](n_inputs * cfg.hidden_size, cfg.gru_size)
        self.output_stack = MLP(n_inputs * cfg.hidden_size + cfg.gru_size, cfg.hidden_size, cfg.n_mlp_layers)
        self.dense_out = nn.Linear(cfg.hidden_size, n_outputs)

    def __call__(self, inputs: list[mx.array], state: mx.array | None = None) -> tuple[mx.array, mx.array]:
        stacks = [stack(x) for stack, x in zip(self.input_stacks, inputs)]
        hidden, state = self.gru(mx.concatenate(stacks, axis=-1), state)
        x = self.output_stack(mx.concatenate(stacks + [hidden], axis=-1))
        return self.dense_out(x), state


class MfccEncoder(nn.Module):
    """Magenta's MfccTimeDistributedRnnEncoder: MFCCs (30 from 128 mels, 20-8000 Hz, a 64 ms FFT: 1024 points at
    16 kHz) -> LayerNorm -> recurrent layer -> dense -> z, computed at `model.z_frame_rate` and interpolated to the
    decoder's frames."""

    def __init__(self, cfg: ModelConfig, sample_rate: int):
        super().__init__()
        self.sample_rate = sample_rate
        self.hop = frame_hop(sample_rate, cfg.z_frame_rate)
        self.n_fft = nearest_fft_size(1024 * sample_rate / 16000, 2)
        self.norm = nn.LayerNorm(N_MFCC)
        self.rnn = RECURRENT_LAYERS[cfg.recurrent](N_MFCC, cfg.encoder_gru_size)
        self.dense = nn.Linear(cfg.encoder_gru_size, cfg.z_dims)

    def __call__(self, audio: mx.array, n_frames: int) -> mx.array:
        """audio: (B, N) -> z: (B, n_frames, z_dims), frames spanning the audio like the decoder's."""
        features = self.norm(mfcc(audio, self.sample_rate, self.hop, self.n_fft, n_mfcc=N_MFCC))
        hidden, _ = self.rnn(features)
        return resample_frames(self.dense(hidden), n_frames)


class DDSP(nn.Module):
    """Decoder -> synth controls -> harmonic + filtered-noise synthesis.

    cfg / synth_cfg: the recipe's `model` and `synth` sections. `model.frame_rate` must divide `feature_frame_rate`.
    """

    def __init__(self, cfg: ModelConfig, synth_cfg: SynthConfig, sample_rate: int, feature_frame_rate: int):
        super().__init__()
        if not (synth_cfg.harmonic or synth_cfg.noise):
            raise ValueError("the synth needs at least one of synth.harmonic and synth.noise")
        if cfg.frame_rate <= 0 or feature_frame_rate % cfg.frame_rate:
            raise ValueError(
                f"model.frame_rate={cfg.frame_rate} must divide features.frame_rate={feature_frame_rate}"
            )
        self.stride = feature_frame_rate // cfg.frame_rate
        self.sample_rate = sample_rate
        self.hop = frame_hop(sample_rate, feature_frame_rate)  # samples per feature frame
        self.noise_bias = cfg.noise_bias
        self.n_harmonics = synth_cfg.n_harmonics if synth_cfg.harmonic else 0
        self.n_noise_bands = synth_cfg.n_noise_bands if synth_cfg.noise else 0
        n_outputs = (1 + self.n_harmonics if self.n_harmonics else 0) + self.n_noise_bands
        self.decoder = RnnFcDecoder(cfg, [1, 1] + ([cfg.z_dims] if cfg.encoder else []), n_outputs)
        self.use_encoder, self.use_reverb = cfg.encoder, synth_cfg.reverb
        if cfg.encoder:
            self.encoder = MfccEncoder(cfg, sample_rate)
        if synth_cfg.reverb:
            n_taps = max(2, int(synth_cfg.reverb_seconds * sample_rate))
            if synth_cfg.reverb_model == "free":  # starts as (almost) no reverb: Magenta's N(0, 1e-6) initialisation
                self.reverb_ir = 1e-6 * mx.random.normal((n_taps,))
            elif synth_cfg.reverb_model == "parametric":
                self.room = ParametricRoom(n_taps, sample_rate, synth_cfg.room_rt60_s, synth_cfg.room_level_db,
                                           n_early=round(synth_cfg.room_early_ms * sample_rate / 1000),
                                           learn_noise=synth_cfg.room_learn_noise)
            else:
                raise ValueError(f"synth.reverb_model must be 'free' or 'parametric', not {synth_cfg.reverb_model!r}")

    def decoder_frames(self, n_feature_frames: int) -> int:
        """Number of decoder frames for `n_feature_frames` feature frames ((n - 1) must be a multiple of stride)."""
        if (n_feature_frames - 1) % self.stride:
            raise ValueError(
                f"{n_feature_frames} feature frames do not fall on the decoder's grid (stride {self.stride}): "
                "choose an example length that is a whole number of decoder frames"
            )
        return (n_feature_frames - 1) // self.stride + 1

    def controls(self, f0_hz: mx.array, loudness_db: mx.array, state: mx.array | None = None,
                 audio: mx.array | None = None, z: mx.array | None = None) -> dict:
        """Synth controls at the decoder frame rate from features at the feature frame rate (B, T).

        With an encoder, z (B, T', z_dims) at the decoder rate is taken as given or encoded from `audio` (B, N).
        """
        n_frames = self.decoder_frames(f0_hz.shape[1])
        if self.use_encoder and z is None:
            if audio is None:
                raise ValueError("a model with an encoder needs the audio (or z) as well as f0 and loudness")
            z = self.encoder(audio, n_frames)
        return self.decode(f0_hz[:, :: self.stride], loudness_db[:, :: self.stride], state, z)

    def decode(self, f0_hz: mx.array, loudness_db: mx.array, state: mx.array | None = None,
               z: mx.array | None = None) -> dict:
        """Synth controls from features already at the decoder frame rate.

        f0_hz, loudness_db: (B, T'); z: (B, T', z_dims) when the model has an encoder. Returns {"f0_hz": (B, T'),
        "amplitude": (B, T'), "harmonic_distribution": (B, T', K), "noise_magnitudes": (B, T', F), "state": (B, H)};
        the harmonic entries are absent when synth.harmonic is off, the noise entry when synth.noise is off.
        """
        inputs = [scale_f0(f0_hz), scale_loudness(loudness_db)] + ([z] if self.use_encoder else [])
        raw, state = self.decoder(inputs, state)
        out = {"f0_hz": f0_hz, "state": state}
        if self.n_harmonics:
            out["amplitude"] = exp_sigmoid(raw[..., 0])
            out["harmonic_distribution"] = exp_sigmoid(raw[..., 1 : 1 + self.n_harmonics])
        if self.n_noise_bands:
            out["noise_magnitudes"] = exp_sigmoid(raw[..., -self.n_noise_bands :] + self.noise_bias)
        return out

    def synthesize(self, controls: dict, n_samples: int, key: mx.array | None = None,
                   initial_phase: mx.array | None = None, max_harmonics: int | None = None,
                   noise_rows: tuple[int, int] | None = None, white_noise: mx.array | None = None) -> dict:
        """{"harmonic", "noise", "audio"}, each (B, n_samples), from `decode`'s controls (see `harmonic_synth` for
        initial_phase and max_harmonics, `filtered_noise` for key, noise_rows and its noise, here white_noise).
        "audio" is the dry sum; see `apply_reverb`."""
        batch = controls["f0_hz"].shape[0]
        silence = mx.zeros((batch, n_samples))
        harmonic = noise = silence
        if self.n_harmonics:
            harmonic = harmonic_synth(controls["f0_hz"], controls["amplitude"], controls["harmonic_distribution"],
                                      n_samples, self.sample_rate, initial_phase, max_harmonics)
        if self.n_noise_bands:
            noise = filtered_noise(controls["noise_magnitudes"], n_samples, key=key, rows=noise_rows,
                                   noise=white_noise)
        return {"harmonic": harmonic, "noise": noise, "audio": harmonic + noise}

    def __call__(
        self,
        f0_hz: mx.array,
        loudness_db: mx.array,
        n_samples: int,
        state: mx.array | None = None,
        key: mx.array | None = None,
        max_harmonics: int | None = None,
        audio: mx.array | None = None,
        z: mx.array | None = None,
        noise_rows: tuple[int, int] | None = None,
    ) -> dict:
        """Render audio. Returns the controls plus "audio", "harmonic" and "noise" (and "dry" with reverb), each
        (B, n_samples).

        key: PRNG key of the noise (None: the global random state). max_harmonics: see `harmonic_synth`.
        audio / z: the encoder's input, or z itself (models with `model.encoder` only). noise_rows: see
        `filtered_noise` (a shard of a data-parallel batch).
        """
        out = self.controls(f0_hz, loudness_db, state, audio, z)
        out.update(self.synthesize(out, n_samples, key, max_harmonics=max_harmonics, noise_rows=noise_rows))
        out.update(self.apply_reverb(out["audio"]))
        return out

    def room_impulse_response(self) -> mx.array | None:
        """(n_taps,) the learned room's impulse response at the model's rate, first tap 0 (every tap learned, or
        the parametric room's, `mlx_ddsp.rooms`); None without synth.reverb."""
        if not self.use_reverb:
            return None
        return self.room.impulse_response() if "room" in self else self.reverb_ir

    def apply_reverb(self, dry: mx.array) -> dict:
        """{"audio": wet} or, with synth.reverb, {"dry": dry, "audio": dry + dry convolved with the learned IR}.

        Only the IR's first n_samples taps can reach the output, so only they are used: the later taps then get an
        exact zero gradient. (Through the FFT they would get rounding noise, which Adam normalises into full-size
        steps: a random walk that fills an untrainable tail with noise and ruins long renders.)
        """
        ir = self.room_impulse_response()
        if ir is None:
            return {"audio": dry}
        return {"dry": dry, "audio": reverb(dry, ir[: dry.shape[-1]])}

    def max_harmonics(self, f0_hz: mx.array, buckets: int = 4) -> int | None:
        """The fewest harmonics that render `f0_hz` exactly, rounded up to K, K/2, K/4, ... (`buckets` sizes, so a
        compiled step is built for at most that many). None when the synth has no harmonic part."""
        if not self.n_harmonics:
            return None
        needed = audible_harmonics(mx.min(f0_hz).item(), self.sample_rate, self.n_harmonics)
        sizes = [-(-self.n_harmonics // 2**j) for j in range(buckets)]
        return min(size for size in sizes if size >= needed)


def build_model(cfg: Config) -> DDSP:
    """The DDSP model a recipe describes (random initialisation from the current MLX seed)."""
    return DDSP(cfg.model, cfg.synth, cfg.data.sample_rate, cfg.features.frame_rate)


def render_long(model: DDSP, f0_hz: mx.array, loudness_db: mx.array, n_samples: int, block_frames: int = 500,
                key: mx.array | None = None, audio: mx.array | None = None,
                z: mx.array | None = None) -> dict[str, np.ndarray]:
    """Render a signal of any length in blocks, with the GRU state and the oscillator phase carried across them.

    f0_hz, loudness_db: (B, T) features at the model's feature frame rate, frame t at sample t * hop (T = n_samples //
    hop + 1, as the feature extractors give). block_frames: decoder frames per block (bounds memory).
    audio: (B, n_samples), the encoder's input, or z: (B, z_dims), one latent held for the whole signal (models with
    an encoder only). Returns {"audio", "harmonic", "noise"} (and "dry" with reverb): numpy (B, n_samples). The
    harmonic part equals a one-piece render up to float rounding; the noise is drawn per block from `key`; the
    reverb is applied to the whole dry signal at the end.
    """
    key = mx.random.key(0) if key is None else key
    hop = model.hop * model.stride  # samples per decoder frame
    n_frames = -(-n_samples // hop) + 1  # decoder frames covering n_samples, the last one at or after the end
    positions = mx.array(np.minimum(np.arange(n_frames) * model.stride, f0_hz.shape[1] - 1))  # hold the last frame
    f0_hz, loudness_db = f0_hz[:, positions], loudness_db[:, positions]
    latent = None
    if model.use_encoder:
        if z is not None:
            latent = mx.broadcast_to(z[:, None], (z.shape[0], n_frames, z.shape[-1]))
        elif audio is not None:
            padded = mx.pad(audio, [(0, 0), (0, (n_frames - 1) * hop - audio.shape[1])])
            latent = model.encoder(padded, n_frames)
        else:
            raise ValueError("a model with an encoder needs the audio or z")
    controls, state = [], None
    for start in range(0, n_frames, block_frames):
        frames = slice(start, start + block_frames)
        block = model.decode(f0_hz[:, frames], loudness_db[:, frames], state,
                             None if latent is None else latent[:, frames])
        state = block.pop("state")
        mx.eval(block, state)
        controls.append(block)
    controls = {k: mx.concatenate([c[k] for c in controls], axis=1) for k in controls[0]}
    f0_audio = upsample_frames(f0_hz[..., None], (n_frames - 1) * hop)[..., 0]
    phase = wrapped_cumsum(f0_audio / model.sample_rate)  # (B, N) cycles, to start each block where the last ended
    parts = {"audio": [], "harmonic": [], "noise": []}
    starts = range(0, n_frames - 1, block_frames)
    for start, block_key in zip(starts, mx.random.split(key, len(starts))):
        end = min(start + block_frames, n_frames - 1)  # the block spans frames start..end, samples [start, end) * hop
        block = {k: v[:, start : end + 1] for k, v in controls.items()}
        initial_phase = phase[:, start * hop - 1] if start else None
        max_harmonics = model.max_harmonics(block["f0_hz"])
        out = model.synthesize(block, (end - start) * hop, block_key, initial_phase, max_harmonics)
        for k in parts:
            parts[k].append(np.array(out[k]))
    out = {k: np.concatenate(v, axis=1)[:, :n_samples] for k, v in parts.items()}
    out.update({k: np.array(v) for k, v in model.apply_reverb(mx.array(out["audio"])).items()})
    return out
