"""Pruning, then initializing: whatever order a user prunes and initializes a model in (init
functions, reset_parameters, model.apply(init), pruning on the meta device then to_empty), the
pruned weights are zero in everything ember exports or hands back (state_dict, torch.save,
to_hf, save_pretrained, unpatch), the masks are never uninitialized memory, and the exported
model computes what ember's does."""

import copy
import io
import math

import pytest
import torch
from torch import nn

from ember.sparse import SparseLinear, random_prune, sparsity_report, zero_pruned_
from ember.sparse.prune import draw_masks


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(48, 64), nn.ReLU(), nn.Linear(64, 40), nn.ReLU(), nn.Linear(40, 8))


def plain_copy(model: nn.Module) -> nn.Module:
    """The same architecture with plain nn.Linear layers, loaded from model's state dict (the
    masks are the only keys left over): what a user who exports the weights gets."""
    plain = mlp()
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(k.endswith(".mask") for k in unexpected)
    return plain


def pruned_nonzero(model: nn.Module, state: dict) -> int:
    return sum(
        int(torch.count_nonzero(state[f"{name}.weight"][~m.dense_mask()]))
        for name, m in model.named_modules()
        if isinstance(m, SparseLinear)
    )


def normal_init(module):
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.5)


INITS = {
    "reset_parameters": lambda m: [mod.reset_parameters() for mod in m.modules() if isinstance(mod, nn.Linear)],
    "apply(init)": lambda m: m.apply(normal_init),
    "copy_ from a dense model": lambda m: [p.copy_(q) for p, q in zip(m.parameters(), mlp().parameters())],
}


@pytest.mark.parametrize("init", INITS)
@torch.no_grad()
def test_init_after_pruning_exports_zeros(init):
    model = mlp()
    random_prune(model, 0.6, "uniform", seed=1)
    INITS[init](model)
    x = torch.randn(5, 48)
    want = model(x)  # the masks apply in the forward whatever the weights hold
    state = model.state_dict()
    assert pruned_nonzero(model, state) == 0
    torch.testing.assert_close(plain_copy(model)(x), want)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    again = torch.load(buf, weights_only=False)
    assert pruned_nonzero(again, again.state_dict()) == 0
    report = sparsity_report(model)  # state_dict zeroed what the init left behind the masks
    assert report["params_nonzero"] <= report["params_kept"] < report["params_total"]


@torch.no_grad()
def test_sparsity_report_counts_the_values_an_init_left_behind_the_masks():
    model = mlp()
    random_prune(model, 0.5, "uniform", seed=0)
    report = sparsity_report(model)
    assert report["params_nonzero"] == report["params_kept"]
    model.apply(normal_init)  # dense values behind the masks, until something zeroes them
    dense = sparsity_report(model)
    assert dense["density"] == report["density"] and dense["params_nonzero"] == dense["params_total"]
    assert zero_pruned_(model) == dense["params_total"] - dense["params_kept"]
    assert sparsity_report(model)["params_nonzero"] == report["params_kept"]
    assert zero_pruned_(model) == 0


@pytest.mark.parametrize("block", [None, 16])
def test_pruned_on_meta_then_to_empty_keeps_the_masks(block):
    with torch.device("meta"):
        model = mlp()
    random_prune(model, 0.7, "erk", block=block, seed=5)
    assert model[0].mask.is_meta
    model.to_empty(device="cpu")
    want = draw_masks(mlp(), 0.7, "erk", block=block, seed=5)
    for name in ("0", "2", "4"):
        assert torch.equal(model.get_submodule(name).dense_mask(), want[name])
    with torch.no_grad():
        model.apply(normal_init)
    assert pruned_nonzero(model, model.state_dict()) == 0
    model.to_empty(device="cpu")  # again, from real memory: the masks' values stay
    for name in ("0", "2", "4"):
        assert torch.equal(model.get_submodule(name).dense_mask(), want[name])


def test_meta_round_trip_and_meta_constructors():
    model = mlp()
    random_prune(model, 0.5, "uniform", seed=2)
    masks = [m.mask.clone() for m in model.modules() if isinstance(m, SparseLinear)]
    model.to("meta").to_empty(device="cpu")
    assert all(
        torch.equal(a, m.mask) for a, m in zip(masks, (m for m in model.modules() if isinstance(m, SparseLinear)))
    )
    for make in (lambda: SparseLinear(40, 24, device="meta"), lambda: SparseLinear(40, 24, block=16, device="meta")):
        layer = make().to_empty(device="cpu")
        assert layer.dense_mask().all()
    with torch.device("meta"):
        layer = SparseLinear(40, 24, block=16)
    assert layer.to_empty(device="cpu").dense_mask().all()


