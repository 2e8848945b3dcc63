"""ember's objects used the ways users misuse torch's: each case here was a silent wrong answer,
an unhelpful crash or a change made before a refusal, and now gives torch's answer or a clear
refusal that changes nothing."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ember.amp import autocast_inputs
from ember.float8 import Float8Linear, convert_to_float8_training
from ember.losses import LinearCrossEntropyLoss, prior_token_weights
from ember.optim import Apollo, apollo_param_groups
from ember.reference import apollo as reference
from ember.sparse import SparseLinear, random_prune


# ---- Apollo ------------------------------------------------------------------------------------------
def transposed_param(seed=0):
    """A leaf parameter whose memory is another layout than its shape's (a tied Wᵀ, a .t() weight)."""
    torch.manual_seed(seed)
    return nn.Parameter(torch.randn(6, 8).t())


@pytest.mark.parametrize("rank", [None, 2])
def test_a_non_contiguous_parameter_steps_as_its_contiguous_copy(rank):
    # The AdamW rule went through torch's fused kernel, which pairs elements by memory: a
    # transposed parameter with a contiguous gradient got another element's update (0.02 off
    # after one step); the low-rank rule refused it at the step.
    p = transposed_param()
    q = nn.Parameter(p.detach().contiguous())
    opts = [
        Apollo([p], rank=rank, update_proj_gap=2, weight_decay=0.1),
        Apollo([q], rank=rank, update_proj_gap=2, weight_decay=0.1),
    ]
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        grad = torch.randn(8, 6, generator=g)
        p.grad, q.grad = grad.clone(), grad.clone()
        for opt in opts:
            opt.step()
    assert p.stride() == (1, 8)  # stepped in place: the model's tensor is still the one it holds
    assert torch.equal(p.detach(), q.detach())
    if rank is None:
        ref = nn.Parameter(transposed_param().detach().contiguous())
        torch_opt = torch.optim.AdamW([ref], lr=1e-2, eps=1e-6, weight_decay=0.1)
        g = torch.Generator().manual_seed(1)
        for _ in range(3):
            ref.grad = torch.randn(8, 6, generator=g)
            torch_opt.step()
        torch.testing.assert_close(p.detach(), ref.detach())


def test_a_gradient_of_another_layout_steps_as_torch_adamw():
    # p.grad = a transposed (or expanded) view: fused AdamW paired it with p by memory order.
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(8, 6))
    ref = nn.Parameter(p.detach().clone())
    opt, torch_opt = Apollo([p], rank=None), torch.optim.AdamW([ref], lr=1e-2, eps=1e-6, weight_decay=0.0)
    for grad in (torch.randn(6, 8).t(), torch.randn(1, 6).expand(8, 6)):
        p.grad, ref.grad = grad, grad.contiguous()
        opt.step()
        torch_opt.step()
    torch.testing.assert_close(p.detach(), ref.detach())


@pytest.mark.parametrize(
    "key, value",
    [("scale_type", "chanel"), ("update_proj_gap", 0), ("betas", (0.9, 1.5)), ("rank", 0), ("maximize", True)],
)
def test_a_hyperparameter_changed_in_param_groups_is_checked_at_the_step(key, value):
    # param_groups[i][key] = ... mid-run skipped the constructor's checks: "chanel" stepped as
    # "channel" silently; the step now refuses it before any parameter changes.
    p, b = nn.Parameter(torch.randn(8, 6)), nn.Parameter(torch.randn(6))
    opt = Apollo([{"params": [b], "rank": None}, {"params": [p]}], rank=2)
    p.grad, b.grad = torch.randn(8, 6), torch.randn(6)
    opt.step()
    before = [p.detach().clone(), b.detach().clone()]
    opt.param_groups[1][key] = value
    with pytest.raises(ValueError, match=f"ember.optim.Apollo: {key} must be"):
        opt.step()
    assert torch.equal(p.detach(), before[0]) and torch.equal(b.detach(), before[1])


# ---- random_prune --------------------------------------------------------------------------------------
def conv_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(64, 32))


