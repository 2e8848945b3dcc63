"""The patched forward of a causal LM: the training loss through ember.ops.linear_cross_entropy.

During training with labels, the model's own forward runs with `labels=None` and
`logits_to_keep=0` (unless the caller gives it) while its head is swapped for a stand-in that
keeps the head's input (the final hidden states, after anything the model does to them) and
returns empty logits. The fused
loss then runs where the real head's forward would, inside its hooks (`head_call`): so under FSDP2
its weight is gathered by its own pre-forward hook exactly once per micro-batch, its gradient
reduce-scattered by the usual post-backward, accelerate loads an offloaded weight first, and DDP
sees an ordinary forward. A hook that would see the head's output makes that call take the
original forward (one warning says why); the loss has no second derivative (a backward with
create_graph=True is refused with the way out). Logit scaling
folds into the hidden states (the head is linear), soft-capping is the fused loss's `softcap`,
and a mixture-of-experts aux loss that the original forward computed is added as it would add
it. Normalization follows transformers: the sum over tokens divided by `num_items_in_batch`
when given (the Trainer's gradient accumulation), else by the number of non-ignored tokens.
Outside training or without labels the original forward runs untouched.
"""

from __future__ import annotations

import functools
import inspect
import warnings

import torch
from torch import nn

from ..losses.lm import IGNORE_INDEX
from .detect import Plan, logit_map
from .head_call import bypassed, call_head


class _HeadStandIn(nn.Module):
    """Takes the head's place during the model's forward: keeps its input, returns no logits.
    Other attributes (`weight.dtype` in a cast before the head) read through to the head."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.hidden = None
        object.__setattr__(self, "_head", head)  # not a submodule: its parameters stay the head's

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "_head"), name)

    def forward(self, hidden):
        self.hidden = hidden
        return hidden[..., :0]


def _shifted(t: torch.Tensor, fill) -> torch.Tensor:
    """t[..., 1:] padded at the end: position p is scored against token p + 1 (as transformers)."""
    return nn.functional.pad(t, (0, 1), value=fill)[..., 1:]


def _fused_loss(head: nn.Linear, hidden, target, weight, scale, softcap, ignore_index):
    """The summed fused loss, computed where the head's forward would run (its hooks included)."""
    from ..amp import autocast_inputs
    from ..ops import linear_cross_entropy

    def fused(h):  # h where the head's hooks put it (accelerate: its execution device)
        y, tw = target.to(h.device), None if weight is None else weight.to(h.device)
        h, w, b = autocast_inputs(h, head.weight, head.bias)  # as nn.Linear under autocast
        h = h.reshape(-1, h.shape[-1]).to(w.dtype)
        if scale != 1.0:  # (s·h)·Wᵀ + s·b = s·(h·Wᵀ + b)
            h = h * scale
            b = None if b is None else b * scale
        return linear_cross_entropy(
            h, w, y, weight=tw, bias=b, ignore_index=ignore_index, softcap=softcap, reduction="sum"
        )

    loss = call_head(head, fused, hidden)
    if loss.requires_grad and not torch.compiler.is_compiling():  # fullgraph: no hook on an intermediate
        loss.register_hook(_first_derivative_only)
    return loss


def _first_derivative_only(grad):
    # grad mode is on in a backward exactly when it builds a graph (create_graph=True): the fused
    # op's gradients have none, so a second derivative would silently miss the loss's own part
    if torch.is_grad_enabled():
        raise RuntimeError(
            "ember.patch: the fused loss (ember.ops.linear_cross_entropy) has no second derivative, so a "
            "backward with create_graph=True (double backward, gradient penalties, Hessian-vector products) "
            "is refused: call ember.patch.unpatch(model) for that computation"
        )
    return grad


class _Notices:
    """The warnings one patched forward has given (each reason once)."""

    def __init__(self):
        self.seen = set()

    def warn(self, message: str) -> None:
        if message not in self.seen:
            self.seen.add(message)
            warnings.warn(message, stacklevel=2)


def _targets(plan: Plan, labels, shift_labels, token_weights, ignore_index, hidden, keep):
    """Per-token targets and weights, flat, aligned with the hidden states' positions."""
    if plan.shifted_labels or shift_labels is not None:  # position p is scored against y[p]
        y, w = labels if plan.shifted_labels else shift_labels, token_weights
        named = (("labels" if plan.shifted_labels else "shift_labels", y), ("token_weights", w))
    else:
        y = _shifted(labels, ignore_index)
        w = None if token_weights is None else _shifted(token_weights.float(), 0.0)
        named = (("labels", labels), ("token_weights", token_weights))
    _check_positions(named, hidden, keep)
    return y.reshape(-1).to(hidden.device), None if w is None else w.reshape(-1).to(hidden.device)


def _check_positions(named, hidden, keep) -> None:
    """Each of labels / shift_labels / token_weights has one entry per position the head scores."""
    positions = hidden.shape[:-1]
    for name, t in named:
        if t is not None and t.numel() != positions.numel():
            kept = "" if isinstance(keep, int) and keep == 0 else f" (logits_to_keep={keep})"
            raise ValueError(
                f"ember.patch: {name} of shape {tuple(t.shape)} do not match the "
                f"{' x '.join(map(str, positions))} positions the model scores{kept}"
            )


