"""Where the calls of a disabled kernel go (ember.kernels): the ops computed by their references
(ember.reference, ember.float8.reference) in plain PyTorch on the inputs' device, float64 where the
reference is, with autograd for the gradients. Correct, and slower than the kernels: a run that
falls back says so (ember.kernel_check.training)."""

from __future__ import annotations

import torch

from ..float8.reference import fp8_gemm_reference, quantize_fp8_reference
from ..reference import apollo as apollo_ref
from ..reference import cross_entropy as ce_ref


def ce_rows(z, y, w, ignore_index, label_smoothing, z_loss, softcap):
    """(loss, log p(target), entropy) per row of logits z (N, V), float32, differentiable in z."""
    loss, _, lp, ent = ce_ref.rows(z, y, w, ignore_index, label_smoothing, z_loss, softcap or None, device=z.device)
    return loss.float(), lp.float().detach(), ent.float().detach()


def linear_ce_rows(h, lm_weight, y, w, bias, *args):
    """ce_rows of the logits h·Wᵀ (+ bias), made in float64."""
    logits = h.double() @ lm_weight.double().t()
    if bias is not None:
        logits = logits + bias.double()
    return ce_rows(logits, y, w, *args)


def quantize_fp8(x, dtype, granularity, block, transpose):
    return quantize_fp8_reference(x, dtype, granularity, block, transpose)


def fp8_gemm(a, a_scale, b, b_scale, out_dtype, bias):
    return fp8_gemm_reference(a, a_scale, b, b_scale, out_dtype=out_dtype, bias=bias)


def apollo_projection(rank, dim, seed, stream, refresh, device, dtype):
    return apollo_ref.projection(rank, dim, seed, stream, refresh).to(device, dtype)


def apollo_step_(*lists, **hyper) -> None:
    with torch.no_grad():
        apollo_ref.step_(*lists, **hyper)


def masked_linear(x, weight, mask, bias, block):
    """x·(W⊙M)ᵀ + bias with pruned weights +0, mask packed (block 0: a bitmask)."""
    kept = torch.ops.ember.unpack_mask(mask, weight.shape[0], weight.shape[1], block)
    y = x @ torch.where(kept, weight, torch.zeros((), dtype=weight.dtype, device=weight.device)).t()
    return y if bias is None else y + bias
