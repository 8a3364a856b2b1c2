"""The streaming engine: streamed output = the offline render of the same causal features, shifted by the stated
latency, for any block sizes; its reverb against numpy's convolution; resets; what it refuses."""

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_ddsp.config import load_config
from mlx_ddsp.models import build_model
from mlx_ddsp.stream import CausalAdjust, PartitionedReverb, StreamError, Streamer, render_offline


ROOT = Path(__file__).resolve().parents[1]
LOUDNESS_QUANTILES = {str(q): -50.0 + 40.0 * q for q in (0.0, 0.25, 0.5, 0.75, 1.0)}  # uniform, -50 to -10 dB
STATS = {"f0_hz": {"quantiles": {"0.01": 262.0, "0.99": 1000.0}},  # a flute's training range
         "f0_midi": {"mean": 76.0}, "loudness_db": {"quantiles": LOUDNESS_QUANTILES}}


def small_model(*overrides: str):
    """The flute CPU recipe's model (decoder at 50 frames/s, 100 harmonics, 65 noise bands), narrower."""
    cfg = load_config(ROOT / "recipes" / "flute_cpu.yaml",
                      ["model.hidden_size=64", "model.gru_size=64", *overrides])
    mx.random.seed(3)
    model = build_model(cfg)
    model.eval()
    return model, cfg


