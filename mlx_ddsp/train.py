"""Train a DDSP model on a folder of recordings.

usage: python -m mlx_ddsp.train RECIPE [key=value ...]

  python -m mlx_ddsp.train recipes/flute.yaml
  python -m mlx_ddsp.train recipes/smoke.yaml run_dir=/tmp/r train.steps=200

Preprocesses the recipe's data folder when its cache is missing or stale, then trains with a compiled step, writing
to the run dir: config.yaml, logs/metrics.jsonl, logs/curves.png (redrawn at validations), checkpoints/ (last
few and best) and renders/step_NNNNNN/ (target and reconstruction WAVs of validation clips); with
train.tensorboard=true also TensorBoard event files in logs/tensorboard/. Started again on a run dir with a
checkpoint, it resumes from it; Ctrl-C (or SIGTERM) saves a checkpoint before exiting. When training stops it evaluates the best checkpoint on the
validation clips (eval/report.html and eval/metrics.json in the run dir; train.eval_at_end=false skips this).
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mlx_ddsp import checkpoint, distributed, figures
from mlx_ddsp.audio import save_audio
from mlx_ddsp.cli import UserError, entry_point, run
from mlx_ddsp.config import Config, config_to_dict, load_config, resolve_defaults, save_config
from mlx_ddsp.data import BatchStream, ExampleSet
from mlx_ddsp.distributed import World
from mlx_ddsp.eval import evaluate
from mlx_ddsp.features import frame_hop
from mlx_ddsp.losses import recipe_loss, scaled_fft_sizes
from mlx_ddsp.models import DDSP, RENDER_NOISE_SEED, build_model
from mlx_ddsp.preprocess import cache_dir_for, load_manifest, preprocess
from mlx_ddsp.tensorboard_log import TensorBoardLog

RESUMABLE_KEYS = ("train.steps", "train.max_minutes", "train.log_every", "train.eval_every", "train.val_max_examples",
                  "train.render_every", "train.n_renders", "train.checkpoint_every", "train.keep_checkpoints",
                  "train.max_bad_steps", "train.eval_at_end", "train.tensorboard", "run_dir", "data.dir",
                  "data.cache_dir")


class TrainingError(UserError):
    """A run that cannot start or continue; the message says why and what to do."""


def learning_rate_schedule(cfg: Config):
    """Linear warm-up to train.learning_rate, then x lr_decay_rate every lr_decay_steps (continuously)."""
    t = cfg.train
    decay = optim.exponential_decay(t.learning_rate, t.lr_decay_rate ** (1.0 / t.lr_decay_steps))
    if t.warmup_steps <= 0:
        return decay
    warmup = optim.linear_schedule(t.learning_rate / t.warmup_steps, t.learning_rate, t.warmup_steps)
    return optim.join_schedules([warmup, decay], [t.warmup_steps])


def make_train_step(model: DDSP, optimizer: optim.Optimizer, cfg: Config, world: World = distributed.ALONE,
                    lead_in_samples: int = 0):
    """step(audio, f0_hz, loudness_db) -> (loss, grad_norm, ok) that updates model and optimizer; the loss leaves
    out the first `lead_in_samples` (the examples' lead-in, `mlx_ddsp.data`).

    Compiled functions: the loss and gradients, their clipping, then the optimizer update, run only when the loss
    and the gradient norm are finite (ok); otherwise neither changes and the random state moves on. Checking one
    scalar between them is cheaper than keeping old copies of every parameter and moment for an on-device select.
    Harmonics that are above Nyquist for the whole batch are not oscillated (exact, see `DDSP.max_harmonics`); one
    compiled gradient function is kept per harmonic count, at most four.
    With several processes (`mlx_ddsp.distributed`) the inputs are this rank's rows of the global batch (`shard`);
    the loss and gradients are summed over the ranks before clipping, so every rank makes the same update, and the
    noise is the rows this rank would get of a draw for the whole batch.
    """
    gradients = {}
    state = [model.state, optimizer.state]
    batch_size = cfg.train.batch_size
    first, stop = distributed.shard(batch_size, world)
    noise_rows = None if world.size == 1 else (first, batch_size)

    @partial(mx.compile, inputs=state, outputs=state)
    def update(grads):
        optimizer.update(model, grads)

    @mx.compile
    def clip(grads):
        return optim.clip_grad_norm(grads, cfg.train.grad_clip_norm)

    def step(audio, f0_hz, loudness_db):
        max_harmonics = model.max_harmonics(f0_hz)
        if max_harmonics not in gradients:
            gradients[max_harmonics] = _compiled_gradients(model, cfg, max_harmonics, noise_rows, lead_in_samples)
        loss, grads = gradients[max_harmonics](audio, f0_hz, loudness_db)
        loss, grads = distributed.sum_gradients(loss, grads, (stop - first) / batch_size, world)
        grads, grad_norm = clip(grads)
        ok = mx.isfinite(loss) & mx.isfinite(grad_norm)
        if ok.item():
            update(grads)
        return loss, grad_norm, ok

    return step


def _compiled_gradients(model: DDSP, cfg: Config, max_harmonics: int | None, noise_rows: tuple[int, int] | None,
                        lead_in_samples: int):
    def loss_fn(audio, f0_hz, loudness_db):
        out = model(f0_hz, loudness_db, audio.shape[1], max_harmonics=max_harmonics, audio=audio,
                    noise_rows=noise_rows)
        return recipe_loss(cfg.loss, cfg.data.sample_rate, audio[:, lead_in_samples:],
                           out["audio"][:, lead_in_samples:])

    loss_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, mx.random.state]  # the parameters must be outputs too, or tracing leaves placeholders

    @partial(mx.compile, inputs=state, outputs=state)
    def gradients(audio, f0_hz, loudness_db):
        return loss_and_grad(audio, f0_hz, loudness_db)

    return gradients


def rate_notes(cfg: Config, stats: dict) -> list[str]:
    """What the sample rate sets: the frame hops, the loss's FFT sizes, and how far the harmonics reach."""
    sample_rate, nyquist_khz = cfg.data.sample_rate, cfg.data.sample_rate / 2000
    hop = frame_hop(sample_rate, cfg.features.frame_rate)
    stride = cfg.features.frame_rate // cfg.model.frame_rate
    sizes = scaled_fft_sizes(cfg.loss.fft_sizes, cfg.loss.fft_sizes_rate, sample_rate)
    notes = [f"{sample_rate} Hz: features every {hop} samples ({sample_rate / hop:.4g} frames/s), decoder every "
             f"{hop * stride}; loss FFT sizes {', '.join(map(str, sizes))}"]
    low_f0 = ((stats.get("f0_hz") or {}).get("quantiles") or {}).get("0.05")
    if cfg.synth.harmonic and low_f0:
        reach_khz = min(cfg.synth.n_harmonics * low_f0 / 1000, nyquist_khz)
        note = (f"synth: {cfg.synth.n_harmonics} harmonics of the training set's 5th-percentile f0 ({low_f0:.0f} Hz) "
                f"reach {reach_khz:.1f} of {nyquist_khz:g} kHz")
        if reach_khz < 0.9 * nyquist_khz:
            note = (f"[yellow]{note}[/yellow]; synth.n_harmonics={int(np.ceil(1000 * nyquist_khz / low_f0))} "
                    "would reach Nyquist")
        notes.append(note)
    return notes


def validation_indices(n_examples: int, max_examples: int) -> list[int]:
    """Evenly spaced example indices, at most `max_examples` of them (0: all)."""
    if max_examples <= 0 or n_examples <= max_examples:
        return list(range(n_examples))
    return [int(i) for i in np.linspace(0, n_examples - 1, max_examples).round()]


def validation_loss(model: DDSP, dataset: ExampleSet, indices: list[int], cfg: Config) -> float:
    """Mean spectral loss over the examples `indices` (their lead-in left out), in batches of train.batch_size,
    with fixed noise."""
    total = 0.0
    key = mx.random.key(RENDER_NOISE_SEED)
    for start in range(0, len(indices), cfg.train.batch_size):
        batch = dataset.stack(indices[start : start + cfg.train.batch_size])
        audio = model(batch["f0_hz"], batch["loudness_db"], dataset.n_samples, key=key, audio=batch["audio"])["audio"]
        lead = dataset.lead_in_samples
        total += recipe_loss(cfg.loss, cfg.data.sample_rate, batch["audio"][:, lead:], audio[:, lead:]).item() * len(
            batch["audio"])
    return total / len(indices)


def render(model: DDSP, dataset: ExampleSet, indices: list[int], out_dir: Path, sample_rate: int) -> dict:
    """Write <clip>_target.wav and <clip>_recon.wav for the validation examples `indices` (their lead-in left out);
    returns them as {"<clip>/target": (n_samples,), "<clip>/recon": (n_samples,)}."""
    batch = dataset.stack(indices)
    audio = model(batch["f0_hz"], batch["loudness_db"], dataset.n_samples, key=mx.random.key(RENDER_NOISE_SEED),
                  audio=batch["audio"])["audio"]
    clips = {}
    lead = dataset.lead_in_samples
    for i, target, recon in zip(indices, np.array(batch["audio"][:, lead:]), np.array(audio[:, lead:])):
        file, start = dataset.index[i]
        name = f"{Path(dataset.names[file]).stem}_{start * dataset.hop / sample_rate:06.1f}s"
        save_audio(out_dir / f"{name}_target.wav", target, sample_rate)
        save_audio(out_dir / f"{name}_recon.wav", recon, sample_rate)
        clips.update({f"{name}/target": target, f"{name}/recon": recon})
    return clips


class MetricsLog:
    """logs/metrics.jsonl: one JSON object per line, each with "step". Lines past `resume_step` are dropped.
    With `tensorboard`, each record's scalars and the renders also go to TensorBoard event files."""

    def __init__(self, path: Path, resume_step: int, tensorboard: TensorBoardLog | None = None):
        self.path, self.tensorboard = path, tensorboard
        self._drawn_at, self._draw_seconds = 0.0, 0.0
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= resume_step:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a kill
        path.write_text("".join(f"{line}\n" for line in kept))

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard:
            self.tensorboard.scalars(record)

    def audio(self, step: int, clips: dict[str, np.ndarray], sample_rate: int) -> None:
        if self.tensorboard:
            self.tensorboard.audio(step, clips, sample_rate)

    def draw_curves(self, grad_clip_norm: float, force: bool = False) -> None:
        """logs/curves.png from every record so far (a resumed run's too: one continuous curve), once there is a
        training step to draw. Unless `force`d, a drawing is skipped until 20x the last one's time has passed, so
        frequent validations spend at most ~5 % of the wall time on it (a drawing takes ~0.5-1 s here)."""
        if not force and time.perf_counter() - self._drawn_at < 20 * self._draw_seconds:
            return
        records = figures.read_metrics_log(self.path)
        if not any("loss" in r for r in records):
            return
        start = time.perf_counter()
        figures.save(figures.training_curves(records, grad_clip_norm), self.path.parent / "curves.png")
        self._drawn_at, self._draw_seconds = time.perf_counter(), time.perf_counter() - start

    def close(self) -> None:
        if self.tensorboard:
            self.tensorboard.close()


def _check_resumable(saved: Config, cfg: Config, run_dir: Path) -> None:
    old, new = _flat(config_to_dict(saved)), _flat(config_to_dict(cfg))
    changed = [k for k in new if k not in RESUMABLE_KEYS and old.get(k) != new[k]]
    if changed:
        diffs = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in changed[:4])
        raise TrainingError(f"{run_dir} holds a run with a different recipe ({diffs}); "
                            "resume with the same recipe or choose a new run_dir")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


