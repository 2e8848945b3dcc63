"""The kernel selftest misused: a device it cannot check (meta, an absent GPU) refused instead of
"passing" with every kernel skipped; a family given as one string or none at all; a misspelt
EMBER_SELFTEST_INJECT refused rather than ignored; `ember selftest --json` at a folder refused
before the kernels run; under torchrun with --training.kernel_fallback, a kernel that failed on
one rank takes the reference path on every rank and is recorded by the rank that writes the run
folder."""

import contextlib

import pytest
import torch

import ember
from ember import cli, kernels
from ember.kernel_check import runner, training


pytestmark = pytest.mark.usefixtures("isolated_selftest")  # tests/conftest.py


@pytest.fixture
def no_run(monkeypatch):
    """The refusals must come before any kernel runs."""

    def refuse(*a, **k):
        raise AssertionError("the selftest ran before refusing")

    monkeypatch.setattr(runner, "run", refuse)


@pytest.mark.parametrize("device", ["meta", torch.device("meta"), "mps", "cuda:abc", "gpu"])
def test_a_device_the_selftest_cannot_check_is_refused(no_run, device):
    with pytest.raises(ValueError, match="ember.selftest: device must be cpu or cuda"):
        ember.selftest(device=device)  # a device string torch cannot read is refused alike


@pytest.mark.skipif(torch.cuda.device_count() > 1, reason="needs a machine with fewer than two GPUs")
def test_an_absent_gpu_is_refused_clearly(no_run):
    with pytest.raises(ValueError, match=r"ember.selftest: device cuda:1: .*GPU"):
        ember.selftest(device="cuda:1")


def test_a_family_given_as_a_string_and_an_empty_list(no_run):
    with pytest.raises(ValueError, match="ember.selftest: families is empty"):
        ember.selftest([], "cpu")
    with pytest.raises(ValueError, match="unknown family flaot8 "):
        ember.selftest("flaot8", "cpu")


def test_a_family_given_as_a_string_is_that_family():
    report = ember.selftest("apollo", torch.device("cpu"), save=False)
    assert {r.name.split(".")[0] for r in report.results} == {"apollo"} and report.ok


def test_a_misspelt_injection_is_refused(monkeypatch, no_run):
    monkeypatch.setenv("EMBER_SELFTEST_INJECT", "cross_entropy.row")
    with pytest.raises(ValueError, match="EMBER_SELFTEST_INJECT: unknown kernel name.*cross_entropy.row"):
        ember.selftest(["cross_entropy"], "cpu")


@pytest.mark.parametrize("where", ["folder", "missing/parent/report.json"])
def test_json_at_a_folder_or_a_missing_parent_is_refused_first(tmp_path, capsys, no_run, where):
    target = tmp_path if where == "folder" else tmp_path / where
    assert cli.main(["selftest", "--device", "cpu", "--json", str(target)]) == 1
    assert "ember selftest: error: --json" in capsys.readouterr().err


class TwoRanks:
    """Rank 0 of two (the one that writes the run folder); the other rank failed `theirs`."""

    def __init__(self, names, theirs):
        self.device, self.is_main, self.rank, self.world_size = torch.device("cpu"), True, 0, 2
        self.other = torch.tensor([float(n in theirs) for n in names], dtype=torch.float64)

    def per_rank(self, value):
        return [value, 0.0]  # the other rank did not refuse: it fell back

    def all_sum(self, values):
        t = torch.as_tensor(values, dtype=torch.float64)
        return t + (self.other if t.numel() == self.other.numel() else 0)


def test_a_kernel_failed_on_another_rank_falls_back_here_too(tmp_path):
    names = [k.name for k in ember.kernel_check.kernels_of(["cross_entropy"], "cpu")]
    check = training.check_on_every_rank(["cross_entropy"], TwoRanks(names, {"cross_entropy.rows"}), True)
    assert check.fallback == ["cross_entropy.rows"] and kernels.disabled("cross_entropy.rows")
    check.record(tmp_path)
    assert (tmp_path / training.FALLBACK_FILE).exists()


