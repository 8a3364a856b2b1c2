"""Data-parallel training over the processes `mlx.launch` starts, with MLX's own engine (`mx.distributed`).

    mlx.launch -n 2 --backend ring -- python -m mlx_ddsp.train recipes/smoke.yaml        # two processes, one machine
    mlx.launch --hostfile hosts.json --backend ring -- python -m mlx_ddsp.train RECIPE    # one per machine

Started without `mlx.launch`, `init()` returns a group of one and training is exactly the single-process run.
Every process holds the same parameters (rank 0's, broadcast at the start, so a resumed run may use another number
of processes), takes its rows of each global batch (`shard`: train.batch_size stays the global batch; when it does
not divide, the first ranks take one example more and each gradient is weighted by its share of the batch, so the
sum is the gradient of the global batch's mean loss), and the gradients are summed with `nn.average_gradients`
(few, large reductions) before the same clipped update everywhere. Rank 0 alone writes (logs, checkpoints,
renders, the report, the cache); `agree` turns a stop request or the time budget on any rank into a stop on all.
A lost peer (killed, crashed) makes MLX's ring backend raise within seconds (`PeerLost` names it) or, inside a
reduction already under way, block; `mlx.launch` then sends the others SIGTERM and `Watchdog` ends a process that
the signal finds blocked in a reduction for GRACE_S seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from mlx_ddsp.cli import UserError


GRACE_S = 10.0  # how long a stop signal waits for a blocked reduction before the Watchdog ends the process
_waiting_since: list[float | None] = [None]  # when this process entered the reduction it is in (None: not in one)


class PeerLost(UserError):
    """Another training process stopped (killed or crashed); this one stops too."""


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    group: mx.distributed.Group | None
    rank: int = 0
    size: int = 1

    @property
    def is_writer(self) -> bool:
        return self.rank == 0


ALONE = World(None)  # a single process


def init() -> World:
    """The group `mlx.launch` set up (a group of one without it)."""
    if not mx.distributed.is_available():
        return ALONE
    group = mx.distributed.init()
    return World(group, group.rank(), group.size())


def shard(batch_size: int, world: World) -> tuple[int, int]:
    """(first, stop): this rank's rows of a global batch; the first `batch_size % size` ranks take one more."""
    if batch_size < world.size:
        raise UserError(f"train.batch_size={batch_size} is smaller than the {world.size} training processes; "
                        "give every process at least one example")
    base, extra = divmod(batch_size, world.size)
    first = world.rank * base + min(world.rank, extra)
    return first, first + base + (world.rank < extra)


def _collective(fn):
    """Run a collective, turning a lost connection into PeerLost."""
    _waiting_since[0] = time.monotonic()
    try:
        return fn()
    except RuntimeError as e:
        if "[ring]" in str(e) or "peer" in str(e):
            raise PeerLost(f"lost the connection to another training process ({e}); it stopped or was killed, "
                           "so this one stops too: start the same command again to resume from the last "
                           "checkpoint") from e
        raise
    finally:
        _waiting_since[0] = None


class Watchdog:
    """With several processes: ends this one when a signal (SIGTERM from `mlx.launch` after another process died,
    or Ctrl-C) finds it in a reduction that has not returned GRACE_S seconds later. Python runs signal handlers
    only between bytecodes, so a reduction blocked on a killed peer would otherwise never let the process stop;
    `signal.set_wakeup_fd` tells this thread about the signal while the main thread is blocked. Install it after
    the signal handlers; `close()` restores the previous wake-up fd."""

    def __init__(self, world: World):
        self.previous = None
        if world.size == 1:
            return
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        self.previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(read_fd, world.rank), daemon=True).start()

    @staticmethod
    def _watch(read_fd: int, rank: int) -> None:
        number = os.read(read_fd, 1)[0]
        signalled = time.monotonic()
        while True:
            time.sleep(0.5)
            since = _waiting_since[0]
            if since is not None and time.monotonic() - max(since, signalled) > GRACE_S:
                print(f"error: rank {rank}: stopped by {signal.Signals(number).name} while waiting for the other "
                      f"training processes, which did not answer for {GRACE_S:g} s: one of them stopped or was "
                      "killed. Run the same command again to resume from the last checkpoint.", file=sys.stderr,
                      flush=True)
                os._exit(1)

    def close(self) -> None:
        if self.previous is not None:
            signal.set_wakeup_fd(self.previous)


