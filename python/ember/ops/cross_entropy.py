"""cross_entropy ops: per-token weighted cross-entropy on logits, and linear + cross-entropy that
never holds the N×V logits. The per-token formula is in include/ember/cross_entropy.h:

    loss_i = w_i·[(1−ls)·(lse_i − z_{i,y}) + ls·(lse_i − mean_v z_{i,v}) + z_loss·lse_i²]

after z ← c·tanh(z/c) when softcap=c; 0 for ignored tokens. "mean" divides the sum by the number
of non-ignored tokens (not by Σw), as PRIOR and torch do. The token weights are constants (no
gradient flows to them), as are the log-probs and entropies these ops also return.

Special values (the same on CPU and CUDA; tests/fuzz/test_cross_entropy.py holds them to a float64
reference, ember/reference/cross_entropy.py):
- a −inf logit (a masked token, a −inf bias) is a class of probability 0: it adds nothing to lse
  or the entropy and gets gradient 0. A −inf *target* logit gives loss +inf and log-prob −inf
  (with a finite gradient); with label smoothing, any −inf logit makes the loss +inf (the
  smoothed target puts mass on an impossible class). The softcap maps ±inf to ±c first.
- a row whose logits are all −inf has no distribution: lse −inf; loss, log-prob, entropy and
  gradient NaN.
- a NaN or +inf logit makes its row's lse, loss, log-prob, entropy and gradient NaN.
- an ignored token, or one of weight 0, has loss 0 and gradient exactly 0 whatever its logits
  (and, in linear_cross_entropy, never reaches a GEMM: its lse is reported as 0). Otherwise a
  weight or upstream gradient is a plain factor: NaN or ±inf propagates to that token's loss
  and gradient.
- a target outside [0, V) that is not ignore_index is an error (one host sync checks it).
- reduction="mean" with every target ignored (a padding-only micro-batch) is torch's empty mean:
  the loss is NaN (0/0) and every gradient is exactly 0 (not the upstream 1/0 times 0).
- refused, as torch refuses them or before a silent wrong answer: a float or bool target, a
  target (or weight) of another shape than the logits' batch dims (either side may be flat),
  weights that require grad (in grad mode), a softcap that is not a finite float32, and a backward with create_graph=True (no second
  derivative: the gradient would lack the loss's own part).
The gradient is as accurate as torch's fp32 one at any logit scale: the lse the ops return (float64)
is max + log Σ exp(z − max) without rounding, and p = exp((z − max) − log Σ) in effect.
Logits may be any view whose rows are contiguous along V (row-sliced, offset, expanded); the
gradient is a new contiguous tensor, or (inplace_backward) the logits themselves, whose rows must
then be at least V elements apart (an expanded or overlapping view is refused). In place, logits
must be computed in the graph (a leaf, or a view of one, would lose its values and share them with
its .grad), and the backward marks them modified: an op that saved them, or a second backward
through a retained graph, gets autograd's "modified by an inplace operation" error.
"""

from __future__ import annotations

import math

import torch

from .. import kernels
from . import reference_path
from .fake import register_fake
from .forward_ad import refuse_forward_ad

IGNORE_INDEX = -100  # the target that marks a token to skip (torch's default)

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(op: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"ember.ops.{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _reduce(loss: torch.Tensor, target: torch.Tensor, ignore_index: int, reduction: str, shape) -> torch.Tensor:
    if reduction == "none":
        return loss.view(shape)
    if reduction == "sum":
        return loss.sum()
    count = (target != ignore_index).sum()
    # no host sync. An empty mean is NaN, as torch's, with gradients 0: the NaN is chosen by
    # where (whose unchosen branch gets no gradient), not made by 0/0 (whose gradient is 1/0)
    return torch.where(count > 0, loss.sum() / count.clamp_min(1), float("nan"))


def _check_inputs(op: str, batch_shape, target: torch.Tensor, weight: torch.Tensor | None, softcap) -> None:
    """What the kernels would take silently: a float or bool target (truncated to classes; torch
    refuses it), a target or weight of another shape with as many elements (a transposed target:
    each token scored against another's label; flat on either side is fine), per-token weights
    that require grad (they get none) and a softcap that is not a finite float32 (c·tanh(z/c)
    with c = inf is inf·0: every loss NaN)."""
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"ember.ops.{op}: target must be an integer tensor of class indices, got {target.dtype}")
    batch_shape = tuple(batch_shape)
    if target.dim() != 1 and len(batch_shape) != 1 and tuple(target.shape) != batch_shape:
        raise ValueError(
            f"ember.ops.{op}: target must have shape {batch_shape} (the inputs' but the last dim) or be flat, "
            f"got {tuple(target.shape)}"
        )
    if weight is not None and weight.dim() != 1 and target.dim() != 1 and weight.shape != target.shape:
        raise ValueError(
            f"ember.ops.{op}: weight must have the target's shape {tuple(target.shape)} or be flat, "
            f"got {tuple(weight.shape)}"
        )
    if weight is not None and weight.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            f"ember.ops.{op}: weight requires grad, but the per-token weights get no gradient; pass "
            "weight.detach(), or weigh the reduction='none' losses yourself for a gradient"
        )
    if softcap is not None and not (math.isfinite(softcap) and abs(softcap) <= torch.finfo(torch.float32).max):
        raise ValueError(f"ember.ops.{op}: softcap must be a finite float32 > 0 or None, got {softcap}")