@pytest.mark.parametrize("block", [0, -4, 7, True, 2.5, "16"])
def test_random_prune_refuses_a_bad_block_before_changing_anything(block):
    # block=0 divided by zero, -4 indexed out of range, True reached repeat_interleave; and 7 was
    # refused by pack_mask only after the conv layers before it had been masked.
    model = conv_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="ember.sparse.random_prune: block must be"):
        random_prune(model, 0.5, block=block)
    assert not hasattr(model[0], "weight_mask") and not model[0]._forward_pre_hooks
    assert type(model[2]) is nn.Linear
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_random_prune_refuses_masks_that_miss_a_layer_before_changing_anything():
    # A masks dict without the last layer raised KeyError after the conv was masked.
    model = conv_net()
    masks = {"0": torch.ones(4, 3, 3, 3, dtype=torch.bool)}
    with pytest.raises(ValueError, match=r"ember.sparse.random_prune: masks\['2'\] must be a bool tensor"):
        random_prune(model, 0.5, masks=masks)
    assert not hasattr(model[0], "weight_mask") and type(model[2]) is nn.Linear


def test_a_sparse_linear_built_dense_is_pruned_by_random_prune():
    model = nn.Sequential(SparseLinear(32, 32), nn.ReLU(), SparseLinear(32, 16))
    report = random_prune(model, 0.5, "uniform")
    assert report["density"] == pytest.approx(0.5, abs=1e-3)


def test_random_prune_leaves_attention_out_proj_whose_weight_attention_reads_directly():
    # nn.MultiheadAttention never calls out_proj's forward: a SparseLinear there had its mask
    # applied nowhere, every pruned weight regrew in the first step (512 of 512), and state_dict
    # zeroed them again: the saved model was not the trained one.
    torch.manual_seed(0)
    model = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, dropout=0.0)
    report = random_prune(model, 0.5, "uniform")
    assert [layer["name"] for layer in report["layers"]] == ["linear1", "linear2"]
    assert type(model.self_attn.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(2, 5, 32)).pow(2).sum().backward()
    opt.step()
    for layer in (model.linear1, model.linear2):
        assert not layer.weight[~layer.dense_mask()].any()


def test_random_prune_refuses_linear_subclasses_with_their_own_forward():
    # A Float8Linear (or a user's Linear subclass) became a SparseLinear: fp8 was dropped silently.
    model = nn.Sequential(Float8Linear(32, 32), nn.ReLU(), nn.Linear(32, 32))
    with pytest.raises(ValueError, match=r"ember.sparse.random_prune: 0 \(Float8Linear\) subclass nn.Linear"):
        random_prune(model, 0.5)
    assert type(model[0]) is Float8Linear and type(model[2]) is nn.Linear


def test_random_prune_of_a_pruned_model_is_refused():
    # A second random_prune drew new masks over the first: the weights the first had pruned came
    # back (as zeros) and those it kept were cut, while the report showed the target density.
    model = conv_net()
    random_prune(model, 0.5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="already pruned"):
        random_prune(model, 0.5, seed=1)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert len(model[0]._forward_pre_hooks) == 1


# ---- LinearCrossEntropyLoss -------------------------------------------------------------------------------
def head(n=6, d=8, v=11):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(n, d, generator=g, requires_grad=True),
        torch.randn(v, d, generator=g, requires_grad=True),
        torch.randint(0, v, (n,), generator=g),
    )


