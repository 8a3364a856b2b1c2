"""Render the bundled flute corpus (data/flute) from generated MIDI, with its true f0 tracks (data/flute_truth),
or the same kind of training corpus for another instrument of `midi_corpus.INSTRUMENTS`.

Kept out of the package's main path: it needs Debian's `fluidsynth` and `fluid-soundfont-gm` (FluidR3_GM, MIT):

    apt-get install fluidsynth fluid-soundfont-gm
    python scripts/render_corpus.py [--files 8] [--seconds 30] [--seed 1]     # data/flute, data/flute_truth
    python scripts/render_corpus.py --instrument cello --out corpus/instruments  # corpus/instruments/cello{,_truth}

Each file is a melody in the instrument's range (the flute: GM program 74, MIDI 60-93; see `midi_corpus.py`), rendered at
48 kHz (the 16 kHz recipes resample it when they build their cache). `voiced` marks frames where a note sounds: while it is held, and in its release
until the next note starts or the rendered audio falls below -60 dB (the only use of the audio in the truth; the
pitch of a release is the note's last pitch). `ambiguous` marks the first 60 ms of every note, where the sampled
flute's attack (which carries sub-octave energy in FluidR3) overlaps the previous note's release; the f0 benchmark
leaves those frames out.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from midi_corpus import FRAME_RATE, INSTRUMENTS, compose, render, sounding_truth, write_midi

SAMPLE_RATE = 48000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("data"))
    parser.add_argument("--instrument", default="flute", choices=[i.name for i in INSTRUMENTS])
    args = parser.parse_args()
    instrument = next(i for i in INSTRUMENTS if i.name == args.instrument)
    audio_dir, truth_dir = args.out / instrument.name, args.out / f"{instrument.name}_truth"
    audio_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.files):
            name = f"{instrument.name}_{i:02d}"
            events, midi_pitch, held, onsets = compose(rng, args.seconds, instrument)
            write_midi(Path(tmp) / f"{name}.mid", events)
            audio = render(Path(tmp) / f"{name}.mid", Path(tmp) / f"{name}.wav", SAMPLE_RATE)
            audio = audio[: int(args.seconds * SAMPLE_RATE)]
            audio *= 0.9 / max(np.max(np.abs(audio)), 1e-9)
            sf.write(audio_dir / f"{name}.flac", audio, SAMPLE_RATE, subtype="PCM_16")
            f0_hz, voiced, ambiguous = sounding_truth(midi_pitch, held, onsets, audio, SAMPLE_RATE)
            np.savez_compressed(truth_dir / f"{name}.npz", f0_hz=f0_hz, voiced=voiced, ambiguous=ambiguous,
                                frame_rate=FRAME_RATE)
            print(f"{name}: {len(audio) / SAMPLE_RATE:.1f} s, voiced {voiced.mean():.0%}")


if __name__ == "__main__":
    main()
