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
from dataclasses import dataclass

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


@dataclass
class _Matrix:
    """One sharded matrix in a step: its local gradient and the per-channel sums the scale needs
    (this rank's channels), then the scale s once the group's all-reduce is in."""

    p: DTensor
    g: torch.Tensor  # this rank's rows of G, fp32
    t: int  # the step number being taken
    gsq: torch.Tensor  # ‖G_c‖² per channel c of this rank
    rt_sq: torch.Tensor  # ‖R̃_c‖² per channel
    r_sq: torch.Tensor  # ‖R_c‖² per channel
    transposed: bool  # channels are columns (m < n)
    s: torch.Tensor | None = None


def step(group: dict, params: list[DTensor], states: list[dict], streams: list[int]) -> None:
    """One APOLLO step of `params` (sharded matrices of one param group) in place."""
    if not params:
        return
    pg = shard_layout(params[0])[1]
    work = [_project(group, p, st, stream, pg) for p, st, stream in zip(params, states, streams)]
    for w, st, u_norm in zip(work, states, _scales(group, work, pg)):
        _update(group, w, st, u_norm)


def _project(group: dict, p: DTensor, st: dict, stream: int, pg) -> _Matrix:
    """R = G·Pᵀ on this rank's channels (a reduce-scatter when they are columns), the moments
    updated, and the sums the scale needs."""
    if shard_layout(p)[1] is not pg:
        raise ValueError("ember.optim.Apollo: the sharded parameters of a group must share one device mesh")
    if p.dtype == torch.bfloat16 and group["stochastic_rounding"]:
        raise ValueError(
            "ember.optim.Apollo: bf16 parameters sharded by FSDP2 need stochastic_rounding=False "
            "(or fp32 master weights, as FSDP2's MixedPrecisionPolicy keeps them)"
        )
    beta1, beta2 = group["betas"]
    f32 = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731  (host floats rounded as the native step)
    world, me = dist.get_world_size(pg), dist.get_rank(pg)
    rank, (m, n) = group["rank"], p.shape
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
    ea.mul_(f32(beta1)).add_(f32(1.0 - beta1) * r)
    eas.mul_(f32(beta2)).add_(f32(1.0 - beta2) * (r * r))
    rt = ea / (eas.sqrt() + group["eps"])
    return _Matrix(p, g, t, gsq, (rt * rt).sum(1), (r * r).sum(1), m < n)


def _scales(group: dict, work: list[_Matrix], pg) -> list[torch.Tensor]:
    """Each matrix's scale s (set on it) and ‖U‖, from one all-reduce for the whole group (and an
    all-gather of the column factors of a transposed matrix with per-channel scaling)."""
    tensor_scale = group["scale_type"] == "tensor"
    sums = []
    for w in work:
        if tensor_scale:
            sums.append(torch.stack([w.rt_sq.sum(), w.r_sq.sum(), w.gsq.sum()]))
        else:
            w.s = w.rt_sq.sqrt() / (w.r_sq.sqrt() + 1e-8)
            sums.append((w.s * w.s * w.gsq).sum().reshape(1))
    total = torch.cat(sums)
    dist.all_reduce(total, group=pg)
    world, k, norms = dist.get_world_size(pg), 3 if tensor_scale else 1, []
    for i, w in enumerate(work):
        got = total[i * k : (i + 1) * k]
        if tensor_scale:
            w.s = got[0].sqrt() / (got[1].sqrt() + 1e-8)
            norms.append((w.s * w.s * got[2]).sqrt())
            continue
        norms.append(got[0].sqrt())
        if w.transposed:  # every rank scales all n columns of its rows
            n = w.p.shape[1]
            size = -(-n // world)
            mine = torch.zeros(size, device=w.g.device)
            mine[: w.s.numel()] = w.s
            every = torch.empty(world * size, device=w.g.device)
            dist.all_gather_single(every, mine, group=pg)
            w.s = every[:n]
    return norms


def _update(group: dict, w: _Matrix, st: dict, u_norm: torch.Tensor) -> None:
    """The limiter and W −= coef·s·G; W −= lr·wd·W (apollo.h: step_coefficient, updated_weight)."""
    t, limit = w.t, group["norm_growth_limit"]
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
    s = w.s
    scale = s.reshape(1, -1) if w.transposed else (s.reshape(-1, 1) if s.dim() else s)
    weight = _local(w.p)
    new = weight.float() - (coef * scale) * w.g
    lr_wd = torch.tensor(lr * group["weight_decay"], dtype=torch.float32)
    if lr_wd != 0:
        new = new - lr_wd * new
    weight.copy_(new)
