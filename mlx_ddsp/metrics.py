"""What a reconstruction is scored on: spectral distance, loudness and pitch errors, the harmonic share of its
energy and, at studio rates, the band above 8 kHz. Pure functions of audio and feature tracks (numpy, plus the MLX
loss), used by eval and the benchmarks.

    metrics = clip_metrics(target, recon, target_features, cfg)      # {"spectral_loss": ..., ...}

Clip metrics (see `clip_metrics`):
  spectral_loss          the recipe's multi-scale spectral loss over the whole clip
  mel_l1_db              mean |dB difference| of the two log-mel spectrograms (`mel_distance_db`): the spectral
                         envelope over time, with most of the fine structure within a band averaged out (a
                         room's random gain at each frequency, which no model can match, costs the spectral
                         loss's log term ~0.69 per bin for any other draw of it against ~0.48 for a smooth
                         estimate; over a band's bins it costs about a third as much: two white-noise draws are
                         2.3 dB apart here, 6 dB per bin)
  loudness_l1_db         mean |loudness(recon) - loudness(target)| over frames where the target is above -60 dB
  f0_l1_cents            mean |f0(recon) - f0(target)| in cents over frames both trackers are >= 0.85 sure of
  f0_outlier_ratio       share of the target's confident frames where the recon is > 100 cents off or unvoiced
  comb_harmonic_share    share of the recon's energy near the harmonics of the target's f0 (`comb_harmonic_share`)
  band_spectral_loss     the spectral loss over 8-20 kHz only (rates above 16 kHz; `BAND_HZ`)
  band_energy_db         the recon's energy over 8-20 kHz relative to the target's, dB (0: all of it; -inf: none)
  dry_spectral_loss      with the clip's dry recording (eval --dry, for a clip recorded in a room): the spectral
                         loss of the model's dry output (its sound before its room; a model without a room: all of
                         it) against that recording: whether the model separated the instrument from the room
  dry_f0_truth_rpa       with the true pitch (eval --truth): f0_truth_rpa of the model's dry output (a model
                         without a room: all of it), the pitch the model plays before its room blurs it: in a room
                         the tracker reads the old note's tail over the next note's start, in the recording and in a
                         wet output alike, so the wet output's pitch scores say as much about the room as the notes
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

from mlx_ddsp.config import Config
from mlx_ddsp.features import VOICED_THRESHOLD, centred_frames, frame_hop, loudness_window
from mlx_ddsp.losses import magnitude_spectrogram, recipe_loss
from mlx_ddsp.mfcc import mel_matrix
from mlx_ddsp.preprocess import analyse

AUDIBLE_DB = -60.0  # loudness_l1_db counts target frames above this
CONFIDENT = 0.85  # f0 metrics use frames the tracker is at least this sure of
VOICED = VOICED_THRESHOLD  # below this confidence the reconstruction counts as unvoiced
OUTLIER_CENTS = 100.0
MEL_BANDS = 64  # mel_l1_db: bands from MEL_LO_HZ to Nyquist, on an FFT of MEL_WINDOW_S, 75 % overlap
MEL_LO_HZ = 20.0
MEL_WINDOW_S = 0.064  # 1024 samples at 16 kHz (rounded to a power of two at other rates)
MEL_RANGE_DB = 80.0  # both spectrograms floored this far below the target's loudest band
BAND_HZ = (8000.0, 20000.0)  # the top octave(s) a 16 kHz model cannot reach (capped at Nyquist)
METRICS = ("spectral_loss", "mel_l1_db", "loudness_l1_db", "f0_l1_cents", "f0_outlier_ratio", "comb_harmonic_share",
           "band_spectral_loss", "band_energy_db")
TRUTH_METRICS = ("f0_truth_rpa", "f0_truth_l1_cents")
DRY_METRICS = ("dry_spectral_loss", "dry_f0_truth_rpa")
REPORTED = METRICS + ("branch_harmonic_share",) + TRUTH_METRICS + DRY_METRICS  # every score eval writes, in the order it shows them
# which way is better: "lower", "higher", or None (neither: the shares and the band energy are read against the
# target's own share, or 0 dB)
BETTER = {**{m: "lower" for m in REPORTED}, "f0_truth_rpa": "higher", "dry_f0_truth_rpa": "higher",
          "comb_harmonic_share": None, "branch_harmonic_share": None, "band_energy_db": None}


def dry_metrics(dry_recording: np.ndarray, dry_output: np.ndarray, cfg: Config) -> dict:
    """{"dry_spectral_loss"}: a dry output against the clip's dry recording (both (N,) at data.sample_rate; the
    longer one is cut to the shorter)."""
    n = min(len(dry_recording), len(dry_output))
    loss = recipe_loss(cfg.loss, cfg.data.sample_rate, mx.array(dry_recording[None, :n]), mx.array(dry_output[None, :n]))
    return {"dry_spectral_loss": loss.item()}


def clip_metrics(target: np.ndarray, recon: np.ndarray, target_features: dict, cfg: Config,
                 recon_features: dict | None = None, truth: dict | None = None) -> dict:
    """The metrics of `recon` against `target` (both (N,) at data.sample_rate; see the module docstring).

    target_features / recon_features: {"f0_hz", "confidence", "loudness_db"} (T,) on the recipe's frames (the
    recon's are computed when not given). truth: {"f0_hz", "voiced"} (T,) on the same frames, or None.
    The band metrics are present only when Nyquist is above 8 kHz.
    """
    recon_features = recon_features or track(recon, cfg)
    sample_rate = cfg.data.sample_rate
    loss = recipe_loss(cfg.loss, sample_rate, mx.array(target[None]), mx.array(recon[None])).item()
    loud_t, loud_r = target_features["loudness_db"], recon_features["loudness_db"]
    audible = loud_t > AUDIBLE_DB
    f0_r, conf_r = recon_features["f0_hz"], recon_features["confidence"]
    f0_t, conf_t = target_features["f0_hz"], target_features["confidence"]
    n = min(len(f0_t), len(f0_r))
    cents = _cents(f0_r[:n], f0_t[:n])
    confident = conf_t[:n] >= CONFIDENT
    both = confident & (conf_r[:n] >= CONFIDENT)
    outliers = confident & ((cents > OUTLIER_CENTS) | (conf_r[:n] < VOICED))
    hop = frame_hop(sample_rate, cfg.features.frame_rate)
    metrics = {
        "spectral_loss": loss,
        "mel_l1_db": mel_distance_db(target, recon, sample_rate),
        "loudness_l1_db": float(np.mean(np.abs(loud_r[: len(loud_t)] - loud_t)[audible])) if audible.any() else None,
        "f0_l1_cents": float(np.mean(cents[both])) if both.any() else None,
        "f0_outlier_ratio": float(np.mean(outliers[confident])) if confident.any() else None,
        "comb_harmonic_share": comb_harmonic_share(recon, f0_t, conf_t, sample_rate, hop),
    }
    if sample_rate / 2 > BAND_HZ[0]:
        metrics.update(band_metrics(target, recon, cfg))
    if truth is not None:
        metrics.update(truth_metrics(f0_r, truth))
    return metrics


def mel_distance_db(target: np.ndarray, recon: np.ndarray, sample_rate: int) -> float:
    """Mean over frames and bands of |mel_db(target) - mel_db(recon)| (both (N,) at sample_rate Hz; the longer one
    is cut to the shorter): mel_db is 10 log10 of the power of a Hann-windowed STFT (MEL_WINDOW_S, 75 % overlap)
    summed over MEL_BANDS triangular mel bands (`mfcc.mel_matrix`, MEL_LO_HZ to Nyquist), floored MEL_RANGE_DB below
    the target's loudest band. 0 for equal signals; a gain of g dB scores |g| (above the floor)."""
    n = min(len(target), len(recon))
    n_fft = 2 ** int(round(math.log2(MEL_WINDOW_S * sample_rate)))
    weights = mel_matrix(sample_rate, n_fft, MEL_BANDS, MEL_LO_HZ, sample_rate / 2.0)
    mel_db = []
    for audio in (target, recon):
        power = mx.square(magnitude_spectrogram(mx.array(np.asarray(audio[:n], np.float32)[None]), n_fft))[0]
        mel_db.append(10.0 * mx.log10(mx.maximum(power @ weights, 1e-30)))
    floor = mx.max(mel_db[0]) - MEL_RANGE_DB
    return mx.mean(mx.abs(mx.maximum(mel_db[0], floor) - mx.maximum(mel_db[1], floor))).item()


