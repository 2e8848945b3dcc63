"""Packed, deterministic, resumable batches from one or more token sources.

Each source is split into windows of seq_len+1 tokens (window k starts at token k·seq_len; the
documents are packed back to back, separated by end-of-document tokens). Batch b is a pure
function of (seed, b, the per-source counters): which source each of its rows comes from is drawn
from the mixture weights with a generator keyed by (seed, b), and the j-th window taken from a
source is entry j mod n of that source's permutation for epoch j div n (keyed by seed, source,
epoch). A source with a token budget trains on a fixed subset of its windows (drawn once from
(seed, source)), epoch after epoch; a source's weight may change at given steps (a replay ratio
that falls, say). So the loader's whole position is a few integers (`state_dict`), and every
data-parallel rank computes the same global batch and keeps only its own rows: the same global
batch gives the same data whatever the number of ranks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import corpus
from .fingerprint import data_record
from .shards import TokenSplit, open_split, read_index, window_count
from .tokenizer import load_tokenizer


@dataclass
class SourceSpec:
    path: str
    weight: float = 1.0
    tokens: int = 0  # token budget: train on a fixed subset of about this many tokens (0: all)
    schedule: tuple[tuple[int, float], ...] = ()  # (step, weight): the weight from that step on

    @property
    def name(self) -> str:
        return self.path

    def weight_at(self, step: int) -> float:
        """The mixture weight at optimizer step `step` (1-based)."""
        w = self.weight
        for at, value in self.schedule:
            if step >= at:
                w = value
        return w


_SUFFIX = {"k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}


def _count(text: str) -> int:
    """'5000', '50k', '2M', '1.5G' as an integer."""
    t = text.strip().lower().replace("_", "")
    scale = _SUFFIX.get(t[-1:], 1)
    return int(float(t[:-1] if scale > 1 else t) * scale)


def _option(source: SourceSpec, part: str) -> bool:
    """Apply one ':'-separated option to source; False if `part` is not an option. A tokens= or
    STEP= option whose value is not a number is an error, not part of the path."""
    key, eq, value = part.partition("=")
    try:
        if not eq:
            source.weight = float(part)
        elif key == "tokens":
            source.tokens = _count(value)
            if source.tokens < 1:  # tokens=0 or 0.4 would silently mean all of the source
                raise ValueError(f"data.sources: {part!r}: tokens must be >= 1 (leave it out for all of the source)")
        elif key.isdigit():
            source.schedule += ((int(key), float(value)),)
        else:
            return False
    except (ValueError, OverflowError) as exc:  # int(float("inf")) overflows
        if str(exc).startswith("data.sources"):
            raise
        if eq and (key == "tokens" or key.isdigit()):
            raise ValueError(f"data.sources: {part!r}: {value!r} is not a number") from None
        return False
    return True


def _check_source(src: SourceSpec, item: str) -> None:
    """Weights finite (an infinite one makes the mixture NaN), > 0 unless a schedule starts the
    source later; schedule steps >= 1 and their weights finite, >= 0."""
    if not (src.weight > 0 or src.weight == 0 and src.schedule) or src.weight == float("inf"):
        raise ValueError(f"data.sources: weight of {src.path!r} must be > 0 and finite, got {src.weight}")
    if any(at < 1 or not 0 <= w < float("inf") for at, w in src.schedule):
        raise ValueError(f"data.sources: {item!r}: needs each schedule step >= 1 and its weight finite and >= 0")


def parse_sources(spec: str) -> list[SourceSpec]:
    """'stdlib' or 'DIR[:WEIGHT][:tokens=N][:STEP=WEIGHT]...,DIR...': weights default to 1 and
    are normalized at each step; tokens=N (k, M, G suffixes) trains on a fixed subset of about N
    tokens of the source, repeated over epochs; STEP=WEIGHT sets the weight from that optimizer
    step on (e.g. old:0.5:1000=0.1 replays old data at 0.5, then 0.1 from step 1000)."""
    out = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        parts = item.split(":")
        src = SourceSpec(parts[0])
        first = len(parts)  # options are taken from the end (a path may hold a ':')
        while first > 1 and _option(src, parts[first - 1]):
            first -= 1
        src = SourceSpec(":".join(parts[:first]))
        for part in parts[first:]:
            _option(src, part)
        src.schedule = tuple(sorted(src.schedule))
        _check_source(src, item)
        out.append(src)
    if not out:
        raise ValueError("data.sources: no source given")
    named = [s.path if s.path == corpus.NAME else Path(s.path).resolve() for s in out]
    twice = next((s.path for s, key in zip(out, named) if named.count(key) > 1), None)
    if twice is not None:  # each name would train the folder again, with its own epoch order
        raise ValueError(f"data.sources: {twice} is named twice: give it once, with one weight")
    changes = sorted({at for s in out for at, _ in s.schedule})
    for step in [1, *changes]:
        if not sum(s.weight_at(step) for s in out) > 0:
            raise ValueError(f"data.sources: every weight is 0 from step {step}")
    return out


def source_vocab(spec: SourceSpec, tokenizer: str) -> tuple[int, int]:
    """(vocab_size, eos_id) of a source without loading its tokens."""
    if spec.path == corpus.NAME:
        tok = load_tokenizer(tokenizer)
        return tok.vocab_size, tok.eos_id
    index = read_index(spec.path)
    return index["vocab_size"], index["eos_id"]


@functools.cache
def _stdlib_tokens(split: str, tokenizer: str) -> np.ndarray:
    """The built-in corpus's split, tokenized once per process (read-only: shared by callers)."""
    tok = load_tokenizer(tokenizer)
    eos = np.array([tok.eos_id], dtype=np.uint32)
    docs = [np.concatenate([tok.encode_document(d), eos]) for d in corpus.stdlib_documents(split)]
    tokens = np.concatenate(docs).astype(np.int32)
    tokens.flags.writeable = False
    return tokens


