"""Render the f0 development corpus: 13 GM instruments from three SoundFonts, with true f0, plus degraded copies.

Not shipped (about 300 MB at 48 kHz): CI and the tests do not need it. Needs Debian's `fluidsynth` and SoundFonts:

    apt-get install fluidsynth fluid-soundfont-gm timgm6mb-soundfont musescore-general-soundfont-small
    python scripts/render_dev_corpus.py [--out corpus/dev] [--files 3] [--seconds 15] [--sample-rate 48000]
    python benchmarks/f0_accuracy.py --audio corpus/dev/clean --truth corpus/dev/truth --reference pyin

Layout under --out:
    clean/FONT_INSTRUMENT_NN.flac   the dry render (FluidR3 gets --files per instrument, the other fonts --other-files)
    truth/FONT_INSTRUMENT_NN.npz    f0_hz, voiced, ambiguous at 250 frames/s; instrument, font (see midi_corpus.py)
    white20/, pink20/               white / pink noise added at 20 dB SNR (against the mean power of voiced frames)
    reverb/                         convolved with a synthetic room (RT60 0.4-1.2 s, direct-to-reverberant ~0 dB)
    dc/                             a DC offset of 0.1 (peak 0.9 before it)
    clip/                           soft clipping: tanh(4 x) / tanh(4)
The degraded copies share the clean file's truth. Melodies per instrument cover its register (e.g. contrabass down
to E1 = 41 Hz, violin up to C7 = 2093 Hz) with vibrato, glides, legato, detached notes, rests, release tails and
dynamics from 30 to 127 velocity.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from midi_corpus import FLUIDR3, FRAME_RATE, INSTRUMENTS, compose, render, sounding_truth, write_midi

# FluidR3's Choir Aahs is tuned 20-40 cents flat of the MIDI note (measured: the median f0 of its confident
# frames, per note, in two files), so MIDI is no truth for it; its sung vowels come from Voice Oohs there.
SKIP = {("fluidr3", "choir_aahs")}
FONTS = {
    "fluidr3": FLUIDR3,
    "timgm6mb": "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "musescore": "/usr/share/sounds/sf3/MuseScore_General.sf3",
}


def voiced_power(audio: np.ndarray, voiced: np.ndarray, sample_rate: int) -> float:
    hop = sample_rate // FRAME_RATE
    samples = np.repeat(voiced, hop)[: len(audio)]
    return float(np.mean(audio[: len(samples)][samples] ** 2)) if samples.any() else float(np.mean(audio**2))


def pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Noise with a 1/f power spectrum (-3 dB per octave), unit variance."""
    spectrum = np.fft.rfft(rng.normal(size=n))
    spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n)
    return noise / noise.std()


def room_impulse_response(rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A synthetic room: direct path, a few early reflections, then a diffuse tail whose highs decay faster.

    RT60 is drawn from [0.4, 1.2] s for the lows and 60 % of it for the highs; the tail carries as much energy as
    the direct path (direct-to-reverberant ratio ~0 dB, a microphone a few metres away in a living room or hall).
    """
    rt60 = rng.uniform(0.4, 1.2)
    n = int(1.5 * rt60 * sample_rate)
    t = np.arange(n) / sample_rate
    noise = rng.normal(size=(2, n))
    spectrum = np.fft.rfft(noise, axis=-1)
    frequencies = np.fft.rfftfreq(n, 1.0 / sample_rate)
    low_share = 1.0 / (1.0 + (frequencies / 2000.0) ** 2)
    low = np.fft.irfft(spectrum[0] * low_share, n)
    high = np.fft.irfft(spectrum[1] * (1.0 - low_share), n)
    decay = lambda seconds: 10.0 ** (-3.0 * t / seconds)  # -60 dB after `seconds`
    tail = (low * decay(rt60) + high * decay(0.6 * rt60)) * np.clip(t / 0.005, 0.0, 1.0)
    tail[: int(0.01 * sample_rate)] = 0.0  # the diffuse part starts after the early reflections
    tail /= np.sqrt(np.sum(tail**2))
    ir = tail.copy()
    ir[0] += 1.0
    for delay in rng.uniform(0.002, 0.02, size=4):
        ir[int(delay * sample_rate)] += rng.uniform(0.2, 0.5) * rng.choice([-1.0, 1.0])
    return ir


def degrade(clean: np.ndarray, voiced: np.ndarray, sample_rate: int, rng: np.random.Generator) -> dict:
    """{name: degraded copy} of `clean` (n_samples,); each copy peaks at <= 0.99."""
    power = voiced_power(clean, voiced, sample_rate)
    noise_at = lambda noise: clean + noise * np.sqrt(power / 10.0 ** (20.0 / 10.0)) / noise.std()
    reverberant = np.convolve(clean, room_impulse_response(rng, sample_rate))[: len(clean)]
    out = {
        "white20": noise_at(rng.normal(size=len(clean))),
        "pink20": noise_at(pink_noise(rng, len(clean))),
        "reverb": reverberant,
        "dc": clean + 0.1,
        "clip": np.tanh(4.0 * clean) / np.tanh(4.0),
    }
    return {name: (x * min(1.0, 0.99 / np.max(np.abs(x)))).astype(np.float32) for name, x in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("corpus/dev"))
    parser.add_argument("--files", type=int, default=3, help="files per instrument from FluidR3")
    parser.add_argument("--other-files", type=int, default=1, help="files per instrument from each other font")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--sample-rate", type=int, default=48000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    for folder in ("clean", "truth", "white20", "pink20", "reverb", "dc", "clip"):
        (args.out / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        for font, soundfont in FONTS.items():
            if not Path(soundfont).exists():
                print(f"skipping {font}: {soundfont} not installed")
                continue
            for instrument in INSTRUMENTS:
                if (font, instrument.name) in SKIP:
                    continue
                for i in range(args.files if font == "fluidr3" else args.other_files):
                    name = f"{font}_{instrument.name}_{i:02d}"
                    events, midi_pitch, held, onsets = compose(rng, args.seconds, instrument)
                    write_midi(Path(tmp) / "x.mid", events)
                    audio = render(Path(tmp) / "x.mid", Path(tmp) / "x.wav", args.sample_rate, soundfont)
                    audio = audio[: int(args.seconds * args.sample_rate)]
                    audio *= 0.9 / max(np.max(np.abs(audio)), 1e-9)
                    f0_hz, voiced, ambiguous = sounding_truth(midi_pitch, held, onsets, audio, args.sample_rate)
                    sf.write(args.out / "clean" / f"{name}.flac", audio, args.sample_rate, subtype="PCM_16")
                    np.savez_compressed(args.out / "truth" / f"{name}.npz", f0_hz=f0_hz, voiced=voiced,
                                        ambiguous=ambiguous, frame_rate=FRAME_RATE, instrument=instrument.name,
                                        font=font)
                    for kind, copy in degrade(audio, voiced, args.sample_rate, rng).items():
                        sf.write(args.out / kind / f"{name}.flac", copy, args.sample_rate, subtype="PCM_16")
                    print(f"{name}: {len(audio) / args.sample_rate:.1f} s, voiced {voiced.mean():.0%}, "
                          f"f0 {f0_hz[voiced].min():.0f}-{f0_hz[voiced].max():.0f} Hz")


if __name__ == "__main__":
    main()
