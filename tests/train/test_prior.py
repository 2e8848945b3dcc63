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
