"""ember in Hugging Face transformers causal LMs, in one call: `apply_ember(model_or_class)`.

Which classes qualify, and what differs between them (soft-capping, logit scaling, an MoE aux
loss, labels already shifted), is read from the installed transformers by `detect`; the loss
forward is in `loss_forward`. `transformers` is imported only when patching.
"""

from __future__ import annotations

import inspect
import re
import types
import warnings

from torch import nn

from ..float8.linear import RECIPES
from ..module_swap import replace_module
from .detect import Refused, plan_for, scan
from .loss_forward import loss_forward

# set on a patched class: the forward it defined itself, None if it inherited one (and the mark of a patch)
_ORIGINAL = "_ember_original_forward"


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


def _plan_or_raise(cls, fn: str, model=None):
    try:
        return plan_for(cls)
    except Refused as exc:
        hint = ""
        base = getattr(model, "get_base_model", None)
        inners = {  # torch.compile's wrapper; DDP, DataParallel; peft's
            "_orig_mod": getattr(model, "_orig_mod", None),
            "module": getattr(model, "module", None),
            "get_base_model()": base() if callable(base) else None,
        }
        for attr, inner in inners.items():
            if isinstance(inner, nn.Module):
                hint = f" (it wraps a {type(inner).__name__}: patch that one, apply_ember(model.{attr}))"
                break
        raise TypeError(f"ember.patch.{fn}: {cls.__name__} cannot be patched: {exc}{hint}") from None


def _what(thing) -> str:
    """What a refused argument is, for the message (an auto class: the way to the class it loads)."""
    if not isinstance(thing, type):
        return type(thing).__name__
    auto = (
        " (an auto class: patch the class it loads, e.g. type(model), or the model)" if "Auto" in thing.__name__ else ""
    )
    return f"the class {thing.__name__}{auto}"


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
      take `token_weights=` (the shape of labels; the loss is Σ w·CE / #tokens; constants, so
      weights that require grad are refused; in evaluation they are not applied, with a warning).
    - sparsity=dict(target=0.8, method="erk", block=None, seed=0): the Linear layers of the
      decoder's stack of blocks randomly pruned (ember.sparse.random_prune; needs an instance).
    - float8="tensorwise" | "rowwise" | "blockwise": those Linear layers become
      ember.float8.Float8Linear (needs an instance; the head and MoE routers stay, and layers
      whose dims are not multiples of 16 stay nn.Linear).

    In training with labels the output has no logits: `out.logits` is None, and the tuple of
    `return_dict=False` drops them, so its positions shift: (loss, past_key_values, ...) where the
    unpatched model gives (loss, logits, past_key_values, ...). A forward or backward hook on the
    head makes those calls compute the logits (unfused, one warning); accelerate's offload hooks
    and FSDP2's run around the fused loss, and a head overriding nn.Linear.forward is called as
    such. The fused loss has no second derivative: a backward with create_graph=True raises
    (unpatch for it). Patch before accelerate's prepare: a forward set on the instance by other
    code (its mixed-precision autocast) is refused.

    Returns what changed, one readable line each; `unpatch` restores the originals. A model it
    cannot patch raises TypeError with the reason before anything changes.
    """
    targets, layers = _plan(model_or_class, linear_cross_entropy, token_weights, float8, sparsity)
    # the layers first: random_prune's own refusals come before anything is converted, and then
    # before the forward is patched too
    converted = [] if layers is None else _convert_layers(model_or_class, layers, float8, sparsity)
    changes = [line for target in targets for line in _patch_forward(target)] if linear_cross_entropy else []
    return changes + converted


def _plan(model_or_class, linear_cross_entropy: bool, token_weights: bool, float8, sparsity):
    """apply_ember's checks, all before anything changes: (classes or instance to patch, the
    decoder's stack of layers to convert or None)."""
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
    if sparsity is not None:
        _check_sparsity(sparsity)
    if token_weights and not linear_cross_entropy:
        raise ValueError(f"ember.patch.{fn}: token_weights=True needs linear_cross_entropy=True")
    _transformers()
    if model_or_class is None:
        return _supported_classes(), None
    if not isinstance(model_or_class, nn.Module) and not (
        isinstance(model_or_class, type) and issubclass(model_or_class, nn.Module)
    ):
        raise TypeError(
            f"ember.patch.{fn}: expected a transformers causal LM (instance or class), got {_what(model_or_class)}"
        )
    cls = model_or_class if isinstance(model_or_class, type) else type(model_or_class)
    plan = _plan_or_raise(cls, fn, model_or_class if instance else None)
    if instance and not isinstance(getattr(model_or_class, plan.head, None), nn.Linear):
        raise TypeError(f"ember.patch.{fn}: {cls.__name__}.{plan.head} is not an nn.Linear")
    if instance and linear_cross_entropy:
        _check_own_forward(model_or_class)
    layers = _decoder_layers(model_or_class) if instance and (float8 or sparsity) else None
    if layers is not None:
        _check_not_converted(*layers)
    return [model_or_class], layers


