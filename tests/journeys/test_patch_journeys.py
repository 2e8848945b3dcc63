"""`apply_ember` under the ways people train a transformers model: the head offloaded by accelerate
(cpu_offload, disk_offload, from_pretrained with a device_map), torch.compile, hooks on the head,
gradient checkpointing, a second derivative, `return_dict=False`, and the orders and repeats in
which people patch, offload and unpatch. Each gives the unpatched model's loss and gradients, or
a clear refusal."""

import warnings

import pytest
import torch

from tests.patch.tiny_models import VOCAB, assert_same, batch, loss_and_grads, tiny_model

transformers = pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate")

from ember.patch import apply_ember, unpatch  # noqa: E402


# ---- accelerate offload ------------------------------------------------------------------------------
@pytest.mark.parametrize("offload", ["cpu", "disk"])
def test_offloaded_head_trains_to_the_unpatched_loss(offload, tmp_path):
    """The head's weight lives on the meta device between calls; accelerate's hook loads it for the
    call. The patched loss once read the meta weight (-7e29 where the unpatched loss was 4.58)."""
    model = tiny_model("llama").train()
    ids, labels = batch()
    if offload == "cpu":
        accelerate.cpu_offload(model.lm_head, execution_device="cpu")
    else:
        accelerate.disk_offload(model.lm_head, str(tmp_path), execution_device="cpu")
    assert model.lm_head.weight.device.type == "meta"
    ref = loss_and_grads(model, ids, labels)
    apply_ember(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # accelerate's hook is no reason to leave the fused path
        got = loss_and_grads(model, ids, labels)
    assert got[0].logits is None  # the fused loss, not the fallback
    assert_same(got, ref)
    assert model.lm_head.weight.device.type == "meta"  # put back after the call


@pytest.mark.slow
def test_from_pretrained_with_the_head_on_disk(tmp_path):
    """device_map={"model": "cpu", "lm_head": "disk"}: accelerate hooks on the model and the head."""
    tiny_model("llama").save_pretrained(tmp_path / "m")
    load = dict(device_map={"model": "cpu", "lm_head": "disk"}, offload_folder=str(tmp_path / "off"))
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32, **load).train()
    assert model.lm_head.weight.device.type == "meta"
    ids, labels = batch()
    ref = loss_and_grads(model, ids, labels)
    apply_ember(model)
    got = loss_and_grads(model, ids, labels)
    assert got[0].logits is None
    assert_same(got, ref)


@pytest.mark.parametrize("order", ["patch, then offload", "offload, then patch"])
def test_patch_and_offload_in_either_order_and_unpatch_keeps_the_offload(order):
    """accelerate wraps the model's forward: the patch goes inside that wrapper, and unpatch takes
    it out without dropping the wrapper (the model stays offloaded and trains as before)."""
    model = tiny_model("llama").train()
    ids, labels = batch()
    ref = loss_and_grads(model, ids, labels)
    if order == "patch, then offload":
        apply_ember(model)
    accelerate.cpu_offload(model, execution_device="cpu")
    wrapper = model.forward
    changes = apply_ember(model)
    assert (changes == []) == (order == "patch, then offload")  # patched already, or patched now
    assert apply_ember(model) == []  # twice: nothing more
    assert model.forward is wrapper  # accelerate's hook still runs first
    got = loss_and_grads(model, ids, labels)
    assert got[0].logits is None
    torch.testing.assert_close(got[0].loss, ref[0].loss, rtol=1e-5, atol=0)
    assert unpatch(model) == ["LlamaForCausalLM instance forward restored"]
    assert unpatch(model) == []  # twice: nothing more
    assert model.forward is wrapper
    out = model(input_ids=ids, labels=labels)
    assert out.logits is not None
    torch.testing.assert_close(out.loss, ref[0].loss, rtol=1e-5, atol=0)


# ---- torch.compile -----------------------------------------------------------------------------------
def _compiled_step(model, backend, ids, labels):
    torch._dynamo.reset()
    return loss_and_grads(torch.compile(model, backend=backend, fullgraph=True), ids, labels)


