"""The CPU fast paths of mlx_ddsp.fastmath against float64 numpy and MLX's own layers, values and gradients."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlx_ddsp import fastmath

REFERENCES = {"sigmoid": lambda v: 1 / (1 + np.exp(-v)), "tanh": np.tanh}


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_values_and_gradients_match_float64(name):
    x = mx.concatenate([mx.random.uniform(-30.0, 30.0, (20000,), key=mx.random.key(0)),
                        mx.random.uniform(-3.0, 3.0, (20000,), key=mx.random.key(1))])
    assert x.size >= fastmath.MIN_SIZE  # the polynomial path
    x64 = np.array(x, dtype=np.float64)
    fn, reference = getattr(fastmath, name), REFERENCES[name]
    np.testing.assert_allclose(np.array(fn(x), np.float64), reference(x64), atol=4e-6)
    h = 1e-6
    slope = (reference(x64 + h) - reference(x64 - h)) / (2 * h)
    np.testing.assert_allclose(np.array(mx.grad(lambda v: mx.sum(fn(v)))(x)), slope, atol=4e-6)


def test_extremes_and_nan():
    x = mx.concatenate([mx.array([-1e4, -100.0, 0.0, 100.0, 1e4, np.inf, -np.inf, np.nan]),
                        mx.zeros(fastmath.MIN_SIZE)])  # large enough for the polynomial path
    s, t = np.array(fastmath.sigmoid(x))[:8], np.array(fastmath.tanh(x))[:8]
    np.testing.assert_allclose(s[:7], [0, 0, 0.5, 1, 1, 1, 0], atol=1e-10)
    np.testing.assert_allclose(t[:7], [-1, -1, 0, 1, 1, 1, -1], atol=1e-6)
    assert np.isnan(s[7]) and np.isnan(t[7])


@pytest.mark.parametrize("path,width", [("kernel", 128), ("kernel", 100), ("mlx ops", 128)])
def test_layer_norm_leaky_relu_matches_mlx_layers(path, width, cpu_path):
    """Both CPU paths: csrc/layer_norm.cpp (a width that is not a whole number of SIMD registers too), MLX ops."""
    cpu_path(path)
    norm = nn.LayerNorm(width)
    norm.weight = mx.random.uniform(0.5, 1.5, (width,), key=mx.random.key(1))
    norm.bias = mx.random.normal((width,), key=mx.random.key(2)) * 0.3
    x = mx.random.normal((4, 200, width), key=mx.random.key(3)) * 3.0 + 1.0
    weights = mx.random.normal(x.shape, key=mx.random.key(4))

    def loss_reference(x, w, b):
        return mx.sum(weights * nn.leaky_relu((x - mx.mean(x, -1, keepdims=True))
                                              * mx.rsqrt(mx.var(x, -1, keepdims=True) + norm.eps) * w + b, 0.2))

    def loss_fast(x, w, b):
        return mx.sum(weights * fastmath.layer_norm_leaky_relu(x, w, b, norm.eps, 0.2))

    args = (x, norm.weight, norm.bias)
    np.testing.assert_allclose(np.array(fastmath.layer_norm_leaky_relu(*args, norm.eps, 0.2)),
                               np.array(nn.leaky_relu(norm(x), 0.2)), atol=2e-5)
    np.testing.assert_allclose(float(loss_fast(*args)), float(loss_reference(*args)), rtol=1e-5)
    for got, want in zip(mx.grad(loss_fast, argnums=(0, 1, 2))(*args), mx.grad(loss_reference, argnums=(0, 1, 2))(*args)):
        np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-4, atol=1e-4)
