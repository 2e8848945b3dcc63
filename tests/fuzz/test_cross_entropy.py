"""Fuzz: the cross-entropy ops over layouts, special values, sizes, dtypes and ignore / weight
patterns, against the float64 reference of their documented semantics (tests/cross_entropy/
reference.py). Both CPU orders run: the CPU's own and the CUDA forward's (EMBER_CE_CUDA_ORDER=1).

Tolerances: per-token outputs within 1e-5 of the largest finite reference value (fp32 math on the
same input values); gradients within 2 units of their dtype's epsilon of the largest (1e-5 for
fp32); the linear ops, whose logits come from an fp32 GEMM over d, within 1e-4 (fp32) or 2^-7 of
16-bit outputs.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, strategies as st

from ember.reference import cross_entropy as reference
from . import harness

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
LOGIT_SPECIALS = [float("-inf"), float("-inf"), float("inf"), float("nan"), -0.0, 1e-40, -30.0, 40.0]
WEIGHT_SPECIALS = [0.0, 0.0, float("nan"), float("inf"), -0.0, 1e-40, 3.0]


@pytest.fixture(params=["cpu_order", "cuda_order"])
def order(request, monkeypatch):
    monkeypatch.setenv("EMBER_CE_CUDA_ORDER", "1" if request.param == "cuda_order" else "0")
    return request.param


def grad_tol(dtype):
    return 1e-5 if dtype == torch.float32 else 2 * torch.finfo(dtype).eps


@st.composite
def options(draw):
    return dict(
        ignore_index=draw(st.sampled_from([-100, 0, 3])),
        label_smoothing=draw(st.sampled_from([0.0, 0.0, 0.1, 1.0])),
        z_loss=draw(st.sampled_from([0.0, 0.0, 1e-3])),
        softcap=draw(st.sampled_from([0.0, 0.0, 4.0])),
    )


@st.composite
def rows_case(draw, device, max_vocab=700):
    """(logits, target, weight or None, options) with their layouts and special values."""
    n, v = draw(harness.sizes(0, 40)), draw(harness.sizes(1, max_vocab))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**31 - 1))
    z = harness.randn((n, v), torch.float32, seed, scale=3.0)
    if n and draw(st.booleans()):  # whole rows masked, or all but one class masked
        r = draw(st.integers(0, n - 1))
        z[r] = float("-inf")
        if draw(st.booleans()):
            z[r, draw(st.integers(0, v - 1))] = 1.0
    z = draw(harness.sprinkle(z, LOGIT_SPECIALS, 0.3)).to(dtype)
    opts = draw(options())
    g = torch.Generator().manual_seed(seed + 1)
    target = torch.randint(0, v, (n,), generator=g)
    if n:
        target[torch.rand(n, generator=g) < 0.2] = opts["ignore_index"]
    if n and draw(st.integers(0, 9)) == 0:  # a target outside [0, V): a clear error
        target[draw(st.integers(0, n - 1))] = draw(st.sampled_from([v, -1 if opts["ignore_index"] != -1 else v + 5]))
    weight = (
        draw(harness.sprinkle(torch.rand(n, generator=g) * 2, WEIGHT_SPECIALS, 0.3)) if draw(st.booleans()) else None
    )
    z = harness.lay_out(z.to(device), draw(harness.layouts(2)))
    target = harness.lay_out(target.to(device), draw(harness.layouts(1)))
    weight = None if weight is None else harness.lay_out(weight.to(device), draw(harness.layouts(1)))
    return z, target, weight, opts


def accepted_layout(z) -> bool:
    """The logits layouts the ops take: rows contiguous along the vocabulary (any row stride)."""
    return z.shape[1] <= 1 or z.stride(1) == 1


def call(op, fn, args, arguments):
    """fn(*args) with the inputs unchanged; None when it raised a clear error."""
    with harness.Unchanged(*args):
        try:
            return fn(*args)
        except RuntimeError as err:
            harness.clear_error(err, op, *arguments)
            return None


@harness.covers("cross_entropy_forward", "cross_entropy_backward", "cross_entropy_backward_")
@harness.fuzz
@given(data=st.data())
def test_cross_entropy_rows(device, order, data):
    z, target, weight, o = data.draw(rows_case(device))
    args = (o["ignore_index"], o["label_smoothing"], o["z_loss"], o["softcap"])
    out = call(
        "ember.cross_entropy_forward",
        lambda z, t, w: torch.ops.ember.cross_entropy_forward(z, t, w, *args, True, True),
        (z, target, weight),
        ("logits", "target", "weight"),
    )
    bad_target = ((target != o["ignore_index"]) & ((target < 0) | (target >= z.shape[1]))).any()
    if out is None:
        assert (
            bad_target
            or not accepted_layout(z)
            or not target.is_contiguous()
            or (weight is not None and not weight.is_contiguous())
        ), "refused a valid case"
        return
    assert not bad_target, "accepted a target outside [0, V)"
    ref = reference.rows(z, target, weight, o["ignore_index"], o["label_smoothing"], o["z_loss"], o["softcap"] or None)
    # lse − z_y cancels (a confident row): its rounding is bounded by the logits, not by the loss
    zf = reference._prepare(z, o["softcap"] or None, "cpu")
    big = zf[zf.isfinite()].abs().max().item() if zf.isfinite().any() else 0.0
    for got, want, what in zip(out, ref, ("loss", "lse", "logprob", "entropy")):
        harness.assert_matches(got, want, 1e-5, what, atol=1e-5 * big + (1e-6 if what == "entropy" else 0.0))
    grad_loss = harness.lay_out(torch.rand(z.shape[0], device=device) + 0.5, data.draw(harness.layouts(1)))
    gref = reference.grad(
        z, target, grad_loss, weight, o["ignore_index"], o["label_smoothing"], o["z_loss"], o["softcap"] or None
    )
    lse = out[1]
    # p·(1 + 2·z_loss·lse) − 1 cancels for a confident row: its rounding is bounded by its terms
    terms = (grad_loss.double().cpu() * (1 if weight is None else weight.double().cpu())).abs() * (
        2 + 2 * o["z_loss"] * ref[1].abs()
    )
    gatol = grad_tol(z.dtype) * (terms[terms.isfinite()].max().item() if terms.isfinite().any() else 0.0)
    g = call(
        "ember.cross_entropy_backward",
        lambda gl, z, t, w, lse: torch.ops.ember.cross_entropy_backward(gl, z, t, w, lse, *args),
        (grad_loss, z, target, weight, lse),
        ("grad_loss", "logits", "target", "weight", "lse"),
    )
    if g is not None:
        assert g.dtype == z.dtype and g.shape == z.shape
        harness.assert_matches(g, gref, grad_tol(z.dtype), "grad", atol=gatol)
    buf = z.clone() if data.draw(st.booleans()) else z  # in place: into a copy, or into the view itself
    try:
        with harness.Unchanged(grad_loss, target, *(() if weight is None else (weight,)), lse), harness.OnlyInside(buf):
            torch.ops.ember.cross_entropy_backward_(buf, grad_loss, target, weight, lse, *args)
    except RuntimeError as err:
        harness.clear_error(err, "ember.cross_entropy_backward_", "logits", "grad_loss", "target", "weight")
        return
    harness.assert_matches(buf, gref, grad_tol(z.dtype), "in-place grad", atol=gatol)


@harness.covers("linear_cross_entropy_forward", "linear_cross_entropy_backward")
@harness.fuzz
@given(data=st.data())
def test_linear_cross_entropy(device, order, data):
    n, d, v = data.draw(harness.sizes(0, 40)), data.draw(harness.sizes(1, 40)), data.draw(harness.sizes(1, 300))
    dtype = data.draw(st.sampled_from([torch.float32, torch.bfloat16]))
    seed = data.draw(st.integers(0, 2**31 - 1))
    h = harness.lay_out(
        data.draw(harness.sprinkle(harness.randn((n, d), dtype, seed), [-0.0, 1e-40, 0.0])).to(device),
        data.draw(harness.layouts(2)),
    )
    w = harness.lay_out(
        harness.randn((v, d), dtype, seed + 1, scale=d**-0.5 * 2).to(device), data.draw(harness.layouts(2))
    )
    bias = None
    if data.draw(st.booleans()):  # a −inf bias masks classes; a NaN one poisons every row
        bias = harness.lay_out(
            data.draw(
                harness.sprinkle(harness.randn((v,), dtype, seed + 2), [float("-inf"), float("-inf"), float("nan")])
            ).to(device),
            data.draw(harness.layouts(1)),
        )
    o = data.draw(options())
    g = torch.Generator().manual_seed(seed + 3)
    target = torch.randint(0, v, (n,), generator=g)
    if n:
        target[torch.rand(n, generator=g) < 0.2] = o["ignore_index"]
    target = target.to(device)
    weight = (
        data.draw(harness.sprinkle(torch.rand(n, generator=g) * 2, [0.0, 0.0, 1e-40])).to(device)
        if data.draw(st.booleans())
        else None
    )
    args = (o["ignore_index"], o["label_smoothing"], o["z_loss"], o["softcap"])
    with harness.Unchanged(h, w, target, *(t for t in (weight, bias) if t is not None)):
        loss, lse, lp, ent, dh, dw, db = torch.ops.ember.linear_cross_entropy_forward(
            h, w, target, weight, bias, *args, True, True, True
        )
        grad_loss = torch.rand(n, device=device) + 0.5
        bh, bw, bb = torch.ops.ember.linear_cross_entropy_backward(grad_loss, h, w, target, weight, bias, lse, *args)
    hd, wd = h.double().cpu(), w.double().cpu()
    logits = hd @ wd.t() + (0 if bias is None else bias.double().cpu())
    rloss, rlse, rlp, rent = reference.rows(
        logits, target, weight, o["ignore_index"], o["label_smoothing"], o["z_loss"], o["softcap"] or None
    )
    rlse = torch.where(target.cpu() == o["ignore_index"], 0.0, rlse)  # ignored rows never reach a GEMM
    tol = 1e-4
    # lse − z_y cancels: its rounding is bounded by the logits' magnitude, not by the loss
    big = logits[logits.isfinite()].abs().max().item() if logits.isfinite().any() else 0.0
    for got, want, what in ((loss, rloss, "loss"), (lse, rlse, "lse"), (lp, rlp, "logprob"), (ent, rent, "entropy")):
        harness.assert_matches(got, want, tol, what, atol=tol * big + (1e-6 if what == "entropy" else 0.0))
    gtol = 1e-4 if dtype == torch.float32 else 2**-7
    for gl, (gh, gw, gb) in ((torch.ones(()), (dh, dw, db)), (grad_loss, (bh, bw, bb))):
        gz = reference.grad(
            logits, target, gl, weight, o["ignore_index"], o["label_smoothing"], o["z_loss"], o["softcap"] or None
        )
        live = target.cpu() != o["ignore_index"]  # rows of scale 0 never reach the gradient GEMMs
        if weight is not None:
            live &= weight.cpu() != 0
        # Σ_v |g_iv| ≤ 2·|scale_i|·(1 + 2·z_loss·|lse_i|): the rounding of a sum that cancels to ~0
        # is bounded by its terms, not by its result
        row = (
            2
            * (gl.double().cpu() * (1 if weight is None else weight.double().cpu())).abs()
            * (1 + 2 * o["z_loss"] * rlse.abs())
        ).expand(n).nan_to_num(0, 0, 0) * live
        harness.assert_matches(
            gh, gz @ wd, gtol, "dhidden", atol=gtol * row.max().item() * wd.abs().max().item() if n else 0
        )
        harness.assert_matches(
            gw, gz[live].t() @ hd[live], gtol, "dlm_weight", atol=gtol * (row @ hd.abs()).max().item() if n else 0
        )
        if bias is not None:
            harness.assert_matches(gb, gz.sum(0), gtol, "dbias", atol=gtol * row.sum().item())
