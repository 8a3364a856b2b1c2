"""mlx_ddsp: DDSP instrument models on MLX. `python -m mlx_ddsp` lists the commands."""

from __future__ import annotations

import sys

COMMANDS = [
    ("train", "preprocess, train, and evaluate a model from a recipe (resumes an existing run dir)",
     "python -m mlx_ddsp.train recipes/flute_cpu.yaml"),
    ("preprocess", "build the feature cache of a recipe's data folder (train runs it for you)",
     "python -m mlx_ddsp.preprocess recipes/flute.yaml data.dir=my_wavs/"),
    ("eval", "render held-out clips, score them against a baseline, write report.html",
     "python -m mlx_ddsp.eval runs/flute_cpu"),
    ("resynth", "timbre transfer: play any recording through a trained model",
     "python -m mlx_ddsp.resynth runs/flute_cpu voice.wav voice_flute.wav --auto-adjust"),
    ("stream", "play a recording through a trained model as a live stream (fixed latency, block by block)",
     "python -m mlx_ddsp.stream runs/flute_cpu voice.wav voice_live.wav --block 256"),
    ("ablate", "train and evaluate model variants (branches, or speed options) side by side",
     "python -m mlx_ddsp.ablate recipes/flute_cpu.yaml train.steps=300 --out runs/ablation"),
    ("export", "write a run trained with recipes/vst.yaml as a model the DDSP-VST plugin plays",
     "python -m mlx_ddsp.export runs/vst_cpu --format ddsp-vst --out flute.tflite"),
]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    lines = ["usage: python -m mlx_ddsp.<command> ... (each command takes --help)", "", "commands:"]
    width = max(len(name) for name, _, _ in COMMANDS)
    for name, purpose, example in COMMANDS:
        lines += [f"  {name:<{width}}  {purpose}", f"  {'':<{width}}  e.g. {example}"]
    lines += ["", "recipes: recipes/flute.yaml (MacBook GPU), recipes/flute_cpu.yaml (about 30 min on a 2-core CPU),",
              "         recipes/vst_cpu.yaml (a DDSP-VST model), recipes/smoke.yaml (a 1-minute check);",
              "         override any key with key.sub=value words."]
    print("\n".join(lines))
    return 0 if not argv or argv[0] in ("-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main())
