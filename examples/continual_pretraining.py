"""Continual pre-training on a CPU in a few minutes: forgetting, the stability gap, and replay.

1. transformers builds a tiny Llama with random weights (saved as a Hugging Face folder);
2. `ember train --model.init_from=` trains it on source A (the Python standard library's source,
   bytes) and `ember export` writes it back as a Hugging Face folder;
3. from that folder, two continuations on source B (generated arithmetic lines, another
   domain), with A's held-out set evaluated every few steps (--eval.sources):
   - "no replay": B alone;
   - "replay": B with a fixed 25% share of A, drawn from a fixed 200k-token subset of A
     (`A:0.25:tokens=200k`).

A's validation loss over the continuation shows forgetting: it jumps in the first steps (the
stability gap) and, with replay, comes back down. Prints a table, writes a PNG and a JSON.

    python examples/continual_pretraining.py [--quick] [--out examples/out/continual]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

from ember.cli import main as ember
from ember.data.prepare import prepare
from ember.train import parse_config, train
from tiny_hf_models import BYTE_VOCAB, DEBUG_LLAMA

QUIET = [
    "--metrics.progress=false",
    "--metrics.tensorboard=false",
    "--metrics.plot=false",
    "--job.device=cpu",
    "--checkpoint.export_safetensors=false",
    "--eval.batches=4",
    "--eval.batch_size=16",
]


def arithmetic_documents(n: int, seed: int = 0) -> list[str]:
    """Source B: lines of sums and products, a domain far from Python source."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        lines = []
        for _ in range(rng.randint(8, 24)):
            a, b = rng.randint(0, 999), rng.randint(0, 999)
            op = rng.choice("+*-")
            value = a + b if op == "+" else a * b if op == "*" else a - b
            lines.append(f"{a} {op} {b} = {value}")
        docs.append("\n".join(lines) + "\n")
    return docs


def tiny_llama(path: Path, seed: int = 0) -> None:
    import torch
    import transformers

    tokens = dict(tie_word_embeddings=True, bos_token_id=None, eos_token_id=256)  # the byte vocabulary's
    config = transformers.LlamaConfig(
        vocab_size=BYTE_VOCAB, max_position_embeddings=1024, rms_norm_eps=1e-5, **tokens, **DEBUG_LLAMA
    )
    torch.manual_seed(seed)
    transformers.LlamaForCausalLM(config).save_pretrained(path)


def val_curves(run_dir: Path, a: str, b: str) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{"step": r["step"], "A": r[f"val_loss/{a}"], "B": r[f"val_loss/{b}"]} for r in rows if "val_loss" in r]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="examples/out/continual")
    p.add_argument("--quick", action="store_true", help="fewer steps (a smoke run; the gap is less clear)")
    p.add_argument("--steps-a", type=int, default=300)
    p.add_argument("--steps-b", type=int, default=150)
    p.add_argument("--eval-every", type=int, default=5)
    a = p.parse_args()
    if a.quick:
        a.steps_a, a.steps_b, a.eval_every = 40, 20, 5
    out = Path(a.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.perf_counter()

    src_a, src_b = str(out / "data_a"), str(out / "data_b")
    prepare(["stdlib"], src_a, workers=1, progress=False)
    (out / "b.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in arithmetic_documents(4000)))
    prepare([str(out / "b.jsonl")], src_b, workers=1, val_per_mille=20, progress=False)
    tiny_llama(out / "hf_random")

    common = [*QUIET, f"--job.dir={out}", "--data.seq_len=128", "--training.batch_size=16", "--optimizer.lr=3e-3"]
    train(
        parse_config(
            [
                *common,
                "--job.name=stage_a",
                f"--model.init_from={out / 'hf_random'}",
                f"--data.sources={src_a}",
                f"--training.steps={a.steps_a}",
                "--lr_scheduler.warmup_steps=30",
                f"--eval.every={a.steps_a}",
                f"--checkpoint.every={a.steps_a}",
            ]
        )
    )
    if ember(["export", str(out / "stage_a"), str(out / "hf_a")]) != 0:
        raise SystemExit("continual_pretraining: the export of stage A failed")

    runs = {
        "no replay": f"--data.sources={src_b}",
        "replay 25% of A": f"--data.sources={src_b}:0.75,{src_a}:0.25:tokens=200k",
    }
    curves = {}
    for label, sources in runs.items():
        name = label.split()[0] + "_replay"
        train(
            parse_config(
                [
                    *common,
                    f"--job.name={name}",
                    f"--model.init_from={out / 'hf_a'}",
                    sources,
                    f"--eval.sources={src_a}",
                    f"--training.steps={a.steps_b}",
                    "--lr_scheduler.warmup_steps=10",
                    f"--eval.every={a.eval_every}",
                    f"--checkpoint.every={a.steps_b}",
                ]
            )
        )
        curves[label] = val_curves(out / name, src_a, src_b)
    wall = time.perf_counter() - t0

    print(
        f"\nvalidation loss (nats/byte) of A (old domain) and B (new) during the continuation on B; {wall:.0f} s in all"
    )
    labels = list(curves)
    print("| step | " + " | ".join(f"A, {k}" for k in labels) + " | " + " | ".join(f"B, {k}" for k in labels) + " |")
    print("|---" * (1 + 2 * len(labels)) + "|")
    for i, row in enumerate(curves[labels[0]]):
        rest = [curves[k][i] for k in labels]
        cells = [f"{r['A']:.3f}" for r in rest] + [f"{r['B']:.3f}" for r in rest]
        print(f"| {row['step']} | " + " | ".join(cells) + " |")
    summary = {
        k: {
            "A_start": c[0]["A"],
            "A_peak": max(r["A"] for r in c),
            "A_end": c[-1]["A"],
            "B_start": c[0]["B"],
            "B_end": c[-1]["B"],
        }
        for k, c in curves.items()
    }
    print(json.dumps(summary, indent=1))
    (out / "continual_pretraining.json").write_text(
        json.dumps({"curves": curves, "summary": summary, "wall_s": wall, "args": vars(a)}, indent=1)
    )
    plot(curves, out / "continual_pretraining.png")
    print(f"wrote {out / 'continual_pretraining.png'} and {out / 'continual_pretraining.json'}")


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for ax, key, title in zip(axes, "AB", ("A (old domain: Python source), held out", "B (new domain: arithmetic)")):
        for label, rows in curves.items():
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], "o-", ms=3, label=label)
        ax.set_title(title)
        if key == "A":  # forgetting without replay is far larger than the gap with it
            ax.set_yscale("log")
        ax.set_xlabel("step of the continuation on B")
        ax.set_ylabel("validation loss (nats/byte)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
