"""Packed, deterministic, resumable batches from one or more token sources.

Each source is split into windows of seq_len+1 tokens (window k starts at token k·seq_len; the
documents are packed back to back, separated by end-of-document tokens). Batch b is a pure
function of (seed, b, the per-source counters): which source each of its rows comes from is drawn
from the mixture weights with a generator keyed by (seed, b), and the j-th window taken from a
source is entry j mod n of that source's permutation for epoch j div n (keyed by seed, source,
epoch). So the loader's whole position is a few integers (`state_dict`), and every
data-parallel rank computes the same global batch and keeps only its own rows: the same global
batch gives the same data whatever the number of ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import corpus
from .shards import TokenSplit, open_split, read_index, window_count
from .tokenizer import load_tokenizer


@dataclass
class SourceSpec:
    path: str
    weight: float = 1.0

    @property
    def name(self) -> str:
        return self.path


def parse_sources(spec: str) -> list[SourceSpec]:
    """'stdlib' or 'DIR[:WEIGHT],DIR[:WEIGHT],...' (weights default to 1 and are normalized)."""
    out = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        path, weight = item, 1.0
        head, sep, tail = item.rpartition(":")
        if sep:
            try:
                path, weight = head, float(tail)
            except ValueError:
                pass
        if not weight > 0:
            raise ValueError(f"data.sources: weight of {path!r} must be > 0, got {weight}")
        out.append(SourceSpec(path, weight))
    if not out:
        raise ValueError("data.sources: no source given")
    return out


def source_vocab(spec: SourceSpec, tokenizer: str) -> tuple[int, int]:
    """(vocab_size, eos_id) of a source without loading its tokens."""
    if spec.path == corpus.NAME:
        tok = load_tokenizer(tokenizer)
        return tok.vocab_size, tok.eos_id
    index = read_index(spec.path)
    return index["vocab_size"], index["eos_id"]


_stdlib_cache: dict = {}


def open_source(spec: SourceSpec, split: str, tokenizer: str = "byte", with_weights: bool = False) -> TokenSplit:
    if spec.path != corpus.NAME:
        return open_split(spec.path, split, with_weights)
    if with_weights:
        raise ValueError("the built-in corpus has no token weights: `ember prepare stdlib --out DIR`, then `ember score`")
    key = (split, tokenizer)
    if key not in _stdlib_cache:  # tokenized once per process
        tok = load_tokenizer(tokenizer)
        docs = corpus.stdlib_documents(split)
        eos = np.array([tok.eos_id], dtype=np.uint32)
        _stdlib_cache[key] = np.concatenate([np.concatenate([tok.encode(d), eos]) for d in docs]).astype(np.int32)
    return TokenSplit([_stdlib_cache[key]])


class Windows:
    """The windows of seq_len+1 tokens of one split, across its shards."""

    def __init__(self, split: TokenSplit, seq_len: int):
        self.split, self.seq_len = split, seq_len
        counts = np.array([window_count(len(s), seq_len) for s in split.shards], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)])
        self.n = int(self.starts[-1])

    def get(self, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        s = int(np.searchsorted(self.starts, k, side="right")) - 1
        lo = (k - int(self.starts[s])) * self.seq_len
        tokens = np.asarray(self.split.shards[s][lo : lo + self.seq_len + 1], dtype=np.int64)
        weights = None
        if self.split.weights is not None:  # the weights of the targets
            weights = np.asarray(self.split.weights[s][lo + 1 : lo + self.seq_len + 1], dtype=np.float32)
        return tokens, weights


class PackedLoader:
    def __init__(self, sources: list[SourceSpec], seq_len: int, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, tokenizer: str = "byte", token_weights: str | None = None):
        if batch_size % world_size:
            raise ValueError(f"loader: batch size {batch_size} is not divisible by {world_size} ranks")
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.local = batch_size // world_size
        self.windows = [Windows(open_source(s, "train", tokenizer, with_weights=same_path(s.path, token_weights)), seq_len) for s in sources]
        for spec, w in zip(sources, self.windows):
            if w.n == 0:
                raise ValueError(f"data source {spec.path}: fewer than {seq_len + 1} training tokens")
        self.with_weights = token_weights is not None
        p = np.array([s.weight for s in sources], dtype=np.float64)
        self.mixture = p / p.sum()
        self.batch = 0
        self.counters = [0] * len(sources)
        self._perm_cache: dict = {}

    def state_dict(self) -> dict:
        return {"batch": self.batch, "counters": list(self.counters), "seed": self.seed, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed or state["batch_size"] != self.batch_size:
            raise ValueError(f"loader: checkpoint was made with seed {state['seed']} and batch size {state['batch_size']}, "
                             f"this run has {self.seed} and {self.batch_size}")
        self.batch, self.counters = state["batch"], list(state["counters"])

    def _perm(self, source: int, epoch: int) -> np.ndarray:
        """Source's window order in an epoch; the current epoch's is kept, one per source."""
        cached = self._perm_cache.get(source)
        if cached is None or cached[0] != epoch:
            cached = (epoch, np.random.default_rng([self.seed, source, epoch]).permutation(self.windows[source].n))
            self._perm_cache[source] = cached
        return cached[1]

    def _choices(self) -> np.ndarray:
        if len(self.windows) == 1:
            return np.zeros(self.batch_size, dtype=np.int64)
        return np.random.default_rng([self.seed, 1 << 20, self.batch]).choice(len(self.windows), self.batch_size, p=self.mixture)

    def next_batch(self) -> dict:
        """This rank's rows of the next global batch: inputs, targets (local_batch, seq_len) and
        the targets' weights (or None)."""
        choices = self._choices()
        rows, weights = [], []
        for i, src in enumerate(choices):
            j = self.counters[src]
            self.counters[src] += 1
            if self.rank * self.local <= i < (self.rank + 1) * self.local:
                n = self.windows[src].n
                tokens, w = self.windows[src].get(int(self._perm(src, j // n)[j % n]))
                rows.append(tokens)
                weights.append(w if w is not None else np.ones(len(tokens) - 1, np.float32))
        self.batch += 1
        x = torch.from_numpy(np.stack(rows))
        out = {"inputs": x[:, :-1], "targets": x[:, 1:], "weights": None}
        if self.with_weights:
            out["weights"] = torch.from_numpy(np.stack(weights))
        return out


def same_path(path: str, other: str | None) -> bool:
    """Whether two spellings name the same folder (a source and --loss.token_weights)."""
    return other is not None and Path(path).resolve() == Path(other).resolve()


def validation_batches(spec: SourceSpec, seq_len: int, batch_size: int, batches: int, rank: int = 0, world_size: int = 1,
                       tokenizer: str = "byte") -> list[torch.Tensor]:
    """The first batches·batch_size windows of a source's validation split (fewer when the split
    is short), as tensors of (rows, seq_len+1); rank r keeps rows r, r+world, ... (every rank
    the same number: sharded models run collectives in each forward)."""
    windows = Windows(open_source(spec, "val", tokenizer), seq_len)
    n = min(windows.n, batches * batch_size) // world_size * world_size
    mine = list(range(rank, n, world_size))
    return [torch.from_numpy(np.stack([windows.get(k)[0] for k in mine[i : i + batch_size]])) for i in range(0, len(mine), batch_size)]
