"""What a run records about its data, to notice later that it changed: per source, the token
folder's fingerprint (index.json's, from `ember prepare`: a hash of the tokens and tokenizer),
its token counts, and the tokenizer's identity (a hash of its tokenizer.json, or 'byte'); for
all of them, the vocabulary, end- and beginning-of-document ids a model trained on them has.

The record travels in the data loader's state, so every checkpoint holds it; comparing it with
the folders as they are now is a read of each index.json."""

from __future__ import annotations

import hashlib
from pathlib import Path

from . import corpus
from .shards import INDEX, WEIGHTS_INDEX, read_index
from .tokenizer import load_tokenizer


def _hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def tokenizer_identity(spec: str | Path) -> str:
    """'byte', or a hash of the tokenizer.json (a file, or a folder holding one)."""
    if str(spec) == "byte":
        return "byte"
    path = Path(spec) / "tokenizer.json" if Path(spec).is_dir() else Path(spec)
    return _hash(path.read_bytes())


def source_tokenizer(path: str, tokenizer: str = "byte") -> tuple:
    """(vocab_size, eos_id, bos_id, tokenizer identity) of a source: what the sources a run
    trains or evaluates on must share (two tokenizers of one size give the same ids other text)."""
    if path == corpus.NAME:
        tok = load_tokenizer(tokenizer)
        return tok.vocab_size, tok.eos_id, tok.bos_id, tokenizer_identity(tokenizer)
    index = read_index(path)
    ident = "byte" if index["tokenizer"] == "byte" else tokenizer_identity(Path(path) / index["tokenizer"])
    return index["vocab_size"], index["eos_id"], index.get("bos_id"), ident


def plain_tokenizer(path: str, tokenizer: str = "byte") -> tuple:
    """source_tokenizer of a source without its control tokens (`ember prepare --control-tokens`
    puts them after the tokenizer's ids): what the same text prepared without them has, whose
    ids a model trained on the source also knows."""
    vocab, *rest = source_tokenizer(path, tokenizer)
    control = {} if path == corpus.NAME else read_index(path).get("control_tokens") or {}
    return (vocab - len(control), *rest)


def source_record(path: str, tokenizer: str = "byte", weighted: bool = False) -> dict:
    """The record of one source: a token folder, or the built-in corpus with `tokenizer`;
    weighted: with a hash of its token weights' weights.json (what `ember score` made them from)."""
    if path == corpus.NAME:
        tok = load_tokenizer(tokenizer)
        ident = tokenizer_identity(tokenizer)
        return {
            "fingerprint": None,
            "tokenizer": ident,
            "vocab_size": tok.vocab_size,
            "eos_id": tok.eos_id,
            "control_tokens": {},
        }
    index = read_index(path)
    record = {
        # a folder from before prepare recorded one: its index.json, which lists every shard's size
        "fingerprint": index.get("fingerprint") or _hash((Path(path) / INDEX).read_bytes()),
        "tokenizer": "byte" if index["tokenizer"] == "byte" else tokenizer_identity(Path(path) / index["tokenizer"]),
        "vocab_size": index["vocab_size"],
        "eos_id": index["eos_id"],
        "bos_id": index.get("bos_id"),
        "tokens": {split: sum(e["tokens"] for e in entries) for split, entries in index["splits"].items()},
        "control_tokens": index.get("control_tokens", {}),  # conditional training's <|good|> / <|bad|> ids
    }
    if weighted:
        weights = Path(path) / WEIGHTS_INDEX
        record["weights"] = _hash(weights.read_bytes()) if weights.is_file() else None
    return record


def data_record(paths: list[str], tokenizer: str = "byte", weighted: str | None = None) -> dict:
    """{path: source_record} for a run's sources (paths as the run names them: absolute);
    `weighted`: the source whose token weights it trains with."""
    weighted = Path(weighted).resolve() if weighted else None
    return {p: source_record(p, tokenizer, Path(p).resolve() == weighted) for p in dict.fromkeys(paths)}


def what_changed(path: str, then: dict, tokenizer: str = "byte", weights: bool = True) -> str | None:
    """None if the source at `path` is what `then` recorded (its token weights too, if `weights`
    and it was recorded with them); else what differs, in words."""
    if path != corpus.NAME and not (Path(path) / INDEX).is_file():
        why = "is gone" if not Path(path).exists() else "is no longer a token folder (no index.json)"
        return f"{path} {why}"
    weights = weights and "weights" in then
    now = source_record(path, tokenizer, weights)
    if now["fingerprint"] == then["fingerprint"] and now["tokenizer"] == then["tokenizer"]:
        if not weights or now["weights"] == then["weights"]:
            return None
        return f"{path}: its token weights were made again since (weights.json differs)"
    diffs = [
        f"{key} {then.get(key)} -> {now.get(key)}"
        for key in ("tokens", "vocab_size", "eos_id", "bos_id")
        if then.get(key) != now.get(key)
    ]
    if now["tokenizer"] != then["tokenizer"]:
        diffs.insert(0, "another tokenizer")
    return f"{path} was prepared again since ({', '.join(diffs) or 'other tokens'})"
