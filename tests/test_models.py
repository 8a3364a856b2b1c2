"""The decoder and the DDSP module: the fast GRU against mlx.nn.GRU, streaming state, toggles, gradients, checkpoints."""

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_ddsp import checkpoint
from mlx_ddsp.config import Config, ModelConfig, SynthConfig
from mlx_ddsp.losses import multiscale_spectral_loss
from mlx_ddsp.models import DDSP, GRU, MinGRU, linear_recurrence

SR, FRAME_RATE = 16000, 250


def tiny_config(**synth) -> tuple[ModelConfig, SynthConfig]:
    return (ModelConfig(hidden_size=16, n_mlp_layers=2, gru_size=12, frame_rate=50),
            SynthConfig(n_harmonics=8, n_noise_bands=5, **synth))


def inputs(batch=2, seconds=0.2):
    n_frames = int(seconds * FRAME_RATE) + 1
    t = np.linspace(0, 1, n_frames, dtype=np.float32)
    f0 = mx.array(np.stack([220 * 2 ** t, 330 + 20 * np.sin(9 * t)] * batch)[:batch])
    loudness = mx.array(np.stack([-30 + 10 * t, -50 + 20 * t] * batch)[:batch])
    return f0, loudness, int(seconds * SR)


@pytest.fixture(params=[("kernel", 3, 17, 5, 8), ("kernel", 5, 9, 7, 136), ("mlx ops", 3, 17, 5, 8)],
                ids=["kernel", "kernel-threads", "mlx-ops"])
def gru_pair(request, cpu_path):
    """(our GRU, mlx.nn.GRU with the same weights, x, h0). "kernel": the CPU loops of csrc/gru.cpp (136 units: more
    than one thread, a partial panel, a batch of 5 that is not a whole number of 4-row passes); "mlx ops": without."""
    path, batch, n_frames, n_inputs, units = request.param
    cpu_path(path)
    mx.random.seed(3)
    fast, ref = GRU(n_inputs, units), nn.GRU(n_inputs, units)
    ref.update(fast.parameters())
    x, h0 = mx.random.normal((batch, n_frames, n_inputs)), mx.random.normal((batch, units))
    return fast, ref, x, h0


def test_gru_matches_mlx_gru(gru_pair):
    fast, ref, x, h0 = gru_pair
    states, last = fast(x, h0)
    tolerance = 5e-6  # on the CPU the gates use fastmath's sigmoid and tanh (absolute error < 2e-6)
    np.testing.assert_allclose(np.array(states), np.array(ref(x, h0)), atol=tolerance)
    np.testing.assert_allclose(np.array(last), np.array(states[:, -1]), atol=0)
    np.testing.assert_allclose(np.array(fast(x)[0]), np.array(ref(x)), atol=tolerance)  # no initial state = zeros


def test_gru_gradients_match_autodiff_of_mlx_gru(gru_pair):
    """The hand-written backward pass against autodiff through mlx.nn.GRU's loop, for every parameter and input."""
    fast, ref, x, h0 = gru_pair
    weights = mx.random.normal(h0.shape[:1] + x.shape[1:2] + h0.shape[1:])

    def loss(module, out):
        return lambda x, h0: (out(module(x, h0)) * weights).sum()

    grads_fast = nn.value_and_grad(fast, loss(fast, lambda o: o[0]))(x, h0)[1]
    grads_ref = nn.value_and_grad(ref, loss(ref, lambda o: o))(x, h0)[1]
    for (name, a), (_, b) in zip(tree_flatten(grads_fast), tree_flatten(grads_ref)):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-5, err_msg=name)
    input_fast = mx.grad(loss(fast, lambda o: o[0]), argnums=(0, 1))(x, h0)
    input_ref = mx.grad(loss(ref, lambda o: o), argnums=(0, 1))(x, h0)
    for a, b in zip(input_fast, input_ref):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-5)


def test_gru_carried_state_equals_one_pass(gru_pair):
    fast, _, x, h0 = gru_pair
    whole, _ = fast(x, h0)
    first, state = fast(x[:, :5], h0)
    second, _ = fast(x[:, 5:], state)
    np.testing.assert_allclose(np.array(mx.concatenate([first, second], axis=1)), np.array(whole), atol=1e-6)


