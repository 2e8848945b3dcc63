"""`apply_ember` under the ways people misuse a transformers model in training: a head that is a
subclass of nn.Linear with its own forward, `logits_to_keep` in training, labels or token weights
of the wrong shape, `shift_labels` alone, a bad `sparsity` dict, a second conversion, `unpatch` of
something that is no module, and the inputs that must keep the unpatched loss (left padding,
inputs_embeds, no_grad, a resized or untied head, bf16). Each gives the unpatched model's loss and
gradients, or a clear refusal that changes nothing."""

import warnings

import pytest
import torch
from torch import nn

from tests.patch.tiny_models import VOCAB, assert_same, batch, loss_and_grads, tiny_model

transformers = pytest.importorskip("transformers")

from ember.float8 import Float8Linear  # noqa: E402
from ember.patch import apply_ember, unpatch  # noqa: E402
from ember.sparse import SparseLinear  # noqa: E402


# ---- the head ------------------------------------------------------------------------------------------
class _DoubledHead(nn.Linear):
    """A subclass of nn.Linear with a forward of its own (as a quantized or adapter Linear has)."""

    def forward(self, x):
        return super().forward(x) * 2.0


def test_a_linear_subclass_with_its_own_forward_takes_the_unfused_path():
    """The fused loss read the head's weight and skipped its forward: 4.620 where the model gives
    4.637, gradients off by half, without a word. Now that call computes the logits, with a warning."""
    model = tiny_model("llama").train()
    head = _DoubledHead(32, VOCAB, bias=False)
    head.weight = model.lm_head.weight
    model.lm_head = head
    ids, labels = batch()
    ref = loss_and_grads(model, input_ids=ids, labels=labels)
    apply_ember(model)
    with pytest.warns(UserWarning, match=r"lm_head has a forward of its own \(_DoubledHead\).*unfused path"):
        got = loss_and_grads(model, input_ids=ids, labels=labels)
    assert_same(got, ref)
    assert got[0].logits is not None


def test_a_parametrized_head_keeps_the_fused_loss():
    """torch's parametrizations subclass the head's class but keep nn.Linear's forward: fused."""
    model = tiny_model("llama").train()
    nn.utils.parametrize.register_parametrization(model.lm_head, "weight", _Scaled())
    ids, labels = batch()
    ref = loss_and_grads(model, input_ids=ids, labels=labels)
    apply_ember(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = loss_and_grads(model, input_ids=ids, labels=labels)
    assert got[0].logits is None
    assert_same(got, ref)


class _Scaled(nn.Module):
    def forward(self, w):
        return 1.5 * w


# ---- labels, logits_to_keep, token weights ---------------------------------------------------------------
def test_logits_to_keep_in_training_scores_the_positions_kept():
    """The patch set logits_to_keep=0 over the caller's value: a loss over every position where the
    model scores only the last k. Now the kept positions are scored against shift_labels of that
    length, as the unpatched model does."""
    model = tiny_model("llama").train()
    ids, labels = batch()
    shift = nn.functional.pad(labels, (0, 1), value=-100)[:, -4:].contiguous()
    kw = dict(input_ids=ids, labels=labels, shift_labels=shift, logits_to_keep=4)
    ref = loss_and_grads(model, **kw)
    apply_ember(model)
    got = loss_and_grads(model, **kw)
    assert got[0].logits is None
    assert_same(got, ref)
    with pytest.raises(ValueError, match=r"labels of shape \(2, 11\).*2 x 1 positions.*logits_to_keep=1"):
        model(input_ids=ids, labels=labels, logits_to_keep=1)


@pytest.mark.parametrize("arg", ["labels", "token_weights"])
def test_a_wrong_shape_is_named(arg):
    """Labels or token weights one token short got `ember.linear_cross_entropy_forward: target
    (or weight) must have shape (22)`: names the user never passed."""
    model = tiny_model("llama").train()
    ids, labels = batch()
    apply_ember(model, token_weights=True)
    kw = dict(labels=labels, token_weights=torch.ones(labels.shape))
    kw[arg] = kw[arg][:, :-1]
    with pytest.raises(ValueError, match=rf"ember.patch: {arg} of shape \(2, 10\) .* 2 x 11 positions"):
        model(input_ids=ids, **kw)


def test_token_weights_that_require_grad_are_refused():
    """The fused loss takes token weights as constants: weights computed in the graph (learned, or
    from a model run with gradients) got no gradient, silently."""
    model = tiny_model("llama").train()
    ids, labels = batch()
    apply_ember(model, token_weights=True)
    w = torch.rand(labels.shape, requires_grad=True)
    with pytest.raises(ValueError, match=r"token_weights require grad.*constants.*token_weights.detach\(\)"):
        model(input_ids=ids, labels=labels, token_weights=w)
    with torch.no_grad():  # no graph: nothing is lost
        model(input_ids=ids, labels=labels, token_weights=w)
    model(input_ids=ids, labels=labels, token_weights=w.detach()).loss.backward()


def test_shift_labels_without_labels_give_no_loss_as_the_model():
    """The model computes a loss only `if labels is not None`: the patch computed one from
    shift_labels alone (and dropped the logits)."""
    model = tiny_model("llama").train()
    ids, labels = batch()
    shift = nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    apply_ember(model)
    out = model(input_ids=ids, shift_labels=shift)
    assert out.loss is None and out.logits.shape == (*ids.shape, VOCAB)


def _left_padded():
    ids, labels = batch()
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    labels[1, :3] = -100
    return dict(input_ids=ids, labels=labels, attention_mask=mask)


def _resized(model):
    model.resize_token_embeddings(VOCAB + 7, mean_resizing=False)


def _untied(model):
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach() * 1.5)


