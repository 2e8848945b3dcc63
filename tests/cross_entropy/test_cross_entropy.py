"""cross_entropy and linear_cross_entropy against a float64 PyTorch reference of the formula
(python/ember/ops/cross_entropy.py), every option, odd sizes; gradients included.

Tolerances: fp32 inputs agree to 1e-5 relative (fp32 math against float64). 16-bit inputs are
compared with the reference on the same 16-bit values: losses to 1e-5 (the math is fp32), 16-bit
gradients to 2 units of their dtype's epsilon relative to the largest gradient."""

import math
import os
from unittest import mock

import pytest
import torch
from hypothesis import given, strategies as st

import ember

from ember.reference import cross_entropy as reference_rows

OPTIONS = [
    dict(),
    dict(weight=True),
    dict(weight=True, label_smoothing=0.1),
    dict(z_loss=1e-3),
    dict(softcap=5.0),
    dict(weight=True, label_smoothing=0.2, z_loss=1e-2, softcap=3.0),
]


def make(n, v, dtype, device, seed=0, d=None):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n, v, generator=g)).to(dtype).to(device)
    target = torch.randint(0, v, (n,), generator=g)
    target[torch.rand(n, generator=g) < 0.2] = -100
    weight = torch.rand(n, generator=g) * 2
    weight[torch.rand(n, generator=g) < 0.2] = 0.0
    return logits, target.to(device), weight.to(device)


def reference(
    z, target, weight=None, ignore_index=-100, label_smoothing=0.0, z_loss=0.0, softcap=None, reduction="mean"
):
    """float64: (reduced loss, per-token loss, logprobs, entropy), differentiable in z."""
    per, _, lp, ent = reference_rows.rows(z, target, weight, ignore_index, label_smoothing, z_loss, softcap)
    valid = target.cpu() != ignore_index
    out = per if reduction == "none" else per.sum() if reduction == "sum" else per.sum() / valid.sum()
    return out, per, lp, ent