@contextlib.contextmanager
def in_float64():
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize(
    "context",
    [torch.inference_mode, lambda: torch.autocast("cpu", dtype=torch.bfloat16), in_float64],
    ids=["inference_mode", "autocast", "default_float64"],
)
def test_the_callers_modes_do_not_fail_a_kernel(context):
    """A selftest called inside inference_mode, autocast or a float64 default dtype checks the
    kernels as the trainer calls them (it cached false failures the next `ember train` refused on),
    and leaves the mode as it was."""
    with context():
        before = (torch.is_inference_mode_enabled(), torch.is_autocast_enabled("cpu"), torch.get_default_dtype())
        report = ember.selftest(["float8", "cross_entropy", "apollo"], "cpu", save=False)
        after = (torch.is_inference_mode_enabled(), torch.is_autocast_enabled("cpu"), torch.get_default_dtype())
    assert report.ok, report.failed()
    assert before == after


def test_a_failed_kernel_the_user_disabled_does_not_stop_the_run(monkeypatch, tmp_path):
    """EMBER_DISABLE_KERNELS already keeps the run off it: no refusal, no fallback to record; a
    failed kernel the user did not disable still refuses."""
    monkeypatch.setenv("EMBER_SELFTEST_INJECT", "cross_entropy.rows")
    monkeypatch.setenv("EMBER_DISABLE_KERNELS", "cross_entropy.rows")
    kernels.registry().set(["cross_entropy.rows"])  # as read at import
    check = training.check_kernels(["cross_entropy"], torch.device("cpu"), fallback=False, verbose=False)
    assert check.fallback == [] and check.report.failed() == ["cross_entropy.rows"]
    monkeypatch.delenv("EMBER_DISABLE_KERNELS")  # disabled by an earlier fallback in this process: still refused
    with pytest.raises(training.KernelCheckFailed, match="kernel cross_entropy.rows failed"):
        training.check_kernels(["cross_entropy"], torch.device("cpu"), fallback=False, verbose=False)
    monkeypatch.setenv("EMBER_DISABLE_KERNELS", "sparse.grouped")
    kernels.registry().set(["sparse.grouped"])
    with pytest.raises(training.KernelCheckFailed, match="kernel cross_entropy.rows failed"):
        training.check_kernels(["cross_entropy"], torch.device("cpu"), fallback=False, verbose=False)


def test_a_family_name_in_the_disabled_kernels_names_its_kernels():
    """EMBER_DISABLE_KERNELS=float8 (a family, not a kernel) is refused with the names to write instead."""
    with pytest.raises(ValueError, match=r"float8 is a family: its kernels are float8\.quantize\.tensor, "):
        kernels.DisabledKernels(["float8"])


def test_a_rank_whose_check_crashes_still_meets_the_others(monkeypatch):
    """Any error in one rank's check (not only a failed kernel) is raised after the collective that
    tells the other ranks, so they refuse instead of waiting for it forever."""
    met = []

    class Ranks(TwoRanks):
        def per_rank(self, value):
            met.append(value)
            return [value, 0.0]

    def crash(*a, **k):
        raise RuntimeError("a driver error")

    monkeypatch.setattr(training, "check_kernels", crash)
    with pytest.raises(RuntimeError, match="a driver error"):
        training.check_on_every_rank(["apollo"], Ranks([], set()), False)
    assert met == [1.0]


def test_a_cache_that_cannot_be_written_is_said(monkeypatch, tmp_path):
    """A cache folder that cannot be made: the report still comes, with a warning that later runs
    will check again (a silent miss made every `ember train` re-check without a word)."""
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("EMBER_SELFTEST_CACHE", str(tmp_path / "file" / "cache"))
    with pytest.warns(RuntimeWarning, match="ember.selftest: could not write its cache"):
        report = ember.selftest(["apollo"], "cpu")
    assert report.ok


@pytest.mark.parametrize("text", ["", '{"device": "cpu", "resu', "[]", "null", '{"device": "cpu", "device_name": "x"'])
def test_a_damaged_cache_file_is_checked_again(text):
    """A truncated or foreign cache file is no result (the kernels are checked again), not a crash."""
    from ember.kernel_check import cache

    path = cache.path_of(cache.key_of(torch.device("cpu")))
    path.parent.mkdir(parents=True)
    path.write_text(text)
    assert cache.load(torch.device("cpu")) is None


