"""Lint and format, in seconds: ruff's checks and its formatter over the Python files (the rules
and the line length are pyproject.toml's [tool.ruff]), clang-format over the C++ and CUDA files
(.clang-format). Both come with the test extra, pinned: another version may format differently."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(*args: str) -> subprocess.CompletedProcess:
    if shutil.which(args[0]) is None:
        pytest.skip(f"{args[0]} is not installed (pip install -e '.[test]')")
    return subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_ruff_check():
    r = _tool("ruff", "check", ".")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-1000:]


def test_ruff_format():
    r = _tool("ruff", "format", "--check", ".")
    assert r.returncode == 0, "run `ruff format .`:\n" + r.stdout[-3000:] + r.stderr[-1000:]


def test_clang_format():
    files = subprocess.run(
        ["git", "ls-files", "*.h", "*.cpp", "*.cu", "*.cuh"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    r = _tool("clang-format", "--dry-run", "-Werror", *files)
    assert r.returncode == 0, "run `clang-format -i` on:\n" + r.stderr[-3000:]
