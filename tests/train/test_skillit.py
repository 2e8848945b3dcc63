"""Skill-it's online mixing: the rule against a direct computation, the skills graph's checks, the
loader state that carries the weights, and the configurations refused before anything is made."""

import json

import numpy as np
import pytest

from ember.data.loader import PackedLoader, parse_sources
from ember.data.mixing import load_graph, update
from ember.train import ConfigError, parse_config, train
from ember.train.plot import read_metrics

from .helpers import flags
from .test_mixing import token_folder


def direct(weights, losses, graph, eta):
    """The paper's rule as written: p_i ∝ p_i · exp(eta · Σ_j A_ij L_j)."""
    q = np.array(weights) * np.exp(eta * np.array(graph) @ np.array(losses))
    return q / q.sum()


def test_rule_matches_the_direct_computation():
    rng = np.random.default_rng(5)
    for k in (2, 3, 7):
        w, losses, graph = rng.random(k) + 0.1, rng.random(k) * 4, rng.normal(size=(k, k))
        for eta in (0.0, 0.3, 2.0):
            np.testing.assert_allclose(update(w, losses, graph, eta), direct(w, losses, graph, eta), rtol=1e-12)
    # unnormalized weights are normalized first; a weight of 0 does not stay 0 (it could never grow)
    np.testing.assert_allclose(update([2, 6], [1, 1], np.eye(2), 1.0), [0.25, 0.75], rtol=1e-12)
    assert 0 < update([0, 1, 1], [9, 1, 2], np.eye(3), 1.0)[0] < 1e-300


def test_a_weight_that_would_underflow_can_grow_again():
    """800 updates that favour source 0 take source 1 below exp(-745), where float64 holds 0 and
    the rule, multiplying by it, would keep it there whatever the later losses; as in exact
    arithmetic, a long enough run of updates favouring source 1 gives it the larger weight."""
    p = np.array([0.5, 0.5])
    for _ in range(800):
        p = update(p, [5.0, 3.0], np.eye(2), 0.5)
    assert 0 < p[1] < 1e-300
    for _ in range(800):
        p = update(p, [3.0, 5.0], np.eye(2), 0.5)
    assert p[1] > 0.5


def test_large_losses_and_eta_do_not_overflow():
    """exp(eta·A·L) alone overflows here; the rule only depends on the differences of eta·A·L."""
    w, losses = np.array([0.2, 0.5, 0.3]), np.array([1.5, 0.7, 2.2])
    small = update(w, losses, np.eye(3), 1.0)
    big = update(w, losses + 1e6, np.eye(3), 1.0)  # exp(1e6) is inf in float64
    assert np.all(np.isfinite(big)) and big.sum() == pytest.approx(1)
    np.testing.assert_allclose(big, small, rtol=1e-9)
    huge = update(w, [1000.0, 0.0, 0.0], np.eye(3), 50.0)
    np.testing.assert_allclose(huge, [1.0, 0.0, 0.0], atol=1e-300)
    with pytest.raises(ValueError, match="not finite"):
        update(w, [1.0, float("nan"), 0.0], np.eye(3), 1.0)
    with pytest.raises(ValueError, match="overflows"):  # else NaN weights, kept by the next checkpoint
        update(w, [5.0, 1.0, 1.0], np.diag([1e308, -1e308, 1.0]), 1.0)


def test_skills_graph_files(tmp_path):
    assert np.array_equal(load_graph("identity", 3), np.eye(3))
    plain, wrapped = tmp_path / "plain.json", tmp_path / "wrapped.json"
    plain.write_text("[[1, 0.5], [0, 2]]")
    wrapped.write_text(json.dumps({"sources": ["a", "b"], "graph": [[1, 0.5], [0, 2]]}))
    for f in (plain, wrapped):
        assert load_graph(str(f), 2).tolist() == [[1, 0.5], [0, 2]]
    for text, message in [
        ("[[1, 0], [0, 1], [0, 0]]", "2×2 matrix"),
        ("[[1, 0, 0], [0, 1, 0]]", "2×2 matrix"),
        ("[[1, NaN], [0, 1]]", "finite"),
        ('[[1, "x"], [0, 1]]', "finite"),
        ("[[true, 0], [0, 1]]", "finite"),
        ("{not json", "not JSON"),
    ]:
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(ValueError, match=message) as info:
            load_graph(str(bad), 2)
        assert str(bad) in str(info.value)
    with pytest.raises(ValueError, match="no such file"):
        load_graph(str(tmp_path / "missing.json"), 2)


