"""The build mode: CUDA kernels when a GPU is visible or they are asked for (EMBER_CUDA=1,
TORCH_CUDA_ARCH_LIST), CPU-only otherwise; said in the build log, in `ember info`, and once at
import when a CPU-only build meets a GPU."""

import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

import ember

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_build_info_says_the_mode_and_why():
    info = ember.build_info()
    assert info["build_mode"].startswith("cuda (" if info["with_cuda"] else "cpu-only ("), info["build_mode"]


class _CpuOnlyBuild:
    @staticmethod
    def build_info():
        return {
            "with_cuda": False,
            "build_mode": "cpu-only (no GPU visible; EMBER_CUDA=1 builds the CUDA kernels anyway)",
        }


def test_a_cpu_only_build_warns_once_where_a_gpu_is_visible(monkeypatch):
    monkeypatch.setattr(ember, "_C", _CpuOnlyBuild)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.warns(
        RuntimeWarning, match="built without its CUDA kernels .*no GPU visible.*EMBER_CUDA=1 pip install"
    ):
        ember._warn_if_built_without_cuda()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ember._warn_if_built_without_cuda()  # no GPU: nothing to say


def _configure(tmp_path, **env):
    """The `ember: build mode ...` line of a CMake configure (no compile) in a fresh folder."""
    import pybind11

    clean = {k: v for k, v in os.environ.items() if k not in ("EMBER_CUDA", "TORCH_CUDA_ARCH_LIST")}
    out = subprocess.run(
        [
            "cmake",
            "-S",
            ROOT,
            "-B",
            str(tmp_path),
            "-G",
            "Ninja",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
        ],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return [line for line in out.stdout.splitlines() if "ember: build mode" in line]


@pytest.mark.slow
@pytest.mark.parametrize(
    "env, mode",
    [
        ({}, "cpu-only (no GPU visible"),
        ({"TORCH_CUDA_ARCH_LIST": "9.0a"}, "cuda (TORCH_CUDA_ARCH_LIST is set)"),
        ({"EMBER_CUDA": "0"}, "cpu-only (EMBER_CUDA=0)"),
    ],
)
def test_configure_picks_the_mode_and_says_so(tmp_path, env, mode):
    if shutil.which("nvcc") is None or torch.version.cuda is None:
        pytest.skip("needs nvcc and a CUDA build of torch")
    if torch.cuda.is_available() and not env:
        mode = "cuda (a GPU is visible)"
    lines = _configure(tmp_path, **env)
    assert len(lines) == 1 and mode in lines[0], lines
    assert "minutes on 2 cores" in lines[0]