_IDS, _LABELS = batch()
CASES = {
    "left padding": (None, _left_padded),
    "inputs_embeds": (None, lambda: dict(inputs_embeds=torch.randn(2, 11, 32), labels=_LABELS)),
    "num_items_in_batch tensor": (
        None,
        lambda: dict(input_ids=_IDS, labels=_LABELS, num_items_in_batch=torch.tensor(29)),
    ),
    "use_cache, hidden states": (
        None,
        lambda: dict(input_ids=_IDS, labels=_LABELS, use_cache=True, output_hidden_states=True),
    ),
    "resized after patching": (_resized, lambda: dict(input_ids=_IDS, labels=_LABELS.masked_fill(_LABELS == 5, 104))),
    "untied after patching": (_untied, lambda: dict(input_ids=_IDS, labels=_LABELS)),
}


@pytest.mark.parametrize("case", CASES)
def test_inputs_and_head_changes_keep_the_unpatched_loss(case):
    change, make = CASES[case]
    model = tiny_model("llama", tie_word_embeddings=True).train()
    kw = make()
    apply_ember(model)
    if change is not None:
        change(model)
    got = loss_and_grads(model, **kw)
    assert got[0].logits is None
    unpatch(model)
    assert_same(got, loss_and_grads(model, **kw))


def test_no_grad_and_bf16_keep_the_loss():
    model = tiny_model("llama").train()
    ids, labels = batch()
    with torch.no_grad():
        ref = model(input_ids=ids, labels=labels).loss
        apply_ember(model)
        got = model(input_ids=ids, labels=labels).loss
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=0)
    model.to(torch.bfloat16)
    got = model(input_ids=ids, labels=labels).loss
    unpatch(model)
    ref = model(input_ids=ids, labels=labels).loss  # bf16 logits: rounding of the unfused path
    torch.testing.assert_close(got, ref, rtol=2e-3, atol=0)


class _OpDtypes(torch.utils._python_dispatch.TorchDispatchMode):
    """The dtypes of the tensor arguments each ember op was called with."""

    def __init__(self):
        super().__init__()
        self.seen = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "ember":
            self.seen[func.__name__] = [a.dtype for a in args[:2] if isinstance(a, torch.Tensor)]
        return func(*args, **(kwargs or {}))


