"""lm-evaluation-harness through `ember`: `ember train` then `ember eval RUN --tasks` on tasks
defined in local files gives lm-eval's own `--model hf` numbers on the folder `ember export`
writes (a byte run and a run on a Hugging Face tokenizer); `--eval.tasks` logs task rows while
training, the same at one and two ranks (DDP and FSDP); `python -m ember.evals` is lm-eval's
command line with the model `ember`; misuse is refused before a model loads or a run folder
is made."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ember.cli import main as ember_main
from tests.evals.local_tasks import write_tasks
from tests.journeys.test_data_journeys import CODE, jsonl, tokenizer_folder
from tests.train.helpers import cli, cli_env, flags, losses, run
from tests.train.helpers import SMALL as BASE

pytest.importorskip("lm_eval")
pytestmark = pytest.mark.slow

SMALL = [*BASE, "--training.steps=4"]
TASKS = "ember_mc,ember_ppl"
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture
def offline(monkeypatch):
    for k, v in OFFLINE.items():
        monkeypatch.setenv(k, v)


def numbers(resps) -> list[float]:
    """The log-likelihoods (and greedy flags, as 0/1) in a logged sample's responses."""
    if isinstance(resps, (list, tuple)):
        return [x for r in resps for x in numbers(r)]
    return [float(resps)]


def task_rows(run_dir: Path) -> dict[int, dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {
        r["step"]: {k: v for k, v in r.items() if k.startswith("task/")}
        for r in rows
        if any(k.startswith("task/") for k in r)
    }


def assert_same(got: dict, want: dict, rel: float = 1e-5) -> None:
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] == (v if "acc" in k else pytest.approx(v, rel=rel)), k


def train_byte(tmp: Path, name: str = "r") -> Path:
    assert ember_main(["train", *SMALL, f"--job.dir={tmp}", f"--job.name={name}"]) == 0
    return tmp / name


def train_bpe(tmp: Path) -> Path:
    folder = tokenizer_folder(tmp / "tok", CODE)
    jsonl(tmp / "corpus" / "code.jsonl", CODE)
    assert ember_main(["prepare", str(tmp / "corpus"), "--out", str(tmp / "data"), "--tokenizer", str(folder)]) == 0
    assert ember_main(["train", *SMALL, f"--job.dir={tmp}", "--job.name=r", f"--data.sources={tmp / 'data'}"]) == 0
    return tmp / "r"


@pytest.mark.parametrize("make_run", [train_byte, train_bpe], ids=["byte", "hf-tokenizer"])
def test_ember_eval_equals_lm_evals_hf_model_on_the_exported_folder(tmp_path, offline, make_run, capsys):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from ember.evals.tasks import task_values

    tasks, run_dir = write_tasks(tmp_path / "tasks"), make_run(tmp_path)
    out = tmp_path / "eval.json"
    argv = ["eval", str(run_dir), "--tasks", TASKS, "--include-path", str(tasks), "--output", str(out)]
    assert ember_main(argv) == 0
    assert "ember_mc" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert ember_main(["export", str(run_dir), str(tmp_path / "hf")]) == 0
    manager = TaskManager(include_path=str(tasks), include_defaults=False)
    kw = dict(tasks=TASKS.split(","), task_manager=manager, log_samples=True, batch_size=4, device="cpu")
    hf = simple_evaluate(model="hf", model_args=f"pretrained={tmp_path / 'hf'},dtype=float32", **kw)
    ours = simple_evaluate(model="ember", model_args=f"run={run_dir}", **kw)  # the name lm-eval knows
    assert_same(report["tasks"], task_values(hf))
    assert_same(task_values(ours), task_values(hf))
    for task in TASKS.split(","):
        theirs = {s["doc_id"]: numbers(s["resps"]) for s in hf["samples"][task]}
        mine = {s["doc_id"]: numbers(s["resps"]) for s in ours["samples"][task]}
        assert mine.keys() == theirs.keys() and len(mine) > 2
        for doc, values in theirs.items():
            assert mine[doc] == pytest.approx(values, abs=1e-4), (task, doc)


def test_eval_tasks_during_training_log_task_rows_and_a_plot(tmp_path, offline):
    tasks = write_tasks(tmp_path / "tasks")
    extra = [
        f"--eval.tasks={TASKS}",
        f"--eval.tasks_include_path={tasks}",
        "--eval.tasks_every=3",
        "--metrics.plot=true",
    ]
    assert ember_main(["train", *SMALL, "--training.steps=6", f"--job.dir={tmp_path}", "--job.name=r", *extra]) == 0
    rows = task_rows(tmp_path / "r")
    assert sorted(rows) == [0, 3, 6]
    assert set(rows[6]) == {f"task/ember_mc/{m}" for m in ("acc", "acc_norm")} | {
        f"task/ember_ppl/{m}" for m in ("word_perplexity", "bits_per_byte")
    }
    assert all(isinstance(v, float) and math.isfinite(v) for r in rows.values() for v in r.values())
    assert rows[0] != rows[6]  # the model changed, and so did its numbers
    assert (tmp_path / "r" / "tasks.png").is_file()
    assert ember_main(["train", *SMALL, "--training.steps=6", f"--job.dir={tmp_path}", "--job.name=plain"]) == 0
    assert losses(tmp_path / "r") == losses(tmp_path / "plain")  # evaluating changed nothing of the training
    out = tmp_path / "eval.json"  # the last step's row is what `ember eval` says of the final checkpoint
    assert (
        ember_main(["eval", str(tmp_path / "r"), "--tasks", TASKS, "--include-path", str(tasks), "--output", str(out)])
        == 0
    )
    assert_same(rows[6], {k: v for k, v in json.loads(out.read_text())["tasks"].items() if "stderr" not in k}, rel=1e-6)


