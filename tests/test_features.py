"""f0 and loudness against signals with known pitch and level."""

from pathlib import Path

import numpy as np
import pytest

from mlx_ddsp.audio import load_audio
from mlx_ddsp.features import a_weighting_db, compute_loudness, compute_power, estimate_f0, frame_loudness

SR, FRAME_RATE, HOP = 16000, 250, 64
DATA = Path(__file__).resolve().parents[1] / "data"


def harmonic_tone(f0_hz, seconds=2.0, amplitudes=(1.0, 0.5, 0.3, 0.2), vibrato_cents=0.0, vibrato_hz=5.5, seed=0):
    """A tone with the given partials and sinusoidal vibrato; returns (audio, f0 per sample)."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = f0_hz * 2.0 ** (vibrato_cents / 1200.0 * np.sin(2 * np.pi * vibrato_hz * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    audio = sum(a * np.sin((k + 1) * phase) for k, a in enumerate(amplitudes))
    audio = 0.5 * audio / np.max(np.abs(audio))
    audio += 0.002 * np.random.default_rng(seed).normal(size=n)
    return audio.astype(np.float32), f0


def test_frame_convention():
    f0, confidence = estimate_f0(np.zeros(64000, np.float32), SR, FRAME_RATE)
    assert f0.shape == confidence.shape == (64000 // HOP + 1,)
    assert compute_loudness(np.zeros(1000, np.float32), SR, FRAME_RATE).shape == (1000 // HOP + 1,)


@pytest.mark.parametrize("f0_hz", [41.2, 82.4, 196.0, 440.0, 987.8, 1760.0, 1975.0])  # B6: its 4th partial stays below Nyquist
@pytest.mark.parametrize("vibrato_cents", [0.0, 40.0])
def test_f0_of_harmonic_tones_with_vibrato(f0_hz, vibrato_cents):
    audio, true_f0 = harmonic_tone(f0_hz, vibrato_cents=vibrato_cents)
    f0, confidence = estimate_f0(audio, SR, FRAME_RATE)
    frames = np.arange(10, len(f0) - 10)  # away from the edges
    truth = true_f0[frames * HOP]
    cents = 1200 * np.abs(np.log2(f0[frames] / truth))
    assert np.mean(cents < 50) >= 0.99
    assert np.median(cents) < 10
    assert np.mean(confidence[frames] >= 0.5) >= 0.99


def test_weak_fundamental_is_not_an_octave_error():
    """A missing-ish fundamental with strong even partials: YIN's classic octave trap."""
    audio, _ = harmonic_tone(220.0, amplitudes=(0.15, 1.0, 0.2, 0.8, 0.1, 0.4))
    f0, _ = estimate_f0(audio, SR, FRAME_RATE)
    cents = 1200 * np.abs(np.log2(f0[10:-10] / 220.0))
    assert np.mean(cents < 50) >= 0.98


def test_weak_but_sharp_odd_partials_keep_the_low_octave():
    """A bassoon's A3: fundamental and odd partials 23-30 dB under the second harmonic, yet sharp lines well above
    the spectrum between them; d' dips almost as deep at half the period. The pitch is the low one."""
    audio, _ = harmonic_tone(233.0, amplitudes=(0.07, 1.0, 0.05, 0.3, 0.04, 0.2, 0.02, 0.1))
    f0, _ = estimate_f0(audio, SR, FRAME_RATE)
    assert np.mean(np.abs(1200 * np.log2(f0[10:-10] / 233.0)) < 50) >= 0.98


def test_faint_sub_octave_does_not_pull_the_pitch_down():
    """An overblown flute's 784 Hz with a trace of the lower register (its sub-octave's odd partials at -40 dB):
    the partials are sharp but far too weak to be the note's."""
    amplitudes = (0.01, 1.0, 0.012, 0.35, 0.01, 0.1)
    audio, _ = harmonic_tone(392.0, amplitudes=amplitudes)
    f0, _ = estimate_f0(audio, SR, FRAME_RATE)
    assert np.mean(np.abs(1200 * np.log2(f0[10:-10] / 784.0)) < 50) >= 0.98


def test_a_tail_under_the_next_note_is_no_common_fundamental():
    """The last note's release (466 Hz, 8 dB down) under the next one a fifth below (311 Hz): together they repeat
    every 1/155 s, but no partial of 155 Hz sounds. The pitch is the new note's."""
    note, _ = harmonic_tone(311.0, amplitudes=(1.0, 0.5, 0.3, 0.2), seed=1)
    tail, _ = harmonic_tone(466.0, amplitudes=(1.0, 0.5, 0.3, 0.2), seed=2)
    f0, _ = estimate_f0(note + 0.4 * tail, SR, FRAME_RATE)
    assert np.mean(np.abs(1200 * np.log2(f0[10:-10] / 311.0)) < 50) >= 0.98


