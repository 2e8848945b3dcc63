"""ember's objects in users' own training code keep the conventions of the torch objects they
stand in for: Apollo those of a torch.optim optimizer (the cases of PyTorch's optimizer tests
that apply), Float8Linear and SparseLinear those of nn.Linear, LinearCrossEntropyLoss those of
F.cross_entropy(lm_head(h), y) (the cases of PyTorch's module tests: copying, saving, dtype and
device moves, frozen weights, hooks, meta construction, autocast)."""

import copy
import io
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ember.float8 import Float8Linear
from ember.losses import LinearCrossEntropyLoss
from ember.optim import Apollo, ApolloMini
from ember.sparse import SparseLinear


# ---- Apollo as a torch.optim optimizer -------------------------------------------------------------
def net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 24), nn.Tanh(), nn.Linear(24, 40))


OPTIMIZERS = {
    "apollo": lambda params, **kw: Apollo(params, rank=4, update_proj_gap=2, **kw),
    "apollo_mini": lambda params, **kw: ApolloMini(params, **kw),
    "adamw_rule": lambda params, **kw: Apollo(params, rank=None, **kw),
}


def backward(model, seed):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 16, generator=g), torch.randn(8, 40, generator=g)
    loss = F.mse_loss(model(x), y)
    loss.backward()
    return loss


def train(model, opt, steps, start=0):
    for i in range(start, start + steps):
        opt.zero_grad()
        backward(model, i)
        opt.step()


def same_params(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_state_dict_round_trip_then_identical_steps(kind):
    model = net()
    opt = OPTIMIZERS[kind](model.parameters(), weight_decay=0.1)
    train(model, opt, 3)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    other = copy.deepcopy(model)
    fresh = OPTIMIZERS[kind](other.parameters(), lr=0.5)  # the saved hyperparameters win, as in torch
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    train(model, opt, 3, start=3)
    train(other, fresh, 3, start=3)
    assert same_params(model, other)


def test_loaded_state_then_changed_lr_is_used():
    model = net()
    opt = Apollo(model.parameters(), rank=4)
    train(model, opt, 2)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    oa, ob = Apollo(a.parameters(), rank=4), Apollo(b.parameters(), rank=4)
    oa.load_state_dict(opt.state_dict())
    ob.load_state_dict(opt.state_dict())
    ob.param_groups[0]["lr"] = 0.0
    train(a, oa, 1, start=2)
    train(b, ob, 1, start=2)
    assert same_params(b, model) and not same_params(a, model)


def test_load_state_dict_with_groups_in_another_order_is_refused():
    model = net()
    w1, w2 = model[0].weight, model[2].weight
    opt = Apollo([{"params": [w1]}, {"params": [w2]}], rank=4)
    train(model, opt, 1)
    swapped = Apollo([{"params": [w2]}, {"params": [w1]}], rank=4)
    swapped.load_state_dict(opt.state_dict())  # torch pairs by position: w2 gets w1's state
    before = [w1.clone(), w2.clone()]
    with pytest.raises(RuntimeError, match="ember.optim.Apollo: a parameter of shape .* another order"):
        train(model, swapped, 1)
    assert torch.equal(w1, before[0]) and torch.equal(w2, before[1])
    with pytest.raises(ValueError):  # another group layout: torch's own refusal
        Apollo([{"params": [w1, w2]}], rank=4).load_state_dict(opt.state_dict())


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad(set_to_none):
    model = net()
    opt = Apollo(model.parameters(), rank=4)
    backward(model, 0)
    opt.zero_grad(set_to_none=set_to_none)
    for p in model.parameters():
        assert p.grad is None if set_to_none else torch.equal(p.grad, torch.zeros_like(p))


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_parameters_without_gradients_are_skipped(kind):
    model = net()
    model[0].requires_grad_(False)
    frozen = model[0].weight.clone()
    opt = OPTIMIZERS[kind](model.parameters())
    train(model, opt, 2)
    assert torch.equal(model[0].weight, frozen) and model[0].weight not in opt.state
    assert len(opt.state) == 2


def test_add_param_group():
    model = net()
    opt = Apollo([model[0].weight], rank=4, lr=0.1)
    opt.add_param_group({"params": model[2].parameters(), "rank": None})  # a generator, read once
    assert len(opt.param_groups[1]["params"]) == 2 and opt.param_groups[1]["lr"] == 0.1
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [model[0].weight]})
    for bad, match in (({"rank": -1}, "rank must be"), ({"lr": -1.0}, "lr must be"), ({"maximize": True}, "maximize")):
        with pytest.raises(ValueError, match=match):
            opt.add_param_group({"params": [model[0].bias], **bad})
    double = nn.Parameter(torch.randn(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="low-rank parameters must be float32 or bfloat16"):
        opt.add_param_group({"params": [double]})
    assert len(opt.param_groups) == 2  # a refused group is not added
    train(model, opt, 1)


def test_lr_as_a_tensor_steps_as_the_float():
    a, b = net(), net()
    train(a, Apollo(a.parameters(), rank=4, lr=torch.tensor(0.01)), 3)
    train(b, Apollo(b.parameters(), rank=4, lr=0.01), 3)
    assert same_params(a, b)


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_deepcopy_of_model_and_optimizer_steps_the_same(kind):
    model = net()
    opt = OPTIMIZERS[kind](model.parameters())
    train(model, opt, 2)
    model2, opt2 = copy.deepcopy((model, opt))
    train(model, opt, 2, start=2)
    train(model2, opt2, 2, start=2)
    assert same_params(model, model2)


def test_closure_runs_with_gradients_enabled():
    model = net()
    opt = Apollo(model.parameters(), rank=4)

    def closure():
        opt.zero_grad()
        return backward(model, 0)

    with torch.no_grad():  # as torch optimizers: the closure gets gradients anyway
        loss = opt.step(closure)
    assert loss.requires_grad and int(opt.state[model[0].weight]["step"]) == 1


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_step_after_the_model_moves_to_bf16(kind):
    model = net()
    opt = OPTIMIZERS[kind](model.parameters())
    train(model, opt, 2)
    model.to(torch.bfloat16)  # torch's AdamW raises here; the state follows the parameters
    for i in range(2):
        opt.zero_grad()
        x = torch.randn(8, 16, dtype=torch.bfloat16)
        model(x).float().square().mean().backward()
        opt.step()
    assert all(p.dtype == torch.bfloat16 and torch.isfinite(p).all() for p in model.parameters())


def test_step_after_the_model_moves_to_a_dtype_apollo_refuses():
    model = net()
    opt = Apollo(model.parameters(), rank=4)
    train(model, opt, 1)
    model.double()
    opt.zero_grad()
    model(torch.randn(8, 16, dtype=torch.float64)).square().mean().backward()
    with pytest.raises(ValueError, match="low-rank parameters must be float32 or bfloat16, got torch.float64"):
        opt.step()


def test_a_refused_step_changes_no_group():
    model = net()
    opt = Apollo([{"params": model[0].parameters()}, {"params": model[2].parameters()}], rank=4)
    train(model, opt, 1)
    model[2].double()  # the second group's weight: a dtype the low-rank rule refuses
    opt.zero_grad()
    model[2](model[1](model[0](torch.randn(8, 16))).double()).square().mean().backward()
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="low-rank parameters must be float32 or bfloat16"):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert all(int(opt.state[p]["step"]) == 1 for p in model.parameters())


