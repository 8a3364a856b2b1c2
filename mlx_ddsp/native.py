"""Fast native libraries on Linux: run the command again with the system's OpenBLAS and tcmalloc preloaded.

`mlx[cpu]` on Linux multiplies matrices with the reference BLAS it bundles (about 6 GFLOP/s on a 2-core x86 machine);
MLX calls `cblas_sgemm`, so preloading OpenBLAS (Debian/Ubuntu: `apt install libopenblas0-pthread`) makes the same
calls about 30x faster with the same results. MLX's CPU backend also allocates every array with `malloc` and frees
it when done, and glibc hands large blocks back to the kernel, so each training step page-faults its working set in
again; tcmalloc (`apt install libtcmalloc-minimal4`) keeps freed memory for reuse (training step at Magenta's shape
2.90 s -> 2.22 s, measured back to back; see the README). Without tcmalloc, glibc is told to keep up to 32 MiB
blocks on its heap instead.

`python -m mlx_ddsp.<command>` and the benchmark scripts call `use_native_libraries()` first: on Linux it
re-executes the command once with LD_PRELOAD (and the glibc settings) in place. macOS (Accelerate, Metal's own
allocator) and GPUs are left alone. Set MLX_DDSP_PRELOAD=0 to opt out.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")
OPENBLAS_NAMES = ("openblas-pthread/libopenblas.so.0", "libopenblas.so.0")
TCMALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
GLIBC_MALLOC_SETTINGS = {  # keep freed blocks up to 32 MiB (glibc's maximum) for reuse instead of unmapping them
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(2**34),
    "MALLOC_TOP_PAD_": str(256 * 2**20),
}
DONE = "MLX_DDSP_PRELOADED"


def find_library(names: tuple[str, ...]) -> str | None:
    """Path of the first of `names` found in the usual Linux library folders, or None."""
    return next((str(Path(d) / n) for n in names for d in LIBRARY_DIRS if (Path(d) / n).exists()), None)


def preloaded() -> str:
    """What this process runs with: 'openblas', 'openblas+tcmalloc', ... or 'none'."""
    names = [name for name in ("openblas", "tcmalloc") if name in os.environ.get("LD_PRELOAD", "")]
    return "+".join(names) or "none"


def use_native_libraries() -> None:
    """On Linux, re-execute this process once with OpenBLAS and tcmalloc preloaded (those that are installed)."""
    if not sys.platform.startswith("linux") or os.environ.get(DONE) or os.environ.get("MLX_DDSP_PRELOAD") == "0":
        return
    openblas, tcmalloc = find_library(OPENBLAS_NAMES), find_library(TCMALLOC_NAMES)
    if openblas is None:
        print("mlx_ddsp: matrix products use MLX's slow reference BLAS; `apt install libopenblas0-pthread` "
              "makes training on this CPU many times faster", file=sys.stderr)
    libraries = [lib for lib in (openblas, tcmalloc) if lib and lib not in os.environ.get("LD_PRELOAD", "")]
    env = dict(os.environ, **{DONE: "1"})
    if libraries:
        env["LD_PRELOAD"] = ":".join(filter(None, [*libraries, os.environ.get("LD_PRELOAD")]))
    if tcmalloc is None:
        env = {**GLIBC_MALLOC_SETTINGS, **env}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
