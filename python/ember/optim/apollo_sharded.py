"""APOLLO's step for matrices that FSDP2 shards on dim 0 (DTensors with Shard(0) on one mesh
dimension, Replicate on any other: FSDP2 and HSDP). Each rank updates its own rows of W and
holds 1/world of the moments; P is regenerated on every rank from (seed, parameter, refresh),
never sent. What crosses ranks is only what a reduction over the sharded rows needs:

- W is m×n with m ≥ n (channels are rows; R = G·Pᵀ is row-local): nothing per matrix but the
  scalars of the one all-reduce below.
- W is m×n with m < n (channels are the n columns; P is r×m and R = Gᵀ·Pᵀ sums over the sharded
  rows): one reduce-scatter of the n×(r+1) partial sums [R | ‖G_:,j‖²], after which each rank
  owns a 1/world slice of the channels and their moments; with per-channel scaling, one
  all-gather of the n factors s.
- For every matrix of the call: ‖U‖² (and, with one scale per tensor, ‖R̃‖² and ‖R‖²), summed
  in a single all-reduce.

The arithmetic is include/ember/apollo.h's rule, written in torch ops on the local shard; the
result equals the one-process native step to fp32 rounding (a GEMM summing in another order),
not bit for bit. bf16 weights round to nearest (the native step's stochastic rounding keys its
bits by element, which this path does not reproduce): they are refused with stochastic rounding.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Replicate, Shard

from .. import ops


def shard_layout(p: DTensor) -> tuple[int, dist.ProcessGroup]:
    """(the mesh dimension that shards dim 0, its process group); refuses other layouts."""
    dims = [i for i, pl in enumerate(p.placements) if pl == Shard(0)]
    if len(dims) != 1 or any(
        not isinstance(pl, (Shard, Replicate)) or (isinstance(pl, Shard) and i not in dims)
        for i, pl in enumerate(p.placements)
    ):
        raise ValueError(
            f"ember.optim.Apollo: a DTensor parameter must be sharded on dim 0 over one mesh dimension (FSDP2 / HSDP), got placements {p.placements}"
        )
    return dims[0], p.device_mesh.get_group(dims[0])


def chunk(total: int, rank: int, world: int) -> tuple[int, int]:
    """[start, end) of rank's part of `total` rows under torch.chunk's (DTensor Shard's) split."""
    size = -(-total // world)
    start = min(total, rank * size)
    return start, min(total, start + size)


def new_state(p: DTensor, rank: int) -> torch.Tensor:
    """A zero L×rank moment sharded on dim 0 like p (L = the longer side of p)."""
    long_dim = max(p.shape)
    mesh_dim, group = shard_layout(p)
    start, end = chunk(long_dim, dist.get_rank(group), dist.get_world_size(group))
    local = torch.zeros(end - start, rank, device=p.to_local().device)
    return DTensor.from_local(
        local, p.device_mesh, p.placements, shape=(long_dim, rank), stride=(rank, 1), run_check=False
    )


def _local(t) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


def step(group: dict, params: list[DTensor], states: list[dict], streams: list[int]) -> None:
    """One APOLLO step of `params` (sharded matrices of one param group) in place."""
    if not params:
        return
    beta1, beta2 = group["betas"]
    eps, rank, tensor_scale = group["eps"], group["rank"], group["scale_type"] == "tensor"
    f32 = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731  (host floats rounded as the native step)
    b1, b2, omb1, omb2 = f32(beta1), f32(beta2), f32(1.0 - beta1), f32(1.0 - beta2)
    pg = shard_layout(params[0])[1]
    world, me = dist.get_world_size(pg), dist.get_rank(pg)

    work = []
    for p, st, stream in zip(params, states, streams):
        if shard_layout(p)[1] is not pg:
            raise ValueError("ember.optim.Apollo: the sharded parameters of a group must share one device mesh")
        if p.dtype == torch.bfloat16 and group["stochastic_rounding"]:
            raise ValueError(
                "ember.optim.Apollo: bf16 parameters sharded by FSDP2 need stochastic_rounding=False "
                "(or fp32 master weights, as FSDP2's MixedPrecisionPolicy keeps them)"
            )
        m, n = p.shape
        g = _local(p.grad).float()
        t = int(st["step"]) + 1
        refresh = (t - 1) // group["update_proj_gap"]
        proj = ops.apollo_projection(rank, min(m, n), group["seed"], stream, refresh, device=g.device)
        if m >= n:  # channels are rows: all local
            r = g @ proj.t()
            gsq = (g * g).sum(1)
        else:  # channels are columns: sum the sharded rows' parts, each rank keeps its channel slice
            r0, r1 = chunk(m, me, world)
            part = torch.cat([g.t() @ proj[:, r0:r1].t(), (g * g).sum(0, keepdim=True).t()], dim=1)
            size = -(-n // world)
            padded = torch.zeros(world * size, rank + 1, device=g.device)
            padded[:n] = part
            mine = torch.empty(size, rank + 1, device=g.device)
            dist.reduce_scatter_single(mine, padded, group=pg)
            c0, c1 = chunk(n, me, world)
            r, gsq = mine[: c1 - c0, :rank], mine[: c1 - c0, rank]
        ea, eas = _local(st["exp_avg"]), _local(st["exp_avg_sq"])
        ea.mul_(b1).add_(omb1 * r)
        eas.mul_(b2).add_(omb2 * (r * r))
        rt = ea / (eas.sqrt() + eps)
        work.append(dict(p=p, g=g, t=t, gsq=gsq, rt_sq=(rt * rt).sum(1), r_sq=(r * r).sum(1), transposed=m < n))

    # One all-reduce for the whole group: ‖U‖² per matrix (and the tensor-wide sums).
    sums = []
    for w in work:
        if tensor_scale:
            sums.append(torch.stack([w["rt_sq"].sum(), w["r_sq"].sum(), w["gsq"].sum()]))
        else:
            w["s"] = w["rt_sq"].sqrt() / (w["r_sq"].sqrt() + 1e-8)
            sums.append((w["s"] * w["s"] * w["gsq"]).sum().reshape(1))
    total = torch.cat(sums)
    dist.all_reduce(total, group=pg)
    k = 3 if tensor_scale else 1
    for i, w in enumerate(work):
        got = total[i * k : (i + 1) * k]
        if tensor_scale:
            s = got[0].sqrt() / (got[1].sqrt() + 1e-8)
            u_norm = (s * s * got[2]).sqrt()
            w["s"] = s
        else:
            u_norm = got[0].sqrt()
            if w["transposed"]:  # every rank scales all n columns of its rows
                n = w["p"].shape[1]
                size = -(-n // world)
                mine = torch.zeros(size, device=w["g"].device)
                mine[: w["s"].numel()] = w["s"]
                every = torch.empty(world * size, device=w["g"].device)
                dist.all_gather_single(every, mine, group=pg)
                w["s"] = every[:n]
        _update(group, w, states[i], u_norm)


def _update(group: dict, w: dict, st: dict, u_norm: torch.Tensor) -> None:
    """The limiter and W −= coef·s·G; W −= lr·wd·W (apollo.h: step_coefficient, updated_weight)."""
    t, limit = w["t"], group["norm_growth_limit"]
    norm_prev = st["norm_prev"]
    limiter = torch.ones((), device=u_norm.device)
    if t > 1:
        growth = u_norm / (norm_prev.to(u_norm.device) + 1e-8)
        limiter = torch.where(growth <= limit, torch.tensor(limit, device=u_norm.device), growth) / limit
    norm_prev.copy_(u_norm / limiter)
    lr = float(group["lr"])
    step_size = (
        lr * math.sqrt(1.0 - group["betas"][1] ** t) / (1.0 - group["betas"][0] ** t) * math.sqrt(group["scale"])
    )
    coef = torch.tensor(step_size, dtype=torch.float32, device=u_norm.device) / limiter
    s = w["s"]
    scale = s.reshape(1, -1) if w["transposed"] else (s.reshape(-1, 1) if s.dim() else s)
    weight = _local(w["p"])
    new = weight.float() - (coef * scale) * w["g"]
    lr_wd = torch.tensor(lr * group["weight_decay"], dtype=torch.float32)
    if lr_wd != 0:
        new = new - lr_wd * new
    weight.copy_(new)
