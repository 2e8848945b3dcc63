"""Calling the model's head with the fused loss in place of its forward, without changing the head.

The head runs the hooks that keep its weight where it belongs (FSDP2's unshard and reshard,
accelerate's offload, which loads the weight before the forward and puts it back after) and
the forward pre-hooks, which see the head's real input. A hook that would see the head's output or
its gradients (a forward hook, a backward hook, a forward replaced on the instance by someone
else, tensor parallelism's hooks that redistribute the logits) would get the loss instead of the
logits, and a subclass of nn.Linear with a forward of its own computes something else than the
weight's product: `bypassed` names it, and the caller takes the unfused path for that call
(accelerate's forward wrapper is not such a forward: it is run here). Nothing is set on the head,
so the same code runs under torch.compile.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn
from torch.nn.modules import module as _module

# hooks of these packages keep the weight in place (FSDP2 and the composable APIs, accelerate) or
# track which module runs (torch's ModuleTracker, under FlopCounterMode): they run around the
# fused loss, and none of them needs the logits
_FRAMEWORKS = ("torch.distributed.", "torch.utils.module_tracker", "accelerate.")


# tensor parallelism's hooks (distribute_module) redistribute the head's input and its output, the
# logits: they cannot run around a loss
_TENSOR_PARALLEL = "torch.distributed.tensor."


def _module_of(hook) -> str:
    while isinstance(hook, functools.partial):
        hook = hook.func
    return getattr(hook, "__module__", None) or ""


def _framework(hook) -> bool:
    return _module_of(hook).startswith(_FRAMEWORKS) and not _module_of(hook).startswith(_TENSOR_PARALLEL)


def bypassed(head: nn.Module) -> str | None:
    """Why the fused loss cannot stand in for `head`'s forward in this call (None: it can)."""
    if any(_module_of(h).startswith(_TENSOR_PARALLEL) for h in head._forward_hooks.values()):
        return "tensor parallel hooks (parallelize_module), which redistribute the logits"
    kinds = (
        ("forward hook", _module._global_forward_hooks, head._forward_hooks),
        ("backward hook", _module._global_backward_hooks, head._backward_hooks),
        ("backward pre-hook", _module._global_backward_pre_hooks, head._backward_pre_hooks),
    )
    for kind, global_hooks, hooks in kinds:
        if any(not _framework(h) for h in hooks.values()):
            return f"a {kind}"
        if any(not _framework(h) for h in global_hooks.values()):
            return f"a global module {kind} (it runs on every module)"
    if "forward" in head.__dict__ and getattr(head, "_hf_hook", None) is None:
        return "a forward set on the instance"
    if type(head).forward is not nn.Linear.forward:  # a quantized or adapter Linear: not weight·h + bias
        return f"a forward of its own ({type(head).__name__})"
    return None


def call_head(head: nn.Module, fn, hidden):
    """`fn(hidden)` as `head(hidden)` would run its forward: pre-hooks, accelerate's hook and
    the framework forward hooks around it (`bypassed(head)` is None)."""
    args, kwargs = (hidden,), {}
    for key, hook in (*_module._global_forward_pre_hooks.items(), *head._forward_pre_hooks.items()):
        if key in head._forward_pre_hooks_with_kwargs:
            result = hook(head, args, kwargs)
            args, kwargs = (args, kwargs) if result is None else result
        else:
            result = hook(head, args)
            args = args if result is None else result if isinstance(result, tuple) else (result,)
    accelerate_hook = getattr(head, "_hf_hook", None)
    if accelerate_hook is not None:  # as accelerate's forward wrapper: weight loaded, inputs moved
        args, kwargs = accelerate_hook.pre_forward(head, *args, **kwargs)
    with torch.no_grad() if getattr(accelerate_hook, "no_grad", False) else contextlib.nullcontext():
        out = fn(*args, **kwargs)
    if accelerate_hook is not None:
        out = accelerate_hook.post_forward(head, out)
    with_kwargs = {**_module._global_forward_hooks_with_kwargs, **head._forward_hooks_with_kwargs}
    for key, hook in (*_module._global_forward_hooks.items(), *head._forward_hooks.items()):
        result = hook(head, args, kwargs, out) if key in with_kwargs else hook(head, args, out)
        out = out if result is None else result
    return out
