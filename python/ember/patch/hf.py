"""ember in Hugging Face transformers causal LMs of Llama's structure (Llama, Mistral, Qwen2,
Qwen3: `self.model` a decoder returning `last_hidden_state`, `self.lm_head` a bias-free Linear).

The loss patch wraps the class's own forward rather than rewriting it: during training with
labels the original forward runs with `labels=None` and an empty `logits_to_keep` (so the head
produces no logits), a hook on the decoder keeps its last hidden state, and the loss is
ember.ops.linear_cross_entropy of those states against the shifted labels — normalized as
transformers does (by `num_items_in_batch` when the Trainer passes it, else by the number of
non-ignored tokens). Everything else (caches, generation, eval) goes through the original
forward untouched. `transformers` is imported only when patching.
"""

from __future__ import annotations

import functools
import types

import torch
from torch import nn

from ..float8.linear import RECIPES
from ..losses.lm import IGNORE_INDEX
from ..module_swap import replace_module

SUPPORTED = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")
_ORIGINAL = "_ember_original_forward"


def _classes() -> dict[str, type]:
    try:
        import transformers
    except ImportError as exc:
        raise ImportError("ember.patch needs transformers: pip install transformers") from exc
    return {name: getattr(transformers, name) for name in SUPPORTED if hasattr(transformers, name)}


def _shifted(t: torch.Tensor, fill) -> torch.Tensor:
    """t[..., 1:] padded at the end: position p is scored against token p + 1 (as transformers)."""
    return nn.functional.pad(t, (0, 1), value=fill)[..., 1:]