def sum_gradients(loss: mx.array, grads: dict, weight: float, world: World) -> tuple[mx.array, dict]:
    """The global batch's loss and gradients from each rank's (its rows' mean, weighted by its share of the rows)."""
    if world.size == 1:
        return loss, grads
    scale = weight * world.size  # average_gradients divides the sum by the number of processes
    grads = nn.average_gradients(tree_map(lambda g: g * scale, grads), group=world.group)
    loss = mx.distributed.all_sum(loss * weight, group=world.group)
    _collective(lambda: mx.eval(loss, grads))
    return loss, grads


def broadcast(tree, world: World):
    """Rank 0's values of a tree of arrays on every rank (a sum with zeros elsewhere), in one reduction."""
    if world.size == 1:
        return tree
    flat = sorted(tree_flatten(tree), key=lambda kv: kv[0])  # one order on every rank, whatever the dicts' order
    if not flat:
        return tree
    dtypes = sorted({v.dtype for _, v in flat}, key=str)
    out = []
    for dtype in dtypes:  # one reduction per dtype (float32 parameters and moments, the uint32 RNG key...)
        items = [(k, v) for k, v in flat if v.dtype == dtype]
        packed = mx.concatenate([v.reshape(-1) for _, v in items])
        if world.rank != 0:
            packed = mx.zeros_like(packed)
        packed = mx.distributed.all_sum(packed, group=world.group)
        _collective(lambda: mx.eval(packed))
        offset = 0
        for k, v in items:
            out.append((k, packed[offset : offset + v.size].reshape(v.shape)))
            offset += v.size
    return tree_unflatten(out)


def synchronize(model, optimizer, step: int, world: World) -> int:
    """Give every rank rank 0's parameters, optimizer state, random state and step (a fresh or resumed run)."""
    if world.size == 1:
        return step
    synced = broadcast({"model": model.parameters(), "optimizer": optimizer.state, "rng": mx.random.state[0],
                        "step": mx.array([step])}, world)
    model.update(synced["model"])
    optimizer.state = synced["optimizer"]
    high, low = synced["rng"].tolist()
    mx.random.seed((high << 32) | low)
    return int(synced["step"].item())


def same_as_writer(values: list[float], world: World) -> bool:
    """Whether every rank's `values` equal rank 0's (the same answer on all ranks)."""
    if world.size == 1:
        return True
    writers = broadcast({"values": mx.array(values)}, world)["values"].tolist()
    return not agree([writers != values], world)[0]


def agree(flags: list[bool], world: World) -> list[bool]:
    """Each flag is true on every rank if it is true on any."""
    if world.size == 1:
        return flags
    summed = mx.distributed.all_sum(mx.array([float(f) for f in flags]), group=world.group)
    _collective(lambda: mx.eval(summed))
    return [bool(x > 0) for x in summed.tolist()]


def barrier(world: World) -> None:
    agree([False], world)


def fingerprint(manifest: dict) -> list[float]:
    """64 bits of a hash of the cache's examples, as four 16-bit numbers (exact in float32), compared across ranks."""
    examples = [(e["path"], e.get("key"), e.get("split"), e.get("starts")) for e in manifest["files"]]
    digest = hashlib.sha256(json.dumps([examples, manifest["example_samples"]]).encode()).digest()
    return [float(int.from_bytes(digest[i : i + 2], "big")) for i in range(0, 8, 2)]
