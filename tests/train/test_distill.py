"""Self-distillation (--loss.distill): the KL term against a plain float64 reference, the model's
training loss with it, and a run whose teacher is its init_from checkpoint."""

import pytest
import torch

from ember.losses.distill import Distillation, kl_to_teacher_sum
from ember.losses.lm import CausalLMLoss
from ember.losses.lm import IGNORE_INDEX
from ember.models import CONFIGS, Llama
from ember.train import ConfigError, parse_config, train


def reference_kl(student, teacher, targets):
    s, t = student.double().softmax(-1), teacher.double().softmax(-1)
    per_token = (t * (t.log() - s.log())).sum(-1)
    return per_token[targets != IGNORE_INDEX].sum()


def test_kl_matches_reference_and_its_gradient():
    g = torch.Generator().manual_seed(0)
    student = (torch.randn(3, 7, 53, generator=g) * 3).requires_grad_()
    teacher = torch.randn(3, 7, 53, generator=g) * 3
    targets = torch.randint(0, 53, (3, 7), generator=g)
    targets[0, :4] = IGNORE_INDEX
    got = kl_to_teacher_sum(student, teacher, targets)
    assert got.item() == pytest.approx(reference_kl(student, teacher, targets).item(), rel=1e-5)
    got.backward()  # d KL / d student logits = p_student - p_teacher on the kept tokens, 0 elsewhere
    want = (student.detach().softmax(-1) - teacher.softmax(-1)) * (targets != IGNORE_INDEX)[..., None]
    torch.testing.assert_close(student.grad, want, rtol=1e-4, atol=1e-6)
    assert kl_to_teacher_sum(teacher, teacher, targets).abs().item() < 1e-5


def tiny(seed):
    with torch.device("meta"):
        model = Llama(CONFIGS["debug"].replace(dim=64, n_layers=2, n_heads=4, ffn_hidden=96, max_seq_len=32))
    return model.to_empty(device="cpu").init_weights(seed)


def test_training_forward_adds_the_kl_and_validation_does_not():
    student, teacher = tiny(1), tiny(2)
    x = torch.randint(0, 257, (2, 17), generator=torch.Generator().manual_seed(3))
    plain = student(x[:, :-1], x[:, 1:]).detach()
    loss = CausalLMLoss(distill=Distillation(teacher, 0.5))  # the trainer's, not the model's
    with torch.no_grad():
        assert student(x[:, :-1], x[:, 1:], loss=loss).item() == plain.item()
    with torch.no_grad():
        kl = reference_kl(student(x[:, :-1]), teacher(x[:, :-1]), x[:, 1:]).item()
    assert kl > 0.01
    assert student(x[:, :-1], x[:, 1:], loss=loss).item() == pytest.approx(plain.item() + 0.5 * kl, rel=1e-5)
    assert not any(p.requires_grad for p in teacher.parameters())
    assert "teacher" not in str(list(student.state_dict()))


def test_chunks_give_the_same_loss_and_gradients(monkeypatch):
    student, teacher = tiny(1), tiny(2)
    x = torch.randint(0, 257, (3, 17), generator=torch.Generator().manual_seed(4))
    loss_fn = CausalLMLoss(distill=Distillation(teacher, 0.7))
    results = []
    for chunk in (2048, 5):  # one chunk; 11 chunks, the last one short
        monkeypatch.setattr(Distillation, "CHUNK", chunk)
        student.zero_grad()
        loss = student(x[:, :-1], x[:, 1:], loss=loss_fn)
        loss.backward()
        results.append((loss.item(), [p.grad.clone() for p in student.parameters()]))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-6)
    for a, b in zip(results[0][1], results[1][1]):  # GEMMs of other shapes round differently (by CPU)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * a.abs().max().item())


def test_distill_needs_init_from(tmp_path):
    from .helpers import flags

    with pytest.raises(ConfigError, match="loss.distill must be >= 0 and needs model.init_from"):
        train(parse_config(flags(tmp_path, "bad", "--loss.distill=0.5")))
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_self_distillation_run(tmp_path):
    """The teacher is the starting model: at step 1 the KL is 0 (the loss is the plain run's),
    later it is not; validation losses are plain CE either way."""
    from .test_init_from import checkpoint, run, val_rows

    path = checkpoint(tmp_path, "llama")
    plain = run(tmp_path, "plain", f"--model.init_from={path}")["losses"]
    distilled = run(tmp_path, "kd", f"--model.init_from={path}", "--loss.distill=1.0")["losses"]
    assert distilled[1] == pytest.approx(plain[1], rel=1e-6)
    assert all(distilled[k] != plain[k] for k in (3, 4, 5, 6))
    assert val_rows(tmp_path / "kd")[0]["val_loss"] == val_rows(tmp_path / "plain")[0]["val_loss"]