@pytest.mark.slow  # 8 s for eager on a CPU
@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_compiled_patched_model_trains_as_the_compiled_plain_one(backend):
    """It once failed with AttributeError: 'Linear' object has no attribute 'forward' (the head's
    forward was set and deleted inside the traced code)."""
    model = tiny_model("llama").train()
    ids, labels = batch()
    ref = _compiled_step(model, backend, ids, labels)
    apply_ember(model)
    got = _compiled_step(model, backend, ids, labels)
    assert got[0].logits is None
    assert_same(got, ref)


@pytest.mark.slow
def test_compiled_with_inductor():
    model = tiny_model("llama").train()
    ids, labels = batch()
    ref = _compiled_step(model, "inductor", ids, labels)
    apply_ember(model)
    assert_same(_compiled_step(model, "inductor", ids, labels), ref)


# ---- hooks on the head -------------------------------------------------------------------------------
def test_a_forward_hook_on_the_head_sees_the_logits_and_warns_once():
    """The hook once received the summed loss (shape ()) in place of the logits."""
    model = tiny_model("llama").train()
    ids, labels = batch()
    ref = loss_and_grads(model, ids, labels)
    apply_ember(model)
    seen = []
    handle = model.lm_head.register_forward_hook(lambda m, args, out: seen.append(out.shape))
    with pytest.warns(UserWarning, match=r"LlamaForCausalLM.lm_head has a forward hook.*unfused") as caught:
        got = loss_and_grads(model, ids, labels)
        loss_and_grads(model, ids, labels)
    assert len([w for w in caught if "ember.patch" in str(w.message)]) == 1  # once, not per call
    assert seen == [(*ids.shape, VOCAB)] * 2
    assert_same(got, ref)
    handle.remove()
    assert model(input_ids=ids, labels=labels).logits is None  # fused again without the hook


def test_a_backward_hook_on_the_head_takes_the_unfused_path():
    model = tiny_model("llama").train()
    ids, labels = batch()
    apply_ember(model)
    grads = []
    model.lm_head.register_full_backward_hook(lambda m, gin, gout: grads.append(gout[0].shape))
    with pytest.warns(UserWarning, match="a backward hook"):
        loss_and_grads(model, ids, labels)
    assert grads == [(*ids.shape, VOCAB)]
    with pytest.raises(
        ValueError, match="token_weights need the fused loss, but LlamaForCausalLM.lm_head has a backward"
    ):
        model(input_ids=ids, labels=labels, token_weights=torch.ones(ids.shape))


def test_global_hooks_a_user_sets_take_the_unfused_path_torchs_module_tracker_does_not():
    from torch.utils.flop_counter import FlopCounterMode

    model = tiny_model("llama").train()
    ids, labels = batch()
    apply_ember(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with FlopCounterMode(display=False):  # tracks modules with global hooks
            assert model(input_ids=ids, labels=labels).logits is None
    outputs = []
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, a, out: outputs.append(type(m)))
    try:
        with pytest.warns(UserWarning, match="lm_head has a global module forward hook"):
            assert model(input_ids=ids, labels=labels).logits is not None
    finally:
        handle.remove()
    assert torch.nn.Linear in outputs


def test_a_forward_set_on_the_head_instance_is_called():
    model = tiny_model("llama").train()
    ids, labels = batch()
    apply_ember(model)
    calls = []
    model.lm_head.forward = lambda h: calls.append(1) or torch.nn.functional.linear(h, model.lm_head.weight)
    with pytest.warns(UserWarning, match="lm_head has a forward set on the instance"):
        assert model(input_ids=ids, labels=labels).logits is not None
    assert calls == [1]


def test_a_pre_hook_on_the_head_runs_on_the_fused_path():
    """A forward pre-hook sees the head's input, the same on both paths: it runs, and may change it."""
    model = tiny_model("llama").train()
    ids, labels = batch()
    apply_ember(model)
    fused = loss_and_grads(model, ids, labels)[0].loss
    inputs = []
    model.lm_head.register_forward_pre_hook(lambda m, args: inputs.append(args[0].shape))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = model(input_ids=ids, labels=labels)
    assert inputs == [(*ids.shape, 32)] and out.logits is None
    torch.testing.assert_close(out.loss, fused, rtol=0, atol=0)
    model.lm_head.register_forward_pre_hook(lambda m, args: (2 * args[0],))  # the hook's input is used
    assert model(input_ids=ids, labels=labels).loss.item() != pytest.approx(fused.item(), rel=1e-3)


