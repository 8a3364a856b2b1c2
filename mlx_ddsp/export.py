"""Export a trained run for DDSP-VST (magenta/ddsp-vst), the plugin that plays DDSP models in a DAW.

    python -m mlx_ddsp.export RUN --format ddsp-vst --out flute.tflite [--which best|last]

The plugin's contract (its src/util/Constants.h, ModelLibrary.cpp, PredictControlsModel.cpp; Magenta's
`VSTStatelessPredictControls` in ddsp/training/inference.py) is one TFLite model run once per 20 ms frame at 16 kHz:
- inputs `call_f0_scaled:0` (1 float: MIDI note / 127, the plugin clamps f0 to MIDI 0..127), `call_pw_scaled:0`
  (1 float: power dB / 80 + 1, `features.compute_power`) and `call_state:0` (the 512 floats of the GRU's state);
- outputs `StatefulPartitionedCall:0` .. `:3`: amplitude (1), harmonic distribution (60), noise magnitudes (65)
  and the next state (512), after the synth's nonlinearities: `exp_sigmoid` on all three, the harmonics zeroed at
  and above 8 kHz for this frame's f0 and renormalised to sum to 1;
- a zip appended to the file with `metadata.json` (the training notes' range, `version`, `export_time`).
`vst_problems` lists what a run must have for that (each problem names its setting); `recipes/vst.yaml` has it.
The decoder is written op by op as a TFLite graph (`mlx_ddsp.tflite_graph`), no TensorFlow involved.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import math
import zipfile
from pathlib import Path

import mlx.core as mx
import numpy as np
from rich.console import Console

from mlx_ddsp import __version__, checkpoint
from mlx_ddsp.atomic import atomic_path
from mlx_ddsp.cli import UserError, entry_point, run
from mlx_ddsp.config import Config
from mlx_ddsp.features import LOUDNESS_FLOOR_DB
from mlx_ddsp.models import DDSP, F0_RANGE_MIDI, LOUDNESS_RANGE_DB
from mlx_ddsp.synth import midi_to_hz, remove_above_nyquist

VST_SAMPLE_RATE = 16000  # Hz: the plugin synthesises at 16 kHz
VST_FRAME_RATE = 50  # frames/s: one model call every 320 samples (20 ms)
VST_FRAME_SIZE = 1024  # samples: the plugin's analysis frame (its power and pitch)
VST_STATE_SIZE = 512
VST_HARMONICS, VST_NOISE_BANDS = 60, 65
INPUT_NAMES = ("call_f0_scaled:0", "call_pw_scaled:0", "call_state:0")
OUTPUT_NAMES = tuple(f"StatefulPartitionedCall:{i}" for i in range(4))  # amplitude, harmonics, noise, state
OUTPUT_SIZES = (1, VST_HARMONICS, VST_NOISE_BANDS, VST_STATE_SIZE)
METADATA_KEYS = ("mean_min_pitch_note_hz", "mean_max_pitch_note_hz", "mean_min_power_note", "mean_max_power_note",
                 "version", "export_time")
MODELS_FOLDER = "~/Documents/Magenta/DDSP/Models"  # where the plugin looks for user models


class ExportError(UserError):
    """A run that cannot be exported in the format asked for; the message says why and what to change."""


def vst_problems(cfg: Config) -> list[str]:
    """What keeps a run's model from being driven by DDSP-VST, one line per setting (empty: exportable)."""
    want = [("data.sample_rate", cfg.data.sample_rate, VST_SAMPLE_RATE),
            ("model.frame_rate", cfg.model.frame_rate, VST_FRAME_RATE),
            ("features.loudness", cfg.features.loudness, "power"),
            ("model.recurrent", cfg.model.recurrent, "gru"),
            ("model.gru_size", cfg.model.gru_size, VST_STATE_SIZE),
            ("model.encoder", cfg.model.encoder, False),
            ("synth.harmonic", cfg.synth.harmonic, True),
            ("synth.noise", cfg.synth.noise, True),
            ("synth.n_harmonics", cfg.synth.n_harmonics, VST_HARMONICS),
            ("synth.n_noise_bands", cfg.synth.n_noise_bands, VST_NOISE_BANDS)]
    return [f"{key}={value!r} (DDSP-VST needs {key}={needed!r})" for key, value, needed in want if value != needed]


