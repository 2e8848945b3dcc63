"""ember.patch on tiny, randomly initialized transformers models (no download): the same loss
and gradients patched and unpatched, generation still works, sparsity changes exactly the
decoder's Linear layers, a training step with ember.optim.Apollo, clear errors."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

import ember  # noqa: E402
from ember.patch import apply_ember_to_llama, unpatch  # noqa: E402
from ember.sparse import SparseLinear  # noqa: E402


def tiny(cls_name="LlamaForCausalLM", config_name="LlamaConfig", seed=0):
    torch.manual_seed(seed)
    cfg = getattr(transformers, config_name)(vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return getattr(transformers, cls_name)(cfg)


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 101, (3, 17), generator=g)
    labels = ids.clone()
    labels[0, :5] = -100
    return ids, labels


def loss_and_grads(model, ids, labels, **kw):
    model.zero_grad()
    out = model(input_ids=ids, labels=labels, **kw)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("names", [("LlamaForCausalLM", "LlamaConfig"), ("Qwen2ForCausalLM", "Qwen2Config"),
                                   ("MistralForCausalLM", "MistralConfig"), ("Qwen3ForCausalLM", "Qwen3Config")])
def test_same_loss_and_gradients(names):
    if not hasattr(transformers, names[0]):
        pytest.skip(f"transformers {transformers.__version__} has no {names[0]}")
    model = tiny(*names).train()
    ids, labels = batch()
    ref, ref_grads = loss_and_grads(model, ids, labels)
    changes = apply_ember_to_llama(model)
    assert changes and "linear_cross_entropy" in changes[0]
    got, grads = loss_and_grads(model, ids, labels)
    assert got.logits is None  # no logits while training
    torch.testing.assert_close(got.loss, ref.loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for n in grads:  # fp32: both are fp32 softmax/GEMM; 1e-5 relative to the largest entry
        torch.testing.assert_close(grads[n], ref_grads[n], rtol=1e-4, atol=1e-5 * ref_grads[n].abs().max().item())
    model.eval()
    with torch.no_grad():  # eval and generation take the original path
        assert model(input_ids=ids).logits.shape == (3, 17, 101)
        gen = model.generate(ids[:1, :5], max_new_tokens=4, do_sample=False)
    assert gen.shape == (1, 9)
    assert unpatch(model) and "forward" not in model.__dict__


def test_class_patch_and_unpatch():
    changes = apply_ember_to_llama()
    try:
        assert any(c.startswith("LlamaForCausalLM.forward") for c in changes)
        model = tiny().train()
        ids, labels = batch()
        assert model(input_ids=ids, labels=labels).logits is None
    finally:
        restored = unpatch()
    assert any("LlamaForCausalLM" in r for r in restored)
    assert tiny().train()(input_ids=ids, labels=labels).logits is not None


def test_token_weights_and_num_items():
    model = tiny().train()
    ids, labels = batch()
    w = torch.rand(3, 17)
    apply_ember_to_llama(model, token_weights=True)
    loss = model(input_ids=ids, labels=labels, token_weights=w).loss
    with torch.no_grad():
        logits = model.lm_head(model.model(input_ids=ids).last_hidden_state).float()
    y = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    ww = torch.nn.functional.pad(w, (0, 1))[:, 1:]
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 101), y.reshape(-1), reduction="none", ignore_index=-100)
    torch.testing.assert_close(loss, (ce * ww.reshape(-1)).sum() / (y != -100).sum(), rtol=1e-5, atol=1e-6)
    n = torch.tensor(40)
    torch.testing.assert_close(model(input_ids=ids, labels=labels, num_items_in_batch=n).loss,
                               torch.nn.functional.cross_entropy(logits.reshape(-1, 101), y.reshape(-1),
                                                                 reduction="sum", ignore_index=-100) / 40, rtol=1e-5, atol=1e-6)


def test_sparsity_changes_exactly_the_decoder_linears_and_trains_with_apollo():
    model = tiny().train()
    changes = apply_ember_to_llama(model, sparsity=dict(target=0.5, method="erk", seed=0))
    sparse = {n for n, m in model.named_modules() if isinstance(m, SparseLinear)}
    linears = {n for n, m in tiny().named_modules() if isinstance(m, torch.nn.Linear) and n.startswith("model.layers.")}
    assert sparse == linears and not isinstance(model.lm_head, SparseLinear)
    assert len([c for c in changes if "SparseLinear" in c]) == len(linears)
    opt = ember.optim.Apollo(ember.optim.apollo_param_groups(model, rank=4, lr=1e-2))
    ids, labels = batch()
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for n, m in model.named_modules():
        if isinstance(m, SparseLinear):
            assert (m.weight[~m.dense_mask()] == 0).all()
    unpatch(model)
    assert not any(isinstance(m, SparseLinear) for m in model.modules())


@pytest.mark.parametrize("recipe", ["tensorwise", "rowwise", "blockwise"])
def test_float8_converts_the_decoder_linears(recipe):
    from ember.float8 import Float8Linear

    model = tiny().train()
    ids, labels = batch()
    ref, ref_grads = loss_and_grads(model, ids, labels)
    changes = apply_ember_to_llama(model, float8=recipe)
    converted = {n for n, m in model.named_modules() if isinstance(m, Float8Linear)}
    linears = {f"model.layers.{i}.{p}" for i in range(2) for p in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                                   "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                                                                   "mlp.down_proj")}
    assert converted == linears and type(model.lm_head) is torch.nn.Linear
    assert sum("Float8Linear" in c for c in changes) == len(linears)
    got, grads = loss_and_grads(model, ids, labels)
    assert abs(got.loss.item() - ref.loss.item()) < 0.01 * ref.loss.item()
    assert grads.keys() == ref_grads.keys()
    model.eval()
    with torch.no_grad():
        assert model.generate(ids[:1, :5], max_new_tokens=4, do_sample=False).shape == (1, 9)
    unpatch(model)
    assert not any(isinstance(m, Float8Linear) for m in model.modules())
    assert loss_and_grads(model, ids, labels)[0].loss.item() == pytest.approx(ref.loss.item(), rel=1e-5)


def test_errors():
    with pytest.raises(TypeError, match="supported: LlamaForCausalLM"):
        apply_ember_to_llama(torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match="float8 converts a model's Linear layers: pass the model instance"):
        apply_ember_to_llama(float8="rowwise")
    with pytest.raises(ValueError, match="float8 and sparsity cannot be combined"):
        apply_ember_to_llama(tiny(), float8="rowwise", sparsity=dict(target=0.5))
    with pytest.raises(ValueError, match="recipe must be one of"):
        apply_ember_to_llama(tiny(), float8="delayed")
    with pytest.raises(ValueError, match="pass the model instance"):
        apply_ember_to_llama(sparsity=dict(target=0.5))
