"""Shared fixtures."""

import mlx.core as mx
import pytest

from mlx_ddsp import kernels


@pytest.fixture
def cpu_path(monkeypatch):
    """cpu_path("kernel" | "mlx ops") runs mlx_ddsp's CPU code through the compiled kernels of mlx_ddsp/csrc (the
    test is skipped where they cannot be built: no compiler or Python headers) or through MLX ops only."""

    def select(path: str) -> None:
        if path == "mlx ops":
            monkeypatch.setattr(kernels, "cpu_kernels", lambda *arrays: None)
        elif kernels.missing_build_tools():
            pytest.skip(kernels.missing_build_tools())
        else:
            assert kernels.cpu_kernels(mx.zeros(1)) is not None, "the CPU kernels did not build (see stderr)"

    return select
