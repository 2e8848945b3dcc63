"""--data.mixing=skillit in the trainer: every data.mixing_every steps, each training source's
validation loss (its first data.mixing_batches·eval.batch_size validation windows, summed over
ranks as the Evaluator does) moves the loader's source weights by Skill-it's rule (data/mixing.py).
The weights live in the loader's state, so a checkpoint holds them and a resume continues them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..data.loader import PackedLoader
from ..data.mixing import load_graph, update
from . import distributed
from .config import Config, ConfigError
from .evaluate import Evaluator


def short_names(names: list[str]) -> dict[str, str]:
    """Each source's folder name, or its whole name where two folders share one."""
    base = [Path(n).name or n for n in names]
    return {n: b if base.count(b) == 1 else n for n, b in zip(names, base)}


class SkillitMixer:
    """The rule's inputs (graph, step size, the validation windows) for one run's loader."""

    def __init__(self, cfg: Config, d: distributed.Dist, dtype: torch.dtype, loader: PackedLoader):
        self.d, self.loader = d, loader
        self.names = [s.name for s in loader.sources]
        self.graph = load_graph(cfg.data.skills_graph, len(self.names), names=self.names)
        self.eta, self.every = cfg.data.mixing_eta, cfg.data.mixing_every
        only_trained = dataclasses.replace(cfg.eval, batches=cfg.data.mixing_batches, sources="")
        self.evaluator = Evaluator(dataclasses.replace(cfg, eval=only_trained), d, dtype)
        missing = [n for n in self.names if n not in self.evaluator.sets]
        if missing:
            raise ConfigError(
                f"config: data.mixing=skillit needs a validation window of {cfg.data.seq_len + 1} tokens in every "
                f"source; none in {', '.join(missing)}"
            )

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def step(self, model, step: int) -> dict:
        """Update the loader's weights from the sources' losses now; returns the metrics row."""
        losses = self.evaluator(model)  # the same float64 sums on every rank
        weights = update(self.loader.mixture, [losses[n] for n in self.names], self.graph, self.eta)
        self.loader.set_mixture(self.d.broadcast(weights))  # rank 0's, bit for bit, on every rank
        return self.row(step)

    def row(self, step: int) -> dict:
        """The weights as metrics: mix/<source> (the name val_loss/<source> uses)."""
        return {"step": step, **{f"mix/{n}": float(w) for n, w in zip(self.names, self.loader.mixture)}}

    def describe(self) -> str:
        short = short_names(self.names)
        return "  ".join(f"{short[n]} {w:.3f}" for n, w in zip(self.names, self.loader.mixture))
