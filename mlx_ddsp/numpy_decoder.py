"""The decoder's one-frame step in numpy: what the streaming engine runs per frame when MLX runs on the CPU.

    step = NumpyDecoder(model)                       # copies the decoder's weights once
    controls, state = step(f0_hz, loudness_db, state)   # one frame: floats in, (H,) state in and out

At batch 1 and one frame the decoder is a dozen vector-matrix products and a few dozen small elementwise ops. On the
CPU, MLX runs each product through a general matrix multiply and each op through its scheduler: measured on the
2-core x86 machine, a (1, 1024) x (1024, 1536) product took 0.36 ms in MLX and 0.09 ms in numpy, and the whole
compiled decoder step 1.4-3.6 ms, more than half of a 5.3 ms block. This computes the same equations as
`models.RnnFcDecoder` and `DDSP.decode` (Magenta's RnnFcDecoder: an MLP per input, a GRU or minGRU, an MLP, a dense
layer, the synth's exp_sigmoid) in float32 numpy, and tests/test_stream.py holds it to the MLX decoder. On a GPU
the streamer uses the MLX step instead.
"""

from __future__ import annotations

import math

import numpy as np

from mlx_ddsp.models import DDSP, F0_RANGE_MIDI, LOUDNESS_RANGE_DB, GRU


def _array(x) -> np.ndarray:
    return np.array(x, dtype=np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class NumpyDecoder:
    """`model.decode` for one frame of one signal, in numpy (see the module docstring)."""

    def __init__(self, model: DDSP):
        if model.use_encoder:
            raise ValueError("NumpyDecoder decodes f0 and loudness only (this model has an encoder)")
        decoder = model.decoder
        self.input_stacks = [self._mlp(stack) for stack in decoder.input_stacks]
        self.output_stack = self._mlp(decoder.output_stack)
        self.dense = (_array(decoder.dense_out.weight).T.copy(), _array(decoder.dense_out.bias))
        rnn = decoder.gru
        self.hidden_size = rnn.hidden_size
        self.is_gru = isinstance(rnn, GRU)
        if self.is_gru:
            bias = _array(rnn.b) if rnn.b is not None else np.zeros(3 * rnn.hidden_size, np.float32)
            bhn = _array(rnn.bhn) if rnn.bhn is not None else np.zeros(rnn.hidden_size, np.float32)
            self.rnn = (_array(rnn.Wx).T.copy(), bias, _array(rnn.Wh).T.copy(), bhn)
        else:
            self.rnn = (_array(rnn.projection.weight).T.copy(), _array(rnn.projection.bias))
        self.n_harmonics, self.n_noise_bands, self.noise_bias = model.n_harmonics, model.n_noise_bands, model.noise_bias

    @staticmethod
    def _mlp(stack) -> list[tuple]:
        return [(_array(linear.weight).T.copy(), _array(linear.bias), _array(norm.weight), _array(norm.bias),
                 float(norm.eps)) for linear, norm in zip(stack.linears, stack.norms)]

    @staticmethod
    def _run_mlp(layers: list[tuple], x: np.ndarray) -> np.ndarray:
        """Dense -> LayerNorm -> leaky ReLU(0.2), per layer (models.MLP)."""
        for weight, bias, gain, shift, eps in layers:
            y = x @ weight + bias
            centred = y - y.mean()
            y = centred / np.sqrt(np.mean(centred * centred) + eps) * gain + shift
            x = np.maximum(y, 0.2 * y)
        return x

    def _recurrent(self, x: np.ndarray, hidden: np.ndarray) -> np.ndarray:
        """One step of the GRU (mlx.nn.GRU's equations) or the minGRU."""
        if self.is_gru:
            wx, bias, wh, bhn = self.rnn
            size = self.hidden_size
            projected = x @ wx + bias
            recurrent = hidden @ wh
            r = _sigmoid(projected[:size] + recurrent[:size])
            z = _sigmoid(projected[size : 2 * size] + recurrent[size : 2 * size])
            n = np.tanh(projected[2 * size :] + r * (bhn + recurrent[2 * size :]))
            return n + z * (hidden - n)
        weight, bias = self.rnn
        gate, candidate = np.split(x @ weight + bias, 2)
        keep = _sigmoid(-gate)
        g = np.where(candidate >= 0, candidate + 0.5, _sigmoid(candidate))
        return keep * hidden + (1.0 - keep) * g

    def __call__(self, f0_hz: float, loudness_db: float, state: np.ndarray) -> tuple[dict, np.ndarray]:
        """One frame: f0 in Hz and loudness in dB (already at the decoder's frame) and the recurrent state (H,).
        Returns the synth controls {"amplitude": (1,), "harmonic_distribution": (K,), "noise_magnitudes": (F,)}
        (those the synth has) and the new state (H,)."""
        midi = 12.0 * (math.log2(max(f0_hz, 1e-5)) - math.log2(440.0)) + 69.0
        inputs = [np.array([midi / F0_RANGE_MIDI], np.float32),
                  np.array([loudness_db / LOUDNESS_RANGE_DB + 1.0], np.float32)]
        stacks = [self._run_mlp(layers, x) for layers, x in zip(self.input_stacks, inputs)]
        state = self._recurrent(np.concatenate(stacks), state).astype(np.float32)
        raw = self._run_mlp(self.output_stack, np.concatenate(stacks + [state])) @ self.dense[0] + self.dense[1]
        controls = {}
        if self.n_harmonics:
            controls["amplitude"] = _exp_sigmoid(raw[:1])
            controls["harmonic_distribution"] = _exp_sigmoid(raw[1 : 1 + self.n_harmonics])
        if self.n_noise_bands:
            controls["noise_magnitudes"] = _exp_sigmoid(raw[-self.n_noise_bands :] + self.noise_bias)
        return controls, state


def _exp_sigmoid(x: np.ndarray) -> np.ndarray:
    """synth.exp_sigmoid with its defaults: 2 * sigmoid(x) ** ln(10) + 1e-7."""
    return (2.0 * _sigmoid(x) ** math.log(10.0) + 1e-7).astype(np.float32)
