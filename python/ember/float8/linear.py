"""Float8Linear: nn.Linear whose three GEMMs run in fp8 through ember.ops.fp8_gemm.

Per recipe (x: T×K activations, W: N×K weight, dY: T×N; every operand quantized by quantize_fp8
into the layout its GEMM wants, transposes read in place):
  forward   Y  = x·Wᵀ    a = x,   b = W     fast accumulation
  dgrad     dX = dY·W    a = dY,  b = Wᵀ    promoted accumulation
  wgrad     dW = dYᵀ·x   a = dYᵀ, b = xᵀ    promoted accumulation
recipe       x, dY (a)         W (b, forward / dgrad)      dY dtype
tensorwise   one scale          one scale                   e5m2
rowwise      per row            per row                     e4m3
blockwise    1×128 runs         128×128 tiles (wgrad: xᵀ in 1×128 runs)   e4m3
The GEMMs compute in the autocast dtype when autocast is on (else the input's dtype; fp32 results
come out of the GEMM in bf16, see _gemm_dtype) and the gradients are cast to their tensors'
dtypes, as an autocast nn.Linear does. The state dict is
nn.Linear's (weight, bias), so checkpoints move freely between the two.
Under FSDP2 with fp8 all-gather (ember.float8.fsdp) the weight arrives as a Float8GatheredWeight:
its fp8 codes and scales are used as they came, not quantized again.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ..amp import autocast_dtype_of
from ..ops import fp8_gemm, quantize_fp8
from .fsdp import Float8GatheredWeight

E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2
RECIPES = ("tensorwise", "rowwise", "blockwise")
ALIGN = 16  # the fp8 GEMM's K and N

# recipe -> (granularity of x and dY, of W in the forward and Wᵀ in dgrad, of xᵀ in wgrad), dY's fp8
_GRANULARITY = {
    "tensorwise": ("tensor", "tensor", "tensor", E5M2),
    "rowwise": ("row", "row", "row", E4M3),
    "blockwise": ("block", "tile", "block", E4M3),
}


def _gemm_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 models get their fp8 GEMMs' results in bf16 (then cast up): the CUTLASS kernels write
    bf16, and bf16 rounding (2^-9) is far below the fp8 operands' error (2^-4). The same on CPU,
    so that the CPU tests check what the GPU computes."""
    return torch.bfloat16 if dtype == torch.float32 else dtype


def _pad_rows(t: torch.Tensor) -> torch.Tensor:
    """Zero rows up to a multiple of 16: the wgrad GEMM's K is the token count. Zero rows change
    neither a group's amax nor a product."""
    pad = -t.shape[0] % ALIGN
    return F.pad(t, (0, 0, 0, pad)) if pad else t


def _fp8_weight(weight: torch.Tensor, granularity: str, transpose: bool = False):
    """W (or Wᵀ) as a GEMM's b operand: the codes and scales FSDP2 all-gathered in fp8
    (ember.float8.fsdp), or W quantized here."""
    if isinstance(weight, Float8GatheredWeight):
        return weight.fp8_transposed() if transpose else weight.fp8()
    weight = weight if weight.is_contiguous() else weight.contiguous()  # a tied or .t() weight, as nn.Linear takes
    return quantize_fp8(weight, E4M3, granularity, transpose=transpose)


class _Float8Matmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, recipe):
        g_act, g_weight, _, _ = _GRANULARITY[recipe]
        dtype = autocast_dtype_of(x)
        qx, sx = quantize_fp8(x, E4M3, g_act)
        qw, sw = _fp8_weight(weight, g_weight)
        ctx.save_for_backward(x, weight)
        ctx.recipe, ctx.dtype = recipe, dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        y = fp8_gemm(qx, sx, qw, sw, out_dtype=_gemm_dtype(dtype), bias=bias, fast_accum=True)  # bias added in fp32
        return y.to(dtype)

    @staticmethod
    @once_differentiable  # its GEMMs have no derivative: a second one is refused, never silently partial
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        g_act, g_weight, g_wgrad, dy_dtype = _GRANULARITY[ctx.recipe]
        dy = dy.contiguous()
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            qdy, sdy = quantize_fp8(dy, dy_dtype, g_act)
            qwt, swt = _fp8_weight(weight, g_weight, transpose=True)
            dx = fp8_gemm(qdy, sdy, qwt, swt, out_dtype=_gemm_dtype(ctx.dtype), fast_accum=False).to(x.dtype)
        if ctx.needs_input_grad[1]:
            dy_p, x_p = _pad_rows(dy), _pad_rows(x)
            qdyt, sdyt = quantize_fp8(dy_p, dy_dtype, g_wgrad, transpose=True)
            qxt, sxt = quantize_fp8(x_p, E4M3, g_wgrad, transpose=True)
            dw = fp8_gemm(qdyt, sdyt, qxt, sxt, out_dtype=_gemm_dtype(ctx.dtype), fast_accum=False).to(weight.dtype)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            db = dy.sum(0, dtype=torch.float32).to(ctx.bias_dtype)
        return dx, dw, db, None


def float8_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, recipe: str = "tensorwise"
) -> torch.Tensor:
    """F.linear with its forward and both backward GEMMs in fp8 (the recipe as in Float8Linear)."""
    if recipe not in _GRANULARITY:
        raise ValueError(f"ember.float8: recipe must be one of {RECIPES}, got {recipe!r}")
    lead = x.shape[:-1]
    y = _Float8Matmul.apply(x.reshape(-1, x.shape[-1]).contiguous(), weight, bias, recipe)
    return y.reshape(*lead, weight.shape[0])


def fits_float8(in_features: int, out_features: int) -> str | None:
    """Why a Linear cannot run in fp8, or None when it can."""
    bad = [
        f"{name}={v} is not a multiple of {ALIGN}"
        for name, v in (("in_features", in_features), ("out_features", out_features))
        if v % ALIGN
    ]
    return "; ".join(bad) or None


class Float8Linear(nn.Linear):
    """A drop-in nn.Linear whose GEMMs run in fp8 (``recipe``: "tensorwise", "rowwise" or
    "blockwise"; see this module's docstring). Parameters and state dict are nn.Linear's."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device=None,
        dtype=None,
        recipe: str = "tensorwise",
    ):
        if recipe not in RECIPES:
            raise ValueError(f"ember.float8.Float8Linear: recipe must be one of {RECIPES}, got {recipe!r}")
        reason = fits_float8(in_features, out_features)
        if reason:
            raise ValueError(f"ember.float8.Float8Linear: {reason} (the fp8 GEMM's K and N)")
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.recipe = recipe

    @classmethod
    def from_linear(cls, linear: nn.Linear, recipe: str = "tensorwise") -> "Float8Linear":
        """A Float8Linear sharing ``linear``'s parameters (no copy, no re-initialization)."""
        with torch.device("meta"):
            new = cls(linear.in_features, linear.out_features, linear.bias is not None, recipe=recipe)
        new.weight, new.bias = linear.weight, linear.bias
        new.train(linear.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return float8_linear(x, self.weight, self.bias, self.recipe)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, recipe={self.recipe}"
