"""sigmoid, tanh and layer norm + leaky ReLU that are fast on MLX's CPU backend, with the built-ins on a GPU.

MLX's CPU backend evaluates `mx.exp`, `mx.sigmoid` and `mx.tanh` one element at a time through libm: about 14-17 ns
per float32 element measured on the project's x86 machine, against ~0.4 ns for a multiply-add. The minGRU's gates
(and the GRU's, where the C++ kernels of mlx_ddsp/csrc are not available) apply them to millions of elements per
training step. Here sigmoid is built from multiply-adds only, so `mx.compile`
fuses it with its neighbours into one loop: e^u = (e^(u/64))^64, the inner power a degree-6 Taylor polynomial
(|u / 64| <= 0.375 after clamping u to +-24, where the sigmoid is within 4e-11 of 0 or 1) raised to the 64th
power by six squarings. Measured: 4.5 ns per element on a (4, 1000, 1536) array (mx.sigmoid 19 ns), absolute error
< 2e-6 against float64 (mx.sigmoid 1e-7): invisible to a GRU gate. Gradients flow through the arithmetic (the
derivative of the approximation, equally close). NaN stays NaN. Other devices (Metal, CUDA) use the built-ins, and
so do arrays under MIN_SIZE elements: uncompiled (e.g. a batch-1 render's GRU steps), the polynomial's dozen
operations cost more to dispatch than libm costs to run.
"""

from __future__ import annotations

import functools

import mlx.core as mx
import mlx.nn as nn

from mlx_ddsp import kernels

CLAMP = 24.0  # sigmoid(-24) = 3.8e-11
MIN_SIZE = 2048  # a batch-4 training step's GRU gates, (4, 512) and up, are above; a batch-1 render's, (1, 1024), below
SQUARINGS = 6


def _exp_small(u: mx.array) -> mx.array:
    """e^u for |u| <= CLAMP: a Taylor polynomial of e^(u / 2^SQUARINGS), squared SQUARINGS times."""
    v = u * (1.0 / 2**SQUARINGS)
    power = 1.0 + v * (1.0 + v * (1 / 2 + v * (1 / 6 + v * (1 / 24 + v * (1 / 120 + v * (1 / 720))))))
    for _ in range(SQUARINGS):
        power = power * power
    return power


def sigmoid(x: mx.array) -> mx.array:
    """1 / (1 + e^-x)."""
    if x.size < MIN_SIZE or mx.default_device() != mx.cpu:
        return mx.sigmoid(x)
    return 1.0 / (1.0 + _exp_small(-mx.clip(x, -CLAMP, CLAMP)))


def tanh(x: mx.array) -> mx.array:
    """tanh(x) = 2 sigmoid(2x) - 1."""
    if x.size < MIN_SIZE or mx.default_device() != mx.cpu:
        return mx.tanh(x)
    return 2.0 * sigmoid(2.0 * x) - 1.0


@functools.lru_cache(maxsize=None)
def _layer_norm_leaky_relu(eps: float, slope: float):
    """The CPU function for one (eps, slope): (x, weight, bias) -> (out, normed, inv_std), hand-written backward."""

    @mx.custom_function
    def forward(x: mx.array, weight: mx.array, bias: mx.array):
        native = kernels.cpu_kernels(x, weight, bias)
        if native is not None:
            return tuple(native.layer_norm_leaky_relu(x, weight, bias, eps, slope))
        mean = mx.mean(x, axis=-1, keepdims=True)
        centred = x - mean
        inv_std = mx.rsqrt(mx.mean(mx.square(centred), axis=-1, keepdims=True) + eps)
        normed = centred * inv_std
        y = normed * weight + bias
        return mx.maximum(y, slope * y), normed, inv_std

    @forward.vjp
    def backward(primals, cotangents, outputs):
        weight = primals[1]
        out, normed, inv_std = outputs
        native = kernels.cpu_kernels(cotangents[0], out, normed, inv_std, weight)
        if native is not None:
            return tuple(native.layer_norm_leaky_relu_backward(cotangents[0], out, normed, inv_std, weight, slope))
        # leaky ReLU's slope from the sign of its output (mx.where ran ~10x slower than this on the CPU)
        d_y = cotangents[0] * ((1.0 + slope) / 2.0 + (1.0 - slope) / 2.0 * mx.sign(out))
        rows = d_y.reshape(-1, d_y.shape[-1])
        d_weight = mx.sum(rows * normed.reshape(rows.shape), axis=0)
        d_bias = mx.sum(rows, axis=0)
        d_normed = d_y * weight
        d_x = inv_std * (d_normed - mx.mean(d_normed, axis=-1, keepdims=True)
                         - normed * mx.mean(d_normed * normed, axis=-1, keepdims=True))
        return d_x, d_weight, d_bias

    return forward


def layer_norm_leaky_relu(x: mx.array, weight: mx.array, bias: mx.array, eps: float, slope: float) -> mx.array:
    """leaky_relu(layer_norm(x) * weight + bias) over the last axis, as `nn.LayerNorm` then `nn.leaky_relu`.

    x: (..., D); weight, bias: (D,). On the CPU one function with a hand-written backward pass, run by the compiled
    kernel of csrc/layer_norm.cpp where it is available (MLX's CPU layer norm takes several reductions and passes,
    its backward built from generic operations); elsewhere MLX's own kernels.
    """
    if mx.default_device() != mx.cpu:
        return nn.leaky_relu(mx.fast.layer_norm(x, weight, bias, eps), negative_slope=slope)
    return _layer_norm_leaky_relu(float(eps), float(slope))(x, weight, bias)[0]
