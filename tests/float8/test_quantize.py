"""quantize_fp8 against the plain-PyTorch reference (bit-exact), plus its defined edge cases."""

import math

import pytest
import torch
from hypothesis import given, strategies as st

import ember
from ember.float8 import quantize_fp8_reference

IN_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
FP8_DTYPES = [torch.float8_e4m3fn, torch.float8_e5m2]
GRANULARITIES = ["tensor", "row", "block", "tile"]


def random_input(shape, dtype, device, seed=0):
    """Non-zero values over a wide range: per-element magnitudes spread over ~2^±6 (so scaled values
    reach the fp8 subnormals) and per-row magnitudes over 10^±3 (so groups get distinct scales)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    x = x * torch.exp(2 * torch.randn(shape, generator=g, dtype=torch.float64))
    if len(shape) == 2:
        x = x * 10 ** (6 * torch.rand(shape[0], 1, generator=g, dtype=torch.float64) - 3)
    if dtype == torch.float16 and x.numel():  # stay finite: inf inputs have their own test
        x = x * (3e4 / x.abs().max())
    return x.to(dtype).to(device)


def assert_same_quantization(q, scale, q_ref, scale_ref):
    assert q.dtype == q_ref.dtype and q.shape == q_ref.shape, (q.dtype, q.shape, q_ref.dtype, q_ref.shape)
    assert scale.dtype == torch.float32 and scale.shape == scale_ref.shape, (scale.shape, scale_ref.shape)
    torch.testing.assert_close(scale.cpu(), scale_ref, rtol=0, atol=0, equal_nan=True)
    q, q_ref = q.cpu(), q_ref.cpu()
    nan = torch.isnan(q_ref.float())
    assert torch.equal(torch.isnan(q.float()), nan), "NaN positions differ"
    bits, ref_bits = q.view(torch.uint8)[~nan], q_ref.view(torch.uint8)[~nan]
    mismatch = (bits != ref_bits).sum().item()
    assert mismatch == 0, f"{mismatch} of {bits.numel()} fp8 values differ from the reference"


def check(x, dtype, granularity, block=128, transpose=False):
    q, scale = ember.ops.quantize_fp8(x, dtype, granularity, block, transpose)
    assert q.device == x.device and scale.device == x.device
    assert_same_quantization(q, scale, *quantize_fp8_reference(x.cpu(), dtype, granularity, block, transpose))
    return q, scale


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("fp8_dtype", FP8_DTYPES)
@pytest.mark.parametrize("in_dtype", IN_DTYPES)
@pytest.mark.parametrize("shape", [(100, 300), (257, 129)])
def test_matches_reference(device, shape, in_dtype, fp8_dtype, granularity, transpose):
    check(random_input(shape, in_dtype, device), fp8_dtype, granularity, 128, transpose)


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("granularity", ["block", "tile"])
@pytest.mark.parametrize("block", [16, 32, 64])
def test_smaller_blocks(device, block, granularity, transpose):
    check(
        random_input((77, 203), torch.bfloat16, device, seed=block), torch.float8_e4m3fn, granularity, block, transpose
    )


@pytest.mark.parametrize("shape", [(7,), (3, 5, 11), ()])
def test_tensorwise_any_shape(device, shape):
    x = random_input(shape, torch.float32, device) if shape else torch.tensor(-3.25, device=device)
    q, scale = check(x, torch.float8_e4m3fn, "tensor")
    assert q.shape == x.shape and scale.shape == ()


@given(
    rows=st.integers(1, 300),
    cols=st.integers(1, 300),
    in_dtype=st.sampled_from(IN_DTYPES),
    fp8_dtype=st.sampled_from(FP8_DTYPES),
    granularity=st.sampled_from(GRANULARITIES),
    block=st.sampled_from([16, 32, 64, 128]),
    transpose=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matches_reference_hypothesis(rows, cols, in_dtype, fp8_dtype, granularity, block, transpose, seed):
    for device in ["cpu"] + (["cuda"] if ember.cuda_available() else []):
        check(random_input((rows, cols), in_dtype, device, seed), fp8_dtype, granularity, block, transpose)


@pytest.mark.parametrize("fp8_dtype,floor_db", [(torch.float8_e4m3fn, 27.0), (torch.float8_e5m2, 21.0)])
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_sqnr_floor(device, fp8_dtype, floor_db, granularity):
    # Floor: rounding to m mantissa bits leaves a relative error ~ uniform in ±2^-(m+1), an SQNR of
    # 20·log10(sqrt(12)·2^m) = 28.9 dB (e4m3) / 22.8 dB (e5m2) on Gaussian data; allow 2 dB less.
    x = torch.randn(509, 384, generator=torch.Generator().manual_seed(1)).to(device)
    q, scale = ember.ops.quantize_fp8(x, fp8_dtype, granularity)
    if granularity == "tile":
        scale = scale.repeat_interleave(128, 0).repeat_interleave(128, 1)[: x.shape[0], : x.shape[1]]
    elif granularity == "block":
        scale = scale.repeat_interleave(128, 1)[:, : x.shape[1]]
    err = x - q.float() * scale
    sqnr = 10 * math.log10(x.pow(2).sum().item() / err.pow(2).sum().item())
    assert sqnr >= floor_db, f"SQNR {sqnr:.1f} dB < {floor_db} dB"


@pytest.mark.parametrize("fp8_dtype", FP8_DTYPES)
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_group_max_hits_fp8_max(device, fp8_dtype, granularity):
    x = random_input((130, 260), torch.float32, device)
    q, scale = ember.ops.quantize_fp8(x, fp8_dtype, granularity)
    assert q.float().abs().max().item() == torch.finfo(fp8_dtype).max


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_zeros_give_unit_scale(device, granularity, transpose):
    x = torch.zeros(33, 150, device=device, dtype=torch.bfloat16)
    q, scale = check(x, torch.float8_e4m3fn, granularity, 128, transpose)
    assert (q.float() == 0).all() and (scale == 1).all()


@pytest.mark.parametrize("fp8_dtype", FP8_DTYPES)
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_poisons_only_its_group(device, bad, fp8_dtype):
    x = random_input((6, 40), torch.float32, device)
    x[2, 7] = bad
    q, scale = check(x, fp8_dtype, "row")
    qf = q.float().cpu()
    if math.isnan(bad):
        assert math.isnan(scale[2, 0].item()) and torch.isnan(qf[2]).all()
    else:
        assert scale[2, 0].item() == math.inf and math.isnan(qf[2, 7].item())
        assert (qf[2, :7] == 0).all() and (qf[2, 8:] == 0).all()
    others = torch.tensor([0, 1, 3, 4, 5])
    assert torch.isfinite(scale[others].cpu()).all() and torch.isfinite(qf[others]).all()


@pytest.mark.parametrize("fp8_dtype", FP8_DTYPES)
@pytest.mark.parametrize("in_dtype", [torch.float32, torch.bfloat16])
def test_tiny_group_stays_finite(device, in_dtype, fp8_dtype):
    # fp8_max / amax would overflow for amax < FLT_MIN · fp8_max (and 0 · inf = NaN).
    x = torch.tensor([[1e-37, 0.0, -3e-38], [1.0, 0.5, 0.0]], dtype=in_dtype, device=device)
    q, scale = check(x, fp8_dtype, "row")
    assert torch.isfinite(q.float()).all() and torch.isfinite(scale).all() and (scale > 0).all()
    torch.testing.assert_close((q.float() * scale).cpu(), x.float().cpu(), rtol=0.07, atol=0)


def test_nan_code_is_canonical(device):
    x = torch.tensor([[-float("nan"), 1.0], [float("inf"), -2.0]], device=device)
    q, scale = ember.ops.quantize_fp8(x, granularity="row")
    assert q.view(torch.uint8)[0, 0].item() == 0x7F and q.view(torch.uint8)[1, 0].item() == 0x7F
    assert scale.view(torch.int32)[0, 0].item() == 0x7FC00000


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_empty(device, granularity):
    x = torch.empty(0, 64, device=device)
    q, scale = check(x, torch.float8_e4m3fn, granularity, 128, True)
    assert q.shape == (64, 0)


def test_outputs_do_not_require_grad(device):
    x = random_input((8, 40), torch.float32, device).requires_grad_()
    q, scale = ember.ops.quantize_fp8(x, granularity="row")
    assert not q.requires_grad and not scale.requires_grad


def test_does_not_modify_input(device):
    x = random_input((50, 70), torch.bfloat16, device)
    before = x.clone()
    ember.ops.quantize_fp8(x, granularity="block", transpose=True)
    assert torch.equal(x, before)


@pytest.mark.parametrize(
    "make_x,kwargs,message",
    [
        (lambda d: torch.ones(4, 8, dtype=torch.int32, device=d), {}, "x must be float32, float16 or bfloat16"),
        (lambda d: torch.ones(4, 8, device=d), {"dtype": torch.float16}, "dtype must be torch.float8_e4m3fn"),
        (lambda d: torch.ones(4, 8, device=d), {"granularity": "col"}, "granularity must be"),
        (
            lambda d: torch.ones(4, 8, device=d),
            {"granularity": "block", "block": 100},
            "block must be 16, 32, 64 or 128",
        ),
        (lambda d: torch.ones(8, 4, device=d).t(), {"granularity": "row"}, "x must be contiguous"),
        (lambda d: torch.ones(8, device=d), {"granularity": "row"}, "x must be 2-D"),
        (lambda d: torch.ones(2, 3, 4, device=d), {"transpose": True}, "x must be 2-D"),
    ],
)
def test_bad_input_names_op_and_argument(device, make_x, kwargs, message):
    x = make_x(device)
    before = x.clone()
    with pytest.raises(RuntimeError, match="quantize_fp8") as info:
        ember.ops.quantize_fp8(x, **kwargs)
    assert message in str(info.value)
    assert torch.equal(x, before)


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_opcheck(device, granularity, transpose):
    x = random_input((40, 136), torch.bfloat16, device)
    torch.library.opcheck(torch.ops.ember.quantize_fp8.default, (x, torch.float8_e4m3fn, granularity, 32, transpose))


def test_inside_torch_compile_fullgraph(device):
    def f(x):
        q, scale = ember.ops.quantize_fp8(x, granularity="row", transpose=True)
        return q.float() * scale

    x = random_input((24, 48), torch.bfloat16, device)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), f(x), rtol=0, atol=0)