@torch.no_grad()
def test_nonfinite_and_dense_values_behind_the_mask():
    layer = SparseLinear.from_linear(
        nn.Linear(32, 16), torch.rand(16, 32, generator=torch.Generator().manual_seed(0)) < 0.5
    )
    dead = ~layer.dense_mask()
    layer.weight[dead] = float("nan")  # uninitialized memory can hold anything
    assert torch.isfinite(layer(torch.randn(3, 32))).all()
    assert (layer.state_dict()["weight"][dead] == 0).all()
    dense = nn.Linear(32, 16)
    layer.load_state_dict(dense.state_dict(), strict=False)  # a dense checkpoint into a pruned layer
    assert (layer.weight[dead] == 0).all() and torch.equal(layer.weight[~dead], dense.weight[~dead])


def test_state_dict_between_forward_and_backward():
    layer = SparseLinear.from_linear(nn.Linear(32, 16), torch.rand(16, 32) < 0.5)
    x = torch.randn(4, 32)
    loss = layer(x).square().sum()
    layer.state_dict()  # nothing to zero: the weight the forward saved is untouched
    loss.backward()
    assert (layer.weight.grad[~layer.dense_mask()] == 0).all()


@torch.no_grad()
def test_conv_initialized_after_pruning_computes_sparse():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    random_prune(model, 0.8, "erk", seed=1)
    nn.init.normal_(model[0].weight)
    x = torch.randn(2, 3, 8, 8)
    keep = model[0].weight_mask
    want = nn.functional.conv2d(x, model[0].weight * keep, model[0].bias)
    torch.testing.assert_close(model[0](x), want)
    assert (model.state_dict()["0.weight"][~keep] == 0).all()


def tiny_llama_config():
    from ember.models import CONFIGS

    return CONFIGS["debug"].replace(dim=64, n_layers=2, n_heads=4, ffn_hidden=96, max_seq_len=32, tie_embeddings=False)


def test_llama_pruned_on_meta_initialized_then_exported(tmp_path):
    """The trainer's order, by hand: meta model, prune, to_empty, init_weights, then to_hf: the
    Hugging Face model has zeros where the masks are and ember's logits."""
    transformers = pytest.importorskip("transformers")
    from ember.models import Llama, to_hf

    with torch.device("meta"):
        model = Llama(tiny_llama_config())
    random_prune(model.layers, 0.5, "erk", seed=3)
    model.to_empty(device="cpu").init_weights(seed=7)
    tokens = torch.randint(0, 257, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(tokens)
    to_hf(model, tmp_path / "out")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        got = back(tokens).logits
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    layers = {n: m for n, m in model.layers.named_modules() if isinstance(m, SparseLinear)}
    hf = dict(back.named_parameters())
    for name, m in layers.items():
        i, rest = name.split(".", 1)
        hf_name = {
            "attention.wq": "self_attn.q_proj",
            "attention.wk": "self_attn.k_proj",
            "attention.wv": "self_attn.v_proj",
            "attention.wo": "self_attn.o_proj",
            "feed_forward.w1": "mlp.gate_proj",
            "feed_forward.w2": "mlp.down_proj",
            "feed_forward.w3": "mlp.up_proj",
        }[rest]
        w = hf[f"model.layers.{i}.{hf_name}.weight"]
        assert (w[~m.dense_mask()] == 0).all()
        assert math.isclose((w != 0).float().mean().item(), m.density(), abs_tol=1e-6)


def test_hf_model_initialized_after_patching_saves_and_unpatches_zeros(tmp_path):
    transformers = pytest.importorskip("transformers")
    from ember.patch import apply_ember, unpatch

    from tests.patch.tiny_models import tiny_llama

    model = tiny_llama().eval()
    apply_ember(model, sparsity=dict(target=0.5, seed=0))
    with torch.no_grad():
        model.apply(model._init_weights)  # a user re-initializing after patching
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        want = model(ids).logits
    masks = {n: m.dense_mask() for n, m in model.named_modules() if isinstance(m, SparseLinear)}
    model.save_pretrained(tmp_path / "saved")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, want)
    unpatch(model)
    for name, keep in masks.items():
        plain = model.get_submodule(name)
        assert type(plain) is nn.Linear and (plain.weight[~keep] == 0).all()
        assert (back.get_submodule(name).weight[~keep] == 0).all()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, want)


def test_pruned_conv_copied_or_pickled_still_masks_its_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    random_prune(model, 0.8, "erk", seed=1)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    for m in (model, copy.deepcopy(model), torch.load(buf, weights_only=False)):
        m(torch.randn(2, 3, 8, 8)).sum().backward()
        m(torch.randn(2, 3, 8, 8)).sum().backward()
        conv = m[0]
        assert conv.weight.grad.abs().sum() > 0 and (conv.weight.grad[~conv.weight_mask] == 0).all()
        assert len(conv.weight._backward_hooks) == 1  # one hook, however many forwards


def test_a_mask_without_values_is_refused_at_to_empty():
    """A mask buffer assigned on the meta device (a meta state dict loaded with assign=True) has
    no values to materialize: to_empty says so rather than hand out uninitialized memory."""
    layer = SparseLinear(32, 16)
    with torch.device("meta"):
        meta = SparseLinear(32, 16)
    layer.load_state_dict(meta.state_dict(), assign=True)
    with pytest.raises(RuntimeError, match="SparseLinear: the mask is on the meta device and its values are unknown"):
        layer.to_empty(device="cpu")
