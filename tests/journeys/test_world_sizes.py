"""One run at 1, 2 and 4 ranks: every number in metrics.jsonl that does not depend on the world
size (loss, grad_norm, lr, val_loss) is the same, with the validation windows split unevenly."""

import json
from pathlib import Path

import pytest
import torch

from ember.data.loader import SourceSpec, source_vocab, validation_batches
from ember.train import parse_config
from ember.train.distributed import Dist
from ember.train.evaluate import Evaluator
from ember.train.build import build_model, model_config
from tests.train.helpers import cli, flags

# Three validation windows: 3, 2 and 0 of them survived an even split at 1, 2 and 4 ranks.
ODD_EVAL = ("--eval.batches=1", "--eval.batch_size=3", "--eval.every=2")


def windows(batches: list[torch.Tensor]) -> list[tuple]:
    return [tuple(row.tolist()) for b in batches for row in b]


@pytest.mark.parametrize("world", [2, 3, 4, 5])
def test_every_validation_window_is_on_one_rank_at_any_world_size(world):
    whole = windows(validation_batches(SourceSpec("stdlib"), 32, 3, 1))
    parts = [
        windows(validation_batches(SourceSpec("stdlib"), 32, 3, 1, rank=r, world_size=world)) for r in range(world)
    ]
    assert len(whole) == 3 and sorted(w for p in parts for w in p) == sorted(whole)


def test_a_pass_without_windows_adds_nothing_to_the_validation_loss(tmp_path):
    """What a rank with a shorter share runs so that every rank runs the same forward passes."""
    cfg = parse_config(flags(tmp_path, "e", *ODD_EVAL))
    d = Dist()
    ev = Evaluator(cfg, d, torch.float32)
    model = build_model(cfg, model_config(cfg, source_vocab(SourceSpec("stdlib"), "byte")[0]), d).model
    model.eval()
    want = ev(model)
    ev.passes = {k: v + 2 for k, v in ev.passes.items()}
    assert ev(model) == want


def metrics(run_dir: Path) -> dict[tuple[int, str], float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {(r["step"], k): r[k] for r in rows for k in ("loss", "grad_norm", "lr", "val_loss") if k in r}


@pytest.mark.slow
def test_the_logged_numbers_are_the_same_at_one_two_and_four_ranks(tmp_path):
    opts = ("--training.steps=4", *ODD_EVAL)
    got = {}
    for name, ranks, parallel in (("one", 0, "ddp"), ("two", 2, "ddp"), ("four", 4, "fsdp")):
        r = cli("train", *flags(tmp_path, name, *opts, f"--training.parallel={parallel}"), nproc=ranks)
        assert r.returncode == 0, r.stderr[-3000:]
        got[name] = metrics(tmp_path / name)
    assert [k for k in got["one"] if k[1] == "val_loss"] == [(0, "val_loss"), (2, "val_loss"), (4, "val_loss")]
    for name in ("two", "four"):
        assert got[name].keys() == got["one"].keys(), name
        for k, v in got["one"].items():  # other ranks sum in another order
            assert got[name][k] == pytest.approx(v, rel=1e-5, abs=1e-7), (name, k)
