"""What a perfect room would give a trained decoder: a model trained on the direct sound, played through the true room.

    python -m mlx_ddsp.train recipes/flute_cpu.yaml data.dir=corpus/rooms/cello/rt60_0.8_direct \
        "data.val_files=[cello_06.wav,cello_07.wav]" train.steps=1000 train.max_minutes=0 data.lead_in_seconds=1.0 \
        run_dir=runs/cello_0.8_direct
    python -m mlx_ddsp.eval runs/cello_0.8_direct
    python benchmarks/room_oracle.py runs/cello_0.8_direct corpus/rooms/cello --room rt60_0.8

RUN_DIR is a run trained on a `scripts/render_rooms.py` folder's direct sound (OUT/rt60_<T>_direct) and evaluated
(RUN_DIR/eval/<clip>/recon.wav, its dry output for each held-out clip). Each clip's output goes through the true
room (OUT/rt60_<T>/room_ir.npy at 16 kHz, normalised at its direct path) and is scored against the reverberant
recording with the eval metrics: the spectral loss and f0 outliers a room model would reach with this decoder if it
learned the room exactly and the decoder the instrument alone. Compare it with `mlx_ddsp.ablate --set rooms` on the
reverberant folder at the same steps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mlx.core as mx
import numpy as np

from common import write_json
from room_fit import true_impulse_response
from mlx_ddsp.audio import load_audio
from mlx_ddsp.config import load_config
from mlx_ddsp.metrics import clip_metrics, track
from mlx_ddsp.synth import fft_convolve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run trained on the direct sound and evaluated (RUN_DIR/eval)")
    parser.add_argument("rooms", help="the scripts/render_rooms.py folder")
    parser.add_argument("--room", required=True, help="its room folder, e.g. rt60_0.8")
    parser.add_argument("--out", help="JSON file for the records")
    args = parser.parse_args()
    run, root = Path(args.run_dir), Path(args.rooms)
    cfg = load_config(run / "config.yaml", [])
    rate = cfg.data.sample_rate
    info = next(r for r in json.loads((root / "rooms.json").read_text()) if r["folder"] == args.room)
    clips = sorted(p.parent.name for p in (run / "eval").glob("*/recon.wav"))
    ir = true_impulse_response(root / info["folder"], rate)
    records = []
    for clip in clips:
        dry_output = load_audio(run / "eval" / clip / "recon.wav", rate)
        wet = load_audio(root / info["folder"] / f"{clip}.wav", rate)
        n = min(len(dry_output), len(wet))
        through_room = np.array(fft_convolve(mx.array(dry_output[None, :n]), mx.array(ir.astype(np.float32))))[0]
        metrics = clip_metrics(wet[:n], through_room, track(wet[:n], cfg), cfg)
        records.append({"clip": clip, "room": info["folder"], "spectral_loss": metrics["spectral_loss"],
                        "f0_outlier_ratio": metrics["f0_outlier_ratio"]})
        print(records[-1])
    print(f"mean: spectral_loss {np.mean([r['spectral_loss'] for r in records]):.3f}, "
          f"f0_outlier_ratio {np.mean([r['f0_outlier_ratio'] for r in records]):.4f}")
    write_json(args.out, records)


if __name__ == "__main__":
    main()
