"""Shared pieces of the corpus scripts: generated MIDI melodies, FluidSynth rendering, and the true f0 they imply.

Needs Debian's `fluidsynth` and a General MIDI SoundFont (`fluid-soundfont-gm` for FluidR3_GM). Used by
`render_corpus.py` (the bundled flute, and one instrument's training corpus) and `render_dev_corpus.py` (the development corpus).

A melody is a sequence of phrases in one instrument's range: legato and detached notes, rests, velocity and
expression (CC11) dynamics, pitch-bend vibrato and glides with the bend range set to 2 semitones by RPN 0. Reverb
and chorus are off. The true f0 at `FRAME_RATE` frames/s comes from the same event list that wrote the MIDI (bends
quantised as the synth applies them).
"""

from __future__ import annotations

import math
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FLUIDR3 = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
FRAME_RATE = 250
TICKS_PER_SECOND = 1920  # 960 ticks per quarter note at 120 bpm
BEND_RANGE_SEMITONES = 2.0


@dataclass(frozen=True)
class Instrument:
    """A GM instrument and the MIDI notes its melodies use: notes stay in [low, high], phrases start in [start_low, start_high)."""

    name: str
    program: int  # zero-based GM program
    low: int
    high: int
    start_low: int
    start_high: int


INSTRUMENTS = (  # zero-based GM programs; note ranges in MIDI numbers
    Instrument("contrabass", 43, 28, 60, 31, 45),
    Instrument("cello", 42, 36, 76, 43, 60),
    Instrument("bassoon", 70, 34, 72, 41, 58),
    Instrument("trombone", 57, 40, 72, 46, 62),
    Instrument("viola", 41, 48, 84, 55, 72),
    Instrument("violin", 40, 55, 96, 62, 81),
    Instrument("trumpet", 56, 54, 84, 60, 76),
    Instrument("alto_sax", 65, 49, 80, 55, 72),
    Instrument("clarinet", 71, 50, 89, 55, 79),
    Instrument("oboe", 68, 58, 91, 64, 82),
    Instrument("flute", 73, 60, 93, 67, 84),
    Instrument("choir_aahs", 52, 48, 79, 55, 70),
    Instrument("voice_oohs", 53, 48, 79, 55, 70),
)


def _varlen(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def write_midi(path: Path, events: list[tuple[float, bytes]]) -> None:
    """Format-0 standard MIDI file from (seconds, message bytes) events, 120 bpm, 960 ticks per quarter."""
    events = sorted(events, key=lambda e: e[0])
    track, last_tick = bytearray(), 0
    track += _varlen(0) + b"\xff\x51\x03" + (500000).to_bytes(3, "big")
    for seconds, message in events:
        tick = int(round(seconds * TICKS_PER_SECOND))
        track += _varlen(tick - last_tick) + message
        last_tick = tick
    track += _varlen(0) + b"\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_SECOND // 2)
    path.write_bytes(header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track))


def bend_value(semitones):
    """14-bit pitch-bend value (8192 = centre) for a bend in semitones."""
    return np.round(8192 + 8191 * np.clip(np.asarray(semitones) / BEND_RANGE_SEMITONES, -1.0, 1.0)).astype(int)


def bend_semitones(value):
    """The bend the synth applies for a 14-bit value: the inverse of `bend_value` up to its rounding."""
    return (np.asarray(value) - 8192) / 8191 * BEND_RANGE_SEMITONES


def bend_message(semitones: float) -> bytes:
    value = int(bend_value(semitones))
    return bytes([0xE0, value & 0x7F, value >> 7])