def test_per_token_weights_that_require_grad_are_refused():
    # loss = Σ w_i·CE_i has dloss/dw_i = CE_i, but the fused op gives w no gradient: w.grad stayed
    # None (a learned or model-computed weighting trained silently without its gradient).
    h, w, y = head()
    tw = torch.rand(6, requires_grad=True)
    with pytest.raises(ValueError, match="ember.losses.LinearCrossEntropyLoss: weight requires grad"):
        LinearCrossEntropyLoss()(h, w, y, weight=tw)
    loss = LinearCrossEntropyLoss(reduction="sum")(h, w, y, weight=tw.detach())
    ref = (F.cross_entropy(h @ w.t(), y, reduction="none") * tw.detach()).sum()
    torch.testing.assert_close(loss, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_targets_that_are_not_integers_are_refused(dtype):
    # Float targets were truncated to classes (2.7 scored as class 2); F.cross_entropy refuses them.
    h, w, _ = head()
    y = torch.tensor([2.7, 1.2, 0.5, 3.0, 4.9, 0.0]).to(dtype)
    with pytest.raises(TypeError, match="ember.losses.LinearCrossEntropyLoss: target must be an integer tensor"):
        LinearCrossEntropyLoss()(h, w, y)


def test_int32_targets_score_as_long_ones():
    h, w, y = head()
    loss_fn = LinearCrossEntropyLoss()
    torch.testing.assert_close(loss_fn(h, w, y.int()), F.cross_entropy(h @ w.t(), y))


def test_a_second_derivative_through_the_loss_is_refused():
    # The fused op's gradient has no graph: with create_graph=True the gradient penalty's part
    # through the loss was silently left out (grad(loss, h, create_graph=True) had no grad_fn).
    h, w, y = head()
    loss = LinearCrossEntropyLoss()(h, w, y)
    with pytest.raises(RuntimeError, match="ember.losses.LinearCrossEntropyLoss: .*second derivative"):
        torch.autograd.grad(loss, h, create_graph=True)
    h, w, y = head()  # a first derivative is unaffected
    gh = torch.autograd.grad(LinearCrossEntropyLoss()(h, w, y), h)[0]
    torch.testing.assert_close(gh, torch.autograd.grad(F.cross_entropy(h @ w.t(), y), h)[0])


# ---- Float8Linear -----------------------------------------------------------------------------------------
def test_float8_linear_refuses_a_second_derivative():
    # Its backward's GEMMs are not differentiable: with create_graph=True a gradient penalty
    # (here: ‖dL/dx‖² + x², so the result has a graph) silently missed the fp8 layer's part.
    torch.manual_seed(0)
    f = Float8Linear(32, 32)
    x = torch.randn(4, 32, requires_grad=True)
    loss = f(x).pow(2).sum() + x.pow(3).sum()
    with pytest.raises(RuntimeError, match="differentiate twice"):
        gx = torch.autograd.grad(loss, x, create_graph=True)[0]
        gx.pow(2).sum().backward()


def test_sparse_linear_second_derivative_is_refused_clearly():
    lin = SparseLinear(8, 4)
    x = torch.randn(3, 8, requires_grad=True)
    with pytest.raises(RuntimeError, match="ember.ops.masked_linear|differentiate twice"):
        torch.autograd.grad(lin(x).pow(2).sum(), x, create_graph=True)


@pytest.mark.parametrize("recipe", ["tensorwise", "rowwise", "blockwise"])
def test_float8_linear_takes_a_weight_of_another_layout_as_nn_linear_does(recipe):
    # A weight tied to a transposed parameter reached quantize_fp8, which refused it as not
    # row-major; nn.Linear takes it. The answer is the contiguous weight's, bit for bit.
    torch.manual_seed(0)
    dense = Float8Linear(32, 48, recipe=recipe)
    tied = Float8Linear.from_linear(nn.Linear(32, 48), recipe)
    tied.weight = nn.Parameter(dense.weight.detach().t().contiguous().t())
    tied.bias = dense.bias
    assert not tied.weight.is_contiguous()
    x = torch.randn(5, 32, requires_grad=True)
    outs = []
    for layer in (dense, tied):
        y = layer(x)
        outs.append((y, *torch.autograd.grad(y, (x, layer.weight), torch.ones_like(y))))
    for a, b in zip(*outs):
        assert torch.equal(a, b)


# ---- prior_token_weights and autocast_inputs ----------------------------------------------------------------
def test_prior_token_weights_ignore_what_the_mask_ignores_and_refuse_plus_inf():
    # A NaN at an ignored (padding) position was refused though it is never used; +inf, which
    # is no log-probability, gave weight 0 silently.
    lp = torch.tensor([-0.5, -1.0, float("nan"), -2.0])
    ignore = torch.tensor([False, False, True, False])
    want = prior_token_weights(torch.tensor([-0.5, -1.0, -3.0, -2.0]), ignore_mask=ignore)
    assert torch.equal(prior_token_weights(lp, ignore_mask=ignore), want)
    with pytest.raises(ValueError, match=r"prior_token_weights: ref_logprobs contains NaN or \+inf"):
        prior_token_weights(torch.tensor([float("inf"), -1.0]))
    with pytest.raises(ValueError, match="NaN"):
        prior_token_weights(lp)


def test_autocast_inputs_of_nothing_but_none():
    # StopIteration escaped from the search for a device.
    assert autocast_inputs(None, None) == (None, None)
    with torch.autocast("cpu", torch.bfloat16):
        assert autocast_inputs(None) == (None,)


@pytest.mark.parametrize("scale_type", ["channel", "tensor"])
def test_a_matrix_whose_first_gradient_is_zero_trains(scale_type):
    # A layer behind a zero-initialized one gets a zero gradient at step 1: the limiter then
    # capped every later update at 1.01^t·1e-8 (moved 2.5e-9 in 100 steps where a fresh one moved
    # 0.6). Growth from a zero update is not limited (Apollo hands the op an infinite previous
    # norm, where the reference rule takes none); the rest of the rule is unchanged.
    torch.manual_seed(0)
    w0 = torch.randn(24, 10)
    p = nn.Parameter(w0.clone())
    opt = Apollo([p], rank=3, update_proj_gap=3, scale_type=scale_type)
    ref = reference.ReferenceApollo(w0, 3, update_proj_gap=3, tensor_scale=scale_type == "tensor")
    g = torch.Generator().manual_seed(2)
    for t in range(6):
        grad = torch.zeros(24, 10) if t in (0, 3) else torch.randn(24, 10, generator=g)
        p.grad = grad
        opt.step()
        ref.norm_prev = None if ref.norm_prev is not None and ref.norm_prev == 0 else ref.norm_prev
        ref.step(grad)
    assert (p.detach() - w0).norm() > 0.05
    torch.testing.assert_close(p.detach(), ref.w, rtol=1e-5, atol=1e-6)


# ---- swaps keep the hooks users registered ----------------------------------------------------------------
def doubled(module, args, output):
    return output * 2


@pytest.mark.parametrize("swap", ["float8", "prune"])
def test_a_swapped_linear_keeps_its_hooks(swap):
    # convert_to_float8_training and random_prune replaced the module and dropped its hooks: a
    # forward hook that changes the output (an adapter, a scale) stopped applying silently.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 16))
    handle = model[0].register_forward_hook(doubled)
    pre = model[2].register_forward_pre_hook(lambda m, args: (args[0] * 0,))  # the last layer sees zeros
    if swap == "float8":
        convert_to_float8_training(model)
    else:
        random_prune(model, 0.5)
    assert type(model[0]) is not nn.Linear
    x = torch.randn(3, 32)
    assert torch.equal(model(x), model[2](torch.zeros(3, 32)))  # what the layer gives a zero input
    hooked = model[0](x)
    pre.remove()
    handle.remove()  # the handles still remove them from the new module
    assert not model[0]._forward_hooks and not model[2]._forward_pre_hooks
    assert torch.equal(hooked, 2 * model[0](x))


class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.mid = nn.Embedding(50, 16), nn.Linear(16, 16)
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, t):
        return self.head(torch.relu(self.mid(self.emb(t))))


