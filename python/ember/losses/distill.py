"""Self-distillation for continual pre-training: a frozen copy of the starting model (the
teacher) whose per-token distribution the model is pulled towards, against forgetting:

    loss_sum = Σ_i w_i·CE_i + λ · Σ_i KL(p_teacher,i ‖ p_model,i)   (over the non-ignored tokens)

Cost: the teacher's weights (a whole copy on each rank, in the checkpoint's dtype on a GPU), one
teacher forward per micro-batch (no backward: about a third of a training step's FLOPs), and
the KL's logits: both models' (tokens × vocab) logits are formed CHUNK tokens at a time and
recomputed in the backward (activation checkpointing), so the extra memory is a few fp32
CHUNK × vocab tensors (2048 × 128256 × 4 bytes = 1 GiB each for Llama 3's vocabulary), not the
micro-batch's, plus one more pass of the output-head GEMM for each model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..ops.cross_entropy import IGNORE_INDEX


def kl_to_teacher_sum(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Σ over tokens whose target is not IGNORE_INDEX of KL(softmax(teacher) ‖ softmax(student)),
    in fp32."""
    s = F.log_softmax(student_logits.float(), dim=-1)
    t = F.log_softmax(teacher_logits.float(), dim=-1)
    kl = (t.exp() * (t - s)).sum(-1)
    return (kl * (targets != IGNORE_INDEX)).sum()


def _chunk_kl(hidden, head_weight, teacher_hidden, teacher_head, targets):
    with torch.no_grad():
        teacher_logits = F.linear(teacher_hidden, teacher_head)
    return kl_to_teacher_sum(F.linear(hidden, head_weight), teacher_logits, targets)


class Distillation:
    """Part of the trainer's loss (ember.losses.lm.CausalLMLoss), not of the model: the teacher is
    neither trained nor saved. `weight` is λ; the teacher is an ember Llama."""

    CHUNK = 2048  # tokens whose logits exist at once

    def __init__(self, teacher: nn.Module, weight: float):
        self.teacher = teacher.eval().requires_grad_(False)
        self.weight = weight

    def loss_sum(
        self, tokens: torch.Tensor, hidden: torch.Tensor, head_weight: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        with torch.no_grad():
            teacher_hidden = self.teacher.hidden(tokens).flatten(0, -2)
        h, y = hidden.flatten(0, -2), targets.flatten()
        total = hidden.new_zeros((), dtype=torch.float32)
        for i in range(0, h.shape[0], self.CHUNK):
            part = slice(i, i + self.CHUNK)
            total = total + checkpoint(
                _chunk_kl,
                h[part],
                head_weight,
                teacher_hidden[part],
                self.teacher.output_weight,
                y[part],
                use_reentrant=False,
            )
        return self.weight * total
