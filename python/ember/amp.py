"""The dtype a GEMM computes in: autocast's when autocast is on for the tensor's device, else the
tensor's own (what F.linear would do)."""

import torch


def autocast_dtype_of(x: torch.Tensor) -> torch.dtype:
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
