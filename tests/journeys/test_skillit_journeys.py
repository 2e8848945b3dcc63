"""Skill-it through `ember`: a run whose source weights move and are logged and plotted; the skills
graph estimated from its checkpoint and trained with; a run killed mid-way and resumed gives the
uninterrupted run's losses and weights bit for bit; two ranks give one rank's numbers."""

import json

import pytest

from ember.train.faults import ENV as CRASH_AT
from tests.train.helpers import cli, flags
from tests.train.test_mixing import token_folder

pytestmark = pytest.mark.slow


def skillit(tmp_path, *extra):
    a, b = token_folder(tmp_path, "a", "a"), token_folder(tmp_path, "b", "b")
    return (
        f"--data.sources={a},{b}:3",
        "--data.mixing=skillit",
        "--data.mixing_every=2",
        "--data.mixing_eta=2",
        *extra,
    )


def rows(run_dir, key):
    """{step: value} of each metrics.jsonl row holding `key` ('mix/': every mix/<source> value)."""
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        got = {k: v for k, v in r.items() if k.startswith(key)} if key.endswith("/") else r.get(key)
        if got:
            out[r["step"]] = got
    return out


def test_weights_move_are_logged_and_plotted_and_the_graph_is_estimated(tmp_path):
    opts = skillit(tmp_path, "--metrics.plot=true")
    r = cli("train", *flags(tmp_path, "run", *opts))
    assert r.returncode == 0, r.stderr[-3000:]
    mix = rows(tmp_path / "run", "mix/")
    assert list(mix) == [0, 2, 4, 6]
    assert [round(sum(m.values()), 12) for m in mix.values()] == [1.0] * 4
    assert list(mix[0].values()) == [0.25, 0.75]  # data.sources' weights, normalized
    assert mix[2] != mix[0] and mix[4] != mix[2]
    assert (tmp_path / "run" / "mix.png").is_file()

    graph = tmp_path / "graph.json"
    a, b = tmp_path / "a", tmp_path / "b"
    r = cli("skills-graph", str(tmp_path / "run"), f"--data.sources={a},{b}", "--steps=3", f"--out={graph}")
    assert r.returncode == 0, r.stderr[-3000:]
    written = json.loads(graph.read_text())
    assert len(written["graph"]) == 2 and all(len(row) == 2 for row in written["graph"])
    assert written["graph"][0][0] > 0 and written["graph"][1][1] > 0  # training on a source lowers its loss
    assert f"{written['graph'][0][1]:.4f}" in r.stdout
    again = cli("skills-graph", str(tmp_path / "run"), f"--data.sources={a},{b}", "--steps=3", f"--out={graph}")
    assert again.returncode == 1 and "exists" in again.stderr
    other = tmp_path / "other.json"
    unknown = cli(
        "skills-graph", str(tmp_path / "run"), f"--data.sources={a},{tmp_path}/c", "--steps=3", f"--out={other}"
    )
    assert unknown.returncode == 1 and "c: not a token folder" in unknown.stderr and not other.exists()

    r = cli("train", *flags(tmp_path, "graph", *opts, f"--data.skills_graph={graph}"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert rows(tmp_path / "graph", "mix/")[2] != mix[2]


def test_a_killed_run_resumes_to_the_same_losses_and_weights(tmp_path):
    opts = skillit(tmp_path, "--checkpoint.every=2")
    r = cli("train", *flags(tmp_path, "whole", *opts))
    assert r.returncode == 0, r.stderr[-3000:]
    r = cli("train", *flags(tmp_path, "killed", *opts), env={CRASH_AT: "step:5"})
    assert r.returncode == -9, r.stderr[-3000:]
    r = cli("train", *flags(tmp_path, "killed", *opts, "--checkpoint.resume=latest"))
    assert r.returncode == 0, r.stderr[-3000:]
    for key in ("loss", "mix/"):
        whole, resumed = rows(tmp_path / "whole", key), rows(tmp_path / "killed", key)
        assert resumed == whole, key  # bit for bit
    assert list(rows(tmp_path / "whole", "mix/")) == [0, 2, 4, 6]


def test_two_ranks_give_one_ranks_losses_and_weights(tmp_path):
    opts = skillit(tmp_path, "--training.steps=4")
    got = {}
    for name, ranks, parallel in (("one", 0, "ddp"), ("ddp", 2, "ddp"), ("fsdp", 2, "fsdp")):
        r = cli("train", *flags(tmp_path, name, *opts, f"--training.parallel={parallel}"), nproc=ranks)
        assert r.returncode == 0, r.stderr[-3000:]
        got[name] = (rows(tmp_path / name, "loss"), rows(tmp_path / name, "mix/"))
    losses, mix = got["one"]
    assert list(mix) == [0, 2, 4] and len(losses) == 4
    for name in ("ddp", "fsdp"):  # the ranks sum in another order
        assert got[name][0] == pytest.approx(losses, rel=1e-5), name
        assert list(got[name][1]) == list(mix), name
        for step, weights in mix.items():  # from those losses: eta·(A·ΔL) apart
            assert got[name][1][step] == pytest.approx(weights, rel=1e-5), (name, step)
