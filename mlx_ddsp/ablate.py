"""Ablation: train each branch of the model with the same steps and seed, evaluate all on the same held-out clips.

usage: python -m mlx_ddsp.ablate RECIPE [key=value ...] [--out DIR] [--set branches|speed|rooms]
                                 [--variants NAME ...] [--dry DIR] [--truth DIR]

  python -m mlx_ddsp.ablate recipes/flute_cpu.yaml train.steps=400 --out runs/ablation
  python -m mlx_ddsp.ablate recipes/flute_cpu.yaml train.max_minutes=8 train.steps=100000 --set speed
  python -m mlx_ddsp.ablate recipes/flute_cpu.yaml data.dir=corpus/rooms/flute/rt60_0.8 \
      "data.val_files=[flute_06.wav,flute_07.wav]" --set rooms --dry corpus/rooms/flute/rt60_0.8_direct

Variants (each a set of overrides on top of the recipe and your key=value words):
  --set branches (default)
    harmonic                   synth.noise=false synth.reverb=false model.encoder=false
    harmonic+noise             synth.noise=true  synth.reverb=false model.encoder=false
    harmonic+noise+z           synth.noise=true  synth.reverb=false model.encoder=true
    harmonic+noise+reverb      synth.noise=true  synth.reverb=true  model.encoder=false
    harmonic+noise+reverb+z    synth.noise=true  synth.reverb=true  model.encoder=true
  --set speed: gru@250, gru@50, mingru@250, mingru@50 (model.recurrent @ model.frame_rate)
  --set rooms: harmonic+noise with no room (reverb-off), every tap learned (free-ir), the parametric room with its
               fixed noise alone (parametric) or with 50 ms of early taps (parametric+early), and with its noise
               learned too (learned-noise+early: the default room)
Each trains in OUT/<variant> (resuming if it is already there), then is evaluated on the recipe's validation split
(with --dry, also its dry output against the clips' dry recordings: dry_spectral_loss; with --truth, its wet and
dry outputs' pitch against the clips' true f0: f0_truth_rpa, dry_f0_truth_rpa; see `mlx_ddsp.eval`).
All variants of a set train on the same examples, whichever of them you run: a set with a room variant gives every
variant, reverb-off run alone too, the room's lead-in (`mlx_ddsp.data`) and its pitch tracking (the room's tail damped
first, `features.f0_dereverb`), each unless the recipe or the command line sets it.
Ctrl-C stops the whole ablation after saving the current variant's checkpoint; the same command resumes.
OUT/ablation.json holds one record per variant (name, overrides, steps, training minutes, step time, mean model
metrics), OUT/ablation.md the table and OUT/ablation.png a chart of it. OUT defaults to runs/ablation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mlx_ddsp import checkpoint, figures
from mlx_ddsp.atomic import atomic_path
from mlx_ddsp.cli import UserError, entry_point, run
from mlx_ddsp.config import REVERB_LEAD_IN_S, load_config
from mlx_ddsp.eval import evaluate
from mlx_ddsp.metrics import BETTER, REPORTED
from mlx_ddsp.train import lead_in_frames_for, train


def _parametric_room(early_ms: int, learn_noise: bool = False) -> list[str]:
    """The overrides of a rooms-set variant with the parametric room: every room key set, whatever the defaults."""
    return ["synth.noise=true", "synth.reverb=true", "synth.reverb_model=parametric", f"synth.room_early_ms={early_ms}",
            f"synth.room_learn_noise={str(learn_noise).lower()}", "model.encoder=false"]


VARIANT_SETS = {
    "branches": {  # the paper's model, one branch at a time
        "harmonic": ["synth.noise=false", "synth.reverb=false", "model.encoder=false"],
        "harmonic+noise": ["synth.noise=true", "synth.reverb=false", "model.encoder=false"],
        "harmonic+noise+z": ["synth.noise=true", "synth.reverb=false", "model.encoder=true"],
        "harmonic+noise+reverb": ["synth.noise=true", "synth.reverb=true", "model.encoder=false"],
        "harmonic+noise+reverb+z": ["synth.noise=true", "synth.reverb=true", "model.encoder=true"],
    },
    "speed": {  # recurrent layer x decoder frame rate; compare them with train.max_minutes (same wall time)
        "gru@250": ["model.recurrent=gru", "model.frame_rate=250"],
        "gru@50": ["model.recurrent=gru", "model.frame_rate=50"],
        "mingru@250": ["model.recurrent=mingru", "model.frame_rate=250"],
        "mingru@50": ["model.recurrent=mingru", "model.frame_rate=50"],
    },
    "rooms": {  # the room models on the same decoder
        "reverb-off": ["synth.noise=true", "synth.reverb=false", "model.encoder=false"],
        "free-ir": ["synth.noise=true", "synth.reverb=true", "synth.reverb_model=free", "model.encoder=false"],
        "parametric": _parametric_room(early_ms=0),
        "parametric+early": _parametric_room(early_ms=50),
        "learned-noise+early": _parametric_room(early_ms=50, learn_noise=True),
    },
}


class Interrupted(UserError):
    """Ctrl-C or SIGTERM during a variant's training (its checkpoint is saved)."""


