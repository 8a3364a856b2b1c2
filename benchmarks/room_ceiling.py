"""What a room model can gain at best on a reverberant set, with the instrument's own direct sound as the dry part.

    python scripts/render_rooms.py corpus/instruments/cello corpus/rooms/cello --rt60 0.4 0.8 1.4 --seed 1
    python benchmarks/room_ceiling.py corpus/rooms/cello --files cello_06.wav cello_07.wav --out results.json

For each room of a `scripts/render_rooms.py` folder (OUT/rooms.json) and each file, the spectral loss (the
training loss, FFT sizes 2048..64 at 16 kHz) against the reverberant recording of:
  - dry: its direct sound alone (OUT/rt60_<T>_direct), at the best gain: the best a model without a room can do
    with a perfect instrument model;
  - parametric: the direct sound plus the same through `mlx_ddsp.rooms.ParametricRoom` at the true room's RT60,
    at the best gain and room level: the best a statistical room can do (its noise is not the room's);
  - true room: 0 by construction (the recording is the direct sound through its room).
The gains and levels are searched on grids (2 dB and 2.5 dB steps); each record's "gain" is
1 - parametric / dry. A model trained on the recording has more to
get right than its room, so its gain from a room is smaller than parametric's over dry here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mlx.core as mx
import numpy as np
from scipy.signal import fftconvolve  # scipy comes with pyroomacoustics, which render_rooms needs

from common import write_json
from mlx_ddsp.audio import load_audio
from mlx_ddsp.config import LossConfig
from mlx_ddsp.losses import recipe_loss
from mlx_ddsp.rooms import ParametricRoom

SAMPLE_RATE = 16000
GAINS_DB = np.arange(-4.0, 24.1, 2.0)
LEVELS_DB = np.arange(-15.0, 15.1, 2.5)


def best(loss_of, grid) -> tuple[float, float]:
    """(lowest loss, its grid value)."""
    losses = [loss_of(v) for v in grid]
    i = int(np.argmin(losses))
    return losses[i], float(grid[i])


def room_ceiling(wet: np.ndarray, direct: np.ndarray, rt60_s: float) -> dict:
    """wet, direct: (n,) float32 at SAMPLE_RATE. The best dry-only and dry + parametric-room losses."""
    target = mx.array(wet[None])

    def loss(x: np.ndarray) -> float:
        return float(recipe_loss(LossConfig(), SAMPLE_RATE, target, mx.array(x[None].astype(np.float32))))

    dry_loss, dry_gain = best(lambda g: loss(10 ** (g / 20) * direct), GAINS_DB)
    rows = []
    for level in LEVELS_DB:
        ir = np.array(ParametricRoom(3 * SAMPLE_RATE, SAMPLE_RATE, rt60_s, float(level)).impulse_response())
        reverberant = direct + fftconvolve(direct, ir)[: len(direct)]
        rows.append((*best(lambda g: loss(10 ** (g / 20) * reverberant), GAINS_DB), float(level)))
    room_loss, room_gain, room_level = min(rows)
    return {"dry_loss": dry_loss, "dry_gain_db": dry_gain, "parametric_loss": room_loss,
            "parametric_gain_db": room_gain, "parametric_level_db": room_level,
            "gain": 1.0 - room_loss / dry_loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rooms", help="a folder written by scripts/render_rooms.py")
    parser.add_argument("--files", nargs="+", help="file names to score (default: all)")
    parser.add_argument("--seconds", type=float, default=0.0, help="score the first SECONDS of each file (0: all)")
    parser.add_argument("--out", help="JSON file for the records")
    args = parser.parse_args()
    root = Path(args.rooms)
    records = []
    for room in json.loads((root / "rooms.json").read_text()):
        names = args.files or sorted(p.name for p in (root / room["folder"]).iterdir() if p.suffix == ".wav")
        for name in names:
            wet = load_audio(root / room["folder"] / name, SAMPLE_RATE)
            direct = load_audio(root / room["direct_folder"] / name, SAMPLE_RATE)
            if args.seconds:
                wet, direct = wet[: int(args.seconds * SAMPLE_RATE)], direct[: int(args.seconds * SAMPLE_RATE)]
            record = {"room": room["folder"], "rt60_s": room["rt60_measured_s"], "file": name,
                      **room_ceiling(wet, direct, room["rt60_measured_s"])}
            records.append(record)
            print(f"{room['folder']} {name}: dry {record['dry_loss']:.3f} (gain {record['dry_gain_db']:+.0f} dB), "
                  f"parametric {record['parametric_loss']:.3f} (level {record['parametric_level_db']:+.1f} dB), "
                  f"{-100 * record['gain']:+.1f} %")
    for folder in dict.fromkeys(r["room"] for r in records):
        rows = [r for r in records if r["room"] == folder]
        dry, parametric = np.mean([r["dry_loss"] for r in rows]), np.mean([r["parametric_loss"] for r in rows])
        print(f"{folder}: mean dry {dry:.3f}, parametric {parametric:.3f} ({100 * (parametric / dry - 1):+.1f} %)")
    write_json(args.out, records)


if __name__ == "__main__":
    main()
