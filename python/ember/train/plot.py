"""`ember plot RUN_DIR`: PNG curves of a run's metrics.jsonl (loss, per-source validation loss,
learning rate, tokens/s)."""

from __future__ import annotations

import json
from pathlib import Path


# What plot_run may write into a run folder: a rewind sets them aside with the history they show.
PLOTS = ("loss.png", "val_per_source.png", "lr.png", "tokens_per_s.png")


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl (is it a run folder?)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    # A resumed run appends: for each kind of record keep the last one written for a step.
    last = {}
    for r in rows:
        last[("val" if "val_loss" in r else "train", r["step"])] = r
    return [last[k] for k in sorted(last, key=lambda k: (k[1], k[0]))]


def plot_run(run_dir: str | Path) -> list[Path]:
    """Writes loss.png (and val_per_source.png with several validation sets), lr.png and
    tokens_per_s.png into the run folder; returns their paths."""
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
    per_source = sorted({k for r in val for k in r if k.startswith("val_loss/")})
    if per_source:  # each source's validation loss (forgetting, the stability gap)
        figure(
            "val_per_source.png",
            "validation loss per source",
            [
                (
                    Path(k.removeprefix("val_loss/")).name or k,
                    [r["step"] for r in val if k in r],
                    [r[k] for r in val if k in r],
                    "o-",
                )
                for k in per_source
            ],
        )
    figure("lr.png", "learning rate", [("lr", [r["step"] for r in train], [r["lr"] for r in train], "-")])
    figure(
        "tokens_per_s.png",
        "tokens/s",
        [("tokens/s", [r["step"] for r in train], [r["tokens_per_s"] for r in train], "-")],
    )
    return out