def _first_derivative_only(op: str, *tensors: torch.Tensor) -> None:
    # Grad mode is on in a backward exactly when it builds a graph (create_graph=True); the
    # kernels' gradients have none, so a second derivative would silently lack the loss's part.
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        raise RuntimeError(
            f"ember.ops.{op}: no second derivative (a backward with create_graph=True: double backward, "
            "gradient penalties, Hessian-vector products); use F.cross_entropy for that computation"
        )


def _rows(target: torch.Tensor, weight: torch.Tensor | None):
    y = target.reshape(-1)
    if y.dtype != torch.long:
        y = y.long()
    w = None if weight is None else weight.detach().reshape(-1).float().contiguous()
    return y.contiguous(), w


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    reduction: str = "mean",
    inplace_backward: bool = False,
) -> torch.Tensor:
    """Cross-entropy of logits (..., V) against target (...) with per-token weights (shape of
    target). fp32 math for any input dtype. ``inplace_backward=True`` writes the gradient into the
    logits buffer (the caller must not use the logits after backward; eager mode only)."""
    _check_reduction("cross_entropy", reduction)
    _check_inputs("cross_entropy", logits.shape[:-1], target, weight, softcap)
    refuse_forward_ad("cross_entropy", logits, weight)
    inplace = inplace_backward and torch.is_grad_enabled() and logits.requires_grad
    if inplace and (logits if logits._base is None else logits._base).is_leaf:
        raise ValueError(
            "ember.ops.cross_entropy: inplace_backward=True would write the gradient over a leaf tensor (logits is "
            "a parameter or input that requires grad, or a view of one); pass logits computed in the graph"
        )
    vocab = logits.shape[-1]
    z = logits.reshape(math.prod(logits.shape[:-1]), vocab)  # not -1: ambiguous when V == 0
    y, w = _rows(target, weight)
    args = (ignore_index, float(label_smoothing), float(z_loss), float(softcap or 0.0))
    if kernels.disabled("cross_entropy.rows"):
        return _reduce(reference_path.ce_rows(z, y, w, *args)[0], y, ignore_index, reduction, target.shape)
    if inplace:
        loss = _InplaceCrossEntropy.apply(z, y, w, args)
    else:
        loss = torch.ops.ember.cross_entropy_forward(z, y, w, *args, False, False)[0]
    return _reduce(loss, y, ignore_index, reduction, target.shape)


def cross_entropy_stats(logits, target, ignore_index: int = IGNORE_INDEX, softcap: float | None = None):
    """(log p(target), entropy) per token, fp32, 0 for ignored tokens. No gradient."""
    _check_inputs("cross_entropy_stats", logits.shape[:-1], target, None, softcap)
    z = logits.detach().reshape(math.prod(logits.shape[:-1]), logits.shape[-1])
    y, _ = _rows(target, None)
    cap = float(softcap or 0.0)
    if kernels.disabled("cross_entropy.rows"):
        _, lp, ent = reference_path.ce_rows(z, y, None, ignore_index, 0.0, 0.0, cap)
        return lp.view(target.shape), ent.view(target.shape)
    _, _, lp, ent = torch.ops.ember.cross_entropy_forward(z, y, None, ignore_index, 0.0, 0.0, cap, True, True)
    return lp.view(target.shape), ent.view(target.shape)


