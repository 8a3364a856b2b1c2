"""Play a trained model live: audio blocks of any size in, at any rate; the model's rendering out, block for block,
with a fixed latency.

    streamer = Streamer.from_run("runs/flute_cpu", sample_rate=48000)
    out = streamer.process(block)    # (n,) float32 in, (n,) out: the input `streamer.latency_samples` earlier, played
    streamer.reset()                 # a new phrase: silence in, silence out, every state back to the start

usage: python -m mlx_ddsp.stream RUN_DIR INPUT OUTPUT [--block 256] [--pitch-shift ST] [--loudness-shift DB]
                                 [--auto-adjust] [--voiced-threshold C] [--f0-min-hz HZ] [--f0-max-hz HZ]
                                 [--room keep|dry|RUN_DIR] [--checkpoint best|last|DIR]
       python -m mlx_ddsp.stream RUN_DIR --live [--rate 48000] [--block 256] ...   (microphone in, speakers out)

What happens to a block, all of it carried across blocks:
1. the input is resampled to the model's rate (`Resampler`: about 1 ms of delay; soxr buffers 36 ms when streamed);
2. features, as resynth computes them but causal: the pitch tracker is `estimate_f0(causal=True)` run frame by frame
   (each frame's window reaches `analysis_extent` samples past its centre; the path takes no later frame into
   account; a model trained with `features.f0_dereverb` is tracked without it, which needs a window of look-ahead
   more), the loudness window is centred on its frame (half of LOUDNESS_WINDOW_SECONDS ahead, 32 ms);
3. the decoder steps once per decoder frame, its recurrent state carried (on the CPU in numpy, `NumpyDecoder`:
   MLX's batch-1 matmuls cost 4x numpy's there; on a GPU in MLX); the pitch and loudness shifts and the quiet
   rendering of unvoiced frames are resynth's (`adjust`), its --auto-adjust made causal (`CausalAdjust`);
4. the synth (one compiled MLX call) renders the hop behind that frame: the oscillator phase carried in the same
   fixed point as offline, the filtered noise overlap-added (its white noise read from a fixed table), the room
   (--room as resynth's: the model's own by default, none, or another run's) as a uniformly partitioned
   convolution whose tail carries on;
5. the result is resampled back to the input's rate and read out of a queue that starts `latency_samples` deep.
A hop can be rendered once its frame's loudness window and the next frame's pitch window are in, so the latency is
about half the loudness window, plus one decoder hop (the granularity), plus the noise filters' half length, plus
the two resamplers: `latency_samples`, computed exactly from these rules at construction.

The pitch range decides how far the tracker looks ahead (two periods of the lowest f0): it defaults to the model's
training pitch range widened by an octave each way and moved by the pitch shift (the flute: 129-2100 Hz, a 12 ms
look-ahead; the recipe's 38 Hz floor would cost 28 ms more). Give --f0-min-hz for an input that plays lower.

`render_offline` renders a whole input at once with the same causal features: the streamed output equals it, shifted
by the latency, whatever the block sizes (tests/test_stream.py). Models with an encoder (z) are not streamed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
from rich.console import Console

from mlx_ddsp import checkpoint
from mlx_ddsp.cli import UserError, entry_point, run
from mlx_ddsp.features import (  # _padded: the frame under a window, zeros outside the buffer
    _padded, analysis_extent, analysis_range, chosen_f0, estimate_f0, forward_path, frame_centres, frame_candidates,
    frame_hop, frame_loudness, hold_unpitched, loudness_window, path_costs, window_loudness,
)
from mlx_ddsp.metrics import VOICED
from mlx_ddsp.models import DDSP, RENDER_NOISE_SEED
from mlx_ddsp.numpy_decoder import NumpyDecoder
from mlx_ddsp.resampler import Resampler
from mlx_ddsp.resynth import add_adjust_arguments, adjust, played_room, read_input, with_room
from mlx_ddsp.synth import (audible_harmonics, cycles_from_fixed_point, filter_noise_frames, fixed_point_cycles,
                            harmonic_bank, noise_impulse_responses, remove_above_nyquist)

NOISE_TABLE_SAMPLES = 1 << 17  # the white noise the filtered-noise synth reads, cyclically (8.2 s at 16 kHz)
RANGE_MARGIN_OCTAVES = 1.0  # the default pitch range: the training range widened by this many octaves each way


class StreamError(UserError):
    """A model or setting the streamer cannot play; the message says why."""


def noise_table(n_samples: int = NOISE_TABLE_SAMPLES, seed: int = RENDER_NOISE_SEED) -> np.ndarray:
    """(n_samples,) float32 uniform white noise in [-1, 1], the same for every stream and offline render."""
    return np.array(mx.random.uniform(-1.0, 1.0, (n_samples,), key=mx.random.key(seed)))


def default_f0_range(stats: dict, cfg, pitch_shift: float = 0.0) -> tuple[float, float]:
    """(f0_min_hz, f0_max_hz) to track an input in: the training data's f0 range (1st to 99th percentile of its
    voiced frames) widened by RANGE_MARGIN_OCTAVES octaves each way and moved down by the pitch shift, within the
    recipe's features range. The recipe's range without statistics."""
    lo_hz, hi_hz = cfg.features.f0_min_hz, cfg.features.f0_max_hz
    quantiles = (stats.get("f0_hz") or {}).get("quantiles")
    if not quantiles:
        return lo_hz, hi_hz
    shift = 2.0 ** (-pitch_shift / 12.0)
    margin = 2.0 ** RANGE_MARGIN_OCTAVES
    return (max(lo_hz, quantiles["0.01"] * shift / margin), min(hi_hz, quantiles["0.99"] * shift * margin))


def _mlx_decoder(model: DDSP):
    """model.decode for one frame, compiled: (f0_hz, loudness_db, state (1, H)) -> (controls, state), the controls
    shaped as NumpyDecoder gives them."""
    @mx.compile
    def decode(f0_hz, loudness_db, state):
        controls = model.decode(f0_hz.reshape(1, 1), loudness_db.reshape(1, 1), state)
        return {k: v.reshape(-1) for k, v in controls.items() if k not in ("f0_hz", "state")}, controls["state"]

    return lambda f0_hz, loudness_db, state: decode(mx.array([f0_hz], mx.float32),
                                                    mx.array([loudness_db], mx.float32),
                                                    mx.array(state).reshape(1, -1))


def _synth_function(model: DDSP, n_harmonics: int):
    """The compiled synthesis of one decoder frame j (all shapes fixed, so it compiles once).

    f0_hz: (3,) Hz at decoder frames j-1, j, j+1 (shifted); controls: frame j's from the decoder ("amplitude" (1,),
    "harmonic_distribution" (K,), "noise_magnitudes" (F,)); previous: (k,) frame j-1's harmonic amplitudes (k =
    n_harmonics); phase: (1,) uint32 fixed-point phase at the sample before the hop; noise: (2 hop,) the white noise
    under frame j's window. Returns the hop's harmonic samples (hop,) (from frame j-1 to frame j), frame j's
    amplitudes (k,), the new phase (1,) and frame j's filtered noise (2 hop + L - 1,) (L: the filters' length).
    """
    hop = model.hop * model.stride
    weight = mx.arange(hop, dtype=mx.float32) / hop

    def synth(f0_hz, controls, previous, phase, noise):
        harmonic, amplitudes, filtered = mx.zeros((hop,)), previous, mx.zeros((1,))
        if model.n_harmonics:
            distribution = remove_above_nyquist(mx.max(f0_hz).reshape(1, 1),
                                                controls["harmonic_distribution"].reshape(1, 1, -1),
                                                model.sample_rate)
            amplitudes = (controls["amplitude"] * distribution)[0, 0, :n_harmonics]
            f0_audio = f0_hz[0] * (1.0 - weight) + f0_hz[1] * weight
            accumulated = mx.cumsum(fixed_point_cycles(f0_audio / model.sample_rate)) + phase
            harmonic = harmonic_bank(cycles_from_fixed_point(accumulated).reshape(1, 1, hop),
                                     previous.reshape(1, 1, -1), amplitudes.reshape(1, 1, -1)).reshape(hop)
            phase = accumulated[-1:]
        if model.n_noise_bands:
            filtered = filter_noise_frames(noise, noise_impulse_responses(controls["noise_magnitudes"]))
        return harmonic, amplitudes, phase, filtered

    return mx.compile(synth)


class CausalAdjust:
    """resynth's `adjust`, one decoder frame at a time, from what has been heard so far.

    The shifts and the quiet rendering of unvoiced frames are adjust's own. Its --auto-adjust needs the whole input
    (the mean pitch, the loudness distribution); live, it has the input up to the frame: the octave shift is chosen
    at the first voiced frame of each phrase, from the mean pitch (MIDI) of every voiced frame heard so far, and held
    to the phrase's end (a note never jumps an octave); a voiced frame's loudness is mapped, by its rank among the
    voiced loudness heard so far (a histogram of LOUDNESS_BIN_DB bins, so memory stays flat), onto the training
    data's quantiles. `pitch` and `loudness` each take the frames in order, one call per frame.
    """

    LOUDNESS_BIN_DB = 0.25
    LOUDNESS_BINS_DB = (-100.0, 20.0)

    def __init__(self, stats: dict, pitch_shift: float = 0.0, loudness_shift: float = 0.0,
                 auto_adjust: bool = False, voiced_threshold: float = VOICED):
        self.stats, self.pitch_shift, self.loudness_shift = stats, pitch_shift, loudness_shift
        self.voiced_threshold = voiced_threshold
        self.pitch_reference = (stats.get("f0_midi") or {}).get("mean") if auto_adjust else None
        quantiles = (stats.get("loudness_db") or {}).get("quantiles") if auto_adjust else None
        self.loudness_reference = None
        if quantiles:
            levels = sorted(quantiles, key=float)
            self.loudness_reference = (np.array([float(q) for q in levels]), np.array([quantiles[q] for q in levels]))
        self.reset()

    def reset(self) -> None:
        self.midi_sum, self.midi_count, self.octaves, self.was_voiced = 0.0, 0, 0, False
        low, high = self.LOUDNESS_BINS_DB
        self.histogram = np.zeros(int(round((high - low) / self.LOUDNESS_BIN_DB)), np.int64)

    def _adjust(self, f0_hz: float, confidence: float, loudness_db: float) -> tuple[float, float]:
        f0, loudness, _ = adjust({"f0_hz": np.array([f0_hz], np.float32), "confidence": np.array([confidence]),
                                  "loudness_db": np.array([loudness_db], np.float32)}, self.stats, self.pitch_shift,
                                 self.loudness_shift, False, self.voiced_threshold)
        return float(f0[0]), float(loudness[0])

    def pitch(self, f0_hz: float, confidence: float) -> float:
        """The next frame's f0 to feed the model (Hz)."""
        voiced = confidence >= self.voiced_threshold
        if self.pitch_reference is not None and voiced:
            self.midi_sum += 12.0 * np.log2(f0_hz / 440.0) + 69.0
            self.midi_count += 1
            if not self.was_voiced:  # a phrase starts: choose its octave
                self.octaves = int(np.round((self.pitch_reference - self.midi_sum / self.midi_count) / 12.0))
        self.was_voiced = voiced
        return self._adjust(f0_hz * 2.0**self.octaves, confidence, 0.0)[0]

    def loudness(self, loudness_db: float, confidence: float) -> float:
        """The next frame's loudness to feed the model (dB)."""
        if self.loudness_reference is not None and confidence >= self.voiced_threshold:
            low = self.LOUDNESS_BINS_DB[0]
            index = int(np.clip((loudness_db - low) / self.LOUDNESS_BIN_DB, 0, len(self.histogram) - 1))
            self.histogram[index] += 1
            rank = (self.histogram[:index].sum() + 0.5 * self.histogram[index]) / self.histogram.sum()
            loudness_db = float(np.interp(rank, *self.loudness_reference))
        return self._adjust(440.0, confidence, loudness_db)[1]