def test_random_prune_leaves_a_head_tied_to_the_embedding():
    # The tied head was pruned: the embedding's gradient revived the masked weights (314 after
    # three steps), and state_dict(), zeroing them in place, wiped those trained embedding values.
    torch.manual_seed(0)
    model = TiedLM()
    report = random_prune(model, 0.5, "uniform", include_embeddings=True)
    assert [layer["name"] for layer in report["layers"]] == ["mid"]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    t = torch.randint(0, 50, (64,))
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(t), t).backward()
        opt.step()
    before = model.emb.weight.detach().clone()
    state = model.state_dict()
    assert torch.equal(model.emb.weight, before) and torch.equal(state["emb.weight"], before)
    assert not model.mid.weight[~model.mid.dense_mask()].any()


def test_apollo_param_groups_of_a_model_as_wide_as_its_vocabulary():
    # Every Linear producing a vocabulary's size counted as a head: in a byte-level model of width
    # 256, the attention and FFN-down weights went to AdamW silently (one low-rank matrix of four).
    class ByteLM(nn.Module):
        def __init__(self, vocab=256, dim=256):
            super().__init__()
            self.tok = nn.Embedding(vocab, dim)
            self.q, self.up, self.down = nn.Linear(dim, dim), nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
            self.proj = nn.Linear(dim, vocab)  # the head, by its place only

    model = ByteLM()
    names = {id(p): n for n, p in model.named_parameters()}
    low, rest = apollo_param_groups(model, rank=4)
    assert [names[id(p)] for p in low["params"]] == ["q.weight", "up.weight", "down.weight"]
    assert "proj.weight" in [names[id(p)] for p in rest["params"]] and rest["rank"] is None


