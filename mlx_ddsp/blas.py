"""Fast matrix products on Linux: run the command again with the system's OpenBLAS preloaded.

`mlx[cpu]` on Linux multiplies matrices with the reference BLAS it bundles (about 6 GFLOP/s on a 2-core x86 machine);
MLX calls `cblas_sgemm`, so preloading OpenBLAS (Debian/Ubuntu: `apt install libopenblas0-pthread`) makes the same
calls about 30x faster with the same results. `python -m mlx_ddsp.<command>` calls `use_openblas()` first: on Linux,
when OpenBLAS is installed and not yet loaded, it re-executes the command with LD_PRELOAD set. macOS (Accelerate)
and GPUs are left alone. Set MLX_DDSP_OPENBLAS=0 to opt out.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)


def find_openblas() -> str | None:
    """Path of the system's OpenBLAS shared library, or None."""
    return next((p for p in OPENBLAS_CANDIDATES if Path(p).exists()), None)


def openblas_loaded() -> bool:
    return "openblas" in os.environ.get("LD_PRELOAD", "")


def use_openblas() -> None:
    """On Linux, re-execute this process with OpenBLAS preloaded when it is installed and not loaded yet."""
    if not sys.platform.startswith("linux") or openblas_loaded() or os.environ.get("MLX_DDSP_OPENBLAS") == "0":
        return
    library = find_openblas()
    if library is None:
        if os.environ.get("MLX_DDSP_OPENBLAS_HINT") != "0":
            print("mlx_ddsp: matrix products use MLX's slow reference BLAS; `apt install libopenblas0-pthread` "
                  "makes training on this CPU many times faster", file=sys.stderr)
        return
    env = dict(os.environ, LD_PRELOAD=":".join(filter(None, [library, os.environ.get("LD_PRELOAD")])))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
