"""fp8 all-gather under FSDP2 (--float8.all_gather): the bytes one training step all-gathers, per
recipe, with the weights gathered in fp8 against their own dtype (fp32 params, and bf16 as
FSDP2's MixedPrecisionPolicy(param_dtype=bf16) gathers them), on a model a few times the debug size.

A torchrun job (gloo on CPU, NCCL on GPUs) builds the model per cell, shards it with fully_shard
per block and at the root, and runs one forward + backward; the bytes are counted where FSDP2
takes the all-gather inputs (what the pre-all-gather hooks return, times the ranks): the
Float8Linear weights, and everything FSDP2 gathers. It also checks the step: whether the loss
with fp8 all-gather equals the loss without, and how far the gradients are from those of the
same model without fp8 (the largest relative error over the parameters, without and with fp8
all-gather: the quantization noise, and what the all-gather adds to it).

    python bench/bench_float8_all_gather.py                # 2 ranks
    python bench/bench_float8_all_gather.py --ranks 4 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

DIMS = dict(dim=512, n_layers=4, n_heads=8, n_kv_heads=4, ffn_hidden=1536, vocab_size=257, max_seq_len=128)
RECIPES = ("tensorwise", "rowwise", "blockwise")
DTYPES = ("fp32", "bf16")


def _step(recipe: str, all_gather: bool, dtype: str, device, mesh, counts: dict) -> tuple[float, dict]:
    """One forward + backward of a fresh sharded model; the loss and the full gradients."""
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from ember.float8 import convert_to_float8_training, enable_fp8_all_gather
    from ember.models import Llama, LlamaConfig
    from ember.train.build import _init_weights

    with torch.device("meta"):
        model = Llama(LlamaConfig(**DIMS))
    if recipe:  # "": the same model without fp8, the reference
        convert_to_float8_training(model.layers, recipe)
    if all_gather:
        enable_fp8_all_gather(model.layers)
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if dtype == "bf16" else None)
    for layer in model.layers:
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    model.to_empty(device=device)
    _init_weights(model, 0)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, DIMS["vocab_size"], (4, DIMS["max_seq_len"] + 1), generator=g).to(device)
    counts.clear()
    loss = model(tokens[:, :-1], tokens[:, 1:])
    loss.backward()
    grads = {n: p.grad.full_tensor().float() for n, p in model.named_parameters()}
    return loss.item(), grads


def worker(out: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp._fully_shard import _fsdp_collectives as fc

    from ember.float8 import Float8Linear

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    counts: dict = {}
    get_inputs = fc._get_param_all_gather_inputs

    def counting(fsdp_params):
        inputs = get_inputs(fsdp_params)
        for p, ts in zip(fsdp_params, inputs):
            n = sum(t.numel() * t.element_size() for t in ts) * dist.get_world_size()
            counts["all"] = counts.get("all", 0) + n
            if isinstance(p._module_info.module, Float8Linear):
                counts["fp8_layers"] = counts.get("fp8_layers", 0) + n
        return inputs

    fc._get_param_all_gather_inputs = counting
    rows = []
    for dtype in DTYPES:
        _, ref = _step("", False, dtype, device, mesh, counts)

        def err(gs):
            return max(((gs[n] - g).norm() / g.norm().clamp_min(1e-30)).item() for n, g in ref.items())

        for recipe in RECIPES:
            base_loss, base_grads = _step(recipe, False, dtype, device, mesh, counts)
            base = dict(counts)
            loss, grads = _step(recipe, True, dtype, device, mesh, counts)
            rows.append(
                {
                    "dtype": dtype,
                    "recipe": recipe,
                    "plain": base,
                    "fp8": dict(counts),
                    "loss_equal": loss == base_loss,
                    "grad_err": err(base_grads),
                    "grad_err_all_gather": err(grads),
                }
            )
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps(rows))
    dist.destroy_process_group()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--json", metavar="PATH")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        harness.run_ranks(Path(__file__).resolve(), [str(out)], a.ranks, f"the {a.ranks}-rank job")
        rows = json.loads(out.read_text())
    import torch

    print(f"# {DIMS}, {a.ranks} ranks, one forward + backward; torch {torch.__version__}")
    print(
        f"{'params':<7}{'recipe':<12}{'fp8 layers MiB':>15}{'(plain)':>10}{'ratio':>8}"
        f"{'all MiB':>10}{'(plain)':>10}{'ratio':>8}  {'loss':<7}{'grad err: fp8 / +all-gather':>28}"
    )
    for x in rows:
        f, b = x["fp8"], x["plain"]
        print(
            f"{x['dtype']:<7}{x['recipe']:<12}{f['fp8_layers'] / 2**20:>15.2f}{b['fp8_layers'] / 2**20:>10.2f}"
            f"{f['fp8_layers'] / b['fp8_layers']:>8.3f}{f['all'] / 2**20:>10.2f}{b['all'] / 2**20:>10.2f}"
            f"{f['all'] / b['all']:>8.3f}  {'exact' if x['loss_equal'] else 'differs':<7}"
            f"{x['grad_err']:>20.3f} / {x['grad_err_all_gather']:.3f}"
        )
    if a.json:
        Path(a.json).write_text(json.dumps({"ranks": a.ranks, "dims": DIMS, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
