"""float8 microbenchmarks, three tables from one run:

1. quantize_fp8 against the PyTorch expression that does the same (amax, divide, clamp, cast),
   eager and torch.compile'd, in GB/s and as a fraction of the card's memory bandwidth.
2. fp8_gemm per recipe against torch._scaled_mm / F.scaled_mm with the same recipe (where this
   torch has it on this device) and bf16 torch.matmul, in TFLOP/s: 8192³, 4096×7168×16384
   (M×N×K, DeepGEMM's) and the Llama3-8B projections (M = 16384 tokens).
3. Float8Linear forward+backward against bf16 nn.Linear (eager, and compiled with --compile)
   and, when installed, torchao's Float8Linear with the same recipe, at the Llama3-8B MLP shapes.

    python bench/bench_float8.py [--quick] [--device cuda|cpu] [--json out.json] [--compile]
"""

import copy
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

import ember  # noqa: E402
from ember.float8 import Float8Linear, quantize_fp8_reference  # noqa: E402

GRANULARITIES = ["tensor", "row", "block", "tile"]
E4M3 = torch.float8_e4m3fn
# recipe -> (quantize_fp8 granularity of a, of b)
GEMM_RECIPES = {"tensorwise": ("tensor", "tensor"), "rowwise": ("row", "row"), "blockwise": ("block", "tile")}


def quantize_shapes(quick: bool, device: str) -> list:
    if device == "cpu":
        return [(512, 1024)] if quick else [(2048, 4096), (4096, 4096)]
    return [(8192, 8192)] if quick else [(4096, 4096), (8192, 8192), (16384, 4096), (4096, 14336)]


def gemm_shapes(quick: bool, device: str) -> list:
    """(M, N, K)."""
    if device == "cpu":
        return [(256, 512, 512)] if quick else [(1024, 1024, 1024), (2048, 4096, 1024)]
    llama = [(16384, 14336, 4096), (16384, 4096, 14336), (16384, 4096, 4096)]
    return [(8192, 8192, 8192), (4096, 7168, 16384)] + ([] if quick else llama)


def linear_shapes(quick: bool, device: str) -> list:
    """(tokens, in, out): the Llama3-8B MLP's up/gate (4096 -> 14336) and down (14336 -> 4096)."""
    if device == "cpu":
        return [(256, 512, 1024)] if quick else [(1024, 1024, 4096)]
    return [(16384, 4096, 14336)] + ([] if quick else [(16384, 14336, 4096)])