def test_two_detuned_layers_keep_their_octave():
    """Two copies of a tone 22 cents apart (a sampled violin's layers) beat, and the true period's dip is shallow:
    the tracker must not fall to the octave below, where the beating waveform repeats better."""
    low, _ = harmonic_tone(617.0, amplitudes=(1.0, 0.6, 0.5, 0.3, 0.2, 0.1), seed=1)
    high, _ = harmonic_tone(617.0 * 2 ** (22 / 1200), amplitudes=(1.0, 0.6, 0.5, 0.3, 0.2, 0.1), seed=2)
    f0, confidence = estimate_f0(low + high, SR, FRAME_RATE)
    cents = 1200 * np.log2(f0[10:-10] / (617.0 * 2 ** (11 / 1200)))
    assert np.mean(np.abs(cents) < 50) >= 0.98


def test_bright_low_note_is_found_past_its_short_lag_dips():
    """A trombone-like 92 Hz tone with 40 partials under a 1 kHz formant: many shallow dips precede its period."""
    k = np.arange(1, 41)
    amplitudes = tuple(np.exp(-((k * 92.5 - 1000.0) / 600.0) ** 2) + 0.02)
    audio, _ = harmonic_tone(92.5, amplitudes=amplitudes)
    f0, _ = estimate_f0(audio, SR, FRAME_RATE)
    assert np.mean(np.abs(1200 * np.log2(f0[10:-10] / 92.5)) < 50) >= 0.98


def test_voicing_ignores_level_below_silence_and_dc_offsets():
    tone, _ = harmonic_tone(330.0, seconds=1.0)
    quiet = tone / np.max(np.abs(tone)) * 10 ** (-75 / 20)  # a periodic tail far below any note (peak -75 dBFS)
    _, confidence = estimate_f0(quiet, SR, FRAME_RATE)
    assert np.all(confidence[10:-10] < 0.5)
    soft = tone / np.max(np.abs(tone)) * 10 ** (-40 / 20)  # a pianissimo note: still voiced
    f0_soft, confidence_soft = estimate_f0(soft, SR, FRAME_RATE)
    assert np.mean(confidence_soft[10:-10] >= 0.5) >= 0.99
    f0_dc, confidence_dc = estimate_f0(soft + 0.3, SR, FRAME_RATE)  # a DC offset is no sound
    np.testing.assert_allclose(f0_dc[10:-10], f0_soft[10:-10], rtol=1e-3)
    np.testing.assert_allclose(confidence_dc[10:-10], confidence_soft[10:-10], atol=1e-3)


