"""Fuzz tests of the float8 ops. quantize_fp8 must match the plain-PyTorch reference bit for bit;
fp8_gemm must match the float64 reference within the rounding of its fp32 emulation. A case may
draw one fault (an invalid argument); then the op must raise an error naming itself and that
argument. Either way the inputs stay byte-for-byte unchanged."""

import pytest
import torch
from hypothesis import event, given, strategies as st

import ember
from ember.float8 import fp8_gemm_reference, quantize_fp8_reference
from ember.float8.reference import expand_scale

from .harness import Unchanged, clear_error, covers, fuzz, lay_out, layouts, randn, sizes, special_values, sprinkle

E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2
FP8 = (E4M3, E5M2)
FLOATS = (torch.float32, torch.float16, torch.bfloat16)  # x, bias and out_dtype
GRANULARITIES = ("tensor", "row", "block", "tile")
BLOCKS = (16, 32, 64, 128)
ACCEPTED = ("contiguous", "offset")  # the layouts the ops take; the others must be rejected
RECIPES = ("tensorwise", "rowwise", "blockwise", "blockwise_wgrad")
PAIRS = ((E4M3, E4M3), (E4M3, E5M2), (E5M2, E4M3))
# Codes that plain rounding rarely makes: every NaN encoding, ±max, ±0, subnormals, ±inf (e5m2).
FP8_CODES = {
    E4M3: [0x7F, 0xFF, 0x7E, 0xFE, 0x00, 0x80, 0x01, 0x87, 0x08],
    E5M2: [0x7C, 0xFC, 0x7D, 0xFE, 0x7B, 0xFB, 0x00, 0x80, 0x01, 0x83, 0x04],
}
TINY = torch.finfo(torch.float32).tiny
SCALE_VALUES = [0.0, float("nan"), 2.0**20, -1.0]
# Only where each element is dequantized (the CPU): CUDA's kernels scale the fp32 sums instead,
# so an inf scale over a zero code gives ±inf rather than NaN, and tiny scales round elsewhere.
SCALE_VALUES_CPU = SCALE_VALUES + [float("inf"), TINY, TINY * 2**-10]


def faults(*names):
    """None (a valid case) two times in three, else the argument this case makes invalid."""
    return st.integers(0, 2).flatmap(lambda i: st.sampled_from(names) if i == 2 else st.just(None))


def choose(data, label, valid, invalid, broken):
    return data.draw(st.sampled_from(invalid if broken else valid), label=label)


def wide(shape, seed, exponent=0):
    """Non-zero values with magnitudes spread over ~2^±6 around 2^exponent, so that groups get
    distinct scales and scaled values reach the fp8 subnormals and the saturation point."""
    return randn(shape, torch.float64, seed) * randn(shape, torch.float64, seed + 1).mul(2).exp() * 2.0**exponent


def place(t, layout):
    """lay_out for any rank (only 2-D tensors have the transposed / sliced / expanded layouts)."""
    return lay_out(t, layout) if t.dim() == 2 or layout in ACCEPTED else t


def assert_bits(out, ref, nan_bits, what):
    """Bit-exact, every NaN being the op's one canonical NaN."""
    assert out.shape == ref.shape and out.dtype == ref.dtype, (
        f"{what}: {out.dtype}{tuple(out.shape)}, expected {ref.dtype}{tuple(ref.shape)}"
    )
    as_int = torch.uint8 if ref.element_size() == 1 else torch.int32
    got = out.cpu().view(as_int)
    want = torch.where(ref.float().isnan(), nan_bits, ref.view(as_int))
    diff = (got != want).nonzero()
    assert len(diff) == 0, (
        f"{what}: {len(diff)} of {ref.numel()} differ, first at {diff[0].tolist()}: {got[tuple(diff[0])].item():#x} != {want[tuple(diff[0])].item():#x}"
    )


def raises_naming(op, bad, call):
    with pytest.raises(RuntimeError) as err:
        call()
    clear_error(err.value, op, *bad)


