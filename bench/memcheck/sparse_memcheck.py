"""The sparse family's CUDA GEMMs on ragged shapes, small enough to run under compute-sanitizer
(device_check.sh runs it with --tool memcheck): the bitmask GEMMs (mask tiles loaded by TMA past
the last row and word, ragged token counts against 256-wide tiles, the 1-bit mask read by the dW
epilogue) and the block-mask grouped GEMMs. EMBER_SPARSE_STRICT is set, so a kernel that refuses
is an error rather than a silent fallback. Prints each case's worst error against float64.

    compute-sanitizer --tool memcheck --error-exitcode 1 python bench/memcheck/sparse_memcheck.py
"""

import os

import torch

import ember
from ember.ops import masked_linear, pack_mask


def main() -> None:
    assert ember.cuda_available(), "needs ember's CUDA kernels and a GPU"
    os.environ["EMBER_SPARSE_STRICT"] = "1"
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    cases = [(1, 8, 128, None), (75, 200, 384, None), (300, 264, 640, None), (72, 256, 384, 16), (40, 384, 256, 128)]
    for n, out, inp, block in cases:
        if block is None:
            m = torch.rand(out, inp, generator=g) < 0.3
        else:
            tiles = torch.rand(-(-out // block), -(-inp // block), generator=g) < 0.4
            m = tiles.repeat_interleave(block, 0).repeat_interleave(block, 1)[:out, :inp]
        x, w, gy = (torch.randn(s, generator=g).to(torch.bfloat16) for s in [(n, inp), (out, inp), (n, out)])
        b = torch.randn(out, generator=g).to(torch.bfloat16)
        packed = pack_mask(m.cuda(), block)
        y = masked_linear(x.cuda(), w.cuda(), packed, b.cuda() if block is None else None, block=block)
        dx, dw = torch.ops.ember.masked_linear_backward(gy.cuda(), x.cuda(), w.cuda(), packed, block or 0, True, True)
        wm = w.double() * m
        refs = {
            "y": x.double() @ wm.t() + (b.double() if block is None else 0),
            "dx": gy.double() @ wm,
            "dw": (gy.double().t() @ x.double()) * m,
        }
        for what, got in (("y", y), ("dx", dx), ("dw", dw)):
            rel = ((got.cpu().double() - refs[what]).abs().max() / refs[what].abs().max()).item()
            worst = max(worst, rel)
            print(
                f"{n}x{out}x{inp} {'bitmask' if block is None else f'block {block}'} {what}: max |err| / max |ref| = {rel:.2e}"
            )
        assert (dw.cpu()[~m] == 0).all(), "masked weights got a nonzero gradient"
    torch.cuda.synchronize()
    print(f"worst {worst:.2e}")
    assert worst < 1e-2, "a sparse GEMM is off by more than one bf16 rounding allows"


if __name__ == "__main__":
    main()
