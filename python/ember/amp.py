"""The dtype a GEMM computes in: autocast's when autocast is on for the tensor's device, else the
tensor's own (what F.linear would do)."""

import torch


def autocast_dtype_of(x: torch.Tensor) -> torch.dtype:
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def autocast_inputs(*tensors: torch.Tensor | None) -> tuple:
    """The tensors as autocast hands them to a GEMM (F.linear): while autocast is on for the first
    one's device, floating tensors other than float64 (which autocast leaves) in its dtype; else,
    and None, as they are."""
    first = next((t for t in tensors if t is not None), None)
    if first is None or not torch.is_autocast_enabled(first.device.type):
        return tensors
    dtype = torch.get_autocast_dtype(first.device.type)
    return tuple(
        t.to(dtype) if t is not None and t.is_floating_point() and t.dtype != torch.float64 else t for t in tensors
    )