def _hidden_states(self, original, plan: Plan, head, args, kwargs):
    """The model's forward with the head's input kept and no logits: (output, hidden states)."""
    stand_in = _HeadStandIn(head)
    kwargs.setdefault("logits_to_keep", 0)  # every position reaches the head (0 keeps all), unless the caller says
    self._modules[plan.head] = stand_in  # not setattr: nothing else about the module changes
    try:
        out = original(self, *args, **kwargs)
    finally:
        self._modules[plan.head] = head
    if stand_in.hidden is None:
        raise RuntimeError(f"ember.patch: {type(self).__name__}.forward did not call self.{plan.head}")
    return out, stand_in.hidden


def _with_loss(out, loss, plan: Plan, aux_coef, as_tuple: bool):
    """The model's output with the fused loss first and no logits."""
    if isinstance(out, tuple):  # config.use_return_dict False: (logits, ...), no aux loss by name
        if plan.aux_coef is not None:
            raise TypeError("ember.patch: a model with an MoE aux loss needs return_dict=True in training")
        return (loss,) + tuple(out[1:])
    aux = getattr(out, "aux_loss", None)
    if plan.aux_coef is not None and aux is not None:
        loss = loss + aux_coef * aux.to(loss.device)
    # a fresh output keeps the fields' order (loss first: out[0] is the loss), without logits
    out = type(out)(**{**{k: v for k, v in out.items() if k != "logits"}, "loss": loss})
    return out.to_tuple() if as_tuple else out


def _fused_forward(self, original, plan: Plan, head, args, kwargs, labels, shift_labels, token_weights, n_items):
    if token_weights is not None and token_weights.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            "ember.patch: token_weights require grad, but the fused loss takes them as constants (no gradient "
            "would reach them): pass token_weights.detach()"
        )
    if not plan.shifted_labels:
        _check_loss_function(self)
    ignore_index = kwargs.pop("ignore_index", IGNORE_INDEX)
    as_tuple = kwargs.get("return_dict") is False
    if as_tuple:  # a ModelOutput, so the aux loss is found by name; a tuple again at the end
        kwargs["return_dict"] = True
    out, h = _hidden_states(self, original, plan, head, args, kwargs)
    keep = kwargs["logits_to_keep"]
    y, w = _targets(plan, labels, shift_labels, token_weights, ignore_index, h, keep)
    scale, softcap, aux_coef = logit_map(plan, self)
    loss = _fused_loss(head, h, y, w, scale, softcap, ignore_index)
    if n_items is not None and not plan.shifted_labels:
        loss = loss / (n_items.to(loss.device) if torch.is_tensor(n_items) else n_items)
    else:
        loss = loss / (y != ignore_index).sum().to(loss.device)
    return _with_loss(out, loss, plan, aux_coef, as_tuple)


def loss_forward(original, plan: Plan):
    """`original` (a class's forward function) wrapped as described in the module docstring."""
    notices = _Notices()

    @functools.wraps(original)
    def forward(self, *args, labels=None, token_weights=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        given = dict(labels=labels, shift_labels=shift_labels, num_items_in_batch=num_items_in_batch)
        given = {k: v for k, v in given.items() if v is not None}
        if labels is None or not self.training:  # the model computes a loss only from labels
            if token_weights is not None and self.training:
                raise ValueError(
                    "ember.patch: token_weights apply to the training loss: labels are needed with them "
                    "(transformers.Trainer's label_smoothing_factor and compute_loss_func take labels out of the call)"
                )
            if token_weights is not None:  # Trainer passes them in evaluation too: a validation loss is unweighted
                notices.warn(
                    "ember.patch: token_weights are not applied outside training (model.eval()): "
                    "the loss is the model's own, unweighted"
                )
            return original(self, *args, **given, **kwargs)
        head = getattr(self, plan.head)
        if not isinstance(head, nn.Linear):
            raise TypeError(
                f"ember.patch: {type(self).__name__}.{plan.head} is a {type(head).__name__}, not an nn.Linear: the fused loss cannot take its place"
            )
        why = bypassed(head)
        if why is not None:  # the head's output is seen: this call computes the logits
            where = f"{type(self).__name__}.{plan.head} has {why}"
            if token_weights is not None:
                raise ValueError(f"ember.patch: token_weights need the fused loss, but {where}")
            notices.warn(
                f"ember.patch: {where}, which the fused loss would bypass: calls with it compute the loss "
                "from the logits (the unfused path); remove it to get the fused loss back"
            )
            return original(self, *args, **given, **kwargs)
        return _fused_forward(
            self, original, plan, head, args, kwargs, labels, shift_labels, token_weights, num_items_in_batch
        )

    forward.__ember_patched__ = forward  # the mark names the function: a wrapper copying it is no patch
    forward.__signature__ = _signature(original)
    return forward


def _signature(original) -> inspect.Signature:
    """The original's signature with `token_weights`: transformers.Trainer keeps only the batch keys
    that the forward's signature names (the others it drops before the call)."""
    sig = inspect.signature(original)
    params = list(sig.parameters.values())
    at = len(params) - bool(params and params[-1].kind is inspect.Parameter.VAR_KEYWORD)
    weights = inspect.Parameter("token_weights", inspect.Parameter.KEYWORD_ONLY, default=None)
    return sig.replace(parameters=[*params[:at], weights, *params[at:]])


def _check_loss_function(model) -> None:
    from transformers.loss.loss_utils import ForCausalLMLoss

    fn = model.loss_function
    if fn is not ForCausalLMLoss:
        raise TypeError(
            f"ember.patch: {type(model).__name__}.loss_function is {getattr(fn, '__name__', fn)!r}, not "
            "transformers' ForCausalLMLoss: the fused loss would not compute the same thing"
        )