def test_flags_torch_optimizers_have_and_apollo_lacks():
    params = list(net().parameters())
    with pytest.raises(TypeError, match="maximize"):
        Apollo(params, maximize=True)
    with pytest.raises(ValueError, match="amsgrad must be False"):
        Apollo([{"params": params, "amsgrad": True}])
    Apollo([{"params": params, "maximize": False, "foreach": None}])  # torch's defaults are fine
    with pytest.raises(ValueError, match="empty parameter list"):
        Apollo([])
    with pytest.raises(TypeError, match="iterable of Tensors"):
        Apollo(params[0])


def test_lr_scheduler_and_step_hooks():
    model = net()
    opt = Apollo(model.parameters(), rank=4, lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    for i in range(2):
        opt.zero_grad()
        backward(model, i)
        opt.step()
        sched.step()
    assert calls == ["pre", "post"] * 2 and opt.param_groups[0]["lr"] == pytest.approx(0.025)


# ---- Float8Linear and SparseLinear as nn.Linear --------------------------------------------------
def mask(out_features, in_features):
    return torch.rand(out_features, in_features, generator=torch.Generator().manual_seed(1)) < 0.6


LINEARS = {
    "float8": lambda linear: Float8Linear.from_linear(linear, "rowwise"),
    "sparse": lambda linear: SparseLinear.from_linear(linear, mask(*linear.weight.shape)),
    "sparse_block": lambda linear: SparseLinear.from_linear(
        linear, mask(2, 2).repeat_interleave(16, 0).repeat_interleave(16, 1), block=16
    ),
}


def layer(kind, seed=0):
    torch.manual_seed(seed)
    return LINEARS[kind](nn.Linear(32, 32))


def x_in(dtype=torch.float32):
    return torch.randn(3, 5, 32, generator=torch.Generator().manual_seed(2)).to(dtype)


def reference(m: nn.Module) -> nn.Linear:
    """The plain nn.Linear that m stands in for (the mask applied)."""
    plain = nn.Linear(32, 32)
    plain.load_state_dict(m.state_dict(), strict=False)
    return plain


@pytest.mark.parametrize("kind", LINEARS)
def test_deepcopy_pickle_and_torch_save(kind):
    m = layer(kind)
    want = m(x_in())
    copied = copy.deepcopy(m)
    assert copied.weight is not m.weight and torch.equal(copied(x_in()), want)
    assert torch.equal(pickle.loads(pickle.dumps(m))(x_in()), want)
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    assert torch.equal(torch.load(buf, weights_only=False)(x_in()), want)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    fresh = layer(kind, seed=1)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(fresh(x_in()), want)


@pytest.mark.parametrize("kind", LINEARS)
def test_state_dict_into_a_plain_linear_and_back(kind):
    m = layer(kind)
    plain = nn.Linear(32, 32)
    missing, unexpected = plain.load_state_dict(m.state_dict(), strict=kind == "float8")
    assert not missing and unexpected == ([] if kind == "float8" else ["mask"])
    tol = dict(atol=0.15, rtol=0.1) if kind == "float8" else {}  # fp8 operands: 2^-4 relative each
    torch.testing.assert_close(m(x_in()), plain(x_in()), **tol)
    dense = nn.Linear(32, 32)
    back = layer(kind, seed=1)
    back.load_state_dict(dense.state_dict(), strict=kind == "float8")
    if kind != "float8":  # the mask stays, the dense values behind it do not
        keep = back.dense_mask()
        assert (back.weight[~keep] == 0).all() and torch.equal(back.weight[keep], dense.weight[keep])


@pytest.mark.parametrize("kind", LINEARS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_to_dtype(kind, dtype):
    m = layer(kind)
    want = reference(m).to(dtype)(x_in(dtype))
    m = m.to(dtype)
    assert m.weight.dtype == dtype and m.bias.dtype == dtype
    if kind == "float8" and dtype == torch.float64:
        with pytest.raises(RuntimeError, match="float32, float16 or bfloat16, got Double"):
            m(x_in(dtype))
        return
    y = m(x_in(dtype))
    assert y.dtype == dtype
    tol = dict(atol=0.15, rtol=0.1) if kind == "float8" else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(y.float(), want.float(), **tol)


@pytest.mark.parametrize("kind", LINEARS)
def test_frozen_weights_still_give_input_gradients(kind):
    m = layer(kind).requires_grad_(False)
    x = x_in().requires_grad_()
    m(x).sum().backward()
    assert x.grad is not None and m.weight.grad is None and m.bias.grad is None
    ref = reference(m).requires_grad_(False)
    x2 = x_in().requires_grad_()
    ref(x2).sum().backward()
    tol = dict(atol=0.1, rtol=0.1) if kind == "float8" else {}
    torch.testing.assert_close(x.grad, x2.grad, **tol)


@pytest.mark.parametrize("kind", LINEARS)
def test_repr_reset_parameters_hooks_and_modes(kind):
    m = layer(kind)
    text = repr(m)
    assert "in_features=32, out_features=32, bias=True" in text
    assert ("recipe=rowwise" if kind == "float8" else "block=") in text
    before = m.weight.clone()
    m.reset_parameters()
    assert not torch.equal(m.weight, before)
    if kind != "float8":
        assert (m.weight[~m.dense_mask()] == 0).all()
    seen = []
    h1 = m.register_forward_pre_hook(lambda mod, args: seen.append("pre"))
    h2 = m.register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    h3 = m.register_full_backward_hook(lambda mod, gin, gout: seen.append("backward"))
    m(x_in().requires_grad_()).sum().backward()
    assert seen == ["pre", torch.Size([3, 5, 32]), "backward"]
    for h in (h1, h2, h3):
        h.remove()
    assert not m.eval().training and m.train().training
    assert not LINEARS[kind](nn.Linear(32, 32).eval()).training  # from_linear keeps the mode


@pytest.mark.parametrize("kind", LINEARS)
def test_meta_construction_then_to_empty(kind):
    with torch.device("meta"):
        linear = nn.Linear(32, 32)
    m = LINEARS[kind](linear)
    assert m.weight.is_meta
    m.to_empty(device="cpu")
    m.reset_parameters()
    y = m(x_in())
    assert torch.isfinite(y).all()
    if kind != "float8":  # the mask is the one given, not uninitialized memory
        assert torch.equal(m.dense_mask(), layer(kind).dense_mask())
        assert (m.weight[~m.dense_mask()] == 0).all()


@pytest.mark.parametrize("kind", LINEARS)
@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
def test_autocast_as_nn_linear(kind, input_dtype):
    """Under CPU autocast (bf16), as nn.Linear: a bf16 output, each gradient in its tensor's
    dtype, values within bf16's rounding of the autocast reference (fp8's for Float8Linear)."""
    m = layer(kind)
    ref = reference(m)
    outs = []
    for mod in (m, ref):
        x = x_in(input_dtype).requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = mod(x)
        y.float().square().sum().backward()
        outs.append((y, x.grad, mod.weight.grad, mod.bias.grad))
    (y, dx, dw, db), (ry, rdx, rdw, rdb) = outs
    assert y.dtype == ry.dtype == torch.bfloat16
    assert (
        (dx.dtype, dw.dtype, db.dtype)
        == (rdx.dtype, rdw.dtype, rdb.dtype)
        == (input_dtype, torch.float32, torch.float32)
    )
    if kind != "float8":
        keep = m.dense_mask()
        rdw = rdw * keep  # SparseLinear's weight gradient is masked
        assert (dw[~keep] == 0).all()
    for a, b in ((y, ry), (dx, rdx), (dw, rdw), (db, rdb)):
        if kind == "float8":  # fp8 operands (3 mantissa bits): an error relative to the tensor's norm
            assert (a.float() - b.float()).norm() <= 0.1 * b.float().norm()
        else:
            torch.testing.assert_close(a.float(), b.float(), atol=3e-2, rtol=2e-2)


# ---- LinearCrossEntropyLoss as F.cross_entropy(lm_head(h), y) -------------------------------------
def head_inputs(h_dtype=torch.float32, w_dtype=torch.float32):
    g = torch.Generator().manual_seed(3)
    h = torch.randn(2, 7, 24, generator=g).to(h_dtype).requires_grad_()
    w = (torch.randn(50, 24, generator=g) * 0.3).to(w_dtype).requires_grad_()
    b = torch.randn(50, generator=g).to(w_dtype).requires_grad_()
    y = torch.randint(0, 50, (2, 7), generator=g)
    y[0, :2] = -100
    return h, w, b, y


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_linear_cross_entropy_loss_is_cross_entropy_of_the_head(reduction):
    h, w, b, y = head_inputs()
    loss_fn = LinearCrossEntropyLoss(label_smoothing=0.1, reduction=reduction)
    got = loss_fn(h, w, y, bias=b)
    rh, rw, rb, _ = head_inputs()
    want = F.cross_entropy(F.linear(rh, rw, rb).flatten(0, 1), y.flatten(), label_smoothing=0.1, reduction=reduction)
    torch.testing.assert_close(got.reshape(want.shape), want)
    got.sum().backward()
    want.sum().backward()
    for a, b_ in ((h, rh), (w, rw), (b, rb)):
        torch.testing.assert_close(a.grad, b_.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("h_dtype", [torch.float32, torch.bfloat16])
def test_linear_cross_entropy_loss_under_autocast(h_dtype):
    """bf16 hidden states and an fp32 head under autocast, as F.cross_entropy(lm_head(h), y):
    fp32 loss, gradients in h's and the head's dtypes, values within bf16 rounding."""
    outs = []
    for fused in (True, False):
        h, w, b, y = head_inputs(h_dtype, torch.float32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if fused:
                loss = LinearCrossEntropyLoss()(h, w, y, bias=b)
            else:
                loss = F.cross_entropy(F.linear(h, w, b).flatten(0, 1), y.flatten())
        loss.backward()
        outs.append((loss, h.grad, w.grad, b.grad))
    (loss, dh, dw, db), (rloss, rdh, rdw, rdb) = outs
    assert loss.dtype == rloss.dtype == torch.float32
    assert (
        (dh.dtype, dw.dtype, db.dtype) == (rdh.dtype, rdw.dtype, rdb.dtype) == (h_dtype, torch.float32, torch.float32)
    )
    torch.testing.assert_close(loss, rloss, atol=1e-2, rtol=1e-2)
    for a, b_ in ((dh, rdh), (dw, rdw), (db, rdb)):
        torch.testing.assert_close(a.float(), b_.float(), atol=2e-3, rtol=2e-2)


def test_linear_cross_entropy_loss_copies_saves_and_refuses_bad_options():
    loss_fn = LinearCrossEntropyLoss(z_loss=1e-4, softcap=30.0, reduction="sum")
    h, w, _, y = head_inputs()
    want = loss_fn(h, w, y)
    for other in (copy.deepcopy(loss_fn), pickle.loads(pickle.dumps(loss_fn))):
        assert repr(other) == repr(loss_fn) and torch.equal(other(h, w, y), want)
    assert loss_fn.state_dict() == {} and "softcap=30.0" in repr(loss_fn)
    assert loss_fn.to(torch.bfloat16)(h, w, y).dtype == torch.float32  # no parameters: nothing moves
    for bad, match in (
        (dict(reduction="avg"), "reduction"),
        (dict(label_smoothing=1.5), "label_smoothing"),
        (dict(z_loss=-1.0), "z_loss"),
        (dict(softcap=0.0), "softcap"),
    ):
        with pytest.raises(ValueError, match=f"LinearCrossEntropyLoss: {match}"):
            LinearCrossEntropyLoss(**bad)


def test_a_torch_adamw_state_dict_loads():
    """A run that switches from torch.optim.AdamW to Apollo: groups without Apollo's keys take its
    defaults; the AdamW rule continues the moments, a low-rank group refuses them by name."""
    model = net()
    adamw = torch.optim.AdamW(model.parameters(), lr=0.01)
    train(model, adamw, 2)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    oa, ob = Apollo(a.parameters(), rank=None, weight_decay=0.01), torch.optim.AdamW(b.parameters(), lr=0.01)
    oa.load_state_dict(copy.deepcopy(adamw.state_dict()))  # torch's load keeps the tensors it is given
    ob.load_state_dict(copy.deepcopy(adamw.state_dict()))
    train(a, oa, 2, start=2)
    train(b, ob, 2, start=2)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)
    lowrank = Apollo(model.parameters(), rank=4)
    lowrank.load_state_dict(adamw.state_dict())
    with pytest.raises(RuntimeError, match="ember.optim.Apollo: .*state of"):
        train(model, lowrank, 1)
    bad = adamw.state_dict()
    bad["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr must be"):
        Apollo(model.parameters(), rank=4).load_state_dict(bad)


# ---- a Hugging Face model patched with sparsity, trained in bf16 ---------------------------------
def tiny_hf_llama():
    pytest.importorskip("transformers")
    from tests.patch.tiny_models import tiny_llama

    return tiny_llama()


def test_sparse_patched_model_under_autocast_as_the_unpatched_one():
    """The attention output reaches o_proj in bf16 under autocast: a pruned layer takes it as
    nn.Linear does, and the loss and gradients match the plain model with the same zeros."""
    from ember.patch import apply_ember, unpatch

    model = tiny_hf_llama()
    apply_ember(model, sparsity=dict(target=0.5, seed=0))
    plain = copy.deepcopy(model)
    unpatch(plain)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    losses = []
    for m in (model, plain):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = m(input_ids=ids, labels=ids).loss
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1], atol=2e-2, rtol=1e-2)
    w, ref = model.model.layers[0].self_attn.o_proj, plain.model.layers[0].self_attn.o_proj
    assert w.weight.grad.dtype == torch.float32
    keep = w.dense_mask()
    assert (w.weight.grad[~keep] == 0).all()
    torch.testing.assert_close(w.weight.grad, ref.weight.grad * keep, atol=2e-2, rtol=5e-2)


@pytest.mark.slow
def test_transformers_trainer_bf16_on_a_sparse_patched_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    from ember.patch import apply_ember

    model = tiny_hf_llama()
    apply_ember(model, sparsity=dict(target=0.5, seed=0))
    ids = torch.randint(0, 64, (8, 12), generator=torch.Generator().manual_seed(0))
    args = transformers.TrainingArguments(
        str(tmp_path),
        bf16=True,
        use_cpu=True,
        max_steps=2,
        per_device_train_batch_size=4,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
    )
    data = [{"input_ids": r, "labels": r} for r in ids]
    out = transformers.Trainer(model=model, args=args, train_dataset=data).train()
    assert torch.isfinite(torch.tensor(out.training_loss))
    for m in model.modules():
        if isinstance(m, SparseLinear):
            assert (m.weight[~m.dense_mask()] == 0).all()