def _check_sparsity(sparsity) -> None:
    """A dict of random_prune's arguments with a 'target' (checked before anything changes)."""
    from ..sparse import random_prune

    fn = "ember.patch.apply_ember"
    if not isinstance(sparsity, dict):
        raise TypeError(
            f"{fn}: sparsity must be a dict such as dict(target=0.8, method='erk'), got {type(sparsity).__name__}"
        )
    if "target" not in sparsity:
        raise ValueError(f"{fn}: sparsity needs a 'target' (the fraction of weights pruned)")
    keys = ("target", *list(inspect.signature(random_prune).parameters)[2:])  # after (model, sparsity)
    for key in sparsity:
        if key not in keys:
            raise TypeError(f"{fn}: sparsity has unknown key {key!r} (it takes {keys})")


def _check_not_converted(name: str, stack: nn.Module) -> None:
    """A stack converted before (SparseLinear or Float8Linear) is not converted again: float8 over
    sparsity would drop the masks, sparsity over float8 the fp8 layers, sparsity twice redraw the masks."""
    from ..float8 import Float8Linear
    from ..sparse import SparseLinear

    for kind in (SparseLinear, Float8Linear):
        if any(isinstance(m, kind) for m in stack.modules()):
            raise ValueError(
                f"ember.patch.apply_ember: {name} already has {kind.__name__} layers: unpatch(model) first "
                "(it makes them nn.Linear again), then convert once"
            )


def _forward_slot(model: nn.Module) -> str:
    """The instance attribute its forward lives in: accelerate's hook (offload, device_map) wraps
    `_old_forward` in `forward`, and replacing `forward` would drop the hook."""
    return (
        "_old_forward" if getattr(model, "_hf_hook", None) is not None and "_old_forward" in vars(model) else "forward"
    )


def _patched(fn) -> bool:
    """A forward apply_ember made (a function, or bound). Its mark is the function itself: a wrapper
    that copied its attributes (functools.wraps) is not one."""
    fn = getattr(fn, "__func__", fn)
    return isinstance(fn, types.FunctionType) and vars(fn).get("__ember_patched__") is fn


def _wraps_patched(fn) -> bool:
    """A forward apply_ember made, or a wrapper around one (followed through `__wrapped__`)."""
    for _ in range(64):  # a chain of wrappers, never a cycle
        fn = getattr(fn, "__func__", fn)
        if fn is None or _patched(fn):
            return fn is not None
        fn = getattr(fn, "__wrapped__", None)
    return False


def _check_own_forward(model: nn.Module) -> None:
    """Patching replaces the forward set on the instance: one that other code set there (accelerate's
    prepare wraps it in autocast for mixed precision) would be dropped, silently."""
    fn = vars(model).get(_forward_slot(model))
    if fn is None or _wraps_patched(fn) or getattr(fn, "__func__", None) is type(model).forward:
        return
    raise TypeError(
        f"ember.patch.apply_ember: {type(model).__name__}.forward is set on the instance by other code "
        f"({getattr(fn, '__qualname__', type(fn).__name__)}; accelerate's prepare sets one for mixed precision), "
        "which patching would drop: call apply_ember(model) before that (before accelerator.prepare or Trainer.train)"
    )


