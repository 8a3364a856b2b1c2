"""TensorBoard event files for `train.tensorboard: true`, written by tensorboardX (no TensorFlow).

    pip install -e ".[tensorboard]"
    python -m mlx_ddsp.train recipes/flute_cpu.yaml train.tensorboard=true
    tensorboard --logdir runs/flute_cpu/logs/tensorboard

Scalars: train/loss, train/grad_norm, train/lr, train/steps_per_s and val/loss, by step; audio: the validation
renders (CLIP/target, CLIP/recon) at each render step. A resumed run purges the events past its checkpoint's step,
so TensorBoard draws one continuous curve, as logs/metrics.jsonl does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlx_ddsp.cli import UserError

TAGS = {"loss": "train/loss", "grad_norm": "train/grad_norm", "lr": "train/lr", "steps_per_s": "train/steps_per_s",
        "val_loss": "val/loss"}


class TensorBoardLog:
    """Scalars and audio as TensorBoard events in `log_dir`, continuing a run resumed at `resume_step`."""

    def __init__(self, log_dir: Path, resume_step: int):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as e:
            raise UserError("train.tensorboard=true needs tensorboardX: pip install -e \".[tensorboard]\" "
                            "(or pip install tensorboardX)") from e
        self.writer = SummaryWriter(str(log_dir), purge_step=resume_step + 1 if resume_step > 0 else None)

    def scalars(self, record: dict) -> None:
        """The known fields of one metrics record ({"step": ..., "loss": ..., ...})."""
        for key, tag in TAGS.items():
            if key in record:
                self.writer.add_scalar(tag, float(record[key]), record["step"])
        if "val_loss" in record:
            self.writer.flush()

    def audio(self, step: int, clips: dict[str, np.ndarray], sample_rate: int) -> None:
        """clips: {tag: (n_samples,) float audio in [-1, 1]}."""
        for tag, audio in clips.items():
            self.writer.add_audio(tag, np.clip(audio, -1.0, 1.0), step, sample_rate=sample_rate)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
