"""Fuzz: pack_mask, unpack_mask, masked_linear and masked_linear_backward against float64
references, over every block size (0 = bitmask), all-kept / all-pruned / random masks, odd sizes,
every memory layout and special values.

The rule for pruned weights (ember.ops.masked_linear): a pruned weight is never read and counts as
+0, so the ops equal an IEEE GEMM over where(M, W, 0). NaN/inf stored in a pruned weight never
shows; a non-finite x (grad) element times a pruned +0 is NaN, on the bitmask and the block paths
alike (the latter skips pruned tiles and marks those NaN itself); dW is where(M, gᵀx, 0).

Tolerance: a K-term dot product accumulated with unit roundoff u_acc (fp32 for 16-bit dtypes)
and rounded R times to the output dtype (a block path adds each run of kept tiles into the output)
errs by at most (2K·u_acc + R·u_out)·S, S the largest finite Σ|a||b| (+|bias|) of the product.
"""

import math

import pytest
import torch
from hypothesis import assume, given, strategies as st

from . import harness

E = torch.ops.ember
BLOCKS = (0, 16, 32, 64, 128)  # 0: bitmask
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
NONFINITE = (float("nan"), float("inf"), float("-inf"))


def ref_unpack(packed, rows, cols, block):
    """The bool mask, read bit by bit (bit j % 32 of word j // 32) or tile by tile."""
    p = packed.cpu()
    if block == 0:
        bits = (p.long().bitwise_and(0xFFFFFFFF).unsqueeze(-1) >> torch.arange(32)) & 1
        return bits.reshape(rows, p.shape[1] * 32)[:, :cols].bool()
    return p.bool().repeat_interleave(block, 0).repeat_interleave(block, 1)[:rows, :cols]


