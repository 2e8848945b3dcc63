"""ember.ops used the ways users misuse torch's functional ops: each case here was a silent wrong
answer or an unhelpful crash, and now gives F.cross_entropy's or F.linear's answer or a clear
refusal naming the op and the argument."""

import pytest
import torch
import torch.nn.functional as F

from ember.ops import cross_entropy, linear_cross_entropy, masked_linear

N, V, D = 6, 9, 4


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(N, V, generator=g),
        torch.randint(0, V, (N,), generator=g),
        torch.randn(N, D, generator=g),
        torch.randn(V, D, generator=g),
    )


# ---- second derivatives --------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("inplace", [False, True])
def test_cross_entropy_refuses_a_second_derivative(reduction, inplace):
    # A backward with create_graph=True gave a gradient that required grad but whose own gradient
    # was silently missing (zz.grad None after (g**2).sum().backward(): no second derivative).
    z, y, _, _ = data()
    base = z.clone().requires_grad_()
    loss = cross_entropy(base * 1.0, y, reduction=reduction, inplace_backward=inplace).sum()
    with pytest.raises(RuntimeError, match=r"ember\.ops\.cross_entropy: no second derivative"):
        torch.autograd.grad(loss, base, create_graph=True)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_linear_cross_entropy_refuses_a_second_derivative(reduction):
    # Was "element 0 of tensors does not require grad" (mean) or mm()'s out= error (none).
    _, y, h, w = data()
    h = h.requires_grad_()
    loss = linear_cross_entropy(h, w, y, reduction=reduction).sum()
    with pytest.raises(RuntimeError, match=r"ember\.ops\.linear_cross_entropy: no second derivative"):
        torch.autograd.grad(loss, h, create_graph=True)