class PartitionedReverb:
    """model.apply_reverb's dry + dry * IR (first tap zero), streamed: a uniformly partitioned convolution in blocks
    of `block` samples (each block's spectrum multiplies every partition's; the sum over partitions is one block of
    output, the tail carried in the delay line of past spectra)."""

    def __init__(self, impulse_response: np.ndarray, block: int):
        ir = np.asarray(impulse_response, np.float64).copy()
        ir[0] = 0.0
        self.block = block
        n_parts = -(-len(ir) // block)
        parts = np.zeros((n_parts, block))
        parts.reshape(-1)[: len(ir)] = ir
        self.spectra = np.fft.rfft(parts, n=2 * block, axis=1)  # (P, block + 1)
        self.reset()

    def reset(self) -> None:
        self.history = np.zeros((len(self.spectra), self.block + 1), complex)  # newest first
        self.previous = np.zeros(self.block)

    def push(self, dry: np.ndarray) -> np.ndarray:
        """One block (block,) of dry signal -> the same block with the room (float32)."""
        self.history = np.roll(self.history, 1, axis=0)
        self.history[0] = np.fft.rfft(np.concatenate([self.previous, dry]))
        self.previous = np.asarray(dry, np.float64)
        wet = np.fft.irfft(np.sum(self.history * self.spectra, axis=0), n=2 * self.block)[self.block :]
        return (dry + wet).astype(np.float32)


class Streamer:
    """A trained model as a live instrument: `process(block)` (see the module docstring)."""

    def __init__(self, model: DDSP, cfg, stats: dict, sample_rate: int, pitch_shift: float = 0.0,
                 loudness_shift: float = 0.0, voiced_threshold: float = VOICED, f0_min_hz: float | None = None,
                 f0_max_hz: float | None = None, decoder: str = "auto", auto_adjust: bool = False,
                 room: str = "keep"):
        if model.use_encoder:
            raise StreamError("this model has an encoder (model.encoder=true); the streamer plays f0 and loudness "
                              "models only")
        self.model, self.cfg, self.stats = model, cfg, stats
        self.sample_rate, self.model_rate = sample_rate, model.sample_rate
        self.pitch_shift, self.loudness_shift, self.voiced_threshold = pitch_shift, loudness_shift, voiced_threshold
        self.auto_adjust = auto_adjust
        self.adjuster = CausalAdjust(stats, pitch_shift, loudness_shift, auto_adjust, voiced_threshold)
        default_lo, default_hi = default_f0_range(stats, cfg, pitch_shift)
        self.f0_min_hz = default_lo if f0_min_hz is None else f0_min_hz
        self.f0_max_hz = default_hi if f0_max_hz is None else f0_max_hz
        if not 0 < self.f0_min_hz < self.f0_max_hz:
            raise StreamError(f"the pitch range {self.f0_min_hz:g}-{self.f0_max_hz:g} Hz is empty")
        self.frame_rate = cfg.features.frame_rate
        self.feature_hop = frame_hop(self.model_rate, self.frame_rate)
        self.stride, self.hop = model.stride, model.hop * model.stride  # feature frames and samples per decoder frame
        self.analysis_rate, self.min_lag, self.max_lag = analysis_range(self.model_rate, self.f0_min_hz,
                                                                        self.f0_max_hz)
        self.pitch_before, self.pitch_after = analysis_extent(self.max_lag)
        self.loudness_length = len(loudness_window(self.model_rate)[0])
        self.noise_half = model.n_noise_bands - 1 if model.n_noise_bands else 0  # half the noise filters' length
        self.n_harmonics = audible_harmonics(self.f0_min_hz * 2.0 ** (pitch_shift / 12.0), self.model_rate,
                                             model.n_harmonics) if model.n_harmonics else 0
        self.noise = noise_table()
        self.room_ir = played_room(model, room, self.model_rate)
        self.reverb = None if self.room_ir is None else PartitionedReverb(self.room_ir, self.hop)
        if decoder == "auto":
            decoder = "numpy" if mx.default_device() == mx.cpu else "mlx"
        if decoder not in ("numpy", "mlx"):
            raise StreamError(f"decoder must be 'auto', 'numpy' or 'mlx', not {decoder!r}")
        self.decoder = decoder
        self._decode_frame = NumpyDecoder(model) if decoder == "numpy" else _mlx_decoder(model)
        self._synth = _synth_function(model, self.n_harmonics)
        self.latency_samples = self._latency()
        self.reset()

    @classmethod
    def from_run(cls, run_dir: str | Path, sample_rate: int, which: str = "best", **settings) -> "Streamer":
        model, cfg, state = checkpoint.load_trained(run_dir, which)
        return cls(model, cfg, state.get("stats", {}), sample_rate, **settings)

    # --- the rules of what can be computed when (used by process and by the latency) ----------------------------

    def _feature_frames_ready(self, n_analysis):
        """Feature frames whose pitch window lies within the first n_analysis samples at the analysis rate."""
        last_centre = np.asarray(n_analysis) - 1 - self.pitch_after
        # frame_centres rounds t * hop * rate / model_rate: count the t whose centre is <= last_centre
        hop_at_rate = self.feature_hop * self.analysis_rate
        count = (last_centre * self.model_rate + self.model_rate - 1 - self.model_rate // 2) // hop_at_rate + 1
        return np.where(last_centre >= 0, count, 0)

    def _ticks_ready(self, n_model, n_features):
        """Decoder frames that can be decoded: frame j's loudness window is in and the pitch of frame j + 1."""
        by_loudness = np.where(np.asarray(n_model) >= self.loudness_length // 2,
                               (np.asarray(n_model) - self.loudness_length // 2) // self.hop + 1, 0)
        by_pitch = np.maximum(np.asarray(n_features) - 1, 0) // self.stride
        return np.minimum(by_loudness, by_pitch)

    def _released(self, ticks):
        """Samples at the model's rate final after `ticks` decoder frames: frame j settles the harmonic part up to
        sample j * hop and the noise up to j * hop - noise_half."""
        return np.maximum((np.asarray(ticks) - 1) * self.hop - self.noise_half, 0)

    def _latency(self) -> int:
        """The largest lag of the output behind the input over every possible block end (input samples)."""
        n_in = np.arange(0, 2 * self.sample_rate + 4 * self.hop * self.sample_rate // self.model_rate)
        rate_in, rate_out = Resampler(self.sample_rate, self.model_rate), Resampler(self.model_rate, self.sample_rate)
        n_model = np.vectorize(rate_in.outputs_after)(n_in)
        n_analysis = n_model
        if self.analysis_rate != self.model_rate:
            n_analysis = np.vectorize(Resampler(self.model_rate, self.analysis_rate).outputs_after)(n_model)
        released = self._released(self._ticks_ready(n_model, self._feature_frames_ready(n_analysis)))
        return int(np.max(n_in - np.vectorize(rate_out.outputs_after)(released)))

    # --- streaming ----------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Start a new phrase: every state (resamplers, tracker, decoder, oscillator, noise, reverb) from zero."""
        self.rate_in = Resampler(self.sample_rate, self.model_rate)
        self.rate_out = Resampler(self.model_rate, self.sample_rate)
        self.rate_analysis = (Resampler(self.model_rate, self.analysis_rate)
                              if self.analysis_rate != self.model_rate else None)
        self.audio, self.audio_start = np.zeros(0, np.float32), 0  # model-rate input from sample audio_start on
        self.analysis, self.analysis_start = np.zeros(0, np.float32), 0  # the same at the analysis rate
        self.n_model = self.n_analysis = 0
        self.n_features, self.features_start = 0, 0
        self.f0_hz, self.confidence = np.zeros(0, np.float32), np.zeros(0, np.float32)
        self.path_carry, self.last_confidence, self.last_f0_hz = None, None, np.sqrt(self.f0_min_hz * self.f0_max_hz)
        self.ticks = 0
        self.state = np.zeros(self.model.decoder.gru.hidden_size, np.float32)
        self.amplitudes = mx.zeros((self.n_harmonics,))
        self.phase = mx.zeros((1,), dtype=mx.uint32)
        self.f0_previous = self.f0_current = None
        self.adjuster.reset()
        self.pending, self.pending_start = np.zeros(0, np.float32), 0  # dry samples not yet final, from pending_start
        if self.reverb is not None:
            self.reverb.reset()
            self.reverb_input = np.zeros(0, np.float32)
            self.reverb_start = -self.noise_half  # reverb blocks run on the release grid: j * hop - noise_half
        self.queue = np.zeros(self.latency_samples, np.float32)

    def warm_up(self) -> None:
        """Play silence until several decoder frames have run (MLX compiles the synth step at its first frame:
        ~30 ms, over a second in a cold cache), then reset: call it before timing or playing live."""
        self.process(np.zeros(2 * self.latency_samples, np.float32))
        self.reset()

    def play(self, audio: np.ndarray, sizes) -> tuple[np.ndarray, np.ndarray]:
        """Play `audio` (n,) and then latency_samples of silence as a stream, in blocks of `sizes` samples (an int,
        or an iterator of ints). Returns the output aligned with the input (the latency removed, (n,)) and each
        block's wall time in seconds."""
        padded = np.concatenate([np.asarray(audio, np.float32), np.zeros(self.latency_samples, np.float32)])
        outputs, seconds, position = [], [], 0
        while position < len(padded):
            size = sizes if isinstance(sizes, int) else next(sizes)
            start = time.perf_counter()
            outputs.append(self.process(padded[position : position + size]))
            seconds.append(time.perf_counter() - start)
            position += size
        return np.concatenate(outputs)[self.latency_samples :][: len(audio)], np.array(seconds)

    def process(self, block: np.ndarray) -> np.ndarray:
        """(n,) float32 input at `sample_rate` -> (n,) output: the model's rendering of the input latency_samples
        earlier (silence at first)."""
        block = np.asarray(block, np.float32).reshape(-1)
        model_audio = self.rate_in.push(block)
        self.audio = np.concatenate([self.audio, model_audio])
        self.n_model += len(model_audio)
        if self.rate_analysis is None:
            self.analysis, self.analysis_start, self.n_analysis = self.audio, self.audio_start, self.n_model
        else:
            new = self.rate_analysis.push(model_audio)
            self.analysis = np.concatenate([self.analysis, new])
            self.n_analysis += len(new)
        # The tracker takes each frame as soon as its window is in, so the block that decodes a frame has at most
        # a frame or two of tracking on top (measured: p99 block time 4.2 ms, against 4.9 ms when it waits for the
        # decoder's frames and tracks five at once).
        self._track(int(self._feature_frames_ready(self.n_analysis)))
        dry = self._decode(int(self._ticks_ready(self.n_model, self.n_features)))
        wet = self._room(dry)
        self.queue = np.concatenate([self.queue, self.rate_out.push(wet)])
        out, self.queue = self.queue[: len(block)], self.queue[len(block) :]
        self._forget()
        return out

    def _track(self, n_ready: int) -> None:
        """Pitch and confidence of the feature frames up to n_ready (the causal estimate_f0, frame by frame)."""
        if n_ready <= self.n_features:
            return
        count = n_ready - self.n_features
        centres = frame_centres(count, self.feature_hop, self.model_rate, self.analysis_rate, self.n_features)
        lags, probs = frame_candidates(self.analysis, centres - self.analysis_start, self.min_lag, self.max_lag)
        cost, cents, jump_cost, confidence = path_costs(lags, probs, self.analysis_rate, 2.0, self.last_confidence)
        path, self.path_carry = forward_path(cost, cents, jump_cost, self.path_carry)
        f0_hz, pitched = chosen_f0(lags, path, confidence, self.analysis_rate, self.f0_min_hz, self.f0_max_hz)
        f0_hz, self.last_f0_hz = hold_unpitched(f0_hz, pitched, self.last_f0_hz)
        self.last_confidence = float(confidence[-1])
        self.f0_hz = np.concatenate([self.f0_hz, f0_hz])
        self.confidence = np.concatenate([self.confidence, np.clip(confidence, 0.0, 1.0).astype(np.float32)])
        self.n_features = n_ready

    def _features_at(self, frame: int) -> dict:
        index = frame - self.features_start
        return {"f0_hz": self.f0_hz[index : index + 1], "confidence": self.confidence[index : index + 1]}

    def _decode(self, n_ticks: int) -> np.ndarray:
        """Decode and synthesise decoder frames up to n_ticks; returns the dry samples that became final."""
        for j in range(self.ticks, n_ticks):
            centre = j * self.hop - self.audio_start  # zeros before the signal (the buffer then starts at 0)
            window = _padded(self.audio, self.loudness_length, centre, centre)[None]
            frame = self._features_at(j * self.stride)
            loudness_db = self.adjuster.loudness(
                float(window_loudness(window, self.model_rate, self.cfg.features.loudness)[0]),
                float(frame["confidence"][0]))
            if self.f0_current is None:  # the first frame (later ones were adjusted one tick ahead)
                self.f0_current = self.adjuster.pitch(float(frame["f0_hz"][0]), float(frame["confidence"][0]))
            following = self._features_at((j + 1) * self.stride)
            f0_hz, f0_next = self.f0_current, self.adjuster.pitch(float(following["f0_hz"][0]),
                                                                  float(following["confidence"][0]))
            f0_previous = f0_hz if self.f0_previous is None else self.f0_previous
            start = j * self.hop  # noise index of frame j's window: signal sample + hop
            noise = np.take(self.noise, np.arange(start, start + 2 * self.hop), mode="wrap")
            controls, state = self._decode_frame(f0_hz, loudness_db, self.state)
            harmonic, amplitudes, phase, filtered = self._synth(
                mx.array(np.array([f0_previous, f0_hz, f0_next], np.float32)),
                {k: mx.array(v) for k, v in controls.items()}, self.amplitudes, self.phase, mx.array(noise))
            mx.eval(harmonic, amplitudes, phase, filtered)
            self.state = np.array(state).reshape(-1)
            self.f0_previous, self.f0_current = f0_hz, f0_next
            end = (j + 1) * self.hop + self.noise_half  # the furthest sample frame j reaches
            if end - self.pending_start > len(self.pending):
                self.pending = np.concatenate([self.pending, np.zeros(end - self.pending_start - len(self.pending),
                                                                     np.float32)])
            if self.n_harmonics:
                self.amplitudes = amplitudes
                if j > 0:  # frame 0 ends no hop: its harmonic samples and phase are not kept
                    hop_start = (j - 1) * self.hop - self.pending_start
                    self.pending[hop_start : hop_start + self.hop] += harmonic
                    self.phase = phase
            if self.noise_half:
                first = (j - 1) * self.hop - self.noise_half  # where frame j's filtered noise starts
                filtered = np.array(filtered)[max(0, -first) :]
                first = max(first, 0)
                self.pending[first - self.pending_start : first - self.pending_start + len(filtered)] += filtered
        self.ticks = max(self.ticks, n_ticks)
        release = int(self._released(self.ticks))
        dry = self.pending[: release - self.pending_start]
        self.pending, self.pending_start = self.pending[release - self.pending_start :], release
        return dry

    def _room(self, dry: np.ndarray) -> np.ndarray:
        """The dry samples with the model's room (PartitionedReverb on the release grid), or themselves."""
        if self.reverb is None:
            return dry
        self.reverb_input = np.concatenate([self.reverb_input, dry])
        wet = []
        block = self.reverb.block
        while len(self.reverb_input) >= block - max(0, -self.reverb_start):
            lead = max(0, -self.reverb_start)  # the part of a block before the signal: zeros
            chunk = np.concatenate([np.zeros(lead, np.float32), self.reverb_input[: block - lead]])
            wet.append(self.reverb.push(chunk)[lead:])
            self.reverb_input = self.reverb_input[block - lead :]
            self.reverb_start += block
        return np.concatenate(wet) if wet else np.zeros(0, np.float32)

    def _forget(self) -> None:
        """Drop input and features no later frame needs."""
        keep = min(self.ticks * self.hop - self.loudness_length // 2,
                   self._next_centre() - self.pitch_before if self.rate_analysis is None else self.ticks * self.hop)
        drop = max(0, keep - self.audio_start)
        self.audio, self.audio_start = self.audio[drop:], self.audio_start + drop
        if self.rate_analysis is None:
            self.analysis, self.analysis_start = self.audio, self.audio_start
        else:
            drop = max(0, self._next_centre() - self.pitch_before - self.analysis_start)
            self.analysis, self.analysis_start = self.analysis[drop:], self.analysis_start + drop
        drop = max(0, self.ticks * self.stride - self.features_start)
        self.f0_hz, self.confidence = self.f0_hz[drop:], self.confidence[drop:]
        self.features_start += drop

    def _next_centre(self) -> int:
        return int(frame_centres(1, self.feature_hop, self.model_rate, self.analysis_rate, self.n_features)[0])


def render_offline(streamer: Streamer, audio: np.ndarray) -> np.ndarray:
    """What `streamer` plays for `audio` (n,) at its sample rate, rendered at once and not delayed: the whole input
    resampled, its causal features, the decoder over every frame, the synth over the whole signal, the room, and
    back to the input's rate. Returns (n,) float32; the stream's output is this, `latency_samples` later."""
    model = streamer.model
    n_frames = -(-len(audio) * streamer.model_rate // streamer.sample_rate // streamer.hop) + 3  # past the end
    silence = -(-(n_frames * streamer.hop + 1) * streamer.sample_rate // streamer.model_rate) - len(audio)
    padded = Resampler(streamer.sample_rate, streamer.model_rate).resample(  # the input and silence after it
        np.concatenate([audio, np.zeros(max(silence, 0), np.float32)]))[: (n_frames - 1) * streamer.hop + 1]
    f0_hz, confidence = estimate_f0(padded, streamer.model_rate, streamer.frame_rate, streamer.f0_min_hz,
                                    streamer.f0_max_hz, causal=True)
    loudness_db = frame_loudness(padded, streamer.model_rate, streamer.frame_rate, streamer.cfg.features.loudness)
    positions = np.arange(n_frames) * streamer.stride
    adjuster = CausalAdjust(streamer.stats, streamer.pitch_shift, streamer.loudness_shift, streamer.auto_adjust,
                            streamer.voiced_threshold)
    f0_hz = np.array([adjuster.pitch(f0_hz[t], confidence[t]) for t in positions], np.float32)
    loudness_db = np.array([adjuster.loudness(loudness_db[t], confidence[t]) for t in positions], np.float32)
    controls = model.decode(mx.array(f0_hz[None]), mx.array(loudness_db[None]))
    n_samples = (n_frames - 1) * streamer.hop
    noise = np.take(streamer.noise, np.arange((n_frames + 1) * streamer.hop), mode="wrap")
    out = model.synthesize(controls, n_samples, max_harmonics=streamer.n_harmonics or None,
                           white_noise=mx.array(noise[None]))
    wet = with_room(out["audio"], streamer.room_ir)
    return Resampler(streamer.model_rate, streamer.sample_rate).resample(np.array(wet[0]))[: len(audio)]


# --- the command --------------------------------------------------------------------------------------------------


def stream_file(run_dir: str | Path, input_path: str | Path, output_path: str | Path, block: int = 256,
                which: str = "best", console: Console | None = None, **settings) -> dict:
    """Play INPUT through the model as a live stream in blocks of `block` samples at the file's own rate; write the
    output aligned with the input (the latency removed) and return the timing figures."""
    from mlx_ddsp.audio import file_rate, save_audio

    console = console or Console(stderr=True)
    if block < 1:
        raise StreamError(f"--block must be at least 1 sample, not {block}")
    rate = file_rate(input_path) or 16000  # unreadable: read_input says why
    audio = read_input(input_path, rate)
    streamer = Streamer.from_run(run_dir, rate, which, **settings)
    latency = streamer.latency_samples
    streamer.warm_up()
    out, seconds = streamer.play(audio, block)
    save_audio(output_path, out, rate)
    seconds_ms = 1000.0 * seconds
    block_ms = 1000.0 * block / rate
    late = int(np.sum(seconds_ms > block_ms))
    report = {"latency_samples": latency, "latency_ms": 1000.0 * latency / rate, "block": block,
              "block_ms": block_ms, "median_ms": float(np.median(seconds_ms)),
              "p99_ms": float(np.percentile(seconds_ms, 99)), "max_ms": float(seconds_ms.max()),
              "real_time_factor": float(np.sum(seconds) / ((len(audio) + latency) / rate)), "late_blocks": late,
              "blocks": len(seconds), "f0_range_hz": [streamer.f0_min_hz, streamer.f0_max_hz]}
    console.print(f"wrote {output_path}: {len(audio) / rate:.1f} s at {rate} Hz in blocks of {block} "
                  f"({block_ms:.2f} ms); latency {latency} samples = {report['latency_ms']:.1f} ms; per block: "
                  f"median {report['median_ms']:.3f} ms, p99 {report['p99_ms']:.3f} ms, max {report['max_ms']:.3f} "
                  f"ms; real-time factor {report['real_time_factor']:.3f} (compute / audio time); pitch range "
                  f"{streamer.f0_min_hz:.0f}-{streamer.f0_max_hz:.0f} Hz")
    if late:
        console.print(f"[yellow]warning:[/yellow] {late} of {len(seconds)} blocks took longer than their "
                      f"{block_ms:.2f} ms: a live stream would have dropped out there")
    return report


def play_live(run_dir: str | Path, sample_rate: int, block: int, which: str = "best",
              console: Console | None = None, **settings) -> int:
    """Play the default microphone through the model to the default output until Ctrl-C (needs the `live` extra:
    sounddevice and PortAudio). A thin layer: each audio callback is one `Streamer.process` call."""
    console = console or Console(stderr=True)
    try:
        import sounddevice
    except (ImportError, OSError) as e:
        raise StreamError(f"--live needs sounddevice and PortAudio (pip install sounddevice; apt install "
                          f"libportaudio2): {e}") from e
    streamer = Streamer.from_run(run_dir, sample_rate, which, **settings)
    streamer.warm_up()  # before the first callback
    late = []

    def callback(indata, outdata, frames, timing, status):
        start = time.perf_counter()
        outdata[:, 0] = streamer.process(indata[:, 0])
        if status or time.perf_counter() - start > frames / sample_rate:
            late.append(str(status) or "late")

    console.print(f"playing the microphone through {run_dir} at {sample_rate} Hz, blocks of {block}; latency "
                  f"{streamer.latency_samples} samples = {1000 * streamer.latency_samples / sample_rate:.1f} ms "
                  f"plus the audio device's; Ctrl-C stops")
    try:
        with sounddevice.Stream(samplerate=sample_rate, blocksize=block, channels=1, dtype="float32",
                                callback=callback, latency="low"):
            while True:
                sounddevice.sleep(1000)
                if late:
                    console.print(f"[yellow]warning:[/yellow] {len(late)} late or dropped blocks ({late[-1]})")
                    late.clear()
    except sounddevice.PortAudioError as e:
        raise StreamError(f"the audio device cannot play at {sample_rate} Hz in blocks of {block}: {e}") from e
    except KeyboardInterrupt:
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mlx_ddsp.stream", description=__doc__.split("\n\n")[0],
                                     epilog="example: python -m mlx_ddsp.stream runs/flute_cpu voice.wav out.wav "
                                            "--block 256",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a training run dir (holding checkpoints/)")
    parser.add_argument("input", nargs="?", help="a recording (WAV, FLAC, ...), played as a live input at its own rate")
    parser.add_argument("output", nargs="?", help="where to write the result, aligned with the input (.wav, .flac)")
    parser.add_argument("--live", action="store_true",
                        help="play the microphone through the model instead (needs the live extra: sounddevice)")
    parser.add_argument("--rate", type=int, default=48000, help="--live: the audio device's rate (default 48000)")
    parser.add_argument("--block", type=int, default=256, help="samples per block (default 256)")
    add_adjust_arguments(parser)
    parser.add_argument("--auto-adjust", action="store_true",
                        help="match octave and loudness distribution to the training data, from the input so far")
    parser.add_argument("--f0-min-hz", type=float, help="lowest input pitch to track (default: the training "
                        "range an octave wider, moved by the pitch shift); lower costs latency")
    parser.add_argument("--f0-max-hz", type=float, help="highest input pitch to track")
    parser.add_argument("--room", default="keep",
                        help="keep (default: the model's own learned room, if any), dry (no room), or a run dir "
                             "whose learned room to play through")
    parser.add_argument("--checkpoint", default="best", help="best (default), last, or a checkpoint folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.live and (args.input is None or args.output is None):
        parser.error("give INPUT and OUTPUT, or --live")
    settings = {"pitch_shift": args.pitch_shift, "loudness_shift": args.loudness_shift,
                "voiced_threshold": args.voiced_threshold, "f0_min_hz": args.f0_min_hz, "f0_max_hz": args.f0_max_hz,
                "auto_adjust": args.auto_adjust, "room": args.room}
    if args.live:
        return run(lambda console: play_live(args.run_dir, args.rate, args.block, args.checkpoint, console,
                                             **settings))
    return run(lambda console: stream_file(args.run_dir, args.input, args.output, args.block, args.checkpoint,
                                           console, **settings))


if __name__ == "__main__":
    entry_point(main)
