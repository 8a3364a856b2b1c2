"""Recipes: typed configuration loaded from YAML and overridden by `key.sub=value` words.

A recipe is plain data: one dataclass per section (`data`, `features`, `model`, `synth`, `loss`, `train`) plus the
top-level `seed` and `run_dir`. Defaults follow Magenta DDSP's solo-instrument setup (16 kHz, 250 frames/s, 4 s
examples, 100 harmonics, 65 noise bands, FFT sizes 2048..64, a 512-unit GRU decoder). Every duration is in seconds or
frames per second, so a recipe works at any `data.sample_rate`: the FFT sizes scale with it (see `loss.fft_sizes_rate`).

    cfg = load_config("recipes/flute.yaml", ["train.steps=1000", "loss.fft_sizes=[512,256]"])
    save_config(cfg, "run/config.yaml")          # load_config("run/config.yaml") == cfg

An unknown key, in the YAML or on the command line, raises `ConfigError` naming the key and the closest valid one.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from mlx_ddsp.atomic import atomic_path
from mlx_ddsp.cli import UserError
from mlx_ddsp.features import LOUDNESS_KINDS


class ConfigError(UserError, ValueError):
    """A recipe or override that cannot be applied; the message names the offending key."""


@dataclass
class DataConfig:
    dir: str = "data/flute"  # folder of recordings, scanned recursively
    cache_dir: str | None = None  # None: `<data.dir>/.mlx_ddsp_cache` (a folder per sample rate inside)
    sample_rate: int = 16000  # Hz, audio is resampled to this
    example_seconds: float = 4.0  # length of one training example
    hop_seconds: float = 1.0  # hop between consecutive examples cut from a file
    val_fraction: float = 0.1  # share of files held out for validation (at least one file)
    val_files: list[str] = field(default_factory=list)  # explicit validation files (relative paths); overrides val_fraction
    silence_db: float = -60.0  # frames quieter than this (in features.loudness, dB) count as silent
    max_silent_fraction: float = 0.8  # examples with more silent frames than this are dropped
    lead_in_seconds: float | None = None  # audio before each example that the model plays and the loss leaves out
    # (a room's tail from earlier notes reaches into the example); None: 1 s with synth.reverb, else 0


@dataclass
class FeaturesConfig:
    frame_rate: int = 250  # frames per second of f0 / loudness
    f0_min_hz: float = 38.0  # just below E1 (41 Hz), a double bass's lowest string
    f0_max_hz: float = 2100.0  # just above C7 (2093 Hz), a violin's and a flute's top
    loudness: str = "a_weighted"  # the decoder's loudness input: "a_weighted" (Magenta's) or "power" (DDSP-VST's)
    f0_dereverb: bool | None = None  # damp the room's tail before pitch tracking (mlx_ddsp/dereverb.py); None: on
    # with synth.reverb (recordings made in a room); offline only (the streaming engine's causal tracker runs without)


@dataclass
class ModelConfig:
    hidden_size: int = 512  # width of each MLP layer
    n_mlp_layers: int = 3  # layers per MLP stack
    gru_size: int = 512  # recurrent units
    recurrent: str = "gru"  # "gru" (Magenta's decoder) or "mingru" (parallel-in-time scan, much faster on CPU)
    noise_bias: float = -5.0  # offset added to the noise magnitudes' pre-activations (noise starts quiet)
    frame_rate: int = 250  # decoder frames per second; must divide features.frame_rate (e.g. 50 for speed)
    encoder: bool = False  # learn a latent z from the audio's MFCCs (Magenta's MfccTimeDistributedRnnEncoder)
    z_dims: int = 16  # size of z
    z_frame_rate: int = 50  # frames per second of the encoder (z is interpolated to the decoder's frames)
    encoder_gru_size: int = 512  # recurrent units of the encoder


@dataclass
class SynthConfig:
    n_harmonics: int = 100
    n_noise_bands: int = 65
    harmonic: bool = True
    noise: bool = True
    reverb: bool = False  # a learned room applied to harmonic + noise (dry path kept)
    reverb_model: str = "parametric"  # "parametric": octave-band decay times and levels (mlx_ddsp/rooms.py);
    # "free": every tap of the impulse response learned (Magenta's Reverb; fills with noise in short runs)
    reverb_seconds: float = 3.0  # impulse response length (Magenta: 48000 samples at 16 kHz)
    room_rt60_s: float = 0.5  # parametric room: the decay time it starts from
    room_level_db: float = -15.0  # parametric room: the wet-to-dry energy ratio it starts from
    room_early_ms: float = 50.0  # parametric room: this long a start of the impulse response learned tap by tap (0: none)
    room_learn_noise: bool = True  # parametric room: the noise under its decays learned tap by tap (false: a fixed draw)


@dataclass
class LossConfig:
    fft_sizes: list[int] = field(default_factory=lambda: [2048, 1024, 512, 256, 128, 64])
    fft_sizes_rate: int = 16000  # Hz the fft_sizes are given at; they scale to data.sample_rate (48 kHz: 6144..192)
    mag_weight: float = 1.0  # weight of L1 on linear magnitudes
    logmag_weight: float = 1.0  # weight of L1 on log magnitudes
    waveform_weight: float = 0.0  # weight of a waveform L1 term


@dataclass
class TrainConfig:
    steps: int = 30000
    max_minutes: float = 0.0  # stop (with a checkpoint) after this much training wall time, resumes included; 0: none
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup_steps: int = 1000
    lr_decay_rate: float = 0.98  # multiplied into the learning rate every lr_decay_steps
    lr_decay_steps: int = 10000
    grad_clip_norm: float = 3.0
    max_bad_steps: int = 10  # stop after this many consecutive steps with a NaN/Inf loss or gradient
    log_every: int = 10  # steps between lines of logs/metrics.jsonl
    eval_every: int = 500  # steps between validation losses (and best-checkpoint updates)
    val_max_examples: int = 64  # validation examples used (evenly spaced over the split; 0: all)
    render_every: int = 2000  # steps between renders of validation clips
    n_renders: int = 3  # validation clips rendered each time
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3  # step checkpoints kept (plus the best)
    eval_at_end: bool = True  # evaluate the best checkpoint on the validation split when training stops
    tensorboard: bool = False  # also write TensorBoard event files to logs/tensorboard/ (the tensorboard extra)


@dataclass
class Config:
    seed: int = 0
    run_dir: str = "runs/default"
    data: DataConfig = field(default_factory=DataConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _closest(key: str, options: list[str]) -> str:
    match = difflib.get_close_matches(key, options, n=1, cutoff=0.0)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert `value` (from YAML or a command-line word) to the field type `tp`, or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            return None
        return _coerce(value, args[0], key)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            value = [value]
        return [_coerce(v, item_tp, key) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "off", "0"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif tp is int:
        if isinstance(value, bool):
            pass
        elif isinstance(value, int):
            return value
        elif isinstance(value, float) and value.is_integer():
            return int(value)
        elif isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                try:
                    as_float = float(value)
                except ValueError:
                    as_float = None
                if as_float is not None and as_float.is_integer():
                    return int(as_float)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"'{key}' expects {getattr(tp, '__name__', tp)}, got {value!r}")


def _apply(obj, values: dict, prefix: str = "") -> None:
    """Set the fields of dataclass `obj` from a nested dict, recursing into sub-sections."""
    types_ = _field_types(type(obj))
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in types_:
            valid = [f"{prefix}{n}" for n in types_]
            raise ConfigError(f"unknown key '{key}'{_closest(key, valid)}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"'{key}' is a section; give it keys, e.g. '{key}.{next(iter(_field_types(type(current))))}=...'")
            _apply(current, value, prefix=f"{key}.")
        else:
            setattr(obj, name, _coerce(value, types_[name], key))


def all_keys(cfg: Config | None = None) -> list[str]:
    """Every settable dotted key, e.g. ['seed', 'run_dir', 'data.dir', ...]."""
    cfg = cfg or Config()
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += [f"{f.name}.{sub.name}" for sub in dataclasses.fields(value)]
        else:
            keys.append(f.name)
    return keys


def parse_overrides(words: list[str]) -> dict:
    """['train.steps=10', 'seed=3'] -> {'train': {'steps': '10'}, 'seed': '3'} (values still strings)."""
    nested: dict = {}
    valid = all_keys()
    for word in words:
        if "=" not in word:
            raise ConfigError(f"override '{word}' is not of the form key=value (e.g. 'train.steps=1000')")
        key, value = word.split("=", 1)
        key = key.strip()
        if key not in valid and not any(v.startswith(key + ".") for v in valid):
            raise ConfigError(f"unknown key '{key}'{_closest(key, valid)}")
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


CHOICES = {  # keys that name one of a fixed set of things
    "features.loudness": LOUDNESS_KINDS,
    "model.recurrent": ("gru", "mingru"),
    "synth.reverb_model": ("free", "parametric"),
}


def check_choices(cfg: Config) -> None:
    """Raise ConfigError naming the key and the value when a key of CHOICES names something that does not exist."""
    for key, options in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in options:
            raise ConfigError(f"'{key}' must be one of {', '.join(options)}; got {value!r}{_closest(value, list(options))}")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML recipe at `path` (optional) <- `key.sub=value` overrides."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"recipe '{path}' not found; the bundled recipes are in recipes/ "
                              "(e.g. recipes/flute.yaml, recipes/flute_cpu.yaml, recipes/smoke.yaml)")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"recipe '{path}' is not valid YAML: {e}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"recipe '{path}' must be a mapping of sections to keys")
        _apply(cfg, values)
    _apply(cfg, parse_overrides(overrides or []))
    check_choices(cfg)
    return cfg


# With a room, each example's lead-in: the room's tail from notes before the example, 60 dB down after one RT60,
# reaches into it (on reverberant flute at 300 steps, a parametric room without it lost 6 % to no room at all)
REVERB_LEAD_IN_S = 1.0  # data.lead_in_seconds when it is None and synth.reverb is on


def resolve_defaults(cfg: Config) -> Config:
    """A copy of cfg with the None defaults that depend on other keys filled in: data.lead_in_seconds
    (REVERB_LEAD_IN_S with synth.reverb, else 0) and features.f0_dereverb (on with synth.reverb). A run saves its
    config resolved, so that eval, resynth and a resume read it as it was trained, whatever later versions default
    to."""
    out = copy.deepcopy(cfg)
    if out.data.lead_in_seconds is None:
        out.data.lead_in_seconds = REVERB_LEAD_IN_S if out.synth.reverb else 0.0
    if out.features.f0_dereverb is None:
        out.features.f0_dereverb = out.synth.reverb
    return out


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically); `load_config(path)` gives back an equal Config."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