# ---- inplace_backward ------------------------------------------------------------------------------------
def test_inplace_backward_twice_through_a_retained_graph_is_refused():
    # The second backward read the gradient written over the logits: 0.06 off, silently.
    z, y, _, _ = data()
    base = z.clone().requires_grad_()
    loss = cross_entropy(base * 1.0, y, inplace_backward=True)
    torch.autograd.grad(loss, base, retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(loss, base)


def test_inplace_backward_logits_saved_by_another_op_is_refused():
    # (z**2) saved z before the loss; its backward ran after ours and read the gradient: 17 off.
    z, y, _, _ = data()
    base = z.clone().requires_grad_()
    logits = base * 2.0
    other = (logits**2).sum()
    loss = cross_entropy(logits, y, inplace_backward=True) + other
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("view", [False, True])
def test_inplace_backward_refuses_a_leaf_before_anything_changes(view):
    # The gradient was written over the leaf itself (a parameter, or a view of one): its values
    # were gone and its .grad shared their memory.
    z, y, _, _ = data()
    leaf = torch.cat([z, z], 1).requires_grad_() if view else z.clone().requires_grad_()
    before = leaf.detach().clone()
    logits = leaf[:, :V] if view else leaf
    with pytest.raises(ValueError, match=r"ember\.ops\.cross_entropy: inplace_backward=True .* leaf"):
        cross_entropy(logits, y, inplace_backward=True)
    assert torch.equal(leaf.detach(), before)


# ---- targets and weights ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_float_or_bool_targets_are_refused(dtype):
    # A float target was truncated to classes (2.7 scored as 2), as F.cross_entropy refuses.
    z, y, h, w = data()
    target = (y.float() + 0.7) if dtype == torch.float32 else (y > 4)
    with pytest.raises(TypeError, match=r"ember\.ops\.cross_entropy: target must be an integer tensor"):
        cross_entropy(z, target)
    with pytest.raises(TypeError, match=r"ember\.ops\.linear_cross_entropy: target must be an integer tensor"):
        linear_cross_entropy(h, w, target)


def test_integer_targets_of_any_width_give_torchs_loss():
    z, y, _, _ = data()
    for dtype in (torch.int32, torch.int16, torch.uint8):
        assert torch.allclose(cross_entropy(z, y.to(dtype)), F.cross_entropy(z, y), atol=1e-6)


def test_a_target_of_another_shape_is_refused():
    # logits (2, 3, V) against a transposed target (3, 2) paired each token with another's label.
    z, y, h, w = data()
    with pytest.raises(ValueError, match=r"ember\.ops\.cross_entropy: target must have shape \(2, 3\)"):
        cross_entropy(z.view(2, 3, V), y.view(3, 2))
    with pytest.raises(ValueError, match=r"ember\.ops\.linear_cross_entropy: target must have shape \(2, 3\)"):
        linear_cross_entropy(h.view(2, 3, D), w, y.view(3, 2))
    with pytest.raises(ValueError, match=r"ember\.ops\.cross_entropy: weight must have the target's shape"):
        cross_entropy(z.view(2, 3, V), y.view(2, 3), weight=torch.rand(3, 2))
    # flattened on either side is what the trainer and the patch pass: still taken
    ref = F.cross_entropy(z, y, reduction="none")
    assert torch.allclose(cross_entropy(z, y.view(2, 3), reduction="none").flatten(), ref, atol=1e-6)
    assert torch.allclose(cross_entropy(z.view(2, 3, V), y, reduction="none"), ref, atol=1e-6)


@pytest.mark.parametrize("softcap", [float("inf"), 1e39])
def test_a_softcap_beyond_float32_is_refused(softcap):
    # c·tanh(z/c) with c = inf (or a double that rounds to inf in float32) is inf·0: every loss NaN.
    z, y, h, w = data()
    with pytest.raises(ValueError, match=r"ember\.ops\.cross_entropy: softcap must be a finite"):
        cross_entropy(z, y, softcap=softcap)
    with pytest.raises(ValueError, match=r"ember\.ops\.linear_cross_entropy: softcap must be a finite"):
        linear_cross_entropy(h, w, y, softcap=softcap)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("upstream", [float("inf"), float("nan")])
def test_linear_cross_entropy_skipped_rows_get_zero_gradient_whatever_the_upstream(reduction, upstream):
    # The forward's gradients were scaled by the upstream scalar: 0·inf made the rows of ignored
    # and weight-0 tokens NaN (F.cross_entropy and ember.ops.cross_entropy give them exactly 0).
    _, y, h, w = data()
    y[1] = -100
    weight = torch.rand(N)
    weight[2] = 0
    h, w = h.requires_grad_(), w.requires_grad_()
    linear_cross_entropy(h, w, y, weight, reduction=reduction).backward(torch.tensor(upstream))
    assert torch.equal(h.grad[1:3], torch.zeros(2, D))
    h.grad = w.grad = None  # every token skipped: nothing reaches dW either
    linear_cross_entropy(h, w, torch.full((N,), -100), reduction="sum").backward(torch.tensor(upstream))
    assert torch.equal(h.grad, torch.zeros(N, D)) and torch.equal(w.grad, torch.zeros(V, D))


# ---- empty and zero-width inputs -------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_linear_cross_entropy_backward_of_an_empty_batch(reduction):
    # Crashed: "The size of tensor a (4) must match the size of tensor b (0)".
    _, _, h, w = data()
    h, w = h[:0].clone().requires_grad_(), w.clone().requires_grad_()
    loss = linear_cross_entropy(h, w, torch.zeros(0, dtype=torch.long), reduction=reduction)
    loss.backward()
    assert h.grad.shape == (0, D) and torch.equal(w.grad, torch.zeros_like(w))


def test_zero_width_inputs():
    # hidden of width 0 (logits all 0) was reshape's "ambiguous" error; F.linear gives log V.
    _, y, h, w = data()
    loss = linear_cross_entropy(h[:, :0], w[:, :0], y)
    assert torch.allclose(loss, F.cross_entropy(torch.zeros(N, V), y))
    with pytest.raises(RuntimeError, match=r"ember\.cross_entropy_forward: the number of classes must be >= 1"):
        cross_entropy(torch.zeros(N, 0), y)


# ---- masked_linear ---------------------------------------------------------------------------------------
def test_masked_linear_names_a_bool_mask_of_another_shape():
    # The bool mask was packed first, so the refusal named an int32 mask of a shape never passed.
    _, _, h, w = data()
    with pytest.raises(ValueError, match=r"ember\.ops\.masked_linear: a bool mask must have weight's shape \(9, 4\)"):
        masked_linear(h, w, torch.ones(4, 9, dtype=torch.bool))


@pytest.mark.parametrize("op", ["cross_entropy", "linear_cross_entropy"])
def test_token_weights_that_require_grad_are_refused(op):
    # The fused ops give per-token weights no gradient: w.grad stayed None (a learned weighting
    # silently never trained), as LinearCrossEntropyLoss already refuses.
    z, y, h, w = data()
    weight = torch.rand(N, requires_grad=True)
    with pytest.raises(ValueError, match=rf"ember\.ops\.{op}: weight requires grad"):
        if op == "cross_entropy":
            cross_entropy(z.requires_grad_(), y, weight)
        else:
            linear_cross_entropy(h.requires_grad_(), w, y, weight)
    with torch.no_grad():  # no graph: nothing is lost
        cross_entropy(z, y, weight)


# ---- fp8_gemm --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["bias", "a_scale"])
def test_fp8_gemm_refuses_inputs_that_require_grad(which):
    # Not differentiable: on CPU a bias that required grad got its gradient through the emulation
    # (on CUDA none: the same call trained the bias on one device only), a scale got none.
    from ember.ops import fp8_gemm, quantize_fp8

    qa, sa = quantize_fp8(torch.randn(16, 32))
    qb, sb = quantize_fp8(torch.randn(16, 32))
    bias = torch.randn(16)
    if which == "bias":
        bias.requires_grad_()
    else:
        sa.requires_grad_()
    with pytest.raises(ValueError, match=rf"ember\.ops\.fp8_gemm: not differentiable, but {which} requires grad"):
        fp8_gemm(qa, sa, qb, sb, bias=bias)
    with torch.no_grad():
        fp8_gemm(qa, sa, qb, sb, bias=bias)


# ---- apollo_step_ ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mistake", ["one state for every matrix", "exp_avg is exp_avg_sq", "a param twice", "a grad is a param"]
)
def test_apollo_step_refuses_tensors_that_share_memory(mistake):
    # `[torch.zeros(L, r)] * n` gives every matrix the same moments: the op mixed their updates
    # silently (as it did with exp_avg passed as exp_avg_sq, a parameter listed twice, or one
    # matrix's gradient that is another's parameter). Gradients may share memory: they are read.
    from ember.ops import apollo_step_

    g = torch.Generator().manual_seed(0)
    params = [torch.randn(8, 4, generator=g) for _ in range(2)]
    grads = [torch.randn(8, 4, generator=g) for _ in range(2)]
    exp_avg, exp_avg_sq = [torch.zeros(8, 2) for _ in range(2)], [torch.zeros(8, 2) for _ in range(2)]
    if mistake == "one state for every matrix":
        exp_avg = [torch.zeros(8, 2)] * 2
    elif mistake == "exp_avg is exp_avg_sq":
        exp_avg_sq = exp_avg
    elif mistake == "a param twice":
        params = [params[0], params[0]]
    else:
        grads = [params[1], grads[1]]
    before = [p.clone() for p in params]
    hyper = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.0, scale=1.0, tensor_scale=False)
    hyper.update(norm_growth_limit=1.01, rank=2, update_proj_gap=10, seed=0, stochastic_rounding=False)
    norms = [torch.zeros(1) for _ in range(2)]
    with pytest.raises(ValueError, match=r"ember\.ops\.apollo_step_: .* share memory"):
        apollo_step_(params, grads, exp_avg, exp_avg_sq, norms, [1, 1], [0, 1], **hyper)
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    if mistake == "a param twice":  # one gradient for both matrices is fine
        params = [p.clone() for p in before]
        apollo_step_(params, [grads[0], grads[0]], exp_avg, exp_avg_sq, norms, [1, 1], [0, 1], **hyper)


# ---- forward-mode derivatives ----------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["cross_entropy", "linear_cross_entropy", "masked_linear"])
def test_forward_mode_derivatives_are_refused(op):
    # torch.func.jvp answered a tangent of exactly 0 (the ops have no forward-mode rule), and
    # torch.autograd.forward_ad a tangent of None: a directional derivative of 0, silently.
    z, y, h, w = data()
    fns = {
        "cross_entropy": (lambda t: cross_entropy(t, y), z),
        "linear_cross_entropy": (lambda t: linear_cross_entropy(t, w, y), h),
        "masked_linear": (lambda t: masked_linear(t, w, torch.ones(V, D, dtype=torch.bool)), h),
    }
    fn, primal = fns[op]
    with pytest.raises(RuntimeError, match=rf"ember\.ops\.{op}: no forward-mode derivative"):
        torch.func.jvp(fn, (primal,), (torch.ones_like(primal),))
