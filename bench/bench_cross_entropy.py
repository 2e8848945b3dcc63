"""Linear + cross-entropy, forward + backward: ember.ops.linear_cross_entropy (with and without
per-token weights; on CUDA bf16 also with the gradient materialized instead of made inside the
backward GEMMs, EMBER_CE_SOFTMAX_GEMM=0) against F.linear + F.cross_entropy (eager, and torch.compile'd with
--compile), PyTorch's own chunked F.linear_cross_entropy (torch >= 2.14) and, when installed,
Liger's fused linear CE and cut-cross-entropy. Time, TFLOP/s counted as 6·N·d·V, and peak memory
above the inputs:

- GPU: torch.cuda.max_memory_allocated over one call, minus what was allocated before it;
- CPU: each implementation in its own process, after a warm-up call and malloc_trim: the peak
  resident set (VmHWM, reset through /proc/self/clear_refs) minus the resident set before the call.

Either way the gradients themselves count (dhidden, dlm_weight).

    python bench/bench_cross_entropy.py [--quick] [--device cuda|cpu] [--json out.json] [--compile]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

import ember  # noqa: E402


def cases(quick: bool, device: str) -> list[tuple[int, int, int]]:
    if device == "cpu":  # the CPU shape
        return [(4096, 256, 32000)]
    return [(4096, 4096, 128256)] if quick else [(4096, 4096, 128256), (8192, 4096, 128256), (16384, 2048, 32000)]


def make_inputs(n, d, v, device, dtype, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    h = torch.randn(n, d, device=device, dtype=dtype, generator=g).requires_grad_()
    w = (torch.randn(v, d, device=device, dtype=dtype, generator=g) / d**0.5).requires_grad_()
    y = torch.randint(0, v, (n,), device=device, generator=g)
    tw = torch.rand(n, device=device, generator=g)
    return h, w, y, tw


def implementations(compile_: bool) -> dict:
    """name -> fn(h, w, y, token_weights) running forward + backward."""

    def torch_plain(h, w, y, tw):
        F.cross_entropy(F.linear(h, w).float(), y).backward()

    def torch_weighted(h, w, y, tw):
        ((F.cross_entropy(F.linear(h, w).float(), y, reduction="none") * tw).sum() / y.numel()).backward()

    def ember_materialized(h, w, y, tw):
        # the row kernels write the gradient; the default on CUDA bf16 makes it inside the
        # backward GEMMs (csrc/cross_entropy/cross_entropy_driver.cpp): this row tells the two apart
        os.environ["EMBER_CE_SOFTMAX_GEMM"] = "0"
        try:
            ember.ops.linear_cross_entropy(h, w, y, tw).backward()
        finally:
            del os.environ["EMBER_CE_SOFTMAX_GEMM"]

    impls = {
        "torch linear+CE": torch_plain,
        "torch linear+CE weighted": torch_weighted,
        "ember": lambda h, w, y, tw: ember.ops.linear_cross_entropy(h, w, y).backward(),
        "ember weighted": lambda h, w, y, tw: ember.ops.linear_cross_entropy(h, w, y, tw).backward(),
        "ember weighted, materialized gradient": ember_materialized,
    }
    if compile_:
        compiled = torch.compile(lambda h, w, y: F.cross_entropy(F.linear(h, w).float(), y))
        impls["torch.compile linear+CE"] = lambda h, w, y, tw: compiled(h, w, y).backward()
    if hasattr(F, "linear_cross_entropy"):
        impls["torch chunked"] = lambda h, w, y, tw: F.linear_cross_entropy(
            h, w, y, options=torch.nn.LinearCrossEntropyOptions()
        ).backward()
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

        impls["liger"] = lambda h, w, y, tw: liger_fused_linear_cross_entropy(h, w, y).backward()
    except ImportError:
        pass
    try:
        from cut_cross_entropy import linear_cross_entropy as cce

        impls["cut-cross-entropy"] = lambda h, w, y, tw: cce(h, w, y).backward()
    except ImportError:
        pass
    return impls


def peak_cuda_mb(fn, args) -> float:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn(*args)
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    raise KeyError(key)


def cpu_child(name: str, n: int, d: int, v: int, compile_: bool) -> None:
    """In a fresh process: warm up, then the peak resident memory of one call above the inputs."""
    fn = implementations(compile_)[name]
    args = make_inputs(n, d, v, "cpu", torch.float32)
    fn(*args)  # warm-up: allocator pools, compiled code, the gradients' storage
    for t in args[:2]:
        t.grad = None
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand the warm-up's freed pages back: they would hide the peak
    before = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set
    fn(*args)
    print(json.dumps({"peak_mb": (_status_kb("VmHWM") - before) / 1024}))


def main() -> None:
    p = harness.common_args(__doc__)
    p.add_argument("--compile", action="store_true", help="add torch.compile of F.linear + F.cross_entropy")
    p.add_argument("--child", nargs=5, help=argparse_hide())
    args = p.parse_args()
    if args.child:
        name, n, d, v, comp = args.child
        cpu_child(name, int(n), int(d), int(v), comp == "1")
        return
    dev = args.device
    dtype = torch.float32 if dev == "cpu" else torch.bfloat16
    reps = args.reps or (3 if dev == "cpu" else (10 if args.quick else 30))
    env = harness.environment(dev)
    report = harness.Report(
        f"linear + cross-entropy fwd+bwd ({str(dtype)[6:]})",
        env,
        baseline="torch linear+CE",
        metrics=["TFLOP/s", "peak MB"],
    )
    impls = implementations(args.compile)
    for n, d, v in cases(args.quick, dev):
        case = f"N={n} d={d} V={v}"
        inputs = make_inputs(n, d, v, dev, dtype)
        flops = 6 * n * d * v
        for name, fn in impls.items():

            def call(h, w, y, tw, fn=fn):
                h.grad = w.grad = None
                fn(h, w, y, tw)

            try:
                ms = harness.time_ms(call, lambda: inputs, dev, reps=reps, warmup=2)
                if dev.startswith("cuda"):
                    peak = peak_cuda_mb(call, inputs)
                else:
                    out = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--child",
                            name,
                            str(n),
                            str(d),
                            str(v),
                            "1" if args.compile else "0",
                        ],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    peak = json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]
            except Exception as exc:  # a baseline that cannot run this case is reported, not fatal
                print(f"# {case}: {name} failed: {type(exc).__name__}: {str(exc)[:200]}")
                continue
            report.add(case, name, ms, **{"TFLOP/s": flops / ms / 1e9, "peak MB": peak})
        inputs = None  # freed before the next shape
    report.print()
    report.write_json(args.json)


def argparse_hide():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
