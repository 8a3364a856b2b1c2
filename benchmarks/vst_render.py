"""How close DDSP-VST's playing of an exported model comes to mlx_ddsp's own render, on a run's held-out clips.

    python -m mlx_ddsp.export runs/vst_cpu --format ddsp-vst --out flute.tflite
    python benchmarks/vst_render.py runs/vst_cpu flute.tflite --out benchmarks/results/vst_render_flute.json

Per clip (the run's validation files, whole), the spectral loss (the recipe's loss) against the recording of
- ours: mlx_ddsp's render of the clip's features (as `python -m mlx_ddsp.eval` renders them);
- plugin: the exported file run frame by frame in the LiteRT interpreter (the state fed back) on the same features
  at the decoder's 50 frames/s, its four outputs rendered by `mlx_ddsp.vst_synth.render_like_plugin` and advanced
  one hop (20 ms) to mlx_ddsp's frame timing.
Both start from the same features (mlx_ddsp's pitch and power, not the plugin's CREPE pitch), so the difference
is the plugin's synthesis (its control interpolation, per-hop noise) and the interpreter.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import zipfile
from pathlib import Path

import mlx.core as mx
import numpy as np
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402

from mlx_ddsp import checkpoint  # noqa: E402
from mlx_ddsp.audio import save_audio  # noqa: E402
from mlx_ddsp.eval import collect_clips, render_clip  # noqa: E402
from mlx_ddsp.export import INPUT_NAMES, OUTPUT_NAMES  # noqa: E402
from mlx_ddsp.losses import recipe_loss  # noqa: E402
from mlx_ddsp.vst_synth import HOP, render_like_plugin  # noqa: E402


def plugin_outputs(path: Path, f0_hz: np.ndarray, power_db: np.ndarray) -> dict:
    """The exported model run frame by frame, as the plugin runs it: (T,) inputs -> the four outputs per frame."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=path.read_bytes(), num_threads=1)
    it.allocate_tensors()
    index = {d["name"]: d["index"] for d in it.get_input_details() + it.get_output_details()}
    f0_scaled = ((12.0 * np.log2(np.clip(f0_hz, 8.18, 12543.84) / 440.0) + 69.0) / 127.0).astype(np.float32)
    pw_scaled = (power_db / 80.0 + 1.0).astype(np.float32)
    state = np.zeros(512, np.float32)
    frames = []
    for f0, pw in zip(f0_scaled, pw_scaled):
        it.set_tensor(index[INPUT_NAMES[0]], f0[None])
        it.set_tensor(index[INPUT_NAMES[1]], pw[None])
        it.set_tensor(index[INPUT_NAMES[2]], state)
        it.invoke()
        frames.append([it.get_tensor(index[name]).copy() for name in OUTPUT_NAMES])
        state = frames[-1][3]
    amplitude, harmonics, noise, _ = (np.stack(x) for x in zip(*frames))
    return {"amplitude": amplitude[:, 0], "harmonics": harmonics, "noise": noise}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("tflite", type=Path, help="the run exported with --format ddsp-vst")
    parser.add_argument("--which", default="best", help="the checkpoint that was exported (default best)")
    parser.add_argument("--out", help="JSON file for the results")
    parser.add_argument("--wav-dir", type=Path, help="also write CLIP_plugin.wav and CLIP_ours.wav here, to listen")
    args = parser.parse_args(argv)
    console = Console()
    model, cfg, state = checkpoint.load_trained(args.run_dir, args.which)
    with zipfile.ZipFile(args.tflite) as archive:
        exported_step = json.loads(archive.read("metadata.json")).get("training_step")
    if exported_step != state.get("step"):
        parser.error(f"{args.tflite} holds step {exported_step}, the {args.which} checkpoint is step {state.get('step')}")
    stride = cfg.features.frame_rate // cfg.model.frame_rate
    if args.wav_dir:
        args.wav_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for name, features in collect_clips(cfg, None, console):
        f0_hz, power_db = features["f0_hz"][::stride], features["loudness_db"][::stride]
        n_samples = (len(f0_hz) - 1) * HOP
        target = mx.array(features["audio"][None, :n_samples])
        ours = render_clip(model, features, n_samples)["audio"]
        outputs = plugin_outputs(args.tflite, f0_hz, power_db)
        plugin = render_like_plugin(outputs["amplitude"], outputs["harmonics"], outputs["noise"], f0_hz)[HOP:]
        if args.wav_dir:
            for who, audio in (("plugin", plugin), ("ours", ours)):
                save_audio(args.wav_dir / f"{name}_{who}.wav", audio, cfg.data.sample_rate)
        loss = {who: float(recipe_loss(cfg.loss, cfg.data.sample_rate, target, mx.array(audio[None])).item())
                for who, audio in (("ours", ours), ("plugin", plugin))}
        records.append({"clip": name, "seconds": n_samples / cfg.data.sample_rate, "spectral_loss_ours": loss["ours"],
                        "spectral_loss_plugin": loss["plugin"], "plugin_over_ours": loss["plugin"] / loss["ours"]})
        console.print(f"{name}: ours {loss['ours']:.3f}, plugin-style {loss['plugin']:.3f} "
                      f"({100 * (loss['plugin'] / loss['ours'] - 1):+.1f} %)")
    mean = {k: statistics.mean(r[k] for r in records) for k in ("spectral_loss_ours", "spectral_loss_plugin")}
    ratio = mean["spectral_loss_plugin"] / mean["spectral_loss_ours"]
    console.print(f"mean over {len(records)} clips: ours {mean['spectral_loss_ours']:.3f}, plugin-style "
                  f"{mean['spectral_loss_plugin']:.3f} ({100 * (ratio - 1):+.1f} %)")
    write_json(args.out, [{"run": str(args.run_dir), "step": state.get("step"), "tflite": str(args.tflite),
                           "mean": {**mean, "plugin_over_ours": ratio}, "clips": records}])
    return 0


if __name__ == "__main__":
    sys.exit(main())
