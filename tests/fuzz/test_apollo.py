"""Fuzz of the apollo ops: apollo_step_ against the rule of ember/reference/apollo.py run in float64,
apollo_projection_ against its numpy reference (bit for bit).

Tolerance principle for the step: a finite output is within 4× the error of the same reference run
in float32 (the precision the kernel computes in; on CUDA with bf16 weights, P rounded to bf16 as
the GEMM input is), plus 1e-5 of the largest reference value (the kernel sums in another order),
plus fp32's underflow floor for norms of squares (1e-19·√numel).
bf16 weights may be off by a further ½ ulp (round to nearest) or 1 ulp (stochastic rounding).
Every step starts the references from the kernel's weights and state, so each check is one step.
"""

import contextlib
from unittest import mock

import pytest
import torch
from hypothesis import event, given, strategies as st

from ember.reference import apollo as reference
from . import harness

STEP, PROJ = "ember.apollo_step_", "ember.apollo_projection_"
NAN, INF = float("nan"), float("inf")
STATE = ("exp_avg", "exp_avg_sq", "norm_prev")  # the in-place outputs, with "params"


def check(out, r64, r32, what, ulp=0.0):
    """Non-finite where the float64 reference is; finite within the principle above."""
    r64, r32, out = r64.double(), r32.double(), out.detach().double().cpu().reshape(r64.shape)
    harness.assert_matches(out, r64, rtol=0.0, atol=INF, what=what)  # here: only where the non-finite values are
    fin = r64.isfinite() & r32.isfinite()
    if fin.any():
        # + an underflow floor: the kernel's norms square fp32 values, which is 0 below ~1e-19
        allowed = 4 * (r32 - r64)[fin].abs().max() + 1e-5 * r64[fin].abs().max() + 1e-19 * max(1, r64.numel()) ** 0.5
        err = (out - r64).abs() - ulp * r64.abs()
        assert (err[fin] <= allowed).all(), f"{what}: error {(out - r64)[fin].abs().max():.3g}, allowed {allowed:.3g}"


def raw(t):
    return t.new_empty(t.shape).copy_(t).view(-1).view(torch.uint8)


# ---- apollo_step_ ---------------------------------------------------------------------------------------
@st.composite
def step_cases(draw):
    """(hyperparameters, first step, steps, matrices): each matrix's values on the CPU and its layouts."""
    dtype = draw(st.sampled_from([torch.float32, torch.bfloat16]))
    hyper = dict(
        lr=draw(st.sampled_from([1e-2, 0.3, 0.0])),
        beta1=draw(st.sampled_from([0.9, 0.0, 0.5])),
        beta2=draw(st.sampled_from([0.999, 0.9, 0.0])),
        eps=draw(st.sampled_from([1e-6, 1e-3])),
        weight_decay=draw(st.sampled_from([0.0, 0.1])),
        scale=draw(st.sampled_from([1.0, 128.0])),
        tensor_scale=draw(st.booleans()),
        norm_growth_limit=draw(st.sampled_from([1.01, 1.0, 4.0])),
        rank=draw(st.integers(1, 8)),
        update_proj_gap=draw(st.integers(1, 3)),
        seed=draw(st.integers(0, 2**63 - 1)),
        stochastic_rounding=draw(st.booleans()),
    )
    start = draw(st.sampled_from([1, 1, 2, 200, 10_001]))  # later: a random state, the limiter at once
    steps = draw(st.integers(1, 3))  # with gaps of 1-3 they cross projection refreshes
    any_layout, mats = draw(st.sampled_from([False, False, True])), []  # mostly layouts the op takes
    for _ in range(draw(st.integers(1, 3))):  # one group: one call for all
        shape = (draw(harness.sizes(0, 70)), draw(harness.sizes(0, 70)))
        s, state_shape = draw(st.integers(0, 2**30)), (max(shape), hyper["rank"])
        w = harness.randn(shape, dtype, s, scale=draw(st.sampled_from([1.0, 1e-20])))
        m = dict(
            stream=draw(st.integers(0, 2**32 - 1)),
            layout={
                k: draw(harness.layouts() if any_layout else st.sampled_from(["contiguous", "offset"]))
                for k in ("params", "grads", "exp_avg", "exp_avg_sq")
            }
            | {"norm_prev": draw(harness.layouts(1))},
            params=draw(harness.sprinkle(w, harness.special_values(dtype))),
            exp_avg=harness.randn(state_shape, torch.float32, s + 1) * (start > 1),
            exp_avg_sq=harness.randn(state_shape, torch.float32, s + 2) ** 2 * (start > 1),
            norm_prev=torch.full((1,), draw(st.sampled_from([0.0, 3.0])) * (start > 1)),
            grads=[],
        )
        for t in range(steps):
            # not below 1e-15: ‖U‖² = Σ s_i²·‖G_i‖² squares G in float32 (see the op's docstring)
            g = harness.randn(shape, dtype, s + 3 + t, scale=draw(st.sampled_from([1.0, 1e-3, 1e3, 1e-15])))
            zero = draw(st.sampled_from(["none", "none", "all", "rows", "cols"]))
            if zero == "all":  # norms of 0: the 1e-8 guards, a limiter that starts from 0
                g.zero_()
            elif zero == "rows":
                g[::2] = 0
            elif zero == "cols":
                g[:, ::2] = 0
            m["grads"].append(draw(harness.sprinkle(g, harness.special_values(dtype), 0.05)))
        mats.append(m)
    return hyper, start, steps, mats


