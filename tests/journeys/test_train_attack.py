"""`ember train`'s run lifecycle as users misuse it: a second run started on a run folder in use,
a run folder's config.toml reused from another directory or after a rewind, TensorBoard turned off
on a resume. Each gives one history in one run folder, or a refusal before anything is touched."""

import fcntl
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from ember.train import ConfigError, parse_config, train
from ember.train import checkpoint as ckpt
from tests.train.helpers import TINY, cli, cli_env, command, flags, losses, run

EVERY_2 = ("--checkpoint.every=2", "--checkpoint.keep=0")


def test_a_run_folder_in_use_is_refused_and_left_as_it_was(tmp_path):
    run(tmp_path, "a", *EVERY_2, "--training.steps=4")
    run_dir = tmp_path / "a"
    before = (run_dir / "metrics.jsonl").read_text(), [p.name for p in ckpt.checkpoint_dirs(run_dir)]
    busy = os.open(run_dir, os.O_RDONLY)  # what the `ember train` still running in it holds
    fcntl.flock(busy, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        for again in (
            ("--checkpoint.resume", "--training.steps=6"),  # a relaunch while the first still runs
            (f"--checkpoint.resume={run_dir / 'checkpoints' / 'step-00000002'}",),  # a rewind under its feet
        ):
            with pytest.raises(ConfigError, match=f"run folder {run_dir} is in use by another"):
                train(parse_config(flags(tmp_path, "a", *EVERY_2, *again)))
            assert ((run_dir / "metrics.jsonl").read_text(), [p.name for p in ckpt.checkpoint_dirs(run_dir)]) == before
            assert not (run_dir / "abandoned").exists()
    finally:
        os.close(busy)
    assert run(tmp_path, "a", *EVERY_2, "--checkpoint.resume", "--training.steps=5")["step"] == 5  # free again


def test_a_run_folder_without_checkpoints_in_use_keeps_its_metrics(tmp_path):
    run_dir = tmp_path / "a"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n')  # its first steps, no checkpoint yet
    busy = os.open(run_dir, os.O_RDONLY)
    fcntl.flock(busy, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(ConfigError, match="is in use by another"):
            train(parse_config(flags(tmp_path, "a")))
    finally:
        os.close(busy)
    assert (run_dir / "metrics.jsonl").read_text() == '{"step": 1, "loss": 9.0}\n'


def test_config_toml_continues_its_run_from_another_directory(tmp_path, monkeypatch):
    (tmp_path / "here").mkdir()
    (tmp_path / "there").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    train(parse_config([*TINY, "--job.dir=runs", "--job.name=a", "--training.steps=4"]))
    run_dir = tmp_path / "here" / "runs" / "a"
    monkeypatch.chdir(tmp_path / "there")
    again = train(parse_config(["--config", str(run_dir / "config.toml"), "--checkpoint.resume", "--training.steps=6"]))
    assert Path(again["run_dir"]) == run_dir
    assert not (tmp_path / "there" / "runs").exists()  # not a fresh run at step 0 in this directory
    assert sorted(losses(run_dir)) == [1, 2, 3, 4, 5, 6]


def test_config_toml_of_a_rewound_run_continues_it_rather_than_rewinding_again(tmp_path):
    run(tmp_path, "a", *EVERY_2)
    run_dir = tmp_path / "a"
    run(tmp_path, "a", *EVERY_2, f"--checkpoint.resume={run_dir / 'checkpoints' / 'step-00000002'}")
    assert len(list((run_dir / "abandoned").iterdir())) == 1
    continued = train(parse_config(["--config", str(run_dir / "config.toml"), "--training.steps=8"]))
    assert len(list((run_dir / "abandoned").iterdir())) == 1  # steps 3-6 of this history kept
    assert continued["step"] == 8 and sorted(losses(run_dir)) == list(range(1, 9))


def tensorboard_losses(run_dir: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars("loss")]


@pytest.mark.slow
def test_tensorboard_turned_off_on_a_rewind_shows_no_abandoned_history(tmp_path):
    pytest.importorskip("tensorboard")
    run(tmp_path, "a", *EVERY_2, "--metrics.tensorboard=true")
    run_dir = tmp_path / "a"
    step_2 = run_dir / "checkpoints" / "step-00000002"
    run(tmp_path, "a", *EVERY_2, f"--checkpoint.resume={step_2}", "--optimizer.lr=1e-3", "--metrics.tensorboard=false")
    if (run_dir / "tensorboard").exists():  # gone, or the run's one history
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert tensorboard_losses(run_dir) == [(r["step"], pytest.approx(r["loss"])) for r in rows if "loss" in r]


@pytest.mark.slow
def test_a_second_ember_train_on_a_running_run_is_refused(tmp_path):
    first = subprocess.Popen(
        command("train", *flags(tmp_path, "a", "--training.steps=100000", "--checkpoint.every=1")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        deadline = time.monotonic() + 120
        while not ckpt.checkpoint_dirs(tmp_path / "a"):
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()[-2000:]
            time.sleep(0.1)
        second = cli("train", *flags(tmp_path, "a", "--training.steps=100000", "--checkpoint.resume"), timeout=60)
        assert second.returncode != 0 and "is in use by another `ember train`" in second.stderr, second.stderr[-2000:]
        assert first.poll() is None  # the first goes on
    finally:
        first.kill()
        first.communicate()


def test_a_checkpoint_of_an_abandoned_history_is_continued_only_in_a_run_folder_of_its_own(tmp_path):
    run(tmp_path, "a", *EVERY_2, "--training.steps=4")
    run(
        tmp_path,
        "a",
        *EVERY_2,
        "--training.steps=4",
        f"--checkpoint.resume={tmp_path / 'a' / 'checkpoints' / 'step-00000002'}",
    )
    aside = next((tmp_path / "a" / "abandoned").iterdir())
    before = sorted(str(p.relative_to(aside)) for p in aside.rglob("*"))
    old = aside / "checkpoints" / "step-00000004"
    with pytest.raises(ConfigError, match="set aside by a rewind.*--job.name"):
        train(parse_config([*TINY, *EVERY_2, f"--job.dir={tmp_path}", f"--checkpoint.resume={old}"]))
    assert sorted(str(p.relative_to(aside)) for p in aside.rglob("*")) == before  # not made a run folder
    branch = run(tmp_path, "b", *EVERY_2, "--training.steps=5", f"--checkpoint.resume={old}")
    assert branch["run_dir"] == str(tmp_path / "b") and sorted(branch["losses"]) == [5]


def test_the_run_folder_stays_held_until_a_background_save_in_flight_is_published(tmp_path, monkeypatch):
    import torch.distributed.checkpoint as dcp

    from ember.train import trainer

    write = dcp.FileSystemWriter.write_data

    def slow(self, *args, **kwargs):  # a big checkpoint: its write outlasts the run's end
        time.sleep(0.5)
        return write(self, *args, **kwargs)

    def fails(self):
        raise RuntimeError("the run ends by an error")

    monkeypatch.setattr(dcp.FileSystemWriter, "write_data", slow)
    monkeypatch.setattr(trainer.Trainer, "finish", fails)
    with pytest.raises(RuntimeError, match="ends by an error"):
        run(tmp_path, "a", "--training.steps=2", "--checkpoint.every=1", "--checkpoint.async_save=true")
    # the folder is free: a relaunch may read it, and nothing writes in it any more
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path / "a")] == ["step-00000001", "step-00000002"]


@pytest.mark.slow
def test_a_rewind_without_plots_leaves_no_plot_of_the_abandoned_history(tmp_path):
    run(tmp_path, "a", *EVERY_2, "--training.steps=4", "--metrics.plot=true")
    assert (tmp_path / "a" / "loss.png").is_file()
    step_2 = tmp_path / "a" / "checkpoints" / "step-00000002"
    run(tmp_path, "a", *EVERY_2, "--training.steps=4", f"--checkpoint.resume={step_2}", "--optimizer.lr=1e-3")
    assert not (tmp_path / "a" / "loss.png").exists()  # its curves are the abandoned history's
    assert (next((tmp_path / "a" / "abandoned").iterdir()) / "loss.png").is_file()


def test_a_run_relaunched_as_the_last_one_ends_continues_from_its_last_checkpoint(tmp_path, monkeypatch):
    from ember.train import run_lock

    run(tmp_path, "a", *EVERY_2, "--training.steps=4")
    acquire = run_lock.RunFolderLock.acquire

    def the_first_ends_meanwhile(self, run_dir):  # it publishes step 6 while the relaunch looks for its latest
        monkeypatch.setattr(run_lock.RunFolderLock, "acquire", acquire)
        run(tmp_path, "a", *EVERY_2, "--training.steps=6", "--checkpoint.resume")
        acquire(self, run_dir)

    monkeypatch.setattr(run_lock.RunFolderLock, "acquire", the_first_ends_meanwhile)
    relaunched = run(tmp_path, "a", *EVERY_2, "--training.steps=8", "--checkpoint.resume")
    assert not (tmp_path / "a" / "abandoned").exists()  # not a rewind of the steps it had not seen
    assert relaunched["step"] == 8 and sorted(relaunched["losses"]) == list(range(1, 9))


def test_a_fresh_history_keeps_only_its_own_tokenizer_files(tmp_path):
    """What open_run_folder does with the run's tokenizer (a whole run on a BPE tokenizer
    tokenizes the built-in corpus: a minute)."""
    from ember.train import run_data

    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_text('{"new": 1}')
    kept = tmp_path / "a" / "tokenizer"  # an earlier history's, killed before its first checkpoint
    kept.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (kept / name).write_text("{}")
    cfg = parse_config(flags(tmp_path, "a", f"--data.tokenizer={tmp_path / 'tok' / 'tokenizer.json'}"))
    run_data.save_tokenizer(cfg, tmp_path / "a")
    shipped = run_data.run_tokenizer_files(tmp_path / "a" / "checkpoints" / "step-00000001")  # what export ships
    assert [(p.name, p.read_text()) for p in shipped] == [("tokenizer.json", '{"new": 1}')]
    run_data.save_tokenizer(parse_config(flags(tmp_path, "a")), tmp_path / "a")  # bytes: none
    assert run_data.run_tokenizer_files(tmp_path / "a" / "checkpoints" / "step-00000001") is None
