"""The causal-LM loss the trainer owns and hands to the model's forward: Σ_i w_i · CE_i over the non-ignored tokens,
from the final hidden states and the output head (a sum: the caller divides by the number of
valid tokens of the whole global batch, as PRIOR and torch's "mean" do)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .distill import Distillation

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


@dataclass(frozen=True)
class CausalLMLoss:
    """The training loss as one callable: Σ w_i·CE_i (fused or not) plus, with `distill`, λ·KL to
    a frozen teacher in training forwards (validation stays plain CE). The trainer builds it
    (ember.train.build.build_loss) and passes it to the model's forward, which computes it there
    so that DDP and FSDP wrappers see the output head used; the model holds no loss."""

    fused_linear_ce: bool = True
    distill: Distillation | None = None

    def __call__(self, tokens, hidden, head_weight, targets, token_weights=None) -> torch.Tensor:
        loss = causal_lm_loss_sum(hidden, head_weight, targets, token_weights, self.fused_linear_ce)
        if self.distill is not None and torch.is_grad_enabled():
            loss = loss + self.distill.loss_sum(tokens, hidden, head_weight, targets)
        return loss