@covers("quantize_fp8")
@fuzz
@given(data=st.data())
def test_quantize_fp8(device, data):
    fault = data.draw(faults("x", "dtype", "granularity", "block", "dims", "layout"), label="fault")
    granularity = choose(data, "granularity", GRANULARITIES, ("col", ""), fault == "granularity")
    block = choose(data, "block", BLOCKS, (0, 100, 256, -128, 2**32 + 16), fault == "block")
    in_dtype = choose(data, "x dtype", FLOATS, (torch.float64, torch.int32), fault == "x")
    dtype = choose(data, "dtype", FP8, (torch.float16, torch.float8_e4m3fnuz), fault == "dtype")
    dims = choose(data, "dims", (2,), (0, 1, 3), fault == "dims")  # valid for "tensor" untransposed
    transpose = data.draw(st.booleans(), label="transpose")
    rows, cols = data.draw(sizes(0, 130), label="rows of y"), data.draw(sizes(0, 130), label="cols of y")
    exponent = data.draw(st.one_of(st.integers(-12, 12), st.sampled_from((-140, -125, 60))), label="exponent")
    y = wide(
        {0: (), 1: (cols,), 2: (rows, cols), 3: (rows % 5, 3, cols)}[dims], data.draw(st.integers(0, 2**20)), exponent
    )
    if dims == 2 and y.numel():  # an all-zero group (amax 0), row, or tensor
        zero = data.draw(st.sampled_from(("none", "group", "row", "all")), label="zeros")
        gr, gc = {"row": (1, cols), "block": (1, block), "tile": (block, block)}.get(granularity, (rows, cols))
        gr, gc = (max(gr, 1), max(gc, 1)) if zero == "group" else (1, cols) if zero == "row" else (rows, cols)
        i, j = data.draw(st.integers(0, (rows - 1) // gr)), data.draw(st.integers(0, (cols - 1) // gc))
        if zero != "none":
            y[i * gr : (i + 1) * gr, j * gc : (j + 1) * gc] = data.draw(st.sampled_from((0.0, -0.0)))
    x = (y.t() if transpose and dims == 2 else y).to(in_dtype)
    if in_dtype.is_floating_point:
        x = data.draw(sprinkle(x, special_values(in_dtype) + [-float("nan")]), label="x")  # NaN's sign is dropped
    x = place(x.to(device), data.draw(layouts() if fault == "layout" else st.sampled_from(ACCEPTED), label="layout"))

    bad = ["x"] * (
        in_dtype not in FLOATS or not x.is_contiguous() or (x.dim() != 2 and (granularity != "tensor" or transpose))
    )
    bad += ["dtype"] * (dtype not in FP8) + ["granularity"] * (granularity not in GRANULARITIES)
    bad += ["block"] * (granularity in ("block", "tile") and block not in BLOCKS)
    with Unchanged(x):
        call = lambda: ember.ops.quantize_fp8(x, dtype, granularity, block, transpose)  # noqa: E731
        event(f"rejects {bad[0]}" if bad else f"{granularity} transpose={transpose}")
        if bad:
            return raises_naming("ember.quantize_fp8", bad, call)
        q, scale = call()
    assert q.device == x.device and scale.device == x.device
    fake = torch.ops.ember.quantize_fp8(x.to("meta"), dtype, granularity, block, transpose)  # register_fake agrees
    assert [(t.shape, t.dtype) for t in fake] == [(q.shape, q.dtype), (scale.shape, scale.dtype)]
    q_ref, scale_ref = quantize_fp8_reference(x.cpu(), dtype, granularity, block, transpose)
    assert_bits(q, q_ref, 0x7F, "q")  # fp8.h: NaN is always the code 0x7f
    assert_bits(scale, scale_ref, 0x7FC00000, "scale")


def scale_shapes(recipe, m, n, k):
    kb, nb = -(-k // 128), -(-n // 128)
    return {
        "tensorwise": ((), ()),
        "rowwise": ((m, 1), (n, 1)),
        "blockwise": ((m, kb), (nb, kb)),
        "blockwise_wgrad": ((m, kb), (n, kb)),
    }[recipe]


def gemm_errors(a, sa, b, sb, out_dtype, bias):
    """The arguments fp8_gemm must reject (none: a valid call), from the tensors themselves."""
    bad = []
    for name, t in (("a", a), ("b", b), ("a_scale", sa), ("b_scale", sb), ("bias", bias)):
        if t is not None and (not t.is_contiguous() and name != "bias" or t.device != a.device):
            bad.append(name)
    bad += ["a"] * (a.dtype not in FP8 or a.dim() != 2) + ["b"] * (b.dtype not in FP8 or b.dim() != 2)
    bad += ["a", "b"] * (a.dtype == b.dtype == E5M2 or a.shape[1] != b.shape[1])
    bad += ["a_scale"] * (sa.dtype != torch.float32) + ["b_scale"] * (sb.dtype != torch.float32)
    bad += ["out_dtype"] * (out_dtype not in FLOATS)
    (m, k), n = a.shape, b.shape[0]
    bad += ["K"] * (k % 16) + ["N"] * (n % 16)
    if (tuple(sa.shape), tuple(sb.shape)) not in [scale_shapes(r, m, n, k) for r in RECIPES]:
        bad += ["a_scale", "b_scale"]
    if bias is not None and (bias.dtype not in FLOATS or tuple(bias.shape) != (n,)):
        bad.append("bias")
    return bad


def assert_gemm_close(out, ref, tol):
    """Where ref is finite: out within [ref - tol, ref + tol] as rounded to out's dtype (so a result
    may overflow to ±inf only where the bound reaches it); elsewhere the same NaN / ±inf."""
    o = out.double().cpu()
    lo, hi = (ref - tol).to(out.dtype).double(), (ref + tol).to(out.dtype).double()
    fin = ref.isfinite()
    bad = fin & ~((lo <= o) & (o <= hi)) | ~fin & ~((o == ref) | o.isnan() & ref.isnan())
    idx = bad.nonzero()
    assert len(idx) == 0, (
        f"{len(idx)} of {ref.numel()} outside the bound, first at {idx[0].tolist()}: "
        f"{o[tuple(idx[0])].item()!r} not in [{lo[tuple(idx[0])].item()!r}, {hi[tuple(idx[0])].item()!r}]"
    )


@covers("fp8_gemm")
@fuzz
@given(data=st.data())
def test_fp8_gemm(device, data):
    names = ("dtype", "layout", "K", "N", "scale_dtype", "recipe", "out_dtype", "bias") + ("device",) * (
        device != "cpu"
    )
    fault = data.draw(faults(*names), label="fault")
    pair = choose(
        data, "a, b dtypes", PAIRS, ((E5M2, E5M2), (torch.bfloat16, E4M3), (E4M3, torch.float32)), fault == "dtype"
    )
    recipe = data.draw(st.sampled_from(RECIPES), label="recipe")
    m = data.draw(sizes(0, 130), label="M")
    n = data.draw(sizes(1, 130) if fault == "N" else st.integers(0, 9).map(lambda i: 16 * i), label="N")
    k = data.draw(sizes(1, 160) if fault == "K" else st.integers(0, 10).map(lambda i: 16 * i), label="K")
    k_b = data.draw(sizes(0, 160), label="K of b") if fault == "K" and data.draw(st.booleans()) else k
    out_dtype = choose(data, "out_dtype", FLOATS, (torch.float64, torch.int32, E4M3), fault == "out_dtype")
    seed = data.draw(st.integers(0, 2**20), label="seed")

    def operand(rows, cols, dtype, seed):
        x = wide((rows, cols), seed).float()
        if dtype not in FP8:
            return x.to(dtype)
        codes = data.draw(sprinkle(x.to(dtype).view(torch.uint8), FP8_CODES[dtype], max_fraction=0.03))
        if rows and data.draw(st.booleans()):  # an all-zero row
            codes[data.draw(st.integers(0, rows - 1))] = 0
        return codes.view(dtype)

    def scale(shape, seed):
        s = torch.exp2(torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 12 - 8)
        s = data.draw(sprinkle(s, SCALE_VALUES_CPU if device == "cpu" else SCALE_VALUES, max_fraction=0.1))
        return s.to(data.draw(st.sampled_from((torch.float64, torch.bfloat16)))) if fault == "scale_dtype" else s

    a_shape, b_shape = scale_shapes(recipe, m, n, k)
    if fault == "recipe":  # the other operand's scales from another recipe, or one row too many
        wrong = scale_shapes(data.draw(st.sampled_from(RECIPES)), m, n, k)[1]
        b_shape = data.draw(st.sampled_from((wrong, (n + 1, 1), (1,))))
    a, sa = operand(m, k, pair[0], seed), scale(a_shape, seed + 2)
    b, sb = operand(n, k_b, pair[1], seed + 4), scale(b_shape, seed + 6)
    bias = None
    if data.draw(st.booleans(), label="bias") or fault == "bias":
        bias_fault = fault == "bias" and data.draw(st.sampled_from(("dtype", "shape")), label="bias fault")
        bias_dtype = choose(data, "bias dtype", FLOATS, (torch.float64, torch.int32), bias_fault == "dtype")
        bias = wide((n + (bias_fault == "shape"),), seed + 8, data.draw(st.integers(-8, 8)))
        bias = data.draw(
            sprinkle(bias.to(bias_dtype), special_values(bias_dtype) if bias_dtype.is_floating_point else [0])
        )
        bias = place(bias.to(device), data.draw(layouts(1), label="bias layout"))  # any layout will do
    layout = layouts() if fault == "layout" else st.sampled_from(ACCEPTED)
    a, sa, b, sb = (place(t.to(device), data.draw(layout, label="layout")) for t in (a, sa, b, sb))
    if fault == "device":  # one argument left on the CPU
        which = data.draw(st.sampled_from(("b", "a_scale", "b_scale", "bias")), label="on the CPU")
        a, sa, b, sb, bias = (
            t.cpu() if name == which and t is not None else t
            for name, t in zip(("a", "a_scale", "b", "b_scale", "bias"), (a, sa, b, sb, bias))
        )
    fast_accum = data.draw(st.booleans(), label="fast_accum")

    bad = gemm_errors(a, sa, b, sb, out_dtype, bias)
    with Unchanged(a, sa, b, sb, bias):
        call = lambda: ember.ops.fp8_gemm(a, sa, b, sb, out_dtype, bias, fast_accum)  # noqa: E731
        event(f"rejects {bad[0]}" if bad else recipe)
        if bad:
            return raises_naming("ember.fp8_gemm", bad, call)
        # CUDA's TMA needs 16-byte aligned fp8 operands where a CUTLASS kernel runs the problem.
        misaligned = [name for name, t in (("a", a), ("b", b)) if device != "cpu" and t.data_ptr() % 16]
        try:
            out = call()
        except RuntimeError as err:
            if not misaligned:
                raise
            return clear_error(err, "ember.fp8_gemm", *misaligned)
    assert out.shape == (m, n) and out.dtype == out_dtype and out.device == a.device
    meta = [None if t is None else t.to("meta") for t in (a, sa, b, sb, bias)]
    fake = torch.ops.ember.fp8_gemm(*meta[:4], out_dtype, meta[4], fast_accum)  # register_fake agrees
    assert fake.shape == out.shape and fake.dtype == out.dtype
    args = [t.cpu() for t in (a, sa, b, sb)]
    ref = fp8_gemm_reference(*args, out_dtype=torch.float64, bias=None if bias is None else bias.cpu())
    # The bound: the operands dequantized in fp32 and a k-term fp32 dot product, each within
    # (k + 3)·u relative of Σ|a||b| + |bias| (u = 2^-24; 2^-13 for CUDA's fp8 tensor cores), plus
    # what underflow loses (an fp32 ulp of a subnormal per term; CUDA may flush to zero).
    ad = args[0].double() * expand_scale(args[1].double(), m, k)
    bd = args[2].double() * expand_scale(args[3].double(), n, k)
    mags = ad.abs() @ bd.abs().T + (0 if bias is None else bias.cpu().double().abs())
    u, ulp = (2.0**-13, 2.0**-126) if out.is_cuda else (2.0**-24, 2.0**-149)
    tol = (k + 3) * u * mags + ulp * (k + ad.abs().sum(1, keepdim=True) + bd.abs().sum(1))
    assert_gemm_close(out, ref, tol)
