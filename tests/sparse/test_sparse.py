"""sparse: mask packing, masked_linear against a float64 W⊙M reference, masks that stay zero
under AdamW, layer-wise densities against the paper's formula, random pruning."""

import io
import math

import pytest
import torch
from hypothesis import given, strategies as st

import ember
from ember.ops import masked_linear, pack_mask, unpack_mask
from ember.sparse import SparseLinear, densities_for_shapes, layerwise_densities, random_prune, sparsity_report


def block_mask(rows, cols, block, density, seed=0):
    g = torch.Generator().manual_seed(seed)
    tiles = torch.rand(-(-rows // block), -(-cols // block), generator=g) < density
    tiles[0, :] = True  # a fully dense tile row
    if tiles.shape[1] > 1:
        tiles[:, -1] = False  # a fully empty tile column
    return tiles.repeat_interleave(block, 0).repeat_interleave(block, 1)[:rows, :cols].contiguous()


def element_mask(rows, cols, density, seed=0):
    m = torch.rand(rows, cols, generator=torch.Generator().manual_seed(seed)) < density
    m[1, :] = False  # an empty row
    m[:, 2] = True  # a dense column
    return m


# ---- packing ------------------------------------------------------------------------------------------
@given(st.integers(1, 90), st.integers(1, 200), st.integers(0, 1000))
def test_bitmask_round_trip(rows, cols, seed):
    m = torch.rand(rows, cols, generator=torch.Generator().manual_seed(seed)) < 0.5
    p = pack_mask(m)
    assert p.dtype == torch.int32 and p.shape == (rows, -(-cols // 32))
    assert torch.equal(unpack_mask(p, m.shape), m)
    # bit j % 32 of word j // 32 (include/ember/sparse.h)
    i, j = rows // 2, cols - 1
    assert bool((int(p[i, j // 32]) & 0xFFFFFFFF) >> (j % 32) & 1) == bool(m[i, j])


@pytest.mark.parametrize("block", [16, 32, 64, 128])
def test_block_mask_round_trip(device, block):
    m = block_mask(150, 77, block, 0.5).to(device)
    p = pack_mask(m, block)
    assert p.dtype == torch.uint8 and p.shape == (-(-150 // block), -(-77 // block))
    assert torch.equal(unpack_mask(p, m.shape, block), m)


def test_pack_errors():
    with pytest.raises(ValueError, match="block must be 16, 32, 64 or 128"):
        pack_mask(torch.ones(4, 4, dtype=torch.bool), block=24)
    with pytest.raises(RuntimeError, match="not constant on 16×16 tiles"):
        pack_mask(torch.rand(40, 40) < 0.5, block=16)
    with pytest.raises(RuntimeError, match="2-D bool"):
        pack_mask(torch.ones(4, 4), block=None)
    with pytest.raises(RuntimeError, match="uint8 block mask of a 40×40 weight"):
        masked_linear(
            torch.randn(3, 40), torch.randn(40, 40), pack_mask(torch.ones(40, 40, dtype=torch.bool)), block=16
        )


# ---- masked_linear ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["bitmask", 16, 32, 128])
def test_masked_linear_matches_reference(device, kind, dtype):
    n, out, inp = 37, 150, 277  # not multiples of any block; 3 tile columns at 128
    block = None if kind == "bitmask" else kind
    m = element_mask(out, inp, 0.3) if block is None else block_mask(out, inp, block, 0.4)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, inp, generator=g).to(dtype).to(device).requires_grad_()
    w = torch.randn(out, inp, generator=g).to(dtype).to(device).requires_grad_()
    b = torch.randn(out, generator=g).to(dtype).to(device).requires_grad_()
    y = masked_linear(x, w, pack_mask(m.to(device), block), b, block=block)
    rx, rw, rb = (t.detach().cpu().double().requires_grad_() for t in (x, w, b))
    ref = rx @ (rw * m.double()).t() + rb
    tol = 1e-5 if dtype == torch.float32 else 1e-2  # fp32: GEMM rounding; bf16: one output rounding
    scale = ref.abs().max().item()
    assert (y.detach().cpu().double() - ref).abs().max().item() <= tol * scale
    gy = torch.randn(n, out, generator=g, dtype=torch.float64)
    (y * gy.to(device, dtype)).sum().backward()
    (ref * gy).sum().backward()
    for got, want, what in ((x.grad, rx.grad, "dx"), (w.grad, rw.grad, "dw"), (b.grad, rb.grad, "dbias")):
        err = (got.cpu().double() - want).abs().max().item() / want.abs().max().item()
        assert err <= tol, f"{what}: {err}"
    assert (w.grad.cpu()[~m] == 0).all(), "masked weights must get exactly zero gradient"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_bitmask_in_every_width_and_nonfinite_pruned_weights(device, dtype):
    # The bitmask kernel moves bits (2, 4 and 8-byte elements here), and a pruned weight is exactly
    # zero whatever it holds: inf and NaN there must not reach the output or dX.
    out, inp = 33, 70
    m = element_mask(out, inp, 0.4)
    g = torch.Generator().manual_seed(2)
    w = torch.randn(out, inp, generator=g, dtype=torch.float64)
    w_bad = w.clone()
    w_bad[~m] = (
        torch.tensor([float("inf"), float("nan"), -float("inf")])
        .repeat(int((~m).sum()) // 3 + 1)[: int((~m).sum())]
        .double()
    )
    x = torch.randn(9, inp, generator=g, dtype=torch.float64)
    gy = torch.randn(9, out, generator=g, dtype=torch.float64)
    packed = pack_mask(m.to(device))
    wd = w_bad.to(dtype).to(device)
    y = masked_linear(x.to(dtype).to(device), wd, packed)
    dx, dw = torch.ops.ember.masked_linear_backward(
        gy.to(dtype).to(device), x.to(dtype).to(device), wd, packed, 0, True, True
    )
    tol = 1e-12 if dtype == torch.float64 else 2e-3
    wm = w.to(dtype).double() * m
    for got, want in (
        (y, x.to(dtype).double() @ wm.t()),
        (dx, gy.to(dtype).double() @ wm),
        (dw, (gy.to(dtype).double().t() @ x.to(dtype).double()) * m),
    ):
        assert got.isfinite().all()
        assert (got.cpu().double() - want).abs().max() <= tol * want.abs().max()
    assert (dw.cpu()[~m] == 0).all() and torch.equal(wd.cpu().isnan(), w_bad.to(dtype).isnan())  # w untouched


@pytest.mark.parametrize("block", [16, 32, 128])
def test_block_mask_grouped_gemm_in_bf16(device, block, monkeypatch):
    # bf16 runs each wave as one grouped GEMM (CUTLASS on CUDA; on the CPU the same group
    # descriptors, so this checks their addressing); shapes a multiple of 8 everywhere, so the
    # kernel must take every wave (STRICT: a refusal is an error, not a silent fallback).
    monkeypatch.setenv("EMBER_SPARSE_STRICT", "1")
    n, out, inp = 72, 256, 384
    m = block_mask(out, inp, block, 0.4, seed=3)
    g = torch.Generator().manual_seed(4)
    x, w, gy = (torch.randn(s, generator=g).to(torch.bfloat16) for s in [(n, inp), (out, inp), (n, out)])
    packed = pack_mask(m.to(device), block)
    y = masked_linear(x.to(device), w.to(device), packed, block=block)
    dx, dw = torch.ops.ember.masked_linear_backward(
        gy.to(device), x.to(device), w.to(device), packed, block, True, True
    )
    wm = w.double() * m
    for got, want in ((y, x.double() @ wm.t()), (dx, gy.double() @ wm), (dw, (gy.double().t() @ x.double()) * m)):
        err = (got.cpu().double() - want).abs().max() / want.abs().max()
        assert err <= 1e-2, err  # one bf16 rounding of each output, fp32 accumulation
    assert (dw.cpu()[~m] == 0).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("small_tiles", [False, True])
def test_bitmask_gemms_without_a_masked_copy(device, dtype, small_tiles, monkeypatch):
    # Never a whole W⊙M: on CUDA in bf16 the bitmask GEMMs mask W in registers (forward, dX) and
    # dW in the epilogue; here in % 128 == 0 and out % 8 == 0, so they must take all three
    # (STRICT). Everywhere else W is masked a tile at a time: small tiles give several, ragged
    # at the end: forward 83-row tiles (200 = 2·83 + 34), dX 160-column tiles (384 = 2·160 + 64).
    monkeypatch.setenv("EMBER_SPARSE_STRICT", "1")
    if small_tiles:
        monkeypatch.setenv("EMBER_SPARSE_TILE_BYTES", str(160 * 200 * torch.tensor([], dtype=dtype).element_size()))
    n, out, inp = 75, 200, 384
    m = element_mask(out, inp, 0.3, seed=5)
    g = torch.Generator().manual_seed(6)
    x, w, gy = (torch.randn(s, generator=g).to(dtype) for s in [(n, inp), (out, inp), (n, out)])
    b = torch.randn(out, generator=g).to(dtype)
    packed = pack_mask(m.to(device))
    y = masked_linear(x.to(device), w.to(device), packed, b.to(device))
    dx, dw = torch.ops.ember.masked_linear_backward(gy.to(device), x.to(device), w.to(device), packed, 0, True, True)
    wm = w.double() * m
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-5
    for got, want, what in (
        (y, x.double() @ wm.t() + b.double(), "y"),
        (dx, gy.double() @ wm, "dx"),
        (dw, (gy.double().t() @ x.double()) * m, "dw"),
    ):
        err = (got.cpu().double() - want).abs().max() / want.abs().max()
        assert err <= tol, f"{what}: {err}"
    assert (dw.cpu()[~m] == 0).all()


@pytest.mark.parametrize("n, out, inp", [(0, 8, 128), (5, 8, 0), (5, 0, 128)])
def test_bitmask_empty_dims(device, n, out, inp):
    w = torch.randn(out, inp, device=device)
    x = torch.randn(n, inp, device=device)
    packed = pack_mask(torch.ones(out, inp, dtype=torch.bool, device=device))
    y = masked_linear(x, w, packed)
    dx, dw = torch.ops.ember.masked_linear_backward(torch.ones(n, out, device=device), x, w, packed, 0, True, True)
    assert y.shape == (n, out) and dx.shape == (n, inp) and dw.shape == (out, inp)
    assert (
        torch.equal(y, x @ w.t())
        and (dx == 0).all() == (out == 0 or inp == 0 or n == 0)
        and (dw == 0).all() == (n == 0 or out * inp == 0)
    )


def test_bool_mask_and_leading_dims():
    m = element_mask(20, 30, 0.5)
    x, w = torch.randn(2, 3, 30), torch.randn(20, 30)
    torch.testing.assert_close(masked_linear(x, w, m), x @ (w * m).t())


def test_opcheck(device):
    m = block_mask(40, 50, 16, 0.5).to(device)
    x, w, b = (torch.randn(s, device=device) for s in [(7, 50), (40, 50), (40,)])
    for mask, block in ((pack_mask(m, 16), 16), (pack_mask(m), 0)):
        torch.library.opcheck(torch.ops.ember.masked_linear.default, (x, w, mask, block, b))
        torch.library.opcheck(
            torch.ops.ember.masked_linear_backward.default,
            (torch.randn(7, 40, device=device), x, w, mask, block, True, True),
        )
    torch.library.opcheck(torch.ops.ember.pack_mask.default, (m, 16))
    torch.library.opcheck(torch.ops.ember.unpack_mask.default, (pack_mask(m), 40, 50, 0))


@pytest.mark.skipif(not ember.cuda_available(), reason="needs a GPU")
@pytest.mark.parametrize("block", [0, 16])
def test_backward_refuses_a_grad_on_another_device(block):
    # the dispatcher picks the CUDA kernel from x: a CPU grad would hand host pointers to it
    m = block_mask(32, 48, 16, 0.5)
    x, w = torch.randn(8, 48, device="cuda"), torch.randn(32, 48, device="cuda")
    mask = pack_mask(m.cuda(), block or None)
    with pytest.raises(RuntimeError, match=r"ember\.masked_linear_backward: grad must be on cuda"):
        torch.ops.ember.masked_linear_backward(torch.randn(8, 32), x, w, mask, block, True, True)


@pytest.mark.parametrize("block", [None, 16])
def test_masked_weights_stay_zero_under_adamw(device, block):
    torch.manual_seed(0)
    layer = SparseLinear.from_linear(
        torch.nn.Linear(50, 40).to(device),
        (block_mask(40, 50, 16, 0.5) if block else element_mask(40, 50, 0.3)).to(device),
        block,
    )
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-2, weight_decay=0.1)
    dead = ~layer.dense_mask()
    assert (layer.weight[dead] == 0).all()
    for _ in range(100):
        opt.zero_grad()
        layer(torch.randn(8, 50, device=device)).square().mean().backward()
        opt.step()
    assert (layer.weight[dead] == 0).all() and (layer.weight[~dead] != 0).all()


# ---- densities --------------------------------------------------------------------------------------
def reference_erk(shapes, sparsity, er=False):
    """The paper's rule written differently: ε by bisection, a layer is dense iff ε·raw ≥ 1."""
    raw = {n: ((s[0] + s[1]) / (s[0] * s[1])) if er else sum(s) / math.prod(s) for n, s in shapes.items()}
    numel = {n: math.prod(s) for n, s in shapes.items()}
    target = (1 - sparsity) * sum(numel.values())
    lo, hi = 0.0, 1e9
    for _ in range(200):
        eps = (lo + hi) / 2
        kept = sum(min(1.0, eps * raw[n]) * numel[n] for n in shapes)
        lo, hi = (eps, hi) if kept < target else (lo, eps)
    return {n: min(1.0, eps * raw[n]) for n in shapes}


SHAPES = {"conv1": (64, 3, 7, 7), "conv2": (128, 64, 3, 3), "fc1": (512, 2048), "fc2": (2048, 512), "head": (10, 2048)}


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.95])
@pytest.mark.parametrize("method", ["erk", "er"])
def test_erk_and_er_match_the_formula(method, sparsity):
    got = densities_for_shapes(SHAPES, sparsity, method)
    ref = reference_erk(SHAPES, sparsity, er=method == "er")
    for n in SHAPES:
        assert abs(got[n] - ref[n]) <= 1e-6, (n, got[n], ref[n])
    kept = sum(got[n] * math.prod(s) for n, s in SHAPES.items())
    assert abs(kept / sum(math.prod(s) for s in SHAPES.values()) - (1 - sparsity)) < 1e-9


def test_uniform_and_uniform_plus():
    assert all(v == pytest.approx(0.1) for v in densities_for_shapes(SHAPES, 0.9, "uniform").values())
    d = densities_for_shapes(SHAPES, 0.9, "uniform_plus")
    assert d["conv1"] == 1.0 and d["head"] == pytest.approx(0.2) and d["fc1"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="method"):
        densities_for_shapes(SHAPES, 0.5, "random")
    with pytest.raises(ValueError, match="sparsity"):
        densities_for_shapes(SHAPES, 1.0)


# ---- random pruning --------------------------------------------------------------------------------
def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 6 * 6, 150),
        torch.nn.ReLU(),
        torch.nn.Linear(150, 10),
    )


@pytest.mark.parametrize("block", [None, 16])
def test_random_prune_counts_reproducibility_and_state_dict(block):
    model = small_model()
    want = layerwise_densities(model, 0.7, "erk")
    report = random_prune(model, 0.7, "erk", block=block, seed=3)
    for layer in report["layers"]:
        numel = math.prod(layer["shape"])
        if block is None or layer["name"] == "0":  # exact counts (Conv gets a plain mask)
            assert layer["params"] == round(want[layer["name"]] * numel)
        else:  # whole tiles: within one tile of the target
            assert abs(layer["params"] - want[layer["name"]] * numel) <= block * block
    assert (
        isinstance(model[2], SparseLinear) and isinstance(model[4], SparseLinear) and hasattr(model[0], "weight_mask")
    )
    again = small_model()
    random_prune(again, 0.7, "erk", block=block, seed=3)
    assert torch.equal(again[2].mask, model[2].mask) and torch.equal(again[0].weight_mask, model[0].weight_mask)
    other = small_model()
    random_prune(other, 0.7, "erk", block=block, seed=4)
    assert not torch.equal(other[2].mask, model[2].mask)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    other.load_state_dict(torch.load(buf))  # masks are buffers: they come with the weights
    assert torch.equal(other[2].mask, model[2].mask)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(other(x), model(x))
    assert sparsity_report(other)["params_kept"] == report["params_kept"]


def test_conv_masks_stay_zero():
    model = small_model()
    random_prune(model, 0.8, "erk", seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    dead = ~model[0].weight_mask
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(4, 3, 8, 8)).square().mean().backward()
        opt.step()
    assert (model[0].weight[dead] == 0).all()