@st.composite
def masks(draw, rows, cols, block):
    """A dense bool mask, constant on block×block tiles: all kept, all pruned or random."""
    b = block or 1
    kind = draw(st.sampled_from(["kept", "pruned", "random"]))
    shape = (-(-rows // b), -(-cols // b))
    if kind == "random":
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
        tiles = torch.rand(shape, generator=g) < draw(st.floats(0, 1))
    else:
        tiles = torch.full(shape, kind == "kept")
    return tiles.repeat_interleave(b, 0).repeat_interleave(b, 1)[:rows, :cols]


@st.composite
def values(draw, shape, dtype, device, activation=False):
    """Fresh random values with a few special ones and, maybe, an all-zero row."""
    special = harness.special_values(dtype)
    if dtype == torch.float16:  # products of 57344s overflow fp16 where float64 does not
        special = [v for v in special if not math.isfinite(v) or abs(v) < 1]
    if dtype == torch.bfloat16 and device == "cpu":
        # torch's CPU bf16 GEMM (oneDNN) reads subnormals as 0 (so inf·them is NaN) and, for an odd
        # K, leaks a non-finite element of its row-major A (x, grad) as NaN into the row above
        tiny = torch.finfo(dtype).tiny
        special = [v for v in special if v == 0 or abs(v) >= tiny and (math.isfinite(v) or not activation)]
    t = draw(harness.sprinkle(harness.randn(shape, dtype, draw(st.integers(0, 2**31 - 1))), special))
    if len(shape) == 2 and shape[0] and draw(st.booleans()):
        t[draw(st.integers(0, shape[0] - 1))] = 0
    return t


def placed(draw, t, device):
    return harness.lay_out(t.to(device), draw(harness.layouts(t.dim())))


def product(a, b):
    """a·bᵀ in float64, element by element (IEEE: 0·inf = NaN), and its magnitude Σ|a||b|."""
    a, b = a.double().cpu(), b.double().cpu()
    fa, fb = a.nan_to_num(0, 0, 0).abs(), b.nan_to_num(0, 0, 0).abs()
    return (a[:, None, :] * b[None]).sum(-1), (fa[:, None, :] * fb[None]).sum(-1)


def check(out, ref, mag, k, roundings, dtype, what):
    fi = torch.finfo(dtype)
    # fp32 accumulation, but cuBLAS may reduce split-K partial sums in a 16-bit dtype
    u_acc = 2.0**-53 if dtype == torch.float64 else 2.0**-24 if out.is_cpu or fi.bits == 32 else fi.eps / 2
    fin = ref.isfinite()
    s = mag[fin].max().item() if fin.any() else 0.0
    atol = (2 * k * u_acc + roundings * fi.eps / 2) * s + roundings * fi.tiny * fi.eps  # + subnormal spacing
    harness.assert_matches(out, ref, 0.0, what, atol=atol)


def roundings(block, k):
    return 2 if block == 0 else 2 + -(-k // block)


def masked_weight(w, m):
    return torch.where(m, w.double().cpu(), 0.0)  # pruned: +0, whatever w holds there


@st.composite
def linear_case(draw, device):
    dtype, block = draw(st.sampled_from(DTYPES)), draw(st.sampled_from(BLOCKS))
    n, out, inp = draw(harness.sizes(0, 33)), draw(harness.sizes(0, 129)), draw(harness.sizes(0, 129))
    m = draw(masks(out, inp, block))
    w = draw(values((out, inp), dtype, device))
    if draw(st.booleans()):  # non-finite pruned weights: they must never be read
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
        junk = torch.tensor(NONFINITE, dtype=dtype)[torch.randint(0, 3, w.shape, generator=g)]
        w = torch.where(m, w, junk)
    mask = harness.lay_out(E.pack_mask(m.to(device), block), draw(harness.layouts()))
    x = placed(draw, draw(values((n, inp), dtype, device, activation=True)), device)
    return dtype, block, x, placed(draw, w, device), mask, ref_unpack(mask, out, inp, block)


# ---- packing ------------------------------------------------------------------------------------------
@harness.fuzz
@harness.covers("pack_mask", "unpack_mask")
@given(data=st.data())
def test_pack_unpack(device, data):
    rows, cols, block = (
        data.draw(harness.sizes(0, 129)),
        data.draw(harness.sizes(0, 129)),
        data.draw(st.sampled_from(BLOCKS)),
    )
    m = harness.lay_out(data.draw(masks(rows, cols, block)).to(device), data.draw(harness.layouts()))
    with harness.Unchanged(m):
        packed = E.pack_mask(m, block)
    if block:  # one byte per tile: any element of it, say the first
        assert packed.dtype == torch.uint8 and torch.equal(packed.cpu(), m.cpu()[::block, ::block].to(torch.uint8))
    else:
        words = -(-cols // 32)
        assert packed.dtype == torch.int32 and packed.shape == (rows, words)
        bits = ref_unpack(packed, rows, 32 * words, 0)
        assert torch.equal(bits[:, :cols], m.cpu()) and not bits[:, cols:].any(), "bits past cols must be 0"
    q = harness.lay_out(packed, data.draw(harness.layouts()))
    with harness.Unchanged(q):
        got = E.unpack_mask(q, rows, cols, block)
    assert got.dtype == torch.bool and torch.equal(got.cpu(), ref_unpack(q, rows, cols, block))


@harness.fuzz
@harness.covers("pack_mask")
@given(data=st.data())
def test_pack_refuses_a_block_mask_mixed_on_a_tile(device, data):
    rows, cols, block = (
        data.draw(harness.sizes(1, 129)),
        data.draw(harness.sizes(1, 129)),
        data.draw(st.sampled_from(BLOCKS[1:])),
    )
    i, j = data.draw(st.integers(0, rows - 1)), data.draw(st.integers(0, cols - 1))
    ti, tj = i // block, j // block
    assume((min(rows, ti * block + block) - ti * block) * (min(cols, tj * block + block) - tj * block) > 1)
    m = data.draw(masks(rows, cols, block))
    m[i, j] = ~m[i, j]  # one element off: its tile is mixed
    m = harness.lay_out(m.to(device), data.draw(st.sampled_from(["contiguous", "transposed", "row_sliced", "offset"])))
    with harness.Unchanged(m), pytest.raises(RuntimeError) as err:
        E.pack_mask(m, block)
    harness.clear_error(err.value, "pack_mask", "mask")
    assert f"not constant on {block}×{block} tiles (tile ({ti}, {tj})" in str(err.value)


# ---- masked_linear ------------------------------------------------------------------------------------
@harness.fuzz
@harness.covers("masked_linear")
@given(data=st.data())
def test_masked_linear(device, data):
    dtype, block, x, w, mask, m = data.draw(linear_case(device))
    bias = (
        placed(data.draw, data.draw(values((w.shape[0],), dtype, device)), device) if data.draw(st.booleans()) else None
    )
    with harness.Unchanged(x, w, mask, bias):
        y = E.masked_linear(x, w, mask, block, bias)
    ref, mag = product(x, masked_weight(w, m))
    if bias is not None:
        ref, mag = ref + bias.double().cpu(), mag + bias.double().cpu().nan_to_num(0, 0, 0).abs()
    assert y.dtype == dtype and y.device == x.device
    check(y, ref, mag, x.shape[1], roundings(block, x.shape[1]), dtype, f"y (block {block})")


@harness.fuzz
@harness.covers("masked_linear_backward")
@given(data=st.data())
def test_masked_linear_backward(device, data):
    dtype, block, x, w, mask, m = data.draw(linear_case(device))
    g = placed(data.draw, data.draw(values((x.shape[0], w.shape[0]), dtype, device, activation=True)), device)
    need_x, need_w = data.draw(st.booleans()), data.draw(st.booleans())
    with harness.Unchanged(g, x, w, mask):
        dx, dw = E.masked_linear_backward(g, x, w, mask, block, need_x, need_w)
    if need_x:
        ref, mag = product(g, masked_weight(w, m).t())
        check(dx, ref, mag, w.shape[0], roundings(block, w.shape[0]), dtype, f"dx (block {block})")
    else:
        assert dx.shape == (0,)
    if need_w:
        ref, mag = product(g.t(), x.t())
        ref = torch.where(m, ref, 0.0)  # pruned weights get exactly +0
        check(dw, ref, mag, x.shape[0], 2, dtype, f"dw (block {block})")
        assert (dw.cpu()[~m] == 0).all() and not dw.cpu()[~m].signbit().any(), "pruned dw must be +0"
    else:
        assert dw.shape == (0,)


# ---- bad arguments ------------------------------------------------------------------------------------
LINEAR = ("masked_linear", "masked_linear_backward")
BAD = {  # what goes wrong -> (the ops it applies to, the argument the error must name)
    "x_dtype": (LINEAR, "x"),
    "x_shape": (LINEAR, "x"),
    "integer": (LINEAR, "x"),
    "weight_dim": (LINEAR, "weight"),
    "mask_dtype": ((*LINEAR, "unpack_mask"), "mask"),
    "mask_shape": ((*LINEAR, "unpack_mask"), "mask"),
    "block": ((*LINEAR, "unpack_mask", "pack_mask"), "block"),
    "bias": (("masked_linear",), "bias"),
    "grad": (("masked_linear_backward",), "grad"),
    "rows": (("unpack_mask",), "rows"),
    "not_bool": (("pack_mask",), "mask"),
    "not_2d": (("pack_mask",), "mask"),
}


@harness.fuzz
@harness.covers("pack_mask", "unpack_mask", "masked_linear", "masked_linear_backward")
@given(data=st.data())
def test_bad_arguments_are_refused_clearly(device, data):
    bad = data.draw(st.sampled_from(sorted(BAD)))
    ops, name = BAD[bad]
    op = data.draw(st.sampled_from(ops))
    dtype, block = data.draw(st.sampled_from(DTYPES)), data.draw(st.sampled_from(BLOCKS))
    n, out, inp = data.draw(harness.sizes(1, 40)), data.draw(harness.sizes(1, 40)), data.draw(harness.sizes(1, 40))
    m = data.draw(masks(out, inp, block))
    a = {
        "x": harness.randn((n, inp), dtype, 1, device),
        "weight": harness.randn((out, inp), dtype, 2, device),
        "mask": E.pack_mask(m.to(device), block),
        "bias": harness.randn((out,), dtype, 3, device),
        "grad": harness.randn((n, out), dtype, 4, device),
        "block": block,
        "rows": out,
        "dense": m.to(device),
    }
    other = data.draw(st.sampled_from([d for d in DTYPES if d != dtype]))
    if bad == "x_dtype":
        a["x"] = a["x"].to(other)
    elif bad == "x_shape":
        a["x"] = torch.cat([a["x"], a["x"][:, :1]], 1)
    elif bad == "integer":
        a["x"], a["weight"] = a["x"].long(), a["weight"].long()
    elif bad == "weight_dim":
        a["weight"] = a["weight"][None]
    elif bad == "mask_dtype":
        a["mask"] = a["mask"].to(torch.uint8 if block == 0 else torch.int32)
    elif bad == "mask_shape":
        a["mask"] = torch.cat([a["mask"], a["mask"][:1]], 0)
    elif bad == "block":
        a["block"] = data.draw(st.sampled_from([-16, 1, 8, 24, 256]))
    elif bad == "bias":
        a["bias"] = data.draw(st.sampled_from([a["bias"][:-1], a["bias"].to(other), a["bias"][None]]))
    elif bad == "grad":
        a["grad"] = data.draw(st.sampled_from([a["grad"][:, :-1], a["grad"].to(other), a["x"]]))
        assume(a["grad"].shape != (n, out) or a["grad"].dtype != dtype)
    elif bad == "rows":
        a["rows"] = -1
    elif bad == "not_bool":
        a["dense"] = a["dense"].to(data.draw(st.sampled_from([torch.uint8, torch.int32, torch.float32])))
    elif bad == "not_2d":
        a["dense"] = a["dense"][None]
    calls = {
        "masked_linear": lambda: E.masked_linear(a["x"], a["weight"], a["mask"], a["block"], a["bias"]),
        "masked_linear_backward": lambda: E.masked_linear_backward(
            a["grad"], a["x"], a["weight"], a["mask"], a["block"], True, True
        ),
        "unpack_mask": lambda: E.unpack_mask(a["mask"], a["rows"], inp, a["block"]),
        "pack_mask": lambda: E.pack_mask(a["dense"], a["block"]),
    }
    with harness.Unchanged(*(t for t in a.values() if isinstance(t, torch.Tensor))), pytest.raises(RuntimeError) as err:
        calls[op]()
    harness.clear_error(err.value, op, "packed" if op == "unpack_mask" and name == "mask" else name)
