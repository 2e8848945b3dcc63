"""How ember.patch.detect reads a forward: the pre-5.0 transformers form (a `slice_indices` subscript,
`if not return_dict` tuples, the aux loss added under `if output_router_logits`), soft-capping
and scaling under conditions, and refusals naming the offending line. The classes below are
written for the test (forwards of the shapes transformers uses), built on the installed Llama."""

import ast
import linecache
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import VOCAB, tiny_config  # noqa: E402

from ember.patch import apply_ember  # noqa: E402
from ember.patch.detect import Refused, analyze, logit_map  # noqa: E402

Llama = transformers.LlamaForCausalLM


class OldForm(Llama):
    """Pre-5.0 style: `hidden_states[:, slice_indices, :]`, a return_dict branch, a scale and a
    soft-cap under config conditions, and an aux loss nested under output_router_logits."""

    def forward(
        self, input_ids=None, labels=None, logits_to_keep=0, return_dict=True, output_router_logits=False, **kwargs
    ):
        outputs = self.model(input_ids=input_ids)
        hidden_states = outputs[0]
        slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, slice_indices, :])
        logits = logits * self.config.demo_scale
        if self.config.demo_cap is not None:
            logits = logits / self.config.demo_cap
            logits = torch.tanh(logits)
            logits = logits * self.config.demo_cap
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, self.vocab_size, **kwargs)
        aux_loss = None
        if output_router_logits:
            aux_loss = (hidden_states**2).mean()  # stands in for a router's balance loss
            if labels is not None:
                loss += self.config.demo_coef * aux_loss.to(loss.device)
        if not return_dict:
            output = (logits,) + outputs[1:]
            return (loss,) + output if loss is not None else output
        out = transformers.modeling_outputs.MoeCausalLMOutputWithPast(loss=loss, logits=logits, aux_loss=aux_loss)
        return out


def old_form(cap):
    torch.manual_seed(0)
    cfg = tiny_config("llama")
    cfg.demo_scale, cfg.demo_cap, cfg.demo_coef = 0.7, cap, 0.3
    return OldForm(cfg).train()


def test_old_form_is_read():
    plan = analyze(OldForm)
    assert plan.head == "lm_head" and ast.unparse(plan.aux_coef) == "self.config.demo_coef"
    assert [k for k, _, _ in plan.ops] == ["mul", "div", "tanh", "mul"]
    assert plan.notes == ("soft-capped logits", "MoE aux loss")
    scale, cap, coef = logit_map(plan, old_form(cap=2.0))
    assert (scale, cap, coef) == pytest.approx((0.7 * 2.0 / 2.0, 2.0, 0.3))
    assert logit_map(plan, old_form(cap=None))[:2] == (0.7, None)  # the condition is read at run time


@pytest.mark.parametrize("cap", [2.0, None])
@pytest.mark.parametrize("return_dict", [True, False])
def test_old_form_patched_equals_unpatched(cap, return_dict):
    model = old_form(cap)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, VOCAB, (2, 9), generator=g)
    kw = dict(input_ids=ids, labels=ids, output_router_logits=True, return_dict=return_dict)
    ref = model(**kw)[0] if not return_dict else model(**kw).loss
    apply_ember(model)
    got = model(**kw)
    loss = got[0] if not return_dict else got.loss
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=0)
    if not return_dict:  # (loss, aux_loss), the logits left out
        assert len(got) == 2 and got[1].dim() == 0


LOSS = "loss = self.loss_function(logits, labels, self.vocab_size, **kwargs)"


def _with_line(line: str, *loss_block: str):
    """A Llama-like class whose forward has `line` between the head and the loss (and
    `loss_block` as the statements under `if labels is not None`)."""
    block = "\n        ".join(loss_block or (LOSS,))
    src = f"""
def forward(self, input_ids=None, labels=None, logits_to_keep=0, **kwargs):
    hidden_states = self.model(input_ids=input_ids).last_hidden_state
    logits = self.lm_head(hidden_states)
    {line}
    loss = None
    if labels is not None:
        {block}
    return loss, logits
"""
    namespace = {}
    exec(compile(src, "<forward>", "exec"), namespace)  # noqa: S102 - a test-built forward
    linecache.cache["<forward>"] = (len(src), None, src.splitlines(True), "<forward>")  # for inspect.getsource
    return type("Variant", (Llama,), {"forward": namespace["forward"]})


@pytest.mark.parametrize(
    "line,why",
    [
        ("logits = logits + 1.0", "unrecognized use of the logits"),
        ("logits = logits[..., :50]", "unrecognized use of the logits"),
        ("logits = logits / torch.rand(())", "unrecognized use of the logits"),
        ("logits = self.norm(logits)", "unrecognized use of the logits"),
    ],
)
def test_unknown_logit_changes_are_refused_with_the_line(line, why):
    with pytest.raises(Refused, match=f"{why}: `{line[:10]}"):
        analyze(_with_line(line))


@pytest.mark.parametrize(
    "block,why",
    [
        (
            ("loss = self.loss_function(logits[:, :-1], labels, self.vocab_size, **kwargs)",),
            "a loss it does not recognize",
        ),
        (("labels = labels[:, 1:]", LOSS), "labels changed before the loss"),
        ((LOSS, "loss = loss + 0.1 * logits.logsumexp(-1).pow(2).mean()"), "a loss it does not recognize"),
    ],
)
def test_unknown_losses_are_refused_with_the_line(block, why):
    with pytest.raises(Refused, match=why):
        analyze(_with_line("pass", *block))
    analyze(_with_line("pass"))  # the same forward with the plain loss is accepted


def test_refused_instance_is_left_as_it_was():
    cls = _with_line("logits = logits + 1.0")
    model = cls(tiny_config("llama"))
    with pytest.raises(TypeError, match="Variant cannot be patched: .*unrecognized use of the logits"):
        apply_ember(model, sparsity=dict(target=0.5))
    from ember.sparse import SparseLinear

    assert "forward" not in model.__dict__ and not any(isinstance(m, SparseLinear) for m in model.modules())
