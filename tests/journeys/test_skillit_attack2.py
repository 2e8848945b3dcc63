"""Skill-it as users drive it: a skills graph named relatively, resumed from another directory
(where a file of the same name is another graph); `ember skills-graph` given sizes of 0."""

import json

import pytest

from ember.cli import main as ember_main
from ember.train import parse_config, train
from tests.train.helpers import flags
from tests.train.test_mixing import token_folder

pytestmark = pytest.mark.slow


def mix_rows(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    mixes = [(r["step"], {k: v for k, v in r.items() if k.startswith("mix/")}) for r in rows]
    return {step: mix for step, mix in mixes if mix}


def test_a_relative_skills_graph_is_the_runs_own_on_resume_from_another_directory(tmp_path, monkeypatch):
    a, b = token_folder(tmp_path, "a", "a"), token_folder(tmp_path, "b", "b")
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir(), elsewhere.mkdir()
    (project / "graph.json").write_text("[[1, 0.5], [0.2, 1]]")
    (elsewhere / "graph.json").write_text("[[0, 0], [3, 0]]")  # same name, another graph
    opts = [f"--data.sources={a},{b}", "--data.mixing=skillit", "--data.mixing_every=2", "--data.mixing_eta=2"]
    opts += ["--data.skills_graph=graph.json", "--checkpoint.every=2"]
    monkeypatch.chdir(project)
    train(parse_config(flags(tmp_path, "run", *opts)))
    whole = mix_rows(tmp_path / "run")
    monkeypatch.chdir(elsewhere)  # rewound to step 4 by the run's own config.toml
    rewind = f"--checkpoint.resume={tmp_path / 'run' / 'checkpoints' / 'step-00000004'}"
    train(parse_config(["--config", str(tmp_path / "run" / "config.toml"), rewind]))
    assert list(whole) == [0, 2, 4, 6] and mix_rows(tmp_path / "run") == whole


def test_skills_graph_refuses_sizes_of_zero_before_training(tmp_path, capsys):
    a, b = token_folder(tmp_path, "a", "a"), token_folder(tmp_path, "b", "b")
    train(parse_config(flags(tmp_path, "run", f"--data.sources={a},{b}", "--training.steps=2")))
    before = sorted(p.name for p in tmp_path.iterdir())
    for flag in ("--training.batch_size=0", "--eval.batch_size=0", "--data.mixing_batches=0"):
        out = tmp_path / "graph.json"
        code = ember_main(["skills-graph", str(tmp_path / "run"), "--steps=1", f"--out={out}", flag])
        err = capsys.readouterr().err
        assert code == 1 and f"ember skills-graph: error: {flag.split('=')[0]} must be >= 1" in err, err
        assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_skills_graph_trains_on_a_sources_token_budget(tmp_path, capsys):
    """A source with tokens=N trains on its fixed subset in the run; the graph's steps on it do too."""
    a, b = token_folder(tmp_path, "a", "a"), token_folder(tmp_path, "b", "b")
    train(parse_config(flags(tmp_path, "run", f"--data.sources={a},{b}", "--training.steps=2")))
    rows = {}
    for name, source in (("all", a), ("budget", f"{a}:tokens=64")):
        out = tmp_path / f"{name}.json"
        args = [str(tmp_path / "run"), "--steps=2", f"--out={out}", f"--data.sources={source},{b}"]
        assert ember_main(["skills-graph", *args]) == 0, capsys.readouterr().err
        rows[name] = json.loads(out.read_text())["graph"]
    assert rows["budget"][0] != rows["all"][0]  # trained on a's one budgeted window, not all of a
    assert rows["budget"][1] == rows["all"][1]


def test_skills_graph_of_a_float8_run_trains_and_evaluates_in_float8(tmp_path, capsys):
    """The run's losses (Skill-it's too) come from its Float8Linear blocks; the graph's do as well:
    on the run's validation windows, its losses before training are the run's last ones."""
    a, b = token_folder(tmp_path, "a", "a"), token_folder(tmp_path, "b", "b")
    fp8 = [f"--data.sources={a},{b}", "--training.steps=2", "--float8.recipe=tensorwise"]
    train(parse_config(flags(tmp_path, "run", *fp8)))
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "val_loss" in r][-1]
    graphs = {}
    for name, extra in (("fp8", []), ("plain", ["--float8.recipe="])):
        out = tmp_path / f"{name}.json"
        args = ["skills-graph", str(tmp_path / "run"), "--steps=1", f"--out={out}", "--data.mixing_batches=1"]
        assert ember_main([*args, *extra]) == 0, capsys.readouterr().err
        graphs[name] = json.loads(out.read_text())
    assert graphs["fp8"]["loss_before"] == [last[f"val_loss/{a}"], last[f"val_loss/{b}"]]
    assert graphs["fp8"]["graph"] != graphs["plain"]["graph"]