def performance(rate: int, seconds: float = 1.6) -> np.ndarray:
    """A played line: vibrato, a glide, a rest and a detached note, over a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = np.where(t < 0.7, 440.0 * 2 ** (0.3 * np.sin(2 * np.pi * 5 * t)), 330.0 * 2 ** ((t - 0.7) / 2))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    audio = 0.3 * np.sin(phase) + 0.1 * np.sin(2 * phase) + 0.05 * np.sin(3 * phase)
    audio[(t > 0.55) & (t < 0.8)] = 0.0
    audio += 0.003 * np.random.default_rng(0).normal(size=len(t))
    return audio.astype(np.float32)


def stream(streamer: Streamer, audio: np.ndarray, sizes) -> np.ndarray:
    """Play audio followed by latency_samples of silence in blocks of the given sizes (an int or a generator);
    returns the output with the latency removed, as long as the input (`Streamer.play`)."""
    return streamer.play(audio, sizes)[0]


def random_sizes(seed: int = 0):
    rng = np.random.default_rng(seed)
    while True:
        yield int(rng.integers(1, 1500))


@pytest.fixture(scope="module", params=["numpy", "mlx"])
def flute_like(request):
    """A streamer at 48 kHz with the numpy decoder step (the CPU's) or the compiled MLX one (a GPU's)."""
    model, cfg = small_model()
    return Streamer(model, cfg, STATS, 48000, decoder=request.param)


@pytest.mark.parametrize("sizes", [64, 256, 1000, "random"])
def test_streamed_equals_offline_for_every_block_pattern(flute_like, sizes):
    audio = performance(48000)
    offline = render_offline(flute_like, audio)
    assert np.sqrt(np.mean(offline**2)) > 1e-3  # something to compare
    flute_like.reset()
    streamed = stream(flute_like, audio, random_sizes() if sizes == "random" else sizes)
    assert np.abs(streamed - offline).max() < 1e-4


@pytest.mark.parametrize("recurrent", ["gru", "mingru"])
def test_the_numpy_decoder_step_is_the_mlx_decoder(recurrent):
    from mlx_ddsp.numpy_decoder import NumpyDecoder

    model, _ = small_model(f"model.recurrent={recurrent}", "model.frame_rate=250")
    f0_hz = np.array([220.0, 233.1, 440.0, 1500.0], np.float32)
    loudness_db = np.array([-60.0, -30.0, -12.0, -40.0], np.float32)
    expected = model.decode(mx.array(f0_hz[None]), mx.array(loudness_db[None]))
    step, state = NumpyDecoder(model), np.zeros(64, np.float32)
    for t in range(len(f0_hz)):  # frame by frame, the state carried
        controls, state = step(float(f0_hz[t]), float(loudness_db[t]), state)
        for name, value in controls.items():
            np.testing.assert_allclose(value, np.array(expected[name][0, t]).reshape(-1), rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(state, np.array(expected["state"][0]), rtol=1e-5, atol=1e-6)


def test_every_block_comes_back_as_long_as_it_went_in(flute_like):
    flute_like.reset()
    audio = performance(48000, 0.5)
    position = 0
    for size in [1, 7, 0, 64, 1000, 333, 4096, 2] * 4:
        block = audio[position : position + size]
        assert len(flute_like.process(block)) == len(block)
        position += size


def test_latency_of_the_flute_cpu_model_at_48khz_is_below_ddsp_vsts(flute_like):
    # half the 64 ms loudness window + one 20 ms decoder hop + the noise filters' 4 ms + the resamplers
    assert 50.0 < 1000.0 * flute_like.latency_samples / 48000 <= 64.0


def test_reset_starts_a_new_phrase(flute_like):
    audio = performance(48000, 0.8)
    flute_like.reset()
    first = stream(flute_like, audio, 256)
    flute_like.process(performance(48000, 0.5)[::-1].copy())
    flute_like.reset()
    np.testing.assert_array_equal(stream(flute_like, audio, 256), first)


def test_a_room_a_48khz_model_shifts_and_power_loudness_stream_as_offline():
    model, cfg = small_model("data.sample_rate=48000", "synth.reverb=true", "synth.reverb_model=parametric",
                             "synth.reverb_seconds=0.3", "features.loudness=power", "model.frame_rate=250")
    streamer = Streamer(model, cfg, STATS, 44100, pitch_shift=-5.0, loudness_shift=3.0)
    audio = performance(44100, 1.0)
    offline = render_offline(streamer, audio)
    dry = render_offline(Streamer(model, cfg, STATS, 44100, pitch_shift=-5.0, loudness_shift=3.0), audio)
    assert np.abs(offline - dry).max() == 0.0  # (the same settings render the same)
    np.testing.assert_allclose(stream(streamer, audio, random_sizes(1)), offline, atol=1e-4)


def test_auto_adjust_streams_as_offline():
    model, cfg = small_model()
    streamer = Streamer(model, cfg, STATS, 48000, auto_adjust=True, f0_min_hz=100.0)
    audio = performance(48000, 1.2)
    np.testing.assert_allclose(stream(streamer, audio, random_sizes(2)), render_offline(streamer, audio), atol=1e-4)


def test_causal_auto_adjust_moves_whole_phrases_by_octaves_and_maps_loudness_by_rank():
    adjuster = CausalAdjust(STATS, auto_adjust=True)  # the training pitch: MIDI 76 (E5, 659 Hz)
    # a phrase two octaves below, a rest, a phrase an octave below it: the mean so far decides each phrase's shift
    phrase_one = [adjuster.pitch(165.0 * 2 ** (c / 1200), 0.9) for c in (0, 30, -30, 0)]
    assert np.allclose(phrase_one, 4 * 165.0 * 2 ** (np.array([0, 30, -30, 0]) / 1200), rtol=1e-5)
    adjuster.pitch(165.0, 0.1)  # unvoiced
    phrase_two = [adjuster.pitch(82.5, 0.9) for _ in range(8)]
    # mean so far at its first frame: (4 * MIDI(165) + MIDI(82.5)) / 5, 2.4 semitones under 165 Hz: still +2 octaves,
    # and held for the phrase though the running mean keeps falling
    assert np.allclose(phrase_two, 4 * 82.5, rtol=1e-5)
    adjuster.pitch(82.5, 0.0)
    assert np.isclose(adjuster.pitch(82.5, 0.9), 8 * 82.5, rtol=1e-5)  # the next phrase: the mean is now lower
    levels = [adjuster.loudness(db, 0.9) for db in (-30.0, -20.0, -40.0, -25.0)]
    # ranks among the voiced loudness so far: 0.5, 0.75, 0.167, 0.625 -> -30, -20, -43.3, -25 dB on the reference
    np.testing.assert_allclose(levels, [-30.0, -20.0, -50.0 + 40.0 / 6, -25.0], atol=1e-4)
    assert adjuster.loudness(-30.0, 0.1) == pytest.approx(-30.0 - 40.0)  # unvoiced: not mapped, 40 dB quieter


def test_partitioned_reverb_is_numpys_convolution():
    rng = np.random.default_rng(4)
    ir = rng.normal(size=1000) * np.exp(-np.arange(1000) / 200)
    dry = rng.normal(size=64 * 40).astype(np.float32)
    reverb = PartitionedReverb(ir, 64)
    wet = np.concatenate([reverb.push(dry[i : i + 64]) for i in range(0, len(dry), 64)])
    ir[0] = 0.0  # the dry path is the first tap
    np.testing.assert_allclose(wet, dry + np.convolve(dry, ir)[: len(dry)], atol=1e-4)


def test_models_with_an_encoder_are_refused():
    model, cfg = small_model("model.encoder=true")
    with pytest.raises(StreamError, match="encoder"):
        Streamer(model, cfg, STATS, 48000)


def test_the_room_can_be_left_out_or_taken_from_another_run(tmp_path):
    """--room dry streams the dry output; --room RUN_DIR another model's room (here: its own, from its checkpoint);
    the model's own room is dry + dry * IR (numpy's convolution) at the model's rate."""
    import mlx.optimizers as optim

    from mlx_ddsp import checkpoint

    model, cfg = small_model("synth.reverb=true", "synth.reverb_seconds=0.3")  # 16 kHz model, parametric room
    optimizer = optim.Adam(learning_rate=1e-3)
    optimizer.init(model.trainable_parameters())
    checkpoint.save(tmp_path, model, optimizer, cfg, {"step": 1})
    audio = performance(16000, 1.0)
    keep, dry, other = (Streamer(model, cfg, STATS, 16000, room=room) for room in ("keep", "dry", str(tmp_path)))
    played_dry = render_offline(dry, audio)
    ir = np.array(model.room_impulse_response())
    np.testing.assert_allclose(render_offline(keep, audio), played_dry + np.convolve(played_dry, ir)[: len(audio)],
                               atol=1e-4)
    np.testing.assert_allclose(stream(dry, audio, random_sizes(3)), played_dry, atol=1e-4)
    np.testing.assert_allclose(stream(other, audio, random_sizes(4)), render_offline(keep, audio), atol=1e-4)
    assert np.abs(render_offline(keep, audio) - played_dry).max() > 1e-3
