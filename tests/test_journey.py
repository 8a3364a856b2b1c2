"""The new user's journey on the smoke recipe, and every command the README quotes."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mlx_ddsp import ablate
from mlx_ddsp import eval as evaluation
from mlx_ddsp import export, preprocess, resynth, stream, train
from mlx_ddsp.config import load_config

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ROOMS = ROOT / "benchmarks" / "ROOMS.md"  # the room model's measurements, moved out of the README


def test_journey_preprocess_train_eval_resynth_resume(tmp_path, capsys):
    run = tmp_path / "run"
    common = [f"run_dir={run}", f"data.dir={ROOT / 'data' / 'flute'}", f"data.cache_dir={tmp_path / 'cache'}"]
    smoke = str(ROOT / "recipes" / "smoke.yaml")
    assert preprocess.main([smoke, *common]) == 0
    assert train.main([smoke, *common, "train.steps=40", "train.eval_every=20", "train.render_every=20"]) == 0
    for path in ("config.yaml", "logs/metrics.jsonl", "checkpoints/best/model.safetensors",
                 "renders/step_000040", "eval/report.html", "eval/metrics.json", "eval/flute_06/recon.wav"):
        assert (run / path).exists(), path
    t = np.arange(2 * 16000) / 16000
    sf.write(tmp_path / "me.wav", 0.3 * np.sin(2 * np.pi * 392 * t).astype(np.float32), 16000)
    assert resynth.main([str(run), str(tmp_path / "me.wav"), str(tmp_path / "me_flute.wav"), "--auto-adjust"]) == 0
    assert len(sf.read(tmp_path / "me_flute.wav")[0]) == len(t)
    t_48k = np.arange(48000) / 48000  # one second at a studio rate, played live
    sf.write(tmp_path / "me_48k.wav", 0.3 * np.sin(2 * np.pi * 392 * t_48k).astype(np.float32), 48000)
    capsys.readouterr()
    assert stream.main([str(run), str(tmp_path / "me_48k.wav"), str(tmp_path / "me_live.wav"), "--block", "256"]) == 0
    live, rate = sf.read(tmp_path / "me_live.wav")
    assert rate == 48000 and len(live) == len(t_48k) and np.abs(live).max() > 1e-3
    assert "latency" in capsys.readouterr().err
    assert train.main([smoke, *common, "train.steps=50", "train.eval_at_end=false"]) == 0
    assert "resuming" in capsys.readouterr().err
    assert load_config(run / "checkpoints" / "step_000050" / "config.yaml").train.steps == 50


def test_errors_are_one_sentence_not_a_traceback(tmp_path, capsys):
    assert train.main([str(tmp_path / "missing.yaml")]) == 1
    assert train.main([str(ROOT / "recipes" / "smoke.yaml"), "train.stepz=3"]) == 1
    assert evaluation.main([str(tmp_path)]) == 1
    assert resynth.main([str(tmp_path), str(tmp_path / "nope.wav"), str(tmp_path / "out.wav")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 4
    assert "not found" in errors[0] and "train.stepz" in errors[1] and "train.steps" in errors[1]
    assert "train first" in errors[2] and "does not exist" in errors[3]


def readme_commands() -> list[list[str]]:
    """Every `python -m mlx_ddsp...` or `python benchmarks/...` line in the code blocks of the README and of
    benchmarks/ROOMS.md."""
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", README.read_text() + "\n" + ROOMS.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith(("python -m mlx_ddsp", "python benchmarks/")):
                commands.append(shlex.split(line)[1:])
    return commands


def test_readme_commands_exist_and_their_flags_parse():
    commands = readme_commands()
    assert len(commands) >= 8
    parsers = {"mlx_ddsp.eval": evaluation.build_parser(), "mlx_ddsp.resynth": resynth.build_parser(),
               "mlx_ddsp.ablate": ablate.build_parser(), "mlx_ddsp.export": export.build_parser(),
               "mlx_ddsp.stream": stream.build_parser()}
    helps = {}
    for words in commands:
        if words[0] == "-m" and words[1] in ("mlx_ddsp.train", "mlx_ddsp.preprocess"):
            load_config(ROOT / words[2], words[3:])  # the recipe exists and every key=value is valid
        elif words[0] == "-m" and words[1] in parsers:
            args = parsers[words[1]].parse_args(words[2:])
            if words[1] == "mlx_ddsp.ablate":
                load_config(ROOT / args.recipe, args.overrides)
        elif words[0] == "-m":
            assert words[1] == "mlx_ddsp", words
        else:
            script = ROOT / words[0]
            assert script.is_file(), words[0]
            if script not in helps:
                helps[script] = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                                               text=True, check=True, cwd=ROOT).stdout
            for flag in (w for w in words[1:] if w.startswith("--")):
                assert flag in helps[script], (words[0], flag)


@pytest.mark.parametrize("module", ["mlx_ddsp", "mlx_ddsp.train", "mlx_ddsp.preprocess", "mlx_ddsp.eval",
                                    "mlx_ddsp.resynth", "mlx_ddsp.ablate", "mlx_ddsp.export", "mlx_ddsp.stream"])
def test_every_command_has_help(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "MLX_DDSP_PRELOAD": "0"})
    assert out.returncode == 0 and "python -m" in out.stdout


def _command(*words, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", *words], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "MLX_DDSP_PRELOAD": "0"})


def test_overrides_anywhere_and_missing_validation_files_from_outside(tmp_path):
    """As a user types them: ablate takes key=value words after its options; a recipe's validation file that the
    data folder lacks stops the run with its name (not a run without validation)."""
    out = _command("mlx_ddsp.ablate", "recipes/smoke.yaml", "--out", str(tmp_path / "a"), f"data.dir={tmp_path}/none")
    assert out.returncode == 1 and "unrecognized" not in out.stderr and "does not exist" in out.stderr
    other = tmp_path / "other_flute"
    other.mkdir()
    (other / "take_1.flac").write_bytes((ROOT / "data" / "flute" / "flute_00.flac").read_bytes())
    out = _command("mlx_ddsp.train", "recipes/smoke.yaml", f"data.dir={other}", f"run_dir={tmp_path / 'r'}")
    assert out.returncode == 1 and "data.val_files entry 'flute_06.flac' matches no usable file" in out.stderr


def test_explicit_benchmark_flags_win_over_quick(tmp_path):
    out = subprocess.run([sys.executable, "benchmarks/chunk_length.py", "--quick", "--chunks", "0.2", "2.4", "--steps",
                          "1", "--models", "tiny", "--batch", "1", "--recipe", "recipes/smoke.yaml", "--out",
                          str(tmp_path / "c.json")], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "MLX_DDSP_PRELOAD": "0"})
    assert out.returncode == 0, out.stderr
    records = json.loads((tmp_path / "c.json").read_text())["records"]
    assert [r["chunk_seconds"] for r in records] == [0.2, 2.4]  # --quick used to drop chunks above 2 s


def test_a_link_is_named_as_the_duplicate_from_outside(tmp_path):
    data = tmp_path / "data"
    (data / "nested" / "deeper").mkdir(parents=True)
    (data / "nested" / "deeper" / "good_mono.flac").write_bytes((ROOT / "data" / "flute" / "flute_00.flac").read_bytes())
    os.symlink(data / "nested" / "deeper" / "good_mono.flac", data / "link_to_good.flac")
    out = _command("mlx_ddsp.preprocess", "recipes/smoke.yaml", f"data.dir={data}", "data.val_files=[]",
                   f"data.cache_dir={tmp_path / 'cache'}")
    assert out.returncode == 0, out.stderr
    assert "skipped link_to_good.flac: same file as nested/deeper/good_mono.flac (link)" in out.stderr
