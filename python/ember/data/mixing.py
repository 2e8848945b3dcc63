"""Skill-it's online data mixing (Chen et al., "Skill-it! A Data-Driven Skills Framework for
Understanding and Training Language Models"): every data.mixing_every steps the source weights
become p_i ∝ p_i · exp(η · Σ_j A_ij · L_j), L_j the validation loss of source j and A the skills
graph (A_ij: how much training on source i lowers source j's loss). The arithmetic is done in
log space, so a large η·A·L cannot overflow exp."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from . import corpus


def update(weights, losses, graph, eta: float) -> np.ndarray:
    """The next normalized weights (float64) from the current ones, each source's loss, the k×k
    graph and the step size."""
    p = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(losses)):  # the weights would be NaN: the mixture means nothing
        raise ValueError(
            f"data.mixing=skillit: a source's validation loss is not finite ({list(losses)}); weights not updated"
        )
    with np.errstate(over="ignore", invalid="ignore"):  # refused below, by name
        logits = eta * (np.asarray(graph, dtype=np.float64) @ np.asarray(losses, dtype=np.float64))
    if not np.all(np.isfinite(logits)):  # inf − inf: NaN weights, which a checkpoint would keep
        raise ValueError(
            f"data.mixing=skillit: eta·A·L overflows float64 ({list(logits)}): data.mixing_eta or the skills "
            "graph's entries are too large; weights not updated"
        )
    with np.errstate(divide="ignore"):  # a 0 saved before the floor below: -inf, then the floor
        z = np.log(p / p.sum()) + logits
    z -= z.max()  # the largest term is exp(0): no overflow, and the sum is >= 1
    # a weight that would underflow to 0 (z below about -745) could never grow again: log(0) is
    # -inf whatever the later losses; the smallest normal number keeps it alive
    q = np.maximum(np.exp(z), np.finfo(np.float64).tiny)
    return q / q.sum()


def load_graph(spec: str, k: int, what: str = "data.skills_graph", names: list[str] | None = None) -> np.ndarray:
    """The skills graph A (k×k float64): 'identity', or a JSON file holding a k×k matrix of finite
    numbers (or an object whose "graph" is one, as `ember skills-graph` writes). A file that does
    not fit is refused, naming it; so is one whose "sources" are not `names` in their order."""
    if spec == "identity":
        return np.eye(k)
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"{what}: {spec}: no such file (give 'identity' or a JSON file of a {k}×{k} matrix)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what}: {spec} is not JSON ({exc})") from None
    if isinstance(data, dict):
        _check_sources(data.get("sources"), names, spec, what)
        data = data.get("graph")
    rows_ok = isinstance(data, list) and len(data) == k and all(isinstance(r, list) and len(r) == k for r in data)
    if not rows_ok:
        raise ValueError(f"{what}: {spec} must hold a {k}×{k} matrix (one row and column per data source)")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for r in data for x in r):
        raise ValueError(f"{what}: {spec}: every entry must be a finite number")
    return np.array(data, dtype=np.float64)


def _check_sources(recorded, names: list[str] | None, spec: str, what: str) -> None:
    """A graph estimated on other sources, or in another order, would move the wrong weights."""
    if names is None or recorded is None:
        return
    same = isinstance(recorded, list) and all(isinstance(x, str) for x in recorded)
    if not same or [_folder(x) for x in recorded] != [_folder(x) for x in names]:
        raise ValueError(
            f"{what}: {spec} relates the sources {recorded}, this run trains on {names}: give them in the graph's "
            "order, or estimate it for these (ember skills-graph --data.sources=...)"
        )


def _folder(name: str) -> str:
    return name if name == corpus.NAME else str(Path(name).resolve())
