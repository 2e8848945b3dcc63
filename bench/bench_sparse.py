"""masked_linear, forward and forward+backward: ember's block-sparse and bitmask paths against
dense torch.matmul, the W*mask + matmul baseline the random-pruning code uses, torch's own
block-sparse path (W.to_sparse_bsr(block) @ dense, forward only) and, on a GPU, 2:4 semi-structured
sparsity (torch.sparse.to_sparse_semi_structured) as the structured reference. Speedup over dense
and "fraction of ideal" = speedup · density.

    python bench/bench_sparse.py [--quick] [--device cuda|cpu] [--json out.json]
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

from ember.ops import masked_linear, pack_mask  # noqa: E402

# (tokens, in, out): the square case and a Llama-7B MLP projection (up: 4096 -> 11008).
SHAPES = [(4096, 4096, 4096), (4096, 4096, 11008)]


def settings(quick: bool, device: str):
    if quick:
        shapes = SHAPES[:1]
        densities, blocks = ([1.0, 0.1] if device == "cpu" else [1.0, 0.5, 0.1]), [128]
    else:
        shapes, densities, blocks = SHAPES, [1.0, 0.5, 0.2, 0.1, 0.05], [32, 64, 128]
    return shapes, densities, blocks


def tile_mask(out, inp, block, density, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    tiles = torch.rand(-(-out // block), -(-inp // block), generator=g) < density
    return tiles.repeat_interleave(block, 0).repeat_interleave(block, 1)[:out, :inp].to(device)


def main() -> None:
    p = harness.common_args(__doc__)
    p.add_argument("--compile", action="store_true", help="(accepted for the device check)")
    args = p.parse_args()
    dev = args.device
    dtype = torch.float32 if dev == "cpu" else torch.bfloat16
    reps = args.reps or (3 if dev == "cpu" else 20)
    env = harness.environment(dev)
    report = harness.Report(
        f"masked_linear ({str(dtype)[6:]})", env, baseline="dense matmul", metrics=["fraction of ideal"]
    )
    shapes, densities, blocks = settings(args.quick, dev)
    for n, inp, out in shapes:
        x = torch.randn(n, inp, device=dev, dtype=dtype)
        w = torch.randn(out, inp, device=dev, dtype=dtype)
        gy = torch.randn(n, out, device=dev, dtype=dtype)
        for mode in ("fwd", "fwd+bwd"):

            def run(fn, needs_grad=mode == "fwd+bwd"):
                if not needs_grad:
                    with torch.no_grad():
                        return fn()
                xr, wr = x.detach().requires_grad_(), w.detach().requires_grad_()
                fn(xr, wr).backward(gy)

            def timed(fn):
                return harness.time_ms(lambda: run(fn), lambda: (), dev, reps=reps, warmup=1)

            case_base = f"{n}x{inp}x{out} {mode}"
            dense_ms = timed(lambda a=x, b=w: a @ b.t())
            for block in blocks:
                for density in densities:
                    case = f"{case_base} b{block} d{density}"
                    m = tile_mask(out, inp, block, density, dev)
                    real = m.float().mean().item()
                    packed = pack_mask(m, block)
                    rows = {
                        "dense matmul": dense_ms,
                        "W*mask+matmul": timed(lambda a=x, b=w: a @ (b * m).t()),
                        "ember block": timed(lambda a=x, b=w: masked_linear(a, b, packed, block=block)),
                    }
                    if density <= 0.5 or args.quick:
                        bits = pack_mask(m)
                        rows["ember bitmask"] = timed(lambda a=x, b=w: masked_linear(a, b, bits))
                    if mode == "fwd" and density < 1.0:
                        try:
                            bsr = (w * m).to_sparse_bsr((block, block))
                            rows["torch BSR"] = harness.time_ms(
                                lambda: bsr @ x.t(), lambda: (), dev, reps=reps, warmup=1
                            )
                        except (RuntimeError, NotImplementedError) as exc:
                            print(f"# torch BSR unavailable here: {str(exc)[:120]}")
                    for name, ms in rows.items():
                        ideal = dense_ms / ms * real if name.startswith(("ember block", "torch BSR")) else None
                        report.add(case, name, ms, **{"fraction of ideal": ideal})
            if dev.startswith("cuda") and mode == "fwd":
                try:
                    from torch.sparse import to_sparse_semi_structured

                    w24 = w.clone()
                    w24.view(-1, 4)[:, :2] = 0  # a valid 2:4 pattern
                    ws = to_sparse_semi_structured(w24)
                    ms = harness.time_ms(lambda: torch.mm(ws, x.t()), lambda: (), dev, reps=reps, warmup=1)
                    report.add(f"{case_base} 2:4", "dense matmul", dense_ms)
                    report.add(f"{case_base} 2:4", "torch 2:4 semi-structured", ms)
                except Exception as exc:
                    print(f"# 2:4 semi-structured unavailable: {str(exc)[:120]}")
    report.print()
    report.write_json(args.json)


if __name__ == "__main__":
    main()
