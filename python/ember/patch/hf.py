"""ember in Hugging Face transformers causal LMs, in one call: `apply_ember(model_or_class)`.

Which classes qualify, and what differs between them (soft-capping, logit scaling, an MoE aux
loss, labels already shifted), is read from the installed transformers by `detect`; the loss
forward is in `loss_forward`. `transformers` is imported only when patching.
"""

from __future__ import annotations

import re
import types

from torch import nn

from ..float8.linear import RECIPES
from ..module_swap import replace_module
from .detect import Refused, plan_for, scan
from .loss_forward import loss_forward

_ORIGINAL = "_ember_original_forward"
_PATCHED_CLASSES: set[type] = set()


def _transformers():
    try:
        import transformers
    except ImportError as exc:
        raise ImportError("ember.patch needs transformers: pip install transformers") from exc
    return transformers


def supported() -> list[str]:
    """The model types (config.model_type) whose causal LM ember can patch, as detected in the
    installed transformers; `refused()` gives the others with the reason."""
    _transformers()
    return sorted(scan()[0])


def refused() -> dict[str, str]:
    """{model_type: why ember does not patch it} for the installed transformers' other causal LMs."""
    _transformers()
    return dict(sorted(scan()[1].items()))


def _supported_classes() -> list[type]:
    transformers = _transformers()
    return [getattr(transformers, name) for name in sorted(set(scan()[0].values()))]


def _plan_or_raise(cls, fn: str):
    try:
        return plan_for(cls)
    except Refused as exc:
        raise TypeError(f"ember.patch.{fn}: {cls.__name__} cannot be patched: {exc}") from None


def _decoder_layers(model: nn.Module) -> tuple[str, nn.Module]:
    """(name, module) of the decoder's stack of blocks: the largest ModuleList of the model."""
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise TypeError(f"ember.patch: {type(model).__name__} has no stack of layers (nn.ModuleList) to convert")
    return max(lists, key=lambda nm: sum(p.numel() for p in nm[1].parameters()))


_ROUTER = re.compile(r"(^|\.)(gate|router)(\.|$)")


def _is_router(name: str, module: nn.Module, config) -> bool:
    """An MoE router: `gate`/`router` projecting to the number of experts (kept in high precision)."""
    keys = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
    experts = {getattr(config, k, None) for k in keys}
    return bool(_ROUTER.search(name)) and isinstance(module, nn.Linear) and module.out_features in experts