def test_mingru_scan_matches_the_sequential_recurrence():
    mx.random.seed(4)
    layer = MinGRU(5, 8)
    x, h0 = mx.random.normal((2, 300, 5)), mx.random.uniform(0.1, 1.0, (2, 8))
    gate, candidate = np.split(np.array(layer.projection(x)), 2, axis=-1)
    z = 1 / (1 + np.exp(-gate))
    g = np.where(candidate >= 0, candidate + 0.5, 1 / (1 + np.exp(-candidate)))
    h, expected = np.array(h0), []
    for t in range(300):
        h = (1 - z[:, t]) * h + z[:, t] * g[:, t]
        expected.append(h)
    expected = np.stack(expected, axis=1)
    states, last = layer(x, h0)
    np.testing.assert_allclose(np.array(states), expected, rtol=1e-4, atol=1e-5)
    first, state = layer(x[:, :100], h0)
    second, _ = layer(x[:, 100:], state)
    np.testing.assert_allclose(np.array(mx.concatenate([first, second], axis=1)), expected, rtol=1e-4, atol=1e-5)
    grads = mx.grad(lambda x: layer(x, h0)[0].sum())(x)
    assert np.isfinite(np.array(grads)).all() and mx.abs(grads).max().item() > 0
    gate, candidate = mx.split(layer.projection(x), 2, axis=-1)  # the GPU path: a log-space scan
    np.testing.assert_allclose(np.array(MinGRU.log_space_scan(gate, candidate, h0)[0]), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("path,units", [("kernel", 3), ("kernel", 70), ("mlx ops", 3)])
def test_linear_recurrence_gradients_match_autodiff_of_the_loop(path, units, cpu_path):
    """Both CPU paths (70 units: one full and one partial block of the kernel) against autodiff of a plain loop."""
    cpu_path(path)
    rng = np.random.default_rng(5)
    keep, inputs = (mx.array(rng.uniform(0, 1, (2, 40, units)).astype(np.float32)) for _ in range(2))
    h0 = mx.array(rng.normal(size=(2, units)).astype(np.float32))
    weights = mx.array(rng.normal(size=(2, 40, units)).astype(np.float32))

    def plain(keep, inputs, h0):
        hidden, states = h0, []
        for t in range(keep.shape[1]):
            hidden = keep[:, t] * hidden + inputs[:, t]
            states.append(hidden)
        return mx.stack(states, axis=1)

    np.testing.assert_allclose(np.array(linear_recurrence(keep, inputs, h0)), np.array(plain(keep, inputs, h0)),
                               rtol=1e-6, atol=1e-7)  # the kernel's fused multiply-add rounds once
    for fn_grads in zip(*(mx.grad(lambda *a: mx.sum(weights * fn(*a)), argnums=(0, 1, 2))(keep, inputs, h0)
                          for fn in (linear_recurrence, plain))):
        np.testing.assert_allclose(np.array(fn_grads[0]), np.array(fn_grads[1]), rtol=1e-5, atol=1e-6)


def test_ddsp_outputs_and_ranges():
    mx.random.seed(0)
    model_cfg, synth_cfg = tiny_config()
    model = DDSP(model_cfg, synth_cfg, SR, FRAME_RATE)
    f0, loudness, n_samples = inputs()
    out = model(f0, loudness, n_samples)
    n_decoder_frames = (f0.shape[1] - 1) // 5 + 1
    assert out["audio"].shape == out["harmonic"].shape == out["noise"].shape == (2, n_samples)
    assert out["harmonic_distribution"].shape == (2, n_decoder_frames, 8)
    assert out["noise_magnitudes"].shape == (2, n_decoder_frames, 5)
    np.testing.assert_allclose(np.array(out["f0_hz"]), np.array(f0[:, ::5]))
    np.testing.assert_allclose(np.array(out["audio"]), np.array(out["harmonic"] + out["noise"]), atol=1e-7)
    assert mx.all(out["amplitude"] > 0).item() and mx.all(out["harmonic_distribution"] > 0).item()
    # the -5 noise offset: magnitudes start about 2 * sigmoid(-5) ** ln(10) ~ 2e-5, far below the harmonics
    assert mx.max(out["noise_magnitudes"]).item() < 1e-3
    assert mx.std(out["noise"]).item() < 0.01 * mx.std(out["harmonic"]).item()


def test_toggles_change_outputs_and_parameter_count():
    model_cfg, synth_cfg = tiny_config()
    f0, loudness, n_samples = inputs()
    counts = {}
    for harmonic, noise in [(True, True), (True, False), (False, True)]:
        mx.random.seed(0)
        model = DDSP(model_cfg, tiny_config(harmonic=harmonic, noise=noise)[1], SR, FRAME_RATE)
        out = model(f0, loudness, n_samples)
        assert (mx.abs(out["harmonic"]).max().item() > 0) == harmonic
        assert (mx.abs(out["noise"]).max().item() > 0) == noise
        assert ("noise_magnitudes" in out) == noise and ("amplitude" in out) == harmonic
        counts[harmonic, noise] = model.decoder.dense_out.weight.shape[0]
    assert counts == {(True, True): 1 + 8 + 5, (True, False): 1 + 8, (False, True): 5}
    with pytest.raises(ValueError, match="at least one"):
        DDSP(model_cfg, tiny_config(harmonic=False, noise=False)[1], SR, FRAME_RATE)


def test_decoder_frame_rate_must_fit():
    model_cfg, synth_cfg = tiny_config()
    with pytest.raises(ValueError, match="must divide"):
        DDSP(ModelConfig(frame_rate=60), synth_cfg, SR, FRAME_RATE)
    model = DDSP(model_cfg, synth_cfg, SR, FRAME_RATE)
    with pytest.raises(ValueError, match="decoder's grid"):
        model.controls(mx.full((1, 13), 200.0), mx.full((1, 13), -20.0))


@pytest.mark.parametrize("recurrent", ["gru", "mingru"])
def test_gradients_reach_every_parameter(recurrent):
    mx.random.seed(1)
    model_cfg, synth_cfg = tiny_config()
    model_cfg.recurrent = recurrent
    model = DDSP(model_cfg, synth_cfg, SR, FRAME_RATE)
    f0, loudness, n_samples = inputs()
    target = mx.random.uniform(-0.3, 0.3, (2, n_samples))

    def loss_fn(f0, loudness):
        return multiscale_spectral_loss(target, model(f0, loudness, n_samples)["audio"], [256, 64])

    _, grads = nn.value_and_grad(model, loss_fn)(f0, loudness)
    flat = tree_flatten(grads)
    assert len(flat) == len(tree_flatten(model.trainable_parameters()))
    for name, g in flat:
        assert np.all(np.isfinite(np.array(g))), name
        assert mx.abs(g).max().item() > 0, f"no gradient reaches {name}"


def test_checkpoint_round_trip(tmp_path):
    mx.random.seed(2)
    cfg = Config()
    cfg.model, cfg.synth = tiny_config()
    model = DDSP(cfg.model, cfg.synth, SR, FRAME_RATE)
    optimizer = optim.Adam(learning_rate=1e-3)
    optimizer.init(model.trainable_parameters())
    f0, loudness, n_samples = inputs()
    # one update so the optimizer state is not trivially zero
    grads = nn.value_and_grad(model, lambda: model(f0, loudness, n_samples)["audio"].square().mean())()[1]
    optimizer.update(model, grads)
    checkpoint.save(tmp_path, model, optimizer, cfg, {"step": 1, "rng": [0, 0]})

    mx.random.seed(99)
    fresh = DDSP(cfg.model, cfg.synth, SR, FRAME_RATE)
    fresh_optimizer = optim.Adam(learning_rate=1e-3)
    state, loaded_cfg = checkpoint.load(checkpoint.resolve(tmp_path, "last"), fresh, fresh_optimizer)
    assert state["step"] == 1 and loaded_cfg == cfg
    key = mx.random.key(5)
    np.testing.assert_array_equal(np.array(fresh(f0, loudness, n_samples, key=key)["audio"]),
                                  np.array(model(f0, loudness, n_samples, key=key)["audio"]))
    saved, loaded = dict(tree_flatten(optimizer.state)), dict(tree_flatten(fresh_optimizer.state))
    assert saved.keys() == loaded.keys()
    for name in saved:
        np.testing.assert_array_equal(np.array(loaded[name]), np.array(saved[name]), err_msg=name)
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        checkpoint.resolve(tmp_path / "elsewhere", "last")
