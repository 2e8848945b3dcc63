"""--metrics.wandb with this round's other features on (Skill-it mixing, lm-eval tasks during
training): a run killed mid-way and resumed with W&B turned on only then, and then rewound to an
earlier checkpoint with other mixing and task settings; after each, the W&B run named in
RUN/wandb_id (offline) holds every number of metrics.jsonl, and metrics.jsonl is the
uninterrupted run's."""

import json
from pathlib import Path

import pytest

from ember.train.faults import ENV as CRASH_AT
from ember.train.metrics_wandb import ID_FILE, scalars
from tests.evals.local_tasks import write_tasks
from tests.journeys.test_skillit_journeys import skillit
from tests.train.helpers import cli, flags
from tests.train.test_wandb import wandb_history

pytest.importorskip("lm_eval")
pytest.importorskip("wandb")
pytestmark = pytest.mark.slow

ENV = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
TIMING = ("time", "tokens_per_s", "cpu_util", "peak_mem_gib_per_rank")


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def numbers(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows(run_dir)]


def wandb_steps(run_dir: Path) -> dict[int, dict]:
    """{step: values} of the W&B run RUN/wandb_id names, over all its offline files."""
    run_id = (run_dir / ID_FILE).read_text().strip()
    files = sorted((run_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert files, run_id
    return dict(row for f in files for row in wandb_history(f))


def logged(run_dir: Path) -> dict[int, dict]:
    merged = {}
    for r in rows(run_dir):
        merged.setdefault(r["step"], {}).update(scalars(r))
    return merged


def test_wandb_turned_on_at_a_resume_and_a_rewind_hold_the_whole_history(tmp_path):
    tasks = write_tasks(tmp_path / "tasks")
    opts = skillit(
        tmp_path,
        "--checkpoint.every=2",
        "--eval.every=3",
        "--eval.tasks=ember_mc,ember_ppl",
        f"--eval.tasks_include_path={tasks}",
        "--eval.tasks_every=3",
    )
    r = cli("train", *flags(tmp_path, "whole", *opts), env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    r = cli("train", *flags(tmp_path, "k", *opts), env={**ENV, CRASH_AT: "step:5"})
    assert r.returncode == -9, r.stderr[-3000:]
    r = cli("train", *flags(tmp_path, "k", *opts, "--checkpoint.resume=latest", "--metrics.wandb=true"), env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "k"
    assert numbers(run) == numbers(tmp_path / "whole")  # mix/, task/, val_loss rows bit for bit
    assert wandb_steps(run) == logged(run) and sorted(logged(run)) == list(range(7))
    first = (run / ID_FILE).read_text()
    rewind = [f"--checkpoint.resume={run}/checkpoints/step-00000004", "--metrics.wandb=true"]
    other = ["--data.mixing_eta=4", "--eval.tasks_every=2"]  # settings a resume may change
    r = cli("train", *flags(tmp_path, "k", *opts, *rewind, *other), env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (run / ID_FILE).read_text() != first
    assert wandb_steps(run) == logged(run) and sorted(logged(run)) == list(range(7))
    kept, whole = numbers(run), numbers(tmp_path / "whole")
    assert [r for r in kept if r["step"] <= 4] == [r for r in whole if r["step"] <= 4]
    assert kept[-1]["step"] == 6 and any(k.startswith("task/") for k in kept[-1])
    mix = [r for r in kept if r["step"] == 6 and any(k.startswith("mix/") for k in r)]
    assert mix and mix != [r for r in whole if r["step"] == 6 and any(k.startswith("mix/") for k in r)]
