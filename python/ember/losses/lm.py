"""The causal-LM loss the trainer and the models use: Σ_i w_i · CE_i over the non-ignored tokens,
from the final hidden states and the output head (a sum: the caller divides by the number of
valid tokens of the whole global batch, as PRIOR and torch's "mean" do)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def causal_lm_loss_sum(hidden: torch.Tensor, head_weight: torch.Tensor, targets: torch.Tensor,
                       token_weights: torch.Tensor | None = None, fused_linear_ce: bool = False) -> torch.Tensor:
    """hidden (..., d), head_weight (V, d), targets (...) with IGNORE_INDEX for ignored tokens,
    token_weights (...) or None. Cross-entropy in fp32 whatever the compute dtype.

    fused_linear_ce: the head and the loss without the full logits (torch's chunked
    F.linear_cross_entropy, until ember's fused kernel lands)."""
    h = hidden.flatten(0, -2)
    y = targets.flatten()
    if fused_linear_ce:
        per_token = F.linear_cross_entropy(h, head_weight, y, reduction="none", ignore_index=IGNORE_INDEX,
                                           options=torch.nn.LinearCrossEntropyOptions())
    else:
        logits = F.linear(h, head_weight).float()
        per_token = F.cross_entropy(logits, y, reduction="none", ignore_index=IGNORE_INDEX)
    per_token = per_token.float()
    if token_weights is not None:
        per_token = per_token * token_weights.flatten().to(per_token.dtype)
    return per_token.sum()