def ablate(recipe: str, overrides: list[str], out: Path, variants: dict[str, list[str]],
           whole_set: dict[str, list[str]], console: Console, dry_dir: str | None = None,
           truth_dir: str | None = None) -> list[dict]:
    """Train and evaluate each of `variants` (some of `whole_set`) on the examples the whole set shares."""
    records = []
    shared = shared_examples(recipe, overrides, whole_set)
    for name, variant in variants.items():
        run_dir = out / name.replace("+", "_").replace("@", "_at_")
        words = [*shared, *overrides, *variant, f"run_dir={run_dir}", "train.eval_at_end=false"]
        cfg = load_config(recipe, words)
        console.rule(f"[bold]{name}")
        summary = train(cfg, console)
        if summary["interrupted"]:
            raise Interrupted(f"stopped during {name}; run the same command to resume")
        result = evaluate(run_dir, which="best", console=console, dry_dir=dry_dir, truth_dir=truth_dir)
        state, _ = checkpoint.load(checkpoint.resolve(run_dir, "last"))
        records.append({"name": name, "overrides": variant, "run_dir": str(run_dir), "steps": summary["step"],
                        "train_minutes": round(state["elapsed_s"] / 60, 2), "best_step": result["step"],
                        "lead_in_seconds": lead_in_frames_for(cfg) / cfg.features.frame_rate,
                        "metrics": result["mean"]["model"], "baseline": result["mean"]["baseline"],
                        **({"room": result["room"]} if "room" in result else {})})
        write(out, records)
    return records


def shared_examples(recipe: str, overrides: list[str], variants: dict[str, list[str]]) -> list[str]:
    """The overrides that give every variant the same examples. data.lead_in_seconds and features.f0_dereverb
    default to what synth.reverb needs; where some variant has a room, each of them that neither the recipe nor the
    user sets is the room's for all (a variant without a room plays the lead-in and leaves it out of the loss
    too); else none."""
    configs = [load_config(recipe, [*overrides, *variant]) for variant in variants.values()]
    if not any(c.synth.reverb for c in configs):
        return []
    shared = []
    if all(c.data.lead_in_seconds is None for c in configs):
        shared.append(f"data.lead_in_seconds={REVERB_LEAD_IN_S}")
    if all(c.features.f0_dereverb is None for c in configs):
        shared.append("features.f0_dereverb=true")
    return shared


def write(out: Path, records: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "ablation.json") as tmp:
        Path(tmp).write_text(json.dumps(records, indent=1))
    names = metric_names(records)
    lines = ["| variant | steps | train min | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    baseline = {"name": "baseline (no learning)", "steps": "", "train_minutes": "", "metrics": records[0]["baseline"]}
    for r in records + [baseline]:
        cells = [_fmt(r["metrics"].get(m)) for m in names]
        lines.append(f"| {r['name']} | {r['steps']} | {r['train_minutes']} | " + " | ".join(cells) + " |")
    with atomic_path(out / "ablation.md") as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    figures.save(figures.variants_chart(records, [m for m in names if BETTER.get(m)]), out / "ablation.png")


def metric_names(records: list[dict]) -> list[str]:
    """The metrics any variant has, in eval's order (the band metrics exist above 16 kHz only)."""
    return [m for m in REPORTED if any(m in r["metrics"] for r in records)]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mlx_ddsp.ablate", description=__doc__.split("\n\n")[0],
                                     epilog="example: python -m mlx_ddsp.ablate recipes/flute_cpu.yaml "
                                            "train.steps=300 --out runs/ablation",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*", help="key=value recipe overrides applied to every variant")
    parser.add_argument("--out", default="runs/ablation", help="folder for the runs and the table")
    parser.add_argument("--set", default="branches", choices=list(VARIANT_SETS),
                        help="branches (default): the model's branches; speed: recurrent layer x decoder frame "
                             "rate; rooms: no room, a free impulse response, the parametric room (alone, and with "
                             "50 ms of early taps: the default)")
    parser.add_argument("--variants", nargs="+", help="only these variants of the set")
    parser.add_argument("--dry", help="a folder of the validation clips' dry recordings (see mlx_ddsp.eval --dry)")
    parser.add_argument("--truth", help="a folder of the validation clips' true f0 (see mlx_ddsp.eval --truth)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # key=value words before, between or after the options
    return run(lambda console: _ablate_and_print(args, console))


def _ablate_and_print(args, console: Console) -> None:
    whole_set = VARIANT_SETS[args.set]
    unknown = sorted(set(args.variants or []) - set(whole_set))
    if unknown:
        raise UserError(f"unknown variant(s) {unknown}; the {args.set} set has {list(whole_set)}")
    variants = {k: v for k, v in whole_set.items() if not args.variants or k in args.variants}
    records = ablate(args.recipe, args.overrides, Path(args.out), variants, whole_set, console, args.dry, args.truth)
    table = Table(title="ablation: held-out metrics (best checkpoint of each variant)")
    names = metric_names(records)
    for column in ("variant", "steps", *names):
        table.add_column(column, justify="right")
    for r in records:
        table.add_row(r["name"], str(r["steps"]), *(_fmt(r["metrics"].get(m)) for m in names))
    console.print(table)
    console.print(f"wrote {Path(args.out) / 'ablation.md'}, ablation.png and ablation.json")


if __name__ == "__main__":
    entry_point(main)
