"""ember.patch on tiny, randomly initialized transformers causal LMs (no download): for each model
type the same loss (aux loss of MoE models, soft-capping, logit scaling included) and gradients
patched and unpatched, no N×V logits while training, eval and generate untouched, token weights,
num_items_in_batch, class patching, unpatch, refusals with their reason."""

import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

transformers = pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).parent))

import tiny_models  # noqa: E402
from tiny_models import VOCAB, loss_and_grads, tiny_model  # noqa: E402

import ember  # noqa: E402
from ember.patch import apply_ember, apply_ember_to_llama, refused, supported, unpatch  # noqa: E402

# the list, by config.model_type (Gemma 3 text-only is gemma3_text)
NAMED = [
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen2_moe",
    "qwen3",
    "qwen3_moe",
    "gemma",
    "gemma2",
    "gemma3_text",
    "phi3",
    "olmo2",
    "granite",
    "cohere",
    "starcoder2",
    "smollm3",
    "glm4",
]
MOE = {"mixtral", "qwen2_moe", "qwen3_moe"}
NAMED_HERE = [t for t in NAMED if t in transformers.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES]


def batch(seed=1):
    return tiny_models.batch(seed, b=3, t=17, ignored=5)


def assert_grads_close(got, want):
    assert got.keys() == want.keys()
    top = max(g.abs().max().item() for g in want.values())
    for n in want:  # fp32: 1e-3 relative to the tensor's largest entry (1e-6 of the model's for ~0 ones)
        err = (got[n] - want[n]).abs().max().item()
        assert err <= 1e-3 * max(want[n].abs().max().item(), 1e-3 * top), (n, err)


class LargestOutput(TorchDispatchMode):
    """The largest tensor (elements) any op produced whose last dimension is the vocabulary."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[-1] == VOCAB:
                self.largest = max(self.largest, t.numel())
        return out


def test_supported_is_detected_and_covers_the_named_models():
    types = supported()
    assert set(NAMED_HERE) <= set(types), sorted(set(NAMED_HERE) - set(types))
    reasons = refused()
    assert not set(types) & set(reasons)
    assert "multimodal" in reasons["gemma3"]  # Gemma3ForConditionalGeneration (vision tower)
    assert "not an nn.Linear" in reasons["roberta"]  # an MLM head, no plain projection
    assert "loss it does not recognize" in reasons["bamba"]  # adds a z-loss over every position


@pytest.mark.parametrize("model_type", NAMED_HERE)
def test_same_loss_and_gradients_no_logits_and_eval_untouched(model_type):
    model = tiny_model(model_type).train()
    ids, labels = batch()
    ref, ref_grads = loss_and_grads(model, ids, labels)
    n_items = torch.tensor(40)
    ref_n = model(input_ids=ids, labels=labels, num_items_in_batch=n_items).loss.detach()
    if model_type in MOE:  # the aux loss is active, so equal losses include it
        assert ref.aux_loss is not None and ref.aux_loss.item() > 0
    model.eval()
    with torch.no_grad():
        eval_logits = model(input_ids=ids).logits
        gen = model.generate(ids[:1, :5], max_new_tokens=4, do_sample=False)
    model.train()

    changes = apply_ember(model)
    assert changes and "linear_cross_entropy" in changes[0]
    with LargestOutput() as seen:
        got, grads = loss_and_grads(model, ids, labels)
    assert got.logits is None and got[0] is got.loss  # the loss first, as transformers orders it
    assert seen.largest < ids.numel() * VOCAB  # never the (tokens × vocabulary) logits
    torch.testing.assert_close(got.loss, ref.loss, rtol=1e-4, atol=0)
    assert_grads_close(grads, ref_grads)
    torch.testing.assert_close(
        model(input_ids=ids, labels=labels, num_items_in_batch=n_items).loss, ref_n, rtol=1e-4, atol=0
    )

    model.eval()
    with torch.no_grad():  # eval and generation take the original path
        torch.testing.assert_close(model(input_ids=ids).logits, eval_logits, rtol=0, atol=0)
        assert torch.equal(model.generate(ids[:1, :5], max_new_tokens=4, do_sample=False), gen)
    assert unpatch(model) and "forward" not in model.__dict__
    model.train()
    with LargestOutput() as seen:
        assert model(input_ids=ids, labels=labels).logits is not None
    assert seen.largest >= ids.numel() * VOCAB  # the check above can fail: the plain model builds them


@pytest.mark.parametrize("model_type", ["llama", "gemma2", "granite", "cohere"])
def test_token_weights_weight_the_loss(model_type):
    """Σ w·CE / #tokens against the model's own (soft-capped, scaled) logits."""
    model = tiny_model(model_type).train()
    ids, labels = batch()
    w = torch.rand(ids.shape, generator=torch.Generator().manual_seed(2)) + 0.1
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    apply_ember(model, token_weights=True)
    y = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:].reshape(-1)
    ww = torch.nn.functional.pad(w, (0, 1))[:, 1:].reshape(-1)
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), y, reduction="none", ignore_index=-100)
    got = model(input_ids=ids, labels=labels, token_weights=w).loss
    torch.testing.assert_close(got, (ce * ww).sum() / (y != -100).sum(), rtol=1e-5, atol=0)
    with pytest.warns(UserWarning, match="token_weights are not applied outside training"):
        got = model.eval()(input_ids=ids, labels=labels, token_weights=w).loss  # unweighted, as a validation loss
    torch.testing.assert_close(got, ce.sum() / (y != -100).sum(), rtol=1e-5, atol=0)