class _InplaceCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, y, w, args):
        loss, lse, _, _ = torch.ops.ember.cross_entropy_forward(z, y, w, *args, False, False)
        ctx.save_for_backward(z, y, lse, *(() if w is None else (w,)))
        ctx.args, ctx.weighted = args, w is not None
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        z, y, lse, *w = ctx.saved_tensors
        _first_derivative_only("cross_entropy", grad_loss, z)
        torch.ops.ember.cross_entropy_backward_(z, grad_loss.float(), y, w[0] if ctx.weighted else None, lse, *ctx.args)
        # The logits now hold the gradient: a node that saved them (or a second backward through
        # a retained graph) must fail autograd's version check rather than read it.
        torch.autograd.graph.increment_version(z)
        return z, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    lm_weight: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    reduction: str = "mean",
    return_logprobs: bool = False,
    return_entropy: bool = False,
):
    """Cross-entropy of logits = hidden (..., d) · lm_weight (V, d)ᵀ (+ bias) without ever holding
    them: chunks of rows are multiplied, reduced and, when gradients are needed, differentiated
    in the same pass (6·N·d·V FLOPs; a backward with per-token upstream gradients, as for
    reduction="none", recomputes the logits: 8·N·d·V). Ignored rows and rows of weight 0 never
    reach a GEMM. Returns the loss, or (loss, logprobs[, entropy]) — per-token log p(target) and
    entropy from the same pass (0 for ignored tokens), as the PRIOR scoring pass needs. With every
    target ignored, reduction="mean" gives NaN (torch's empty mean) and gradients exactly 0."""
    _check_reduction("linear_cross_entropy", reduction)
    if return_entropy and not return_logprobs:
        raise ValueError("ember.ops.linear_cross_entropy: return_entropy=True needs return_logprobs=True")
    _check_inputs("linear_cross_entropy", hidden.shape[:-1], target, weight, softcap)
    refuse_forward_ad("linear_cross_entropy", hidden, lm_weight, bias, weight)
    h = hidden.reshape(math.prod(hidden.shape[:-1]), hidden.shape[-1])  # not -1: ambiguous when d == 0
    y, w = _rows(target, weight)
    if kernels.disabled("cross_entropy.rows"):
        args = (ignore_index, float(label_smoothing), float(z_loss), float(softcap or 0.0))
        loss, lp, ent = reference_path.linear_ce_rows(h, lm_weight, y, w, bias, *args)
        extra = (lp.view(target.shape),) + ((ent.view(target.shape),) if return_entropy else ())
        out = _reduce(loss, y, ignore_index, reduction, target.shape)
        return (out, *extra) if return_logprobs else out
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, lm_weight, bias))
    compute_grad = needs_grad and reduction != "none"
    loss, _, lp, ent, *_ = torch.ops.ember.linear_cross_entropy_forward(
        h,
        lm_weight,
        y,
        w,
        bias,
        ignore_index,
        float(label_smoothing),
        float(z_loss),
        float(softcap or 0.0),
        compute_grad,
        return_logprobs,
        return_entropy,
    )
    out = _reduce(loss, y, ignore_index, reduction, target.shape)
    if not return_logprobs:
        return out
    extra = (lp.view(target.shape),) + ((ent.view(target.shape),) if return_entropy else ())
    return (out, *extra)


# ---- fake kernels ------------------------------------------------------------------------------------
@register_fake("ember::cross_entropy_forward")
def _ce_forward_fake(logits, target, weight, ignore_index, ls, zl, cap, logprobs, entropy):
    torch._check(
        logits.dim() == 2, lambda: f"ember.cross_entropy_forward: logits must be 2-D, got {tuple(logits.shape)}"
    )
    n = logits.shape[0]
    f = lambda k: logits.new_empty((k,), dtype=torch.float32)  # noqa: E731
    return f(n), logits.new_empty((n,), dtype=torch.float64), f(n if logprobs else 0), f(n if entropy else 0)


@register_fake("ember::cross_entropy_backward")
def _ce_backward_fake(grad_loss, logits, target, weight, lse, *args):
    return torch.empty_like(logits)


@register_fake("ember::cross_entropy_backward_")
def _ce_backward_inplace_fake(logits, grad_loss, target, weight, lse, *args):
    return None


@register_fake("ember::linear_cross_entropy_forward")
def _linear_forward_fake(
    hidden, lm_weight, target, weight, bias, ignore_index, ls, zl, cap, compute_grad, logprobs, entropy
):
    n, d, v = hidden.shape[0], hidden.shape[1], lm_weight.shape[0]
    f = lambda *shape, dtype=torch.float32: hidden.new_empty(shape, dtype=dtype)  # noqa: E731
    return (
        f(n),
        f(n, dtype=torch.float64),
        f(n if logprobs else 0),
        f(n if entropy else 0),
        f(n, d, dtype=hidden.dtype) if compute_grad else f(0),
        f(v, d, dtype=lm_weight.dtype) if compute_grad else f(0),
        f(v, dtype=bias.dtype) if compute_grad and bias is not None else f(0),
    )