def test_under_autocast_the_heads_product_runs_in_the_autocast_dtype():
    """transformers.Trainer(bf16=True) trains fp32 weights under autocast: the unpatched head's
    product is a bf16 GEMM, the fused one ran in fp32 (the weight's dtype), the largest GEMM of a
    small model several times slower on a GPU. Now it takes the autocast dtype too, and the loss
    stays within bf16 rounding of the unpatched one."""
    model = tiny_model("llama").train()
    ids, labels = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = loss_and_grads(model, input_ids=ids, labels=labels)
        apply_ember(model)
        with _OpDtypes() as ops:
            got = loss_and_grads(model, input_ids=ids, labels=labels)
    assert ops.seen["linear_cross_entropy_forward.default"] == [torch.bfloat16, torch.bfloat16]
    torch.testing.assert_close(got[0].loss, ref[0].loss, rtol=2e-3, atol=0)
    assert all(g.dtype == torch.float32 for g in got[1].values())
    with _OpDtypes() as ops:  # no autocast: the weight's dtype
        loss_and_grads(model, input_ids=ids, labels=labels)
    assert ops.seen["linear_cross_entropy_forward.default"] == [torch.float32, torch.float32]


# ---- conversions ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sparsity, error, message",
    [
        (dict(target=0.5, methd="erk"), TypeError, r"sparsity has unknown key 'methd'.*\('target', 'method'"),
        (0.5, TypeError, r"sparsity must be a dict .*got float"),
        (dict(target=1.5), ValueError, r"sparsity must be in \[0, 1\)"),
        (dict(target=0.5, method="magnitude"), ValueError, "method must be one of"),
    ],
)
def test_a_bad_sparsity_changes_nothing(sparsity, error, message):
    """The forward was patched before random_prune refused the dict: a half-patched model."""
    model = tiny_model("llama").train()
    with pytest.raises(error, match=message):
        apply_ember(model, sparsity=sparsity)
    assert "forward" not in vars(model)
    assert not any(isinstance(m, SparseLinear) for m in model.modules())


@pytest.mark.parametrize(
    "first, second",
    [
        (dict(float8="rowwise"), dict(sparsity=dict(target=0.5))),
        (dict(sparsity=dict(target=0.5)), dict(float8="rowwise")),
        (dict(sparsity=dict(target=0.5)), dict(sparsity=dict(target=0.5, seed=3))),
    ],
)
def test_a_second_conversion_is_refused(first, second):
    """float8 then sparsity made the Float8Linear layers SparseLinear (fp8 gone); sparsity then
    float8 did nothing and said nothing; sparsity twice drew new masks over the old ones."""
    model = tiny_model("llama").train()
    apply_ember(model, **first)
    before = {n: (type(m), getattr(m, "mask", None)) for n, m in model.named_modules()}
    with pytest.raises(ValueError, match=r"already has (SparseLinear|Float8Linear) layers.*unpatch\(model\) first"):
        apply_ember(model, **second)
    after = {n: (type(m), getattr(m, "mask", None)) for n, m in model.named_modules()}
    assert before.keys() == after.keys()
    for n, (t, mask) in before.items():
        assert after[n][0] is t and (mask is None or torch.equal(after[n][1], mask)), n
    assert any(isinstance(m, (SparseLinear, Float8Linear)) for m in model.modules())


def test_pruning_a_linear_subclass_with_its_own_forward_is_refused():
    """random_prune refuses it (a SparseLinear would drop its forward); apply_ember converts the
    layers before it patches the forward, so that refusal leaves nothing patched either."""
    model = tiny_model("llama").train()
    mlp = model.model.layers[0].mlp
    up = _DoubledHead(32, 64, bias=False)
    up.weight = mlp.up_proj.weight
    mlp.up_proj = up
    with pytest.raises(ValueError, match=r"up_proj \(_DoubledHead\).*forward of their own"):
        apply_ember(model, sparsity=dict(target=0.5))
    assert mlp.up_proj is up and "forward" not in vars(model)
    assert not any(isinstance(m, SparseLinear) for m in model.modules())