def _loss_forward(original):
    @functools.wraps(original)
    def forward(self, *args, labels=None, token_weights=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        if (labels is None and shift_labels is None) or not self.training:
            if token_weights is not None:
                raise ValueError("ember.patch: token_weights applies to the training loss (model.train() and labels)")
            extra = {k: v for k, v in (("labels", labels), ("shift_labels", shift_labels),
                                        ("num_items_in_batch", num_items_in_batch)) if v is not None}
            return original(self, *args, **extra, **kwargs)
        captured = {}
        hook = self.model.register_forward_hook(lambda m, a, out: captured.__setitem__("h", out.last_hidden_state))
        try:
            kwargs["logits_to_keep"] = torch.empty(0, dtype=torch.long)  # the head makes no logits
            out = original(self, *args, **kwargs)
        finally:
            hook.remove()
        from ..ops import linear_cross_entropy

        h = captured["h"]
        y = shift_labels if shift_labels is not None else _shifted(labels, IGNORE_INDEX)
        w = None
        if token_weights is not None:
            w = token_weights if shift_labels is not None else _shifted(token_weights.float(), 0.0)
        head = self.lm_head.weight
        loss = linear_cross_entropy(h.reshape(-1, h.shape[-1]).to(head.dtype), head, y.reshape(-1).to(h.device),
                                    weight=None if w is None else w.reshape(-1).to(h.device), reduction="sum")
        if num_items_in_batch is not None:
            loss = loss / (num_items_in_batch.to(loss.device) if torch.is_tensor(num_items_in_batch) else num_items_in_batch)
        else:
            loss = loss / (y != IGNORE_INDEX).sum()
        out.loss, out.logits = loss, None
        return out

    forward.__ember_patched__ = True
    return forward


def apply_ember_to_llama(model: nn.Module | None = None, *, float8: str | None = None, linear_cross_entropy: bool = True,
                         token_weights: bool = False, sparsity: dict | None = None) -> list[str]:
    """Patch the supported transformers classes (model=None) or one model instance with ember.

    - linear_cross_entropy: the causal-LM training loss through ember.ops.linear_cross_entropy
      (no logits while training with labels); token_weights=True lets forward take
      `token_weights=` (the shape of labels; the loss is Σ w·CE / #tokens).
    - sparsity=dict(target=0.8, method="erk", block=None, seed=0): the decoder's Linear layers
      randomly pruned (ember.sparse.random_prune; needs an instance).
    - float8="tensorwise" | "rowwise" | "blockwise": the decoder's Linear layers become
      ember.float8.Float8Linear (fp8 forward and backward GEMMs; needs an instance; the lm_head
      stays, and layers whose dims are not multiples of 16 stay nn.Linear).

    Returns what changed, one readable line each; `unpatch(model)` restores the originals.
    """
    classes = _classes()
    if model is not None and type(model).__name__ not in SUPPORTED:
        raise TypeError(f"ember.patch.apply_ember_to_llama: {type(model).__name__} is not supported; supported: "
                        f"{', '.join(SUPPORTED)}")
    if float8 is not None and float8 not in RECIPES:
        raise ValueError(f"ember.patch: float8 recipe must be one of {RECIPES}, got {float8!r}")
    if float8 is not None and model is None:
        raise ValueError("ember.patch: float8 converts a model's Linear layers: pass the model instance")
    if float8 is not None and sparsity is not None:
        raise ValueError("ember.patch: float8 and sparsity cannot be combined (SparseLinear has no fp8 path)")
    if sparsity is not None and model is None:
        raise ValueError("ember.patch: sparsity prunes a model's weights: pass the model instance")
    if token_weights and not linear_cross_entropy:
        raise ValueError("ember.patch: token_weights=True needs linear_cross_entropy=True")
    changes = []
    if linear_cross_entropy:
        targets = list(classes.values()) if model is None else [model]
        for target in targets:
            if getattr(target.forward, "__ember_patched__", False):
                continue
            if isinstance(target, type):
                setattr(target, _ORIGINAL, target.forward)
                target.forward = _loss_forward(target.forward)
                changes.append(f"{target.__name__}.forward: causal-LM loss through ember.ops.linear_cross_entropy")
            else:
                original = type(target).forward
                target.forward = types.MethodType(_loss_forward(original), target)
                changes.append(f"{type(target).__name__} instance forward: causal-LM loss through "
                               "ember.ops.linear_cross_entropy")
    if sparsity is not None:
        from ..sparse import random_prune

        opts = dict(sparsity)
        target_sparsity = opts.pop("target")
        report = random_prune(model.model.layers, target_sparsity, **opts)
        model._ember_sparsity_report = report
        for layer in report["layers"]:
            changes.append(f"model.layers.{layer['name']}: SparseLinear, density {layer['density']:.3f}")
    if float8 is not None:
        from ..float8 import Float8Linear, convert_to_float8_training

        convert_to_float8_training(model.model.layers, recipe=float8)
        changes += [f"model.layers.{name}: Float8Linear ({float8})" for name, m in model.model.layers.named_modules()
                    if isinstance(m, Float8Linear)]
    return changes


def unpatch(model: nn.Module | None = None) -> list[str]:
    """Undo apply_ember_to_llama: the classes' (or the instance's) forward back to the original,
    and SparseLinear / Float8Linear layers back to nn.Linear (pruned weights stay zero)."""
    changes = []
    if model is None:
        for cls in _classes().values():
            if hasattr(cls, _ORIGINAL):
                cls.forward = getattr(cls, _ORIGINAL)
                delattr(cls, _ORIGINAL)
                changes.append(f"{cls.__name__}.forward restored")
        return changes
    if "forward" in model.__dict__:
        del model.forward
        changes.append(f"{type(model).__name__} instance forward restored")
    from ..float8 import Float8Linear
    from ..sparse import SparseLinear

    for name, module in list(model.named_modules()):
        if isinstance(module, (SparseLinear, Float8Linear)):
            plain = nn.Linear.__new__(nn.Linear)
            nn.Module.__init__(plain)
            plain.in_features, plain.out_features = module.in_features, module.out_features
            plain.weight, plain.bias = module.weight, module.bias
            replace_module(model, name, plain)
            changes.append(f"{name}: nn.Linear again")
    return changes
