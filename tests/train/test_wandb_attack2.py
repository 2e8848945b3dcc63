"""--metrics.wandb as users meet it: a W&B run that starts after the run's first steps (a rewind,
or W&B turned on at a resume) holds the steps before it too, as metrics.jsonl does; W&B that
cannot start a run (no login, no network) stops `ember train` with one line, not a traceback."""

import dataclasses
import importlib.machinery
import json
import sys

import pytest

from ember.cli import main as ember_main
from ember.train.metrics_wandb import ID_FILE, scalars

from .test_wandb import ROWS, SMALL, FakeWandb, logger


@pytest.fixture
def fake_wandb(monkeypatch):
    fake = FakeWandb()
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)  # preflight finds it installed
    monkeypatch.setitem(sys.modules, "wandb", fake)
    return fake


def kept(run_dir, rows):
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_new_wandb_run_of_a_resumed_history_holds_its_earlier_steps(tmp_path, fake_wandb):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    kept(run_dir, ROWS[:2])  # the history up to the checkpoint (trimmed by the trainer)
    log = logger(run_dir, resume=True)  # W&B turned on at this resume: no RUN/wandb_id yet
    log.record(ROWS[2])
    log.close()
    assert fake_wandb.logged == [(r["step"], scalars(r)) for r in ROWS]
    # a resume that continues that W&B run logs only its own steps
    log = logger(run_dir, resume=True)
    log.record({"step": 3, "loss": 5.2})
    log.close()
    assert fake_wandb.logged[3:] == [(3, {"loss": 5.2})]
    # a rewind (the trainer says resume=False) starts another W&B run, with the kept steps again
    kept(run_dir, ROWS[:1])
    logger(run_dir, resume=False).close()
    assert fake_wandb.logged[4:] == [(0, scalars(ROWS[0]))]
    assert len({i["id"] for i in fake_wandb.inits}) == 2


def test_wandb_that_cannot_start_a_run_stops_train_with_one_line(tmp_path, fake_wandb, capsys):
    def refuse(**kw):
        raise RuntimeError("No API key configured. Use `wandb login` to log in.")

    fake_wandb.init = refuse
    args = ["train", *SMALL, "--training.steps=1", f"--job.dir={tmp_path}", "--job.name=r", "--metrics.wandb=true"]
    assert ember_main(args) == 1
    err = capsys.readouterr().err
    assert "ember train: error: metrics.wandb:" in err and "wandb login" in err and "WANDB_MODE=offline" in err
    assert not (tmp_path / "r" / ID_FILE).exists()  # no id of a W&B run that never started


def test_a_resume_continues_the_wandb_run_only_its_checkpoint_logged_to():
    from ember.train.config import Config
    from ember.train.trainer import _wandb

    on = dataclasses.replace(Config(), metrics=dataclasses.replace(Config().metrics, wandb=True))
    assert _wandb(Config(), on.to_dict()) is None
    assert _wandb(on, on.to_dict())["resume"]  # W&B on before and now, the same project
    assert not _wandb(on, None)["resume"]  # a fresh run, a rewind
    assert not _wandb(on, Config().to_dict())["resume"]  # its checkpoint was written with W&B off: steps missing
    elsewhere = dataclasses.replace(on, metrics=dataclasses.replace(on.metrics, wandb_project="other"))
    assert not _wandb(elsewhere, on.to_dict())["resume"]  # another project: another W&B run, given every step
