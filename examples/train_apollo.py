"""A comparison, not a test: a small Llama-style model trained on the built-in corpus with
AdamW, ember's Apollo and ApolloMini, and (when installed) the official apollo-torch — same
initialization, same batches, same schedule — with final losses, optimizer-state memory and step
time in one table. Target: Apollo and ApolloMini end within 3% of AdamW's loss.

    python examples/train_apollo.py [--quick] [--steps N] [--device cpu|cuda] [--json out.json]
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))  # the benchmark harness
from bench_apollo import state_bytes  # noqa: E402
from harness import Report, common_args, environment  # noqa: E402

import ember  # noqa: E402
from ember.data.loader import open_source, parse_sources  # noqa: E402
from ember.models import Llama, LlamaConfig  # noqa: E402
from ember.optim import Apollo, ApolloMini, apollo_param_groups  # noqa: E402

CONFIG = LlamaConfig(
    dim=256, n_layers=4, n_heads=4, n_kv_heads=4, vocab_size=257, ffn_hidden=688, max_seq_len=128, tie_embeddings=False
)
RANK = CONFIG.dim // 4  # the APOLLO paper's ratio of rank to width for its small models


def optimizers() -> dict:
    """name -> (peak lr, factory(model)). The learning rates are the best of {3e-3, 1e-2} for this
    model at 300 steps (2-core CPU, 2026-11-28): AdamW 3e-3; Apollo 1e-2 (the paper's); Mini 3e-3
    — at 1e-2 its √128-scaled steps are too large for a width-256 model (loss 2.04 against 1.80)."""
    impls = {
        "AdamW": (3e-3, lambda m, lr: torch.optim.AdamW(m.parameters(), lr=lr, betas=(0.9, 0.95), fused=True)),
        f"ember Apollo r{RANK}": (1e-2, lambda m, lr: Apollo(apollo_param_groups(m, rank=RANK, lr=lr))),
        "ember ApolloMini": (
            3e-3,
            lambda m, lr: ApolloMini(apollo_param_groups(m, rank=1, scale=128.0, scale_type="tensor", lr=lr)),
        ),
    }
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            from apollo_torch import APOLLOAdamW

        def official(m, lr, rank, scale, scale_type):
            groups = apollo_param_groups(m)
            return APOLLOAdamW(
                [
                    dict(
                        params=groups[0]["params"],
                        rank=rank,
                        proj="random",
                        scale_type=scale_type,
                        scale=scale,
                        update_proj_gap=200,
                        proj_type="std",
                    ),
                    dict(params=groups[1]["params"]),
                ],
                lr=lr,
            )

        impls[f"apollo-torch r{RANK}"] = (1e-2, lambda m, lr: official(m, lr, RANK, 1, "channel"))
        impls["apollo-torch Mini"] = (3e-3, lambda m, lr: official(m, lr, 1, 128, "tensor"))
    except Exception as exc:
        print(f"# apollo-torch unavailable: {type(exc).__name__}: {exc}")
    return impls


def run(make_opt, lr: float, tokens: torch.Tensor, steps: int, batch: int, device: str) -> dict:
    torch.manual_seed(0)
    model = Llama(CONFIG).to(device)
    model.init_weights(0)
    opt = make_opt(model, lr)
    g = torch.Generator().manual_seed(1)
    warmup = max(1, steps // 10)
    losses, times = [], []
    t = CONFIG.max_seq_len
    for step in range(steps):
        factor = (
            (step + 1) / warmup
            if step < warmup
            else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))
        )
        for group in opt.param_groups:
            group["lr"] = lr * factor
        ix = torch.randint(0, len(tokens) - t - 1, (batch,), generator=g)
        x = torch.stack([tokens[i : i + t + 1] for i in ix]).to(device)
        loss = model(x[:, :-1], x[:, 1:]) / x[:, 1:].numel()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    tail = losses[-max(1, steps // 10) :]  # the last 10% of steps: less noise than the last batch
    return {
        "loss": sum(tail) / len(tail),
        "state MB": state_bytes(opt) / 2**20,
        "step ms": 1e3 * sorted(times)[len(times) // 2],
    }


def main() -> None:
    p = common_args(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=16)
    a = p.parse_args()
    steps = a.steps or (40 if a.quick else 400)
    tokens = torch.from_numpy(open_source(parse_sources("stdlib")[0], "train").shards[0].astype("int64"))
    report = Report(
        f"train_apollo: Llama dim {CONFIG.dim} x {CONFIG.n_layers} layers, {steps} steps, "
        f"batch {a.batch}x{CONFIG.max_seq_len} bytes (loss: mean of the last 10% of steps)",
        environment(a.device),
        baseline="AdamW",
        metrics=["loss", "loss vs AdamW", "state MB", "step ms"],
    )
    results = {}
    for name, (lr, make) in optimizers().items():
        results[name] = run(make, lr, tokens, steps, a.batch, a.device)
        print(f"# {name}: loss {results[name]['loss']:.4f}", flush=True)
    base = results["AdamW"]["loss"]
    case = f"{ember.models.Llama(CONFIG).num_params() / 1e6:.1f}M params"
    for name, r in results.items():
        # "ms" is the whole run's last-10% loss here; the table's time column is the optimizer step
        report.add(
            case,
            name,
            r["step ms"],
            loss=r["loss"],
            **{"loss vs AdamW": r["loss"] / base - 1},
            **{"state MB": r["state MB"], "step ms": r["step ms"]},
        )
    report.print()
    report.write_json(a.json)


if __name__ == "__main__":
    main()
