"""Time harmonic_synth + filtered_noise + multi-scale spectral loss, forward and forward+backward, and each part.

    python benchmarks/synth_loss.py [--batch 4] [--seconds 4] [--harmonics 100] [--sample-rate 16000] [--f0 50 100]
                                    [--repeats 10] [--eager]

Prints median / min milliseconds and MLX peak memory for each mode, compiled as in training (--eager: not); the
synth controls are the differentiated inputs, as in training. f0 is drawn in --f0 (Hz, default 50-100, so every
harmonic is below Nyquist at 16 kHz) and, as in training, only the harmonics that can sound are oscillated. The loss
FFT sizes are Magenta's 2048..64 scaled to the sample rate (6144..192 at 48 kHz). Beside the whole, the parts alone
(forward+backward): the harmonic synth, the filtered noise (each reduced by a dot product with the target) and the
loss (of a fixed prediction).
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import mlx.core as mx

from mlx_ddsp.features import frame_hop
from mlx_ddsp.losses import DEFAULT_FFT_SIZES, multiscale_spectral_loss, scaled_fft_sizes
from mlx_ddsp.native import use_native_libraries
from mlx_ddsp.synth import audible_harmonics, exp_sigmoid, filtered_noise, harmonic_synth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--harmonics", type=int, default=100)
    parser.add_argument("--noise-bands", type=int, default=65)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--frame-rate", type=int, default=250)
    parser.add_argument("--f0", type=float, nargs=2, default=[50.0, 100.0], metavar=("LOW", "HIGH"))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--eager", action="store_true", help="do not compile (mx.compile) the timed functions")
    args = parser.parse_args()

    hop = frame_hop(args.sample_rate, args.frame_rate)
    n_frames = int(round(args.seconds * args.frame_rate)) + 1
    n_samples = (n_frames - 1) * hop
    fft_sizes = scaled_fft_sizes(DEFAULT_FFT_SIZES, 16000, args.sample_rate)
    spectral = partial(multiscale_spectral_loss, fft_sizes=fft_sizes, reference_sizes=DEFAULT_FFT_SIZES)  # as trained
    max_harmonics = audible_harmonics(args.f0[0], args.sample_rate, args.harmonics)
    mx.random.seed(0)
    f0_hz = mx.random.uniform(*args.f0, (args.batch, 1)) * mx.ones((args.batch, n_frames))
    controls = {
        "amplitude": mx.random.normal((args.batch, n_frames)),
        "distribution": mx.random.normal((args.batch, n_frames, args.harmonics)),
        "noise": mx.random.normal((args.batch, n_frames, args.noise_bands)) - 5.0,
    }
    target = mx.random.uniform(-0.5, 0.5, (args.batch, n_samples))

    def harmonic(c, f0_hz):
        return harmonic_synth(f0_hz, exp_sigmoid(c["amplitude"]), exp_sigmoid(c["distribution"]), n_samples,
                              args.sample_rate, max_harmonics=max_harmonics)

    def noise(c):
        return filtered_noise(exp_sigmoid(c["noise"]), n_samples, key=mx.random.key(0))

    def loss_fn(c, f0_hz, target):
        return spectral(target, harmonic(c, f0_hz) + noise(c))

    prediction = mx.random.uniform(-0.5, 0.5, (args.batch, n_samples))
    modes = {"forward": loss_fn, "forward+backward": mx.value_and_grad(loss_fn),
             "harmonic only": mx.value_and_grad(lambda c, f0_hz, target: mx.sum(harmonic(c, f0_hz) * target)),
             "noise only": mx.value_and_grad(lambda c, f0_hz, target: mx.sum(noise(c) * target)),
             "loss only": lambda c, f0_hz, target: mx.value_and_grad(
                 lambda p: spectral(target, p))(prediction)}
    if not args.eager:
        modes = {name: mx.compile(fn) for name, fn in modes.items()}
    print(f"device={mx.default_device()} mlx={mx.__version__} batch={args.batch} seconds={args.seconds} "
          f"sample_rate={args.sample_rate} f0={args.f0[0]:g}-{args.f0[1]:g} Hz harmonics={args.harmonics} "
          f"(oscillated {max_harmonics}) noise_bands={args.noise_bands} fft_sizes={fft_sizes} "
          f"{'eager' if args.eager else 'compiled'}")
    for name, fn in modes.items():
        mx.eval(fn(controls, f0_hz, target))  # warm-up
        mx.synchronize()
        mx.reset_peak_memory()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            mx.eval(fn(controls, f0_hz, target))
            times.append(time.perf_counter() - start)
        print(f"{name:17s} median {1e3 * statistics.median(times):8.1f} ms  min {1e3 * min(times):8.1f} ms  "
              f"peak memory {mx.get_peak_memory() / 2**20:8.1f} MiB")


if __name__ == "__main__":
    use_native_libraries()
    main()