def apply_ember(
    model_or_class=None,
    *,
    linear_cross_entropy: bool = True,
    token_weights: bool = False,
    float8: str | None = None,
    sparsity: dict | None = None,
) -> list[str]:
    """Patch a transformers causal LM with ember: an instance, a class, or (None) every class
    `supported()` lists.

    - linear_cross_entropy: the training loss through ember.ops.linear_cross_entropy (no logits
      while training with labels; eval and generate untouched); token_weights=True lets forward
      take `token_weights=` (the shape of labels; the loss is Σ w·CE / #tokens).
    - sparsity=dict(target=0.8, method="erk", block=None, seed=0): the Linear layers of the
      decoder's stack of blocks randomly pruned (ember.sparse.random_prune; needs an instance).
    - float8="tensorwise" | "rowwise" | "blockwise": those Linear layers become
      ember.float8.Float8Linear (needs an instance; the head and MoE routers stay, and layers
      whose dims are not multiples of 16 stay nn.Linear).

    Returns what changed, one readable line each; `unpatch` restores the originals. A model it
    cannot patch raises TypeError with the reason before anything changes.
    """
    fn = "apply_ember"
    if float8 is not None and float8 not in RECIPES:
        raise ValueError(f"ember.patch.{fn}: float8 recipe must be one of {RECIPES}, got {float8!r}")
    instance = model_or_class is not None and not isinstance(model_or_class, type)
    if float8 is not None and not instance:
        raise ValueError(f"ember.patch.{fn}: float8 converts a model's Linear layers: pass the model instance")
    if float8 is not None and sparsity is not None:
        raise ValueError(f"ember.patch.{fn}: float8 and sparsity cannot be combined (SparseLinear has no fp8 path)")
    if sparsity is not None and not instance:
        raise ValueError(f"ember.patch.{fn}: sparsity prunes a model's weights: pass the model instance")
    if sparsity is not None and "target" not in sparsity:
        raise ValueError(f"ember.patch.{fn}: sparsity needs a 'target' (the fraction of weights pruned)")
    if token_weights and not linear_cross_entropy:
        raise ValueError(f"ember.patch.{fn}: token_weights=True needs linear_cross_entropy=True")
    _transformers()
    if model_or_class is None:
        targets = _supported_classes()
    else:
        if not isinstance(model_or_class, nn.Module) and not (
            isinstance(model_or_class, type) and issubclass(model_or_class, nn.Module)
        ):
            raise TypeError(
                f"ember.patch.{fn}: expected a transformers causal LM (instance or class), got {type(model_or_class).__name__}"
            )
        cls = model_or_class if isinstance(model_or_class, type) else type(model_or_class)
        plan = _plan_or_raise(cls, fn)
        if instance and not isinstance(getattr(model_or_class, plan.head, None), nn.Linear):
            raise TypeError(f"ember.patch.{fn}: {cls.__name__}.{plan.head} is not an nn.Linear")
        targets = [model_or_class]
    layers = _decoder_layers(model_or_class) if instance and (float8 or sparsity) else None  # errors first

    changes = []
    if linear_cross_entropy:
        for target in targets:
            if getattr(target.forward, "__ember_patched__", False):
                continue
            if isinstance(target, type):
                plan = plan_for(target)
                setattr(target, _ORIGINAL, target.forward)
                target.forward = loss_forward(target.forward, plan)
                _PATCHED_CLASSES.add(target)
                changes.append(
                    f"{target.__name__}.forward: causal-LM loss through ember.ops.linear_cross_entropy"
                    + (f" ({', '.join(plan.notes)})" if plan.notes else "")
                )
            else:
                plan = plan_for(type(target))
                target.forward = types.MethodType(loss_forward(type(target).forward, plan), target)
                changes.append(
                    f"{type(target).__name__} instance forward: causal-LM loss through "
                    "ember.ops.linear_cross_entropy" + (f" ({', '.join(plan.notes)})" if plan.notes else "")
                )
    if layers is not None:
        name, stack = layers
        config = getattr(model_or_class, "config", None)
        if sparsity is not None:
            from ..sparse import random_prune

            opts = dict(sparsity)
            target_sparsity = opts.pop("target")
            report = random_prune(stack, target_sparsity, **opts)
            model_or_class._ember_sparsity_report = report
            for layer in report["layers"]:
                changes.append(f"{name}.{layer['name']}: SparseLinear, density {layer['density']:.3f}")
        if float8 is not None:
            from ..float8 import Float8Linear, convert_to_float8_training

            convert_to_float8_training(stack, recipe=float8, module_filter_fn=lambda m, n: not _is_router(n, m, config))
            changes += [
                f"{name}.{n}: Float8Linear ({float8})" for n, m in stack.named_modules() if isinstance(m, Float8Linear)
            ]
    return changes


def apply_ember_to_llama(
    model=None,
    *,
    float8: str | None = None,
    linear_cross_entropy: bool = True,
    token_weights: bool = False,
    sparsity: dict | None = None,
) -> list[str]:
    """The former name of apply_ember (it now covers every class supported() lists)."""
    return apply_ember(
        model, linear_cross_entropy=linear_cross_entropy, token_weights=token_weights, float8=float8, sparsity=sparsity
    )


def _restore_class(cls) -> list[str]:
    if _ORIGINAL not in cls.__dict__:
        return []
    cls.forward = cls.__dict__[_ORIGINAL]
    delattr(cls, _ORIGINAL)
    _PATCHED_CLASSES.discard(cls)
    return [f"{cls.__name__}.forward restored"]


def unpatch(model_or_class=None) -> list[str]:
    """Undo apply_ember: every patched class (None), one class, or one instance (its forward, and
    SparseLinear / Float8Linear layers back to nn.Linear; pruned weights stay zero)."""
    if model_or_class is None:
        return [c for cls in sorted(_PATCHED_CLASSES, key=lambda k: k.__name__) for c in _restore_class(cls)]
    if isinstance(model_or_class, type):
        return _restore_class(model_or_class)
    model, changes = model_or_class, []
    if "forward" in model.__dict__:
        del model.forward
        changes.append(f"{type(model).__name__} instance forward restored")
    from ..float8 import Float8Linear
    from ..sparse import SparseLinear, zero_pruned_

    zero_pruned_(model)  # the plain layers get zeros where the masks were, whatever an init left there
    for name, module in list(model.named_modules()):
        if isinstance(module, (SparseLinear, Float8Linear)):
            plain = nn.Linear.__new__(nn.Linear)
            nn.Module.__init__(plain)
            plain.in_features, plain.out_features = module.in_features, module.out_features
            plain.weight, plain.bias = module.weight, module.bias
            replace_module(model, name, plain)
            changes.append(f"{name}: nn.Linear again")
    return changes