def test_unpatch_of_something_else_says_so():
    for thing in (object(), "llama"):
        with pytest.raises(TypeError, match=r"ember.patch.unpatch: expected a model or a model class"):
            unpatch(thing)


def test_an_auto_class_is_named_with_the_way_out():
    """apply_ember(AutoModelForCausalLM) said `got type`."""
    auto = transformers.AutoModelForCausalLM
    with pytest.raises(TypeError, match=r"got the class AutoModelForCausalLM.*the class it loads"):
        apply_ember(auto)
    with pytest.raises(TypeError, match=r"got the class AutoModelForCausalLM"):
        unpatch(auto)


# ---- transformers.Trainer ------------------------------------------------------------------------------
def test_trainer_keeps_the_token_weights_column(tmp_path):
    """Trainer keeps only the batch keys the model's forward names: the patched forward showed the
    original signature, so its collator dropped `token_weights` and the run trained unweighted."""
    pytest.importorskip("accelerate")
    model = tiny_model("llama")
    apply_ember(model, token_weights=True)
    ids, labels = batch()
    rows = [dict(input_ids=i, labels=y, token_weights=torch.rand(11)) for i, y in zip(ids, labels)]
    args = transformers.TrainingArguments(str(tmp_path), per_device_train_batch_size=2, report_to=[], use_cpu=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows)
    got = next(iter(trainer.get_train_dataloader()))
    assert set(got) == {"input_ids", "labels", "token_weights"}


def test_evaluation_on_rows_with_token_weights_gives_the_models_loss(tmp_path):
    """Trainer evaluates on the same rows, token_weights included (now that it keeps them): the
    eval loss is the model's own, unweighted, as ember train's validation loss, with one warning."""
    pytest.importorskip("accelerate")
    model = tiny_model("llama")
    ids, labels = batch()
    rows = [dict(input_ids=i, labels=y) for i, y in zip(ids, labels)]
    args = transformers.TrainingArguments(str(tmp_path), per_device_eval_batch_size=2, report_to=[], use_cpu=True)
    want = transformers.Trainer(model=model, args=args, eval_dataset=rows).evaluate()["eval_loss"]
    apply_ember(model, token_weights=True)
    weighted = [dict(row, token_weights=torch.rand(11)) for row in rows]
    trainer = transformers.Trainer(model=model, args=args, eval_dataset=weighted)
    with pytest.warns(UserWarning, match="token_weights are not applied outside training"):
        assert trainer.evaluate()["eval_loss"] == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="token_weights apply to the training loss: labels"):
        model.train()(input_ids=ids, token_weights=torch.ones(2, 11))


def test_unpatching_a_subclass_leaves_it_inheriting_its_forward():
    """A user's subclass that inherits the forward: unpatch set the parent's forward on the subclass
    itself, so a later patch of the parent (or anyone's patch of it) no longer reached it."""

    class MyLlama(transformers.LlamaForCausalLM):
        pass

    assert apply_ember(MyLlama) and unpatch(MyLlama) == ["MyLlama.forward restored"]
    assert "forward" not in vars(MyLlama)
    apply_ember(transformers.LlamaForCausalLM)
    try:
        model = MyLlama(tiny_model("llama").config).train()
        ids, labels = batch()
        assert model(input_ids=ids, labels=labels).logits is None
    finally:
        unpatch(transformers.LlamaForCausalLM)


# ---- a forward wrapped on the instance (accelerate's prepare with mixed precision) ----------------------
def _prepare_bf16(model):
    """What accelerate's Accelerator.prepare does to a model for mixed_precision="bf16" (prepare_model):
    its forward wrapped in autocast and an fp32 cast of the outputs, set on the instance."""
    from types import MethodType

    from accelerate.utils import convert_outputs_to_fp32

    model._original_forward = model.forward
    forward = torch.autocast("cpu", dtype=torch.bfloat16)(model.forward.__func__)
    model.forward = MethodType(convert_outputs_to_fp32(forward), model)


