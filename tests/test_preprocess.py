"""Preprocessing: bad inputs never crash or corrupt, the cache is reused and invalidated correctly, splits by file."""

import json
import os

import numpy as np
import pytest
import soundfile as sf
from rich.console import Console

from mlx_ddsp import preprocess as pp
from mlx_ddsp.config import load_config
from mlx_ddsp.data import BatchStream, ExampleSet

SR = 16000


def tone(seconds, sr=SR, f0=440.0, channels=1, amplitude=0.5):
    t = np.arange(int(seconds * sr)) / sr
    mono = amplitude * (np.sin(2 * np.pi * f0 * t) + 0.3 * np.sin(4 * np.pi * f0 * t)) * (1 + 0.3 * np.sin(2 * np.pi * 0.5 * t))
    return np.repeat(mono[:, None], channels, axis=1).astype(np.float32) if channels > 1 else mono.astype(np.float32)


def config(data_dir, *extra):
    return load_config(None, [f"data.dir={data_dir}", "data.example_seconds=1.0", "data.hop_seconds=0.5", *extra])


def test_bad_inputs_are_skipped_with_reasons_and_good_files_kept(tmp_path):
    d = tmp_path / "data"
    (d / "nested" / "deeper").mkdir(parents=True)
    sf.write(d / "good1.wav", tone(3.0), SR)
    sf.write(d / "nested" / "deeper" / "good2.flac", tone(2.5, f0=330.0), SR)
    sf.write(d / "rate8k.wav", tone(2.0, sr=8000), 8000)
    sf.write(d / "rate96k.wav", tone(2.0, sr=96000), 96000)
    sf.write(d / "stereo.wav", tone(2.0, channels=2), SR)
    sf.write(d / "six_channels.wav", tone(2.0, channels=6), SR)
    sf.write(d / "short.wav", tone(0.4), SR)  # shorter than one example: zero-padded to one, 60 % silent: kept
    sf.write(d / "tiny.wav", tone(0.1), SR)  # padded to one example but 90 % silent: skipped
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x01\x02garbage" * 10)
    (d / "empty.flac").write_bytes(b"")
    sf.write(d / "zero_frames.wav", np.zeros(0, np.float32), SR)
    sf.write(d / "silent.wav", np.zeros(2 * SR, np.float32), SR)
    nan = tone(2.0)
    nan[100] = np.nan
    sf.write(d / "nan.wav", nan, SR, subtype="FLOAT")
    inf = tone(2.0)
    inf[5] = np.inf
    sf.write(d / "inf.wav", inf, SR, subtype="FLOAT")
    (d / "notes.txt").write_text("not audio")
    os.symlink(d / "good1.wav", d / "link_to_good1.wav")
    os.symlink(d / "missing.wav", d / "broken_link.wav")
    os.symlink(d, d / "nested" / "loop")  # a link back up the tree
    console = Console(record=True, width=300)
    manifest = pp.preprocess(config(d), console)
    by_path = {f["path"]: f for f in manifest["files"]}
    ok = {p for p, f in by_path.items() if f["status"] == "ok"}
    assert {"good1.wav", "nested/deeper/good2.flac", "rate8k.wav", "rate96k.wav", "stereo.wav", "six_channels.wav"} <= ok
    expected_skips = {
        "corrupt.wav": "unreadable", "empty.flac": "unreadable", "zero_frames.wav": "empty", "silent.wav": "silent",
        "nan.wav": "NaN", "inf.wav": "NaN or Inf", "notes.txt": "not an audio file", "broken_link.wav": "broken",
        "link_to_good1.wav": "same file as good1.wav", "tiny.wav": "no example",
    }
    for path, reason in expected_skips.items():
        assert by_path[path]["status"] == "skipped", path
        assert reason in by_path[path]["reason"], (path, by_path[path]["reason"])
    assert not any("loop" in p for p in by_path)
    assert by_path["short.wav"]["status"] == "ok" and by_path["short.wav"]["chunks"] == 1
    on_disk = json.loads((d / ".mlx_ddsp_cache" / "16000hz_250fps" / "manifest.json").read_text())
    assert on_disk["files"] == manifest["files"]
    # Resampled files have the right length at 16 kHz.
    rate8k = by_path["rate8k.wav"]
    assert rate8k["seconds"] == pytest.approx(2.0, abs=0.01)
    assert rate8k["source_rate"] == 8000 and by_path["rate96k.wav"]["source_rate"] == 96000
    # A recording below the model's rate is named: upsampled, it has nothing above its own Nyquist.
    assert "1 file(s) recorded below data.sample_rate=16000 Hz (lowest: rate8k.wav, 8000 Hz)" in console.export_text()


