"""convert_to_float8_training: swap a model's nn.Linear layers for Float8Linear, in place; and
enable_fp8_all_gather: make their weights all-gather in fp8 under FSDP2 (ember.float8.fsdp)."""

import logging
from collections.abc import Callable

from torch import nn

from ..module_swap import replace_module
from .fsdp import Float8ShardedWeight, plain_state_dict
from .linear import RECIPES, Float8Linear, fits_float8

log = logging.getLogger("ember.float8")


def convert_to_float8_training(
    model: nn.Module, recipe: str = "tensorwise", module_filter_fn: Callable[[nn.Module, str], bool] | None = None
) -> nn.Module:
    """Replace every plain nn.Linear of ``model`` for which ``module_filter_fn(module, fqn)`` is
    true (all of them when it is None) by a Float8Linear sharing its parameters; returns
    ``model``. Layers whose in/out features are not multiples of 16 stay as they are, and the skip
    is logged (logger "ember.float8") with its reason. Subclasses of nn.Linear (Float8Linear
    itself, SparseLinear, ...) are left alone."""
    if recipe not in RECIPES:
        raise ValueError(f"ember.float8.convert_to_float8_training: recipe must be one of {RECIPES}, got {recipe!r}")
    if type(model) is nn.Linear:
        raise ValueError("ember.float8.convert_to_float8_training: pass the module holding the Linear, not the Linear")
    targets = [
        (fqn, m)
        for fqn, m in model.named_modules()
        if type(m) is nn.Linear and (module_filter_fn is None or module_filter_fn(m, fqn))
    ]
    for fqn, linear in targets:
        reason = fits_float8(linear.in_features, linear.out_features)
        if reason:
            log.info("ember.float8: %s stays nn.Linear: %s", fqn, reason)
            continue
        replace_module(model, fqn, Float8Linear.from_linear(linear, recipe))
    return model


def enable_fp8_all_gather(model: nn.Module) -> int:
    """Make every Float8Linear weight of ``model`` all-gather in fp8 under FSDP2; call it before
    ``fully_shard`` (the meta model is fine). Returns how many weights it changed."""
    n = 0
    for m in model.modules():
        if isinstance(m, Float8Linear) and not isinstance(m.weight.data, Float8ShardedWeight):
            w = m.weight
            m.weight = nn.Parameter(Float8ShardedWeight(w.data, m.recipe), requires_grad=w.requires_grad)
            m._register_state_dict_hook(plain_state_dict)
            n += 1
    return n
