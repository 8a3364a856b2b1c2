"""The compiled CPU kernels' loader: opting out, falling back when the build fails, and applying only where valid.
(What the kernels compute is tested against MLX: the GRU in test_models.py, layer norm in test_fastmath.py.)"""

import tempfile
from pathlib import Path

import mlx.core as mx
import pytest

from mlx_ddsp import kernels


def test_opt_out_and_float32_only(monkeypatch):
    assert kernels.cpu_kernels(mx.zeros(1, dtype=mx.float16)) is None
    monkeypatch.setattr(kernels, "_loaded", {})
    monkeypatch.setenv("MLX_DDSP_KERNELS", "0")
    assert kernels.cpu_kernels(mx.zeros(1)) is None


def test_failed_build_falls_back_with_the_reason(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(kernels, "_loaded", {})
    monkeypatch.setenv("MLX_DDSP_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    assert kernels.cpu_kernels(mx.zeros(1)) is None
    reason = kernels.missing_build_tools() or "false failed"  # without Python's headers it stops before compiling
    assert f"CPU kernels unavailable ({reason}" in capsys.readouterr().err
    assert not list(tmp_path.glob("*/*")) and not list(tmp_path.glob("_kernels*"))  # nothing half-written is left


@pytest.mark.skipif(kernels.missing_build_tools() is not None, reason=str(kernels.missing_build_tools()))
def test_built_library_is_reused(monkeypatch):
    library = kernels.build(kernels.cache_dir())  # built by now (test_models), or built here
    stamp = library.stat().st_mtime_ns
    monkeypatch.setenv("CXX", "false")  # would fail if it compiled again
    assert kernels.build(kernels.cache_dir()) == library and library.stat().st_mtime_ns == stamp


def test_cache_falls_back_to_a_temporary_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("MLX_DDSP_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file"))
    (tmp_path / "a-file").write_text("not a folder")
    assert kernels.cache_dir().parent == Path(tempfile.gettempdir())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert kernels.cache_dir() == tmp_path / "mlx_ddsp"