def open_source(spec: SourceSpec, split: str, tokenizer: str = "byte", with_weights: bool = False) -> TokenSplit:
    if spec.path != corpus.NAME:
        return open_split(spec.path, split, with_weights)
    if with_weights:
        raise ValueError(
            "the built-in corpus has no token weights: `ember prepare stdlib --out DIR`, then `ember score`"
        )
    return TokenSplit([_stdlib_tokens(split, tokenizer)])


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
    def __init__(
        self,
        sources: list[SourceSpec],
        seq_len: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        tokenizer: str = "byte",
        token_weights: str | None = None,
    ):
        if batch_size % world_size:
            raise ValueError(f"loader: batch size {batch_size} is not divisible by {world_size} ranks")
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.local = batch_size // world_size
        self.windows = [
            Windows(open_source(s, "train", tokenizer, with_weights=same_path(s.path, token_weights)), seq_len)
            for s in sources
        ]
        for spec, w in zip(sources, self.windows):
            if w.n == 0:
                raise ValueError(f"data source {spec.path}: fewer than {seq_len + 1} training tokens")
        self.with_weights = token_weights is not None
        self.sources = sources
        p = np.array([s.weight for s in sources], dtype=np.float64)
        self.mixture = p / p.sum()
        self.mix_updates = 0  # times set_mixture changed the weights (Skill-it's online rule)
        self.subsets = [self._subset(i, s.tokens, seq_len) for i, s in enumerate(sources)]
        self.batch = 0
        self.counters = [0] * len(sources)
        self._perm_cache: dict = {}
        self.data = data_record([s.path for s in sources], tokenizer, token_weights)  # saved with the position

    def state_dict(self) -> dict:
        return {
            "batch": self.batch,
            "counters": list(self.counters),
            "seed": self.seed,
            "batch_size": self.batch_size,
            "data": self.data,
            "mixture": [float(x) for x in self.mixture],  # Skill-it's weights reached, exactly
            "mix_updates": self.mix_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed or state["batch_size"] != self.batch_size:
            raise ValueError(
                f"loader: checkpoint was made with seed {state['seed']} and batch size {state['batch_size']}, this run has {self.seed} and {self.batch_size}"
            )
        changed = [p for p, rec in state.get("data", {}).items() if self.data.get(p, rec) != rec]
        if changed:  # a position in other data means nothing
            raise ValueError(f"loader: the checkpoint's data changed since it was saved: {', '.join(changed)}")
        self.batch, self.counters = state["batch"], list(state["counters"])
        if state.get("mix_updates"):  # weights an online rule changed (saved before it: the sources')
            self.mixture = np.array(state["mixture"], dtype=np.float64)
            self.mix_updates = state["mix_updates"]

    def set_mixture(self, weights) -> None:
        """New normalized source weights from the next batch on (Skill-it's online rule); they
        are part of the loader's state."""
        if any(s.schedule for s in self.sources):
            raise ValueError("loader: sources with weight schedules cannot take online weights")
        self.mixture = np.asarray(weights, dtype=np.float64)
        self.mix_updates += 1

    def _subset(self, source: int, tokens: int, seq_len: int) -> np.ndarray | None:
        """The windows a token budget keeps: ceil(tokens / seq_len) of them, drawn once."""
        n = self.windows[source].n
        if not tokens:
            return None
        keep = -(-tokens // seq_len)
        if keep > n:
            raise ValueError(
                f"data source {self.sources[source].path}: tokens={tokens:,} is more than its {n * seq_len:,} training tokens"
            )
        return np.sort(np.random.default_rng([self.seed, source, 1 << 30]).permutation(n)[:keep])

    def _size(self, source: int) -> int:
        subset = self.subsets[source]
        return self.windows[source].n if subset is None else len(subset)

    def _perm(self, source: int, epoch: int) -> np.ndarray:
        """Source's window order in an epoch; the current epoch's is kept, one per source."""
        cached = self._perm_cache.get(source)
        if cached is None or cached[0] != epoch:
            cached = (epoch, np.random.default_rng([self.seed, source, epoch]).permutation(self._size(source)))
            self._perm_cache[source] = cached
        return cached[1]

    def mixture_at(self, batch: int) -> np.ndarray:
        """The normalized source weights of batch `batch` (optimizer step batch + 1)."""
        if not any(s.schedule for s in self.sources):
            return self.mixture
        p = np.array([s.weight_at(batch + 1) for s in self.sources], dtype=np.float64)
        return p / p.sum()

    def _choices(self) -> np.ndarray:
        if len(self.windows) == 1:
            return np.zeros(self.batch_size, dtype=np.int64)
        return np.random.default_rng([self.seed, 1 << 20, self.batch]).choice(
            len(self.windows), self.batch_size, p=self.mixture_at(self.batch)
        )

    def next_batch(self) -> dict:
        """This rank's rows of the next global batch: inputs, targets (local_batch, seq_len) and
        the targets' weights (or None)."""
        choices = self._choices()
        rows, weights = [], []
        for i, src in enumerate(choices):
            j = self.counters[src]
            self.counters[src] += 1
            if self.rank * self.local <= i < (self.rank + 1) * self.local:
                n = self._size(src)
                k = int(self._perm(src, j // n)[j % n])
                tokens, w = self.windows[src].get(k if self.subsets[src] is None else int(self.subsets[src][k]))
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


def validation_batches(
    spec: SourceSpec,
    seq_len: int,
    batch_size: int,
    batches: int,
    rank: int = 0,
    world_size: int = 1,
    tokenizer: str = "byte",
) -> list[torch.Tensor]:
    """The first batches·batch_size windows of a source's validation split (fewer when the split
    is short), as tensors of (rows, seq_len+1); rank r keeps windows r, r+world, ..., so that
    every window is evaluated once at any world size (the first n % world ranks hold one more:
    the Evaluator evens out the number of forward passes)."""
    windows = Windows(open_source(spec, "val", tokenizer), seq_len)
    n = min(windows.n, batches * batch_size)
    mine = list(range(rank, n, world_size))
    return [
        torch.from_numpy(np.stack([windows.get(k)[0] for k in mine[i : i + batch_size]]))
        for i in range(0, len(mine), batch_size)
    ]