# ---- second derivative -------------------------------------------------------------------------------
def test_a_second_derivative_is_refused_with_the_way_out():
    """create_graph=True once returned a gradient without a graph ("element 0 of tensors does not
    require grad" at the second backward; through the body, second derivatives would miss the
    loss's own part): now the first backward says why, and the unpatched model computes it."""
    model = tiny_model("llama").train()
    ids, labels = batch()
    apply_ember(model)
    loss = model(input_ids=ids, labels=labels).loss
    with pytest.raises(RuntimeError, match=r"no second derivative.*ember.patch.unpatch\(model\)"):
        torch.autograd.grad(loss, model.lm_head.weight, create_graph=True)
    loss_and_grads(model, ids, labels)  # a plain backward is unaffected
    unpatch(model)
    (g,) = torch.autograd.grad(model(input_ids=ids, labels=labels).loss, model.lm_head.weight, create_graph=True)
    g.pow(2).sum().backward()
    assert model.lm_head.weight.grad.abs().sum() > 0


# ---- output, checkpointing, misuse -------------------------------------------------------------------
def test_return_dict_false_tuple_drops_the_logits():
    """What the README and apply_ember's docstring state: index 1 is the cache, not the logits."""
    model = tiny_model("llama").train()
    ids, labels = batch()
    plain = model(input_ids=ids, labels=labels, return_dict=False)
    assert [type(x).__name__ for x in plain] == ["Tensor", "Tensor", "DynamicCache"]
    assert plain[1].shape == (*ids.shape, VOCAB)
    apply_ember(model)
    patched = model(input_ids=ids, labels=labels, return_dict=False)
    assert [type(x).__name__ for x in patched] == ["Tensor", "DynamicCache"]
    torch.testing.assert_close(patched[0], plain[0], rtol=1e-5, atol=0)


def test_gradient_checkpointing_trains_to_the_unpatched_loss():
    model = tiny_model("llama").train()
    with warnings.catch_warnings():  # transformers 5.25 names it activation_checkpointing_enable too
        warnings.simplefilter("ignore", FutureWarning)
        model.gradient_checkpointing_enable()
    ids, labels = batch()
    ref = loss_and_grads(model, ids, labels)
    apply_ember(model)
    got = loss_and_grads(model, ids, labels)
    assert got[0].logits is None
    assert_same(got, ref)


def test_eval_mode_with_labels_and_labels_all_ignored():
    """Eval with labels is the original forward (logits and loss); every label ignored gives what
    transformers gives (a NaN loss: no token to average over) on both paths."""
    model = tiny_model("llama").train()
    ids, labels = batch()
    with torch.no_grad():
        plain_eval = model.eval()(input_ids=ids, labels=labels)
    none = torch.full_like(labels, -100)
    plain_none = model.train()(input_ids=ids, labels=none).loss
    apply_ember(model)
    with torch.no_grad():
        got = model.eval()(input_ids=ids, labels=labels)
    assert got.logits is not None
    torch.testing.assert_close(got.loss, plain_eval.loss, rtol=0, atol=0)
    assert plain_none.isnan() and model.train()(input_ids=ids, labels=none).loss.isnan()


def test_class_then_instance_and_unpatching_the_instance_says_the_class_is_patched():
    cls = transformers.LlamaForCausalLM
    model = tiny_model("llama").train()
    assert apply_ember(cls)
    try:
        assert apply_ember(model) == []  # the class's forward already is the fused one
        with pytest.warns(UserWarning, match=r"the class LlamaForCausalLM is patched.*unpatch\(LlamaForCausalLM\)"):
            assert unpatch(model) == []
    finally:
        unpatch(cls)
    ids, labels = batch()
    assert model(input_ids=ids, labels=labels).logits is not None


@pytest.mark.parametrize("wrap", [pytest.param(torch.compile, marks=pytest.mark.slow), torch.nn.DataParallel])
def test_a_wrapped_model_is_refused_naming_the_model_inside(wrap):
    model = tiny_model("llama")
    attr = "_orig_mod" if wrap is torch.compile else "module"
    with pytest.raises(TypeError, match=rf"wraps a LlamaForCausalLM: patch that one, apply_ember\(model.{attr}\)"):
        apply_ember(wrap(model))
    assert "forward" not in vars(model)
