"""The build mode: CUDA kernels when a GPU is visible or they are asked for (EMBER_CUDA=1,
TORCH_CUDA_ARCH_LIST), CPU-only otherwise; said in the build log, in `ember info`, and once at
import when a CPU-only build meets a GPU."""

import os
import re
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


# The object that holds every build fact (bindings/module.cpp, through the generated header).
_BUILD_FACTS_OBJECT = "CMakeFiles/_C.dir/bindings/module.cpp.o"


@pytest.mark.slow
@pytest.mark.parametrize(
    "env, mode",
    [
        ({}, "cpu-only (no GPU visible"),
        ({"TORCH_CUDA_ARCH_LIST": "9.0a"}, "cuda (TORCH_CUDA_ARCH_LIST is set)"),
        ({"EMBER_CUDA": "0"}, "cpu-only (EMBER_CUDA=0)"),
        ({"EMBER_CUDA": "1"}, "cuda (EMBER_CUDA=1)"),
    ],
)
def test_each_mode_configures_says_so_and_compiles(tmp_path, env, mode):
    """Each build mode a user can meet configures, names itself, and compiles the file that holds
    its build facts (a configure alone let a ";" in the mode's text break the README's build)."""
    if shutil.which("nvcc") is None or torch.version.cuda is None:
        pytest.skip("needs nvcc and a CUDA build of torch")
    if torch.cuda.is_available() and not env:
        mode = "cuda (a GPU is visible)"
    lines = _configure(tmp_path, **env)
    assert len(lines) == 1 and mode in lines[0], lines
    assert "minutes on 2 cores" in lines[0]
    out = subprocess.run(
        ["cmake", "--build", str(tmp_path), "--target", _BUILD_FACTS_OBJECT],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


# Characters CMake (";" splits a list, "$" and "#" start references and comments, "\\" escapes) or
# the C preprocessor (quotes, backslashes, "//", trigraph-like "??=") treat specially.
_AWKWARD = "cpu-only (a;b \"quoted\" C:\\path\\ ${HOME} #hash // ??= 'q' end)"


def test_build_facts_survive_any_character(tmp_path):
    """The generated header carries a value with every special character into a C string intact:
    compiled and printed by a tiny program."""
    header = tmp_path / "ember_build_info.h"
    script = os.path.join(ROOT, "cmake", "EmberBuildInfo.cmake")
    out = subprocess.run(
        ["cmake", f"-DEMBER_BUILD_INFO_HEADER={header}", f"-DEMBER_BUILD_MODE={_AWKWARD}", "-P", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    main = tmp_path / "main.cpp"
    main.write_text(
        '#include <cstdio>\n#include "ember_build_info.h"\nint main() { std::fputs(EMBER_BUILD_MODE, stdout); }\n'
    )
    exe = tmp_path / "main"
    cc = subprocess.run(["c++", str(main), f"-I{tmp_path}", "-o", str(exe)], capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr
    assert subprocess.run([str(exe)], capture_output=True, text=True).stdout == _AWKWARD


def test_no_string_value_in_a_compile_definition():
    """A quoted value in target_compile_definitions / add_compile_definitions is how the ";" of a
    build mode once broke the build: build facts go through the generated header instead."""
    files = [os.path.join(ROOT, "CMakeLists.txt")]
    files += [os.path.join(ROOT, "cmake", f) for f in os.listdir(os.path.join(ROOT, "cmake")) if f.endswith(".cmake")]
    offenders = []
    for path in files:
        text = open(path).read()
        for m in re.finditer(
            r"(target_compile_definitions|add_compile_definitions|add_definitions)\s*\(([^)]*)\)", text
        ):
            if '"' in m.group(2):
                offenders.append(f"{os.path.basename(path)}: {m.group(0)[:80]}")
    assert not offenders, offenders
