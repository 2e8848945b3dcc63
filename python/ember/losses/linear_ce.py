"""LinearCrossEntropyLoss: the output head and the cross-entropy in one module call, so model code
can drop `logits = lm_head(h); F.cross_entropy(logits, y)` and never hold the logits."""

from __future__ import annotations

import torch
from torch import nn

from ..ops import linear_cross_entropy
from .lm import IGNORE_INDEX


class LinearCrossEntropyLoss(nn.Module):
    """loss = ember.ops.linear_cross_entropy(hidden, lm_weight, target, weight, bias, ...).

    The module holds only the options; the head's weight (and bias) stay where the model keeps
    them and are passed in, so tied embeddings and FSDP-sharded heads work unchanged::

        self.loss_fn = LinearCrossEntropyLoss(z_loss=1e-4)
        loss = self.loss_fn(h, self.lm_head.weight, labels, weight=token_weights)
    """

    def __init__(
        self,
        ignore_index: int = IGNORE_INDEX,
        label_smoothing: float = 0.0,
        z_loss: float = 0.0,
        softcap: float | None = None,
        reduction: str = "mean",
    ):
        super().__init__()
        self.ignore_index, self.label_smoothing, self.z_loss = ignore_index, label_smoothing, z_loss
        self.softcap, self.reduction = softcap, reduction

    def forward(
        self,
        hidden: torch.Tensor,
        lm_weight: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return linear_cross_entropy(
            hidden,
            lm_weight,
            target,
            weight,
            bias,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            z_loss=self.z_loss,
            softcap=self.softcap,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}, z_loss={self.z_loss}, "
            f"softcap={self.softcap}, reduction={self.reduction!r}"
        )