def band_metrics(target: np.ndarray, recon: np.ndarray, cfg: Config) -> dict:
    """band_spectral_loss and band_energy_db of `recon` against `target` over BAND_HZ (capped at Nyquist)."""
    band = (BAND_HZ[0], min(BAND_HZ[1], cfg.data.sample_rate / 2))
    target_mx, recon_mx = mx.array(target[None]), mx.array(recon[None])
    loss = recipe_loss(cfg.loss, cfg.data.sample_rate, target_mx, recon_mx, band).item()
    energy = [band_energy(x, cfg.data.sample_rate, band) for x in (target, recon)]
    ratio = energy[1] / energy[0] if energy[0] > 0 else None
    return {"band_spectral_loss": loss,
            "band_energy_db": None if ratio is None else float(10.0 * np.log10(max(ratio, 1e-30)))}


def band_energy(audio: np.ndarray, sample_rate: int, band_hz: tuple[float, float]) -> float:
    """Energy of (N,) audio between band_hz[0] and band_hz[1] Hz (sum of squares of the band-passed signal)."""
    spectrum = np.fft.rfft(np.asarray(audio, dtype=np.float64))
    frequencies = np.fft.rfftfreq(len(audio), 1.0 / sample_rate)
    inside = (frequencies >= band_hz[0]) & (frequencies < band_hz[1])
    return float(2.0 * np.sum(np.abs(spectrum[inside]) ** 2) / len(audio))


