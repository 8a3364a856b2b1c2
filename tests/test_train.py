"""Training on the smoke recipe: learning, determinism, resume, interruption, NaN guard and the run dir's contents."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
import pytest
import soundfile as sf
from mlx.utils import tree_flatten

from mlx_ddsp import checkpoint
from mlx_ddsp.config import load_config
from mlx_ddsp.models import build_model
from mlx_ddsp.train import TrainingError, lead_in_frames_for, learning_rate_schedule, main, make_train_step, train

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "recipes" / "smoke.yaml"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def smoke(run_dir, cache_dir, *overrides):
    return load_config(SMOKE, [f"run_dir={run_dir}", f"data.dir={ROOT / 'data' / 'flute'}",
                               f"data.cache_dir={cache_dir}", "train.eval_at_end=false", *overrides])


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "logs" / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in metrics(run_dir) if "loss" in m}


def test_one_clip_overfits(tmp_path):
    """A harmonic-only model fed one clip of a harmonic tone (known f0, 1/k partials) drives the loss far down."""
    sr, seconds = 16000, 1.1
    t = np.arange(int(sr * seconds)) / sr
    f0 = 330 * 2 ** (0.2 * np.sin(2 * np.pi * 1.5 * t))  # a slow glide around 330 Hz
    phase = 2 * np.pi * np.cumsum(f0) / sr
    envelope = np.minimum(1, t / 0.1) * (0.6 + 0.3 * np.sin(2 * np.pi * 2 * t))
    audio = envelope * sum(np.sin(k * phase) / k for k in range(1, 9)) * 0.3
    (tmp_path / "data").mkdir()
    sf.write(tmp_path / "data" / "tone.wav", audio.astype(np.float32), sr)
    cfg = load_config(SMOKE, [f"run_dir={tmp_path / 'run'}", f"data.dir={tmp_path / 'data'}", "data.val_files=[]",
                              "synth.noise=false", "train.steps=150", "train.eval_every=1000",
                              "train.render_every=1000", "train.checkpoint_every=1000", "train.learning_rate=0.01",
                              "loss.fft_sizes=[512,256,128,64]"])
    summary = train(cfg)
    curve = losses(tmp_path / "run")
    first, last = curve[1], np.mean([curve[s] for s in range(141, 151)])
    assert last < 0.2 * first, (first, last)
    assert summary["step"] == 150


def test_training_learns_and_writes_the_run_dir(tmp_path, cache_dir):
    run = tmp_path / "run"
    assert main([str(SMOKE), f"run_dir={run}", f"data.dir={ROOT / 'data' / 'flute'}",
                 f"data.cache_dir={cache_dir}", "train.steps=120", "train.eval_every=60", "train.eval_at_end=false",
                 "train.render_every=60", "train.checkpoint_every=60"]) == 0
    saved = load_config(run / "config.yaml")
    assert saved.train.steps == 120
    assert (saved.data.lead_in_seconds, saved.features.f0_dereverb) == (0.0, False)  # resolved: no None left
    val = {m["step"]: m["val_loss"] for m in metrics(run) if "val_loss" in m}
    assert sorted(val) == [0, 60, 120]
    assert val[120] < 0.6 * val[0], val  # held-out loss falls by more than 40 %
    assert all(np.isfinite(list(losses(run).values())))
    assert {p.name for p in (run / "checkpoints").iterdir()} >= {"best", "step_000120"}
    renders = sorted((run / "renders" / "step_000120").glob("*.wav"))
    assert len(renders) == 4 and {p.name.rsplit("_", 1)[1] for p in renders} == {"target.wav", "recon.wav"}
    recon, sr = sf.read(renders[0])
    assert sr == 16000 and len(recon) == 16000 and np.isfinite(recon).all()
    best_state, _ = checkpoint.load(checkpoint.resolve(run, "best"))
    assert best_state["best_val_loss"] == min(val.values())


def test_same_seed_same_losses_and_resume_continues_the_curve(tmp_path, cache_dir):
    straight = tmp_path / "straight"
    train(smoke(straight, cache_dir, "train.steps=16", "train.eval_every=8"))
    again = tmp_path / "again"
    train(smoke(again, cache_dir, "train.steps=16", "train.eval_every=8"))
    assert losses(again) == losses(straight)

    resumed = tmp_path / "resumed"
    train(smoke(resumed, cache_dir, "train.steps=8", "train.eval_every=8"))
    summary = train(smoke(resumed, cache_dir, "train.steps=16", "train.eval_every=8"))
    assert summary["step"] == 16
    a, b = losses(straight), losses(resumed)
    assert sorted(b) == list(range(1, 17))
    np.testing.assert_allclose([b[s] for s in range(9, 17)], [a[s] for s in range(9, 17)], rtol=1e-5)
    different = tmp_path / "different"
    train(smoke(different, cache_dir, "train.steps=4", "seed=1"))
    assert [losses(different)[s] for s in range(1, 5)] != [a[s] for s in range(1, 5)]


def test_time_budget_stops_with_a_checkpoint(tmp_path, cache_dir):
    summary = train(smoke(tmp_path, cache_dir, "train.steps=100000", "train.max_minutes=0.0001"))
    assert 1 <= summary["step"] < 100000 and not summary["interrupted"]
    assert checkpoint.step_checkpoints(tmp_path)[-1].name == f"step_{summary['step']:06d}"


def test_resume_with_another_recipe_is_refused(tmp_path, cache_dir):
    train(smoke(tmp_path, cache_dir, "train.steps=2"))
    assert main([str(SMOKE), f"run_dir={tmp_path}", f"data.dir={ROOT / 'data' / 'flute'}",
                 f"data.cache_dir={cache_dir}", "model.hidden_size=8", "train.eval_at_end=false"]) == 1


def test_ctrl_c_saves_a_checkpoint_and_exits(tmp_path, cache_dir):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "mlx_ddsp.train", str(SMOKE), f"run_dir={run}", f"data.dir={ROOT / 'data' / 'flute'}",
           f"data.cache_dir={cache_dir}", "train.steps=100000", "train.eval_every=100000", "train.eval_at_end=false"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=dict(os.environ, MLX_DDSP_PRELOAD="0"))
    log = run / "logs" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (log.exists() and "\"loss\"" in log.read_text()):
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130, output
    saved = checkpoint.step_checkpoints(run)
    assert saved, output
    step = json.loads((saved[-1] / "state.json").read_text())["step"]
    assert step >= 1 and max(losses(run)) == step  # the checkpoint holds the last logged step


def test_non_finite_step_changes_nothing(tmp_path):
    cfg = load_config(SMOKE, ["train.warmup_steps=0"])
    mx.random.seed(0)
    model = build_model(cfg)
    optimizer = optim.Adam(learning_rate=learning_rate_schedule(cfg), bias_correction=True)
    optimizer.init(model.trainable_parameters())
    step = make_train_step(model, optimizer, cfg)
    n_samples, n_frames = 16000, 251
    audio = mx.random.uniform(-0.5, 0.5, (4, n_samples))
    f0, loudness = mx.full((4, n_frames), 300.0), mx.full((4, n_frames), -30.0)
    before = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    loss, _, ok = step(audio.at[0, 5].add(mx.array(np.nan)), f0, loudness)
    mx.eval(model.state, optimizer.state)
    assert not ok.item() and not np.isfinite(loss.item())
    for k, v in tree_flatten(model.parameters()):
        np.testing.assert_array_equal(np.array(v), before[k], err_msg=k)
    assert optimizer.state["step"].item() == 0
    loss, _, ok = step(audio, f0, loudness)
    mx.eval(model.state, optimizer.state)
    assert ok.item() and optimizer.state["step"].item() == 1
    assert any(not np.array_equal(np.array(v), before[k]) for k, v in tree_flatten(model.parameters()))


def test_lead_in_is_played_but_not_scored():
    """With a lead-in, the loss ignores the target's first lead_in_samples, while the model's sound there still
    counts through its room's tail (a room of 0.3 s carries the lead-in's notes into the scored part)."""
    cfg = load_config(SMOKE, ["train.warmup_steps=0", "synth.reverb=true", "synth.reverb_model=parametric",
                              "synth.reverb_seconds=0.3", "synth.room_level_db=0"])
    n_samples, n_frames, lead = 16000, 251, 4000
    audio = mx.random.uniform(-0.5, 0.5, (4, n_samples), key=mx.random.key(1))
    f0, loudness = mx.full((4, n_frames), 300.0), mx.full((4, n_frames), -30.0)

    def first_loss(target, loudness_db, lead_in_samples):
        mx.random.seed(0)
        model = build_model(cfg)
        optimizer = optim.Adam(learning_rate=1e-3)
        optimizer.init(model.trainable_parameters())
        return make_train_step(model, optimizer, cfg, lead_in_samples=lead_in_samples)(target, f0, loudness_db)[0].item()

    scored = first_loss(audio, loudness, lead)
    garbage = audio.at[:, :lead].add(mx.random.normal((4, lead), key=mx.random.key(2)))
    assert first_loss(garbage, loudness, lead) == pytest.approx(scored, rel=1e-6)
    assert abs(first_loss(garbage, loudness, 0) - first_loss(audio, loudness, 0)) > 1e-3 * scored
    silent_lead = loudness.at[:, : lead // 64].add(-60.0)  # the lead-in's sound reaches the scored part
    assert abs(first_loss(audio, silent_lead, lead) - scored) > 1e-4 * scored


def test_lead_in_defaults_to_a_second_with_a_room_and_rounds_to_decoder_frames():
    def frames(*words):
        return lead_in_frames_for(load_config(SMOKE, list(words)))

    assert frames() == 0 and frames("synth.reverb=true") == 250  # 250 frames/s
    assert frames("synth.reverb=true", "data.lead_in_seconds=0") == 0
    assert frames("data.lead_in_seconds=0.33") == 85  # 82.5 frames, up to whole 50 frames/s decoder frames
    with pytest.raises(TrainingError, match="data.lead_in_seconds"):
        frames("data.lead_in_seconds=-1")