def vst_controls(model: DDSP, f0_scaled: np.ndarray, pw_scaled: np.ndarray, state: np.ndarray | None = None) -> dict:
    """What the exported model computes, frame after frame, here in MLX with the run's own model.

    f0_scaled, pw_scaled: (T,) the plugin's inputs (MIDI / 127 and power dB / 80 + 1); state: (512,) or None
    (zeros, the plugin's reset). Returns numpy {"amplitude": (T,), "harmonics": (T, 60) summing to 1 below 8 kHz
    in each frame, "noise": (T, 65), "state": (512,) the state after the last frame}.
    """
    f0_hz = midi_to_hz(mx.array(f0_scaled, dtype=mx.float32)[None] * F0_RANGE_MIDI)
    power_db = (mx.array(pw_scaled, dtype=mx.float32)[None] - 1.0) * LOUDNESS_RANGE_DB
    controls = model.decode(f0_hz, power_db, None if state is None else mx.array(state)[None])
    n_frames = f0_hz.shape[1]
    harmonics = remove_above_nyquist(f0_hz.reshape(n_frames, 1), controls["harmonic_distribution"]
                                     .reshape(n_frames, 1, -1), model.sample_rate)  # one frame at a time
    out = {"amplitude": controls["amplitude"][0], "harmonics": harmonics[:, 0], "noise": controls["noise_magnitudes"][0],
           "state": controls["state"][0]}
    return {k: np.array(v) for k, v in out.items()}


# --- the decoder as a TFLite graph ----------------------------------------------------------------------------


def _array(x: mx.array) -> np.ndarray:
    return np.array(x, dtype=np.float32)


def _linear(g, x: int, linear, name: str, bias: np.ndarray | None = None) -> int:
    weight = _array(linear.weight)  # (out, in): TFLite's FULLY_CONNECTED layout
    bias = _array(linear.bias) if bias is None else bias
    return g.op("FULLY_CONNECTED", [x, g.const(weight, f"{name}/weight"), g.const(bias, f"{name}/bias")],
                [1, weight.shape[0]], name)


def _mlp(g, x: int, mlp, name: str) -> int:
    """Magenta's fc_stack: Dense -> LayerNorm -> leaky ReLU(0.2) per layer (TFLite has no layer-norm op: the mean,
    the variance and the reciprocal square root are written out)."""
    axis = g.const([1], f"{name}/axis", np.int32)
    for i, (linear, norm) in enumerate(zip(mlp.linears, mlp.norms)):
        layer = f"{name}/{i}"
        x = _linear(g, x, linear, f"{layer}/dense")
        size = linear.weight.shape[0]
        reduce = ("ReducerOptions", {"KeepDims": True})
        mean = g.op("MEAN", [x, axis], [1, 1], f"{layer}/mean", reduce)
        centred = g.op("SUB", [x, mean], [1, size], f"{layer}/centred")
        variance = g.op("MEAN", [g.op("MUL", [centred, centred], [1, size]), axis], [1, 1], f"{layer}/var", reduce)
        inverse = g.op("RSQRT", [g.op("ADD", [variance, g.const([norm.eps], f"{layer}/eps")], [1, 1])], [1, 1])
        normed = g.op("MUL", [centred, inverse], [1, size])
        scaled = g.op("ADD", [g.op("MUL", [normed, g.const(_array(norm.weight), f"{layer}/gamma")], [1, size]),
                              g.const(_array(norm.bias), f"{layer}/beta")], [1, size])
        x = g.op("LEAKY_RELU", [scaled], [1, size], f"{layer}/out", ("LeakyReluOptions", {"Alpha": 0.2}))
    return x


def _gru(g, x: int, state: int, gru, name: str) -> int:
    """One step of mlx.nn.GRU's equations: r, z = sigmoid(x W_rz + b_rz + h U_rz), n = tanh(x W_n + b_n + r (h U_n
    + b_hn)), h' = (1 - z) n + z h = n + z (h - n)."""
    size = gru.hidden_size
    bias_h = np.concatenate([np.zeros(2 * size, np.float32), _array(gru.bhn)])
    from_x = g.op("FULLY_CONNECTED", [x, g.const(_array(gru.Wx), f"{name}/Wx"), g.const(_array(gru.b), f"{name}/b")],
                  [1, 3 * size], f"{name}/from_x")
    from_h = g.op("FULLY_CONNECTED", [state, g.const(_array(gru.Wh), f"{name}/Wh"), g.const(bias_h, f"{name}/bh")],
                  [1, 3 * size], f"{name}/from_h")
    axis = g.const(np.int32(1), f"{name}/axis", np.int32)
    split = ("SplitOptions", {"NumSplits": 3})
    x_r, x_z, x_n = g.multi_op("SPLIT", [axis, from_x], [[1, size]] * 3, [None] * 3, split)
    h_r, h_z, h_n = g.multi_op("SPLIT", [axis, from_h], [[1, size]] * 3, [None] * 3, split)
    r = g.op("LOGISTIC", [g.op("ADD", [x_r, h_r], [1, size])], [1, size], f"{name}/r")
    z = g.op("LOGISTIC", [g.op("ADD", [x_z, h_z], [1, size])], [1, size], f"{name}/z")
    n = g.op("TANH", [g.op("ADD", [x_n, g.op("MUL", [r, h_n], [1, size])], [1, size])], [1, size], f"{name}/n")
    step = g.op("MUL", [z, g.op("SUB", [state, n], [1, size])], [1, size])
    return g.op("ADD", [n, step], [1, size], f"{name}/state")


