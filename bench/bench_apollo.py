"""APOLLO optimizer step: ember.optim.Apollo / ApolloMini against torch.optim.AdamW(fused=True),
the memory-light optimizers torch ships (Adafactor, Muon), the official apollo-torch package and,
when installed, GaLore — step time and optimizer-state bytes on LLaMA parameter shapes, beside two
floors measured in the same run:

- "projection matmuls": the rank-r GEMMs R = G·Pᵀ alone (what bounds a rank-256 step on a CPU);
- "traffic floor": one pass reading G (its norm) plus one reading G and W and writing W — the
  fewest bytes any of these steps can move (the low-rank state adds 16·r·max(m, n) bytes).

"GB/s" is the floor's bytes (G twice, W read and written, the low-rank state read and written)
over the step time: the effective bandwidth of a step that moved only those.

    python bench/bench_apollo.py [--quick] [--device cuda|cpu] [--json out.json]
"""

from __future__ import annotations

import gc
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

import ember  # noqa: E402

# (m, n) of the projected matrices of one transformer layer, and the layer count.
LLAMA = {
    "60m": ([(512, 512)] * 4 + [(1376, 512)] * 2 + [(512, 1376)], 8),
    "130m": ([(768, 768)] * 4 + [(2048, 768)] * 2 + [(768, 2048)], 12),
    "1b": ([(2048, 2048)] * 4 + [(5461, 2048)] * 2 + [(2048, 5461)], 24),
    "7b": ([(4096, 4096)] * 4 + [(11008, 4096)] * 2 + [(4096, 11008)], 32),
}


def cases(quick: bool, device: str) -> list[tuple[str, list[tuple[int, int]]]]:
    if device == "cpu":  # the CPU case: two 768×2048 and one 2048×768 (one 130M MLP)
        mlp130 = ("130M MLP (fp32)", [(768, 2048), (768, 2048), (2048, 768)])
        return [mlp130] if quick else [mlp130, ("60M layer (fp32)", LLAMA["60m"][0])]
    out = []
    for name in ["1b", "7b"] if quick else ["60m", "1b", "7b"]:
        shapes, layers = LLAMA[name]
        out.append((f"LLaMA-{name.upper()} (bf16)", shapes * layers))
    return out


