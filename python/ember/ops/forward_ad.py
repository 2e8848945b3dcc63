"""Forward-mode derivatives (torch.func.jvp, torch.autograd.forward_ad) through the ops: they have
no forward-mode rule, and torch would answer a tangent of 0 (or None) silently, so they refuse."""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD


def refuse_forward_ad(op: str, *tensors: torch.Tensor | None) -> None:
    """Raise if any of tensors carries a forward-mode tangent (only while a dual level is open)."""
    if fwAD._current_level < 0 or torch.compiler.is_compiling():
        return
    if any(t is not None and fwAD.unpack_dual(t).tangent is not None for t in tensors):
        raise RuntimeError(
            f"ember.ops.{op}: no forward-mode derivative (torch.func.jvp, torch.autograd.forward_ad): the "
            "tangent would come out as 0; use reverse mode (.backward() or torch.autograd.grad)"
        )
