"""Cross-entropy cases that once gave wrong numbers without an error: overlapping rows written in
place, weight 0 against a non-finite upstream gradient or non-finite logits, a batch whose every
target is ignored, and the fp32 gradient at large logits."""

import pytest
import torch
import torch.nn.functional as F

import ember

from .test_cross_entropy import close

OPTS = (-100, 0.0, 0.0, 0.0)  # ignore_index, label_smoothing, z_loss, softcap


def forward(z, target, weight=None):
    return torch.ops.ember.cross_entropy_forward(z, target, weight, *OPTS, False, False)


@pytest.mark.parametrize("stride", [0, 1, 4, 7])
def test_inplace_backward_refuses_rows_that_overlap(device, stride):
    # 0 ≤ stride(0) < V: row i + 1 starts inside row i, so writing one row's gradient overwrites
    # logits another row still reads (on CUDA, a race between CTAs)
    z = torch.randn(4 * 8, device=device).as_strided((4, 8), (stride, 1))
    target = torch.tensor([1, 2, 3, 4], device=device)
    _, lse, _, _ = forward(z, target)
    before = z.clone()
    with pytest.raises(RuntimeError, match=r"ember\.cross_entropy_backward_: logits"):
        torch.ops.ember.cross_entropy_backward_(z, torch.ones(4, device=device), target, None, lse, *OPTS)
    assert torch.equal(z, before), "the refused call wrote into the logits"


def test_inplace_backward_takes_rows_that_do_not_overlap(device):
    buf = torch.randn(4 * 9, device=device)
    z = buf.as_strided((4, 8), (9, 1))  # rows 9 apart: a gap, no overlap
    one = torch.randn(8, device=device).as_strided((1, 8), (3, 1))  # one row: any stride
    for logits in (z, one):
        target = torch.arange(logits.shape[0], device=device)
        _, lse, _, _ = forward(logits, target)
        want = torch.ops.ember.cross_entropy_backward(
            torch.ones_like(lse, dtype=torch.float32), logits, target, None, lse, *OPTS
        )
        torch.ops.ember.cross_entropy_backward_(logits, torch.ones_like(want[:, 0]), target, None, lse, *OPTS)
        assert torch.equal(logits, want)


def test_weight_zero_gives_exactly_zero_gradient_whatever_the_upstream(device):
    # inf·0 is NaN: a row of weight 0 must get scale 0, not upstream × 0
    z = torch.randn(4, 9, device=device)
    target = torch.tensor([0, 1, 2, 3], device=device)
    weight = torch.tensor([0.0, 0.0, 1.0, 2.0], device=device)
    grad_loss = torch.tensor([float("inf"), float("nan"), 1.0, 1.0], device=device)
    _, lse, _, _ = forward(z, target, weight)
    g = torch.ops.ember.cross_entropy_backward(grad_loss, z, target, weight, lse, *OPTS)
    assert (g[:2] == 0).all() and g[2:].isfinite().all(), g
    buf = z.clone()
    torch.ops.ember.cross_entropy_backward_(buf, grad_loss, target, weight, lse, *OPTS)
    assert torch.equal(buf, g)
    # the linear op skips such rows: the same answer
    h, w = torch.randn(4, 5, device=device), torch.randn(9, 5, device=device)
    _, lse, *_ = torch.ops.ember.linear_cross_entropy_forward(h, w, target, weight, None, *OPTS, False, False, False)
    dh, dw, _ = torch.ops.ember.linear_cross_entropy_backward(grad_loss, h, w, target, weight, None, lse, *OPTS)
    assert (dh[:2] == 0).all() and dw.isfinite().all()


@pytest.mark.parametrize("path", ["materialized", "fused"])
def test_weight_zero_row_with_non_finite_logits_leaves_the_gradients_finite(device, path, monkeypatch):
    # return_logprobs keeps weight-0 rows in the chunks; row 0's logits overflow to ±inf (its lse
    # is NaN). The softmax-gradient GEMMs (fused) must give it gradient 0, as the row kernels do,
    # or dW = Gᵀ·h and that row of dh are NaN.
    monkeypatch.setenv("EMBER_CE_SOFTMAX_GEMM", "1" if path == "fused" else "0")
    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(6, 16, generator=g), torch.randn(24, 16, generator=g)
    h[0] = 3e38  # finite, but its logits are not
    target = torch.randint(0, 24, (6,), generator=g)
    weight = torch.tensor([0.0, 1.0, 1.0, 0.5, 2.0, 1.0])
    hx, wx = h.to(device, copy=True).requires_grad_(), w.to(device, copy=True).requires_grad_()
    loss, lp = ember.ops.linear_cross_entropy(
        hx, wx, target.to(device), weight.to(device), reduction="sum", return_logprobs=True
    )
    assert lp[0].isnan()  # the row is there, with its non-finite logits
    loss.backward()
    assert (hx.grad[0] == 0).all(), hx.grad[0]
    assert wx.grad.isfinite().all() and hx.grad.isfinite().all()
    rh, rw = h[1:].double().requires_grad_(), w.double().requires_grad_()
    (F.cross_entropy(rh @ rw.t(), target[1:], reduction="none") * weight[1:].double()).sum().backward()
    close(hx.grad[1:], rh.grad, 1e-5, "dhidden")
    close(wx.grad, rw.grad, 1e-5, "dlm_weight")