def _autocast_seen(model):
    seen = []
    model.model.layers[0].register_forward_pre_hook(lambda m, a: seen.append(torch.is_autocast_enabled("cpu")))
    return seen


def test_patching_after_accelerate_prepare_is_refused():
    """apply_ember replaced the instance forward that prepare had set: the run went on without
    autocast (fp32, silently), and unpatch then deleted the patch and the autocast with it."""
    pytest.importorskip("accelerate")
    model = tiny_model("llama").train()
    _prepare_bf16(model)
    wrapper = model.forward
    with pytest.raises(TypeError, match=r"LlamaForCausalLM.forward is set on the instance by other code.*before"):
        apply_ember(model)
    assert model.forward == wrapper
    seen = _autocast_seen(model)
    ids, labels = batch()
    assert model(input_ids=ids, labels=labels).logits is not None and seen == [True]


def test_unpatch_under_accelerates_wrapper_says_how_to_take_it_off():
    """Patched, then prepared: unpatch found no forward of its own, returned [] and left the fused
    loss in place. Now it refuses, naming the way out; patching again is a no-op."""
    pytest.importorskip("accelerate")
    from accelerate.utils import extract_model_from_parallel

    model = tiny_model("llama").train()
    apply_ember(model)
    _prepare_bf16(model)
    seen = _autocast_seen(model)
    ids, labels = batch()
    assert model(input_ids=ids, labels=labels).logits is None and seen == [True]
    assert apply_ember(model) == []
    with pytest.raises(TypeError, match=r"wraps the patched forward.*unwrap_model\(model, keep_fp32_wrapper=False\)"):
        unpatch(model)
    extract_model_from_parallel(model, keep_fp32_wrapper=False)  # what accelerator.unwrap_model does
    unpatch(model)
    assert model(input_ids=ids, labels=labels).logits is not None


class _PeftLike(nn.Module):
    """What peft's get_peft_model returns: a wrapper whose forward takes no logits_to_keep, with the
    transformers model behind get_base_model()."""

    def __init__(self, model):
        super().__init__()
        self.base_model = nn.Module()
        self.base_model.model = model

    def get_base_model(self):
        return self.base_model.model

    def forward(self, input_ids=None, labels=None, **kwargs):
        return self.base_model.model(input_ids=input_ids, labels=labels, **kwargs)


def test_a_peft_model_is_refused_naming_the_model_inside():
    """The refusal said only that _PeftLike's forward takes no logits_to_keep; patching the model
    inside (before or after wrapping) is the way, and the wrapper then trains with the fused loss."""
    model = tiny_model("llama").train()
    wrapped = _PeftLike(model)
    with pytest.raises(
        TypeError, match=r"wraps a LlamaForCausalLM: patch that one, apply_ember\(model.get_base_model\(\)\)"
    ):
        apply_ember(wrapped)
    apply_ember(wrapped.get_base_model())
    ids, labels = batch()
    assert wrapped(input_ids=ids, labels=labels).logits is None


def test_a_tensor_parallel_head_takes_the_unfused_path(tmp_path):
    """parallelize_module's hooks redistribute the head's input and output (the logits): run around
    the fused loss, they met a DTensor weight and a plain hidden state, and the call crashed
    ("got mixed torch.Tensor and DTensor"). Now the call computes the logits, with one warning."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, parallelize_module

    if dist.is_initialized():
        pytest.skip("a process group exists already")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model = tiny_model("llama").train()
        plan = {"lm_head": ColwiseParallel(output_layouts=Replicate())}
        parallelize_module(model, init_device_mesh("cpu", (1,)), plan)
        ids, labels = batch()
        ref = loss_and_grads(model, input_ids=ids, labels=labels)
        apply_ember(model)
        with pytest.warns(UserWarning, match="tensor parallel"):
            got = loss_and_grads(model, input_ids=ids, labels=labels)
        assert_same(got, ref)
    finally:
        dist.destroy_process_group()
