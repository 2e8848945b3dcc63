"""Every model type ember.patch.supported() claims, each built tiny from its config: the patched
training loss and gradients equal the unpatched ones (fp32: loss ≤ 1e-4 relative, gradients
≤ 1e-3 of the tensor's largest entry) and the patched output holds no logits. The quick suite
checks the named architectures (test_hf.py); this sweep takes about a minute."""

import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import VOCAB, tiny_model  # noqa: E402

from ember.patch import apply_ember, supported  # noqa: E402
from ember.patch.detect import plan_for  # noqa: E402

# model types whose tiny config the table in tiny_models.py does not build yet, with the reason:
# detected as patchable, not verified here (none at present: composite text+vision configs, hybrid
# layer plans and MoE models dense at two layers all have their keys in the table)
NOT_BUILT: dict[str, str] = {}


def _check(model_type: str) -> str | None:
    model = tiny_model(model_type).train()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (2, 11), generator=g)
    labels = ids.clone()
    labels[0, :3] = -100
    ref = model(input_ids=ids, labels=labels)
    ref.loss.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    apply_ember(model)
    out = model(input_ids=ids, labels=labels)
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    if out.logits is not None:
        return "logits returned"
    if plan_for(type(model)).aux_coef is not None and getattr(ref, "aux_loss", None) is None:
        return "no MoE aux loss at this size: the patched aux path is not exercised"
    rel = abs(out.loss.item() - ref.loss.item()) / abs(ref.loss.item())
    if not rel <= 1e-4:
        return f"loss {out.loss.item()} vs {ref.loss.item()}"
    if grads.keys() != ref_grads.keys():
        return f"gradients of {sorted(grads.keys() ^ ref_grads.keys())}"
    top = max(v.abs().max().item() for v in ref_grads.values())
    for n, want in ref_grads.items():
        err = (grads[n] - want).abs().max().item()
        if not err <= 1e-3 * max(want.abs().max().item(), 1e-3 * top):
            return f"gradient of {n}: error {err:.3g}"
    return None


@pytest.mark.slow
def test_every_supported_model_type_matches_unpatched():
    types = supported()
    assert set(NOT_BUILT) <= set(types), sorted(set(NOT_BUILT) - set(types))  # stale entries
    failures = {}
    for model_type in types:
        if model_type in NOT_BUILT:
            continue
        try:
            problem = _check(model_type)
        except Exception as exc:  # noqa: BLE001 - reported per model type below
            problem = f"{type(exc).__name__}: {str(exc)[:200]}"
        if problem:
            failures[model_type] = problem
    assert not failures, failures
    classes = transformers.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    checked = {classes[t] for t in types if t not in NOT_BUILT}
    print(
        f"\n{len(types) - len(NOT_BUILT)} of {len(types)} supported model types checked, {len(checked)} of {len({classes[t] for t in types})} classes"
    )