@register_fake("ember::linear_cross_entropy_backward")
def _linear_backward_fake(grad_loss, hidden, lm_weight, target, weight, bias, lse, *args):
    return (
        torch.empty_like(hidden),
        torch.empty_like(lm_weight),
        torch.empty_like(bias) if bias is not None else hidden.new_empty((0,), dtype=torch.float32),
    )


# ---- autograd ----------------------------------------------------------------------------------------
def _ce_setup(ctx, inputs, output):
    logits, target, weight, ignore_index, ls, zl, cap, _, _ = inputs
    ctx.save_for_backward(logits, target, weight, output[1])
    ctx.args = (ignore_index, ls, zl, cap)
    ctx.mark_non_differentiable(*output[1:])
    ctx.set_materialize_grads(False)


def _ce_backward(ctx, grad_loss, *_):
    logits, target, weight, lse = ctx.saved_tensors
    if grad_loss is None or not ctx.needs_input_grad[0]:
        return (None,) * 9
    _first_derivative_only("cross_entropy", grad_loss, logits)
    grad = torch.ops.ember.cross_entropy_backward(grad_loss.float(), logits, target, weight, lse, *ctx.args)
    return (grad,) + (None,) * 8


torch.library.register_autograd("ember::cross_entropy_forward", _ce_backward, setup_context=_ce_setup)


def _linear_setup(ctx, inputs, output):
    hidden, lm_weight, target, weight, bias, ignore_index, ls, zl, cap, compute_grad, _, _ = inputs
    _, lse, _, _, dh, dw, db = output
    ctx.save_for_backward(hidden, lm_weight, target, weight, bias, lse)
    ctx.args = (ignore_index, ls, zl, cap)
    # The forward's gradients are held by the node alone (not as saved tensors), so the backward
    # can hand them over without autograd copying them into .grad.
    ctx.grads = [dh, dw, db] if compute_grad else None
    ctx.mark_non_differentiable(*output[1:])  # only the loss carries a gradient
    ctx.set_materialize_grads(False)  # else autograd allocates zero gradients for dlm_weight & co.


def _scale_forward_grads(grads, grad_loss, target, weight, ignore_index, has_bias):
    """The forward's gradients times s, the one upstream gradient of every token. The rows of
    skipped tokens (ignored, weight 0) stay exactly 0, and dW and db are 0 when no token counts,
    whatever s (0·inf is NaN), as the backward op and torch give them."""
    dh, dw, db = grads
    s = grad_loss[0] if grad_loss.numel() else grad_loss.new_zeros(())
    skip = target == ignore_index
    if weight is not None:
        skip = skip | (weight == 0)
    dh = dh.mul_(torch.where(skip, 0.0, s).to(dh.dtype)[:, None])
    s = torch.where(skip.all(), 0.0, s)
    return dh, dw.mul_(s.to(dw.dtype)), db.mul_(s.to(db.dtype)) if has_bias else None


def _linear_backward(ctx, grad_loss, *_):
    hidden, lm_weight, target, weight, bias, lse = ctx.saved_tensors
    if grad_loss is None:
        return (None,) * 12
    _first_derivative_only("linear_cross_entropy", grad_loss, hidden, lm_weight, bias)
    has_bias = bias is not None
    uniform = grad_loss.dim() == 1 and (grad_loss.numel() == 0 or grad_loss.stride(0) == 0)
    if ctx.grads is not None and uniform:
        # One upstream gradient for every token (a sum or a mean): scale the forward's gradients
        # in place and give them away (a second backward through a retained graph recomputes).
        grads, ctx.grads, ctx.non_differentiable = ctx.grads, None, None  # .grad takes them as they are
        dh, dw, db = _scale_forward_grads(grads, grad_loss, target, weight, ctx.args[0], has_bias)
    else:
        dh, dw, db = torch.ops.ember.linear_cross_entropy_backward(
            grad_loss.float(), hidden, lm_weight, target, weight, bias, lse, *ctx.args
        )
        db = db if has_bias else None
    return (dh, dw, None, None, db) + (None,) * 7


torch.library.register_autograd("ember::linear_cross_entropy_forward", _linear_backward, setup_context=_linear_setup)
