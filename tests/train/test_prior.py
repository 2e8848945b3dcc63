"""PRIOR token weights against hand-computed values."""

import math

import pytest
import torch

from ember.losses import prior_token_weights


def test_hand_computed_segments():
    p = torch.tensor([0.5, 0.9, 0.0, 0.75, 0.25, 1.0, 1.0])
    seg = torch.tensor([0, 0, 0, 7, 7, 3, 3])
    w = prior_token_weights(p.log(), alpha=1.0, segment_ids=seg)
    # segment 0: 1-p = .5, .1, 1 (sum 1.6, k 3); segment 7: .25, .75 (sum 1, k 2); segment 3: all 0.
    expected = torch.tensor([0.5 * 3 / 1.6, 0.1 * 3 / 1.6, 1.0 * 3 / 1.6, 0.5, 1.5, 0.0, 0.0])
    torch.testing.assert_close(w, expected)
    assert not torch.isnan(w).any()


def test_alpha_ignore_mask_and_one_segment():
    lp = torch.tensor([[math.log(0.5), math.log(0.2)], [math.log(0.6), 0.0]], dtype=torch.float64)
    ignore = torch.tensor([[False, False], [False, True]])
    w = prior_token_weights(lp, alpha=2.0, ignore_mask=ignore)
    raw = torch.tensor([[0.25, 0.64], [0.16, 0.0]])
    torch.testing.assert_close(w, raw * 3 / raw.sum())
    assert w.dtype == torch.float32 and w.shape == lp.shape
    assert w[~ignore].mean().item() == pytest.approx(1.0)
    # alpha 0: every counted token weighs 1
    torch.testing.assert_close(prior_token_weights(lp, alpha=0.0, ignore_mask=ignore), (~ignore).float())


def test_random_segments_average_one():
    g = torch.Generator().manual_seed(0)
    lp = -torch.rand(1000, generator=g) * 5
    seg = torch.randint(0, 13, (1000,), generator=g)
    w = prior_token_weights(lp, segment_ids=seg)
    for s in seg.unique():
        assert w[seg == s].mean().item() == pytest.approx(1.0, rel=1e-5)
    ref = 1 - lp.double().exp()
    i = seg == seg[0]
    torch.testing.assert_close(w[i].double(), ref[i] / ref[i].mean(), rtol=1e-6, atol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="segment_ids has shape"):
        prior_token_weights(torch.zeros(3), segment_ids=torch.zeros(4))
    with pytest.raises(ValueError, match="contains NaN"):
        prior_token_weights(torch.tensor([0.0, float("nan")]))
    with pytest.raises(TypeError, match="floating point"):
        prior_token_weights(torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), -1.0])
def test_alpha_outside_its_range(alpha):
    with pytest.raises(ValueError, match="alpha must be"):
        prior_token_weights(torch.tensor([-0.5, -1.0]), alpha=alpha)


@pytest.fixture
def tok_folder(tmp_path):
    from ember.data import prepare

    (tmp_path / "docs.txt").write_text("def f(x):\n    return x\n" * 40)
    prepare([str(tmp_path / "docs.txt")], tmp_path / "tok", workers=1, progress=False)
    return tmp_path / "tok"


@pytest.mark.parametrize(
    "flag, value", [("--seq-len", "-5"), ("--batch-size", "-1"), ("--batch-size", "0"), ("--alpha", "nan")]
)
def test_score_checks_its_arguments_first(tok_folder, capsys, flag, value):
    from ember.cli import main

    assert main(["score", str(tok_folder / "no-run"), "--data", str(tok_folder), flag, value]) == 1
    assert f"ember score: error: {flag} must be" in capsys.readouterr().err
    assert not list(tok_folder.glob("weights*"))


@pytest.mark.parametrize("mean", [0.0, float("nan")])
def test_training_refuses_all_zero_or_nonfinite_weights(tmp_path, tok_folder, mean):
    import json

    import numpy as np

    from ember.train import ConfigError, parse_config
    from ember.train.preflight import check_config

    index = json.loads((tok_folder / "index.json").read_text())
    for e in index["splits"]["train"]:
        np.full(e["tokens"], mean, np.float32).tofile(tok_folder / f"weights-{e['file']}")
    (tok_folder / "weights.json").write_text(json.dumps({"method": "prior", "mean_weight": mean}))
    flags = [f"--data.sources={tok_folder}", f"--loss.token_weights={tok_folder}", "--data.seq_len=16"]
    with pytest.raises(ConfigError, match="weights.json: the token weights average"):
        check_config(parse_config(flags))


def test_score_without_the_gpu_it_asks_for(tok_folder, capsys):
    import torch

    from ember.cli import main

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert main(["score", str(tok_folder / "no-run"), "--data", str(tok_folder), "--device", "cuda"]) == 1
    assert "ember score: error: --device cuda: job.device=cuda but no GPU is visible" in capsys.readouterr().err