def close(a, b, rtol=1e-5, what="", scale=None):
    """Max |a − b| within rtol of `scale`: the largest |b|, or a bound on the terms b sums (when
    the sum cancels, its rounding follows the terms, not the result)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    scale = b.abs().max().clamp_min(1e-30) if scale is None else max(float(scale), float(b.abs().max()), 1e-30)
    err = ((a - b).abs() / scale).max().item() if a.numel() else 0.0
    assert err <= rtol, f"{what}: max error {err:.3g} relative to the largest value (allowed {rtol:.3g})"


def grad_tol(dtype):
    return 1e-5 if dtype == torch.float32 else 2 * torch.finfo(dtype).eps


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(o) or "plain")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cross_entropy_matches_reference(device, dtype, opts, reduction):
    logits, target, weight = make(45, 257, dtype, device)
    kw = {k: v for k, v in opts.items() if k != "weight"}
    w = weight if opts.get("weight") else None
    x = logits.clone().requires_grad_()
    loss = ember.ops.cross_entropy(x, target, w, reduction=reduction, **kw)
    ref_x = logits.detach().cpu().double().requires_grad_()
    ref = reference(ref_x, target.cpu(), None if w is None else w.cpu(), reduction=reduction, **kw)[0]
    close(loss, ref, 1e-5, "loss")
    upstream = torch.rand(loss.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.5
    (loss * upstream.to(loss.device, loss.dtype)).sum().backward()
    (ref * upstream).sum().backward()
    assert x.grad.dtype == dtype
    close(x.grad, ref_x.grad, grad_tol(dtype), "grad")
    dead = (target == -100) | ((weight == 0) if w is not None else torch.zeros_like(target, dtype=torch.bool))
    assert (x.grad[dead] == 0).all(), "ignored / weight-0 rows must get exactly zero gradient"


def test_inplace_backward_writes_into_the_logits(device):
    logits, target, weight = make(33, 129, torch.float32, device)
    a = logits.clone().requires_grad_()
    ember.ops.cross_entropy(a, target, weight, label_smoothing=0.1).backward()
    b = logits.clone().requires_grad_()
    z = b.clone()  # logits computed in the graph (a leaf is refused: its values would be lost)
    seen = []
    z.register_hook(lambda g: seen.append(g.data_ptr()))
    loss = ember.ops.cross_entropy(z, target, weight, label_smoothing=0.1, inplace_backward=True)
    loss.backward()
    close(b.grad, a.grad, 1e-6, "in-place grad")
    assert seen == [z.data_ptr()], "the gradient lives in the logits buffer"


def test_logprobs_and_entropy(device):
    logits, target, _ = make(29, 77, torch.float32, device)
    lp, ent = ember.ops.cross_entropy_stats(logits, target, softcap=4.0)
    _, _, rlp, rent = reference(logits.cpu(), target.cpu(), softcap=4.0)
    close(lp, rlp, 1e-5, "logprobs")
    close(ent, rent, 1e-5, "entropy")


def test_all_ignored_rows():
    logits = torch.randn(4, 10, requires_grad=True)
    target = torch.full((4,), -100)
    assert torch.isnan(ember.ops.cross_entropy(logits, target))  # 0/0, as torch
    loss = ember.ops.cross_entropy(logits, target, reduction="sum")
    loss.backward()
    assert loss.item() == 0 and (logits.grad == 0).all()


@given(st.integers(1, 40), st.integers(1, 300), st.integers(0, 10**6))
def test_cross_entropy_any_shape(n, v, seed):
    logits, target, weight = make(n, v, torch.float32, "cpu", seed)
    x = logits.clone().requires_grad_()
    loss = ember.ops.cross_entropy(x, target, weight, reduction="sum", label_smoothing=0.05)
    rx = logits.double().requires_grad_()
    ref = reference(rx, target, weight, reduction="sum", label_smoothing=0.05)[0]
    close(loss, ref, 1e-5, "loss")
    loss.backward()
    ref.backward()
    close(x.grad, rx.grad, 1e-5, "grad")


# ---- linear + cross-entropy ----------------------------------------------------------------------
@pytest.fixture(params=["materialized", "fused"])
def ce_backward(request, monkeypatch):
    """The two ways the chunked linear CE makes its gradient (csrc/cross_entropy/cross_entropy_driver.cpp): the
    row kernels materialize it, or the softmax-gradient GEMMs make it inside the GEMM and the target
    terms are added after (EMBER_CE_SOFTMAX_GEMM=1 / 0; the CPU runs the same decomposition with
    its GEMMs' gradient materialized). With a bias, or on CUDA outside bf16, it is always the first."""
    monkeypatch.setenv("EMBER_CE_SOFTMAX_GEMM", "1" if request.param == "fused" else "0")
    return request.param


def linear_inputs(n, d, v, dtype, device, seed=0, bias=False):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g).to(dtype).to(device)
    w = (torch.randn(v, d, generator=g) / math.sqrt(d) * 2).to(dtype).to(device)
    b = (torch.randn(v, generator=g)).to(dtype).to(device) if bias else None
    _, target, weight = make(n, v, torch.float32, device, seed)
    return h, w, b, target, weight


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(o) or "plain")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_cross_entropy_matches_reference(device, dtype, opts, reduction, ce_backward):
    h, w, b, target, weight = linear_inputs(53, 24, 131, dtype, device, bias=opts.get("weight", False))
    kw = {k: v for k, v in opts.items() if k != "weight"}
    tw = weight if opts.get("weight") else None
    hx, wx = h.clone().requires_grad_(), w.clone().requires_grad_()
    bx = b.clone().requires_grad_() if b is not None else None
    loss, lp = ember.ops.linear_cross_entropy(hx, wx, target, tw, bx, reduction=reduction, return_logprobs=True, **kw)
    rh, rw = h.cpu().double().requires_grad_(), w.cpu().double().requires_grad_()
    rb = b.cpu().double().requires_grad_() if b is not None else None
    logits = rh @ rw.t() + (rb if rb is not None else 0)
    ref, _, rlp, _ = reference(logits, target.cpu(), None if tw is None else tw.cpu(), reduction=reduction, **kw)
    # 16-bit operands: the product is exact in fp32 accumulation up to d·eps_fp32
    close(loss, ref, 1e-5, "loss")
    lp_ref = reference(logits, target.cpu(), softcap=kw.get("softcap"))[2]
    close(lp, lp_ref, 1e-5, "logprobs")
    upstream = torch.rand(ref.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 0.5
    (loss * upstream.to(loss.device, loss.dtype)).sum().backward()
    (ref * upstream).sum().backward()
    tol = grad_tol(dtype)
    close(hx.grad, rh.grad, tol, "dhidden")
    close(wx.grad, rw.grad, tol, "dlm_weight")
    if b is not None:
        close(bx.grad, rb.grad, tol, "dbias")
    dead = (target == -100) | ((weight == 0) if tw is not None else torch.zeros_like(target, dtype=torch.bool))
    assert (hx.grad[dead] == 0).all(), "ignored / weight-0 rows must get exactly zero dhidden"


def test_linear_entropy_and_no_grad_scoring(device):
    h, w, _, target, _ = linear_inputs(40, 16, 97, torch.float32, device, seed=3)
    with torch.no_grad():
        loss, lp, ent = ember.ops.linear_cross_entropy(h, w, target, return_logprobs=True, return_entropy=True)
    _, _, rlp, rent = reference((h @ w.t()).cpu(), target.cpu())
    close(lp, rlp, 1e-5, "logprobs")
    close(ent, rent, 1e-5, "entropy")


def test_linear_gradients_scale_with_the_upstream_gradient(ce_backward):
    # mean → one upstream value for every token: the forward's gradients are reused, scaled
    h, w, _, target, weight = linear_inputs(30, 12, 50, torch.float32, "cpu", seed=4)
    hx = h.clone().requires_grad_()
    (3.5 * ember.ops.linear_cross_entropy(hx, w, target, weight)).backward()
    rh = h.double().requires_grad_()
    (3.5 * reference(rh @ w.double().t(), target, weight)[0]).backward()
    close(hx.grad, rh.grad, 1e-5, "dhidden")


@given(st.integers(1, 70), st.integers(1, 20), st.integers(1, 200), st.integers(0, 10**6), st.booleans())
def test_linear_any_shape(n, d, v, seed, fused):
    h, w, _, target, weight = linear_inputs(n, d, v, torch.float32, "cpu", seed)
    hx, wx = h.clone().requires_grad_(), w.clone().requires_grad_()
    with mock.patch.dict(os.environ, {"EMBER_CE_SOFTMAX_GEMM": "1" if fused else "0"}):
        ember.ops.linear_cross_entropy(hx, wx, target, weight, reduction="sum").backward()
    rh, rw = h.double().requires_grad_(), w.double().requires_grad_()
    reference(rh @ rw.t(), target, weight, reduction="sum")[0].backward()
    # g = weight·(p − onehot) cancels for a confident row (|g| ≤ 2·weight): dh = g·W and dW = gᵀ·h
    # round like their terms, not like their ~0 results
    g_max = 2 * weight.double().abs().max()
    close(hx.grad, rh.grad, 1e-5, "dhidden", scale=g_max * w.double().abs().max())
    close(wx.grad, rw.grad, 1e-5, "dlm_weight", scale=g_max * h.double().abs().max())


def test_linear_many_chunks(ce_backward):
    # V·4 bytes·rows above the CPU chunk budget (32 MB): several chunks
    h, w, _, target, weight = linear_inputs(700, 8, 20011, torch.float32, "cpu", seed=5)
    wx = w.clone().requires_grad_()
    loss = ember.ops.linear_cross_entropy(h, wx, target, weight)
    loss.backward()
    rw = w.double().requires_grad_()
    ref = reference(h.double() @ rw.t(), target, weight)[0]
    ref.backward()
    close(loss, ref, 1e-5, "loss")
    close(wx.grad, rw.grad, 1e-5, "dlm_weight")


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_linear_softmax_gradient_gemms(device, opts, monkeypatch):
    # bf16 without bias, vocab and dim multiples of 8: on CUDA the softmax-gradient GEMMs must take
    # both GEMMs of every chunk (EMBER_CE_STRICT: a refusal is an error, not a fallback); on the CPU
    # the same side tensor and gradient in fp32. Two chunks on the CPU (8 MB of fp32 logits: 1048
    # rows at V = 2000; ~1300 rows kept), targets in every vocabulary tile, one repeated ~230 times.
    monkeypatch.setenv("EMBER_CE_SOFTMAX_GEMM", "1")
    monkeypatch.setenv("EMBER_CE_STRICT", "1")
    h, w, _, target, weight = linear_inputs(1600, 64, 2000, torch.bfloat16, device, seed=7)
    target[::7] = 5
    kw = {k: v for k, v in opts.items() if k != "weight"}
    tw = weight if opts.get("weight") else None
    hx, wx = h.clone().requires_grad_(), w.clone().requires_grad_()
    loss = ember.ops.linear_cross_entropy(hx, wx, target, tw, reduction="sum", **kw)
    loss.backward()
    rh, rw = h.cpu().double().requires_grad_(), w.cpu().double().requires_grad_()
    ref = reference(rh @ rw.t(), target.cpu(), None if tw is None else tw.cpu(), reduction="sum", **kw)[0]
    ref.backward()
    close(loss, ref, 1e-5, "loss")
    # the gradient rounded to bf16 once in the GEMM (as materialized), fp32 accumulation, bf16 results
    close(hx.grad, rh.grad, 2 * torch.finfo(torch.bfloat16).eps, "dhidden")
    close(wx.grad, rw.grad, 4 * torch.finfo(torch.bfloat16).eps, "dlm_weight")


def test_linear_confident_rows(device, monkeypatch):
    # p_y ≈ 0.99: the gradient's target element p_y − 1 is small, and must be computed before any
    # bf16 rounding (in the GEMMs' transform, as in the row kernels), or dh and dW lose it.
    monkeypatch.setenv("EMBER_CE_SOFTMAX_GEMM", "1")
    monkeypatch.setenv("EMBER_CE_STRICT", "1")
    g = torch.Generator().manual_seed(8)
    n, d, v = 96, 64, 512
    w = torch.randn(v, d, generator=g) / math.sqrt(d)
    target = torch.randint(0, v, (n,), generator=g)
    h = 14 * w[target] / w[target].norm(dim=1, keepdim=True) + 0.3 * torch.randn(n, d, generator=g)
    h, w = h.to(torch.bfloat16), w.to(torch.bfloat16)
    hx = h.clone().to(device).requires_grad_()
    wx = w.clone().to(device).requires_grad_()
    ember.ops.linear_cross_entropy(hx, wx, target.to(device), reduction="sum").backward()
    rh, rw = h.double().requires_grad_(), w.double().requires_grad_()
    z = rh @ rw.t()
    assert torch.softmax(z, -1).gather(1, target[:, None]).median() > 0.95  # the case is confident
    (torch.logsumexp(z, -1) - z.gather(1, target[:, None])[:, 0]).sum().backward()
    row_err = (hx.grad.cpu().double() - rh.grad).norm(dim=1) / rh.grad.norm(dim=1)
    assert row_err.max() < 3e-2, row_err.max()  # bf16 rounding of the gradient and of dh, row by row
    close(wx.grad, rw.grad, 4 * torch.finfo(torch.bfloat16).eps, "dlm_weight")


# ---- ops: opcheck and errors -----------------------------------------------------------------------
def test_opcheck(device):
    logits, target, weight = make(9, 17, torch.float32, device)
    args = (target, weight, -100, 0.1, 1e-3, 0.0)
    torch.library.opcheck(torch.ops.ember.cross_entropy_forward.default, (logits, *args, True, True))
    _, lse, _, _ = torch.ops.ember.cross_entropy_forward(logits, *args, False, False)
    g = torch.rand(9, device=device)
    torch.library.opcheck(torch.ops.ember.cross_entropy_backward.default, (g, logits, *args[:2], lse, *args[2:]))
    torch.library.opcheck(
        torch.ops.ember.cross_entropy_backward_.default, (logits.clone(), g, *args[:2], lse, *args[2:])
    )
    h, w, b, target, weight = linear_inputs(11, 5, 13, torch.float32, device, bias=True)
    largs = (h, w, target, weight, b, -100, 0.0, 0.0, 2.0)
    torch.library.opcheck(torch.ops.ember.linear_cross_entropy_forward.default, (*largs, True, True, True))
    _, lse, *_ = torch.ops.ember.linear_cross_entropy_forward(*largs, False, False, False)
    torch.library.opcheck(
        torch.ops.ember.linear_cross_entropy_backward.default,
        (torch.rand(11, device=device), *largs[:5], lse, *largs[5:]),
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: ember.ops.cross_entropy(torch.randn(4, 5), torch.tensor([0, 1, 5, 2])),
            "target values must be in \\[0, 5\\)",
        ),
        (lambda: ember.ops.cross_entropy(torch.randn(4, 5), torch.tensor([0, 1, 2])), "target must have shape \\(4\\)"),
        (
            lambda: ember.ops.cross_entropy(torch.randn(4, 5, dtype=torch.float64), torch.zeros(4, dtype=torch.long)),
            "logits must be float32",
        ),
        (
            lambda: ember.ops.cross_entropy(torch.randn(4, 5), torch.zeros(4, dtype=torch.long), label_smoothing=1.5),
            "label_smoothing",
        ),
        (lambda: ember.ops.cross_entropy(torch.randn(4, 5), torch.zeros(4, dtype=torch.long), z_loss=-1.0), "z_loss"),
        (
            lambda: ember.ops.linear_cross_entropy(
                torch.randn(4, 3), torch.randn(5, 2), torch.zeros(4, dtype=torch.long)
            ),
            "lm_weight must be \\(V, 3\\)",
        ),
        (
            lambda: ember.ops.linear_cross_entropy(
                torch.randn(4, 3), torch.randn(5, 3).bfloat16(), torch.zeros(4, dtype=torch.long)
            ),
            "one dtype",
        ),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(RuntimeError, match=match):
        call()


def test_bad_reduction():
    with pytest.raises(ValueError, match="reduction"):
        ember.ops.cross_entropy(torch.randn(2, 3), torch.zeros(2, dtype=torch.long), reduction="avg")


def test_under_torch_compile_fullgraph():
    h, w, _, target, weight = linear_inputs(37, 16, 50, torch.float32, "cpu", seed=6)
    logits = torch.randn(37, 50)

    def losses(h, w, z):
        return ember.ops.linear_cross_entropy(h, w, target, weight, z_loss=1e-3) + ember.ops.cross_entropy(
            z, target, weight, label_smoothing=0.1
        )

    grads = []
    for fn in (losses, torch.compile(losses, fullgraph=True)):
        args = [t.clone().requires_grad_() for t in (h, w, logits)]
        fn(*args).backward()
        grads.append([a.grad for a in args])
    for a, b in zip(*grads):
        close(b, a, 1e-6, "compiled gradient")


def test_linear_cross_entropy_loss_module():
    h, w, _, target, weight = linear_inputs(21, 8, 30, torch.float32, "cpu", seed=7)
    head = torch.nn.Linear(8, 30, bias=False)
    head.weight.data.copy_(w)
    loss_fn = ember.losses.LinearCrossEntropyLoss(label_smoothing=0.1, reduction="sum")
    got = loss_fn(h, head.weight, target, weight=weight)
    ref = reference(head(h).detach(), target, weight, label_smoothing=0.1, reduction="sum")[0]
    close(got, ref, 1e-5, "module loss")
    got.backward()
    assert head.weight.grad is not None and "label_smoothing=0.1" in repr(loss_fn)


# ---- layouts and special values (regressions) --------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradient_of_a_sliced_vocabulary_view(device, dtype):
    # logits[:, :V] of a padded vocabulary: rows further apart than V. The gradient is a new
    # (contiguous) tensor and must be written at its own row stride, not at the view's.
    full = (3 * torch.randn(37, 130, generator=torch.Generator().manual_seed(9))).to(dtype).to(device)
    target = torch.randint(0, 101, (37,), generator=torch.Generator().manual_seed(10)).to(device)
    view = full[:, :101].detach().requires_grad_()
    ember.ops.cross_entropy(view, target, reduction="sum").backward()
    ref = reference_rows.grad(full[:, :101], target, torch.ones(()))
    close(view.grad, ref, grad_tol(dtype), "grad of a sliced view")


@pytest.mark.parametrize("order", ["cpu", "cuda_order"])
def test_minus_inf_logits_are_masked_classes(device, order, monkeypatch):
    # A −inf logit has probability 0: finite lse, loss, entropy and gradient for the row. The CUDA
    # order (EMBER_CE_CUDA_ORDER=1 on the CPU) meets a −inf first in every thread's slice when the
    # row's first 512 columns are −inf.
    monkeypatch.setenv("EMBER_CE_CUDA_ORDER", "1" if order == "cuda_order" else "0")
    z = 3 * torch.randn(6, 1500, generator=torch.Generator().manual_seed(11))
    z[0, :600] = float("-inf")
    z[1, ::3] = float("-inf")
    z[2, 7] = float("-inf")
    target = torch.tensor([700, 4, 8, 0, 5, 6])
    z, target = z.to(device), target.to(device)
    x = z.clone().requires_grad_()
    loss, lse, lp, ent = torch.ops.ember.cross_entropy_forward(x, target, None, -100, 0.0, 0.0, 0.0, True, True)
    rloss, rlse, rlp, rent = reference_rows.rows(z, target)
    for got, ref, what in ((loss, rloss, "loss"), (lse, rlse, "lse"), (lp, rlp, "logprob"), (ent, rent, "entropy")):
        assert got.isfinite().all(), f"{what}: {got}"
        close(got, ref, 1e-5, what)
    loss.sum().backward()
    close(x.grad, reference_rows.grad(z, target, torch.ones(())), 1e-5, "grad")
