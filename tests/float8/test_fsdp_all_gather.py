"""--float8.all_gather: FSDP2 all-gathers Float8Linear weights in fp8 (ember.float8.fsdp).

Quick: the identities the exactness rests on (the transposed codes of a tensorwise or tile
quantization are the codes of the transpose; a shard quantized with the global amax appended gives
the full weight's codes), Float8Linear on a gathered weight against the same layer quantizing the
full weight, the sharded weight's wrapper seen as a plain tensor (ops, in-place writes, state
dict), and the preflight checks. Slow: 2 gloo ranks under FSDP2, each recipe with and without fp8
all-gather (losses, and the bytes all-gathered for the converted layers), 3 ranks (uneven
shards), and a save + resume. Run as a script under torchrun, this file is that job:
`... test_fsdp_all_gather.py ROOT` (2 ranks: CELLS; 3 ranks: UNEVEN_CELLS).
"""

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ember.float8 import Float8GatheredWeight, Float8Linear, Float8ShardedWeight, enable_fp8_all_gather, float8_linear
from ember.ops import quantize_fp8

E4M3 = torch.float8_e4m3fn
STEPS = 10
# rowwise's dgrad requantizes the gathered rows per column: measured up to 4.4e-4 relative on the
# loss over 20 steps of this model (the fp8 quantization itself moves it ~1e-2 from fp32)
ROWWISE_TOL = 2e-3
BIG = [
    "--model.dim=256",
    "--model.n_kv_heads=4",
    "--model.ffn_hidden=512",
    "--data.seq_len=32",
]  # 128-row shards: fp8 tiles
CELLS = {  # name -> flags; each runs with --float8.all_gather=false and =true
    "tensorwise": ["--float8.recipe=tensorwise"],
    "rowwise": ["--float8.recipe=rowwise"],
    "blockwise": ["--float8.recipe=blockwise"],  # the tiny model's 32- and 64-row shards: plain all-gather
    "blockwise_big": ["--float8.recipe=blockwise", *BIG],
}
# 3 ranks: every weight's rows split unevenly (FSDP2 pads the last shard): tensorwise still fp8,
# rowwise gathered in its dtype
UNEVEN = ["--training.batch_size=6", "--eval.batch_size=6"]
UNEVEN_CELLS = {"tensorwise": ["--float8.recipe=tensorwise", *UNEVEN], "rowwise": ["--float8.recipe=rowwise", *UNEVEN]}


def u8(t):
    return t.contiguous().view(torch.uint8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(64, 48), (256, 384), (272, 208)])
def test_exactness_premises(dtype, shape):
    torch.manual_seed(sum(shape))
    w = torch.randn(shape, dtype=dtype) * 3
    for g in ("tensor", "tile"):
        q, s = quantize_fp8(w, E4M3, g)
        qt, st = quantize_fp8(w, E4M3, g, transpose=True)
        assert torch.equal(u8(q.t()), u8(qt)) and torch.equal(s.t() if s.dim() else s, st)
    half = shape[0] // 2
    amax = w.abs().amax().float()
    q, s = quantize_fp8(torch.cat([w[half:].reshape(-1), amax.to(dtype).reshape(1)]), E4M3, "tensor")
    q_full, s_full = quantize_fp8(w, E4M3, "tensor")
    assert torch.equal(u8(q[:-1].view(-1, shape[1])), u8(q_full[half:])) and torch.equal(s, s_full)


def _gathered(w, recipe):
    """What FSDP2's fp8 all-gather hands Float8Linear: the full weight's fp8 codes and scales."""
    q, s = quantize_fp8(w, E4M3, {"tensorwise": "tensor", "rowwise": "row", "blockwise": "tile"}[recipe])
    return nn.Parameter(Float8GatheredWeight(q, s, recipe, w.dtype))


