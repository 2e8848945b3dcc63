"""cross_entropy cases against the float64 reference (ember.reference.cross_entropy) with the
tests' tolerances (tests/cross_entropy/test_cross_entropy.py): losses to 1e-5 of the largest,
gradients to 1e-5 (fp32) or two 16-bit epsilons of the largest. Odd and aligned sizes, token
weights, ignored tokens, label smoothing, z-loss and softcap."""

from __future__ import annotations

import torch

from ..ops import cross_entropy, linear_cross_entropy
from ..reference import cross_entropy as ref
from .compare import Compare
from .switches import switched

OPTIONS = (dict(), dict(label_smoothing=0.1, z_loss=1e-3, softcap=15.0))


def grad_tol(dtype) -> float:
    return 1e-5 if dtype == torch.float32 else 2 * torch.finfo(dtype).eps


def inputs(n: int, v: int, device, seed: int):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, v, (n,), generator=g)
    target[::7] = -100
    weight = torch.rand(n, generator=g) * 2
    return target.to(device), weight.to(device)


def logits_case(device) -> list[Compare]:
    out = []
    for n, v in ((37, 203), (64, 1024)):
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            for opts in OPTIONS:
                target, weight = inputs(n, v, device, n + v)
                z = (torch.randn(n, v, generator=torch.Generator().manual_seed(v)) * 3).to(device, dtype)
                x = z.clone().requires_grad_()
                loss = cross_entropy(x, target, weight, reduction="sum", **opts)
                loss.backward()
                rloss = ref.rows(z, target, weight, **opts)[0].sum()
                rgrad = ref.grad(z, target, torch.ones(()), weight, **opts)
                what = f"{n}x{v} {str(dtype)[6:]} {'+'.join(opts) or 'plain'}"
                out += [
                    Compare(f"loss {what}", loss, rloss, 1e-5),
                    Compare(f"grad {what}", x.grad, rgrad, grad_tol(dtype)),
                ]
    return out


def linear_case(device, dtypes, bias: bool, shapes=((37, 48, 203), (128, 128, 512))) -> list[Compare]:
    """linear_cross_entropy's loss, dhidden and dW (and dbias) against autograd through the reference."""
    out = []
    for n, d, v in shapes:
        for dtype in dtypes:
            target, weight = inputs(n, v, device, n + d)
            g = torch.Generator().manual_seed(d)
            h0, w0 = torch.randn(n, d, generator=g), torch.randn(v, d, generator=g) / d**0.5
            b0 = torch.randn(v, generator=g) if bias else None
            leaves = [t.detach().clone().to(device, dtype).requires_grad_() for t in (h0, w0) + ((b0,) if bias else ())]
            loss = linear_cross_entropy(*leaves[:2], target, weight, leaves[2] if bias else None, reduction="sum")
            loss.backward()
            r = [t.detach().double().requires_grad_() for t in leaves]
            logits = r[0] @ r[1].t() + (r[2] if bias else 0)
            rloss = ref.rows(logits, target, weight)[0].sum()
            rloss.backward()
            what = f"{n}x{d}x{v} {str(dtype)[6:]}"
            out.append(Compare(f"loss {what}", loss, rloss, 1e-5))
            out += [
                Compare(f"d{name} {what}", t.grad, rt.grad, grad_tol(dtype))
                for name, t, rt in zip(("hidden", "weight", "bias"), leaves, r)
            ]
    return out


def rows(device) -> list[Compare]:
    with switched(EMBER_CE_SOFTMAX_GEMM="0"):  # the materialized gradient: the row kernels write it
        return logits_case(device) + linear_case(device, (torch.float32, torch.bfloat16), bias=True)


def softmax_grad_gemm(device) -> list[Compare]:
    dtypes = (torch.bfloat16,) if device.type == "cuda" else (torch.float32, torch.bfloat16)
    with switched(EMBER_CE_SOFTMAX_GEMM="1", EMBER_CE_STRICT="1"):  # a refusal fails
        # vocab and dim multiples of 8, which the CUDA kernels take (csrc/cross_entropy/softmax_grad_gemm.cu)
        return linear_case(device, dtypes, bias=False, shapes=((37, 48, 208), (128, 128, 512)))


CASES = {"cross_entropy.rows": rows, "cross_entropy.softmax_grad_gemm": softmax_grad_gemm}