def place(mats, device, steps):
    """The op's arguments on the device, in the drawn layouts; grads: one list per step."""

    def put(t, layout):
        return harness.lay_out(t.to(device).clone(), layout)  # the case's tensors stay as drawn

    args = {k: [put(m[k], m["layout"][k]) for m in mats] for k in ("params", *STATE)}
    args["grads"] = [[put(m["grads"][t], m["layout"]["grads"]) for m in mats] for t in range(steps)]
    return args


def step(args, mats, hyper, t, k):
    torch.ops.ember.apollo_step_(
        args["params"],
        args["grads"][k],
        args["exp_avg"],
        args["exp_avg_sq"],
        args["norm_prev"],
        [t] * len(mats),
        [m["stream"] for m in mats],
        *hyper.values(),
    )


def references(args, mats, hyper, t, k, bf16_p):
    """For each matrix: the rule run in float64 and in float32, from the kernel's current weights and state."""
    kw = dict(
        lr=hyper["lr"],
        betas=(hyper["beta1"], hyper["beta2"]),
        eps=hyper["eps"],
        weight_decay=hyper["weight_decay"],
        scale=hyper["scale"],
        tensor_scale=hyper["tensor_scale"],
        norm_growth_limit=hyper["norm_growth_limit"],
        update_proj_gap=hyper["update_proj_gap"],
        seed=hyper["seed"],
    )
    p_bf16 = mock.patch.object(reference, "projection", lambda *a, p=reference.projection: p(*a).bfloat16().float())
    out = []
    for i, m in enumerate(mats):
        pair = []
        for dt in (torch.float64, torch.float32):
            r = reference.ReferenceApollo(args["params"][i].cpu().to(dt), hyper["rank"], stream=m["stream"], **kw)
            r.m, r.v = args["exp_avg"][i].cpu().to(dt), args["exp_avg_sq"][i].cpu().to(dt)
            r.norm_prev, r.t = None if t == 1 else args["norm_prev"][i].cpu().to(dt).reshape(()), t - 1
            with p_bf16 if bf16_p and dt == torch.float32 else contextlib.nullcontext():
                r.step(args["grads"][k][i].cpu().to(dt))
            pair.append(r)
        out.append(pair)
    return out


@harness.covers("apollo_step_")
@harness.fuzz
@given(case=step_cases())
def test_apollo_step_(device, case):
    hyper, start, steps, mats = case
    args = place(mats, device, steps)
    everything = [t for k in ("params", *STATE) for t in args[k]] + [g for gs in args["grads"] for g in gs]
    bad = {k for k in ("params", "exp_avg", "exp_avg_sq") for t in args[k] if not t.is_contiguous()}
    bad |= {"grads" for g in args["grads"][0] if not g.is_contiguous()}
    if bad:  # a layout the op does not take: a clear error, and nothing written
        with harness.Unchanged(*everything), pytest.raises(RuntimeError) as err:
            step(args, mats, hyper, start, 0)
        harness.clear_error(err.value, STEP, *bad)
        assert "contiguous" in str(err.value)
        return event("a layout the op refuses")
    bf16 = args["params"][0].dtype == torch.bfloat16
    ulp = 0.0 if not bf16 else 2**-7 if hyper["stochastic_rounding"] else 2**-8
    for k in range(steps):
        t = start + k
        refs = references(args, mats, hyper, t, k, bf16_p=bf16 and device != "cpu")
        with (
            harness.Unchanged(*args["grads"][k]),
            harness.OnlyInside(*[x for key in ("params", *STATE) for x in args[key]]),
        ):
            step(args, mats, hyper, t, k)
        for i, (r64, r32) in enumerate(refs):
            check(args["params"][i], r64.w, r32.w, f"params[{i}] at step {t}", ulp=ulp)
            check(args["exp_avg"][i], r64.m, r32.m, f"exp_avg[{i}] at step {t}")
            check(args["exp_avg_sq"][i], r64.v, r32.v, f"exp_avg_sq[{i}] at step {t}")
            check(args["norm_prev"][i], r64.norm_prev, r32.norm_prev, f"norm_prev[{i}] at step {t}")
    if device == "cpu":  # the same bits with one thread as with several (in the same layouts: the CPU
        # BLAS may round differently for an operand at another alignment, an offset grad's)
        again, threads = place(mats, device, steps), torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for k in range(steps):
                step(again, mats, hyper, start + k, k)
        finally:
            torch.set_num_threads(threads)
        for key in ("params", *STATE):
            for a, b in zip(args[key], again[key]):
                assert torch.equal(raw(a), raw(b)), key


