"""Plain-PyTorch reference of ember.ops.quantize_fp8: the definition the kernels must match bit
for bit, and the baseline the benchmark times (so it broadcasts rather than expanding scales)."""

import torch
import torch.nn.functional as F


def _group_shape(granularity: str, rows: int, cols: int, block: int) -> tuple[int, int]:
    shape = {"row": (1, cols), "block": (1, block), "tile": (block, block)}[granularity]
    return max(shape[0], 1), max(shape[1], 1)


def _scales(amax: torch.Tensor, fp8_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, inverse scale) of each group, both correctly rounded fp32 divisions (Python's
    `number / tensor` would multiply by a rounded reciprocal instead). amax is taken as at least
    FLT_MIN · fp8_max, so that fp8_max / amax stays finite."""
    fp8_max_t = torch.full_like(amax, fp8_max)
    tiny = torch.finfo(torch.float32).tiny * fp8_max
    clamped = torch.where(amax < tiny, tiny, amax)  # NaN stays NaN
    zero = amax == 0
    return torch.where(zero, 1.0, clamped / fp8_max_t), torch.where(zero, 1.0, fp8_max_t / clamped)


def quantize_fp8_reference(
    x: torch.Tensor,
    dtype: torch.dtype = torch.float8_e4m3fn,
    granularity: str = "tensor",
    block: int = 128,
    transpose: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """amax per group, scale = amax / fp8_max (1 for amax == 0), q = fp8(clamp(y · fp8_max / amax)),
    with y = x or xᵀ; q is row-major like ember's."""
    fp8_max = torch.finfo(dtype).max
    y = (x.t() if transpose else x).float()
    if granularity == "tensor":
        amax = y.abs().amax() if y.numel() else y.new_zeros(())
        scale, inv = _scales(amax, fp8_max)
        return (y * inv).clamp(-fp8_max, fp8_max).to(dtype).contiguous(), scale
    rows, cols = y.shape
    gr, gc = _group_shape(granularity, rows, cols, block)
    n_r, n_c = -(-rows // gr), 1 if granularity == "row" else -(-cols // gc)
    pad_r, pad_c = n_r * gr - rows, n_c * gc - cols
    groups = (F.pad(y, (0, pad_c, 0, pad_r)) if pad_r or pad_c else y).reshape(n_r, gr, n_c, gc)
    amax = groups.abs().amax(dim=(1, 3)) if groups.numel() else y.new_zeros(n_r, n_c)
    scale, inv = _scales(amax, fp8_max)
    q = (groups * inv[:, None, :, None]).clamp(-fp8_max, fp8_max).to(dtype)
    q = q.reshape(n_r * gr, n_c * gc)[:rows, :cols].contiguous()
    return q, scale


def expand_scale(scale: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """A scale array blown up to one value per element of a rows × cols operand: each scale
    covers ⌈rows / scale rows⌉ × ⌈cols / scale cols⌉ elements (the group shape of its recipe)."""
    if scale.dim() == 0:
        return scale.expand(rows, cols)
    gr = 1 if scale.shape[0] == rows else 128  # per row, or 128-row tiles
    gc = cols if scale.shape[1] == 1 else 128  # per row, or 1×128 runs
    return scale.repeat_interleave(gr, 0)[:rows].repeat_interleave(gc, 1)[:, :cols]


def fp8_gemm_reference(a, a_scale, b, b_scale, out_dtype=torch.bfloat16, bias=None) -> torch.Tensor:
    """ember.ops.fp8_gemm in float64: each operand dequantized element by element (q · its group's
    scale), one float64 matmul, bias added, rounded once to out_dtype."""
    a64 = a.double() * expand_scale(a_scale.double(), *a.shape)
    b64 = b.double() * expand_scale(b_scale.double(), *b.shape)
    out = a64 @ b64.T
    if bias is not None:
        out = out + bias.double()
    return out.to(out_dtype)
