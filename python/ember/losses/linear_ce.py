"""LinearCrossEntropyLoss: the output head and the cross-entropy in one module call, so model code
can drop `logits = lm_head(h); F.cross_entropy(logits, y)` and never hold the logits."""

from __future__ import annotations

import torch
from torch import nn

from ..amp import autocast_inputs
from ..ops import linear_cross_entropy
from .lm import IGNORE_INDEX


class LinearCrossEntropyLoss(nn.Module):
    """loss = ember.ops.linear_cross_entropy(hidden, lm_weight, target, weight, bias, ...).

    The module holds only the options; the head's weight (and bias) stay where the model keeps
    them and are passed in, so tied embeddings and FSDP-sharded heads work unchanged::

        self.loss_fn = LinearCrossEntropyLoss(z_loss=1e-4)
        loss = self.loss_fn(h, self.lm_head.weight, labels, weight=token_weights)

    Under autocast it computes as ``F.cross_entropy(lm_head(h), labels)`` does: the GEMM in
    autocast's dtype, the loss in fp32, each gradient in its tensor's dtype.
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
        _check_options(ignore_index, label_smoothing, z_loss, softcap, reduction)
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
        _check_inputs(target, weight)
        # Under autocast the head's GEMM runs in its dtype, as lm_head(h) would; the loss is fp32.
        hidden, lm_weight, bias = autocast_inputs(hidden, lm_weight, bias)
        loss = linear_cross_entropy(
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
        if loss.requires_grad and not torch.compiler.is_compiling():  # fullgraph: no hook on an intermediate
            loss.register_hook(_first_derivative_only)
        return loss

    def extra_repr(self) -> str:
        return (
            f"ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}, z_loss={self.z_loss}, "
            f"softcap={self.softcap}, reduction={self.reduction!r}"
        )


def _check_inputs(target: torch.Tensor, weight: torch.Tensor | None) -> None:
    """What the fused op would take silently: float targets (truncated to classes) and per-token
    weights that require grad (the op gives them none)."""
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(
            f"ember.losses.LinearCrossEntropyLoss: target must be an integer tensor of class indices, got {target.dtype}"
        )
    if weight is not None and weight.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            "ember.losses.LinearCrossEntropyLoss: weight requires grad, but the fused loss gives per-token weights "
            "no gradient; pass weight.detach(), or weigh the reduction='none' losses yourself for a gradient"
        )


def _first_derivative_only(grad: torch.Tensor) -> torch.Tensor:
    # Grad mode is on in a backward exactly when it builds a graph (create_graph=True): the fused
    # op's gradients have none, so a second derivative would silently miss the loss's part.
    if torch.is_grad_enabled():
        raise RuntimeError(
            "ember.losses.LinearCrossEntropyLoss: the fused loss has no second derivative, so a backward with "
            "create_graph=True (double backward, gradient penalties, Hessian-vector products) is refused; use "
            "F.cross_entropy(lm_head(h), y) for that computation"
        )
    return grad


def _check_options(ignore_index, label_smoothing, z_loss, softcap, reduction) -> None:
    """At construction, as the op would at the first call (which may be far into a run)."""

    def bad(key, want, got):
        raise ValueError(f"ember.losses.LinearCrossEntropyLoss: {key} must be {want}, got {got!r}")

    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    if not isinstance(ignore_index, int) or isinstance(ignore_index, bool):
        bad("ignore_index", "an int", ignore_index)
    if not (number(label_smoothing) and 0.0 <= label_smoothing <= 1.0):
        bad("label_smoothing", "in [0, 1]", label_smoothing)
    if not (number(z_loss) and 0.0 <= z_loss < float("inf")):
        bad("z_loss", "a finite float >= 0", z_loss)
    if softcap is not None and not (number(softcap) and 0.0 < softcap < float("inf")):
        bad("softcap", "a finite float > 0 or None", softcap)
    if reduction not in ("mean", "sum", "none"):
        bad("reduction", "'mean', 'sum' or 'none'", reduction)