def test_no_usable_audio_is_one_clear_error(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    sf.write(tmp_path / "silent.wav", np.zeros(SR, np.float32), SR)
    with pytest.raises(pp.PreprocessError, match="no usable audio"):
        pp.preprocess(config(tmp_path))
    assert pp.main([str(write_recipe(tmp_path))]) == 1


def write_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data:\n  dir: {tmp_path}\n  example_seconds: 1.0\n")
    return recipe


def test_chunking_and_split_by_file(tmp_path):
    for i in range(5):
        sf.write(tmp_path / f"f{i}.wav", tone(3.0, f0=200.0 + 50 * i), SR)
    manifest = pp.preprocess(config(tmp_path, "data.val_fraction=0.4", "seed=3"))
    files = manifest["files"]
    # 3 s with 1 s examples every 0.5 s: starts 0, 0.5, 1, 1.5, 2 s (the last one ends exactly at the file's end).
    assert all(f["starts"] == [0, 125, 250, 375, 500] for f in files)
    splits = [f["split"] for f in files]
    assert splits.count("validation") == 2 and splits.count("train") == 3
    again = pp.preprocess(config(tmp_path, "data.val_fraction=0.4", "seed=3"))
    assert [f["split"] for f in again["files"]] == splits  # deterministic from the seed
    named = pp.preprocess(config(tmp_path, "data.val_files=[f1.wav]"))
    assert [f["split"] for f in named["files"]] == ["train", "validation", "train", "train", "train"]
    cache = tmp_path / ".mlx_ddsp_cache" / "16000hz_250fps"  # one folder per sample and frame rate
    train, val = ExampleSet(cache, "train"), ExampleSet(cache, "validation")
    assert set(train.names).isdisjoint(val.names)
    assert len(train) == 20 and len(val) == 5
    stats = named["stats"]
    assert 200 <= stats["f0_hz"]["mean"] <= 400
    assert stats["loudness_db"]["quantiles"]["0.5"] < 0


def test_silent_examples_are_dropped(tmp_path):
    audio = np.concatenate([tone(2.0), np.zeros(3 * SR, np.float32)])
    sf.write(tmp_path / "a.wav", audio, SR)
    entry = pp.preprocess(config(tmp_path))["files"][0]
    # 5 s, 1 s examples every 0.5 s -> 8 candidates; those more than 80 % silent are gone.
    assert 0 < entry["chunks"] < 8
    assert max(entry["starts"]) <= int(1.8 * 250)


def test_rerun_reuses_cache_and_changes_invalidate(tmp_path, monkeypatch):
    for i in range(3):
        sf.write(tmp_path / f"f{i}.wav", tone(2.0, f0=300.0 + 20 * i), SR)
    pp.preprocess(config(tmp_path))
    calls = []
    real = pp.compute_file_features
    monkeypatch.setattr(pp, "compute_file_features", lambda *a: calls.append(a[0].name) or real(*a))
    pp.preprocess(config(tmp_path))
    assert calls == []  # nothing changed: no audio read
    sf.write(tmp_path / "f1.wav", tone(2.5, f0=500.0), SR)  # changed file
    pp.preprocess(config(tmp_path))
    assert calls == ["f1.wav"]
    calls.clear()
    pp.preprocess(config(tmp_path, "features.f0_max_hz=1500"))  # changed feature parameter: everything
    assert sorted(calls) == ["f0.wav", "f1.wav", "f2.wav"]
    calls.clear()
    manifest = pp.preprocess(config(tmp_path, "features.f0_max_hz=1500", "data.hop_seconds=0.25"))
    assert calls == []  # chunking only: features reused
    assert manifest["files"][0]["chunks"] == 5
    assert len(list((tmp_path / ".mlx_ddsp_cache" / "16000hz_250fps" / "files").glob("*.npz"))) == 3  # stale entries removed
    calls.clear()
    pp.preprocess(config(tmp_path, "features.f0_max_hz=1500", "features.f0_dereverb=true"))  # the tracker changed
    assert sorted(calls) == ["f0.wav", "f1.wav", "f2.wav"]


def test_a_model_of_a_room_tracks_pitch_with_the_rooms_tail_damped_unless_told_otherwise(tmp_path):
    params = lambda *extra: pp.feature_params(config(tmp_path, *extra))
    assert params() == params("features.f0_dereverb=false")  # off without a room: earlier caches stay valid
    assert params("synth.reverb=true") == params("features.f0_dereverb=true") != params()
    assert params("synth.reverb=true", "features.f0_dereverb=false") == params()


def test_interrupted_write_leaves_no_half_cache(tmp_path, monkeypatch):
    sf.write(tmp_path / "a.wav", tone(2.0), SR)
    sf.write(tmp_path / "b.wav", tone(2.0, f0=300.0), SR)
    real = pp.compute_file_features
    seen = []

    def crash_on_second(path, cfg):
        seen.append(path)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(path, cfg)

    monkeypatch.setattr(pp, "compute_file_features", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        pp.preprocess(config(tmp_path))
    cache = tmp_path / ".mlx_ddsp_cache" / "16000hz_250fps"
    assert not (cache / "manifest.json").exists()
    assert [p.name.endswith(".npz") for p in (cache / "files").iterdir()] == [True]  # one whole file, no temporaries
    monkeypatch.setattr(pp, "compute_file_features", real)
    manifest = pp.preprocess(config(tmp_path))
    assert all(f["status"] == "ok" for f in manifest["files"])


def test_corrupt_cache_entry_is_recomputed(tmp_path):
    sf.write(tmp_path / "a.wav", tone(2.0), SR)
    pp.preprocess(config(tmp_path))
    (npz,) = (tmp_path / ".mlx_ddsp_cache" / "16000hz_250fps" / "files").glob("*.npz")
    npz.write_bytes(b"truncated")
    assert pp.preprocess(config(tmp_path))["files"][0]["status"] == "ok"


def test_unreadable_file_is_skipped(tmp_path, monkeypatch):
    sf.write(tmp_path / "a.wav", tone(2.0), SR)
    sf.write(tmp_path / "locked.wav", tone(2.0), SR)
    real_read = pp.load_audio.__globals__["sf"].read

    def deny(path, *args, **kwargs):
        if str(path).endswith("locked.wav"):
            raise PermissionError(13, "Permission denied")
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(pp.load_audio.__globals__["sf"], "read", deny)
    by_path = {f["path"]: f for f in pp.preprocess(config(tmp_path))["files"]}
    assert by_path["a.wav"]["status"] == "ok"
    assert by_path["locked.wav"]["reason"] == "permission denied"


def test_batches_are_seeded_full_and_resumable(tmp_path):
    for i in range(3):
        sf.write(tmp_path / f"f{i}.wav", tone(3.0, f0=250.0 + 40 * i), SR)
    pp.preprocess(config(tmp_path, "data.val_fraction=0"))
    dataset = ExampleSet(tmp_path / ".mlx_ddsp_cache" / "16000hz_250fps", "train")
    stream = BatchStream(dataset, batch_size=5, seed=7)
    batch = stream.batch(0)
    assert batch["audio"].shape == (5, SR) and batch["f0_hz"].shape == (5, 251)
    # The same (seed, step) gives the same batch from a fresh stream; another seed differs.
    np.testing.assert_array_equal(np.array(BatchStream(dataset, 5, 7).batch(3)["audio"]), np.array(stream.batch(3)["audio"]))
    assert not np.array_equal(BatchStream(dataset, 5, 8).indices(0), stream.indices(0))
    # Each epoch visits every example once.
    n = len(dataset)
    seen = np.concatenate([stream.indices(s) for s in range(n)])  # n batches of 5 = 5 epochs
    assert all(sorted(seen[e * n : (e + 1) * n]) == list(range(n)) for e in range(5))
    # Audio and features line up: the example's loudness peaks where its audio does.
    example = dataset.example(0)
    assert len(example["audio"]) == dataset.n_samples and len(example["loudness_db"]) == dataset.n_frames


def test_validation_file_that_is_not_there_is_an_error_naming_it(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for name in ("take_01.wav", "take_02.wav", "take_03.wav"):
        sf.write(d / name, tone(2.0), SR)
    with pytest.raises(pp.PreprocessError, match=r"'take_4.wav' matches no usable file .*closest: take_0"):
        pp.preprocess(config(d, "data.val_files=[take_01.wav,take_4.wav]"))
    manifest = pp.preprocess(config(d, "data.val_files=[take_02.wav]"))
    assert [e["split"] for e in manifest["files"] if e["path"] == "take_02.wav"] == ["validation"]


def test_a_link_never_wins_over_the_real_file(tmp_path):
    d = tmp_path / "data"
    (d / "nested" / "deeper").mkdir(parents=True)
    sf.write(d / "nested" / "deeper" / "good_mono.flac", tone(2.0), SR)
    os.symlink(d / "nested" / "deeper" / "good_mono.flac", d / "link_to_good.flac")  # sorts (and walks) first
    found = dict((p.relative_to(d).as_posix(), reason) for p, reason in pp.scan(d))
    assert found == {"link_to_good.flac": "same file as nested/deeper/good_mono.flac (link)",
                     "nested/deeper/good_mono.flac": None}


def test_lead_in_comes_from_before_the_example_and_is_silence_before_the_file(tmp_path):
    t = np.arange(int(3.0 * SR)) / SR
    sf.write(tmp_path / "glide.wav", 0.5 * np.sin(2 * np.pi * (200 * t + 50 * t**2)) * (0.2 + t / 3), SR)
    pp.preprocess(config(tmp_path, "data.val_fraction=0"))
    cache = tmp_path / ".mlx_ddsp_cache" / "16000hz_250fps"
    plain, lead = ExampleSet(cache, "train"), ExampleSet(cache, "train", lead_in_frames=100)
    assert lead.n_frames == plain.n_frames + 100 and lead.n_samples == plain.n_samples + 100 * plain.hop
    file = plain.files[0]
    starts = [start for _, start in plain.index]
    assert 0 in starts and max(starts) >= 100  # one example at the file's start, one with a whole lead-in
    for i, start in enumerate(starts):
        a, b = plain.example(i), lead.example(i)
        for k in ("audio", "f0_hz", "confidence", "loudness_db"):
            np.testing.assert_array_equal(b[k][-len(a[k]):], a[k], err_msg=k)  # the example itself, unchanged
        if start >= 100:
            np.testing.assert_array_equal(b["f0_hz"][:100], file["f0_hz"][start - 100 : start])
            np.testing.assert_array_equal(b["audio"][: 100 * plain.hop], file["audio"][(start - 100) * plain.hop : start * plain.hop])
        else:
            pad = 100 - start
            assert not b["audio"][: pad * plain.hop].any() and not b["confidence"][:pad].any()
            assert (b["f0_hz"][:pad] == file["f0_hz"][0]).all()
            assert (b["loudness_db"][:pad] == file["loudness_db"].min()).all()
            np.testing.assert_array_equal(b["audio"][pad * plain.hop : 100 * plain.hop], file["audio"][: start * plain.hop])
