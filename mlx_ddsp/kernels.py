"""Native CPU kernels for MLX, compiled at first use against the installed MLX (like MLX's own compiled CPU ops).

`csrc/` holds MLX primitives for the CPU: the GRU's frame-by-frame loop, forward and backward (`gru.cpp`: MLX
would run one BLAS call and several op dispatches per frame, ~0.4 ms per frame at Magenta's shape, where the
kernel takes ~0.06 ms), the minGRU's linear recurrence (`linear_recurrence.cpp`), layer norm + leaky ReLU
(`layer_norm.cpp`) and the oscillator bank (`harmonic_bank.cpp`). The first process that needs them compiles
them with the system C++ compiler (`c++`, or $CXX), MLX's headers and nanobind's sources (~20 s, once) into a
cache folder ($MLX_DDSP_CACHE, default ~/.cache/mlx_ddsp); later processes load the cached library. Without a
compiler, or if the build fails, one line says why and the same computations run with MLX ops. GPUs always use
MLX ops. MLX_DDSP_KERNELS=0 turns the kernels off.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import mlx.core as mx

from mlx_ddsp.native import cache_dir

SOURCES = sorted((Path(__file__).with_name("csrc")).glob("*.cpp"))
HEADERS = sorted((Path(__file__).with_name("csrc")).glob("*.h"))
_loaded: dict[str, object] = {}


def _compile_command(compiler: str, output: Path, native_arch: bool) -> list[str]:
    import nanobind

    nb_dir = Path(nanobind.__file__).parent
    mlx_dir = Path(mx.__file__).parent
    command = [compiler, "-O3", "-std=c++20", "-shared", "-fPIC", "-fvisibility=hidden", "-fno-math-errno",
               "-DNB_DOMAIN=mlx", "-DNDEBUG", "-pthread",  # NB_DOMAIN: share MLX's nanobind types (mx.array)
               f"-I{mlx_dir / 'include'}", f"-I{sysconfig.get_paths()['include']}", f"-I{nb_dir / 'include'}",
               f"-I{nb_dir / 'ext' / 'robin_map' / 'include'}", *map(str, SOURCES),
               str(nb_dir / "src" / "nb_combined.cpp"),
               f"-L{mlx_dir / 'lib'}", "-lmlx", f"-Wl,-rpath,{mlx_dir / 'lib'}", "-o", str(output)]
    if native_arch:
        command.insert(1, "-march=native")
    if sys.platform == "darwin":
        command.insert(1, "-undefined")
        command.insert(2, "dynamic_lookup")
    return command


def _build_key() -> str:
    import nanobind

    cpu = platform.machine()
    if Path("/proc/cpuinfo").exists():  # -march=native: a cache shared by different CPUs must not mix builds
        cpu += next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    parts = [*(path.read_bytes() for path in SOURCES + HEADERS), mx.__version__.encode(), nanobind.__version__.encode(),
             sysconfig.get_config_var("EXT_SUFFIX").encode(), cpu.encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


def missing_build_tools() -> str | None:
    """Why the kernels cannot be compiled here (no C++ compiler, no Python headers), or None."""
    if _compiler() is None:
        return "no C++ compiler found (install g++ or clang, or set CXX)"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "Python's headers are missing (Debian/Ubuntu: apt install python3-dev)"
    return None


def build(folder: Path) -> Path:
    """Compile csrc/ into `folder` (atomically) unless already there; returns the library's path.
    Raises RuntimeError with the reason when it cannot be built."""
    library = folder / f"_kernels-{_build_key()}{sysconfig.get_config_var('EXT_SUFFIX')}"
    if library.exists():
        return library
    reason = missing_build_tools()
    if reason:
        raise RuntimeError(reason)
    compiler = _compiler()
    folder.mkdir(parents=True, exist_ok=True)
    print(f"mlx_ddsp: compiling the CPU kernels into {folder} (once, ~20 s)", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        partial = Path(tmp) / library.name
        for native_arch in (True, False):  # -march=native where the compiler accepts it
            result = subprocess.run(_compile_command(compiler, partial, native_arch), capture_output=True, text=True)
            if result.returncode == 0:
                os.replace(partial, library)
                return library
        raise RuntimeError(f"{compiler} failed: {result.stderr.strip()[-2000:]}")


def _load():
    """The compiled module, or None (after saying why once)."""
    if "kernels" in _loaded:
        return _loaded["kernels"]
    module = None
    if os.environ.get("MLX_DDSP_KERNELS") != "0":
        try:
            spec = importlib.util.spec_from_file_location("_kernels", build(cache_dir()))
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            mx.eval(module.gru_forward(mx.zeros((1, 1, 3)), mx.zeros((1,)), mx.zeros((3, 1)), mx.zeros((1, 1))))
        except Exception as error:  # noqa: BLE001 - any failure means: use MLX ops
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            print(f"mlx_ddsp: CPU kernels unavailable ({reason}); using MLX ops (slower)", file=sys.stderr)
            module = None
    _loaded["kernels"] = module
    return module


def cpu_kernels(*arrays: mx.array):
    """The compiled module (see csrc/module.cpp for its functions) when it applies to `arrays` (float32, and the
    CPU as the default device), else None."""
    if mx.default_device() != mx.cpu or any(a.dtype != mx.float32 for a in arrays):
        return None
    return _load()
