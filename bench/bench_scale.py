"""Scale-out: every optimizer under DDP and FSDP2 (and one process), side by side: tokens/s, the
optimizer state one rank holds, and the bytes each step sends through collectives.

Each cell is a real `ember train` job under torchrun (gloo on CPU, NCCL on GPUs) on a model a few
times the debug size. Collective bytes are counted in the job by wrapping torch.distributed's
collectives and sorting each call by its caller: FSDP2 (parameter all-gathers, gradient
reduce-scatters), APOLLO's sharded step, and the rest (the loss and stop-flag all-reduce,
clipping's norm). A call counts the size of its full buffer (an all-gather's output, a
reduce-scatter's input, an all-reduce's tensor). DDP's gradient all-reduce runs inside its C++
reducer, out of reach of the wrapper: its bytes are the gradients' (one fp32 all-reduce of every
parameter a step), computed from the model.

    python bench/bench_scale.py                 # 1, 2 and 4 ranks, adamw / apollo / apollo_mini
    python bench/bench_scale.py --ranks 2 --steps 6 --json out.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

MODEL = [
    "--model.dim=256",
    "--model.n_layers=4",
    "--model.n_heads=8",
    "--model.n_kv_heads=4",
    "--model.ffn_hidden=704",
    "--data.seq_len=128",
    "--training.batch_size=8",
    "--eval.every=0",
    "--eval.batches=1",
    "--eval.batch_size=8",
    "--checkpoint.every=0",
    "--checkpoint.export_safetensors=false",
    "--metrics.log_every=1",
    "--metrics.progress=false",
    "--metrics.tensorboard=false",
    "--metrics.plot=false",
    "--job.device=auto",
    "--lr_scheduler.warmup_steps=2",
]
OPTIMIZERS = {
    "adamw": [],
    "apollo": ["--optimizer.name=apollo", "--optimizer.lr=0.01", "--optimizer.rank=32"],
    "apollo_mini": ["--optimizer.name=apollo_mini", "--optimizer.lr=0.01"],
}


def _count_collectives(counts: collections.Counter) -> None:
    """Wrap torch.distributed's collectives: bytes by caller (fsdp, apollo, other)."""
    import torch.distributed as dist

    def kind() -> str:
        frame = sys._getframe(2)
        while frame is not None:
            name = frame.f_globals.get("__name__", "")
            if "fsdp" in name:
                return "fsdp"
            if name.endswith("apollo_sharded"):
                return "apollo"
            frame = frame.f_back
        return "other"

    def wrap(fn, which):
        def counted(*args, **kwargs):
            tensors = [a for a in list(args[:which]) if hasattr(a, "nbytes")]
            counts[kind()] += max((t.nbytes for t in tensors), default=0)
            return fn(*args, **kwargs)

        return counted

    for name, which in (
        ("all_gather_single", 2),
        ("all_gather_into_tensor", 2),
        ("reduce_scatter_single", 2),
        ("reduce_scatter_tensor", 2),
        ("all_reduce", 1),
    ):
        setattr(dist, name, wrap(getattr(dist, name), which))


def worker(run_root: str, parallel: str, optimizer: str, steps: int) -> None:
    """One cell, as one rank of a torchrun job (or alone)."""
    counts = collections.Counter()
    _count_collectives(counts)
    import ember.train.trainer as trainer
    from ember.train import parse_config, train

    build = trainer.build_model

    def build_and_count(*args, **kwargs):  # the parameter count, for DDP's gradient bytes
        built = build(*args, **kwargs)
        model = built.model if hasattr(built, "model") else built[1]
        counts["params"] = sum(p.numel() for p in model.parameters())
        return built

    trainer.build_model = build_and_count

    flags = [
        *MODEL,
        f"--job.dir={run_root}",
        f"--job.name={parallel}-{optimizer}",
        f"--training.steps={steps}",
        f"--training.parallel={parallel if parallel != 'one' else 'ddp'}",
        *OPTIMIZERS[optimizer],
    ]
    train(parse_config(flags))
    if int(os.environ.get("RANK", "0")) == 0:
        (Path(run_root) / f"{parallel}-{optimizer}" / "collectives.json").write_text(json.dumps(counts))


def run_cell(root: Path, parallel: str, ranks: int, optimizer: str, steps: int) -> dict:
    args = [str(root), parallel, optimizer, str(steps)]
    harness.run_ranks(Path(__file__).resolve(), args, ranks, f"{parallel} x{ranks} {optimizer}")
    run_dir = root / f"{parallel}-{optimizer}"
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [x for x in rows if "loss" in x]
    counts = json.loads((run_dir / "collectives.json").read_text())
    params = counts.pop("params")
    per_step = {k: v / steps for k, v in counts.items()}
    if parallel == "ddp":
        per_step["ddp"] = 4 * params  # the reducer's fp32 gradient all-reduce
    return {
        "tokens_per_s": statistics.median(x["tokens_per_s"] for x in rows[2:] or rows),
        "state_bytes": rows[-1]["optimizer_state_bytes"],
        "bytes_per_step": per_step,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        root, parallel, optimizer, steps = sys.argv[2:6]
        worker(root, parallel, optimizer, int(steps))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--json", metavar="PATH")
    a = p.parse_args()
    cells = [("one", 1)] + [(par, n) for n in a.ranks for par in ("ddp", "fsdp")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for parallel, ranks in cells:
            for optimizer in OPTIMIZERS:
                root = Path(tmp) / f"{ranks}"
                got = run_cell(root, parallel, ranks, optimizer, a.steps)
                results.append({"parallel": parallel, "ranks": ranks, "optimizer": optimizer, **got})
    one = {r["optimizer"]: r for r in results if r["parallel"] == "one"}
    print(
        f"{'cell':<22}{'tokens/s':>10}{'state/rank MiB':>16}{'vs 1 proc':>10}{'fsdp MiB/step':>15}"
        f"{'ddp MiB/step':>14}{'apollo KiB/step':>17}{'apollo/fsdp':>12}{'other KiB':>11}"
    )
    for r in results:
        b = r["bytes_per_step"]
        fsdp, apollo = b.get("fsdp", 0), b.get("apollo", 0)
        print(
            f"{r['parallel'] + ' x' + str(r['ranks']) + ' ' + r['optimizer']:<22}{r['tokens_per_s']:>10.0f}"
            f"{r['state_bytes'] / 2**20:>16.3f}{r['state_bytes'] / max(1, one[r['optimizer']]['state_bytes']):>10.3f}"
            f"{fsdp / 2**20:>15.2f}{b.get('ddp', 0) / 2**20:>14.2f}{apollo / 2**10:>17.1f}"
            f"{(apollo / fsdp if fsdp else 0):>12.4f}{b.get('other', 0) / 2**10:>11.1f}"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
