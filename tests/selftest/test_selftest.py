"""The kernels' selftest on the CPU: every kernel of the four families listed and passing; an
injected failure caught in each family; a disabled kernel's calls taking the reference path; the
cache that lets a second check start at once; the trainer's refusal and fallback."""

import re
from pathlib import Path

import pytest
import torch

import ember
from ember import env, kernels
from ember.kernel_check import FAMILIES, KERNELS, cache, runner, training
from ember.kernel_check.training import KernelCheckFailed

# one kernel of each family whose calls the Python wrappers route (no rebuild needed to disable it)
ONE_PER_FAMILY = {
    "float8": "float8.quantize.row",
    "cross_entropy": "cross_entropy.rows",
    "apollo": "apollo.step.fp32",
    "sparse": "sparse.bitmask_tiled",
}


pytestmark = pytest.mark.usefixtures("isolated_selftest")  # tests/conftest.py


def test_cpu_selftest_lists_every_kernel_and_passes():
    report = ember.selftest(device="cpu", save=False)
    assert [r.name for r in report.results] == list(KERNELS)
    assert {k.split(".")[0] for k in KERNELS} == set(FAMILIES)
    for r in report.results:
        assert r.status == ("pass" if "cpu" in KERNELS[r.name].devices else "skip"), r.line()
    assert report.ok and set(runner.CASES) == set(KERNELS)


@pytest.mark.parametrize("family, name", ONE_PER_FAMILY.items())
def test_injected_failure_is_caught(monkeypatch, family, name):
    monkeypatch.setenv("EMBER_SELFTEST_INJECT", name)
    report = ember.selftest([family], "cpu")
    assert report.failed() == [name]
    r = report.result(name)
    assert r.error > r.tolerance and name in "\n".join(report.lines())
    assert not cache.path_of(cache.key_of(torch.device("cpu"))).exists()  # an injected result is not cached


def test_disabled_kernels_take_the_reference_path():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(9, 40, generator=g), torch.randn(24, 40, generator=g)
    mask, z, y = torch.rand(24, 40, generator=g) < 0.5, torch.randn(9, 33, generator=g), torch.arange(9)
    calls = {
        "float8.quantize.row": lambda: ember.ops.quantize_fp8(x, granularity="row")[0].float(),
        "cross_entropy.rows": lambda: ember.ops.cross_entropy(z, y, reduction="none"),
        "sparse.bitmask_tiled": lambda: ember.ops.masked_linear(x, w, mask),
        "apollo.projection": lambda: ember.ops.apollo_projection(4, 40, seed=3),
    }
    for name, call in calls.items():
        kernel = call()
        kernels.registry().set([name])
        routed = call()
        kernels.registry().set([])
        torch.testing.assert_close(routed, kernel, rtol=1e-5, atol=1e-6, msg=name)


def test_a_disabled_apollo_step_follows_the_rule():
    g = torch.Generator().manual_seed(1)
    w0, grads = torch.randn(19, 37, generator=g), [torch.randn(19, 37, generator=g) for _ in range(3)]
    hyper = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.1, scale=1.0, tensor_scale=False)
    hyper.update(norm_growth_limit=1.01, rank=4, update_proj_gap=2, seed=0, stochastic_rounding=False)
    results = []
    for disabled in ([], ["apollo.step.fp32"]):
        kernels.registry().set(disabled)
        w, m, v, n = w0.clone(), torch.zeros(37, 4), torch.zeros(37, 4), torch.zeros(())
        for t, gr in enumerate(grads, 1):
            ember.ops.apollo_step_([w], [gr], [m], [v], [n], [t], [0], **hyper)
        results.append(w)
    assert (results[1] - results[0]).norm() / results[0].norm() < 1e-6


def test_info_shows_the_cached_result(capsys):
    from ember.cli import main

    assert main(["info"]) == 0
    assert "cpu      not checked yet" in capsys.readouterr().out
    ember.selftest(["apollo"], "cpu")
    assert main(["info"]) == 0
    assert "cpu      3 passed, 0 failed" in capsys.readouterr().out


def test_unknown_kernel_names_are_refused():
    with pytest.raises(ValueError, match=r"unknown kernel name\(s\) float8\.nope"):
        kernels.DisabledKernels(["float8.nope"])


