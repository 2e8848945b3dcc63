"""fp8_gemm on ragged shapes for every recipe and kernel, small enough to run under
compute-sanitizer (device_check.sh runs it with --tool memcheck): the CUTLASS kernels load scales
with their own bounds checks, and M, N, K that are not multiples of the tiles are where an
out-of-bounds read would be. Also prints each case's worst error against the float64 reference.

    compute-sanitizer --tool memcheck --error-exitcode 1 python bench/memcheck/fp8_gemm_memcheck.py
"""

import torch

import ember
from ember.float8 import fp8_gemm_reference

E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2
CASES = [  # (recipe granularities, a dtype, fast_accum): every kernel of csrc/float8/gemm_cuda.cu
    (("tensor", "tensor"), E4M3, True),
    (("row", "row"), E4M3, True),
    (("row", "row"), E4M3, False),
    (("tensor", "tensor"), E5M2, False),
    (("block", "tile"), E4M3, False),
    (("block", "block"), E4M3, False),
]


def main() -> None:
    assert ember.cuda_available(), "needs ember's CUDA kernels and a GPU"
    worst = 0.0
    for m, n, k in [(1, 16, 16), (100, 144, 400), (300, 272, 784)]:
        for (ga, gb), a_dtype, fast in CASES:
            a = torch.randn(m, k, device="cuda")
            b = torch.randn(n, k, device="cuda")
            qa, sa = ember.ops.quantize_fp8(a, a_dtype, ga)
            qb, sb = ember.ops.quantize_fp8(b, E4M3, gb)
            bias = torch.randn(n, device="cuda") if ga != "block" or gb == "tile" else None
            out = ember.ops.fp8_gemm(qa, sa, qb, sb, bias=bias, fast_accum=fast)
            ref = fp8_gemm_reference(
                *(t.cpu() for t in (qa, sa, qb, sb)), out_dtype=torch.float64, bias=None if bias is None else bias.cpu()
            )
            rel = ((out.cpu().double() - ref).abs().max() / ref.abs().max()).item()
            worst = max(worst, rel)
            print(
                f"{m}x{n}x{k} {ga}/{gb} a={str(a_dtype)[-6:]} fast_accum={fast} bias={bias is not None}: max |err| / max |ref| = {rel:.2e}"
            )
    torch.cuda.synchronize()
    print(f"worst {worst:.2e}")
    assert worst < 2e-2, "an fp8_gemm kernel is off by more than bf16 rounding and fp8 accumulation allow"


if __name__ == "__main__":
    main()
