"""register_fake for the ember ops, with the device check the CPU and CUDA kernels make
(bindings/device.h). A call that mixes a meta tensor with real ones dispatches to the Meta key,
that is to the fake kernel: it refuses the call, naming the op and the argument, rather than
answer with uninitialized tensors. Under torch.compile every tensor is on one (fake) device."""

from __future__ import annotations

import functools

import torch


def _tensors(args):
    """(argument index, list index or None, tensor) of every tensor among args."""
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            yield i, None, a
        elif isinstance(a, (list, tuple)):
            yield from ((i, k, t) for k, t in enumerate(a) if isinstance(t, torch.Tensor))


def _name(op: str, i: int, k: int | None) -> str:
    args = getattr(torch.ops.ember, op).default._schema.arguments
    name = args[i].name if i < len(args) else f"argument {i}"
    return name if k is None else f"{name}[{k}]"


def check_one_device(op: str, args) -> None:
    """Every tensor of args on one device: that of the first tensor not on meta (where the data is)."""
    found = list(_tensors(args))
    first = next((f for f in found if f[2].device.type != "meta"), None)
    if first is None:
        return  # all on meta: shapes only, which is what the Meta key is for
    for i, k, t in found:
        if t.device != first[2].device:
            raise RuntimeError(
                f"ember.{op}: {_name(op, i, k)} must be on {first[2].device} "
                f"(where {_name(op, first[0], first[1])} is), got {t.device}"
            )


def register_fake(qualname: str):
    """torch.library.register_fake(qualname) with check_one_device first."""
    op = qualname.split("::", 1)[1]

    def wrap(fn):
        @functools.wraps(fn)
        def checked(*args, **kwargs):
            check_one_device(op, args)
            return fn(*args, **kwargs)

        torch.library.register_fake(qualname)(checked)
        return fn

    return wrap
