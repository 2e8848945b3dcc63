"""apollo ops: apollo_step_ (one fused optimizer step over a list of matrices) and
apollo_projection (the projection P an APOLLO step uses, for inspection and tests)."""

import torch


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
    CUDA; bf16 only on CUDA (the CUDA GEMM input for bf16 weights)."""
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
    ember.optim.Apollo is the optimizer around it."""
    if not params:
        return
    torch.ops.ember.apollo_step_(
        params, grads, exp_avg, exp_avg_sq, norm_prev, steps, streams, lr, beta1, beta2, eps, weight_decay, scale,
        tensor_scale, norm_growth_limit, rank, update_proj_gap, seed, stochastic_rounding,
    )


@torch.library.register_fake("ember::apollo_step_")
def _apollo_step_fake(params, grads, exp_avg, exp_avg_sq, norm_prev, steps, streams, *args):
    return None


@torch.library.register_fake("ember::apollo_projection_")
def _apollo_projection_fake(out, seed, stream, refresh):
    return None
