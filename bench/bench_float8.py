"""float8 microbenchmarks: ember.ops.quantize_fp8 against the PyTorch expression that does the
same (amax, divide, clamp, cast), eager and torch.compile'd, in GB/s and as a fraction of the
card's memory bandwidth.

    python bench/bench_float8.py [--quick] [--device cuda|cpu] [--json out.json] [--compile]
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

import ember  # noqa: E402
from ember.float8 import quantize_fp8_reference  # noqa: E402

GRANULARITIES = ["tensor", "row", "block", "tile"]


def shapes(quick: bool, device: str) -> list:
    if device == "cpu":
        return [(512, 1024)] if quick else [(2048, 4096), (4096, 4096)]
    return [(8192, 8192)] if quick else [(4096, 4096), (8192, 8192), (16384, 4096), (4096, 14336)]


def main() -> None:
    p = harness.common_args(__doc__)
    p.add_argument("--compile", action="store_true", help="add torch.compile of the PyTorch expression")
    args = p.parse_args()
    dev = args.device
    reps = args.reps or (10 if args.quick else 50)
    env = harness.environment(dev)
    bw = env.get("bandwidth_tbs")
    report = harness.Report(
        "quantize_fp8: bf16 -> e4m3, x (M, K)", env, baseline="torch", metrics=["GB/s", "% of HBM"] if bw else ["GB/s"]
    )
    for m, k in shapes(args.quick, dev):
        for granularity in GRANULARITIES:
            for transpose in (False, True):
                case = f"{m}x{k} {granularity}{' T' if transpose else ''}"
                # The op's own fake kernel gives the scale shape (meta tensors: nothing runs).
                meta_x = torch.empty(m, k, device="meta", dtype=torch.bfloat16)
                n_scale = ember.ops.quantize_fp8(meta_x, torch.float8_e4m3fn, granularity, 128, transpose)[1].numel()
                # Fewest bytes: read x once, write q and the scales once.
                nbytes = m * k * 2 + m * k + 4 * max(n_scale, 1)
                make = lambda: (torch.randn(m, k, device=dev, dtype=torch.bfloat16),)  # noqa: E731
                impls = {
                    "torch": lambda x: quantize_fp8_reference(x, torch.float8_e4m3fn, granularity, 128, transpose),
                    "ember": lambda x: ember.ops.quantize_fp8(x, torch.float8_e4m3fn, granularity, 128, transpose),
                }
                if args.compile and not (args.quick and transpose):
                    impls["torch.compile"] = torch.compile(impls["torch"], dynamic=False)
                for name, fn in impls.items():
                    ms = harness.time_ms(fn, make, dev, reps=reps, bytes_per_call=nbytes)
                    gbs = nbytes / ms / 1e6
                    extra = {"GB/s": gbs}
                    if bw:
                        extra["% of HBM"] = 100 * gbs / (bw * 1e3)
                    report.add(case, name, ms, **extra)
    report.print()
    report.write_json(args.json)


if __name__ == "__main__":
    main()
