"""Time harmonic_synth + filtered_noise + multi-scale spectral loss, forward and forward+backward.

    python benchmarks/synth_loss.py [--batch 4] [--seconds 4] [--harmonics 100] [--repeats 10] [--eager]

Prints median / min milliseconds and MLX peak memory for each mode, compiled as in training (--eager: not); the
synth controls are the differentiated inputs, as in training. f0 is 50-100 Hz, so every harmonic is below Nyquist.
"""

from __future__ import annotations

import argparse
import statistics
import time

import mlx.core as mx

from mlx_ddsp.losses import multiscale_spectral_loss
from mlx_ddsp.native import use_native_libraries
from mlx_ddsp.synth import exp_sigmoid, filtered_noise, harmonic_synth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--harmonics", type=int, default=100)
    parser.add_argument("--noise-bands", type=int, default=65)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--frame-rate", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--eager", action="store_true", help="do not compile (mx.compile) the timed functions")
    args = parser.parse_args()

    n_samples = int(args.seconds * args.sample_rate)
    n_frames = n_samples // (args.sample_rate // args.frame_rate) + 1
    mx.random.seed(0)
    f0_hz = mx.random.uniform(50.0, 100.0, (args.batch, 1)) * mx.ones((args.batch, n_frames))
    controls = {
        "amplitude": mx.random.normal((args.batch, n_frames)),
        "distribution": mx.random.normal((args.batch, n_frames, args.harmonics)),
        "noise": mx.random.normal((args.batch, n_frames, args.noise_bands)) - 5.0,
    }
    target = mx.random.uniform(-0.5, 0.5, (args.batch, n_samples))

    def loss_fn(c, f0_hz, target):
        harmonic = harmonic_synth(f0_hz, exp_sigmoid(c["amplitude"]), exp_sigmoid(c["distribution"]),
                                  n_samples, args.sample_rate)
        audio = harmonic + filtered_noise(exp_sigmoid(c["noise"]), n_samples, key=mx.random.key(0))
        return multiscale_spectral_loss(target, audio)

    modes = {"forward": loss_fn, "forward+backward": mx.value_and_grad(loss_fn)}
    if not args.eager:
        modes = {name: mx.compile(fn) for name, fn in modes.items()}
    print(f"device={mx.default_device()} mlx={mx.__version__} batch={args.batch} seconds={args.seconds} "
          f"harmonics={args.harmonics} noise_bands={args.noise_bands} {'eager' if args.eager else 'compiled'}")
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
