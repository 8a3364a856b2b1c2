"""Can a room model become the recording's room? Fit it with the instrument's own direct sound as the dry part.

    python scripts/render_rooms.py corpus/instruments/cello corpus/rooms/cello --rt60 0.4 0.8 1.4 --seed 1
    python benchmarks/room_fit.py corpus/rooms/cello --room rt60_0.8 --out results.json

For one room of a `scripts/render_rooms.py` folder: a gain on the direct sound (OUT/rt60_<T>_direct) and a room
model (`mlx_ddsp.rooms.ParametricRoom` with 50 ms of early taps, its noise fixed or learned: `--variants`) are
trained together with Adam (learning rate 1e-3, batch 8 of 1 s lead-in + 2 s, the training loss on the 2 s) to turn
the direct sound of files 00-05 into their reverberant recording. Then, on the first 20 s of files 06 and 07: the
spectral loss (beside that of the direct sound through the true room, resampled to 16 kHz: not 0, the files being
16-bit), the learned RT60, and the learned impulse response's correlation with the true one (normalised at the
direct path, resampled to 16 kHz): 0 for an unrelated room, 1 for the room itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import soundfile as sf
import soxr

from common import write_json
from mlx_ddsp.audio import load_audio
from mlx_ddsp.config import LossConfig
from mlx_ddsp.losses import recipe_loss
from mlx_ddsp.rooms import ParametricRoom, rt60_from_ir
from mlx_ddsp.synth import reverb

SAMPLE_RATE = 16000
LEAD_IN, WINDOW = SAMPLE_RATE, 2 * SAMPLE_RATE
GAIN_DB_UNIT = 100.0

ROOMS = {  # as ablate's rooms set names them: what each learns beyond the decays, levels and 50 ms of early taps
    "parametric+early": {},
    "learned-noise+early": {"learn_noise": True},
}


class DirectThroughRoom(nn.Module):
    def __init__(self, room: str):
        super().__init__()
        self.room = ParametricRoom(3 * SAMPLE_RATE, SAMPLE_RATE, n_early=800, **ROOMS[room])
        self.gain = mx.array(0.0)  # in GAIN_DB_UNIT dB, so that it moves as fast as a decoder's output level

    def __call__(self, direct: mx.array) -> mx.array:
        dry = direct * mx.power(10.0, GAIN_DB_UNIT * self.gain / 20.0)
        return reverb(dry, self.room.impulse_response()[: direct.shape[-1]])


def true_impulse_response(room_folder: Path, sample_rate: int) -> np.ndarray:
    """A render_rooms.py room's impulse response at sample_rate, from its direct path (tap 0, 1) on: the room a
    model's dry output would go through."""
    ir_rate = sf.info(next(room_folder.glob("*.wav"))).samplerate  # room_ir.npy is at its files' rate
    ir = soxr.resample(np.load(room_folder / "room_ir.npy").astype(np.float64), ir_rate, sample_rate)
    direct_at = int(np.argmax(np.abs(ir)))
    return ir[direct_at:] / ir[direct_at]


def fit(wet: list, direct: list, room: str, steps: int, seed: int = 0) -> DirectThroughRoom:
    rng = np.random.default_rng(seed)
    model = DirectThroughRoom(room)
    optimizer = optim.Adam(learning_rate=1e-3, bias_correction=True)

    def loss(x, y):
        return recipe_loss(LossConfig(), SAMPLE_RATE, y[:, LEAD_IN:], model(x)[:, LEAD_IN:])

    loss_and_grad = nn.value_and_grad(model, loss)
    for _ in range(steps):
        picks = [(i, rng.integers(0, len(wet[i]) - LEAD_IN - WINDOW)) for i in rng.integers(0, 6, 8)]
        x = mx.array(np.stack([direct[i][s : s + LEAD_IN + WINDOW] for i, s in picks]))
        y = mx.array(np.stack([wet[i][s : s + LEAD_IN + WINDOW] for i, s in picks]))
        _, grads = loss_and_grad(x, y)
        optimizer.update(model, grads)
        mx.eval(model.parameters(), optimizer.state)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rooms", help="a folder written by scripts/render_rooms.py")
    parser.add_argument("--room", required=True, help="its room folder, e.g. rt60_0.8")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--variants", nargs="+", choices=list(ROOMS), default=list(ROOMS))
    parser.add_argument("--out", help="JSON file for the records")
    args = parser.parse_args()
    root = Path(args.rooms)
    info = next(r for r in json.loads((root / "rooms.json").read_text()) if r["folder"] == args.room)
    names = sorted(p.name for p in (root / info["folder"]).iterdir() if p.suffix == ".wav")
    wet = [load_audio(root / info["folder"] / n, SAMPLE_RATE) for n in names]
    direct = [load_audio(root / info["direct_folder"] / n, SAMPLE_RATE) for n in names]
    true_ir = true_impulse_response(root / info["folder"], SAMPLE_RATE)
    excerpts = [(mx.array(direct[i][None, : 20 * SAMPLE_RATE]), mx.array(wet[i][None, LEAD_IN : 20 * SAMPLE_RATE]))
                for i in (6, 7)]

    def held_out_loss(render) -> float:
        return float(np.mean([recipe_loss(LossConfig(), SAMPLE_RATE, y, render(x)[:, LEAD_IN:]).item()
                              for x, y in excerpts]))

    true_room = mx.array(true_ir[: 3 * SAMPLE_RATE].astype(np.float32))
    records = [{"room": info["folder"], "variant": "true room", "spectral_loss": held_out_loss(
        lambda x: reverb(x, true_room[: x.shape[-1]])), "rt60_s": info["rt60_measured_s"]}]
    print(records[-1])
    for name in args.variants:
        model = fit(wet, direct, name, args.steps)
        ir = np.array(model.room.impulse_response(), np.float64)
        n = min(len(ir), len(true_ir))
        correlation = np.dot(ir[1:n], true_ir[1:n]) / (np.linalg.norm(ir[1:n]) * np.linalg.norm(true_ir[1:n]))
        records.append({"room": info["folder"], "variant": name, "steps": args.steps,
                        "spectral_loss": held_out_loss(model), "ir_correlation": float(correlation),
                        "rt60_s": rt60_from_ir(ir, SAMPLE_RATE),
                        "true_rt60_s": info["rt60_measured_s"]})
        print(records[-1])
    write_json(args.out, records)


if __name__ == "__main__":
    main()