@pytest.mark.parametrize("recipe", ["tensorwise", "rowwise", "blockwise"])
def test_linear_on_gathered_weight(recipe):
    torch.manual_seed(0)
    w, b = torch.randn(272, 160) * 0.1, torch.randn(272)
    x, dy = torch.randn(40, 160), torch.randn(40, 272)
    grads, exact = [], dy.double() @ w.double()
    for weight in (nn.Parameter(w.clone()), _gathered(w, recipe)):
        xx, bb = x.clone().requires_grad_(), b.clone().requires_grad_()
        y = float8_linear(xx, weight, bb, recipe)
        y.backward(dy)
        assert type(weight.grad) is torch.Tensor and weight.grad.dtype == w.dtype
        grads.append((y.detach(), xx.grad, weight.grad, bb.grad))
    (y0, dx0, dw0, db0), (y1, dx1, dw1, db1) = grads
    assert torch.equal(y0, y1) and torch.equal(dw0, dw1) and torch.equal(db0, db1)
    if recipe == "rowwise":  # Wᵀ requantized from the dequantized rows: 4.5% off dY·W, not 3.7%
        err0, err1 = ((dx - exact).norm() / exact.norm() for dx in (dx0.double(), dx1.double()))
        assert err1 < 1.4 * err0
    else:
        assert torch.equal(dx0, dx1)


def test_gathered_weight_reads_as_its_dequantized_value():
    w = torch.randn(256, 128)
    g = _gathered(w, "blockwise")
    assert g.dtype == torch.float32 and g.shape == w.shape
    assert type(g * 1) is torch.Tensor and (g * 1 - w).norm() / w.norm() < 0.05
    assert type(torch.zeros_like(g)) is torch.Tensor


def test_sharded_weight_is_a_plain_tensor_to_everything_else():
    model = nn.Sequential(Float8Linear(32, 16, recipe="rowwise"), nn.Linear(16, 16))
    plain = {k: v.clone() for k, v in model.state_dict().items()}
    assert enable_fp8_all_gather(model) == 1 and enable_fp8_all_gather(model) == 0
    w = model[0].weight
    assert isinstance(w, nn.Parameter) and isinstance(w.data, Float8ShardedWeight) and w.dtype == torch.float32
    assert type(w * 2) is torch.Tensor and type(torch.zeros_like(w)) is torch.Tensor
    with torch.no_grad():
        w.add_(1.0)  # an optimizer step writes the wrapped tensor
    assert torch.equal(w.data._data, plain["0.weight"] + 1)
    sd = model.state_dict()
    assert all(type(v) is torch.Tensor for v in sd.values())
    model.load_state_dict(plain)
    assert torch.equal(w.data._data, plain["0.weight"]) and isinstance(model[0].weight.data, Float8ShardedWeight)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 32)).sum().backward()
    opt.step()
    assert all(type(v) is torch.Tensor for s in opt.state.values() for v in s.values())


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--training.parallel=fsdp"], "float8.all_gather needs float8.recipe"),
        (["--float8.recipe=tensorwise", "--training.parallel=ddp"], "needs training.parallel=fsdp or hsdp"),
    ],
)
def test_preflight(tmp_path, extra, match):
    from ember.train.config import ConfigError, parse_config
    from ember.train.preflight import check_config

    from ..train.helpers import flags

    with pytest.raises(ConfigError, match=match):
        check_config(parse_config(flags(tmp_path, "x", "--float8.all_gather=true", *extra)))


# --- 2 gloo ranks ---


def _torchrun(root: Path, ranks: int, cells: dict) -> dict:
    """{cell: {"losses": {flag: losses}, "bytes": {flag: bytes}}} from one torchrun job."""
    from ..train.helpers import losses, run_job

    run_job(Path(__file__), str(root), nproc=ranks)
    nbytes = json.loads((root / "bytes.json").read_text())
    return {
        cell: {
            "losses": {ag: losses(root / f"{cell}_{ag}") for ag in ("false", "true")},
            "bytes": {ag: nbytes[f"{cell}_{ag}"] for ag in ("false", "true")},
        }
        for cell in cells
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return _torchrun(tmp_path_factory.mktemp("fp8_all_gather"), 2, CELLS)


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["tensorwise", "blockwise", "blockwise_big"])
def test_tensorwise_and_blockwise_are_bit_exact(runs, cell):
    got = runs[cell]["losses"]
    assert list(got["true"]) == list(range(1, STEPS + 1))
    assert got["true"] == got["false"]