@pytest.mark.parametrize("op", ["cross_entropy", "linear_cross_entropy", "module"])
def test_every_target_ignored_mean_has_zero_gradients(device, op):
    # torch: an empty mean is NaN (0/0), and its gradients are exactly 0 (not the upstream 1/0
    # times the gradient)
    g = torch.Generator().manual_seed(1)
    h, w = torch.randn(8, 16, generator=g).to(device), torch.randn(32, 16, generator=g).to(device)
    target = torch.full((8,), -100, device=device)
    hx, wx = h.clone().requires_grad_(), w.clone().requires_grad_()
    if op == "cross_entropy":
        loss = ember.ops.cross_entropy(hx @ wx.t(), target)
    elif op == "linear_cross_entropy":
        loss = ember.ops.linear_cross_entropy(hx, wx, target)
    else:
        loss = ember.losses.LinearCrossEntropyLoss()(hx, wx, target)
    rh, rw = h.clone().requires_grad_(), w.clone().requires_grad_()
    ref = F.cross_entropy(rh @ rw.t(), target)
    ref.backward()
    assert ref.isnan() and (rh.grad == 0).all()  # torch's convention, which ember follows
    assert loss.isnan()
    loss.backward()
    assert (hx.grad == 0).all() and (wx.grad == 0).all(), (hx.grad, wx.grad)


def fp32_grad_errors(scale, device, inplace=False, n=64, v=1000):
    """Max |grad − grad_float64| of ember's and torch's fp32 cross-entropy on `device`, logits
    scale·N(0, 1)."""
    g = torch.Generator().manual_seed(2)
    z = scale * torch.randn(n, v, generator=g)
    y = torch.randint(0, v, (n,), generator=g)
    ref = z.double().requires_grad_()
    F.cross_entropy(ref, y, reduction="sum").backward()
    z, y = z.to(device), y.to(device)
    zt = z.clone().requires_grad_()
    F.cross_entropy(zt, y, reduction="sum").backward()
    ze = z.clone().requires_grad_()
    logits = ze.clone() if inplace else ze  # in place: logits computed in the graph (a leaf is refused)
    ember.ops.cross_entropy(logits, y, reduction="sum", inplace_backward=inplace).backward()
    return [(x.grad.cpu().double() - ref.grad).abs().max().item() for x in (ze, zt)]


@pytest.mark.parametrize("order", ["cpu_order", "cuda_order"])
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("scale", [10, 100, 1000])
def test_fp32_gradient_as_accurate_as_torch_at_any_logit_scale(device, scale, inplace, order, monkeypatch):
    # p = exp(z − lse) from an lse rounded to fp32 is off by |lse|·2^-24 relative: the gradient
    # keeps the row maximum apart from the log-sum, as torch does
    monkeypatch.setenv("EMBER_CE_CUDA_ORDER", "1" if order == "cuda_order" else "0")
    ember_err, torch_err = fp32_grad_errors(scale, device, inplace)
    assert ember_err <= 4 * torch_err, f"ember {ember_err:.3g} against torch {torch_err:.3g}"


@pytest.mark.parametrize("path", ["materialized", "fused"])
@pytest.mark.parametrize("upstream", ["one", "per_token"])
def test_linear_fp32_gradient_at_large_logits(path, upstream, monkeypatch):
    # the same for the linear op's paths: the forward's gradient (one upstream value), the
    # backward that recomputes the logits (one per token), the softmax-gradient GEMMs (fused).
    # Small integers in h and eighths in w: the fp32 logits (up to ~2000) are exact in any order.
    monkeypatch.setenv("EMBER_CE_SOFTMAX_GEMM", "1" if path == "fused" else "0")
    g = torch.Generator().manual_seed(3)
    n, d, v = 48, 16, 300
    h = torch.randint(-64, 65, (n, d), generator=g).float()
    w = torch.randint(-8, 9, (v, d), generator=g).float() / 8
    y = torch.randint(0, v, (n,), generator=g)
    gl = torch.ones(n) if upstream == "one" else torch.rand(n, generator=g) + 0.5
    hx = h.clone().requires_grad_()
    if upstream == "one":
        ember.ops.linear_cross_entropy(hx, w, y, reduction="sum").backward()
    else:
        (ember.ops.linear_cross_entropy(hx, w, y, reduction="none") * gl).sum().backward()
    z = h @ w.t()
    assert torch.equal(z.double(), h.double() @ w.double().t())  # exact
    zd, zt = z.double().requires_grad_(), z.clone().requires_grad_()
    (F.cross_entropy(zd, y, reduction="none") * gl.double()).sum().backward()
    (F.cross_entropy(zt, y, reduction="none") * gl).sum().backward()
    ref = zd.grad @ w.double()
    ember_err = (hx.grad.double() - ref).abs().max().item()
    torch_err = (zt.grad @ w - ref).abs().max().item()
    assert ember_err <= 4 * torch_err, f"ember {ember_err:.3g}, torch {torch_err:.3g}"
