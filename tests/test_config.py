"""Recipe loading, typed overrides, helpful errors and the YAML round trip."""

from pathlib import Path

import pytest

from mlx_ddsp.config import Config, ConfigError, all_keys, load_config, resolve_defaults, save_config


def test_defaults_follow_magenta_solo_instrument():
    cfg = Config()
    assert cfg.data.sample_rate == 16000
    assert cfg.features.frame_rate == 250
    assert cfg.data.example_seconds == 4.0
    assert cfg.synth.n_harmonics == 100
    assert cfg.synth.n_noise_bands == 65
    assert cfg.loss.fft_sizes == [2048, 1024, 512, 256, 128, 64]
    assert cfg.model.gru_size == 512
    for key in ("data.dir", "data.cache_dir", "run_dir", "seed", "train.steps", "train.batch_size"):
        assert key in all_keys()


def test_yaml_then_overrides_typed_by_field(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("seed: 3\ntrain:\n  steps: 100\n  learning_rate: 0.01\nsynth:\n  noise: false\n")
    cfg = load_config(recipe, ["train.steps=250", "train.learning_rate=3e-4", "synth.reverb=true",
                               "loss.fft_sizes=[512,128]", "data.cache_dir=/tmp/c", "data.example_seconds=2"])
    assert cfg.seed == 3
    assert cfg.train.steps == 250 and isinstance(cfg.train.steps, int)
    assert cfg.train.learning_rate == pytest.approx(3e-4)
    assert cfg.synth.noise is False and cfg.synth.reverb is True
    assert cfg.loss.fft_sizes == [512, 128]
    assert cfg.data.cache_dir == "/tmp/c"
    assert cfg.data.example_seconds == 2.0 and isinstance(cfg.data.example_seconds, float)
    assert load_config(None, ["loss.fft_sizes=256,64"]).loss.fft_sizes == [256, 64]
    assert load_config(None, ["data.cache_dir=none"]).data.cache_dir is None


@pytest.mark.parametrize("override,named,suggested", [
    ("train.step=5", "train.steps", "train.steps"),
    ("trian.steps=5", "trian.steps", "train.steps"),
    ("sed=1", "sed", "seed"),
])
def test_unknown_override_names_key_and_closest(override, named, suggested):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert f"'{override.split('=')[0]}'" in str(err.value)
    assert f"did you mean '{suggested}'" in str(err.value)


def test_unknown_yaml_key_names_key_and_closest(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  batchsize: 8\n")
    with pytest.raises(ConfigError, match=r"unknown key 'train.batchsize' \(did you mean 'train.batch_size'\?\)"):
        load_config(recipe)


@pytest.mark.parametrize("override", ["train.steps=abc", "train.steps=1.5", "synth.noise=maybe", "seed"])
def test_bad_values_are_errors_naming_the_key(override):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert override.split("=")[0] in str(err.value)


@pytest.mark.parametrize("override", ["features.loudness=pwr", "model.recurrent=lstm", "synth.reverb_model=plate"])
def test_a_choice_that_does_not_exist_names_key_and_value(override):
    key, value = override.split("=")
    with pytest.raises(ConfigError, match=f"'{key}' must be one of .*got '{value}'"):
        load_config(None, [override])


def test_missing_recipe_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_round_trip(tmp_path):
    cfg = load_config(None, ["seed=9", "loss.fft_sizes=[1024,64]", "data.val_files=[a.wav,b.flac]", "run_dir=x/y"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no temporary file left behind


def test_defaults_that_follow_other_keys_are_resolved_for_the_run(tmp_path):
    room = load_config(None, ["synth.reverb=true"])
    resolved = resolve_defaults(room)
    assert (resolved.data.lead_in_seconds, resolved.features.f0_dereverb) == (1.0, True)
    assert (room.data.lead_in_seconds, room.features.f0_dereverb) == (None, None)  # a copy
    dry = resolve_defaults(Config())
    assert (dry.data.lead_in_seconds, dry.features.f0_dereverb) == (0.0, False)
    chosen = resolve_defaults(load_config(None, ["synth.reverb=true", "data.lead_in_seconds=0.5",
                                                 "features.f0_dereverb=false"]))
    assert (chosen.data.lead_in_seconds, chosen.features.f0_dereverb) == (0.5, False)
    save_config(resolved, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == resolved


@pytest.mark.parametrize("recipe", sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_bundled_recipe_builds_its_model(recipe):
    from mlx_ddsp.models import build_model
    from mlx_ddsp.preprocess import example_hops

    cfg = load_config(recipe)
    assert Path(cfg.data.dir).name == "flute"
    build_model(cfg).decoder_frames(example_hops(cfg) + 1)  # the examples fall on the decoder's grid
