"""Trainer overhead: `ember train` against a bare loop of the same model and optimizer.

The bare loop is what a person writes by hand: random windows of the same tokens, forward,
backward, clip, step. The trainer adds the packed loader, valid-token normalization, the
non-finite check, the schedule and its metrics. Both are timed over the same steps after a
warm-up (evaluation and checkpoints off); the target is overhead ≤ 5% (tokens/s ratio ≥ 0.95).

    python bench/bench_train.py --quick        # CPU or GPU
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from harness import Report, common_args, environment, time_ms  # noqa: E402

from ember.data.loader import open_source, parse_sources  # noqa: E402
from ember.train import parse_config, train  # noqa: E402
from ember.train.build import build_model, build_optimizer, model_config  # noqa: E402
from ember.train.distributed import Dist, pick_device  # noqa: E402
from ember.train.runtime import autocast, compute_dtype  # noqa: E402


def bare_loop(cfg, device, steps: int, warmup: int) -> float:
    """tokens/s of a hand-written step (gather random windows, forward, backward, clip, step),
    timed by the harness: median over steps - warmup calls after `warmup` calls."""
    tokens = torch.from_numpy(open_source(parse_sources("stdlib")[0], "train").shards[0].astype("int64"))
    model = build_model(cfg, model_config(cfg, 257), Dist(device=device)).model
    opt = build_optimizer(cfg, model)
    dtype = compute_dtype(cfg, device)
    b, t = cfg.training.batch_size, cfg.data.seq_len
    g = torch.Generator().manual_seed(0)

    def step(ix):
        x = torch.stack([tokens[i : i + t + 1] for i in ix]).to(device)
        with autocast(device, dtype):
            loss = model(x[:, :-1], x[:, 1:]) / x[:, 1:].numel()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.training.max_norm, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)

    ms = time_ms(
        step,
        lambda: (torch.randint(0, len(tokens) - t - 1, (b,), generator=g),),
        str(device),
        reps=steps - warmup,
        warmup=warmup,
    )
    return b * t / (ms / 1e3)


def trainer(flags: list[str], steps: int, warmup: int) -> float:
    """tokens/s of `ember train` over the log intervals after the warm-up."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):  # (the config it prints)
        train(parse_config([*flags, f"--job.dir={tmp}", "--job.name=b"]))
        rows = [json.loads(x) for x in (Path(tmp) / "b" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "tokens_per_s" in r and r["step"] > warmup]
    # each row covers the log_every steps before it: total tokens / total time
    return len(rows) / sum(1 / r["tokens_per_s"] for r in rows)


def main() -> None:
    p = common_args(__doc__.splitlines()[0])
    p.add_argument("--model", default="debug")
    p.add_argument("--compile", action="store_true", help="torch.compile the blocks, in both")
    a = p.parse_args()
    steps, warmup = (60, 10) if a.quick else (300, 20)
    device = pick_device("cuda" if a.device.startswith("cuda") else "cpu")
    flags = [
        f"--model.name={a.model}",
        f"--training.steps={steps}",
        "--eval.every=0",
        "--eval.batches=1",
        "--checkpoint.every=0",
        "--checkpoint.export_safetensors=false",
        "--metrics.log_every=10",
        "--metrics.progress=false",
        "--metrics.plot=false",
        "--metrics.tensorboard=false",
        f"--job.device={device.type}",
        "--lr_scheduler.warmup_steps=5",
        f"--training.compile={a.compile}",
    ]
    cfg = parse_config(flags)
    report = Report(
        "trainer overhead: ember train vs a bare loop (same model, optimizer, batch)",
        environment(str(device)),
        baseline="bare loop",
        metrics=["tokens/s"],
    )
    case = f"{a.model} b{cfg.training.batch_size}x{cfg.data.seq_len}"
    # alternate and keep each side's best of two: the machine's noise is larger than the gap
    bare, ours = [], []
    for _ in range(2):
        bare.append(bare_loop(cfg, device, steps, warmup))
        ours.append(trainer(flags, steps, warmup))
    tokens_per_step = cfg.training.batch_size * cfg.data.seq_len
    for name, tps in (("bare loop", max(bare)), ("ember train", max(ours))):
        report.add(case, name, 1e3 * tokens_per_step / tps, **{"tokens/s": tps})
    report.print()
    report.write_json(a.json)


if __name__ == "__main__":
    main()