def test_the_json_report_of_a_kernel_that_raised_is_standard_json(monkeypatch):
    """A kernel that raises has no error number: the report writes null, not NaN (which jq and
    other strict JSON readers reject), and reads back as a failure."""
    import json

    from ember.kernel_check.report import Report

    def raises(device):
        raise RuntimeError("no kernel image is available")

    monkeypatch.setitem(runner.CASES, "apollo.projection", raises)
    report = ember.selftest(["apollo"], "cpu", save=False)
    text = json.dumps(report.to_dict(), allow_nan=False)
    back = Report.from_dict(json.loads(text))
    assert back.failed() == ["apollo.projection"] and back.result("apollo.projection").error != 0


def test_a_kernel_whose_case_compared_nothing_does_not_pass(monkeypatch):
    """A case that returns no comparison has checked nothing: that is no pass for the trainer to trust."""
    monkeypatch.setitem(runner.CASES, "apollo.projection", lambda device: [])
    report = ember.selftest(["apollo"], "cpu", save=False)
    assert report.failed() == ["apollo.projection"] and "no comparison" in report.result("apollo.projection").detail


def test_a_finite_result_where_the_reference_is_infinite_fails():
    """Only the finite elements are compared by size; an infinity the kernel missed is an error."""
    from ember.kernel_check.compare import Compare

    want = torch.tensor([1.0, float("inf"), -float("inf")])
    for got in (torch.tensor([1.0, 3e38, -float("inf")]), torch.tensor([1.0, float("inf"), 0.0])):
        assert Compare("x", got, want, 0.1).error()[0] == float("inf")
    assert Compare("x", want.clone(), want, 0.1).error()[0] == 0


def test_the_cache_key_follows_the_python_side_of_the_kernels(monkeypatch):
    """An editable install changes the ops' wrappers or the selftest's cases without a rebuild: the
    results cached for the old code must not answer for the new."""
    from ember.kernel_check import cache

    before = cache.path_of(cache.key_of(torch.device("cpu")))
    monkeypatch.setattr(cache, "_source_digest", lambda: "another")
    assert cache.path_of(cache.key_of(torch.device("cpu"))) != before


def test_a_resumed_run_that_skips_the_check_keeps_the_earlier_fallback(tmp_path):
    """--training.selftest=false on resume: the kernels the run's earlier part fell back from stay
    on the reference path (the check that found them failing is what was skipped)."""
    import json

    (tmp_path / training.FALLBACK_FILE).write_text(json.dumps({"disabled": ["cross_entropy.rows"]}))
    assert training.keep_earlier_fallback(tmp_path) == ["cross_entropy.rows"]
    assert kernels.disabled("cross_entropy.rows")
    assert training.keep_earlier_fallback(tmp_path / "nothing") == []


@pytest.mark.slow
def test_resuming_a_fallback_run_without_the_check_says_it_keeps_the_fallback(tmp_path):
    from tests.train.helpers import TINY, cli

    def train(*extra, **environ):
        flags = [*TINY, f"--job.dir={tmp_path}", "--job.name=r", "--checkpoint.every=1", *extra]
        return cli("train", *flags, env={"EMBER_SELFTEST_CACHE": str(tmp_path / "cache"), **environ})

    first = train("--training.steps=1", "--training.kernel_fallback=true", EMBER_SELFTEST_INJECT="cross_entropy.rows")
    assert first.returncode == 0, first.stderr
    resumed = train("--training.steps=2", "--checkpoint.resume=latest", "--training.selftest=false")
    assert resumed.returncode == 0, resumed.stderr
    assert "cross_entropy.rows" in resumed.stderr and "reference path" in resumed.stderr


@pytest.mark.filterwarnings("ignore:ember.selftest. could not write its cache")  # write_json refuses the cache too
def test_json_that_cannot_be_written_is_an_error_not_a_traceback(tmp_path, capsys, monkeypatch):
    """A --json the kernels' results cannot be written to (permissions, a full disk): the report is
    printed, then a one-line error and exit status 1."""
    from ember import atomic

    def refuse(path, obj, indent=1):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(atomic, "write_json", refuse)
    argv = ["selftest", "--device", "cpu", "--family", "apollo", "--json", str(tmp_path / "r.json")]
    assert cli.main(argv) == 1
    out = capsys.readouterr()
    assert "ember selftest on cpu" in out.out and "ember selftest: error: --json" in out.err
