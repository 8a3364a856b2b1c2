"""The streaming resampler against closed-form sines, its stop band, and its block-size and causality claims."""

import numpy as np
import pytest

from mlx_ddsp.resampler import Resampler

RATE_PAIRS = [(48000, 16000), (16000, 48000), (44100, 16000), (16000, 44100), (22050, 16000)]


def tones(n: int, rate: int, frequencies=(440.3, 1000.7, 5000.0), amplitudes=(0.3, 0.3, 0.2)) -> np.ndarray:
    t = np.arange(n) / rate
    return sum(a * np.sin(2 * np.pi * f * t + f) for f, a in zip(frequencies, amplitudes))


@pytest.mark.parametrize("in_rate,out_rate", RATE_PAIRS)
def test_pass_band_tones_come_out_as_the_same_tones_at_the_new_rate(in_rate, out_rate):
    x = tones(in_rate // 2, in_rate).astype(np.float32)
    y = Resampler(in_rate, out_rate).resample(x)
    assert len(y) == -(-len(x) * out_rate // in_rate)
    expected = tones(len(y), out_rate)  # output m sits at the input's time m / out_rate: no delay to undo
    inner = slice(out_rate // 50, -out_rate // 50)  # away from the edges (zeros assumed outside the signal)
    assert np.abs(y[inner] - expected[inner]).max() < 1e-4


def test_a_tone_above_the_new_nyquist_frequency_is_removed():
    x = np.sin(2 * np.pi * 12000.0 * np.arange(48000) / 48000).astype(np.float32)
    y = Resampler(48000, 16000).resample(x)[1000:-1000]
    assert 20 * np.log10(np.sqrt(np.mean(y**2)) / np.sqrt(0.5)) < -70


@pytest.mark.parametrize("in_rate,out_rate", RATE_PAIRS + [(16000, 16000)])
def test_any_block_sizes_give_the_one_shot_result(in_rate, out_rate):
    x = np.random.default_rng(0).uniform(-1, 1, in_rate // 4).astype(np.float32)
    resampler = Resampler(in_rate, out_rate)
    whole = resampler.resample(x)
    rng = np.random.default_rng(1)
    pieces, position = [], 0
    while position < len(x):
        size = int(rng.choice([0, 1, 7, 64, 333]))
        pieces.append(resampler.push(x[position : position + size]))
        position += size
        assert sum(map(len, pieces)) == resampler.outputs_after(min(position, len(x)))
    streamed = np.concatenate(pieces)
    np.testing.assert_array_equal(streamed, whole[: len(streamed)])
    assert len(whole) - len(streamed) <= resampler.delay_in_samples * out_rate / in_rate + 1


def test_an_output_depends_on_no_input_beyond_its_stated_delay():
    resampler = Resampler(44100, 16000)
    x = np.random.default_rng(2).uniform(-1, 1, 5000).astype(np.float32)
    early = resampler.push(x)  # what 5000 samples determine, whatever follows them
    longer = resampler.resample(np.concatenate([x, np.random.default_rng(3).uniform(-1, 1, 500)]))
    np.testing.assert_array_equal(early, longer[: len(early)])
    assert resampler.outputs_after(5000) == len(early)
    assert int((len(early) - 1) * 44100 / 16000) + resampler.delay_in_samples <= 4999  # the stated delay holds
    assert int(len(early) * 44100 / 16000) + resampler.delay_in_samples > 4999  # and no output is held back


def test_equal_rates_pass_the_signal_through_with_no_delay():
    resampler = Resampler(16000, 16000)
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(resampler.push(x), x)
    assert resampler.delay_in_samples == 0
