"""Reverberant copies of a folder of dry recordings, in image-source rooms of known RT60 (development material).

    pip install pyroomacoustics        # development only; the package and CI do not need it
    python scripts/render_rooms.py data/flute corpus/rooms/flute --rt60 0.4 0.8 1.4

For each RT60, one shoebox room (pyroomacoustics: absorption and reflection order from Sabine's formula for that
RT60; size, source and microphone drawn from --seed) is simulated at the recordings' rate, and every file is
convolved with its impulse response: OUT/rt60_<T>/<same name>.wav (so truth files such as data/flute_truth apply
unchanged). OUT/rt60_<T>_direct/<same name>.wav holds the direct sound alone: the same file without its room, at
the level and delay the direct path has in the reverberant file, which is what a model's dry output should be
(`python -m mlx_ddsp.eval RUN --dry OUT/rt60_<T>_direct`). The dry originals stay where they are. OUT/rooms.json
records each room: the RT60 asked for, the RT60 measured from its impulse response (`mlx_ddsp.rooms.rt60_from_ir`),
the reverberation's level over the direct path's (dB, for a white sound: what `mlx_ddsp.eval` reports of a learned
room), size and positions; OUT/rt60_<T>/room_ir.npy keeps the impulse response. One gain per room (its direct
path at 1, then lowered if a file would clip).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import fftconvolve  # scipy comes with pyroomacoustics

from mlx_ddsp.audio import load_audio, save_audio
from mlx_ddsp.preprocess import scan
from mlx_ddsp.rooms import rt60_from_ir


def room_impulse_response(rt60_s: float, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    import pyroomacoustics as pra

    size = rng.uniform([4.0, 3.5, 2.6], [9.0, 7.0, 4.0])
    absorption, max_order = pra.inverse_sabine(rt60_s, size)
    room = pra.ShoeBox(size, fs=sample_rate, materials=pra.Material(absorption), max_order=max_order)
    source = rng.uniform(0.15, 0.45) * size + np.array([0.0, 0.0, 0.3])
    mic = size - rng.uniform(0.2, 0.4) * size
    room.add_source(source)
    room.add_microphone(mic)
    room.compute_rir()
    ir = np.asarray(room.rir[0][0], np.float64)
    ir /= np.max(np.abs(ir))
    return ir, {"size_m": size.round(2).tolist(), "source_m": source.round(2).tolist(),
                "mic_m": mic.round(2).tolist(), "absorption": float(absorption), "max_order": int(max_order)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dry", help="folder of dry recordings")
    parser.add_argument("out", help="output folder")
    parser.add_argument("--rt60", type=float, nargs="+", default=[0.4, 0.8, 1.4], help="decay times in s")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    files = [path for path, reason in scan(Path(args.dry)) if reason is None]
    rates = {sf.info(path).samplerate for path in files}
    if len(rates) != 1:
        raise SystemExit(f"the dry files have several rates {sorted(rates)}; render one rate at a time")
    sample_rate = rates.pop()
    rng = np.random.default_rng(args.seed)
    out, rooms = Path(args.out), []
    for rt60 in args.rt60:
        ir, room = room_impulse_response(rt60, sample_rate, rng)
        folder = out / f"rt60_{rt60:g}"
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "room_ir.npy", ir.astype(np.float32))
        dry = {path: load_audio(path, sample_rate) for path in files}
        wet = {path: fftconvolve(audio, ir)[: len(audio)] for path, audio in dry.items()}
        gain = min(1.0, 0.99 / max(np.max(np.abs(w)) for w in wet.values()))
        direct_at = int(np.argmax(np.abs(ir)))  # the direct path: the IR's largest tap
        direct_folder = out / f"{folder.name}_direct"
        direct_folder.mkdir(parents=True, exist_ok=True)
        for path, audio in wet.items():
            save_audio(folder / f"{path.stem}.wav", (gain * audio).astype(np.float32), sample_rate)
            direct = gain * ir[direct_at] * np.concatenate([np.zeros(direct_at), dry[path][: len(audio) - direct_at]])
            save_audio(direct_folder / f"{path.stem}.wav", direct.astype(np.float32), sample_rate)
        # the reverberation's energy over the direct path's (for a white dry sound), as eval reports a learned room's
        reverberation_db = 10 * np.log10(np.sum(ir**2) / ir[direct_at] ** 2 - 1.0)
        rooms.append({"folder": folder.name, "direct_folder": direct_folder.name, "direct_delay_samples": direct_at,
                      "rt60_asked_s": rt60, "reverberation_db": round(float(reverberation_db), 2),
                      "rt60_measured_s": round(rt60_from_ir(ir, sample_rate), 3), "gain": round(gain, 4), **room})
        print(f"{folder}: {len(files)} files, RT60 asked {rt60:g} s, measured {rooms[-1]['rt60_measured_s']} s")
    (out / "rooms.json").write_text(json.dumps(rooms, indent=1))


if __name__ == "__main__":
    main()