def _patch_forward(target) -> list[str]:
    """The loss forward on one class or instance (nothing when it is patched already)."""
    if isinstance(target, type):
        if _patched(target.forward):
            return []
        plan = plan_for(target)
        setattr(target, _ORIGINAL, vars(target).get("forward"))  # None: inherited (unpatch deletes its own)
        target.forward = loss_forward(target.forward, plan)
        where = f"{target.__name__}.forward"
    else:
        slot = _forward_slot(target)
        if _wraps_patched(getattr(target, slot)):  # patched, perhaps wrapped since (accelerate's prepare)
            return []
        plan = plan_for(type(target))
        setattr(target, slot, types.MethodType(loss_forward(type(target).forward, plan), target))
        where = f"{type(target).__name__} instance forward"
    notes = f" ({', '.join(plan.notes)})" if plan.notes else ""
    return [f"{where}: causal-LM loss through ember.ops.linear_cross_entropy{notes}"]


def _convert_layers(model, layers, float8, sparsity) -> list[str]:
    """The decoder's Linear layers randomly pruned or made Float8Linear."""
    name, stack = layers
    changes = []
    if sparsity is not None:
        from ..sparse import random_prune

        opts = dict(sparsity)
        target_sparsity = opts.pop("target")
        report = random_prune(stack, target_sparsity, **opts)
        model._ember_sparsity_report = report
        for layer in report["layers"]:
            changes.append(f"{name}.{layer['name']}: SparseLinear, density {layer['density']:.3f}")
    if float8 is not None:
        from ..float8 import Float8Linear, convert_to_float8_training

        config = getattr(model, "config", None)
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
    original = cls.__dict__[_ORIGINAL]
    if original is None:  # it inherited its forward: inherit it again
        del cls.forward
    else:
        cls.forward = original
    delattr(cls, _ORIGINAL)
    return [f"{cls.__name__}.forward restored"]


def _patched_classes() -> list[type]:
    """Every loaded module class that apply_ember patched, found by the mark it left on the class
    (no registry to keep in step), by name."""
    found, todo = set(), [nn.Module]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub not in found:
                found.add(sub)
                todo.append(sub)
    return sorted((c for c in found if _ORIGINAL in vars(c)), key=lambda c: c.__name__)


def _restore_instance(model: nn.Module) -> list[str]:
    """The instance's own forward back (an accelerate hook around it stays); a warning when its
    class is patched, which this does not undo."""
    name = type(model).__name__
    for slot in ("forward", "_old_forward"):
        fn = vars(model).get(slot)
        if _patched(fn):
            if slot == "forward":
                del model.forward
            else:  # inside accelerate's wrapper: the class's forward again, bound
                setattr(model, slot, types.MethodType(fn.__wrapped__, model))
            return [f"{name} instance forward restored"]
    if _wraps_patched(vars(model).get(_forward_slot(model))):  # not accelerate's hook: it calls _old_forward
        raise TypeError(
            f"ember.patch.unpatch: {name}.forward wraps the patched forward (accelerate's prepare sets such a "
            "wrapper for mixed precision), which unpatch cannot take out from under it: take the wrapper off "
            "first, accelerator.unwrap_model(model, keep_fp32_wrapper=False), or unpatch before prepare"
        )
    if _patched(type(model).forward):
        warnings.warn(
            f"ember.patch.unpatch: the class {name} is patched, so this model still is: "
            f"unpatch({name}) restores the class",
            stacklevel=3,
        )
    return []


def unpatch(model_or_class=None) -> list[str]:
    """Undo apply_ember: every patched class (None), one class, or one instance (its forward, and
    SparseLinear / Float8Linear layers back to nn.Linear; pruned weights stay zero)."""
    if model_or_class is None:
        return [c for cls in _patched_classes() for c in _restore_class(cls)]
    if isinstance(model_or_class, type) and issubclass(model_or_class, nn.Module):
        return _restore_class(model_or_class)
    if not isinstance(model_or_class, nn.Module):
        raise TypeError(
            f"ember.patch.unpatch: expected a model or a model class (or None), got {_what(model_or_class)}"
        )
    model, changes = model_or_class, _restore_instance(model_or_class)
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
