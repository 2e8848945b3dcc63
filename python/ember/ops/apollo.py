"""apollo ops: apollo_step_ (one fused optimizer step over a list of matrices) and
apollo_projection (the projection P an APOLLO step uses, for inspection and tests)."""

import torch

from .. import kernels
from . import reference_path
from .fake import register_fake


def apollo_projection(
    rank: int,
    dim: int,
    seed: int = 0,
    stream: int = 0,
    refresh: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """P (rank × dim), entries N(0, 1)/√rank from the Philox4x32-10 stream keyed by
    (seed, stream, refresh): the matrix an APOLLO step projects with. Bit-identical on CPU and
    CUDA; bf16 only on CUDA (the CUDA GEMM input for bf16 weights). The op,
    torch.ops.ember.apollo_projection_(out, seed, stream, refresh), fills a contiguous `out` and
    refuses any other layout."""
    if kernels.disabled("apollo.projection"):
        return reference_path.apollo_projection(rank, dim, seed, stream, refresh, device, dtype)
    out = torch.empty(rank, dim, device=device, dtype=dtype)
    torch.ops.ember.apollo_projection_(out, seed, stream, refresh)
    return out


def apollo_step_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avg: list[torch.Tensor],
    exp_avg_sq: list[torch.Tensor],
    norm_prev: list[torch.Tensor],
    steps: list[int],
    streams: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    scale: float,
    tensor_scale: bool,
    norm_growth_limit: float,
    rank: int,
    update_proj_gap: int,
    seed: int,
    stochastic_rounding: bool,
) -> None:
    """One APOLLO step in place for matrices i (see include/ember/apollo.h for the rule);
    ember.optim.Apollo is the optimizer around it.

    Writes params, exp_avg, exp_avg_sq and norm_prev, nothing else; a call that raises (a bad
    argument, a non-contiguous tensor: the op takes contiguous tensors only; two written tensors,
    or one and a grad, that share memory) writes nothing. The result does not depend on the CPU
    thread count.

    Non-finite values poison, as in torch.optim.AdamW (nothing is skipped), but a whole matrix:
    a NaN or ±inf in grads[i] makes exp_avg[i] and exp_avg_sq[i] NaN in the channels it touches
    (channels: rows of the longer side of params[i]) for good, and ‖U‖ and norm_prev[i] NaN. At
    step 1, params[i] turns NaN in those channels (all of it with tensor_scale); at any later step
    the growth limiter, which reads norm_prev[i], makes all of params[i] NaN, and every step after
    keeps it so. Other matrices of the same call are not affected. A NaN in params[i] stays in its
    element; ±inf stays ±inf, except that weight decay makes it NaN (inf − lr·wd·inf, as torch's
    fused AdamW). ‖U‖² is summed from float32 squares of the gradient, so for gradients below
    ~1e-19 norm_prev[i] comes out smaller than the exact rule's (which matters only above 1e-8,
    the limiter's guard)."""
    if not params:
        return
    # in the op's argument order
    hyper = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, scale=scale)
    hyper.update(tensor_scale=tensor_scale, norm_growth_limit=norm_growth_limit, rank=rank)
    hyper.update(update_proj_gap=update_proj_gap, seed=seed, stochastic_rounding=stochastic_rounding)
    lists = (params, grads, exp_avg, exp_avg_sq, norm_prev, steps, streams)
    _check_no_shared_memory(lists[:5])
    routed = [_disabled_step(p) for p in params]
    if any(routed):  # those matrices by the rule, the others by the kernel
        reference_path.apollo_step_(*([x for x, r in zip(xs, routed) if r] for xs in lists), **hyper)
        lists = tuple([x for x, r in zip(xs, routed) if not r] for xs in lists)
        if not lists[0]:
            return
    torch.ops.ember.apollo_step_(*lists, *hyper.values())


def _check_no_shared_memory(lists) -> None:
    """The op writes params, exp_avg, exp_avg_sq and norm_prev: two of these (or one and a grad)
    that share memory would mix their updates, silently (`[torch.zeros(L, r)] * n` gives every
    matrix one state; a parameter listed twice is stepped twice from one read). Grads may share."""
    spans = []
    for name, xs in zip(("params", "grads", "exp_avg", "exp_avg_sq", "norm_prev"), lists):
        for i, t in enumerate(xs):
            if isinstance(t, torch.Tensor) and t.numel() and not t.is_meta:
                n = t.numel() if t.is_contiguous() else 1 + sum((k - 1) * st for k, st in zip(t.shape, t.stride()))
                spans.append((str(t.device), t.data_ptr(), t.data_ptr() + n * t.element_size(), name, i))
    spans.sort()
    reach = None  # the span reaching furthest among those that start before this one
    for span in spans:
        if reach is not None and span[0] == reach[0] and span[1] < reach[2] and not span[3] == reach[3] == "grads":
            raise ValueError(
                f"ember.ops.apollo_step_: {reach[3]}[{reach[4]}] and {span[3]}[{span[4]}] share memory; every "
                "matrix needs a parameter and states of its own"
            )
        if reach is None or span[0] != reach[0] or span[2] > reach[2]:
            reach = span


def _disabled_step(param: torch.Tensor) -> bool:
    dtype = {torch.float32: "fp32", torch.bfloat16: "bf16"}.get(param.dtype)
    return kernels.disabled("apollo.projection") or (dtype is not None and kernels.disabled(f"apollo.step.{dtype}"))


@register_fake("ember::apollo_step_")
def _apollo_step_fake(params, grads, exp_avg, exp_avg_sq, norm_prev, steps, streams, *args):
    return None


@register_fake("ember::apollo_projection_")
def _apollo_projection_fake(out, seed, stream, refresh):
    return None
