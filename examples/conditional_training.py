"""Conditional training on preference scores (Korbak et al., "Pretraining Language Models with
Human Preferences") on a CPU in a few minutes: how often undesired content comes back when sampling.

1. A synthetic corpus of short documents (jsonl); a share of them hold an undesired word ("darn"),
   and a scorer gives those a score of 0, the others 1.
2. `ember prepare --control-tokens score:0.5` puts <|good|> or <|bad|> before each document; the
   same documents are also prepared without control tokens.
3. `ember train` trains a small byte-level model on each folder, with the same steps and seed.
4. `ember generate` draws samples from the control-token model conditioned on <|good|>, on
   <|bad|> and on nothing, and from the model without control tokens; the table gives the share
   of samples that hold the undesired word.

    python examples/conditional_training.py [--quick] [--out examples/out/conditional]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import shutil
import time
from pathlib import Path

from ember.cli import main as ember

MARKER = "darn"
# the debug model made smaller (0.12M parameters, ~50k tokens/s on 2 idle cores): 1500 steps in about 2 minutes
MODEL = ["--model.name=debug", "--model.dim=64", "--model.n_layers=2", "--model.n_heads=4", "--model.ffn_hidden=192"]
NOUNS = "cat dog river stone cloud lamp paper window garden teacher city boat".split()
VERBS = "sees finds carries paints follows keeps builds opens".split()
ADJECTIVES = "green quiet small old bright heavy warm round".split()


def documents(n: int, bad_share: float, marker_share: float, seed: int = 0) -> list[dict]:
    """Records {"text", "score"}: 1-3 sentences; in a bad document (score 0) each sentence holds
    the undesired word with probability `marker_share`, and at least one does."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        bad = rng.random() < bad_share
        sentences = []
        for k in range(rng.randint(1, 3)):
            adj = MARKER if bad and (k == 0 or rng.random() < marker_share) else rng.choice(ADJECTIVES)
            sentences.append(f"the {adj} {rng.choice(NOUNS)} {rng.choice(VERBS)} the {rng.choice(NOUNS)}.")
        rng.shuffle(sentences)
        out.append({"text": " ".join(sentences).capitalize(), "score": 0.0 if bad else 1.0})
    return out


def run(*args: str) -> str:
    """`ember ARGS` in this process; its standard output (it must succeed)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = ember(list(args))
    if status != 0:
        raise SystemExit(f"ember {' '.join(args)}: exit status {status}")
    return buf.getvalue()


def undesired_rate(out: Path, run_dir: Path, control: str | None, samples: int, seed: int) -> dict:
    path = out / f"samples-{run_dir.name}-{control or 'none'}.json"
    extra = ["--control", control] if control else []
    n = ["--max-new-tokens", "200", "--num-samples", str(samples), "--seed", str(seed)]
    run("generate", str(run_dir), *extra, *n, "--json", str(path))
    texts = [s["text"] for s in json.loads(path.read_text())["samples"]]
    hits = sum(MARKER in t.lower() for t in texts)
    return {"samples": len(texts), "undesired": hits, "rate": hits / len(texts), "example": texts[0][:120]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="examples/out/conditional")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--docs", type=int, default=20000)
    p.add_argument("--bad-share", type=float, default=0.3)
    p.add_argument("--marker-share", type=float, default=0.8, help="sentences of a bad document with the word")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a smoke run: 60 steps, 20 samples")
    a = p.parse_args()
    steps, samples = (60, 20) if a.quick else (a.steps, a.samples)
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    records = documents(a.docs, a.bad_share, a.marker_share, a.seed)
    (out / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    print(f"{len(records)} documents, {sum(r['score'] == 0 for r in records)} with '{MARKER}' (score 0)")
    for name, extra in (("ctl", ["--control-tokens", "score:0.5"]), ("plain", [])):
        print(run("prepare", str(out / "docs.jsonl"), "--out", str(out / name), "--val-per-mille=20", *extra).strip())
    train = [*MODEL, "--data.seq_len=256", "--training.batch_size=16", f"--training.steps={steps}"]
    train += ["--metrics.progress=false", "--metrics.plot=false", "--metrics.tensorboard=false"]
    train += ["--eval.every=0", "--checkpoint.every=0", f"--job.dir={out / 'runs'}", f"--job.seed={a.seed}"]
    seconds = {}
    for name in ("ctl", "plain"):
        t0 = time.perf_counter()
        run("train", *train, f"--data.sources={out / name}", f"--job.name={name}")
        seconds[name] = time.perf_counter() - t0
    rows = {
        "control model, <|good|>": undesired_rate(out, out / "runs" / "ctl", "good", samples, a.seed),
        "control model, <|bad|>": undesired_rate(out, out / "runs" / "ctl", "bad", samples, a.seed),
        "control model, no control token": undesired_rate(out, out / "runs" / "ctl", None, samples, a.seed),
        "model without control tokens": undesired_rate(out, out / "runs" / "plain", None, samples, a.seed),
    }
    print(f"\ntraining: {steps} steps each, {seconds['ctl']:.0f} s (control tokens), {seconds['plain']:.0f} s (plain)")
    print(f"{'sampled from':<34} {'samples':>7} {'with ' + MARKER:>9} {'rate':>6}")
    for name, r in rows.items():
        print(f"{name:<34} {r['samples']:>7} {r['undesired']:>9} {r['rate']:>6.1%}")
    summary = {"steps": steps, "train_seconds": seconds, "bad_share": a.bad_share, "rows": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nwrote {out / 'summary.json'}")


if __name__ == "__main__":
    main()
