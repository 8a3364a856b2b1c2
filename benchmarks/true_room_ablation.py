"""An ablation variant whose room is the recording's true room, held fixed: what a perfectly learned room gives.

    python benchmarks/true_room_ablation.py --room corpus/rooms/cello/rt60_0.8 \
        recipes/flute_cpu.yaml data.dir=corpus/rooms/cello/rt60_0.8 "data.val_files=[cello_06.wav,cello_07.wav]" \
        train.steps=1000 train.max_minutes=0 features.f0_dereverb=true --set rooms --variants true-room \
        --dry corpus/rooms/cello/rt60_0.8_direct --truth corpus/instruments/cello_truth --out runs/true_room_cello_0.8

Everything after --room is `python -m mlx_ddsp.ablate`'s command line; its rooms set gains one variant, `true-room`:
the model of `free-ir` (`synth.reverb_model=free`, dry + dry convolved with the impulse response) whose taps are
set, before training, to the `scripts/render_rooms.py` room folder's own impulse response (ROOM/room_ir.npy at the
recipe's rate, from its direct path on, normalised there: `benchmarks/room_fit.py`'s `true_impulse_response`) and
frozen. The decoder trains through the room the recording was made in, so nothing is left to learn about the
room: its held-out spectral loss against `reverb-off`'s (the same set, seed and steps) is the gain of a room model
that learned the room exactly, with this decoder (benchmarks/ROOMS.md: the default room gains more). The
checkpoints hold the true taps, so `python -m mlx_ddsp.eval` scores the run as any other (its "learned room" is
the true one). The rooms set's other variants run as in ablate.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlx.core as mx

from room_fit import true_impulse_response
from mlx_ddsp import ablate, train
from mlx_ddsp.cli import entry_point

VARIANT = "true-room"  # ablate trains it in OUT/true-room


def main() -> int:
    rest_help = "the rest, python -m mlx_ddsp.ablate's:\n" + ablate.build_parser().format_help()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=rest_help,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--room", required=True, help="a scripts/render_rooms.py room folder (ROOM/room_ir.npy)")
    args, rest = parser.parse_known_args()
    build = train.build_model

    def with_true_room(cfg):
        """The recipe's model; in the true-room variant (free-ir's model), its taps are the true room's, frozen."""
        model = build(cfg)
        if Path(cfg.run_dir).name == VARIANT:
            n_taps = model.reverb_ir.shape[0]
            ir = true_impulse_response(Path(args.room), cfg.data.sample_rate)[:n_taps].astype("float32")
            ir[0] = 0.0  # the direct path is the model's dry path
            taps = mx.zeros((n_taps,))
            taps[: len(ir)] = mx.array(ir)
            model.reverb_ir = taps
            model.freeze(keys=["reverb_ir"], strict=True)
        return model

    train.build_model = with_true_room
    rooms = ablate.VARIANT_SETS["rooms"]
    rooms[VARIANT] = rooms["free-ir"]
    return ablate.main(rest)


if __name__ == "__main__":
    entry_point(main)
