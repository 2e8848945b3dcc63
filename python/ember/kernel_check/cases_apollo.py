"""apollo cases: the projection bit for bit against the Philox reference; the step against the
rule written plainly (ember.reference.apollo) over steps that refresh P, both orientations and
odd sizes, to the tests' 1e-6 (fp32, normwise) and 1e-3 (bf16 rounded to nearest)."""

from __future__ import annotations

import torch

from ..ops import apollo_projection, apollo_step_
from ..reference import apollo as ref
from .compare import Compare

RANK = 5


def projection(device) -> list[Compare]:
    out = []
    for rank, dim, seed, stream, refresh in ((5, 37, 7, 3, 1), (8, 256, 2**40 + 3, 0, 0)):
        want = ref.projection(rank, dim, seed, stream, refresh)
        got = apollo_projection(rank, dim, seed, stream, refresh, device=device)
        out.append(Compare(f"P {rank}x{dim} fp32", got, want, 0.0))
        if device.type == "cuda":
            got = apollo_projection(rank, dim, seed, stream, refresh, device=device, dtype=torch.bfloat16)
            out.append(Compare(f"P {rank}x{dim} bf16", got, want.bfloat16(), 0.0))
    return out


def steps(dtype, n_steps: int, tol: float, device) -> list[Compare]:
    out = []
    shapes = [(37, 19), (19, 37), (23, 23), (128, 64)]
    hyper = dict(lr=1e-2, weight_decay=0.1, scale=2.0, update_proj_gap=2, seed=7)
    for tensor_scale in (False, True):
        g = torch.Generator().manual_seed(1)
        w0 = [torch.randn(s, generator=g).to(dtype) for s in shapes]
        refs = [
            ref.ReferenceApollo(w.float(), RANK, tensor_scale=tensor_scale, stream=i, **hyper) for i, w in enumerate(w0)
        ]
        params = [w.clone().to(device) for w in w0]
        m = [torch.zeros(max(s), RANK, device=device) for s in shapes]
        v = [torch.zeros(max(s), RANK, device=device) for s in shapes]
        norms = [torch.zeros((), device=device) for _ in shapes]
        for t in range(1, n_steps + 1):
            grads = [torch.randn(s, generator=g).to(dtype) for s in shapes]
            for gr, r in zip(grads, refs):
                r.step(gr.float())
            apollo_step_(
                params,
                [gr.to(device) for gr in grads],
                m,
                v,
                norms,
                [t] * len(shapes),
                list(range(len(shapes))),
                beta1=0.9,
                beta2=0.999,
                eps=1e-6,
                tensor_scale=tensor_scale,
                norm_growth_limit=1.01,
                rank=RANK,
                stochastic_rounding=False,
                lr=hyper["lr"],
                weight_decay=hyper["weight_decay"],
                scale=hyper["scale"],
                update_proj_gap=hyper["update_proj_gap"],
                seed=hyper["seed"],
            )
        for i, (r, s) in enumerate(zip(refs, shapes)):
            what = f"{s[0]}x{s[1]} {'tensor' if tensor_scale else 'channel'} scale after {n_steps} steps"
            want = r.w if dtype == torch.float32 else r.w.to(dtype)
            out.append(Compare(f"W {what}", params[i], want, tol, norm=True))
            if dtype == torch.float32:
                out += [
                    Compare(f"exp_avg {what}", m[i], r.m, tol, True),
                    Compare(f"exp_avg_sq {what}", v[i], r.v, tol, True),
                ]
    return out


CASES = {
    "apollo.projection": projection,
    "apollo.step.fp32": lambda d: steps(torch.float32, 5, 1e-6, d),
    "apollo.step.bf16": lambda d: steps(torch.bfloat16, 1, 1e-3, d),
}
