"""Data-parallel training: shards, the noise of a shard, and two processes under `mlx.launch` following the
single-process curve (and resuming)."""

import json
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_ddsp import distributed
from mlx_ddsp.cli import UserError
from mlx_ddsp.config import load_config
from mlx_ddsp.synth import filtered_noise
from mlx_ddsp.train import train

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = Path(sys.executable).parent / "mlx.launch"


def test_shards_cover_the_batch_and_uneven_ones_go_first():
    for batch, size in ((4, 2), (5, 2), (7, 3), (3, 3)):
        rows = [distributed.shard(batch, distributed.World(None, rank, size)) for rank in range(size)]
        assert rows[0][0] == 0 and rows[-1][1] == batch
        assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
        lengths = [stop - first for first, stop in rows]
        assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)
    with pytest.raises(UserError, match="train.batch_size=1"):
        distributed.shard(1, distributed.World(None, 0, 2))


def test_a_shard_gets_its_rows_of_the_whole_batch_noise():
    magnitudes = mx.random.uniform(shape=(4, 11, 8))
    key = mx.random.key(3)
    whole = filtered_noise(magnitudes, 640, key=key)
    halves = [filtered_noise(magnitudes[a:b], 640, key=key, rows=(a, 4)) for a, b in ((0, 3), (3, 4))]
    np.testing.assert_array_equal(np.concatenate([np.array(h) for h in halves]), np.array(whole))


def _losses(run_dir: Path) -> dict[int, float]:
    lines = (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


def _launch_problem() -> str | None:
    """Why two ring processes cannot start here (no mlx.launch, no local sockets...), or None."""
    if not LAUNCH.exists():
        return "mlx.launch is not installed beside this Python"
    probe = [str(LAUNCH), "-n", "2", "--backend", "ring", "--", sys.executable, "-c",
             "import mlx.core as mx; g = mx.distributed.init(); assert g.size() == 2; "
             "mx.eval(mx.distributed.all_sum(mx.ones(2)))"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "two ring processes did not connect within 120 s"
    if done.returncode != 0 or "exited with code" in done.stdout + done.stderr:
        return f"two ring processes could not start: {(done.stdout + done.stderr)[-300:]}"
    return None


def test_two_processes_follow_the_single_process_curve_and_resume(tmp_path):
    problem = _launch_problem()
    if problem:
        pytest.skip(problem)
    words = [f"data.dir={ROOT / 'data' / 'flute'}", f"data.cache_dir={tmp_path / 'cache'}", "train.eval_every=10",
             "train.checkpoint_every=10", "train.eval_at_end=false", "train.log_every=1"]
    alone = tmp_path / "alone"
    train(load_config(ROOT / "recipes" / "smoke.yaml", [*words, f"run_dir={alone}", "train.steps=20"]))
    together = tmp_path / "together"
    for steps in (10, 20):  # the second start resumes from the first one's checkpoint
        command = [str(LAUNCH), "-n", "2", "--backend", "ring", "--", sys.executable, "-m", "mlx_ddsp.train",
                   str(ROOT / "recipes" / "smoke.yaml"), *words, f"run_dir={together}", f"train.steps={steps}"]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and "exited with code" not in done.stdout + done.stderr, done.stderr[-2000:]
    assert "resuming" in done.stderr and "data-parallel: 2 processes" in done.stderr
    a, b = _losses(alone), _losses(together)
    assert sorted(b) == list(range(1, 21))
    # Float32 sums over half batches differ from the whole batch's by ~1e-5 at the first step and drift slowly.
    np.testing.assert_allclose([b[s] for s in range(1, 21)], [a[s] for s in range(1, 21)], rtol=2e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone", "cache", "together"]  # one run dir, one cache


def test_caches_with_other_examples_have_other_fingerprints():
    manifest = {"example_samples": 32000,
                "files": [{"path": "a.wav", "key": "k1", "split": "train", "starts": [0, 250]}]}
    other_starts = {**manifest, "files": [{**manifest["files"][0], "starts": [0, 125, 250]}]}
    other_length = {**manifest, "example_samples": 64000}
    prints = [distributed.fingerprint(m) for m in (manifest, other_starts, other_length)]
    assert prints[0] == distributed.fingerprint(json.loads(json.dumps(manifest)))  # the same on every rank
    assert len({tuple(p) for p in prints}) == 3 and all(0 <= v < 2**16 for p in prints for v in p)
