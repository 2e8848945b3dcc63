"""linear_cross_entropy's softmax-gradient GEMMs (csrc/cross_entropy/softmax_grad_*.cu) on
ragged shapes, small enough to run under compute-sanitizer (device_check.sh runs it with --tool
memcheck): chunks whose rows are not a multiple of the 128-row tile, vocabularies that are not a
multiple of 64 (the last k tile of dh, the last M' tile of dW), dh's stream-K reduction. bf16
without bias, so CUDA takes the fused path; EMBER_CE_STRICT=1 makes a refusal an error. Prints
each case's worst error against float64.

    compute-sanitizer --tool memcheck --error-exitcode 1 python bench/memcheck/cross_entropy_memcheck.py
"""

import os

import torch

import ember


def main() -> None:
    assert ember.cuda_available(), "needs ember's CUDA kernels and a GPU"
    os.environ["EMBER_CE_STRICT"] = "1"
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for n, d, v, opts in [
        (37, 64, 1000, {}),
        (300, 128, 4104, dict(label_smoothing=0.1, z_loss=1e-3)),
        (129, 256, 33000, dict(softcap=20.0)),
    ]:
        h = torch.randn(n, d, generator=g).to(torch.bfloat16)
        w = (torch.randn(v, d, generator=g) / d**0.5 * 2).to(torch.bfloat16)
        target = torch.randint(0, v, (n,), generator=g)
        target[::5] = -100
        weight = torch.rand(n, generator=g)
        hx, wx = h.cuda().requires_grad_(), w.cuda().requires_grad_()
        loss = ember.ops.linear_cross_entropy(hx, wx, target.cuda(), weight.cuda(), reduction="sum", **opts)
        loss.backward()
        rh, rw = h.double().requires_grad_(), w.double().requires_grad_()
        z = rh @ rw.t()
        if "softcap" in opts:
            z = opts["softcap"] * torch.tanh(z / opts["softcap"])
        valid = target != -100
        y = torch.where(valid, target, 0)
        lse = torch.logsumexp(z, -1)
        ls, zl = opts.get("label_smoothing", 0.0), opts.get("z_loss", 0.0)
        per = (1 - ls) * (lse - z.gather(1, y[:, None])[:, 0]) + ls * (lse - z.mean(-1)) + zl * lse**2
        ref = (per * weight.double() * valid).sum()
        ref.backward()
        for what, got, want in (("loss", loss, ref), ("dh", hx.grad, rh.grad), ("dW", wx.grad, rw.grad)):
            rel = ((got.detach().cpu().double() - want.detach()).abs().max() / want.detach().abs().max()).item()
            worst = max(worst, rel)
            print(f"{n}x{d}x{v} {opts or 'plain'} {what}: max |err| / max |ref| = {rel:.2e}")
    torch.cuda.synchronize()
    print(f"worst {worst:.2e}")
    assert worst < 2e-2, "a softmax-gradient GEMM is off by more than bf16 rounding allows"


if __name__ == "__main__":
    main()