BAD_ARGUMENTS = [
    ("lr", -1.0),
    ("lr", NAN),
    ("lr", INF),
    ("beta1", 1.0),
    ("beta1", NAN),
    ("beta2", -0.5),
    ("beta2", INF),
    ("eps", 0.0),
    ("eps", NAN),
    ("eps", INF),
    ("weight_decay", -0.1),
    ("weight_decay", NAN),
    ("weight_decay", INF),
    ("scale", 0.0),
    ("scale", NAN),
    ("scale", INF),
    ("norm_growth_limit", 0.99),
    ("norm_growth_limit", NAN),
    ("norm_growth_limit", INF),
    ("rank", 0),
    ("update_proj_gap", 0),
    ("seed", -1),
    ("steps", 0),
    ("streams", -1),
    ("streams", 2**32),
    ("params", torch.float16),
    ("params", (2, 3, 4)),
    ("grads", torch.float64),
    ("grads", "one row more"),
    ("exp_avg", "one row more"),
    ("exp_avg_sq", torch.float64),
    ("norm_prev", (2,)),
]


@harness.covers("apollo_step_")
@harness.fuzz
@given(
    rows=harness.sizes(1, 20),
    cols=harness.sizes(1, 20),
    count=st.integers(1, 3),
    which=st.data(),
    bad=st.sampled_from(BAD_ARGUMENTS),
)
def test_apollo_step_rejects_bad_arguments(device, rows, cols, count, which, bad):
    """One bad argument (a hyperparameter, or one matrix's tensor): an error naming it, nothing written."""
    name, value = bad
    i = which.draw(st.integers(0, count - 1))
    args = dict(
        params=[harness.randn((rows, cols), torch.float32, j, device) for j in range(count)],
        grads=[harness.randn((rows, cols), torch.float32, 9 + j, device) for j in range(count)],
        exp_avg=[harness.randn((max(rows, cols), 2), torch.float32, 5, device) for _ in range(count)],
        exp_avg_sq=[torch.ones(max(rows, cols), 2, device=device) for _ in range(count)],
        norm_prev=[torch.ones((), device=device) for _ in range(count)],
        steps=[3] * count,
        streams=list(range(count)),
    )
    # in apollo_step_'s argument order: AdamW's, APOLLO's scaling, its projection and rounding
    hyper = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.1)
    hyper |= dict(scale=1.0, tensor_scale=False, norm_growth_limit=1.01)
    hyper |= dict(rank=2, update_proj_gap=2, seed=0, stochastic_rounding=True)
    if name in hyper:
        hyper[name] = value
    elif name in ("steps", "streams"):
        args[name][i] = value
    else:  # another dtype or shape for tensor i
        t = args[name][i]
        shape = (t.shape[0] + 1, *t.shape[1:]) if value == "one row more" else value
        args[name][i] = t.to(value) if isinstance(value, torch.dtype) else torch.ones(shape, device=device)
    with (
        harness.Unchanged(*[t for k in ("params", "grads", *STATE) for t in args[k]]),
        pytest.raises(RuntimeError) as err,
    ):
        torch.ops.ember.apollo_step_(*args.values(), *hyper.values())
    harness.clear_error(err.value, STEP, name)


# ---- apollo_projection_ ------------------------------------------------------------------------------
@harness.covers("apollo_projection_")
@harness.fuzz
@given(
    rank=harness.sizes(0, 40),
    dim=harness.sizes(0, 70),
    layout=st.one_of(st.sampled_from(["contiguous", "offset"]), harness.layouts()),
    dtype=st.sampled_from([torch.float32] * 3 + [torch.bfloat16, torch.float64]),  # mostly what it takes
    seed=st.integers(-2, 2**63 - 1),
    stream=st.integers(-1, 2**32),
    refresh=st.integers(-1, 2**32),
)
def test_apollo_projection_(device, rank, dim, layout, dtype, seed, stream, refresh):
    out = harness.lay_out(
        torch.full((rank, dim), NAN, dtype=dtype, device=device), layout
    )  # NaN: an element not written shows
    bad = {
        "out"
        for ok in (dtype == torch.float32 or (dtype == torch.bfloat16 and device != "cpu"), out.is_contiguous())
        if not ok
    }
    bad |= {
        name
        for name, v, top in (("seed", seed, 2**63), ("stream", stream, 2**32), ("refresh", refresh, 2**32))
        if not 0 <= v < top
    }
    if bad:
        with harness.Unchanged(out), pytest.raises(RuntimeError) as err:
            torch.ops.ember.apollo_projection_(out, seed, stream, refresh)
        harness.clear_error(err.value, PROJ, *bad)
        return event(f"refused: {sorted(bad)}")
    with harness.OnlyInside(out):
        torch.ops.ember.apollo_projection_(out, seed, stream, refresh)
    expected = reference.projection(rank, dim, seed, stream, refresh) if out.numel() else torch.empty(rank, dim)
    assert torch.equal(out.cpu(), expected.to(dtype)), (out.cpu() != expected.to(dtype)).sum().item()
