"""Swapping one submodule of a model for another by its dotted name (used by random_prune,
convert_to_float8_training and ember.patch)."""

from torch import nn

# nn.Module's per-instance hook tables (forward, backward, state dict): a swap keeps them.
_HOOK_TABLES = (
    "_backward_pre_hooks",
    "_backward_hooks",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


def replace_module(model: nn.Module, fqn: str, new: nn.Module) -> None:
    """model's submodule at ``fqn`` ("layers.0.mlp.up") becomes ``new`` wherever the model holds it
    (a module reused under two names: its weights shared), with the hooks registered on the old
    one: the same tables (so their handles still remove them), ``new``'s own added."""
    if not fqn:
        raise ValueError("ember: a model cannot replace itself: pass the module that holds the layer")
    old = model.get_submodule(fqn)
    _carry_hooks(old, new)
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if module is old and name:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, new)


def _carry_hooks(old: nn.Module, new: nn.Module) -> None:
    for table in _HOOK_TABLES:
        carried, own = getattr(old, table, None), getattr(new, table, None)
        if carried is None or own is None or carried is own or not carried:
            continue
        carried.update(own)
        setattr(new, table, carried)
    if old.__dict__.get("_is_full_backward_hook") is not None:
        new._is_full_backward_hook = old._is_full_backward_hook
