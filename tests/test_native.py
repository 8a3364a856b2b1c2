"""The Linux re-exec with OpenBLAS / tcmalloc preloaded: once, with what is installed, and never when opted out."""

import json
import os
import subprocess
import sys

import pytest

from mlx_ddsp.native import GLIBC_MALLOC_SETTINGS, OPENBLAS_NAMES, TCMALLOC_NAMES, find_library, wheel_openblas

PROBE = ("import json, os; from mlx_ddsp.native import use_native_libraries; use_native_libraries(); "
         "print(json.dumps({k: os.environ.get(k) for k in ('LD_PRELOAD', 'MLX_DDSP_PRELOADED', "
         "'MALLOC_MMAP_THRESHOLD_')}))")


def probe(**env):
    clean = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MLX_DDSP_PRELOADED", "MLX_DDSP_PRELOAD")}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={**clean, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the re-exec is Linux only")
def test_reexec_preloads_what_is_installed_once():
    seen = probe()
    assert seen["MLX_DDSP_PRELOADED"] == "1"
    preload = (seen["LD_PRELOAD"] or "").split(":")
    installed = [find_library(OPENBLAS_NAMES) or wheel_openblas(), find_library(TCMALLOC_NAMES)]
    assert preload == [lib for lib in installed if lib] or (preload == [""] and not any(installed))
    if find_library(TCMALLOC_NAMES) is None:
        assert seen["MALLOC_MMAP_THRESHOLD_"] == GLIBC_MALLOC_SETTINGS["MALLOC_MMAP_THRESHOLD_"]


def test_opt_out_runs_as_is():
    assert probe(MLX_DDSP_PRELOAD="0") == {"LD_PRELOAD": None, "MLX_DDSP_PRELOADED": None,
                                           "MALLOC_MMAP_THRESHOLD_": None}


MATMUL = ("import json, sys, numpy as np, mlx.core as mx; rng = np.random.default_rng(0); "
          "a, b = rng.normal(size=(300, 200)).astype(np.float32), rng.normal(size=(200, 170)).astype(np.float32); "
          "c = np.array(mx.array(a) @ mx.array(b)); d = np.array(mx.array(a.T).T @ mx.array(b.T).T); "
          "print(json.dumps([float(np.abs(x - a.astype(np.float64) @ b).max()) for x in (c, d)] "
          "+ ['libscipy_openblas' in open('/proc/self/maps').read()]))")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the forwarder is for mlx[cpu] on Linux")
def test_wheel_openblas_forwarder_multiplies_like_float64_numpy():
    library = wheel_openblas()
    if library is None:
        pytest.skip("no scipy-openblas32 wheel or no C compiler here")
    clean = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MLX_DDSP_PRELOAD")}
    out = subprocess.run([sys.executable, "-c", MATMUL], capture_output=True, text=True, check=True,
                         env={**clean, "LD_PRELOAD": library, "MLX_DDSP_PRELOADED": "1"})
    *errors, mapped = json.loads(out.stdout.strip().splitlines()[-1])
    assert max(errors) < 1e-3  # plain and transposed operands, float32 against float64
    assert mapped  # the wheel's OpenBLAS is what the forwarder loaded
    assert "cblas_forward" in library and library.endswith(".so")
