"""Plain-PyTorch references for the apollo family: the Philox4x32-10 + Box-Muller projection in
numpy (uint64 / float32 arithmetic, op by op as include/ember/random.h), and the update rule as
include/ember/apollo.h states it (after the APOLLO paper), one matrix at a time, fed the same P."""

import math

import numpy as np
import torch

M0, M1, W0, W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
MASK = 0xFFFFFFFF
f32 = np.float32


def philox(counters: np.ndarray, seed: int) -> np.ndarray:
    """counters: (n, 4) uint64 holding 32-bit words -> (n, 4) random words."""
    x, y, z, w = (counters[:, i].astype(np.uint64) for i in range(4))
    k0, k1 = np.uint64(seed & MASK), np.uint64((seed >> 32) & MASK)
    for _ in range(10):
        p0, p1 = np.uint64(M0) * x, np.uint64(M1) * z
        x, y, z, w = (
            (p1 >> np.uint64(32)) ^ y ^ k0,
            p1 & np.uint64(MASK),
            (p0 >> np.uint64(32)) ^ w ^ k1,
            p0 & np.uint64(MASK),
        )
        k0, k1 = (k0 + np.uint64(W0)) & np.uint64(MASK), (k1 + np.uint64(W1)) & np.uint64(MASK)
    return np.stack([x, y, z, w], axis=1)


def log_unit(x: np.ndarray) -> np.ndarray:
    bits = x.view(np.uint32).astype(np.int64)
    e = (bits >> 23) - 127
    mbits = (bits & 0x007FFFFF) | 0x3F800000
    high = mbits > 0x3FB504F3
    mbits = np.where(high, mbits - 0x00800000, mbits)
    e = e + high
    f = mbits.astype(np.uint32).view(np.float32) - f32(1)
    s = f / (f32(2) + f)
    z = s * s
    poly = f32(0.2222222222)
    for c in (0.2857142857, 0.4, 0.6666666667, 2.0):
        poly = poly * z + f32(c)
    ef = e.astype(np.float32)
    return ef * f32(0.693145752) + (ef * f32(1.42860677e-06) + s * poly)


def sincos_turns(u: np.ndarray):
    v = u * f32(4)
    q = v.astype(np.int32)
    r = v - q.astype(np.float32)
    up = r > f32(0.5)
    r = np.where(up, r - f32(1), r)
    q = q + up
    a = r * f32(1.57079637)
    a2 = a * a
    sp = f32(2.75573192e-06)
    sp = sp * a2 - f32(1.98412698e-04)
    sp = sp * a2 + f32(8.33333333e-03)
    sp = sp * a2 - f32(1.66666667e-01)
    s = a + (a * a2) * sp
    cp = f32(-2.75573192e-07)
    cp = cp * a2 + f32(2.48015873e-05)
    cp = cp * a2 - f32(1.38888889e-03)
    cp = cp * a2 + f32(4.16666667e-02)
    cp = cp * a2 - f32(0.5)
    c = f32(1) + a2 * cp
    odd = (q & 1) != 0
    bs, bc = np.where(odd, c, s), np.where(odd, s, c)
    return np.where((q & 2) != 0, -bs, bs), np.where(((q + 1) & 2) != 0, -bc, bc)


def normal_pairs(w0: np.ndarray, w1: np.ndarray):
    u0 = ((w0 >> np.uint64(8)) + np.uint64(1)).astype(np.float32) * f32(5.9604644775390625e-08)
    u1 = (w1 >> np.uint64(8)).astype(np.float32) * f32(5.9604644775390625e-08)
    radius = np.sqrt(f32(-2) * log_unit(u0))
    s, c = sincos_turns(u1)
    return radius * c, radius * s


def projection(rank: int, dim: int, seed: int, stream: int, refresh: int) -> torch.Tensor:
    """P (rank × dim) as ember.ops.apollo_projection draws it, bit for bit."""
    total = rank * dim
    groups = (total + 3) // 4
    counters = np.zeros((groups, 4), dtype=np.uint64)
    counters[:, 0] = np.arange(groups)
    counters[:, 1] = 0  # the projection domain
    counters[:, 2] = stream
    counters[:, 3] = refresh
    words = philox(counters, seed)
    z = np.empty((groups, 4), dtype=np.float32)
    z[:, 0], z[:, 1] = normal_pairs(words[:, 0], words[:, 1])
    z[:, 2], z[:, 3] = normal_pairs(words[:, 2], words[:, 3])
    inv = f32(1.0 / math.sqrt(rank))
    return torch.from_numpy((z.reshape(-1)[:total] * inv).reshape(rank, dim))


