"""Mini-batches from the preprocessing cache, held in memory, in a seeded order that resumes from a step number.

    dataset = ExampleSet(cache_dir, "train", lead_in_frames=250)   # each example with the second before it
    batches = BatchStream(dataset, batch_size=16, seed=0)
    batch = batches.batch(step)   # {"audio": (B, N), "f0_hz": (B, T), "confidence": (B, T), "loudness_db": (B, T)}

The order is a concatenation of per-epoch permutations drawn from (seed, epoch), so batch `step` is a pure function
of (seed, step): a resumed run sees exactly the batches the uninterrupted run would have. Every batch is full
(epochs run into each other), so shapes never change and a compiled step never recompiles.

A lead-in (`data.lead_in_seconds`) is audio and features from before each example that the model renders and the
loss leaves out: in a reverberant recording the start of every example holds the room's tail of notes played
before it, which the model's own room can only reproduce if it has played those notes too. Before the start of a
file the lead-in is silence.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np

from mlx_ddsp.features import FEATURE_NAMES

class ExampleSet:
    """All examples of one split of a cache. Example i is (file, start frame); arrays are sliced on demand.

    n_samples / n_frames: the length of what `example` returns, the lead-in's `lead_in_samples` /
    `lead_in_frames` included.
    """

    def __init__(self, cache_dir: str | Path, split: str, lead_in_frames: int = 0):
        cache_dir = Path(cache_dir)
        manifest = json.loads((cache_dir / "manifest.json").read_text())
        self.stats = manifest["stats"]
        self.hop = manifest["example_samples"] // (manifest["example_frames"] - 1)
        self.lead_in_frames, self.lead_in_samples = lead_in_frames, lead_in_frames * self.hop
        self.n_samples = manifest["example_samples"] + self.lead_in_samples
        self.n_frames = manifest["example_frames"] + lead_in_frames
        self.files, self.names, self.index = [], [], []
        for entry in manifest["files"]:
            if entry["status"] != "ok" or entry["split"] != split:
                continue
            with np.load(cache_dir / "files" / f"{entry['key']}.npz") as data:
                self.files.append({k: data[k] for k in ("audio", *FEATURE_NAMES)})
            self.names.append(entry["path"])
            self.index += [(len(self.files) - 1, start) for start in entry["starts"]]

    def __len__(self) -> int:
        return len(self.index)

    def example(self, i: int) -> dict[str, np.ndarray]:
        """{"audio": (n_samples,), "f0_hz" / "confidence" / "loudness_db": (n_frames,)} as numpy arrays, the
        lead-in first. Lead-in frames before the file's start are silence: audio 0, loudness the file's quietest
        frame (dB), confidence 0, f0 the file's first (Hz)."""
        file, start = self.index[i]
        arrays = self.files[file]
        first = start - self.lead_in_frames
        pad = max(-first, 0)
        out = {k: arrays[k][first + pad : first + self.n_frames] for k in FEATURE_NAMES}
        out["audio"] = arrays["audio"][(first + pad) * self.hop : first * self.hop + self.n_samples]
        if pad:
            silence = {"audio": 0.0, "f0_hz": arrays["f0_hz"][0], "confidence": 0.0,
                       "loudness_db": arrays["loudness_db"].min()}
            out = {k: np.concatenate([np.full(pad * (self.hop if k == "audio" else 1), silence[k], v.dtype), v])
                   for k, v in out.items()}
        return out

    def stack(self, indices) -> dict[str, mx.array]:
        """Examples `indices` as one batch of MLX arrays."""
        examples = [self.example(int(i)) for i in indices]
        return {k: mx.array(np.stack([e[k] for e in examples])) for k in ("audio", *FEATURE_NAMES)}


class BatchStream:
    """Seeded, resumable batches: `batch(step)` depends only on (seed, step)."""

    def __init__(self, dataset: ExampleSet, batch_size: int, seed: int):
        if len(dataset) == 0:
            raise ValueError("the dataset has no examples")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self._permutations: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            if len(self._permutations) > 4:
                self._permutations.clear()
            self._permutations[epoch] = np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset))
        return self._permutations[epoch]

    def indices(self, step: int) -> np.ndarray:
        positions = step * self.batch_size + np.arange(self.batch_size)
        n = len(self.dataset)
        return np.array([self._permutation(int(p // n))[p % n] for p in positions])

    def batch(self, step: int, rows: slice = slice(None)) -> dict[str, mx.array]:
        """Batch `step`, or its `rows` only (a data-parallel rank's share, see `mlx_ddsp.distributed.shard`)."""
        return self.dataset.stack(self.indices(step)[rows])