def comb_harmonic_share(audio: np.ndarray, f0_hz: np.ndarray, confidence: np.ndarray, sample_rate: int,
                        hop: int) -> float | None:
    """Share of the energy of (N,) audio that lies near the harmonics of an f0 track: an estimate of how much of a
    recording is harmonic, applied alike to a target and its reconstruction.

    f0_hz, confidence: (T,) on frames `hop` samples apart. Per frame, Hann-windowed power spectrum
    (`loudness_window`); in frames with confidence >= VOICED the bins within max(2 bins, 1 % of k f0) (at most
    f0 / 8) of a multiple k f0 count as harmonic, every other bin and every other frame's energy as not. White noise
    scores the comb's share of the band (its width over f0: 0.23 for a 220-330 Hz track), not 0; a harmonic tone ~1.
    Returns None for a silent clip.
    """
    window, n_fft = loudness_window(sample_rate)
    frequencies = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)[None, :]
    audio = np.asarray(audio, dtype=np.float32)
    n_frames = min(len(f0_hz), len(audio) // hop + 1)
    harmonic = total = 0.0
    for start in range(0, n_frames, 1024):
        count = min(1024, n_frames - start)
        frames = centred_frames(audio, len(window), hop, start, count) * window
        power = np.abs(np.fft.rfft(frames, n_fft, axis=-1)) ** 2
        f0 = np.maximum(f0_hz[start : start + count], 1.0)[:, None]
        distance = np.abs(frequencies - np.rint(frequencies / f0) * f0)  # to the nearest multiple of f0
        tolerance = np.minimum(np.maximum(2.0 * sample_rate / n_fft, 0.01 * frequencies), f0 / 8.0)
        near = (distance <= tolerance) & (frequencies >= f0 / 2.0) & (confidence[start : start + count, None] >= VOICED)
        harmonic += float(power[near].sum())
        total += float(power.sum())
    return harmonic / total if total > 0 else None


def branch_harmonic_share(harmonic: np.ndarray, noise: np.ndarray) -> float | None:
    """The model's own split: energy of its harmonic branch over that of both branches (None if both are silent)."""
    energies = [float(np.sum(np.asarray(x, dtype=np.float64) ** 2)) for x in (harmonic, noise)]
    return energies[0] / sum(energies) if sum(energies) > 0 else None


def truth_metrics(f0_hz: np.ndarray, truth: dict) -> dict:
    """f0_truth_rpa and f0_truth_l1_cents of an f0 track (T,) against the truth's voiced frames (None if none)."""
    n = min(len(f0_hz), len(truth["f0_hz"]))
    voiced = truth["voiced"][:n]
    if not voiced.any():
        return {k: None for k in TRUTH_METRICS}
    cents = _cents(f0_hz[:n][voiced], truth["f0_hz"][:n][voiced])
    return {"f0_truth_rpa": float(np.mean(cents < 50.0)), "f0_truth_l1_cents": float(np.mean(cents))}


def _cents(f0_hz: np.ndarray, reference_hz: np.ndarray) -> np.ndarray:
    return np.abs(1200.0 * np.log2(np.maximum(f0_hz, 1e-3) / np.maximum(reference_hz, 1e-3)))


def track(audio: np.ndarray, cfg: Config) -> dict:
    """{"f0_hz", "confidence", "loudness_db"} (T,) of `audio` (N,) on the recipe's frames: the features training
    computes (`preprocess.analyse`), so an output is tracked as its input was."""
    return {name: values for name, values in analyse(audio, cfg).items() if name != "audio"}