def test_labels_already_shifted_model():
    """bart's decoder-only LM scores position p against labels[p] (no shift, mean over tokens)."""
    if "bart" not in supported():
        pytest.skip("no BartForCausalLM in this transformers")
    model = tiny_model("bart").train()
    ids, labels = batch()
    ref, ref_grads = loss_and_grads(model, ids, labels)
    assert "labels already shifted" in apply_ember(model)[0]
    got, grads = loss_and_grads(model, ids, labels)
    torch.testing.assert_close(got.loss, ref.loss, rtol=1e-4, atol=0)
    assert_grads_close(grads, ref_grads)


def test_class_patch_all_classes_and_unpatch():
    forwards = {c: c.forward for c in (transformers.LlamaForCausalLM, transformers.Gemma2ForCausalLM)}
    changes = apply_ember()
    try:
        assert len(changes) == len(
            {transformers.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[t] for t in supported()}
        )
        assert any(c.startswith("Gemma2ForCausalLM.forward") and "soft-capped" in c for c in changes)
        ids, labels = batch()
        model = tiny_model("llama").train()
        assert model(input_ids=ids, labels=labels).logits is None
        assert apply_ember(transformers.LlamaForCausalLM) == []  # already patched: nothing to do
    finally:
        restored = unpatch()
    assert len(restored) == len(changes)
    assert all(c.forward is f for c, f in forwards.items())
    assert tiny_model("llama").train()(input_ids=ids, labels=labels).logits is not None
    assert apply_ember(transformers.LlamaForCausalLM)[0].startswith("LlamaForCausalLM.forward")
    assert unpatch(transformers.LlamaForCausalLM) == ["LlamaForCausalLM.forward restored"]
    assert transformers.LlamaForCausalLM.forward is forwards[transformers.LlamaForCausalLM]


def test_sparsity_changes_exactly_the_decoder_linears_and_trains_with_apollo():
    from ember.sparse import SparseLinear

    model = tiny_model("llama").train()
    linears = {n for n, m in model.named_modules() if type(m) is torch.nn.Linear and n.startswith("model.layers.")}
    changes = apply_ember_to_llama(model, sparsity=dict(target=0.5, method="erk", seed=0))  # the alias
    sparse = {n for n, m in model.named_modules() if isinstance(m, SparseLinear)}
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


@pytest.mark.parametrize(
    "model_type,recipe", [("llama", "tensorwise"), ("llama", "rowwise"), ("llama", "blockwise"), ("mixtral", "rowwise")]
)
def test_float8_converts_the_decoder_linears(model_type, recipe):
    from ember.float8 import Float8Linear

    model = tiny_model(model_type).train()
    ids, labels = batch()
    ref, ref_grads = loss_and_grads(model, ids, labels)
    experts = model.config.num_local_experts if model_type == "mixtral" else None
    linears = {
        n
        for n, m in model.named_modules()
        if type(m) is torch.nn.Linear and n.startswith("model.layers.") and m.out_features != experts
    }  # MoE routers stay in high precision
    assert linears
    changes = apply_ember(model, float8=recipe)
    converted = {n for n, m in model.named_modules() if isinstance(m, Float8Linear)}
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
    assert loss_and_grads(model.train(), ids, labels)[0].loss.item() == pytest.approx(ref.loss.item(), rel=1e-5)


def test_errors_change_nothing():
    with pytest.raises(TypeError, match="expected a transformers causal LM"):
        apply_ember(object())
    with pytest.raises(TypeError, match="RobertaForCausalLM cannot be patched: .*not an nn.Linear"):
        apply_ember(transformers.RobertaForCausalLM)
    assert "__ember_patched__" not in vars(transformers.RobertaForCausalLM.forward)
    with pytest.raises(TypeError, match="Gemma3ForConditionalGeneration cannot be patched: .*multimodal"):
        apply_ember(transformers.Gemma3ForConditionalGeneration)
    with pytest.raises(ValueError, match="float8 converts a model's Linear layers: pass the model instance"):
        apply_ember(float8="rowwise")
    model = tiny_model("llama")
    for kw, msg in [
        (dict(float8="rowwise", sparsity=dict(target=0.5)), "float8 and sparsity cannot be combined"),
        (dict(float8="delayed"), "recipe must be one of"),
        (dict(sparsity=dict(method="erk")), "sparsity needs a 'target'"),
        (dict(token_weights=True, linear_cross_entropy=False), "token_weights=True needs"),
    ]:
        with pytest.raises(ValueError, match=msg):
            apply_ember(model, **kw)
        assert "forward" not in model.__dict__
    with pytest.raises(ValueError, match="pass the model instance"):
        apply_ember(sparsity=dict(target=0.5))
