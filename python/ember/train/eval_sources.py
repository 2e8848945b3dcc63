"""--eval.sources: token folders whose validation split is evaluated beside the training
sources' but never trained on (the original domain's held-out set during continual
pre-training: its loss shows forgetting, and the stability gap). Their checks are preflight.py's."""

from __future__ import annotations

from pathlib import Path

from ..data.loader import SourceSpec, parse_sources
from .config import Config


def eval_specs(cfg: Config) -> list[SourceSpec]:
    """The training sources, then the eval-only ones (each folder once)."""
    specs = parse_sources(cfg.data.sources)
    seen = {Path(s.path).resolve() for s in specs}
    for s in parse_sources(cfg.eval.sources) if cfg.eval.sources else []:
        if Path(s.path).resolve() not in seen:
            seen.add(Path(s.path).resolve())
            specs.append(SourceSpec(s.path))
    return specs
