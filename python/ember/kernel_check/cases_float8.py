"""float8 cases: quantize_fp8 bit for bit against its reference; fp8_gemm within the tests' bound
(tests/float8/test_gemm.py: the accumulation's rounding k·u·Σ|a||b| plus one output rounding)
against the float64 reference, at shapes that reach each kernel of csrc/float8/gemm_cuda.cu.
The CUDA cases set EMBER_FP8_GEMM_STRICT, so a CUTLASS kernel that refuses fails rather than
falling back to the emulation."""

from __future__ import annotations

import torch

from ..float8.reference import expand_scale, fp8_gemm_reference, quantize_fp8_reference
from ..ops import fp8_gemm, quantize_fp8
from .compare import Compare
from .switches import switched

E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2
OUT_EPS = {torch.bfloat16: 2.0**-8, torch.float32: 2.0**-23}
# a's and b's granularity per recipe
RECIPES = {"tensorwise": ("tensor", "tensor"), "rowwise": ("row", "row"), "blockwise": ("block", "tile")}
RECIPES["blockwise_wgrad"] = ("block", "block")


def operand(rows: int, cols: int, seed: int, device) -> torch.Tensor:
    """Values whose magnitude varies by row and by 128-column run, so every group has its own scale."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g) * torch.exp(torch.randn(rows, 1, generator=g))
    x *= torch.exp(torch.randn(1, -(-cols // 128), generator=g)).repeat_interleave(128, 1)[:, :cols]
    return (x / cols**0.5).to(device)


def quantize(granularity: str, device) -> list[Compare]:
    out = []
    for rows, cols in ((37, 200), (128, 256)):
        for dtype in (E4M3, E5M2):
            for transpose in (False, True):
                for block in (128, 32) if granularity in ("block", "tile") else (128,):
                    x = operand(rows, cols, rows + cols, device)
                    q, s = quantize_fp8(x, dtype, granularity, block, transpose)
                    rq, rs = quantize_fp8_reference(x.cpu(), dtype, granularity, block, transpose)
                    what = f"{rows}x{cols} {str(dtype)[6:]} transpose={transpose} block={block}"
                    out += [Compare(f"q {what}", q.float(), rq.float(), 0.0), Compare(f"scale {what}", s, rs, 0.0)]
    return out


def gemm(m, n, k, recipe, pair=(E4M3, E4M3), out_dtype=torch.bfloat16, fast_accum=True, bias=False, device="cpu"):
    """One fp8_gemm against the float64 reference, with the tests' elementwise bound."""
    ga, gb = RECIPES[recipe]
    qa, sa = quantize_fp8(operand(m, k, 1, device), pair[0], ga)
    qb, sb = quantize_fp8(operand(n, k, 2, device), pair[1], gb)
    b = operand(1, n, 3, device)[0].to(out_dtype) if bias else None
    out = fp8_gemm(qa, sa, qb, sb, out_dtype=out_dtype, bias=b, fast_accum=fast_accum)
    args = [t.cpu() for t in (qa, sa, qb, sb)]
    ref = fp8_gemm_reference(*args, out_dtype=torch.float64, bias=None if b is None else b.cpu())
    mags = (args[0].double().abs() * expand_scale(args[1].double(), m, k)) @ (
        args[2].double().abs() * expand_scale(args[3].double(), n, k)
    ).T
    u = 2.0**-13 if out.is_cuda else 2.0**-24  # CUDA's fp8 tensor cores keep ~14 bits between promotions
    tol = 2 * k * u * mags + OUT_EPS[out_dtype] * ref.abs() + torch.finfo(out_dtype).tiny
    what = f"{recipe} {m}x{n}x{k} {str(pair[0])[6:]}x{str(pair[1])[6:]} out {str(out_dtype)[6:]} fast={fast_accum}"
    return Compare(what, out, ref, tol)


def emulated(device) -> list[Compare]:
    if device.type == "cuda":  # the combinations without a CUTLASS kernel
        return [
            gemm(33, 48, 160, "rowwise", out_dtype=torch.float32, device=device),
            gemm(64, 128, 256, "tensorwise", (E4M3, E5M2), bias=True, device=device),
        ]
    return [
        gemm(m, n, k, recipe, pair, out_dtype, bias=bias, device=device)
        for m, n, k in ((33, 48, 160), (64, 128, 256))
        for recipe in RECIPES
        for pair, out_dtype, bias in (((E4M3, E4M3), torch.bfloat16, True), ((E5M2, E4M3), torch.float32, False))
    ]


def cutlass(device, shapes=((33, 256, 256), (64, 128, 512)), **kw) -> list[Compare]:
    """The scaled kernels, tensorwise and rowwise, odd and aligned M."""
    with switched(EMBER_FP8_GEMM_STRICT="1"):
        return [
            gemm(m, n, k, recipe, device=device, bias=bias, **kw)
            for m, n, k in shapes
            for recipe, bias in (("tensorwise", False), ("rowwise", True))
        ]


def fast_large(device) -> list[Compare]:
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return cutlass(device, shapes=((64 * (sms + 1) + 3, 256, 256),))  # more 64×128 tiles than SMs


def blockwise(recipe: str, device) -> list[Compare]:
    with switched(EMBER_FP8_GEMM_STRICT="1"):
        return [gemm(m, n, k, recipe, fast_accum=False, device=device) for m, n, k in ((33, 256, 384), (128, 128, 256))]


CASES = {
    **{f"float8.quantize.{g}": (lambda d, g=g: quantize(g, d)) for g in ("tensor", "row", "block", "tile")},
    "float8.gemm.emulated": emulated,
    "float8.gemm.cutlass_fast_small": cutlass,
    "float8.gemm.cutlass_fast_large": fast_large,
    "float8.gemm.cutlass_e4m3_promoted": lambda d: cutlass(d, fast_accum=False),
    "float8.gemm.cutlass_e5m2_promoted": lambda d: cutlass(d, pair=(E5M2, E4M3)),
    "float8.gemm.cutlass_blockwise": lambda d: blockwise("blockwise", d),
    "float8.gemm.cutlass_blockwise_wgrad": lambda d: blockwise("blockwise_wgrad", d),
}
