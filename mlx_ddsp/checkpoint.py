"""Checkpoints: one folder per saved step, written atomically, the last few kept plus the best by validation loss.

    run_dir/checkpoints/step_000500/  model.safetensors  optimizer.safetensors  state.json  config.yaml
    run_dir/checkpoints/best/         (a copy of the step with the lowest validation loss)

`state.json` holds the step, the random state, the training clock, the best validation loss and the dataset
statistics (what evaluation and resynthesis need to know about the training data).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from mlx_ddsp.cli import UserError
from mlx_ddsp.config import Config, load_config, save_config
from mlx_ddsp.models import build_model

CHECKPOINTS = "checkpoints"
BEST = "best"


class CheckpointError(UserError):
    """A missing or unreadable checkpoint; the message says where it was looked for."""


def step_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's complete step checkpoints, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if p.is_dir() and (p / "state.json").exists()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def resolve(run_dir: str | Path, which: str = "last") -> Path:
    """A checkpoint folder: `which` is "last", "best" or a path to a checkpoint folder."""
    path = Path(run_dir) / CHECKPOINTS / BEST if which == BEST else Path(which)
    if which != "last" and (path / "state.json").exists():
        return path
    if which not in ("last", BEST):
        raise CheckpointError(f"no checkpoint at {path}; pass best, last or a folder holding state.json")
    found = step_checkpoints(run_dir)  # "last", or "best" in a run without a validation split
    if not found:
        raise CheckpointError(f"no checkpoint in {Path(run_dir) / CHECKPOINTS}; train first: "
                              f"python -m mlx_ddsp.train RECIPE run_dir={run_dir}")
    return found[-1]


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move folder `tmp` to `final`, replacing any folder there; readers see the old or the new, never half."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def save(run_dir: str | Path, model, optimizer, cfg: Config, state: dict, best: bool = False, keep: int = 3) -> Path:
    """Write checkpoint `step_<state['step']>` (and `best` if `best`), then delete all but the last `keep` steps."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{state['step']:06d}"
    tmp = root / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    mx.save_safetensors(str(tmp / "model.safetensors"), dict(tree_flatten(model.parameters())))
    mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(optimizer.state)))
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    save_config(cfg, tmp / "config.yaml")
    if best:
        best_tmp = root / f".{BEST}.tmp"
        shutil.rmtree(best_tmp, ignore_errors=True)
        shutil.copytree(tmp, best_tmp)
        _replace_dir(best_tmp, root / BEST)
    _replace_dir(tmp, final)
    for old in step_checkpoints(run_dir)[: -max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(path: str | Path, model=None, optimizer=None) -> tuple[dict, Config]:
    """Load weights into `model` and state into `optimizer` (either may be None); returns (state, config)."""
    path = Path(path)
    try:
        state = json.loads((path / "state.json").read_text())
        cfg = load_config(path / "config.yaml")
        if model is not None:
            model.load_weights(str(path / "model.safetensors"), strict=True)
        if optimizer is not None:
            optimizer.state = tree_unflatten(list(mx.load(str(path / "optimizer.safetensors")).items()))
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    return state, cfg


def load_trained(run_dir: str | Path, which: str = "best"):
    """(model, config, state) of a trained run; `which` as in `resolve`."""
    path = resolve(run_dir, which)
    state, cfg = load(path)
    model = build_model(cfg)
    load(path, model)
    model.eval()
    return model, cfg, {**state, "path": str(path)}
