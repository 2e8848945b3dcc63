"""Runs that survive: a kill -9 at any point, a preemption signal, bad data refused up front."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ember.data import prepare
from ember.train import EXIT_PREEMPTED, ConfigError, parse_config, train
from ember.train import checkpoint as ckpt
from ember.train.faults import ENV as CRASH_AT
from ember.train.preempt import StopSignal
from ember.train.preflight import check_config

from .helpers import cli, cli_env, command, flags, losses, run

# Saves at 2, 4, 6 and exports: every kind of write a crash can interrupt.
OPTS = ("--checkpoint.every=2", "--checkpoint.keep=0", "--checkpoint.export_safetensors=true")


@pytest.fixture
def one_thread():
    """In-process runs on one thread, like the subprocesses (OMP_NUM_THREADS=1), so that their
    losses compare bit for bit whatever the machine's core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run(tmp, "full", *OPTS)
    finally:
        torch.set_num_threads(threads)


def val_losses(run_dir) -> dict[int, float]:
    rows = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["val_loss"] for r in rows if "val_loss" in r}


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path)


@pytest.mark.slow
@pytest.mark.parametrize("point, survivor", [("step:3", 2), ("save:4", 2), ("export", 6)])
def test_kill_9_anywhere_then_resume_gives_the_uninterrupted_run(tmp_path, one_thread, uninterrupted, point, survivor):
    r = cli("train", *flags(tmp_path, "k", *OPTS), env={CRASH_AT: point})
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    run_dir = tmp_path / "k"
    assert ckpt.find_checkpoint(run_dir).name == f"step-{survivor:08d}"  # a torn save is never picked
    assert not (run_dir / "model.safetensors").exists()  # nor is a torn export under the final name
    if point == "save:4":  # the hook did cut a save short
        assert any(p.name.startswith("step-00000004.tmp-") for p in (run_dir / "checkpoints").iterdir())
    if point == "export":
        assert any(p.name.startswith(".model.safetensors.tmp-") for p in run_dir.iterdir())

    resumed = run(tmp_path, "k", *OPTS, "--checkpoint.resume")
    assert resumed["losses"] == uninterrupted["losses"]  # bit for bit, the killed run's rows included
    assert val_losses(run_dir) == val_losses(uninterrupted["run_dir"])
    mine, theirs = tensors(run_dir / "model.safetensors"), tensors(Path(uninterrupted["run_dir"]) / "model.safetensors")
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert not any(".tmp" in p.name for p in (run_dir / "checkpoints").iterdir())


def _children(pid: int) -> list[int]:
    """Child processes (Linux /proc; elsewhere none are found)."""
    tasks = Path(f"/proc/{pid}/task")
    return [int(c) for t in (tasks.iterdir() if tasks.is_dir() else []) for c in (t / "children").read_text().split()]


def _worker_pid(parent: int, rank: int) -> int:
    """The pid of a torchrun worker, found by its RANK."""
    for child in _children(parent):
        if f"RANK={rank}".encode() in Path(f"/proc/{child}/environ").read_bytes().split(b"\0"):
            return child
    raise LookupError(f"no worker of rank {rank} under {parent}")


@contextlib.contextmanager
def running(*args: str, nproc: int = 0):
    """A background `ember ARGS`; killed, with its torchrun workers, if a failing test leaves it running."""
    proc = subprocess.Popen(
        command(*args, nproc=nproc), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env()
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            for pid in [*_children(proc.pid), proc.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.communicate()


def wait_for_a_step(run_dir: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until metrics.jsonl has a training step's row."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited early ({proc.returncode}): {proc.communicate()[1][-2000:]}"
        path = run_dir / "metrics.jsonl"
        if path.is_file() and '"loss"' in path.read_text():
            return
        time.sleep(0.01)
    raise TimeoutError(f"no step logged in {run_dir} after {timeout} s")


@pytest.mark.slow
def test_sigterm_stops_after_a_step_with_a_checkpoint_and_resume_continues_exactly(tmp_path, one_thread):
    # A constant schedule does not depend on training.steps: the run signalled is long (no race
    # with its end), and the resumed and reference runs stop a few steps after the signal.
    opts = ("--lr_scheduler.decay=constant", "--checkpoint.every=0")
    run_dir = tmp_path / "p"
    with running("train", *flags(tmp_path, "p", *opts, "--training.steps=100000")) as proc:
        wait_for_a_step(run_dir, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED == 75, err[-2000:]
    stopped = re.search(
        r"stopped by SIGTERM after step (\d+); checkpoint (\S+)\. To continue, run the same command with "
        r"(--checkpoint\.resume=\S+)",
        err,
    )
    assert stopped, err[-2000:]
    step = int(stopped[1])
    assert Path(stopped[2]) == ckpt.find_checkpoint(run_dir) == run_dir / "checkpoints" / f"step-{step:08d}"
    assert max(losses(run_dir)) == step
    resumed = run(tmp_path, "p", *opts, f"--training.steps={step + 3}", stopped[3])
    full = run(tmp_path, "full", *opts, f"--training.steps={step + 3}")
    assert resumed["losses"] == full["losses"]  # bit for bit


def test_a_second_signal_acts_at_once_and_the_handlers_come_back():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with StopSignal(verbose=False) as stop:
        assert signal.getsignal(signal.SIGTERM) not in (before[signal.SIGTERM], signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100):  # Python runs the handler at its next check
            if stop.received:
                break
            time.sleep(0.01)
        assert stop.received == "SIGINT"
        assert {s: signal.getsignal(s) for s in before} == before  # the second one acts as without ember
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers through /proc")
def test_under_torchrun_a_signal_to_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    run_dir = tmp_path / "dist"
    with running("train", *flags(tmp_path, "dist", "--training.steps=100000"), nproc=2) as proc:
        wait_for_a_step(run_dir, proc)
        os.kill(_worker_pid(proc.pid, rank=1), signal.SIGTERM)
        _, err = proc.communicate(timeout=120)  # a rank that did not agree would hang in a collective
    stopped = re.search(r"stopped by a stop signal on another rank after step (\d+)", err)
    assert stopped, err[-3000:]
    step = int(stopped[1])
    # rank 0 wrote the checkpoint of that step: gathering it took rank 1's part in the collectives
    assert ckpt.find_checkpoint(run_dir).name == f"step-{step:08d}" and max(losses(run_dir)) == step
    assert err.count(f"exitcode  : {EXIT_PREEMPTED}") >= 1, err[-3000:]


@pytest.fixture
def tokens(tmp_path) -> Path:
    """A small byte-level token folder: one train shard, one val shard."""
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"def f{i}(x):\n    return x * {i}\n" * 2}) + "\n" for i in range(60)))
    prepare([str(docs)], tmp_path / "tok", workers=1, val_per_mille=100, progress=False)
    return tmp_path / "tok"


