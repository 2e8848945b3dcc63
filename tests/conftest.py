import os

import pytest
import torch
from hypothesis import settings

import ember

settings.register_profile("default", deadline=None, max_examples=30, derandomize=False)
settings.register_profile("ci", deadline=None, max_examples=30, derandomize=True)
# Depth on demand, e.g. for the fuzz suite: python -m pytest tests/fuzz --hypothesis-profile=deep
settings.register_profile("deep", deadline=None, max_examples=1000)
# Few examples, for runs under compute-sanitizer (bench/device_check.sh)
settings.register_profile("memcheck", deadline=None, max_examples=8, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


def pytest_addoption(parser):
    parser.addoption(
        "--cuda-library",
        default=None,
        help="a CUDA build's ember _C library whose machine code tests/test_build.py checks "
        "(default: the installed library, when it was built with CUDA)",
    )


DEVICES = ["cpu"] + (["cuda"] if ember.cuda_available() else [])


def poison_cuda_allocator():
    """Fill the caching allocator's free blocks with 0xFF (NaN as fp8 and as fp32), so that an
    op's freshly allocated outputs start poisoned and an element a kernel forgot to write shows."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    for nbytes in (1 << 20, 256 << 20):  # the small-block and large-block pools
        torch.full((nbytes,), 0xFF, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()


@pytest.fixture(params=DEVICES)
def device(request):
    """Runs a test on the CPU and, when ember's CUDA kernels and a GPU are there, on CUDA."""
    if request.param == "cuda":
        poison_cuda_allocator()
    return request.param


@pytest.fixture
def isolated_selftest(tmp_path, monkeypatch):
    """For the kernel self-check's tests: a cache folder of the test's own, no injected failure,
    and the disabled-kernel registry left as found."""
    from ember import kernels

    monkeypatch.setenv("EMBER_SELFTEST_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EMBER_SELFTEST_INJECT", raising=False)
    saved = kernels.registry().names()
    yield
    kernels.registry().set(saved)
