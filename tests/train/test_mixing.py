"""Data mixtures for continual pre-training: per-source token budgets (epochs over a fixed
subset), weight schedules (a replay ratio that changes at given steps), validation on sources
that are not trained on, per-source curves."""

import json

import numpy as np
import pytest

from ember.data.loader import PackedLoader, parse_sources
from ember.data.prepare import prepare
from ember.train import ConfigError, parse_config, train

from .helpers import flags, run

SEQ = 16


def token_folder(tmp_path, name, letter, docs=60):
    """Numbered documents marked by a letter every 6 bytes: each row of a batch tells which
    source it came from, and no two windows are equal."""
    src = tmp_path / f"{name}.jsonl"
    src.write_text("".join(json.dumps({"text": f"{letter}{i:05d}" * 8}) + "\n" for i in range(docs)))
    prepare([str(src)], tmp_path / name, workers=1, val_per_mille=200, progress=False)
    return str(tmp_path / name)


def rows_from(batch, letter):
    return (batch["inputs"] == ord(letter)).any(dim=1)


def test_parse_options():
    a, b = parse_sources("x/a:0.3:tokens=2k:1000=0.1:500=0.2,C:/data/b:tokens=1.5M")
    assert (a.path, a.weight, a.tokens, a.schedule) == ("x/a", 0.3, 2000, ((500, 0.2), (1000, 0.1)))
    assert (b.path, b.weight, b.tokens) == ("C:/data/b", 1.0, 1_500_000)
    assert [a.weight_at(s) for s in (1, 499, 500, 999, 1000, 5000)] == [0.3, 0.3, 0.2, 0.2, 0.1, 0.1]
    assert parse_sources("new:0:100=1,old")[0].weight_at(100) == 1  # a source that starts later
    for bad, message in [
        ("a:0", "must be > 0"),
        ("a:1:5=0", "every weight is 0 from step 5"),
        ("a:1:0=2", "schedule step >= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_sources(bad)


def test_token_budget_repeats_a_fixed_subset(tmp_path):
    a = token_folder(tmp_path, "a", "a")
    full = PackedLoader(parse_sources(a), SEQ, 8, seed=3)
    budget = PackedLoader(parse_sources(f"{a}:tokens={5 * SEQ}"), SEQ, 8, seed=3)
    seen_full, seen = set(), []
    for _ in range(10):  # 80 windows: 16 epochs over the 5 kept
        seen_full.update(map(bytes, full.next_batch()["inputs"].numpy()))
        seen += list(map(bytes, budget.next_batch()["inputs"].numpy()))
    assert len(set(seen)) == 5 and len(seen_full) > 5
    assert all(seen.count(w) == 16 for w in set(seen))  # each epoch uses each kept window once
    with pytest.raises(ValueError, match="more than its"):
        PackedLoader(parse_sources(f"{a}:tokens=10M"), SEQ, 8)


def test_weight_schedule_switches_at_the_step(tmp_path):
    a, b = token_folder(tmp_path, "a", "a"), token_folder(tmp_path, "b", "b")
    loader = PackedLoader(parse_sources(f"{a}:1:4=0,{b}:0:4=1"), SEQ, 8, seed=0)
    from_b = [rows_from(loader.next_batch(), "b").float().mean().item() for _ in range(6)]
    assert from_b == [0, 0, 0, 1, 1, 1]  # steps 1-3 from a, 4 on from b
    # a replay ratio: 50/50, then about 10% of a from step 20
    loader = PackedLoader(parse_sources(f"{a}:1:20=0.1,{b}:1:20=0.9"), SEQ, 64, seed=1)
    share = [rows_from(loader.next_batch(), "a").float().mean().item() for _ in range(40)]
    assert abs(np.mean(share[:19]) - 0.5) < 0.05 and abs(np.mean(share[19:]) - 0.1) < 0.05


def test_resume_mid_schedule(tmp_path):
    a, b = token_folder(tmp_path, "a", "a"), token_folder(tmp_path, "b", "b")
    spec = parse_sources(f"{a}:1:tokens=100:3=0.2,{b}:1:3=0.8")
    one = PackedLoader(spec, SEQ, 8, seed=2)
    want = [one.next_batch()["inputs"] for _ in range(6)]
    two = PackedLoader(spec, SEQ, 8, seed=2)
    for _ in range(2):
        two.next_batch()
    again = PackedLoader(spec, SEQ, 8, seed=2)
    again.load_state_dict(two.state_dict())
    assert all((again.next_batch()["inputs"] == w).all() for w in want[2:])


def test_eval_source_errors_make_no_folder(tmp_path):
    with pytest.raises(ConfigError, match="eval.sources: .*absent: not a token folder"):
        train(parse_config(flags(tmp_path, "bad", f"--eval.sources={tmp_path}/absent")))
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_held_out_source_curves(tmp_path):
    a, b = token_folder(tmp_path, "a", "a", docs=200), token_folder(tmp_path, "b", "b", docs=200)
    out = run(
        tmp_path,
        "r",
        f"--data.sources={b}:tokens=2000",
        f"--eval.sources={a}",
        "--eval.every=3",
        "--data.seq_len=16",
        "--metrics.plot=true",
    )
    rows = [r for r in map(json.loads, (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) if "val_loss" in r]
    assert [r["step"] for r in rows] == [0, 3, 6]
    for r in rows:  # val_loss: the trained source's; the held-out one beside it
        assert r["val_loss"] == r[f"val_loss/{b}"] and f"val_loss/{a}" in r
    assert rows[-1][f"val_loss/{b}"] < rows[0][f"val_loss/{b}"]
    assert (tmp_path / "r" / "val_per_source.png").stat().st_size > 1000
    assert out["val_loss"] == rows[-1]["val_loss"]
