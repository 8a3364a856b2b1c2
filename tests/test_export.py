"""DDSP-VST export, checked by a real TFLite interpreter (LiteRT): the plugin's validation, then 500 frames of real
features driven frame by frame with the state fed back, against mlx_ddsp's own model."""

import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mlx_ddsp import checkpoint
from mlx_ddsp.audio import load_audio
from mlx_ddsp.config import load_config
from mlx_ddsp.export import INPUT_NAMES, METADATA_KEYS, OUTPUT_NAMES, main, vst_controls, vst_problems
from mlx_ddsp.preprocess import analyse
from mlx_ddsp.train import main as train

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="the LiteRT interpreter (ai-edge-litert, in the "
                             "dev extra) has no wheel for this platform")
pytest.importorskip("tflite", reason="the export extra (tflite schema) is not installed")

ROOT = Path(__file__).resolve().parents[1]
FLUTE = ROOT / "data" / "flute"
TINY_RUN = ["train.steps=20", "train.batch_size=2", "data.example_seconds=1.0", "train.eval_every=10",
            "train.checkpoint_every=10", "train.render_every=1000", "train.eval_at_end=false", "train.warmup_steps=5"]
PLUGIN_F0_RANGE_HZ = (8.18, 12543.84)  # the plugin clamps f0 to MIDI 0..127 before scaling it


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A DDSP-VST-shaped run trained for 20 steps on the bundled flute (recipes/vst_cpu.yaml), exported by the CLI."""
    root = tmp_path_factory.mktemp("vst")
    run = root / "run"
    assert train([str(ROOT / "recipes" / "vst_cpu.yaml"), f"run_dir={run}", f"data.dir={FLUTE}",
                  f"data.cache_dir={root / 'cache'}", *TINY_RUN]) == 0
    assert main([str(run), "--format", "ddsp-vst", "--out", str(root / "flute.tflite")]) == 0
    return run, root / "flute.tflite"


def interpreter(path: Path, reference_kernels: bool):
    """The model loaded as the plugin loads it: from the file's bytes, one thread."""
    resolver = (litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if reference_kernels
                else litert.OpResolverType.AUTO)
    it = litert.Interpreter(model_content=path.read_bytes(), num_threads=1, experimental_op_resolver_type=resolver)
    it.allocate_tensors()
    return it


def test_the_plugins_validation_passes(exported):
    _, path = exported
    it = interpreter(path, reference_kernels=True)
    inputs, outputs = it.get_input_details(), it.get_output_details()
    assert sorted(d["name"] for d in inputs) == sorted(INPUT_NAMES)  # ModelLibrary::validateModel, order-agnostic
    assert sorted(d["name"] for d in outputs) == sorted(OUTPUT_NAMES)
    sizes = {d["name"]: int(np.prod(d["shape"])) for d in inputs + outputs}
    assert all(d["dtype"] == np.float32 for d in inputs + outputs)
    assert [sizes[n] for n in INPUT_NAMES] == [1, 1, 512]
    assert [sizes[n] for n in OUTPUT_NAMES] == [1, 60, 65, 512]
    with zipfile.ZipFile(path) as archive:  # the zip appended to the flatbuffer, read from the whole file
        metadata = json.loads(archive.read("metadata.json"))
    # JUCE's ZipFile takes the offsets as they are: the central directory and the entry's local header must sit
    # where the end record and the directory say, counted from the start of the file.
    data = path.read_bytes()
    end = data.rfind(b"PK\x05\x06")
    directory_size, directory_offset = struct.unpack("<II", data[end + 12 : end + 20])
    assert directory_offset == end - directory_size and data[directory_offset : directory_offset + 4] == b"PK\x01\x02"
    local_header = struct.unpack("<I", data[directory_offset + 42 : directory_offset + 46])[0]
    assert data[local_header : local_header + 4] == b"PK\x03\x04"
    assert set(METADATA_KEYS) <= set(metadata)
    assert 200.0 < metadata["mean_min_pitch_note_hz"] < metadata["mean_max_pitch_note_hz"] < 2100.0  # flute notes
    assert -80.0 <= metadata["mean_min_power_note"] < metadata["mean_max_power_note"] <= 0.0
    assert path.stat().st_size < 20e6


