"""Resuming as users do it: rewind to an older checkpoint and go on, change a flag on resume,
reuse a run name, start two runs at once, save in the background and be killed. Each gives one
history (one metrics.jsonl, one TensorBoard series, the newest checkpoint of that history) or a
refusal that names the flag before anything is written."""

import datetime
import json
import shutil
import signal
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path

import pytest

from ember.train import ConfigError, parse_config, train
from ember.train import checkpoint as ckpt
from ember.train import resume, trainer
from ember.train.distributed import Dist
from ember.train.faults import ENV as CRASH_AT
from ember.train.preempt import StopSignal
from ember.train.preflight import check_config
from tests.train.helpers import TINY, cli, cli_env, flags, losses, run

EVERY_2 = ("--checkpoint.every=2", "--checkpoint.keep=0", "--lr_scheduler.decay=constant")


def build(tmp: Path, name: str, *extra: str) -> trainer.Trainer:
    """A Trainer set up, built and with its run folder open, not yet trained."""
    cfg = parse_config(flags(tmp, name, *extra))
    check_config(cfg)
    return trainer.Trainer(cfg, Dist(), StopSignal(verbose=False))


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def loss_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in rows(run_dir) if "loss" in r]


def names(run_dir: Path) -> list[str]:
    return [p.name for p in ckpt.checkpoint_dirs(run_dir)]


def step(k: int) -> str:
    return f"step-{k:08d}"


# A value other than the default for every config key: a new key must be added here, and to
# resume.CHANGES or resume.FIXED.
OTHER = {
    "job.name": "other",
    "job.dir": "elsewhere",
    "job.seed": 1,
    "job.deterministic": True,
    "job.device": "cpu",
    "model.name": "60m",
    "model.dim": 32,
    "model.n_layers": 3,
    "model.n_heads": 2,
    "model.n_kv_heads": 1,
    "model.ffn_hidden": 64,
    "model.vocab_size": 300,
    "model.init_from": "hf_model",
    "data.sources": "tokens",
    "data.tokenizer": "tokenizer.json",
    "data.seq_len": 32,
    "data.mixing": "skillit",
    "data.mixing_every": 7,
    "data.mixing_eta": 0.1,
    "data.mixing_batches": 1,
    "data.skills_graph": "graph.json",
    "training.steps": 1000,
    "training.batch_size": 16,
    "training.micro_batch_size": 4,
    "training.max_norm": 0.5,
    "training.dtype": "fp32",
    "training.compile": True,
    "training.activation_checkpointing": True,
    "training.parallel": "fsdp",
    "training.hsdp_shard": 2,
    "training.selftest": False,
    "training.kernel_fallback": True,
    "optimizer.name": "sgd",
    "optimizer.lr": 1e-3,
    "optimizer.betas": "0.8,0.9",
    "optimizer.eps": 1e-6,
    "optimizer.weight_decay": 0.0,
    "optimizer.momentum": 0.5,
    "optimizer.rank": 4,
    "optimizer.scale": 2.0,
    "optimizer.update_proj_gap": 5,
    "lr_scheduler.warmup_steps": 1,
    "lr_scheduler.decay": "linear",
    "lr_scheduler.decay_ratio": 0.5,
    "lr_scheduler.min_lr_ratio": 0.0,
    "loss.fused_linear_ce": False,
    "loss.token_weights": "tokens",
    "loss.distill": 0.5,
    "sparsity.target": 0.5,
    "sparsity.method": "er",
    "sparsity.block": 16,
    "float8.recipe": "tensorwise",
    "float8.all_gather": True,
    "eval.every": 3,
    "eval.batches": 2,
    "eval.tasks": "arc_easy",
    "eval.tasks_every": 5,
    "eval.tasks_include_path": "tasks",
    "eval.tasks_num_fewshot": 2,
    "eval.tasks_limit": 10,
    "eval.batch_size": 4,
    "eval.sources": "held_out",
    "checkpoint.every": 3,
    "checkpoint.keep": 1,
    "checkpoint.resume": "latest",
    "checkpoint.export_safetensors": False,
    "checkpoint.async_save": True,
    "metrics.log_every": 2,
    "metrics.progress": False,
    "metrics.wandb": True,
    "metrics.wandb_project": "other",
    "metrics.tensorboard": False,
    "metrics.plot": False,
}


def test_every_config_key_is_classified_for_resume():
    keys = set(resume.config_keys())
    assert not resume.CHANGES & resume.FIXED
    assert keys == resume.CHANGES | resume.FIXED, "classify the new key in train/resume.py"
    assert keys == set(OTHER), "give the new key a value in OTHER"


