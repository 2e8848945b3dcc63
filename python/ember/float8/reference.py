"""Plain-PyTorch reference of ember.ops.quantize_fp8 (the definition the kernels must match
bit for bit, and the baseline the benchmark times)."""

import torch
import torch.nn.functional as F


def _group_shape(granularity: str, rows: int, cols: int, block: int) -> tuple[int, int]:
    return {"tensor": (rows, cols), "row": (1, cols), "block": (1, block), "tile": (block, block)}[granularity]


def _scales(amax: torch.Tensor, fp8_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, inverse scale) of each group, both correctly rounded fp32 divisions (Python's
    `number / tensor` would multiply by a rounded reciprocal instead)."""
    fp8_max_t = torch.full_like(amax, fp8_max)
    zero = amax == 0
    return torch.where(zero, 1.0, amax / fp8_max_t), torch.where(zero, 1.0, fp8_max_t / amax)


def quantize_fp8_reference(
    x: torch.Tensor,
    dtype: torch.dtype = torch.float8_e4m3fn,
    granularity: str = "tensor",
    block: int = 128,
    transpose: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """amax per group, scale = amax / fp8_max (1 for amax == 0), q = fp8(clamp(y · fp8_max / amax))."""
    fp8_max = torch.finfo(dtype).max
    y = (x.t() if transpose else x).float()
    if granularity == "tensor":
        amax = y.abs().amax() if y.numel() else y.new_zeros(())
        scale, inv_full = _scales(amax, fp8_max)
    else:
        rows, cols = y.shape
        gr, gc = (max(n, 1) for n in _group_shape(granularity, rows, cols, block))
        n_r, n_c = -(-rows // gr), 1 if granularity == "row" else -(-cols // gc)
        padded = F.pad(y.abs(), (0, n_c * gc - cols, 0, n_r * gr - rows))
        amax = padded.reshape(n_r, gr, n_c, gc).amax(dim=(1, 3)) if padded.numel() else y.new_zeros(n_r, n_c)
        scale, inv = _scales(amax, fp8_max)
        inv_full = inv.repeat_interleave(gr, 0).repeat_interleave(gc, 1)[:rows, :cols]
    q = (y * inv_full).clamp(-fp8_max, fp8_max).to(dtype)
    return q, scale