class _StopRequest:
    """Ctrl-C / SIGTERM set a flag that the loop checks between steps; a second Ctrl-C stops at once."""

    def __init__(self):
        self.requested = False
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def train(cfg: Config, console: Console | None = None) -> dict:
    """Train (or resume) the run in cfg.run_dir up to cfg.train.steps. Returns a summary dict.

    Under `mlx.launch` every process runs this; rank 0 alone writes and prints (see `mlx_ddsp.distributed`)."""
    cfg = resolve_defaults(cfg)
    world = distributed.init()
    writer = world.is_writer
    console = console if writer and console else Console(stderr=True, quiet=not writer)
    run_dir, t = Path(cfg.run_dir), cfg.train
    train_set, val_set = _datasets(cfg, world, console)
    mx.random.seed(cfg.seed)
    model = build_model(cfg)
    try:
        model.decoder_frames(train_set.n_frames)
    except ValueError as e:
        raise TrainingError(f"data.example_seconds does not fit model.frame_rate: {e}") from e
    for line in rate_notes(cfg, train_set.stats):
        console.print(line)
    optimizer = optim.Adam(learning_rate=learning_rate_schedule(cfg), bias_correction=True)
    optimizer.init(model.trainable_parameters())
    state = {"step": 0, "elapsed_s": 0.0, "best_val_loss": None, "bad_steps_total": 0}
    found = checkpoint.step_checkpoints(run_dir) if writer else []
    if found:
        _check_resumable(resolve_defaults(checkpoint.load(found[-1])[1]), cfg, run_dir)
        state, _ = checkpoint.load(found[-1], model, optimizer)
        optimizer.init(model.trainable_parameters())
        high, low = state["rng"]
        mx.random.seed((high << 32) | low)  # the global key is key(seed) = [seed >> 32, seed & 0xffffffff]
        console.print(f"resuming {run_dir} from step {state['step']} ({found[-1].name})")
    state["step"] = distributed.synchronize(model, optimizer, state["step"], world)
    rows = slice(*distributed.shard(t.batch_size, world))  # this rank's rows of each global batch
    if world.size > 1:
        console.print(f"data-parallel: {world.size} processes, {rows.stop - rows.start} of each batch of "
                      f"{t.batch_size} on rank 0")
    log = None
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        tensorboard = TensorBoardLog(run_dir / "logs" / "tensorboard", state["step"]) if t.tensorboard else None
        log = MetricsLog(run_dir / "logs" / "metrics.jsonl", state["step"], tensorboard)
    step_fn = make_train_step(model, optimizer, cfg, world, train_set.lead_in_samples)
    batches = BatchStream(train_set, t.batch_size, cfg.seed)
    val_indices = validation_indices(len(val_set), t.val_max_examples)
    render_indices = val_indices[:: max(1, len(val_indices) // max(t.n_renders, 1))][: t.n_renders]
    stats = {"stats": train_set.stats, "n_samples": train_set.n_samples, "n_frames": train_set.n_frames}

    def save(best=False):
        state["rng"] = np.array(mx.random.state[0]).tolist()
        checkpoint.save(run_dir, model, optimizer, cfg, {**state, **stats}, best=best, keep=t.keep_checkpoints)

    def validate(step):
        if not val_indices:
            return None
        val = validation_loss(model, val_set, val_indices, cfg)
        log.write({"step": step, "val_loss": val, "elapsed_s": round(state["elapsed_s"], 3)})
        log.draw_curves(t.grad_clip_norm)
        best = state["best_val_loss"] is None or val < state["best_val_loss"]
        if best:
            state["best_val_loss"] = val
        return val, best

    if state["step"] == 0 and writer:
        validate(0)
    stop, bad_in_a_row, last = _StopRequest(), 0, {}
    watchdog = distributed.Watchdog(world)  # after the signal handlers
    columns = (TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.description}"))
    started_at, step_seconds, wall_start = state["step"], 0.0, time.perf_counter() - state["elapsed_s"]
    stopping = out_of_time = False
    try:
        with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
            task = progress.add_task("", total=t.steps, completed=state["step"])
            while state["step"] < t.steps and not stopping and not out_of_time:
                step = state["step"]
                batch = batches.batch(step, rows)
                tic = time.perf_counter()
                loss, grad_norm, ok = step_fn(batch["audio"], batch["f0_hz"], batch["loudness_db"])
                mx.eval(model.state, optimizer.state, mx.random.state, loss, grad_norm, ok)
                step_seconds += time.perf_counter() - tic
                state["elapsed_s"] = time.perf_counter() - wall_start
                state["step"] = step = step + 1
                stopping, out_of_time = distributed.agree(
                    [stop.requested, 0 < t.max_minutes * 60 <= state["elapsed_s"]], world)
                final = step == t.steps or out_of_time
                if not ok.item():
                    bad_in_a_row += 1
                    state["bad_steps_total"] += 1
                    if writer:
                        log.write({"step": step, "skipped": "non-finite loss or gradient"})
                    if bad_in_a_row >= t.max_bad_steps:
                        raise TrainingError(f"{bad_in_a_row} steps in a row had a NaN/Inf loss or gradient "
                                            f"(step {step}); lower train.learning_rate or check the data")
                else:
                    bad_in_a_row = 0
                    last = {"loss": loss.item(), "grad_norm": grad_norm.item()}
                if not writer:
                    continue
                rate = (step - started_at) / step_seconds  # compute only: validation and renders excluded
                if ok.item() and (step % t.log_every == 0 or final):
                    log.write({"step": step, **last, "lr": optimizer.learning_rate.item(),
                               "steps_per_s": round(rate, 4), "elapsed_s": round(state["elapsed_s"], 3)})
                best = False
                if step % t.eval_every == 0 or final:
                    result = validate(step)
                    if result:
                        last["val_loss"], best = result
                    console.print(_line(step, t.steps, last, optimizer, rate))
                if step % t.render_every == 0 or final:
                    if render_indices:
                        clips = render(model, val_set, render_indices, run_dir / "renders" / f"step_{step:06d}",
                                       cfg.data.sample_rate)
                        log.audio(step, clips, cfg.data.sample_rate)
                if best or step % t.checkpoint_every == 0 or final:
                    save(best)
                progress.update(task, completed=step, description=_line(step, t.steps, last, optimizer, rate))
    finally:
        watchdog.close()
        stop.restore()
        if log:
            log.draw_curves(t.grad_clip_norm, force=True)
            log.close()
    if stopping and writer:
        save()
        console.print(f"stopped at step {state['step']}; checkpoint saved, run the same command to resume")
    distributed.barrier(world)  # the others leave once rank 0's last checkpoint is written
    summary = {"step": state["step"], "best_val_loss": state["best_val_loss"], "elapsed_s": state["elapsed_s"],
               "interrupted": stopping, **last}
    if t.eval_at_end and val_indices and writer:
        result = evaluate(run_dir, which="best", console=console)
        summary["eval"] = result["mean"]
        console.print(f"listen: open {run_dir / 'eval' / 'report.html'} in a browser")
    return summary


def lead_in_frames_for(cfg: Config) -> int:
    """data.lead_in_seconds (None: see `resolve_defaults`) in feature frames, rounded up to whole decoder frames."""
    seconds = resolve_defaults(cfg).data.lead_in_seconds
    if seconds < 0:
        raise TrainingError(f"data.lead_in_seconds must be 0 or more; got {seconds}")
    stride = cfg.features.frame_rate // cfg.model.frame_rate
    return stride * math.ceil(round(seconds * cfg.features.frame_rate, 6) / stride)


def _datasets(cfg: Config, world: World, console: Console) -> tuple[ExampleSet, ExampleSet]:
    """The training and validation examples. Rank 0 builds or refreshes the cache; the other ranks wait for it,
    then read their machine's cache, which must hold the same examples as rank 0's."""
    manifest = preprocess(cfg, console) if world.is_writer else None
    distributed.barrier(world)
    cache_dir = cache_dir_for(cfg)
    manifest = manifest or load_manifest(cache_dir)
    if manifest is None:
        raise TrainingError(f"rank {world.rank}: no feature cache at {cache_dir.resolve()} on this machine; run "
                            "`python -m mlx_ddsp.preprocess RECIPE` here first (with the same data as rank 0's)")
    if not distributed.same_as_writer(distributed.fingerprint(manifest), world):
        raise TrainingError(f"rank {world.rank}: the feature cache at {cache_dir.resolve()} holds other examples "
                            "than rank 0's; give every machine the same data.dir contents and run "
                            "`python -m mlx_ddsp.preprocess RECIPE` on each")
    lead_in_frames = lead_in_frames_for(cfg)
    train_set = ExampleSet(cache_dir, "train", lead_in_frames)
    val_set = ExampleSet(cache_dir, "validation", lead_in_frames)
    if len(train_set) == 0:
        raise TrainingError(f"no training examples in {cfg.data.dir}: every usable file went to validation")
    return train_set, val_set


def _line(step: int, total: int, last: dict, optimizer, rate: float) -> str:
    parts = [f"step {step}/{total}"]
    parts += [f"{k.replace('_', ' ')} {last[k]:.4f}" for k in ("loss", "val_loss") if k in last]
    parts.append(f"lr {optimizer.learning_rate.item():.2e}")
    parts.append(f"{rate:.2f} steps/s")
    return "  ".join(parts)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    return run(lambda console: 130 if train(load_config(argv[0], argv[1:]), console)["interrupted"] else 0)


if __name__ == "__main__":
    entry_point(main)
