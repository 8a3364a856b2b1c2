"""Shared by the benchmark scripts: machine description, timing, and JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import mlx.core as mx

from mlx_ddsp.native import preloaded


def machine() -> dict:
    """What the numbers were measured on."""
    blas = "accelerate" if platform.system() == "Darwin" else (
        "openblas (preloaded)" if "openblas" in preloaded() else "mlx bundled reference BLAS")
    return {"device": str(mx.default_device()), "mlx_version": mx.__version__, "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "blas": blas,
            "preloaded": preloaded()}


def time_calls(fn, repeats: int) -> list[float]:
    """Wall seconds of `repeats` calls of fn(), each evaluated to completion."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(fn())
        times.append(time.perf_counter() - start)
    return times


def summary_ms(times: list[float]) -> dict:
    return {"median": 1e3 * statistics.median(times), "min": 1e3 * min(times), "max": 1e3 * max(times)}


def write_json(path: str | None, records: list[dict]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({**machine(), "records": records}, indent=1))