def _edit_index(folder: Path, change) -> None:
    index = json.loads((folder / "index.json").read_text())
    change(index)
    (folder / "index.json").write_text(json.dumps(index))


def _recorded_id_past_vocab(d):  # a tokenizer whose ids go past its vocab_size, seen by prepare
    _edit_index(d, lambda i: i["splits"]["train"][0].update(max_id=300))
    return "train-00000.bin: token id 300 is outside the model's vocabulary of 257"


def _id_past_vocab_unrecorded(d):  # a folder from before max_id was recorded: the shard is read
    _edit_index(d, lambda i: [e.pop("max_id") for s in i["splits"].values() for e in s])
    shard = np.memmap(d / "val-00000.bin", dtype=np.uint16, mode="r+")
    shard[3] = 999
    shard.flush()
    return "val-00000.bin: token id 999 is outside"


def _truncated(d):
    os.truncate(d / "train-00000.bin", (d / "train-00000.bin").stat().st_size - 6)
    return "train-00000.bin: .* bytes where index.json says .* truncated"


def _written_over(d):
    shard = np.memmap(d / "train-00000.bin", dtype=np.uint16, mode="r+")
    shard[-1] = 65
    shard.flush()
    return "train-00000.bin: corrupted: it ends with token 65"


def _index_not_json(d):
    (d / "index.json").write_text('{"format": "ember-tok')
    return "index.json: not valid JSON"


def _empty(d):  # `ember prepare` of an input too short for one window (one with no text at all is refused there)
    shutil.rmtree(d)
    (d.parent / "short.jsonl").write_text('{"text": "x"}\n')
    prepare([str(d.parent / "short.jsonl")], d, workers=1, progress=False)
    return "index.json: no training data: 2 tokens"


@pytest.mark.parametrize(
    "spoil", [_recorded_id_past_vocab, _id_past_vocab_unrecorded, _truncated, _written_over, _index_not_json, _empty]
)
def test_bad_data_is_refused_before_a_run_folder_exists(tmp_path, tokens, spoil):
    message = spoil(tokens)
    with pytest.raises(ConfigError, match=f"{re.escape(str(tokens))}/{message}"):
        train(parse_config(flags(tmp_path / "runs", "bad", f"--data.sources={tokens}")))
    assert not (tmp_path / "runs").exists()


def test_a_larger_model_vocabulary_accepts_the_ids(tmp_path, tokens):
    _recorded_id_past_vocab(tokens)
    check_config(parse_config(flags(tmp_path, "ok", f"--data.sources={tokens}", "--model.vocab_size=512")))


def _write_weights(d: Path, short_by: int = 0) -> None:
    """Token weights as `ember score` lays them out (the values do not matter here)."""
    index = json.loads((d / "index.json").read_text())
    (d / "weights.json").write_text(json.dumps({"method": "prior"}))
    for e in index["splits"]["train"]:
        np.ones(e["tokens"] - short_by, np.float32).tofile(d / f"weights-{e['file']}")


@pytest.mark.parametrize(
    "kind, message",
    [
        ("short", "[0-9,]+ bytes of float32 weights for a shard of"),
        ("missing", "missing: the folder has token weights"),
    ],
)
def test_token_weights_that_do_not_match_their_shards_are_refused(tmp_path, tokens, kind, message):
    weighted = [f"--data.sources={tokens}", f"--loss.token_weights={tokens}"]
    _write_weights(tokens)
    check_config(parse_config(flags(tmp_path / "runs", "ok", *weighted)))  # the matching ones pass
    if kind == "short":
        _write_weights(tokens, short_by=1)
    else:
        (tokens / "weights-train-00000.bin").unlink()
    with pytest.raises(ConfigError, match=f"{re.escape(str(tokens))}/weights-train-00000.bin: {message}"):
        train(parse_config(flags(tmp_path / "runs", "bad", *weighted)))
    assert not (tmp_path / "runs").exists()
