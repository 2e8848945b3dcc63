"""--eval.sources: token folders whose validation split is evaluated beside the training
sources' but never trained on (the original domain's held-out set during continual
pre-training: its loss shows forgetting, and the stability gap)."""

from __future__ import annotations

from pathlib import Path

from ..data.fingerprint import source_tokenizer
from ..data.loader import SourceSpec, parse_sources
from ..data.shards import read_index
from .config import Config, ConfigError


def eval_specs(cfg: Config) -> list[SourceSpec]:
    """The training sources, then the eval-only ones (each folder once)."""
    specs = parse_sources(cfg.data.sources)
    seen = {Path(s.path).resolve() for s in specs}
    for s in parse_sources(cfg.eval.sources) if cfg.eval.sources else []:
        if Path(s.path).resolve() not in seen:
            seen.add(Path(s.path).resolve())
            specs.append(SourceSpec(s.path))
    return specs


def check_eval_sources(cfg: Config) -> None:
    """Each eval source is a token folder with a validation split, of the training data's tokenizer."""
    if not cfg.eval.sources:
        return
    want = source_tokenizer(parse_sources(cfg.data.sources)[0].path, cfg.data.tokenizer)
    for s in parse_sources(cfg.eval.sources):
        if s.path != "stdlib" and not (Path(s.path) / "index.json").is_file():
            raise ConfigError(
                f"config: eval.sources: {s.path}: not a token folder (no index.json; make one with `ember prepare`)"
            )
        if s.path != "stdlib" and not read_index(s.path)["splits"].get("val"):
            raise ConfigError(f"config: eval.sources: {s.path} has no validation split (ember prepare --val-per-mille)")
        got = source_tokenizer(s.path, cfg.data.tokenizer)
        if got != want:
            raise ConfigError(
                f"config: eval.sources: {s.path} has another tokenizer (vocab size, eos id, bos id, tokenizer.json "
                f"hash) {got} than data.sources {want}"
            )
