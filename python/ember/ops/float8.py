"""float8 ops: quantize_fp8."""


import torch

_GRANULARITIES = ("tensor", "row", "block", "tile")


def quantize_fp8(
    x: torch.Tensor,
    dtype: torch.dtype = torch.float8_e4m3fn,
    granularity: str = "tensor",
    block: int = 128,
    transpose: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize y = x (or xᵀ when ``transpose``) to fp8 with fp32 scales: y ≈ q.float() * scale.

    granularity "tensor": one scale, shape (); "row": (rows, 1); "block": one per 1×block run of
    a row, (rows, ceil(cols/block)) — the activation recipe; "tile": one per block×block tile,
    (ceil(rows/block), ceil(cols/block)) — the weight recipe. rows/cols are y's.
    ``transpose=True`` reads x column-wise and never materializes xᵀ.
    scale = amax / fp8_max per group (1 for an all-zero group); a group holding ±inf or NaN gets
    an inf/NaN scale rather than silently saturating. Not differentiable (outputs never
    require grad).
    """
    return torch.ops.ember.quantize_fp8(x, dtype, granularity, block, transpose)


@torch.library.register_fake("ember::quantize_fp8")
def _quantize_fp8_fake(x, dtype, granularity, block, transpose):
    # Shape rules only; the C++ binding checks the arguments for real kernels.
    torch._check(granularity in _GRANULARITIES, lambda: f"ember.quantize_fp8: bad granularity {granularity!r}")
    if transpose or granularity != "tensor":
        torch._check(x.dim() == 2, lambda: f"ember.quantize_fp8: x must be 2-D, got shape {tuple(x.shape)}")
    shape = (x.shape[1], x.shape[0]) if transpose else tuple(x.shape)
    q = x.new_empty(shape, dtype=dtype)
    if granularity == "tensor":
        scale_shape = ()
    elif granularity == "row":
        scale_shape = (shape[0], 1)
    elif granularity == "block":
        scale_shape = (shape[0], _ceil_div(shape[1], block))
    else:
        scale_shape = (_ceil_div(shape[0], block), _ceil_div(shape[1], block))
    return q, x.new_empty(scale_shape, dtype=torch.float32)


def _ceil_div(a, b):
    return (a + b - 1) // b  # also right for SymInts under torch.compile(dynamic=True)


