"""Continued pre-training with transformers.Trainer and ember, against the plain run: a tiny
randomly initialized causal LM (a config, no download) with a large vocabulary, a few steps on
random tokens, three runs each in a fresh process so each peak memory is its own:

  plain          transformers as it is, AdamW
  plain+Apollo   transformers' loss, ember.optim.Apollo
  ember          ember.patch.apply_ember (fused linear + cross-entropy: no logits) + Apollo

It prints the loss of the last step, peak memory (the process's peak RSS on a CPU, the peak
allocated memory on a GPU) and tokens/s. The losses differ by the optimizer only.

    python examples/hf_trainer_example.py [--model-type llama] [--vocab 32000] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

from tiny_hf_models import small_causal_lm

RUNS = ("plain", "plain+Apollo", "ember")


class RandomTokens:
    """`n` sequences of random token ids; labels are the inputs (the model shifts them)."""

    def __init__(self, n: int, seq: int, vocab: int, seed: int = 1):
        import torch

        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, vocab, (n, seq), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def one_run(run: str, a) -> dict:
    import torch
    from transformers import Trainer, TrainingArguments

    import ember
    from ember.train.metrics import peak_memory_bytes

    model = small_causal_lm(a.model_type, a.vocab, max_positions=1024).train()
    changes = ember.patch.apply_ember(model) if run == "ember" else []
    if run == "plain":
        optimizers = (None, None)  # the Trainer's AdamW
    else:
        optimizers = (ember.optim.Apollo(ember.optim.apollo_param_groups(model, rank=16, lr=a.lr)), None)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=a.batch,
            max_steps=a.steps,
            learning_rate=a.lr,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            use_cpu=device.type == "cpu",
            dataloader_num_workers=0,
            seed=0,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=RandomTokens(a.steps * a.batch, a.seq, a.vocab), optimizers=optimizers
        )
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return dict(
        run=run,
        loss=losses[-1],
        peak_bytes=peak_memory_bytes(device),
        tokens_per_s=a.steps * a.batch * a.seq / seconds,
        changes=len(changes),
        device=device.type,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-type", default="llama", help="a config.model_type that ember.patch.supported() lists")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--run", choices=RUNS, help=argparse.SUPPRESS)  # one run, in this process (the child)
    a = p.parse_args()
    if a.run:
        print(json.dumps(one_run(a.run, a)))
        return
    import importlib.util

    import ember.patch

    if importlib.util.find_spec("accelerate") is None:
        p.error("transformers.Trainer needs accelerate: pip install accelerate")
    if a.model_type not in ember.patch.supported():
        p.error(f"--model-type {a.model_type!r} is not one ember.patch supports (ember.patch.supported())")
    rows = []
    for run in RUNS:
        cmd = [sys.executable, __file__, "--run", run, *sys.argv[1:]]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"run {run} failed:\n{r.stderr[-3000:]}")
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    base = rows[0]
    print(f"# {a.model_type}, vocabulary {a.vocab}, {a.batch}×{a.seq} tokens a step, {a.steps} steps, {base['device']}")
    print(f"{'run':<14}{'last loss':>10}{'peak MiB':>10}{'vs plain':>10}{'tokens/s':>11}{'vs plain':>10}")
    for r in rows:
        print(
            f"{r['run']:<14}{r['loss']:>10.4f}{r['peak_bytes'] / 2**20:>10.0f}"
            f"{r['peak_bytes'] / base['peak_bytes']:>9.2f}x{r['tokens_per_s']:>11.0f}"
            f"{r['tokens_per_s'] / base['tokens_per_s']:>9.2f}x"
        )


if __name__ == "__main__":
    main()