def _exp_sigmoid(g, x: int, size: int, name: str) -> int:
    """2 * sigmoid(x) ** ln(10) + 1e-7 (`synth.exp_sigmoid`), as exp(ln(10) * log(sigmoid(x)))."""
    log_sigmoid = g.op("LOG", [g.op("LOGISTIC", [x], [1, size])], [1, size])
    power = g.op("EXP", [g.op("MUL", [log_sigmoid, g.const([math.log(10.0)], f"{name}/ln10")], [1, size])], [1, size])
    return g.op("ADD", [g.op("MUL", [power, g.const([2.0], f"{name}/two")], [1, size]),
                        g.const([1e-7], f"{name}/floor")], [1, size], name)


def _below_nyquist(g, distribution: int, f0_scaled: int, sample_rate: int) -> int:
    """The distribution with harmonics k * f0 >= Nyquist zeroed and the rest renormalised (`remove_above_nyquist`
    of one frame), f0 recovered from its scaled input: f0_hz = 440 * 2 ** ((127 * f0_scaled - 69) / 12)."""
    per_octave = math.log(2.0) / 12.0
    log_f0 = g.op("ADD", [g.op("MUL", [f0_scaled, g.const([F0_RANGE_MIDI * per_octave], "f0/scale")], [1, 1]),
                          g.const([math.log(440.0) - 69.0 * per_octave], "f0/offset")], [1, 1])
    f0_hz = g.op("EXP", [log_f0], [1, 1], "f0_hz")
    harmonic_hz = g.op("MUL", [f0_hz, g.const(np.arange(1, VST_HARMONICS + 1)[None], "harmonic_numbers")],
                       [1, VST_HARMONICS])
    audible = g.op("LESS", [harmonic_hz, g.const([sample_rate / 2], "nyquist")], [1, VST_HARMONICS],
                   dtype=np.bool_)
    kept = g.op("MUL", [distribution, g.op("CAST", [audible], [1, VST_HARMONICS])], [1, VST_HARMONICS])
    total = g.op("SUM", [kept, g.const([1], "harmonics/axis", np.int32)], [1, 1], "harmonics/total",
                 ("ReducerOptions", {"KeepDims": True}))
    total = g.op("MAXIMUM", [total, g.const([1e-7], "harmonics/min_total")], [1, 1])
    return g.op("DIV", [kept, total], [1, VST_HARMONICS], "harmonics/normalised")


def vst_graph(model: DDSP):
    """The run's decoder and the synth's nonlinearities for one frame, with the plugin's names (a Graph)."""
    from mlx_ddsp.tflite_graph import Graph  # the export extra

    g = Graph()
    f0_in, pw_in, state_in = (g.input(name, [size]) for name, size in zip(INPUT_NAMES, (1, 1, VST_STATE_SIZE)))
    as_row = g.const([1, 1], "shape/row", np.int32)
    f0 = g.op("RESHAPE", [f0_in, as_row], [1, 1], "f0_scaled")
    pw = g.op("RESHAPE", [pw_in, as_row], [1, 1], "pw_scaled")
    state = g.op("RESHAPE", [state_in, g.const([1, VST_STATE_SIZE], "shape/state", np.int32)], [1, VST_STATE_SIZE])
    decoder = model.decoder
    stacks = [_mlp(g, x, mlp, f"stack_{i}") for i, (x, mlp) in enumerate(zip((f0, pw), decoder.input_stacks))]
    width = sum(mlp.linears[-1].weight.shape[0] for mlp in decoder.input_stacks)
    concat = ("ConcatenationOptions", {"Axis": 1})
    state_out = _gru(g, g.op("CONCATENATION", stacks, [1, width], "gru/in", concat), state, decoder.gru, "gru")
    hidden = g.op("CONCATENATION", stacks + [state_out], [1, width + VST_STATE_SIZE], "out_stack/in", concat)
    raw = _linear(g, _mlp(g, hidden, decoder.output_stack, "out_stack"), decoder.dense_out, "dense_out")
    sizes = [1, VST_HARMONICS, VST_NOISE_BANDS]
    amp_raw, harm_raw, noise_raw = g.multi_op(
        "SPLIT_V", [raw, g.const(sizes, "split/sizes", np.int32), g.const(np.int32(1), "split/axis", np.int32)],
        [[1, s] for s in sizes], ["raw/amplitude", "raw/harmonics", "raw/noise"], ("SplitVOptions", {"NumSplits": 3}))
    amplitude = _exp_sigmoid(g, amp_raw, 1, "amplitude")
    harmonics = _below_nyquist(g, _exp_sigmoid(g, harm_raw, VST_HARMONICS, "harmonics"), f0, model.sample_rate)
    noise_in = g.op("ADD", [noise_raw, g.const([model.noise_bias], "noise/bias")], [1, VST_NOISE_BANDS])
    noise = _exp_sigmoid(g, noise_in, VST_NOISE_BANDS, "noise")
    for tensor, name, size in zip((amplitude, harmonics, noise, state_out), OUTPUT_NAMES, OUTPUT_SIZES):
        g.output(g.op("RESHAPE", [tensor, g.const([size], f"shape/{name}", np.int32)], [size]), name)
    return g