def compose(rng: np.random.Generator, seconds: float, instrument: Instrument):
    """Events for one file, the per-frame MIDI pitch (with bends) and held flag, and the note-on times (s)."""
    n_frames = int(seconds * FRAME_RATE) + 1
    midi_pitch = np.zeros(n_frames)
    note_held = np.zeros(n_frames, bool)
    events = [
        (0.0, bytes([0xC0, instrument.program])),
        (0.0, bytes([0xB0, 101, 0])), (0.0, bytes([0xB0, 100, 0])),  # RPN 0: pitch-bend range
        (0.0, bytes([0xB0, 6, int(BEND_RANGE_SEMITONES)])), (0.0, bytes([0xB0, 38, 0])),
        (0.0, bytes([0xB0, 101, 127])), (0.0, bytes([0xB0, 100, 127])),
        (0.0, bytes([0xB0, 91, 0])), (0.0, bytes([0xB0, 93, 0])),  # no reverb / chorus sends
    ]
    frame_times = np.arange(n_frames) / FRAME_RATE
    onsets = []
    t = 0.3
    note = int(rng.integers(instrument.start_low, instrument.start_high))
    while t < seconds - 2.0:
        phrase_notes = int(rng.integers(3, 12))
        legato = rng.random() < 0.5
        base_velocity = int(rng.integers(45, 120))
        for _ in range(phrase_notes):
            step = int(rng.choice([-7, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 7, 12, -12], p=[.04, .06, .08, .12, .14, .06, .06, .14, .12, .08, .06, .02, .01, .01]))
            note = int(np.clip(note + step, instrument.low, instrument.high))
            duration = float(rng.choice([0.2, 0.3, 0.45, 0.6, 0.9, 1.3, 1.8], p=[.1, .2, .2, .2, .15, .1, .05]))
            end = min(t + duration, seconds - 1.0)
            if end - t < 0.1:
                break
            velocity = int(np.clip(base_velocity + rng.integers(-15, 16), 30, 127))
            # Per-note bend curve: optional glide into the note, optional delayed vibrato.
            glide = float(rng.choice([0.0, 0.0, 0.0, -1.0, 1.0, -2.0])) if legato else 0.0
            glide_time = float(rng.uniform(0.06, 0.15))
            vibrato_depth = float(rng.uniform(0.15, 0.45)) if duration >= 0.6 and rng.random() < 0.7 else 0.0
            vibrato_rate = float(rng.uniform(4.5, 6.5))
            vibrato_delay = float(rng.uniform(0.15, 0.4))
            swell = float(rng.uniform(-25, 25))

            def bend_at(x):  # seconds since note-on -> semitones
                value = glide * np.clip(1.0 - x / glide_time, 0.0, 1.0)
                ramp = np.clip((x - vibrato_delay) / 0.2, 0.0, 1.0)
                return value + vibrato_depth * ramp * np.sin(2 * np.pi * vibrato_rate * np.maximum(x - vibrato_delay, 0.0))

            events.append((t, bend_message(bend_at(0.0))))
            events.append((t, bytes([0xB0, 11, int(np.clip(100 - abs(swell), 0, 127))])))
            events.append((t + 0.001, bytes([0x90, note, velocity])))
            onsets.append(t + 0.001)
            for x in np.arange(0.01, end - t, 0.01):
                events.append((t + x, bend_message(bend_at(x))))
                if swell:
                    expression = 100 - abs(swell) + swell * math.sin(math.pi * x / (end - t))
                    events.append((t + x, bytes([0xB0, 11, int(np.clip(expression, 0, 127))])))
            events.append((end, bytes([0x80, note, 0])))
            held = (frame_times >= t + 0.001) & (frame_times < end)
            # The synth applies the last bend message sent: quantise the truth to the 10 ms grid too.
            since = np.floor((frame_times[held] - t) * 100.0) / 100.0
            midi_pitch[held] = note + bend_semitones(bend_value(bend_at(since)))
            note_held[held] = True
            gap = 0.0 if legato else float(rng.uniform(0.05, 0.25))
            t = end + gap
        t += float(rng.uniform(0.3, 1.5))  # rest between phrases
    return events, midi_pitch, note_held, onsets


def sounding_truth(midi_pitch, held, onsets, audio, sample_rate, ambiguous_seconds=0.06):
    """Extend each held note through its audible release; mark the attacks ambiguous.

    audio: (n_samples,) the rendered file at `sample_rate`. Returns (f0_hz, voiced, ambiguous), each (T,) at
    FRAME_RATE. `voiced`: a note is held, or released and still above -60 dB before the next note starts (the
    pitch of a release is the note's last pitch). `ambiguous`: the first `ambiguous_seconds` of every note.
    """
    from mlx_ddsp.features import compute_loudness

    loudness = compute_loudness(audio, sample_rate, FRAME_RATE)
    n = min(len(held), len(loudness))
    midi_pitch, held, loudness = midi_pitch[:n].copy(), held[:n], loudness[:n]
    voiced = held.copy()
    for t in range(1, n):
        if not held[t] and voiced[t - 1] and loudness[t] > -60.0:
            voiced[t], midi_pitch[t] = True, midi_pitch[t - 1]
    ambiguous = np.zeros(n, bool)
    for onset in onsets:
        first = int(np.ceil(onset * FRAME_RATE))
        ambiguous[first : first + int(ambiguous_seconds * FRAME_RATE)] = True
    f0_hz = np.where(voiced, 440.0 * 2.0 ** ((midi_pitch - 69.0) / 12.0), 0.0).astype(np.float32)
    return f0_hz, voiced, ambiguous


def render(midi_path: Path, wav_path: Path, sample_rate: int, soundfont: str = FLUIDR3) -> np.ndarray:
    """FluidSynth render of `midi_path` (reverb and chorus off) -> (n_samples,) float32 mono at `sample_rate`."""
    subprocess.run(
        ["fluidsynth", "-ni", "-q", "-g", "0.6", "-R", "0", "-C", "0", "-r", str(sample_rate), "-F", str(wav_path),
         soundfont, str(midi_path)],
        check=True, capture_output=True,
    )
    audio, _ = sf.read(wav_path, dtype="float32", always_2d=True)
    return audio.mean(axis=1)
