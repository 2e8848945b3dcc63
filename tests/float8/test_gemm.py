"""fp8_gemm against a float64 reference of the dequantized operands, for every recipe, fp8 pair,
output dtype, odd M and bias; plus its checks of bad input."""

import os

import pytest
import torch
from hypothesis import given, strategies as st

import ember
from ember.float8 import fp8_gemm_reference

# On CUDA a CUTLASS kernel that refuses its problem is an error, not a silent fallback.
os.environ.setdefault("EMBER_FP8_GEMM_STRICT", "1")

E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2
PAIRS = [(E4M3, E4M3), (E4M3, E5M2), (E5M2, E4M3)]
OUT_DTYPES = [torch.bfloat16, torch.float16, torch.float32]
# recipe -> (granularity of a, granularity of b) in quantize_fp8's terms
RECIPES = {
    "tensorwise": ("tensor", "tensor"),
    "rowwise": ("row", "row"),
    "blockwise": ("block", "tile"),
    "blockwise_wgrad": ("block", "block"),
}
OUT_EPS = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11, torch.float32: 2.0**-23}


def operand(rows, cols, seed, device):
    """Non-zero values whose magnitude varies by row and by 128-column run (so every recipe's
    groups get distinct scales)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g)
    x *= torch.exp(torch.randn(rows, 1, generator=g))
    x *= torch.exp(torch.randn(1, -(-cols // 128), generator=g)).repeat_interleave(128, 1)[:, :cols]
    return (x / cols**0.5).to(device)  # products stay within fp16's range


def quantized(rows, cols, dtype, granularity, seed, device):
    return ember.ops.quantize_fp8(operand(rows, cols, seed, device), dtype, granularity)


def check_gemm(m, n, k, recipe, pair, out_dtype, with_bias, device, fast_accum=True):
    qa, sa = quantized(m, k, pair[0], RECIPES[recipe][0], 1, device)
    qb, sb = quantized(n, k, pair[1], RECIPES[recipe][1], 2, device)
    bias = operand(1, n, 3, device)[0].to(out_dtype) if with_bias else None
    out = ember.ops.fp8_gemm(qa, sa, qb, sb, out_dtype=out_dtype, bias=bias, fast_accum=fast_accum)
    assert out.shape == (m, n) and out.dtype == out_dtype and out.device == qa.device
    args = [t.cpu() for t in (qa, sa, qb, sb)]
    ref = fp8_gemm_reference(*args, out_dtype=torch.float64, bias=None if bias is None else bias.cpu())
    # Bound: the accumulation's rounding, k·u·Σ|a||b| (u = 2^-24 in fp32; 2^-13 on CUDA, whose fp8
    # tensor cores keep ~14 bits between promotions), plus one rounding to out_dtype.
    mags = (qa.cpu().double().abs() * _expand(args[1], m, k)) @ (qb.cpu().double().abs() * _expand(args[3], n, k)).T
    u = 2.0**-13 if out.is_cuda else 2.0**-24
    tol = 2 * k * u * mags + OUT_EPS[out_dtype] * ref.abs() + torch.finfo(out_dtype).tiny
    err = (out.cpu().double() - ref).abs()
    assert not torch.isnan(out).any()
    assert (err <= tol).all(), f"max err/tol {(err / tol).max().item():.3g} ({recipe}, {pair}, {out_dtype})"
    # Normwise too, since the elementwise bound is loose for CUDA's long K: fast accumulation
    # keeps ~14 bits (≥ 30 dB), promoted and exact paths are limited by the output's rounding.
    fast = fast_accum and recipe in ("tensorwise", "rowwise") and pair[0] == E4M3
    floor = 30 if out.is_cuda and fast else 40
    assert sqnr(ref, out) >= floor, f"{sqnr(ref, out):.1f} dB ({recipe}, {pair}, {out_dtype}, fast={fast})"
    return out


def sqnr(ref, x):
    ref, x = ref.double().cpu(), x.double().cpu()
    return (10 * torch.log10(ref.pow(2).sum() / (ref - x).pow(2).sum().clamp_min(1e-300))).item()


def _expand(scale, rows, cols):
    from ember.float8.reference import expand_scale

    return expand_scale(scale.double(), rows, cols)


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("out_dtype", OUT_DTYPES)
@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{str(p[0])[-6:]}x{str(p[1])[-6:]}")
@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("m", [1, 37, 129])
def test_matches_reference(device, m, recipe, pair, out_dtype, with_bias):
    # N = 272 and K = 400: neither a multiple of 128, so blockwise groups are ragged on both.
    check_gemm(m, 272, 400, recipe, pair, out_dtype, with_bias, device)


@pytest.mark.parametrize("fast_accum", [False, True])
@pytest.mark.parametrize("recipe", RECIPES)
def test_large_k_and_accumulation_modes(device, recipe, fast_accum):
    check_gemm(200, 256, 2048, recipe, (E4M3, E4M3), torch.bfloat16, False, device, fast_accum)


@given(
    m=st.integers(1, 300),
    n16=st.integers(1, 20),
    k16=st.integers(1, 40),
    recipe=st.sampled_from(list(RECIPES)),
    pair=st.sampled_from(PAIRS),
    out_dtype=st.sampled_from(OUT_DTYPES),
    with_bias=st.booleans(),
)
def test_shapes_hypothesis(m, n16, k16, recipe, pair, out_dtype, with_bias):
    for device in ["cpu"] + (["cuda"] if ember.cuda_available() else []):
        check_gemm(m, 16 * n16, 16 * k16, recipe, pair, out_dtype, with_bias, device)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipes_approximate_the_fp32_product(device, recipe):
    # End to end (quantize both, multiply) against the unquantized product: the recipes' SQNR.
    a, b = operand(129, 384, 1, device), operand(256, 384, 2, device)
    qa, sa = ember.ops.quantize_fp8(a, E4M3, RECIPES[recipe][0])
    qb, sb = ember.ops.quantize_fp8(b, E4M3, RECIPES[recipe][1])
    out = ember.ops.fp8_gemm(qa, sa, qb, sb, out_dtype=torch.float32)
    ref = (a.double() @ b.double().T).cpu()
    sqnr = 10 * torch.log10(ref.pow(2).sum() / (ref - out.cpu().double()).pow(2).sum())
    assert sqnr > 25, f"{recipe}: {sqnr:.1f} dB"


def test_empty_and_zero_k(device):
    qa, sa = quantized(5, 32, E4M3, "row", 1, device)
    qb, sb = quantized(16, 32, E4M3, "row", 2, device)
    assert ember.ops.fp8_gemm(qa[:0], sa[:0], qb, sb).shape == (0, 16)
    bias = torch.arange(16.0, device=device)
    empty_k = torch.empty(5, 0, dtype=E4M3, device=device), torch.empty(16, 0, dtype=E4M3, device=device)
    out = ember.ops.fp8_gemm(empty_k[0], sa, empty_k[1], sb, out_dtype=torch.float32, bias=bias)
    assert torch.equal(out.cpu(), bias.cpu().expand(5, 16))


def test_empty_n(device):
    # N = 0: an empty b has a null data pointer, which the CUDA path's alignment check refused
    qa, sa = quantized(8, 32, E4M3, "row", 1, device)
    qb, sb = quantized(16, 32, E4M3, "row", 2, device)
    assert ember.ops.fp8_gemm(qa, sa, qb[:0], sb[:0]).shape == (8, 0)
    empty = torch.empty(0, 32, dtype=E4M3, device=device), torch.ones((), device=device)
    assert ember.ops.fp8_gemm(qa, sa.max(), *empty).shape == (8, 0)


def test_nan_scale_propagates(device):
    qa, sa = quantized(8, 32, E4M3, "row", 1, device)
    qb, sb = quantized(16, 32, E4M3, "row", 2, device)
    sa[3] = float("nan")
    out = ember.ops.fp8_gemm(qa, sa, qb, sb, out_dtype=torch.float32).cpu()
    assert torch.isnan(out[3]).all() and not torch.isnan(out[torch.arange(8) != 3]).any()


@pytest.mark.parametrize("recipe", RECIPES)
def test_opcheck(device, recipe):
    qa, sa = quantized(33, 160, E4M3, RECIPES[recipe][0], 1, device)
    qb, sb = quantized(48, 160, E4M3, RECIPES[recipe][1], 2, device)
    bias = torch.randn(48, device=device)
    before = [t.clone() for t in (qa, sa, qb, sb, bias)]
    # opcheck's schema test compares inputs with arithmetic torch lacks for fp8 on CPU, so it is
    # replaced by the byte comparison below (the schema declares no mutation).
    utils = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    for args in [(qa, sa, qb, sb, torch.bfloat16, bias, True), (qa, sa, qb, sb, torch.float32, None, False)]:
        torch.library.opcheck(torch.ops.ember.fp8_gemm.default, args, test_utils=utils)
    for t, b in zip((qa, sa, qb, sb, bias), before):
        assert torch.equal(t.view(torch.uint8), b.view(torch.uint8)) if t.element_size() == 1 else torch.equal(t, b)


def test_compiles(device):
    qa, sa = quantized(33, 160, E4M3, "row", 1, device)
    qb, sb = quantized(48, 160, E4M3, "row", 2, device)
    fn = torch.compile(lambda *t: ember.ops.fp8_gemm(*t) * 2, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(fn(qa, sa, qb, sb), ember.ops.fp8_gemm(qa, sa, qb, sb) * 2, rtol=0, atol=0)


def bad_input_cases(device):
    qa, sa = quantized(8, 32, E4M3, "row", 1, device)
    qb, sb = quantized(16, 32, E4M3, "row", 2, device)
    f32 = torch.randn(8, 32, device=device)
    return {
        "a must be torch.float8": ((f32, sa, qb, sb), {}),
        "cannot both be float8_e5m2": ((qa.to(E5M2), sa, qb.to(E5M2), sb), {}),
        "a must be 2-D": ((qa[None], sa, qb, sb), {}),
        "b must be row-major contiguous": ((qa, sa, qb.t().contiguous().t(), sb), {}),
        "the same K": ((qa, sa, qb[:, :16].contiguous(), sb), {}),
        "K \\(a.shape\\[1\\]\\) must be a multiple of 16": (
            (qa[:, :24].contiguous(), sa, qb[:, :24].contiguous(), sb),
            {},
        ),
        "N \\(b.shape\\[0\\]\\) must be a multiple of 16": ((qa, sa, qb[:12].contiguous(), sb[:12].contiguous()), {}),
        "a_scale must be float32": ((qa, sa.double(), qb, sb), {}),
        "b_scale must be contiguous": ((qa, sa, qb, sb.repeat(2, 1)[::2]), {}),
        "match no recipe": ((qa, sa, qb, sb[0, 0]), {}),
        "out_dtype must be": ((qa, sa, qb, sb), {"out_dtype": torch.int32}),
        "bias must have shape \\(N,\\)": ((qa, sa, qb, sb), {"bias": torch.zeros(15, device=device)}),
        "bias must be float32": ((qa, sa, qb, sb), {"bias": torch.zeros(16, dtype=torch.float64, device=device)}),
    }


@pytest.mark.parametrize("case", list(bad_input_cases("cpu")))
def test_bad_input_names_the_argument(device, case):
    args, kwargs = bad_input_cases(device)[case]
    with pytest.raises(RuntimeError, match="ember.fp8_gemm: " + ".*" + case):
        ember.ops.fp8_gemm(*args, **kwargs)


@pytest.mark.skipif(not ember.cuda_available(), reason="needs a GPU")
def test_device_mismatch_and_alignment():
    qa, sa = quantized(8, 48, E4M3, "row", 1, "cuda")
    qb, sb = quantized(16, 48, E4M3, "row", 2, "cuda")
    with pytest.raises(RuntimeError, match=r"ember\.fp8_gemm: b_scale must be on cuda:0 \(where a is\)"):
        ember.ops.fp8_gemm(qa, sa, qb, sb.cpu())
    unaligned = torch.empty(8 * 48 + 8, dtype=E4M3, device="cuda")[8:].view(8, 48)
    with pytest.raises(RuntimeError, match="ember.fp8_gemm: a must start at a 16-byte aligned address"):
        ember.ops.fp8_gemm(unaligned, sa, qb, sb)


@pytest.mark.parametrize("fp8", [E4M3, E5M2])
def test_every_fp8_code_decodes_exactly(device, fp8):
    # Row i of a holds code i in column 0 and zeros elsewhere; b is the identity, so out[:, 0] is
    # each code's value (inf and NaN included).
    codes = torch.zeros(256, 16, dtype=torch.uint8)
    codes[:, 0] = torch.arange(256, dtype=torch.uint8)
    a = codes.view(fp8).to(device)
    eye = torch.eye(16).to(E4M3).to(device)
    one = torch.ones((), device=device)
    out = ember.ops.fp8_gemm(a, one, eye, one, out_dtype=torch.float32).cpu()[:, 0]
    values = a.cpu().float()[:, 0]
    nan = values.isnan()
    assert torch.equal(out.isnan(), nan)
    assert torch.equal(out[~nan], values[~nan])