def test_unvoiced_noise_and_silence_have_low_confidence_and_sensible_f0():
    rng = np.random.default_rng(1)
    tone, _ = harmonic_tone(330.0, seconds=1.0)
    audio = np.concatenate([tone, np.zeros(SR // 2, np.float32), 0.3 * rng.normal(size=SR // 2).astype(np.float32), tone])
    f0, confidence = estimate_f0(audio, SR, FRAME_RATE)
    gap = slice(260, 490)  # silence then white noise
    assert np.mean(confidence[gap] < 0.5) >= 0.95
    # f0 holds the last note across the gap, never 0 and never wild.
    assert np.all(np.abs(1200 * np.log2(f0[gap] / 330.0)) < 50)
    assert np.all(np.isfinite(f0)) and np.all(f0 > 0)


def test_glide_is_tracked():
    n = 2 * SR
    f0_true = np.geomspace(300.0, 600.0, n)
    audio = (0.5 * np.sin(2 * np.pi * np.cumsum(f0_true) / SR) + 0.2 * np.sin(4 * np.pi * np.cumsum(f0_true) / SR)).astype(np.float32)
    f0, _ = estimate_f0(audio, SR, FRAME_RATE)
    frames = np.arange(10, len(f0) - 10)
    assert np.mean(1200 * np.abs(np.log2(f0[frames] / f0_true[frames * HOP])) < 50) >= 0.99


def test_bundled_flute_file_against_midi_truth():
    """One bundled FluidR3 flute file: raw pitch accuracy over clearly voiced frames (attacks left out)."""
    audio = load_audio(DATA / "flute" / "flute_03.flac", SR)
    truth = np.load(DATA / "flute_truth" / "flute_03.npz")
    f0, confidence = estimate_f0(audio, SR, FRAME_RATE)
    n = min(len(f0), len(truth["f0_hz"]))
    keep = truth["voiced"][:n] & ~truth["ambiguous"][:n]
    cents = 1200 * np.abs(np.log2(f0[:n][keep] / truth["f0_hz"][:n][keep]))
    assert np.mean(cents < 50) >= 0.97
    scored = ~truth["ambiguous"][:n]
    assert np.mean((confidence[:n] >= 0.5)[scored] == truth["voiced"][:n][scored]) >= 0.93


@pytest.mark.parametrize("amplitude", [1.0, 0.1, 0.01])
def test_loudness_of_a_1khz_sine(amplitude):
    t = np.arange(SR) / SR
    audio = (amplitude * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    loudness = compute_loudness(audio, SR, FRAME_RATE)
    expected = 20 * np.log10(amplitude) - 3.0103 + a_weighting_db(1000.0)
    np.testing.assert_allclose(loudness[10:-10], expected, atol=0.05)


def magenta_power_db(audio, frame_size=1024, hop=320):
    """Magenta's compute_power with centred frames, written out: pad half a frame each side, rectangular frames,
    10 log10 of the mean square (floored at 1e-8), at least -80 dB."""
    padded = np.pad(audio.astype(np.float64), frame_size // 2)
    n_frames = (len(padded) - frame_size) // hop + 1
    mean_square = np.array([np.mean(padded[i * hop : i * hop + frame_size] ** 2) for i in range(n_frames)])
    return np.maximum(10 * np.log10(np.maximum(mean_square, 1e-8)), -80.0)


def test_power_is_ddsp_vsts_feature():
    rng = np.random.default_rng(3)
    audio = (0.3 * rng.normal(size=3 * SR) * np.repeat([1.0, 0.0, 0.01], SR)).astype(np.float32)
    ours = compute_power(audio, SR, 50)  # 50 frames/s: hop 320, as the plugin
    np.testing.assert_allclose(ours, magenta_power_db(audio), atol=1e-3)
    assert ours.min() == -80.0 and len(ours) == 3 * SR // 320 + 1


@pytest.mark.parametrize("sample_rate", [16000, 48000])
def test_power_of_a_sine_is_unweighted(sample_rate):
    t = np.arange(sample_rate) / sample_rate
    for frequency in (125.0, 1000.0):  # whole periods in the 64 ms window at both rates
        power = compute_power((0.1 * np.sin(2 * np.pi * frequency * t)).astype(np.float32), sample_rate, 250)
        np.testing.assert_allclose(power[20:-20], 20 * np.log10(0.1) - 3.0103, atol=1e-3)
    assert np.array_equal(frame_loudness(np.zeros(100, np.float32), SR, 250, "power"), [-80.0, -80.0])
    with pytest.raises(ValueError, match="features.loudness"):
        frame_loudness(np.zeros(100, np.float32), SR, 250, "rms")


def test_loudness_a_weighting_and_floor():
    t = np.arange(SR) / SR
    low = compute_loudness((0.5 * np.sin(2 * np.pi * 100.0 * t)).astype(np.float32), SR)
    mid = compute_loudness((0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32), SR)
    # A-weighting: 100 Hz sits about 19.1 dB below 1 kHz.
    assert np.median(mid - low) == pytest.approx(19.1, abs=0.3)
    assert a_weighting_db(1000.0) == pytest.approx(0.0, abs=0.01)
    assert np.all(compute_loudness(np.zeros(SR, np.float32), SR) == -80.0)
    # 6 dB louder reads 6 dB louder.
    np.testing.assert_allclose(compute_loudness((2 * 0.25 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), SR)[10:-10]
                               - compute_loudness((0.25 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), SR)[10:-10],
                               20 * np.log10(2), atol=0.01)


def test_causal_f0_tracks_a_melody_with_rests_and_holds_its_last_note_through_them():
    notes = [(220.0, 0.5), (0.0, 0.3), (330.0, 0.5), (0.0, 0.3), (247.0, 0.5)]  # (Hz, s); 0 Hz is a rest
    audio = np.concatenate([harmonic_tone(f, s)[0] if f else np.zeros(int(s * SR), np.float32) for f, s in notes])
    f0, confidence = estimate_f0(audio, SR, FRAME_RATE, causal=True)
    start = 0
    for f, s in notes:
        frames = np.arange(start, start + int(s * FRAME_RATE))[10:-10]
        start += int(s * FRAME_RATE)
        if f:
            assert np.median(1200 * np.abs(np.log2(f0[frames] / f))) < 10
            assert np.mean(confidence[frames] >= 0.5) > 0.95
        else:  # a rest holds the note before it
            assert np.mean(confidence[frames] < 0.5) > 0.95
            assert np.all(np.abs(np.log2(f0[frames] / f0[frames[0] - 12])) < 1 / 24)


def test_causal_f0_of_a_frame_depends_on_no_audio_past_its_analysis_window():
    from mlx_ddsp.features import analysis_extent, analysis_range

    rest = np.zeros(int(0.3 * SR), np.float32)
    audio = np.concatenate([harmonic_tone(196.0, 0.6)[0], rest, harmonic_tone(392.0, 0.6, seed=1)[0]])
    full = estimate_f0(audio, SR, FRAME_RATE, f0_min_hz=60.0, causal=True)
    after = analysis_extent(analysis_range(SR, 60.0, 2100.0)[2])[1]
    for frame in (100, 160, 200, 226, 240):  # a note, the rest after it (frames 150-225), the next note
        cut = audio[: frame * HOP + after + 1]  # the frame's window ends at this sample
        part = estimate_f0(cut, SR, FRAME_RATE, f0_min_hz=60.0, causal=True)
        np.testing.assert_allclose(part[0][: frame + 1], full[0][: frame + 1], rtol=1e-6)
        np.testing.assert_allclose(part[1][: frame + 1], full[1][: frame + 1], atol=1e-6)


def test_candidate_probabilities_are_pyins_threshold_by_threshold():
    """pYIN: each threshold's prior mass goes to the first candidate (in lag order) whose dip is below it, or, scaled
    by the absolute-minimum weight, to the deepest when none is."""
    from mlx_ddsp import features

    rng = np.random.default_rng(3)
    values = rng.uniform(0.0, 0.6, (300, features.N_CANDIDATES))
    values[rng.uniform(size=values.shape) < 0.3] = np.inf
    values[:5] = np.inf  # no candidate at all
    values[5:10] = np.round(values[5:10], 2)  # dips exactly at a threshold: a dip must be below it
    expected = np.zeros(values.shape)
    for row, depths in enumerate(values):
        if not np.isfinite(depths).any():
            continue
        for threshold, mass in zip(features._THRESHOLDS, features._THRESHOLD_PRIOR):
            passing = np.flatnonzero(depths < threshold)
            if len(passing):
                expected[row, passing[0]] += mass
            else:
                expected[row, np.argmin(depths)] += mass * features._ABSOLUTE_MIN_WEIGHT
    np.testing.assert_allclose(features._candidate_probabilities(values), expected, atol=1e-12)


def test_hand_overs_follow_their_chains_as_one_by_one_would():
    """_pass_along against handing over one candidate at a time, longest first (shortest first when they point to
    longer periods), on random chains."""
    from mlx_ddsp.features import _pass_along

    rng = np.random.default_rng(0)
    n, m = 200, 12
    probs = rng.random((n, m))
    for downwards in (True, False):
        own = np.arange(m)
        to = np.array([[rng.integers(0, j + 1) if downwards else rng.integers(j, m) for j in own] for _ in range(n)])
        to = np.where(rng.random((n, m)) < 0.5, own, to)  # half the candidates keep theirs
        expected = probs.copy()
        for j in (own[::-1] if downwards else own):
            expected[np.arange(n), to[:, j]] += np.where(to[:, j] != j, expected[:, j], 0.0)
            expected[:, j] = np.where(to[:, j] != j, 0.0, expected[:, j])
        np.testing.assert_allclose(_pass_along(probs, to), expected, rtol=1e-12, atol=1e-12)


def test_difference_function_is_yins_sum_of_squared_differences():
    """d(tau) = sum over the window's W samples of (x[j] - x[j + tau])^2, and d' its cumulative mean normalisation,
    against the sums written out (float64), for frames at arbitrary offsets of a call."""
    from mlx_ddsp.features import _difference

    max_lag, window = 40, 42
    padded = np.random.default_rng(4).normal(0.0, 0.3, 400).astype(np.float32)
    offsets = np.array([0, 7, 64, 300])
    difference, cmndf, _, _ = _difference(padded, offsets, max_lag)
    x = padded.astype(np.float64)
    for row, start in enumerate(offsets):
        d = np.array([np.sum((x[start : start + window] - x[start + tau : start + tau + window]) ** 2)
                      for tau in range(max_lag + 1)])
        np.testing.assert_allclose(difference[row], d, rtol=1e-4, atol=1e-4)
        tau = np.arange(1, max_lag + 1)
        np.testing.assert_allclose(cmndf[row, 1:], d[1:] * tau / np.cumsum(d[1:]), rtol=1e-3)
