"""float8 ops: quantize_fp8 and fp8_gemm."""

import torch

from .. import kernels
from . import reference_path
from .fake import register_fake

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
    ``transpose=True`` reads x column-wise and never materializes xᵀ. x must be contiguous.

    Per group (the same for every granularity and device; include/ember/fp8.h):
    scale = amax / fp8_max and q = fp8(clamp(y · fp8_max / amax, ±fp8_max)), rounded to nearest
    even, so the group's largest |y| becomes ±fp8_max (448 e4m3, 57344 e5m2) and no q overflows;
    values beyond the fp8 range just make a larger scale. Special cases:

    - amax 0 (an all-zero or empty group): scale 1, q = ±0 (the sign of zero is kept).
    - amax below FLT_MIN · fp8_max: taken as that, so the scale stays a normal fp32 and q finite.
    - a group holding ±inf: scale +inf; q is NaN where y is ±inf and ±0 elsewhere in the group.
    - a group holding NaN (inf or not): scale NaN (always the bits 0x7fc00000), every q NaN.
    - a NaN q is always the code 0x7f (sign dropped), in e5m2 too (inf gives NaN, never inf).

    Other groups are unaffected. Not differentiable (outputs never require grad).
    """
    if kernels.disabled(f"float8.quantize.{granularity}"):
        return reference_path.quantize_fp8(x, dtype, granularity, block, transpose)
    return torch.ops.ember.quantize_fp8(x, dtype, granularity, block, transpose)


@register_fake("ember::quantize_fp8")
def _quantize_fp8_fake(x, dtype, granularity, block, transpose):
    # Shape rules only; the C++ binding checks the arguments for real kernels.
    torch._check(granularity in _GRANULARITIES, lambda: f"ember.quantize_fp8: bad granularity {granularity!r}")
    if transpose or granularity != "tensor":
        torch._check(x.dim() == 2, lambda: f"ember.quantize_fp8: x must be 2-D, got shape {tuple(x.shape)}")
    torch._check(
        granularity in ("tensor", "row") or block in (16, 32, 64, 128),
        lambda: f"ember.quantize_fp8: block must be 16, 32, 64 or 128, got {block}",
    )
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


def fp8_gemm(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    b: torch.Tensor,
    b_scale: torch.Tensor,
    out_dtype: torch.dtype = torch.bfloat16,
    bias: torch.Tensor | None = None,
    fast_accum: bool = True,
) -> torch.Tensor:
    """(a · a_scale) @ (b · b_scale)ᵀ (+ bias): a (M, K) and b (N, K) row-major fp8, K and N
    multiples of 16, e4m3 × e4m3, e4m3 × e5m2 or e5m2 × e4m3.

    The scale shapes (fp32, as ``quantize_fp8`` makes them) pick the recipe: () and ()
    tensorwise; (M, 1) and (N, 1) rowwise; (M, ⌈K/128⌉) and (⌈N/128⌉, ⌈K/128⌉) blockwise
    (1×128 activations × 128×128 weights: forward and dgrad); (M, ⌈K/128⌉) and (N, ⌈K/128⌉)
    (1×128 × 1×128: the weight gradient, K = tokens). ``fast_accum`` lets the tensor cores keep
    partial sums in their own ~14-bit accumulator (tensorwise and rowwise on CUDA; blockwise
    always promotes to fp32 every 128 of K). On CPU, and on CUDA for combinations without a
    CUTLASS kernel (out_dtype other than bf16, e4m3 × e5m2), the operands are dequantized and
    multiplied in fp32. Not differentiable.

    Each element stands for q · scale (one fp32 rounding); NaN and inf propagate as in float
    arithmetic: a NaN code or scale makes every output it enters NaN, an inf code (e5m2) ±inf
    or NaN, 0 · inf is NaN; results beyond out_dtype's range become ±inf (no saturation). K = 0
    gives bias (or zeros) whatever the scales. On CUDA the CUTLASS kernels apply the scales to
    fp32 sums rather than to each element: the same up to rounding for finite scales, but an inf
    scale over zero codes gives ±inf where the definition gives NaN (scales from
    ``quantize_fp8`` never do that: an inf scale comes with NaN codes). a, b, a_scale and b_scale
    must be contiguous, bias may have any layout; in grad mode none may require grad.
    """
    if torch.is_grad_enabled():  # (else a bias got a gradient through the CPU emulation, none on CUDA)
        for name, t in (("a", a), ("a_scale", a_scale), ("b", b), ("b_scale", b_scale), ("bias", bias)):
            if t is not None and t.requires_grad:
                raise ValueError(
                    f"ember.ops.fp8_gemm: not differentiable, but {name} requires grad; pass it detached "
                    "(Float8Linear differentiates through fp8 GEMMs)"
                )
    if a.device.type == "cpu" and kernels.disabled("float8.gemm.emulated"):  # (CUDA's emulation is a fallback)
        return reference_path.fp8_gemm(a, a_scale, b, b_scale, out_dtype, bias)
    return torch.ops.ember.fp8_gemm(a, a_scale, b, b_scale, out_dtype, bias, fast_accum)


@register_fake("ember::fp8_gemm")
def _fp8_gemm_fake(a, a_scale, b, b_scale, out_dtype, bias, fast_accum):
    torch._check(a.dim() == 2 and b.dim() == 2, lambda: "ember.fp8_gemm: a and b must be 2-D")
    torch._check(
        a.shape[1] == b.shape[1], lambda: f"ember.fp8_gemm: a {tuple(a.shape)} and b {tuple(b.shape)} differ in K"
    )
    return a.new_empty((a.shape[0], b.shape[0]), dtype=out_dtype)


def _ceil_div(a, b):
    return (a + b - 1) // b  # also right for SymInts under torch.compile(dynamic=True)