def test_random_prune_of_a_model_with_no_layer_to_prune_is_refused():
    # A model whose layers are no nn.Linear (transformers' Conv1D in GPT-2) was left dense while
    # random_prune returned a report with the target sparsity.
    class Conv1D(nn.Module):  # transformers.pytorch_utils.Conv1D: a Linear that is no nn.Linear
        def __init__(self, nf, nx):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(nx, nf))

        def forward(self, x):
            return x @ self.weight

    with pytest.raises(ValueError, match="ember.sparse.random_prune: Sequential has no layer to prune"):
        random_prune(nn.Sequential(Conv1D(8, 8), nn.ReLU()), 0.5)
    assert random_prune(nn.Sequential(Conv1D(8, 8)), 0.0)["density"] == 1.0  # nothing asked, nothing done


def test_a_gradient_of_another_dtype_is_refused_before_any_step():
    # With p.grad_dtype = None a float32 gradient reached a bf16 parameter: fused AdamW failed
    # with "expected scalar type BFloat16 but found Float" after the group's low-rank matrices
    # had stepped.
    w = nn.Parameter(torch.randn(8, 6))
    b = nn.Parameter(torch.randn(6).bfloat16())
    opt = Apollo([w, b], rank=2)
    b.grad_dtype = None
    w.grad, b.grad = torch.randn(8, 6), torch.randn(6)
    before = w.detach().clone()
    with pytest.raises(
        RuntimeError, match=r"ember.optim.Apollo: the gradient of a torch.bfloat16 parameter of shape \(6,\)"
    ):
        opt.step()
    assert torch.equal(w.detach(), before) and int(opt.state[w].get("step", 0)) == 0


@pytest.mark.parametrize("swap", ["float8", "prune"])
def test_a_linear_reused_under_two_names_is_swapped_under_both(swap):
    # A module reused (weights shared by reuse) was swapped under its first name only: the second
    # use stayed a plain nn.Linear, running dense on the pruned weight (its gradient reviving what
    # the mask pruned) or in full precision.
    lin = nn.Linear(32, 32)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    if swap == "float8":
        convert_to_float8_training(model)
    else:
        random_prune(model, 0.5)
    assert model[0] is model[2] and type(model[0]) is not nn.Linear


def test_random_prune_of_a_bare_layer_is_refused():
    # random_prune(nn.Linear(...)) cannot swap the layer for a SparseLinear: the layer stayed
    # dense while the report showed the target density.
    layer = nn.Linear(8, 8)
    with pytest.raises(ValueError, match="ember.sparse.random_prune: pass the module holding the Linear"):
        random_prune(layer, 0.5)
    assert not layer._modules


def test_a_pruned_llama_head_trains_through_its_mask():
    # Llama's loss and logits read output.weight directly (the head's GEMM is in the fused
    # loss): a pruned untied head had its mask applied nowhere, and all 17300 pruned weights of
    # the debug model's head were nonzero after one step (state_dict then zeroed them).
    import dataclasses

    from ember.models import CONFIGS, Llama

    cfg = dataclasses.replace(CONFIGS["debug"], tie_embeddings=False, n_layers=1, max_seq_len=16)
    torch.manual_seed(0)
    model = Llama(cfg).init_weights(0)
    random_prune(model, 0.5, "erk")
    tokens = torch.randint(0, cfg.vocab_size, (2, 9))
    keep = model.output.dense_mask()
    logits = model(tokens[:, :-1])
    torch.testing.assert_close(logits, model.output(model.hidden(tokens[:, :-1])))
    model(tokens[:, :-1], targets=tokens[:, 1:]).backward()
    assert not model.output.weight.grad[~keep].any()
