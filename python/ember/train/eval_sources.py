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
    """Each eval source is a token folder with a validation split, of the training data's
    tokenizer; no source's validation documents are in another's training split."""
    check_one_split(cfg)
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


def check_one_split(cfg: Config) -> None:
    """The training and eval folders prepared from a common input (a file, or a folder holding
    it) must share --val-per-mille: the split is a hash of each document below it, so a larger
    share puts documents in validation that the other folder trains on. (Folders from before
    index.json recorded the share are not compared.)"""
    folders = [s.path for s in eval_specs(cfg) if s.path != "stdlib" and (Path(s.path) / "index.json").is_file()]
    made = [(f, read_index(f)) for f in folders]
    made = [
        (f, i["val_per_mille"], [Path(p) for p in i.get("inputs", []) if p != "stdlib"])
        for f, i in made
        if "val_per_mille" in i
    ]
    for k, (a, share_a, inputs_a) in enumerate(made):
        for b, share_b, inputs_b in made[k + 1 :]:
            common = next((p for p in inputs_a for q in inputs_b if p == q or p in q.parents or q in p.parents), None)
            if common is not None and share_a != share_b:
                raise ConfigError(
                    f"config: {a} (--val-per-mille {share_a}) and {b} (--val-per-mille {share_b}) were both prepared "
                    f"from {common}: one's validation documents are in the other's training split; prepare them "
                    "with one --val-per-mille"
                )
