"""The kernel selftest as users meet it: `ember selftest` exits non-zero naming a kernel that
computes wrong (EMBER_SELFTEST_INJECT, the test hook); `ember train` refuses before its run
folder exists, or with --training.kernel_fallback=true trains to the losses of a run with that
kernel disabled (EMBER_DISABLE_KERNELS) and records the fallback; a second run starts without
checking again; on a GPU the whole CUDA selftest passes."""

import json

import pytest

import ember
from tests.train.helpers import TINY, cli, losses

pytestmark = pytest.mark.slow
KERNEL = "cross_entropy.rows"  # the fused head's kernel: every default run calls it


def env(tmp, **extra):
    return {"EMBER_SELFTEST_CACHE": str(tmp / "cache"), **extra}


def train(tmp, name, *extra, **environ):
    return cli("train", *TINY, f"--job.dir={tmp}", f"--job.name={name}", *extra, env=env(tmp, **environ))


def test_selftest_exits_non_zero_naming_the_kernel(tmp_path):
    r = cli("selftest", "--device", "cpu", "--json", str(tmp_path / "report.json"), env=env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "report.json").read_text())["ok"]
    r = cli("selftest", "--family", "cross_entropy", env=env(tmp_path, EMBER_SELFTEST_INJECT=KERNEL))
    assert r.returncode == 1 and f"FAILED: {KERNEL}" in r.stderr
    assert any(line.startswith(KERNEL) and " fail " in line for line in r.stdout.splitlines())


def test_train_refuses_a_failed_kernel_before_its_run_folder_exists(tmp_path):
    r = train(tmp_path, "refused", EMBER_SELFTEST_INJECT=KERNEL)
    assert r.returncode == 1
    assert f"kernel {KERNEL} failed its selftest on cpu" in r.stderr and "Nothing was written" in r.stderr
    assert not (tmp_path / "refused").exists()


def test_every_rank_checks_and_refuses_under_torchrun(tmp_path):
    r = cli(
        "train",
        *TINY,
        f"--job.dir={tmp_path}",
        "--job.name=ranks",
        nproc=2,
        env=env(tmp_path, EMBER_SELFTEST_INJECT=KERNEL),
    )
    assert r.returncode != 0
    assert r.stderr.count(f"kernel {KERNEL} failed its selftest on cpu") == 2  # each rank checked its own device
    assert not (tmp_path / "ranks").exists()


def test_fallback_trains_as_with_the_kernel_disabled(tmp_path):
    r = train(tmp_path, "fallback", "--training.kernel_fallback=true", EMBER_SELFTEST_INJECT=KERNEL)
    assert r.returncode == 0, r.stderr
    assert "WARNING" in r.stderr and KERNEL in r.stderr
    assert json.loads((tmp_path / "fallback" / "kernel_fallback.json").read_text())["disabled"] == [KERNEL]
    r = train(tmp_path, "disabled", EMBER_DISABLE_KERNELS=KERNEL)
    assert r.returncode == 0, r.stderr
    assert losses(tmp_path / "fallback") == losses(tmp_path / "disabled")
    assert not (tmp_path / "disabled" / "kernel_fallback.json").exists()


def test_a_second_run_starts_without_checking_again(tmp_path):
    first = train(tmp_path, "first")
    assert first.returncode == 0, first.stderr
    assert "kernels checked on cpu" in first.stdout
    second = train(tmp_path, "second")
    assert second.returncode == 0, second.stderr
    assert "kernels checked" not in second.stdout


@pytest.mark.skipif(not ember.cuda_available(), reason="needs a GPU")
def test_the_whole_cuda_selftest_passes(tmp_path):
    r = cli("selftest", "--device", "cuda", env=env(tmp_path), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
