"""`ember plot RUN_DIR`: PNG curves of a run's metrics.jsonl (loss, per-source validation loss,
learning rate, tokens/s)."""

from __future__ import annotations

import json
from pathlib import Path


# What plot_run may write into a run folder: a rewind sets them aside with the history they show.
PLOTS = ("loss.png", "val_per_source.png", "lr.png", "tokens_per_s.png", "mix.png")


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl (is it a run folder?)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    # A resumed run appends: for each kind of record keep the last one written for a step.
    last = {}
    for r in rows:
        last[(_kind(r), r["step"])] = r
    return [last[k] for k in sorted(last, key=lambda k: (k[1], k[0]))]


def _kind(row: dict) -> str:
    """A record's kind (one of each per step): an evaluation, Skill-it's weights, lm-eval task
    numbers, or the step's training metrics."""
    if "val_loss" in row:
        return "val"
    prefixes = {k.split("/", 1)[0] for k in row if "/" in k}
    return next((kind for kind in ("mix", "task") if kind in prefixes), "train")


def plot_run(run_dir: str | Path) -> list[Path]:
    """Writes loss.png (and val_per_source.png with several validation sets, mix.png with Skill-it's
    source weights, tasks.png with lm-eval task numbers), lr.png and tokens_per_s.png into the run folder; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_loss" in r]
    out = []

    def figure(name, ylabel, series, logy=False):
        fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
        for label, xs, ys, style in series:
            if xs:
                ax.plot(xs, ys, style, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{run_dir.name}: {ylabel}")
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend()
        fig.tight_layout()
        path = run_dir / name
        fig.savefig(path)
        plt.close(fig)
        out.append(path)

    figure(
        "loss.png",
        "loss (nats per token)",
        [
            ("train", [r["step"] for r in train], [r["loss"] for r in train], "-"),
            ("validation", [r["step"] for r in val], [r["val_loss"] for r in val], "o-"),
        ],
    )
    per_source = _per_source(val, "val_loss/")
    if per_source:  # each source's validation loss (forgetting, the stability gap)
        figure("val_per_source.png", "validation loss per source", per_source)
    mix = _per_source(rows, "mix/")
    if mix:  # Skill-it's source weights at each update
        figure("mix.png", "source weight", mix)
    tasks = _task_series(rows)
    if tasks:  # lm-eval task numbers (--eval.tasks): the forgetting curve of continual pre-training
        out.append(_task_figure(plt, run_dir, tasks))
    figure("lr.png", "learning rate", [("lr", [r["step"] for r in train], [r["lr"] for r in train], "-")])
    figure(
        "tokens_per_s.png",
        "tokens/s",
        [("tokens/s", [r["step"] for r in train], [r["tokens_per_s"] for r in train], "-")],
    )
    return out


def _per_source(rows: list[dict], prefix: str) -> list[tuple]:
    """One o- series per key `prefix`<source>, labelled with the source's folder name."""
    keys = sorted({k for r in rows for k in r if k.startswith(prefix)})
    return [
        (
            Path(k.removeprefix(prefix)).name or k,
            [r["step"] for r in rows if k in r],
            [r[k] for r in rows if k in r],
            "o-",
        )
        for k in keys
    ]


def _task_series(rows: list[dict]) -> dict[str, tuple[list, list]]:
    """{"<task>/<metric>": (steps, values)} of the task/* keys (--eval.tasks)."""
    keys = sorted({k for r in rows for k in r if k.startswith("task/")})
    return {
        k.removeprefix("task/"): ([r["step"] for r in rows if k in r], [r[k] for r in rows if k in r]) for k in keys
    }


def _task_figure(plt, run_dir: Path, series: dict) -> Path:
    """tasks.png: one panel per task metric (accuracies and perplexities have their own scales)."""
    cols = min(3, len(series))
    rows = -(-len(series) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), dpi=110, squeeze=False)
    for ax, (name, (xs, ys)) in zip(axes.flat, series.items()):
        ax.plot(xs, ys, "o-")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(series) :]:
        ax.set_visible(False)
    fig.suptitle(f"{run_dir.name}: lm-eval tasks")
    fig.tight_layout()
    path = run_dir / "tasks.png"
    fig.savefig(path)
    plt.close(fig)
    return path