@pytest.mark.parametrize("reference_kernels", [True, False], ids=["builtin kernels", "default delegates"])
def test_500_frames_equal_mlx_ddsps_model(exported, reference_kernels):
    run, path = exported
    model, cfg, _ = checkpoint.load_trained(run)
    features = analyse(load_audio(FLUTE / "flute_06.flac", cfg.data.sample_rate), cfg)  # a held-out file
    stride = cfg.features.frame_rate // cfg.model.frame_rate
    f0_hz = np.clip(features["f0_hz"][::stride][:500], *PLUGIN_F0_RANGE_HZ)
    assert len(f0_hz) == 500
    f0_scaled = ((12.0 * np.log2(f0_hz / 440.0) + 69.0) / 127.0).astype(np.float32)
    pw_scaled = (features["loudness_db"][::stride][:500] / 80.0 + 1.0).astype(np.float32)
    expected = vst_controls(model, f0_scaled, pw_scaled)

    it = interpreter(path, reference_kernels)
    index = {d["name"]: d["index"] for d in it.get_input_details() + it.get_output_details()}
    state = np.zeros(512, np.float32)  # the plugin's reset
    got = {name: [] for name in OUTPUT_NAMES}
    for t in range(500):
        it.set_tensor(index[INPUT_NAMES[0]], f0_scaled[t : t + 1])
        it.set_tensor(index[INPUT_NAMES[1]], pw_scaled[t : t + 1])
        it.set_tensor(index[INPUT_NAMES[2]], state)
        it.invoke()
        for name in OUTPUT_NAMES:
            got[name].append(it.get_tensor(index[name]).copy())
        state = got[OUTPUT_NAMES[3]][-1]  # fed back, as PredictControlsModel::call does
    for key, name in zip(("amplitude", "harmonics", "noise"), OUTPUT_NAMES):
        np.testing.assert_allclose(np.array(got[name]).reshape(expected[key].shape), expected[key], rtol=0, atol=1e-4,
                                   err_msg=key)
    np.testing.assert_allclose(state, expected["state"], rtol=0, atol=1e-4)
    harmonics = np.array(got[OUTPUT_NAMES[1]])
    audible = f0_hz[:, None] * np.arange(1, 61) < 8000.0
    np.testing.assert_allclose(harmonics.sum(axis=1), 1.0, atol=1e-5)  # normalised below Nyquist, zero above
    assert np.all(harmonics[~audible] == 0.0)
    assert np.ptp(np.array(got[OUTPUT_NAMES[0]])) > 0  # the output follows the input (a live model, not a constant)


def test_a_run_the_plugin_cannot_drive_is_refused_naming_the_settings(tmp_path, capsys):
    run = tmp_path / "run"
    assert train([str(ROOT / "recipes" / "smoke.yaml"), f"run_dir={run}", f"data.dir={FLUTE}",
                  f"data.cache_dir={tmp_path / 'cache'}", "train.steps=2", "train.eval_every=2",
                  "train.checkpoint_every=2", "train.eval_at_end=false"]) == 0
    assert main([str(run), "--format", "ddsp-vst", "--out", str(tmp_path / "x.tflite")]) == 1
    message = capsys.readouterr().err
    for setting in ("features.loudness", "model.gru_size", "synth.n_harmonics", "synth.n_noise_bands"):
        assert setting in message
    assert not (tmp_path / "x.tflite").exists()
    assert vst_problems(load_config(ROOT / "recipes" / "vst.yaml")) == []
    assert vst_problems(load_config(ROOT / "recipes" / "vst_cpu.yaml")) == []
