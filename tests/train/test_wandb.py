"""--metrics.wandb: the rows of metrics.jsonl go to Weights & Biases at their steps (a stand-in
wandb module records the calls; the slow test writes a real offline run and reads its history back)."""

import json
import sys
import types
from pathlib import Path

import pytest

from ember.cli import main as ember_main
from ember.train.metrics import MetricsLogger
from ember.train.metrics_wandb import ID_FILE, scalars

from .helpers import SMALL as BASE
from .helpers import cli

SMALL = [*BASE, "--metrics.log_every=1"]
ROWS = [
    {"step": 0, "val_loss": 5.5},
    {"step": 1, "loss": 5.4, "lr": 1e-3, "mem_gib": None, "peak_mem_gib_per_rank": [0.5, 0.25], "note": "x"},
    {"step": 2, "loss": 5.3, "lr": 2e-3, "optimizer_state_bytes": 1024, "val_loss/a": 5.1},
]


class FakeWandb(types.ModuleType):
    """What ember calls of wandb: init (its arguments kept), run.log, run.finish."""

    def __init__(self):
        super().__init__("wandb")
        self.inits, self.logged, self.finished = [], [], 0

    def init(self, **kw):
        self.inits.append(kw)
        return types.SimpleNamespace(log=lambda values, step: self.logged.append((step, values)), finish=self._finish)

    def _finish(self):
        self.finished += 1


@pytest.fixture
def fake_wandb(monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    return fake


def logger(run_dir: Path, resume: bool) -> MetricsLogger:
    wandb = {"project": "proj", "config": {"model": {"dim": 32}}, "resume": resume}
    return MetricsLogger(run_dir, 3, 0, True, False, False, 1, wandb=wandb)


def test_every_row_goes_to_wandb_at_its_step(tmp_path, fake_wandb):
    (tmp_path / "r").mkdir()
    log = logger(tmp_path / "r", resume=False)
    for row in ROWS:
        log.record(row)
    log.close()
    log.close()  # once
    (init,) = fake_wandb.inits
    assert (init["project"], init["name"], init["dir"]) == ("proj", "r", str(tmp_path / "r"))
    assert init["config"] == {"model": {"dim": 32}} and init["resume"] == "allow"
    assert init["id"] == (tmp_path / "r" / ID_FILE).read_text().strip()
    written = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert fake_wandb.logged == [(r["step"], scalars(r)) for r in written]
    assert fake_wandb.logged[1] == (
        1,
        {"loss": 5.4, "lr": 1e-3, "peak_mem_gib_per_rank/0": 0.5, "peak_mem_gib_per_rank/1": 0.25},
    )
    assert fake_wandb.finished == 1


def test_a_resumed_run_continues_its_wandb_run(tmp_path, fake_wandb):
    (tmp_path / "r").mkdir()
    logger(tmp_path / "r", resume=False).close()
    logger(tmp_path / "r", resume=True).close()
    logger(tmp_path / "r", resume=False).close()  # a fresh history in the folder: a new W&B run
    first, resumed, fresh = (i["id"] for i in fake_wandb.inits)
    assert first == resumed != fresh


def test_no_wandb_no_call(tmp_path, fake_wandb):
    log = MetricsLogger(tmp_path, 3, 0, True, False, False, 1)
    log.record(ROWS[0])
    log.close()
    assert not fake_wandb.inits and not (tmp_path / ID_FILE).exists()


def test_wandb_not_installed_is_refused_before_the_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb fails, as when it is not installed
    args = ["train", *SMALL, f"--job.dir={tmp_path}", "--job.name=r", "--metrics.wandb=true"]
    assert ember_main(args) == 1
    assert "pip install ember[wandb]" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert ember_main([*args[:-1], "--metrics.wandb=true", "--metrics.wandb_project=a/b"]) == 1


def wandb_history(path: Path) -> list[tuple[int, dict]]:
    """(step, values) of each history record of an offline run's .wandb file: a LevelDB-style log
    (a 7-byte header, then 32 KiB blocks of chunks: crc32, length, type; 1 full, 2-4 first, middle,
    last) of protobuf Records; wandb no longer ships a reader for it."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, parts, out = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        left = (1 << 15) - pos % (1 << 15)
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if left < 7 or kind == 0:  # a block's padding
            pos += left
            continue
        parts += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record.FromString(parts)
            parts = b""
            if record.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                out.append((record.history.step.num, {k: v for k, v in items.items() if not k.startswith("_")}))
    return out


@pytest.mark.slow
def test_an_offline_run_holds_the_numbers_of_metrics_jsonl(tmp_path):
    pytest.importorskip("wandb")
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path / "elsewhere")}
    args = ["train", *SMALL, f"--job.dir={tmp_path}", "--job.name=r", "--metrics.wandb=true"]
    first = cli(*args, "--training.steps=2", "--checkpoint.every=1", env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    resumed = cli(*args, "--training.steps=3", "--checkpoint.resume=latest", env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run_id = (tmp_path / "r" / ID_FILE).read_text().strip()
    files = sorted((tmp_path / "r" / "wandb").glob(f"offline-run-*-{run_id}*/run-{run_id}.wandb"))
    assert len(files) == 2  # the resumed process wrote the same W&B run on
    logged = [row for f in files for row in wandb_history(f)]
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    expected = [(r["step"], scalars(r)) for r in rows]
    # a step logged twice (training, then validation) is one W&B history row
    merged = {}
    for step, values in expected:
        merged.setdefault(step, {}).update(values)
    assert dict(logged) == merged
    # a rewind to an earlier checkpoint: another history, another W&B run
    rewind = cli(*args, "--training.steps=3", f"--checkpoint.resume={tmp_path}/r/checkpoints/step-00000002", env=env)
    assert rewind.returncode == 0, rewind.stderr[-2000:]
    assert (tmp_path / "r" / ID_FILE).read_text().strip() != run_id