def test_the_cache_spares_a_second_check(monkeypatch):
    first = training.check_kernels(["apollo"], torch.device("cpu"), fallback=False, verbose=False)
    assert not first.report.cached and first.report.ok
    assert cache.path_of(cache.key_of(torch.device("cpu"))).is_file()

    def not_again(*args):
        raise AssertionError("the kernels were checked again")

    monkeypatch.setattr(runner, "run", not_again)
    second = training.check_kernels(["apollo"], torch.device("cpu"), fallback=False, verbose=False)
    assert second.report.cached and [r.name for r in second.report.results] == [r.name for r in first.report.results]
    # another card (or build, or driver) has another key: checked again
    monkeypatch.setattr(cache, "device_name", lambda device: "another card")
    with pytest.raises(AssertionError, match="checked again"):
        training.check_kernels(["apollo"], torch.device("cpu"), fallback=False, verbose=False)


def test_the_trainer_check_refuses_or_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBER_SELFTEST_INJECT", "cross_entropy.rows")
    with pytest.raises(KernelCheckFailed, match=r"kernel cross_entropy\.rows failed its selftest on cpu .*error"):
        training.check_kernels(["cross_entropy"], torch.device("cpu"), fallback=False, verbose=False)
    assert "cross_entropy.rows" not in kernels.registry()
    with pytest.warns(RuntimeWarning, match="reference path"):
        check = training.check_kernels(["cross_entropy"], torch.device("cpu"), fallback=True, verbose=False)
    assert check.fallback == ["cross_entropy.rows"] and kernels.disabled("cross_entropy.rows")
    check.record(tmp_path)
    assert "cross_entropy.rows" in (tmp_path / training.FALLBACK_FILE).read_text()


def test_every_ember_switch_is_declared_and_python_reads_them_through_env():
    package = Path(ember.__file__).parent
    for path in package.rglob("*.py"):
        if path.name != "env.py":
            assert not re.search(r"environ[^\n]*\"EMBER_", path.read_text()), f"{path} reads an EMBER_ switch itself"
    native = {
        name
        for folder in ("csrc", "bindings")
        for path in (package.parents[1] / folder).rglob("*")
        if path.is_file()
        for name in re.findall(r'"(EMBER_[A-Z0-9_]+)"', path.read_text())
    }
    assert native and native <= set(env.SWITCHES), native - set(env.SWITCHES)


def test_the_native_library_declares_its_switches_in_one_header():
    """csrc/env_switches.h lists exactly the switches env.py says the native library reads, and
    nothing else in the C++ calls getenv."""
    root = Path(ember.__file__).parents[2]
    header = (root / "csrc" / "env_switches.h").read_text()
    declared = set(re.findall(r'\{"(EMBER_[A-Z0-9_]+)"', header))
    assert declared == {n for n, s in env.SWITCHES.items() if s.read_by == "native"}
    readers = [
        str(path.relative_to(root))
        for folder in ("csrc", "bindings", "include")
        for path in (root / folder).rglob("*")
        if path.is_file() and path.name != "env_switches.h" and "getenv" in path.read_text()
    ]
    assert not readers, readers


@pytest.mark.skipif(not hasattr(ember._C, "set_disabled_kernels"), reason="a native library without the registry")
def test_a_native_dispatcher_takes_its_fallback_for_a_disabled_kernel(monkeypatch):
    # linear_cross_entropy's fused gradient (forced on) disabled: the materialized path's result, bit for bit
    g = torch.Generator().manual_seed(0)
    h0, w0, y = torch.randn(37, 48, generator=g), torch.randn(208, 48, generator=g), torch.randint(0, 208, (37,))

    def grads(fused: str):
        monkeypatch.setenv("EMBER_CE_SOFTMAX_GEMM", fused)
        h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
        ember.ops.linear_cross_entropy(h, w, y).backward()
        return h.grad, w.grad

    materialized, fused = grads("0"), grads("1")
    assert not torch.equal(fused[1], materialized[1])  # the two paths round apart
    kernels.registry().set(["cross_entropy.softmax_grad_gemm"])
    assert ember._C.disabled_kernels() == ["cross_entropy.softmax_grad_gemm"]
    assert all(torch.equal(a, b) for a, b in zip(grads("1"), materialized))
    kernels.registry().set([])
    assert ember._C.disabled_kernels() == []


def test_fallback_without_the_selftest_is_refused():
    from ember.train import ConfigError, parse_config
    from ember.train.preflight import check_config

    cfg = parse_config(["--training.selftest=false", "--training.kernel_fallback=true", "--job.device=cpu"])
    with pytest.raises(ConfigError, match="training.kernel_fallback needs training.selftest"):
        check_config(cfg)