@pytest.mark.parametrize("key", sorted(OTHER))
def test_each_flag_changed_on_resume_takes_effect_or_is_refused_by_name(key):
    saved = parse_config([]).to_dict()
    cfg = parse_config([f"--{key}={OTHER[key]}"])
    if key in resume.FIXED:
        with pytest.raises(ConfigError, match=f"--{key}="):
            resume.check_same_run(cfg, saved, 0)
    else:
        resume.check_same_run(cfg, saved, 0)


@pytest.mark.parametrize("optimizer", ["adamw", "apollo"])
def test_optimizer_settings_changed_on_resume_take_effect(tmp_path, optimizer):
    first = ("--training.steps=2", f"--optimizer.name={optimizer}", "--optimizer.rank=8")
    run(tmp_path, "a", *first)
    changed = ("--optimizer.lr=0.001", "--optimizer.weight_decay=0.01", "--optimizer.update_proj_gap=7")
    resumed = build(tmp_path, "a", *first, "--training.steps=4", *changed, "--checkpoint.resume")
    fresh = build(tmp_path, "b", *first, "--training.steps=4", *changed)
    assert resumed.start == 2
    for got, want in zip(resumed.optimizer.param_groups, fresh.optimizer.param_groups):
        assert {k: v for k, v in got.items() if k not in ("params", "lr")} == {
            k: v for k, v in want.items() if k not in ("params", "lr")
        }
        assert got["lr"] == pytest.approx(0.001 * resumed.scheduler.lr_lambdas[0](2))
    assert resumed.scheduler.base_lrs == fresh.scheduler.base_lrs
    toml = (tmp_path / "a" / "config.toml").read_text()
    assert "lr = 0.001" in toml and "weight_decay = 0.01" in toml


def test_a_changed_optimizer_rank_is_refused_before_anything_is_written(tmp_path):
    first = ("--training.steps=2", "--optimizer.name=apollo", "--optimizer.rank=8")
    run(tmp_path, "a", *first)
    before = (tmp_path / "a" / "config.toml").read_text()
    with pytest.raises(ConfigError, match="--optimizer.rank=4 .*the checkpoint's: 8"):
        build(tmp_path, "a", *first, "--training.steps=4", "--optimizer.rank=4", "--checkpoint.resume")
    assert (tmp_path / "a" / "config.toml").read_text() == before
    with pytest.raises(ConfigError, match="training.steps 1 is before the checkpoint's step 2"):
        build(tmp_path, "a", *first, "--training.steps=1", "--checkpoint.resume")


def test_rewind_sets_the_newer_checkpoints_aside_and_latest_continues_the_new_history(tmp_path, capsys):
    first = run(tmp_path, "r", "--training.steps=4", *EVERY_2)
    run_dir = tmp_path / "r"
    assert names(run_dir) == [step(2), step(4)]
    capsys.readouterr()
    # Rewind to step 2 and stop at 3 (a run killed after step 3 leaves the same).
    run(tmp_path, "r", "--training.steps=3", *EVERY_2, f"--checkpoint.resume={run_dir / 'checkpoints' / step(2)}")
    said = capsys.readouterr().out
    aside = [p for p in (run_dir / "abandoned").iterdir()]
    assert len(aside) == 1 and str(aside[0]) in said and "step 2" in said
    assert [p.name for p in (aside[0] / "checkpoints").iterdir()] == [step(4)]
    assert [r["step"] for r in rows(aside[0]) if "loss" in r] == [3, 4]  # the abandoned rows, kept
    assert names(run_dir) == [step(2), step(3)]
    resumed = run(tmp_path, "r", "--training.steps=4", *EVERY_2, "--checkpoint.resume")
    assert loss_steps(run_dir) == [1, 2, 3, 4]  # one history
    assert resumed["losses"] == pytest.approx(first["losses"], rel=1e-6)  # the same data, the same steps
    assert names(run_dir) == [step(2), step(3), step(4)]


def test_two_rewinds_in_one_second_keep_both_abandoned_histories(tmp_path, monkeypatch):
    def fake_checkpoint(k):
        folder = tmp_path / "checkpoints" / step(k)
        folder.mkdir(parents=True)
        for name in ("meta.json", "extra.pt", ".metadata"):
            (folder / name).touch()

    now = datetime.datetime(2026, 1, 1)
    monkeypatch.setattr(ckpt, "datetime", types.SimpleNamespace(datetime=types.SimpleNamespace(now=lambda: now)))
    fake_checkpoint(2)
    asides = []
    for _ in range(2):
        fake_checkpoint(4)
        asides.append(ckpt.set_aside_after(tmp_path, 2))
    assert asides[0] != asides[1] and all((a / "checkpoints" / step(4)).is_dir() for a in asides)
    assert names(tmp_path) == [step(2)]


