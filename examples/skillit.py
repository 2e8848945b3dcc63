"""Skill-it online data mixing on a CPU in a few minutes: a target source whose documents need a
skill that another source teaches.

Three generated sources (bytes):
  lexicon  (the prerequisite)  lines `word = code`: a fixed made-up vocabulary of 64 words, each
                               with its own 3-digit code;
  phrases  (the target)        lines `word word word : codecodecode`: the codes of three random
                               words, spelled back to back: the digits are predictable only by
                               someone who knows the lexicon;
  numbers  (unrelated)         lines of sums `347 + 12 = 359`.
Three runs of the same steps, from the same initialization, through `ember train`:
  fixed     the three sources at equal weights;
  skillit   the same sources, --data.mixing=skillit with the skills graph `ember skills-graph`
            measures from a short warm-up run of the fixed mixture (how much training on each
            source lowers each source's loss);
  target    phrases alone.
Prints the target's validation loss against steps for each (and the Skill-it weights), writes
a JSON and a PNG. `--target-tokens N` makes the target scarce (`DIR:tokens=N`: a fixed subset of
about N tokens, repeated over epochs) while the other sources stay plentiful, the setting where
training on the target alone overfits and a prerequisite should help.

    python examples/skillit.py [--quick] [--target-tokens 8k] [--out examples/out/skillit]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import string
import time
from pathlib import Path

from ember.cli import main as ember
from ember.data.prepare import prepare

MODEL = ["--model.name=debug", "--model.dim=64", "--model.n_layers=2", "--model.n_heads=4", "--model.n_kv_heads=2"]
QUIET = [
    "--metrics.progress=false",
    "--metrics.tensorboard=false",
    "--metrics.plot=false",
    "--training.selftest=false",
    "--job.device=cpu",
    "--checkpoint.export_safetensors=false",
]


def lexicon(n: int = 64, seed: int = 0) -> dict[str, str]:
    rng = random.Random(seed)
    words = set()
    while len(words) < n:
        words.add("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 5))))
    codes = rng.sample(range(100, 1000), n)
    return {w: str(c) for w, c in zip(sorted(words), codes)}


def documents(kind: str, n: int, lex: dict[str, str], seed: int) -> list[str]:
    rng, words = random.Random(seed), list(lex)
    docs = []
    for _ in range(n):
        lines = []
        for _ in range(rng.randint(6, 16)):
            if kind == "lexicon":
                w = rng.choice(words)
                lines.append(f"{w} = {lex[w]}")
            elif kind == "phrases":
                ws = rng.sample(words, 3)
                lines.append(f"{' '.join(ws)} : {''.join(lex[w] for w in ws)}")
            else:
                a, b = rng.randint(0, 999), rng.randint(0, 999)
                lines.append(f"{a} + {b} = {a + b}")
        docs.append("\n".join(lines) + "\n")
    return docs


def make_sources(out: Path) -> dict[str, str]:
    lex, paths = lexicon(), {}
    for i, (kind, n) in enumerate((("lexicon", 1500), ("phrases", 3000), ("numbers", 3000))):
        jsonl = out / f"{kind}.jsonl"
        jsonl.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents(kind, n, lex, seed=i + 1)))
        paths[kind] = str((out / kind).resolve())
        prepare([str(jsonl)], paths[kind], workers=1, val_per_mille=30, progress=False)
    return paths


def run(args: list[str]) -> None:
    if ember(["train", *args]) != 0:
        raise SystemExit(f"skillit example: `ember train {' '.join(args)}` failed")


def curves(run_dir: Path, target: str) -> tuple[list[dict], list[dict]]:
    """(the target's validation loss by step, the mix/ weights by step) from metrics.jsonl."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    val = [{"step": r["step"], "loss": r.get(f"val_loss/{target}", r["val_loss"])} for r in rows if "val_loss" in r]
    mix = [
        {"step": r["step"], **{Path(k[4:]).name: v for k, v in r.items() if k.startswith("mix/")}}
        for r in rows
        if any(k.startswith("mix/") for k in r)
    ]
    return val, mix


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="examples/out/skillit")
    p.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--warmup-steps", type=int, default=40, help="the fixed-mixture run the graph is measured from")
    p.add_argument("--graph-steps", type=int, default=40, help="steps on each source alone for the graph")
    p.add_argument("--every", type=int, default=20, help="--data.mixing_every")
    p.add_argument("--eta", type=float, default=0.5, help="--data.mixing_eta")
    p.add_argument("--target-tokens", default="", help="train on a subset of about N tokens of the target (e.g. 8k)")
    a = p.parse_args()
    if a.quick:
        a.steps, a.warmup_steps, a.graph_steps, a.every = 60, 10, 10, 10
    out = Path(a.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    src = make_sources(out)
    target = src["phrases"] + (f":tokens={a.target_tokens}" if a.target_tokens else "")
    mixture = f"--data.sources={src['lexicon']},{target},{src['numbers']}"
    common = [*MODEL, *QUIET, f"--job.dir={out}", "--data.seq_len=64", "--training.batch_size=16"]
    common += ["--optimizer.lr=3e-3", "--lr_scheduler.warmup_steps=20", "--eval.batches=4", "--eval.batch_size=16"]
    each = max(a.steps // 10, 1)

    run([*common, mixture, "--job.name=warmup", f"--training.steps={a.warmup_steps}", "--eval.every=0"])
    graph = out / "graph.json"
    code = ember(["skills-graph", str(out / "warmup"), mixture, f"--steps={a.graph_steps}", f"--out={graph}"])
    if code != 0:
        raise SystemExit("skillit example: `ember skills-graph` failed")
    skillit = ["--data.mixing=skillit", f"--data.skills_graph={graph}", f"--data.mixing_every={a.every}"]
    runs = {
        "fixed": [mixture],
        "skillit": [mixture, *skillit, f"--data.mixing_eta={a.eta}"],
        "target": [f"--data.sources={target}"],
    }
    results = {}
    for name, flags in runs.items():
        t = time.perf_counter()
        run([*common, *flags, f"--job.name={name}", f"--training.steps={a.steps}", f"--eval.every={each}"])
        val, mix = curves(out / name, src["phrases"])
        results[name] = {"val": val, "mix": mix, "wall_s": time.perf_counter() - t}
    report(results, json.loads(graph.read_text()), out, vars(a), time.perf_counter() - t0)


def report(results: dict, graph: dict, out: Path, args: dict, wall: float) -> None:
    names = [Path(s).name for s in graph["sources"]]
    print("\nskills graph (row: trained on; column: drop of the loss of)")
    for n, row in zip(names, graph["graph"]):
        print(f"  {n:<8} " + " ".join(f"{v:7.3f}" for v in row))
    print(f"\nvalidation loss of the target (phrases), nats/byte; {wall:.0f} s in all")
    labels = list(results)
    print("| step | " + " | ".join(labels) + " |")
    print("|---" * (1 + len(labels)) + "|")
    for i, row in enumerate(results[labels[0]]["val"]):
        print(f"| {row['step']} | " + " | ".join(f"{results[k]['val'][i]['loss']:.3f}" for k in labels) + " |")
    print("\nSkill-it's weights")
    for m in results["skillit"]["mix"]:
        print(f"  step {m['step']:>4}  " + "  ".join(f"{k} {v:.3f}" for k, v in m.items() if k != "step"))
    (out / "skillit.json").write_text(json.dumps({"results": results, "graph": graph, "args": args, "wall_s": wall}))
    plot(results, out / "skillit.png")
    print(f"wrote {out / 'skillit.png'} and {out / 'skillit.json'}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for label, r in results.items():
        axes[0].plot([x["step"] for x in r["val"]], [x["loss"] for x in r["val"]], "o-", ms=3, label=label)
    axes[0].set_title("target (phrases) validation loss")
    axes[0].set_ylabel("nats/byte")
    mix = results["skillit"]["mix"]
    for k in [k for k in mix[0] if k != "step"]:
        axes[1].plot([m["step"] for m in mix], [m[k] for m in mix], "o-", ms=3, label=k)
    axes[1].set_title("Skill-it source weights")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
