"""Fast native libraries on Linux: run the command again with OpenBLAS and tcmalloc preloaded.

`mlx[cpu]` on Linux multiplies matrices with the reference BLAS it bundles (about 4-6 GFLOP/s on a 2-core x86
machine); MLX calls `cblas_sgemm`, so preloading OpenBLAS makes the same calls about 30x faster with the same
results. The system's OpenBLAS is used when installed (Debian/Ubuntu: `apt install libopenblas0-pthread`); otherwise
the one in the `scipy-openblas32` wheel (a dependency on Linux), whose symbols are prefixed (`scipy_cblas_sgemm`),
through a small forwarding library (`csrc/cblas_forward.c`) built once with the C compiler and cached beside the
kernels. MLX's CPU backend also allocates every array with `malloc` and frees it when done, and glibc hands large
blocks back to the kernel, so each step page-faults its working set in again; tcmalloc (`apt install
libtcmalloc-minimal4`) keeps freed memory for reuse (training step at Magenta's shape 2.90 s -> 2.22 s before the
C++ kernels; with them no measurable gain, see the README). Without tcmalloc, glibc is told to keep up to 32 MiB
blocks on its heap instead.

`python -m mlx_ddsp.<command>` and the benchmark scripts call `use_native_libraries()` first: on Linux it
re-executes the command once with LD_PRELOAD (and the glibc settings) in place. macOS (Accelerate, Metal's own
allocator) and GPUs are left alone. Set MLX_DDSP_PRELOAD=0 to opt out.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
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


def cache_dir() -> Path:
    """$MLX_DDSP_CACHE, else ~/.cache/mlx_ddsp (or under $XDG_CACHE_HOME) when it can be written, else a folder in
    the system's temporary directory."""
    if os.environ.get("MLX_DDSP_CACHE"):
        return Path(os.environ["MLX_DDSP_CACHE"])
    try:
        folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlx_ddsp"
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    except (OSError, RuntimeError):  # no home folder, or a read-only one
        pass
    return Path(tempfile.gettempdir()) / f"mlx_ddsp-{os.getuid()}"


def wheel_openblas() -> str | None:
    """The forwarder from `cblas_sgemm` to the scipy-openblas32 wheel's OpenBLAS, built at first use (cached), or
    None without the wheel or a C compiler, or if the build fails."""
    try:
        import scipy_openblas32
    except ImportError:
        return None
    source = Path(__file__).with_name("csrc") / "cblas_forward.c"
    lib_dir, name = scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library()
    key = hashlib.sha1(source.read_bytes() + f"{lib_dir}|{name}|{scipy_openblas32.__version__}".encode()).hexdigest()
    output = cache_dir() / f"cblas_forward-{key[:16]}.so"
    if output.exists():
        return str(output)
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    partial = output.with_name(f"{output.name}.{os.getpid()}.tmp")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([compiler, "-O2", "-shared", "-fPIC", str(source), f"-L{lib_dir}", f"-l{name}",
                        f"-Wl,-rpath,{lib_dir}", "-o", str(partial)], check=True, capture_output=True)
        os.replace(partial, output)  # atomic: a concurrent process sees the whole library or none
    except (OSError, subprocess.CalledProcessError):
        partial.unlink(missing_ok=True)
        return None
    return str(output)


def preloaded() -> str:
    """What this process runs with: 'openblas', 'openblas+tcmalloc', ... or 'none'."""
    preload = os.environ.get("LD_PRELOAD", "")
    names = [name for name, marks in (("openblas", ("openblas", "cblas_forward")), ("tcmalloc", ("tcmalloc",)))
             if any(mark in preload for mark in marks)]
    return "+".join(names) or "none"


def use_native_libraries() -> None:
    """On Linux, re-execute this process once with OpenBLAS and tcmalloc preloaded (those that are installed)."""
    if not sys.platform.startswith("linux") or os.environ.get(DONE) or os.environ.get("MLX_DDSP_PRELOAD") == "0":
        return
    openblas, tcmalloc = find_library(OPENBLAS_NAMES) or wheel_openblas(), find_library(TCMALLOC_NAMES)
    if openblas is None:
        print("mlx_ddsp: matrix products use MLX's slow reference BLAS (no scipy-openblas32 wheel or C compiler, no "
              "system OpenBLAS); `pip install scipy-openblas32` with a C compiler, or `apt install "
              "libopenblas0-pthread`, makes training on this CPU many times faster", file=sys.stderr)
    libraries = [lib for lib in (openblas, tcmalloc) if lib and lib not in os.environ.get("LD_PRELOAD", "")]
    env = dict(os.environ, **{DONE: "1"})
    if libraries:
        env["LD_PRELOAD"] = ":".join(filter(None, [*libraries, os.environ.get("LD_PRELOAD")]))
    if tcmalloc is None:
        env = {**GLIBC_MALLOC_SETTINGS, **env}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