def optimizers(device: str, quick: bool) -> dict:
    """name -> factory(params) for every implementation available here."""
    impls = {
        "AdamW(fused)": lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True),
        "ember Apollo r256": lambda ps: ember.optim.Apollo(ps, lr=1e-2, rank=256),
        "ember ApolloMini": lambda ps: ember.optim.ApolloMini(ps, lr=1e-2),
    }
    if hasattr(torch.optim, "Adafactor"):
        impls["torch Adafactor"] = lambda ps: torch.optim.Adafactor(ps, lr=1e-2)
    if hasattr(torch.optim, "Muon") and not (device == "cpu" and quick):  # 5 Newton-Schulz iterations: slow on a CPU
        impls["torch Muon"] = lambda ps: torch.optim.Muon(ps, lr=1e-2)
    try:
        import contextlib
        import io

        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            from apollo_torch import APOLLOAdamW  # imports transformers and bitsandbytes

        def apollo_torch(rank: int, scale_type: str, scale: int):
            """apollo-torch with one parameter group of these projection settings."""
            group = dict(
                rank=rank, proj="random", scale_type=scale_type, scale=scale, update_proj_gap=200, proj_type="std"
            )
            return lambda ps: APOLLOAdamW([dict(params=ps, **group)], lr=1e-2)

        impls["apollo-torch r256"] = apollo_torch(256, "channel", 1)
        impls["apollo-torch Mini"] = apollo_torch(1, "tensor", 128)
    except Exception as exc:  # not installed, or its imports fail here
        print(f"# apollo-torch unavailable: {type(exc).__name__}: {exc}")
    try:
        from galore_torch import GaLoreAdamW

        impls["GaLore r256"] = lambda ps: GaLoreAdamW(
            [dict(params=ps, rank=256, update_proj_gap=200, scale=0.25, proj_type="std")], lr=1e-2
        )
    except ImportError:
        pass
    return impls


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of every tensor the optimizer keeps (projector matrices included where they are
    tensors in its state)."""
    seen, total = set(), 0

    def visit(v):
        nonlocal total
        if isinstance(v, torch.Tensor):
            if v.data_ptr() not in seen and v.numel() > 1:
                seen.add(v.data_ptr())
                total += v.numel() * v.element_size()
        elif isinstance(v, dict):
            for x in v.values():
                visit(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                visit(x)
        elif hasattr(v, "__dict__") and not isinstance(v, type):  # projector objects (apollo-torch, GaLore)
            for x in vars(v).values():
                visit(x)

    for s in opt.state.values():
        visit(s)
    return total


def main() -> None:
    p = harness.common_args(__doc__)
    p.add_argument("--compile", action="store_true", help="(accepted for the device check; nothing to compile here)")
    args = p.parse_args()
    dev = args.device
    reps = args.reps or (10 if args.quick else 30)
    env = harness.environment(dev)
    bw = env.get("bandwidth_tbs")
    metrics = ["state MB", "GB/s"] + (["% of HBM"] if bw else [])
    report = harness.Report("optimizer step (ms) and state", env, baseline="AdamW(fused)", metrics=metrics)
    impls = optimizers(dev, args.quick)
    for case, shapes in cases(args.quick, dev):
        dtype = torch.float32 if dev == "cpu" else torch.bfloat16
        g = torch.Generator(device=dev).manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s, device=dev, dtype=dtype, generator=g) * 0.02) for s in shapes]
        for q in params:
            q.grad = torch.randn(q.shape, device=dev, dtype=dtype, generator=g)
        numel = sum(q.numel() for q in params)
        esize = params[0].element_size()

        def floor_bytes(rank: int) -> int:
            return 4 * numel * esize + sum(16 * rank * max(q.shape) for q in params)

        def gbs(nbytes: int, ms: float) -> dict:
            out = {"GB/s": nbytes / ms / 1e6}
            if bw:
                out["% of HBM"] = 100 * out["GB/s"] / (bw * 1e3)
            return out

        # Floors, measured here.
        projs = [torch.randn(256, min(q.shape), device=dev, dtype=dtype) for q in params]
        mm = harness.time_ms(
            lambda: [(q.grad.t() if q.shape[0] < q.shape[1] else q.grad) @ pr.t() for q, pr in zip(params, projs)],
            lambda: (),
            dev,
            reps=reps,
        )
        report.add(case, "floor: projection matmuls r256", mm)
        projs = None  # freed before the next shape

        def traffic():
            for q in params:
                torch.linalg.vector_norm(q.grad)
                q.data.add_(q.grad, alpha=-1e-12)

        ms = harness.time_ms(traffic, lambda: (), dev, reps=reps)
        report.add(case, "floor: traffic (read G twice, W once)", ms, **gbs(4 * numel * esize, ms))
        for name, make in impls.items():
            try:
                opt = make(params)
                ms = harness.time_ms(opt.step, lambda: (), dev, reps=reps, warmup=3)
            except Exception as exc:  # a baseline that cannot run this case is reported, not fatal
                print(f"# {case}: {name} failed: {type(exc).__name__}: {str(exc)[:200]}")
                continue
            rank = 256 if "r256" in name else 1 if "Mini" in name else 0
            report.add(
                case, name, ms, **{"state MB": state_bytes(opt) / 2**20}, **(gbs(floor_bytes(rank), ms) if rank else {})
            )
            del opt
            gc.collect()
            if dev.startswith("cuda"):
                torch.cuda.empty_cache()
        params = None
        gc.collect()
    report.print()
    report.write_json(args.json)


if __name__ == "__main__":
    main()