class ReferenceApollo:
    """The APOLLO rule for one matrix, written plainly (include/ember/apollo.h), in the dtype of `w`."""

    def __init__(
        self,
        w: torch.Tensor,
        rank: int,
        lr=1e-2,
        betas=(0.9, 0.999),
        eps=1e-6,
        weight_decay=0.0,
        scale=1.0,
        tensor_scale=False,
        norm_growth_limit=1.01,
        update_proj_gap=200,
        seed=0,
        stream=0,
        project=None,
    ):
        self.w = w.clone()
        self.transposed = w.shape[0] < w.shape[1]
        long_dim = max(w.shape)
        self.m = torch.zeros(long_dim, rank, dtype=w.dtype)
        self.v = torch.zeros(long_dim, rank, dtype=w.dtype)
        self.norm_prev = None
        self.t = 0
        self.__dict__.update(
            rank=rank,
            lr=lr,
            betas=betas,
            eps=eps,
            wd=weight_decay,
            scale=scale,
            tensor_scale=tensor_scale,
            gamma=norm_growth_limit,
            gap=update_proj_gap,
            seed=seed,
            stream=stream,
            project=project,
        )

    def step(self, g: torch.Tensor) -> None:
        self.t += 1
        p = projection(self.rank, min(g.shape), self.seed, self.stream, (self.t - 1) // self.gap).to(g.dtype)
        self.w, self.m, self.v, self.norm_prev = rule(
            self.w,
            g,
            self.m,
            self.v,
            self.norm_prev,
            self.t,
            p,
            self.betas,
            self.eps,
            self.wd,
            self.lr,
            self.scale,
            self.tensor_scale,
            self.gamma,
            self.project,
        )


def rule(w, g, m, v, norm_prev, t, p, betas, eps, wd, lr, scale, tensor_scale, gamma, project=None):
    """Step t of the rule for one matrix with projection p: (w, m, v, norm_prev) after it
    (norm_prev None before the first step). project(gv, p) -> R = gv·pᵀ, in a summation order
    of the caller's choosing (default: the BLAS's)."""
    transposed = w.shape[0] < w.shape[1]
    b1, b2 = betas
    gv = g.t() if transposed else g
    r = gv @ p.t() if project is None else project(gv, p)
    m = b1 * m + (1 - b1) * r
    v = b2 * v + (1 - b2) * r * r
    rt = m / (v.sqrt() + eps)
    if tensor_scale:
        s = rt.norm() / (r.norm() + 1e-8)
    else:
        s = (rt.norm(dim=1) / (r.norm(dim=1) + 1e-8))[:, None]
    u = gv * s
    u_norm = u.norm()
    if norm_prev is not None:
        limiter = max(u_norm / (norm_prev + 1e-8), gamma) / gamma
        u = u / limiter
        norm_prev = u_norm / limiter
    else:
        norm_prev = u_norm
    step_size = lr * math.sqrt(1 - b2**t) / (1 - b1**t) * math.sqrt(scale)
    u = u.t() if transposed else u
    w = w - step_size * u
    if lr * wd:  # (0·inf would turn an inf weight into NaN)
        w = w - lr * wd * w
    return w, m, v, norm_prev


def step_(
    params,
    grads,
    exp_avg,
    exp_avg_sq,
    norm_prev,
    steps,
    streams,
    *,
    lr,
    beta1,
    beta2,
    eps,
    weight_decay,
    scale,
    tensor_scale,
    norm_growth_limit,
    rank,
    update_proj_gap,
    seed,
    **_,
):
    """ember.ops.apollo_step_ by the rule, in fp32, in place (a bf16 weight rounded to nearest):
    the path of a matrix whose kernel is disabled."""
    for w, g, m, v, n, t, stream in zip(params, grads, exp_avg, exp_avg_sq, norm_prev, steps, streams):
        p = projection(rank, min(w.shape), seed, stream, (t - 1) // update_proj_gap).to(w.device)
        prev = n.reshape(()) if t > 1 else None
        w1, m1, v1, n1 = rule(
            w.float(),
            g.float(),
            m,
            v,
            prev,
            t,
            p,
            (beta1, beta2),
            eps,
            weight_decay,
            lr,
            scale,
            tensor_scale,
            norm_growth_limit,
        )
        w.copy_(w1)
        m.copy_(m1)
        v.copy_(v1)
        n.copy_(n1.reshape(n.shape))