def test_a_branch_into_another_run_folder_leaves_the_run_it_came_from(tmp_path):
    run(tmp_path, "a", "--training.steps=4", *EVERY_2)
    b = run(
        tmp_path, "b", "--training.steps=3", *EVERY_2, f"--checkpoint.resume={tmp_path / 'a' / 'checkpoints' / step(2)}"
    )
    assert list(b["losses"]) == [3] and b["losses"][3] == losses(tmp_path / "a")[3]
    assert names(tmp_path / "a") == [step(2), step(4)] and loss_steps(tmp_path / "a") == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match="holds checkpoints of its own"):  # b's history is b's
        build(tmp_path, "b", "--training.steps=4", f"--checkpoint.resume={tmp_path / 'a'}")


def test_resume_names_what_is_not_a_checkpoint(tmp_path):
    run(tmp_path, "a", "--training.steps=2")
    assert (
        build(tmp_path, "a", "--training.steps=3", f"--checkpoint.resume={tmp_path / 'a' / 'checkpoints'}").start == 2
    )
    for wrong in ("metrics.jsonl", "checkpoints/step-00000002/extra.pt"):
        with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'a' / wrong} is a file"):
            build(tmp_path, "a", "--training.steps=3", f"--checkpoint.resume={tmp_path / 'a' / wrong}")
    loose = tmp_path / "copied" / step(2)  # a checkpoint outside a run folder: which run goes on?
    shutil.copytree(tmp_path / "a" / "checkpoints" / step(2), loose)
    cfg = parse_config([*TINY, f"--job.dir={tmp_path}", "--training.steps=3", f"--checkpoint.resume={loose}"])
    with pytest.raises(ConfigError, match="not inside a run folder .* --job.name"):
        trainer.Trainer(cfg, Dist(), StopSignal(verbose=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "copied"]
    torn = tmp_path / "a" / "checkpoints" / "step-00000002.tmp-1"
    torn.mkdir()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        build(tmp_path, "a", "--training.steps=3", f"--checkpoint.resume={torn}")


def test_a_reused_name_without_checkpoints_starts_a_fresh_history(tmp_path, capsys):
    run_dir = tmp_path / "x"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n{"step": 2, "loss": 8.0}\n')
    run(tmp_path, "x", "--training.steps=2", "--checkpoint.resume")  # latest: none there
    assert "no checkpoint to resume in it: starting at step 0" in capsys.readouterr().out
    assert [r["step"] for r in rows(run_dir)] == [0, 1, 2, 2]  # val_loss at 0, losses, val_loss at 2
    assert 9.0 not in [r.get("loss") for r in rows(run_dir)]


def scalars(run_dir: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


@pytest.mark.slow
def test_tensorboard_is_one_history_after_a_resume(tmp_path):
    pytest.importorskip("tensorboard")
    tb = "--metrics.tensorboard=true"
    run(tmp_path, "t", "--training.steps=4", *EVERY_2, tb)
    run_dir = tmp_path / "t"
    run(tmp_path, "t", "--training.steps=4", *EVERY_2, tb, f"--checkpoint.resume={run_dir / 'checkpoints' / step(2)}")
    assert scalars(run_dir, "loss") == [1, 2, 3, 4]
    assert scalars(run_dir, "val_loss") == [0, 4]


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "timestamp", lambda: "20260101-000000")
    busy = tmp_path / "20260101-000000"
    busy.mkdir()
    (busy / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n')  # a run still going, no checkpoint yet
    a = train(parse_config([*TINY, f"--job.dir={tmp_path}", "--training.steps=1"]))
    b = train(parse_config([*TINY, f"--job.dir={tmp_path}", "--training.steps=1"]))
    assert len({a["run_dir"], b["run_dir"], str(busy)}) == 3
    assert (busy / "metrics.jsonl").read_text() == '{"step": 1, "loss": 9.0}\n'
    assert all(Path(r["run_dir"]).name.startswith("20260101-000000") for r in (a, b))
    for r in (a, b):  # config.toml names the folder the run used: --config RUN/config.toml continues it
        saved = parse_config(["--config", str(Path(r["run_dir"]) / "config.toml")])
        assert Path(saved.job.dir) / saved.job.name == Path(r["run_dir"])


def test_an_async_save_publishes_itself_when_written(tmp_path):
    t = build(tmp_path, "a", "--checkpoint.async_save=true")
    t.checkpoint(3)
    deadline = time.monotonic() + 20
    while not names(t.run_dir) and time.monotonic() < deadline:  # no later save, no finish
        time.sleep(0.01)
    assert names(t.run_dir) == [step(3)]
    t.checkpointer.wait()


def test_a_one_process_save_says_nothing_about_torch_distributed(tmp_path):
    run(tmp_path, "w", "--training.steps=2")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        run(tmp_path, "w", "--training.steps=3", "--checkpoint.resume")  # a load and a save
    assert not [w for w in said if "torch.distributed" in str(w.message)]


@pytest.mark.slow
def test_rewind_then_crash_then_resume_latest(tmp_path):
    """The issue's journey through `ember train`: rewind to step 2, be killed after step 5,
    resume latest."""
    opts = ("--training.steps=10", *EVERY_2)
    assert cli("train", *flags(tmp_path, "ref", *opts)).returncode == 0
    assert cli("train", *flags(tmp_path, "r", *opts)).returncode == 0
    run_dir = tmp_path / "r"
    rewind = f"--checkpoint.resume={run_dir / 'checkpoints' / step(2)}"
    r = cli("train", *flags(tmp_path, "r", *opts, rewind), env={CRASH_AT: "step:5"})
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert names(run_dir) == [step(2), step(4)]
    r = cli("train", *flags(tmp_path, "r", *opts, "--checkpoint.resume"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert loss_steps(run_dir) == list(range(1, 11))
    assert losses(run_dir) == losses(tmp_path / "ref")  # bit for bit


@pytest.mark.slow
def test_an_async_save_survives_a_kill_two_steps_later(tmp_path):
    opts = ("--training.steps=10", "--checkpoint.every=4", "--checkpoint.async_save=true")
    r = cli("train", *flags(tmp_path, "a", *opts), env={CRASH_AT: "step:7"})
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert names(tmp_path / "a") == [step(4)]
    assert "torch.distributed is disabled" not in r.stderr


INTERRUPTED_DURING_A_SAVE = """
import sys, time
import torch.distributed.checkpoint as dcp
from tests.journeys.test_resume_journeys import Path, build

write = dcp.FileSystemWriter.write_data
def slow(self, *args, **kwargs):  # a big checkpoint: the write outlasts the interrupt
    time.sleep(1.0)
    return write(self, *args, **kwargs)
dcp.FileSystemWriter.write_data = slow
build(Path(sys.argv[1]), "k", "--checkpoint.async_save=true").checkpoint(3)
raise KeyboardInterrupt  # a second Ctrl-C while the background save is being written
"""


@pytest.mark.slow
def test_a_process_interrupted_during_a_background_save_still_publishes_it(tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_DURING_A_SAVE, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
        env=cli_env(),
        timeout=300,
    )
    assert r.returncode != 0 and "KeyboardInterrupt" in r.stderr
    assert names(tmp_path / "k") == [step(3)]


@pytest.mark.slow
def test_each_flag_changed_through_the_command(tmp_path):
    """The user's view: `ember train --checkpoint.resume` with a changed lr goes on with it; with a
    changed APOLLO rank it stops with one line naming the flag (no traceback), writing nothing."""
    first = ("--training.steps=2", "--optimizer.name=apollo", "--optimizer.rank=8", "--optimizer.lr=0.01")
    assert cli("train", *flags(tmp_path, "a", *first)).returncode == 0
    r = cli("train", *flags(tmp_path, "a", *first, "--training.steps=4", "--optimizer.rank=4", "--checkpoint.resume"))
    assert r.returncode != 0 and "--optimizer.rank=4" in r.stderr and "Traceback" not in r.stderr
    assert loss_steps(tmp_path / "a") == [1, 2]
    r = cli("train", *flags(tmp_path, "a", *first, "--training.steps=4", "--optimizer.lr=0.002", "--checkpoint.resume"))
    assert r.returncode == 0, r.stderr[-2000:]
    lrs = {x["step"]: x["lr"] for x in rows(tmp_path / "a") if "lr" in x}
    assert lrs[2] > 0.002 and lrs[3] <= 0.002


def test_a_fresh_runs_config_toml_continues_it(tmp_path):
    """`ember train --config RUN/config.toml` goes on from the run's newest checkpoint, whether or
    not the run was ever resumed (its config.toml said resume = "" and was refused: 'already holds
    checkpoints')."""
    first = train(parse_config([*TINY, f"--job.dir={tmp_path}", "--training.steps=2"]))
    toml = Path(first["run_dir"]) / "config.toml"
    again = train(parse_config(["--config", str(toml), "--training.steps=3"]))
    assert again["run_dir"] == first["run_dir"]
    assert loss_steps(Path(first["run_dir"])) == [1, 2, 3]