def test_the_loader_state_carries_the_weights(tmp_path):
    a, b = token_folder(tmp_path, "a", "a"), token_folder(tmp_path, "b", "b")
    first = PackedLoader(parse_sources(f"{a},{b}"), 16, 8, seed=1)
    first.next_batch()
    first.set_mixture(np.array([0.9, 0.1]))
    state = first.state_dict()
    again = PackedLoader(parse_sources(f"{a},{b}"), 16, 8, seed=1)
    again.load_state_dict(state)
    assert again.mixture.tolist() == [0.9, 0.1] and again.mix_updates == 1
    for _ in range(3):
        x, y = first.next_batch(), again.next_batch()
        assert x["inputs"].equal(y["inputs"])


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--data.mixing_every=0",), "mixing_every >= 1"),
        (("--data.mixing_batches=0",), "mixing_batches >= 1"),
        (("--data.mixing_eta=inf",), "finite"),
        (("--data.skills_graph={graph}",), "2×2 matrix"),
        (("--data.sources={a}",), "two or more data.sources"),
        (("--data.sources={a},{b}:1:3=0.5",), "drop the STEP=WEIGHT schedule"),
        (("--data.mixing=fixed", "--data.skills_graph={graph}"), "needs data.mixing=skillit"),
    ],
)
def test_misuse_is_refused_before_anything_is_made(tmp_path, extra, message):
    a, b = token_folder(tmp_path, "a", "a"), token_folder(tmp_path, "b", "b")
    graph = tmp_path / "g.json"
    graph.write_text("[[1, 0, 0], [0, 1, 0], [0, 0, 1]]")
    args = [x.format(a=a, b=b, graph=graph) for x in ("--data.sources={a},{b}", "--data.mixing=skillit", *extra)]
    with pytest.raises(ConfigError, match=message):
        train(parse_config(flags(tmp_path / "runs", "r", *args)))
    assert not (tmp_path / "runs").exists()


def test_a_weights_row_does_not_hide_the_steps_loss_in_the_plots(tmp_path):
    rows = [{"step": 2, "loss": 1.0}, {"step": 2, "mix/a": 0.5}, {"step": 2, "task/x/acc": 0.3}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert sorted(map(sorted, read_metrics(tmp_path))) == [["loss", "step"], ["mix/a", "step"], ["step", "task/x/acc"]]


def test_a_run_names_its_skills_graph_absolutely(tmp_path, monkeypatch):
    """config.toml and checkpoints hold the graph file the run started with, not a name that a
    resume from another directory would read there."""
    from ember.train.run_data import absolute_paths

    monkeypatch.chdir(tmp_path)
    cfg = parse_config(["--data.mixing=skillit", "--data.skills_graph=graph.json"])
    assert absolute_paths(cfg).data.skills_graph == str(tmp_path / "graph.json")
    assert absolute_paths(parse_config(["--data.mixing=skillit"])).data.skills_graph == "identity"


def test_a_graph_of_other_sources_or_another_order_is_refused(tmp_path, monkeypatch):
    """`ember skills-graph` records the sources its rows and columns are; a run on them in another
    order (or on others) would raise the wrong weights."""
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "graph.json"
    f.write_text(json.dumps({"sources": [str(tmp_path / "a"), str(tmp_path / "b")], "graph": [[1, 0.5], [0, 2]]}))
    assert load_graph(str(f), 2, names=["a", "b"]).tolist() == [[1, 0.5], [0, 2]]  # the same folders, relative
    for names in (["b", "a"], ["a", "c"]):
        with pytest.raises(ValueError, match="relates the sources") as info:
            load_graph(str(f), 2, names=names)
        assert str(f) in str(info.value)
    token_folder(tmp_path, "b", "b")
    with pytest.raises(ConfigError, match="relates the sources"):  # before any folder is made
        train(parse_config(["--data.sources=stdlib,b", "--data.mixing=skillit", f"--data.skills_graph={f}"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "b.jsonl", "graph.json"]
