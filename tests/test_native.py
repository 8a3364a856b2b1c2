"""The Linux re-exec with OpenBLAS / tcmalloc preloaded: once, with what is installed, and never when opted out."""

import json
import os
import subprocess
import sys

import pytest

from mlx_ddsp.native import GLIBC_MALLOC_SETTINGS, OPENBLAS_NAMES, TCMALLOC_NAMES, find_library

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
    installed = [find_library(names) for names in (OPENBLAS_NAMES, TCMALLOC_NAMES)]
    assert preload == [lib for lib in installed if lib] or (preload == [""] and not any(installed))
    if find_library(TCMALLOC_NAMES) is None:
        assert seen["MALLOC_MMAP_THRESHOLD_"] == GLIBC_MALLOC_SETTINGS["MALLOC_MMAP_THRESHOLD_"]


def test_opt_out_runs_as_is():
    assert probe(MLX_DDSP_PRELOAD="0") == {"LD_PRELOAD": None, "MLX_DDSP_PRELOADED": None,
                                           "MALLOC_MMAP_THRESHOLD_": None}