# --- the file ---------------------------------------------------------------------------------------------------


def vst_metadata(state: dict, cfg: Config) -> dict:
    """metadata.json: the plugin reads the six METADATA_KEYS (it draws the model's range from the first four);
    the rest says what the model is, as Magenta's exporter writes it."""
    notes = (state.get("stats") or {}).get("notes")
    if not notes:
        raise ExportError("the run's training statistics have no note range (trained before the export existed?): "
                          "train it again with this version of mlx_ddsp")
    hz = {k: float(midi_to_hz(mx.array(notes[f"mean_{k}_pitch_midi"])).item()) for k in ("min", "max")}
    return {
        "mean_min_pitch_note": notes["mean_min_pitch_midi"], "mean_max_pitch_note": notes["mean_max_pitch_midi"],
        "mean_min_pitch_note_hz": hz["min"], "mean_max_pitch_note_hz": hz["max"],
        "mean_min_power_note": max(notes["mean_min_loudness_db"], LOUDNESS_FLOOR_DB),
        "mean_max_power_note": notes["mean_max_loudness_db"],
        "version": f"mlx_ddsp {__version__}",
        "export_time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "num_harmonics": VST_HARMONICS, "num_noise_amps": VST_NOISE_BANDS, "frame_rate": VST_FRAME_RATE,
        "frame_size": VST_FRAME_SIZE, "sample_rate": VST_SAMPLE_RATE, "training_step": state.get("step"),
    }


def with_metadata(model_bytes: bytes, metadata: dict) -> bytes:
    """The flatbuffer with a zip holding metadata.json appended (zip offsets from the start of the file, as
    Python's zipfile appends to a file that is not a zip, and as the plugin's JUCE ZipFile reads it)."""
    buffer = io.BytesIO(model_bytes)
    buffer.seek(0, io.SEEK_END)
    with zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("metadata.json", json.dumps(metadata, indent=1))
    return buffer.getvalue()


def export_ddsp_vst(run_dir: str | Path, out: str | Path, which: str = "best", console: Console | None = None) -> dict:
    """Write RUN's model as a DDSP-VST .tflite at `out`; returns the metadata written."""
    console = console or Console(stderr=True)
    model, cfg, state = checkpoint.load_trained(run_dir, which)
    problems = vst_problems(cfg)
    if problems:
        raise ExportError(f"{run_dir} cannot be played by DDSP-VST: " + "; ".join(problems)
                          + ". Train with recipes/vst.yaml (or recipes/vst_cpu.yaml).")
    if cfg.synth.reverb:
        console.print("[yellow]note:[/] the learned reverb is not exported (DDSP-VST adds its own reverb)")
    metadata = vst_metadata(state, cfg)
    try:
        graph = vst_graph(model)
    except ImportError as e:
        raise ExportError(str(e)) from e
    data = with_metadata(graph.to_bytes(), metadata)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        Path(tmp).write_bytes(data)
    console.print(f"wrote {out} ({len(data) / 1e6:.1f} MB, step {state.get('step')} of {run_dir}); "
                  f"copy it to {MODELS_FOLDER}/ and pick it in DDSP-VST's model list")
    return metadata


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mlx_ddsp.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a training run directory")
    parser.add_argument("--format", required=True, choices=["ddsp-vst"], help="what to write")
    parser.add_argument("--out", required=True, help="output file (e.g. flute.tflite)")
    parser.add_argument("--which", default="best", help="checkpoint: best, last or a checkpoint folder (default best)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(lambda console: export_ddsp_vst(args.run_dir, args.out, args.which, console))


if __name__ == "__main__":
    entry_point(main)
