"""The causal-LM loss the trainer and the models use: Σ_i w_i · CE_i over the non-ignored tokens,
from the final hidden states and the output head (a sum: the caller divides by the number of
valid tokens of the whole global batch, as PRIOR and torch's "mean" do)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops.cross_entropy import IGNORE_INDEX  # noqa: F401  (the trainer and the patch import it from here)


def causal_lm_loss_sum(
    hidden: torch.Tensor,
    head_weight: torch.Tensor,
    targets: torch.Tensor,
    token_weights: torch.Tensor | None = None,
    fused_linear_ce: bool = True,
) -> torch.Tensor:
    """hidden (..., d), head_weight (V, d), targets (...) with IGNORE_INDEX for ignored tokens,
    token_weights (...) or None. Cross-entropy in fp32 whatever the compute dtype.

    fused_linear_ce: the head and the weighted loss through ember.ops.linear_cross_entropy (no
    N×V logits; tokens of weight 0 skip the GEMMs); otherwise F.linear + F.cross_entropy."""
    h = hidden.flatten(0, -2)
    y = targets.flatten()
    w = None if token_weights is None else token_weights.flatten()
    if fused_linear_ce:
        from ..amp import autocast_dtype_of
        from ..ops import linear_cross_entropy

        # Under autocast the GEMMs run in its dtype, as F.linear's would; the op takes one dtype.
        dtype = autocast_dtype_of(h)
        return linear_cross_entropy(
            h.to(dtype), head_weight.to(dtype), y, weight=w, ignore_index=IGNORE_INDEX, reduction="sum"
        )
    logits = F.linear(h, head_weight).float()
    per_token = F.cross_entropy(logits, y, reduction="none", ignore_index=IGNORE_INDEX)
    if w is not None:
        per_token = per_token * w.to(per_token.dtype)
    return per_token.sum()