def quantize_table(args, env, reps) -> harness.Report:
    dev, bw = args.device, env.get("bandwidth_tbs")
    report = harness.Report(
        "quantize_fp8: bf16 -> e4m3, x (M, K)", env, baseline="torch", metrics=["GB/s", "% of HBM"] if bw else ["GB/s"]
    )
    for m, k in quantize_shapes(args.quick, dev):
        for granularity in GRANULARITIES:
            for transpose in (False, True):
                case = f"{m}x{k} {granularity}{' T' if transpose else ''}"
                # The op's own fake kernel gives the scale shape (meta tensors: nothing runs).
                meta_x = torch.empty(m, k, device="meta", dtype=torch.bfloat16)
                n_scale = ember.ops.quantize_fp8(meta_x, E4M3, granularity, 128, transpose)[1].numel()
                # Fewest bytes: read x once, write q and the scales once.
                nbytes = m * k * 2 + m * k + 4 * max(n_scale, 1)
                make = lambda: (torch.randn(m, k, device=dev, dtype=torch.bfloat16),)  # noqa: E731
                impls = {
                    "torch": lambda x: quantize_fp8_reference(x, E4M3, granularity, 128, transpose),
                    "ember": lambda x: ember.ops.quantize_fp8(x, E4M3, granularity, 128, transpose),
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
    return report


def torch_scaled_mm(recipe: str, qa, sa, qb, sb):
    """torch's own fp8 GEMM for the recipe, or None where this torch has none on this device.
    torch takes b as (K, N) column-major (our row-major (N, K), transposed) and, for blockwise,
    outer-dim-major scales; those layouts are made here, outside the timed call."""
    try:
        if recipe == "tensorwise":
            fn = lambda: torch._scaled_mm(qa, qb.t(), sa, sb, out_dtype=torch.bfloat16, use_fast_accum=True)  # noqa: E731
        elif recipe == "rowwise":
            sbt = sb.t().contiguous()
            fn = lambda: torch._scaled_mm(qa, qb.t(), sa, sbt, out_dtype=torch.bfloat16, use_fast_accum=True)  # noqa: E731
        else:
            st = F.ScalingType
            sa_mn, sb_t = sa.t().contiguous().t(), sb.t()  # (M, K/128) M-major; (K/128, N/128)
            fn = lambda: F.scaled_mm(
                qa,
                qb.t(),
                sa_mn,
                st.BlockWise1x128,
                sb_t,
                st.BlockWise128x128,  # noqa: E731
                output_dtype=torch.bfloat16,
            )
        fn()
        return fn
    except (RuntimeError, ValueError, NotImplementedError, AttributeError):
        return None


def gemm_table(args, env, reps) -> harness.Report:
    dev = args.device
    report = harness.Report(
        "fp8_gemm: (M, K) e4m3 x (N, K) e4m3 -> bf16", env, baseline="bf16 matmul", metrics=["TFLOP/s"]
    )
    for m, n, k in gemm_shapes(args.quick, dev):
        flops = 2 * m * n * k
        a = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        b = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
        case = f"{m}x{n}x{k}"
        ms = harness.time_ms(lambda: a @ b.t(), lambda: (), dev, reps=reps)
        report.add(case, "bf16 matmul", ms, **{"TFLOP/s": flops / ms / 1e9})
        for recipe, (ga, gb) in GEMM_RECIPES.items():
            qa, sa = ember.ops.quantize_fp8(a, E4M3, ga)
            qb, sb = ember.ops.quantize_fp8(b, E4M3, gb)
            impls = {f"ember {recipe}": lambda: ember.ops.fp8_gemm(qa, sa, qb, sb)}
            theirs = torch_scaled_mm(recipe, qa, sa, qb, sb)
            if theirs is not None:
                impls[f"torch {recipe}"] = theirs
            for name, fn in impls.items():
                ms = harness.time_ms(fn, lambda: (), dev, reps=reps)
                report.add(case, name, ms, **{"TFLOP/s": flops / ms / 1e9})
        a = b = None  # freed before the next shape
    return report


def fwd_bwd(layer, x, dy):
    y = layer(x)
    y.backward(dy)
    return y


def linear_table(args, env, reps) -> harness.Report:
    dev = args.device
    report = harness.Report(
        "Float8Linear forward + backward (bf16 activations and weights)",
        env,
        baseline="nn.Linear bf16",
        metrics=["TFLOP/s"],
    )
    try:
        from torchao.float8 import Float8LinearConfig
        from torchao.float8 import convert_to_float8_training as ao_convert
    except ImportError:
        ao_convert = None
    for tokens, k, n in linear_shapes(args.quick, dev):
        flops = 6 * tokens * k * n
        base = torch.nn.Linear(k, n, bias=False, device=dev, dtype=torch.bfloat16)
        x = torch.randn(tokens, k, device=dev, dtype=torch.bfloat16, requires_grad=True)
        dy = torch.randn(tokens, n, device=dev, dtype=torch.bfloat16)
        case = f"{tokens}x{k}->{n}"
        impls = {"nn.Linear bf16": base}
        if args.compile:
            impls["nn.Linear bf16 compiled"] = torch.compile(copy.deepcopy(base))
        for recipe in ("tensorwise", "rowwise", "blockwise"):
            # --quick compiles only tensorwise (the recipe torchao needs torch.compile for).
            compile_it = args.compile and (recipe == "tensorwise" or not args.quick)
            ours = Float8Linear.from_linear(copy.deepcopy(base), recipe)
            impls[f"ember {recipe}"] = ours
            if compile_it:
                impls[f"ember {recipe} compiled"] = torch.compile(copy.deepcopy(ours))
            if ao_convert is not None and recipe != "blockwise":
                holder = torch.nn.Sequential(copy.deepcopy(base))
                try:
                    ao_convert(holder, config=Float8LinearConfig.from_recipe_name(recipe))
                    fwd_bwd(holder, x, dy)
                    impls[f"torchao {recipe}"] = holder
                    if compile_it:
                        impls[f"torchao {recipe} compiled"] = torch.compile(holder)
                except Exception as e:  # noqa: BLE001 (torchao's own device checks)
                    print(f"# torchao {recipe}: {type(e).__name__}: {str(e)[:120]}")
        for name, layer in impls.items():
            ms = harness.time_ms(lambda: fwd_bwd(layer, x, dy), lambda: (), dev, reps=reps)
            report.add(case, name, ms, **{"TFLOP/s": flops / ms / 1e9})
    return report


def main() -> None:
    p = harness.common_args(__doc__)
    p.add_argument("--compile", action="store_true", help="add torch.compile'd baselines")
    p.add_argument("--only", choices=["quantize", "gemm", "linear"], help="one table")
    args = p.parse_args()
    reps = args.reps or (10 if args.quick else 50)
    env = harness.environment(args.device)
    tables = {"gemm": gemm_table, "linear": linear_table, "quantize": quantize_table}  # the targets' tables first
    reports = []
    for name, table in tables.items():
        if args.only in (None, name):
            reports.append(table(args, env, reps))
            reports[-1].print()
            print(flush=True)
            harness.write_reports(args.json, reports)  # after each table: a timeout keeps what ran


if __name__ == "__main__":
    main()