@pytest.mark.slow
def test_rowwise_within_the_requantization_noise(runs):
    got = runs["rowwise"]["losses"]
    assert list(got["true"]) == list(got["false"])
    for k, v in got["true"].items():
        assert v == pytest.approx(got["false"][k], rel=ROWWISE_TOL)


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["tensorwise", "rowwise", "blockwise_big"])
def test_fp8_moves_under_0_6_of_the_weight_bytes(runs, cell):
    """The converted layers' all-gather bytes (fp32 params here): fp8 against the fp32 bytes, and
    against what bf16 weights would move (half)."""
    b = runs[cell]["bytes"]
    assert b["true"] < 0.6 * b["false"] / 2


@pytest.mark.slow
def test_blockwise_on_tiny_shards_falls_back(runs):
    b = runs["blockwise"]["bytes"]
    assert b["true"] == b["false"]


@pytest.mark.slow
def test_uneven_shards(tmp_path):
    got = _torchrun(tmp_path, 3, UNEVEN_CELLS)
    for cell in UNEVEN_CELLS:
        assert got[cell]["losses"]["true"] == got[cell]["losses"]["false"]
    assert got["tensorwise"]["bytes"]["true"] < 0.6 * got["tensorwise"]["bytes"]["false"] / 2
    assert got["rowwise"]["bytes"]["true"] == got["rowwise"]["bytes"]["false"]


@pytest.mark.slow
def test_save_and_resume(tmp_path):
    import torch.distributed.checkpoint as dcp

    from ..train.helpers import cli, flags, losses

    opts = (
        "--training.steps=6",
        "--checkpoint.every=2",
        "--checkpoint.keep=0",
        "--job.deterministic=true",
        "--training.parallel=fsdp",
        "--float8.recipe=tensorwise",
        "--float8.all_gather=true",
        "--optimizer.name=apollo",
        "--optimizer.lr=0.01",
        "--optimizer.rank=8",
        "--optimizer.update_proj_gap=3",
    )
    r = cli("train", *flags(tmp_path, "full", *opts), nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    step2 = tmp_path / "full" / "checkpoints" / "step-00000002"
    r = cli("train", *flags(tmp_path, "r", *opts, f"--checkpoint.resume={step2}"), nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    full, resumed = losses(tmp_path / "full"), losses(tmp_path / "r")
    assert list(resumed) == [3, 4, 5, 6] and all(resumed[k] == full[k] for k in resumed)
    meta = dcp.FileSystemReader(str(step2)).read_metadata().state_dict_metadata
    w = meta["model.layers.0.attention.wq.weight"]  # the param dtype, as without fp8 all-gather
    assert w.properties.dtype == torch.float32 and tuple(w.size) == (64, 64)


def _job(root: Path) -> None:
    """Every cell with and without fp8 all-gather, 2 ranks; bytes.json: the bytes all-gathered for
    the Float8Linear weights per run (what the pre-all-gather hooks hand FSDP2, times the ranks)."""
    import torch.distributed as dist
    from torch.distributed.fsdp._fully_shard import _fsdp_collectives as fc

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ember.train import distributed, parse_config, train
    from train.helpers import flags

    dist.init_process_group("gloo")
    distributed.shutdown = lambda: None  # one process group for every run
    counts, current = {}, [""]
    get_inputs = fc._get_param_all_gather_inputs

    def counting(fsdp_params):
        inputs = get_inputs(fsdp_params)
        for p, ts in zip(fsdp_params, inputs):
            if isinstance(p._module_info.module, Float8Linear):
                n = sum(t.numel() * t.element_size() for t in ts) * dist.get_world_size()
                counts[current[0]] = counts.get(current[0], 0) + n
        return inputs

    fc._get_param_all_gather_inputs = counting
    for cell, extra in (CELLS if dist.get_world_size() == 2 else UNEVEN_CELLS).items():
        for ag in ("false", "true"):
            current[0] = name = f"{cell}_{ag}"
            run_flags = [f"--training.steps={STEPS}", "--job.deterministic=true", "--training.parallel=fsdp"]
            train(parse_config(flags(root, name, *run_flags, f"--float8.all_gather={ag}", *extra)))
    if dist.get_rank() == 0:
        (root / "bytes.json").write_text(json.dumps(counts))
    dist.destroy_process_group()


if __name__ == "__main__":
    _job(Path(sys.argv[1]))
