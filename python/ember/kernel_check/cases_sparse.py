"""sparse cases: masked_linear's forward, dX and dW against the dense float64 GEMM over
where(M, W, 0), to the tests' 1e-5 (fp32) or 1e-2 (bf16) of the result's scale. Bitmasks and
block masks of every block size the trainer uses, odd and aligned sizes; the CUDA kernels run
under EMBER_SPARSE_STRICT (a refusal fails instead of taking the fallback), and the tiled path
with tiles of a few rows so that several tiles are visited."""

from __future__ import annotations

import torch

from ..ops import masked_linear, pack_mask
from .compare import Compare
from .switches import switched


def mask_of(out: int, inp: int, block: int | None, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if block is None:
        return torch.rand(out, inp, generator=g) < 0.6
    tiles = torch.rand(-(-out // block), -(-inp // block), generator=g) < 0.6
    return tiles.repeat_interleave(block, 0).repeat_interleave(block, 1)[:out, :inp]


def linear(tokens, out, inp, block, dtype, device) -> list[Compare]:
    g = torch.Generator().manual_seed(tokens + out + inp)
    x0, w0, b0 = (
        torch.randn(tokens, inp, generator=g),
        torch.randn(out, inp, generator=g),
        torch.randn(out, generator=g),
    )
    dy = torch.randn(tokens, out, generator=g)
    m = mask_of(out, inp, block, out * inp)
    x, w, b = (t.detach().clone().to(device, dtype).requires_grad_() for t in (x0, w0, b0))
    y = masked_linear(x, w, pack_mask(m.to(device), block), b, block)
    y.backward(dy.to(device, dtype))
    rx, rw, rb = (t.detach().to(dtype).double().requires_grad_() for t in (x0, w0, b0))
    ry = rx @ torch.where(m, rw, 0).t() + rb
    ry.backward(dy.to(dtype).double())
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    what = f"{tokens}x{out}x{inp} block={block} {str(dtype)[6:]}"
    rdw = torch.where(m, rw.grad, 0)
    return [
        Compare(f"y {what}", y, ry, tol),
        Compare(f"dx {what}", x.grad, rx.grad, tol),
        Compare(f"dw {what}", w.grad, rdw, tol),
    ]


SHAPES = ((37, 75, 200), (64, 128, 256))


def bitmask_tiled(device) -> list[Compare]:
    dtypes = (torch.float32,) if device.type == "cuda" else (torch.float32, torch.bfloat16)
    with switched(EMBER_SPARSE_TILE_BYTES="4096"):
        return [c for s in SHAPES for dt in dtypes for c in linear(*s, None, dt, device)]


def bitmask_gemm(device) -> list[Compare]:
    # shapes the kernels take (in % 128, out % 8: csrc/sparse/bitmask_gemm.cu); a refusal fails
    with switched(EMBER_SPARSE_STRICT="1"):
        return [c for s in ((40, 136, 384), (64, 128, 256)) for c in linear(*s, None, torch.bfloat16, device)]


def block(dtype, device) -> list[Compare]:
    with switched(EMBER_SPARSE_STRICT="1"):
        return [c for blk in (16, 64) for s in ((40, 96, 128), (64, 128, 256)) for c in linear(*s, blk, dtype, device)]


CASES = {
    "sparse.bitmask_tiled": bitmask_tiled,
    "sparse.bitmask_gemm": bitmask_gemm,
    "sparse.grouped": lambda d: block(torch.bfloat16, d),
    "sparse.block_gemms": lambda d: block(torch.float32, d),
}