def test_task_rows_are_the_same_at_one_and_two_ranks(tmp_path, offline):
    tasks = write_tasks(tmp_path / "tasks")
    opts = ("--training.steps=2", f"--eval.tasks={TASKS}", f"--eval.tasks_include_path={tasks}", "--eval.tasks_every=2")
    run(tmp_path, "one", *opts)
    want = task_rows(tmp_path / "one")
    assert sorted(want) == [0, 2]
    for name, parallel in (("ddp", "ddp"), ("fsdp", "fsdp")):
        r = cli("train", *flags(tmp_path, name, *opts, f"--training.parallel={parallel}"), nproc=2, env=OFFLINE)
        assert r.returncode == 0, r.stderr[-3000:]
        got = task_rows(tmp_path / name)
        assert sorted(got) == [0, 2], name
        for step in want:
            assert_same(got[step], want[step])


def test_python_m_ember_evals_is_lm_evals_command_line_with_the_ember_model(tmp_path):
    tasks, run_dir = write_tasks(tmp_path / "tasks"), train_byte(tmp_path)
    cmd = [sys.executable, "-m", "ember.evals", "run", "--model", "ember", "--model_args", f"run={run_dir}"]
    cmd += ["--tasks", "ember_mc", "--include_path", str(tasks), "--device", "cpu", "--limit", "3"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=cli_env(**OFFLINE))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ember_mc" in r.stdout and "acc_norm" in r.stdout


def test_misused_task_flags_are_refused_before_anything_loads(tmp_path, capsys, offline):
    tasks, run_dir = write_tasks(tmp_path / "tasks"), train_byte(tmp_path)
    capsys.readouterr()
    cases = [
        (["--tasks", "ember_mcq", "--include-path", str(tasks)], "unknown task 'ember_mcq' in .* \\(close: ember_mc"),
        (["--tasks", "ember_mc", "--include-path", str(tmp_path / "none")], "none: not a folder"),
        (["--limit", "3"], "--limit needs --tasks"),
        (["--tasks", "ember_mc", "--data.sources=stdlib"], "--data.sources does not apply with --tasks"),
        (["--tasks", "ember_mc", "--include-path", str(tasks), "--limit", "0"], "--limit must be >= 1"),
        (
            ["--tasks", "ember_mc", "--output", str(tmp_path / "no" / "x.json")],
            "--output .*: not a file in an existing",
        ),
    ]
    for extra, message in cases:
        assert ember_main(["eval", str(run_dir), *extra]) == 1, extra
        err = capsys.readouterr().err
        assert err.startswith("ember eval: error: ") and re.search(message, err), (extra, err)
    bad = ["--eval.tasks=ember_mcq", f"--eval.tasks_include_path={tasks}"]
    assert ember_main(["train", *SMALL, f"--job.dir={tmp_path}", "--job.name=never", *bad]) == 1
    assert "config: eval.tasks: unknown task 'ember_mcq'" in capsys.readouterr().err
    broken = tmp_path / "broken"  # a task whose data file is gone
    broken.mkdir()
    (broken / "gone.yaml").write_text(
        (tasks / "ember_mc.yaml").read_text().replace("ember_mc", "gone").replace("mc.jsonl", "no.jsonl")
    )
    bad = ["--eval.tasks=gone", f"--eval.tasks_include_path={broken}"]
    assert ember_main(["train", *SMALL, f"--job.dir={tmp_path}", "--job.name=never", *bad]) == 1
    assert "config: eval.tasks: task 'gone' cannot be loaded" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_a_rewound_run_logs_each_steps_task_row_once(tmp_path, offline):
    tasks = write_tasks(tmp_path / "tasks")
    opts = [*SMALL, "--training.steps=6", f"--job.dir={tmp_path}", "--job.name=r", "--checkpoint.every=2"]
    opts += [
        f"--eval.tasks={TASKS}",
        f"--eval.tasks_include_path={tasks}",
        "--eval.tasks_every=2",
        "--checkpoint.keep=0",
    ]
    assert ember_main(["train", *opts]) == 0
    first = task_rows(tmp_path / "r")
    assert sorted(first) == [0, 2, 4, 6]
    rewind = f"--checkpoint.resume={tmp_path / 'r' / 'checkpoints' / 'step-00000002'}"
    assert ember_main(["train", *opts, rewind]) == 0
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "task/ember_mc/acc" in r] == [0, 2, 4, 6]  # the rewound ones were cut
    again = task_rows(tmp_path / "r")
    for step in first:
        assert_same(again[step], first[step])
