"""Token shards on disk: memory-mapped flat arrays of token ids (uint16 or uint32), documents
separated by the tokenizer's end-of-document id, and one `index.json` describing them:

    DIR/index.json               format, tokenizer, vocab_size, eos_id, dtype, splits → shards
                                 (file, tokens, documents, max_id: the largest token id)
    DIR/train-00000.bin ...      raw token ids, a shard ends at a document boundary
    DIR/val-00000.bin ...
    DIR/tokenizer.json           a copy of the tokenizer, when it is not the byte tokenizer
    DIR/weights.json             written by `ember score`: how the token weights were made
    DIR/weights-train-00000.bin  float32 per token, aligned with the shard (PRIOR weights)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import write_json

FORMAT = "ember-tokens-v1"
INDEX = "index.json"
WEIGHTS_INDEX = "weights.json"


def write_json_atomic(path: Path, obj) -> None:
    """Whole and on disk, or the old file (ember.atomic: a temporary name of its own, fsyncs)."""
    write_json(path, obj)


def read_index(directory: str | Path) -> dict:
    path = Path(directory) / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: not a token directory (no {INDEX}); make one with `ember prepare`")
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); make the folder again with `ember prepare`") from None
    fmt = index.get("format") if isinstance(index, dict) else None
    if fmt != FORMAT:
        raise ValueError(f"{path}: format {fmt!r}, expected {FORMAT!r}")
    return index


def weights_file(shard_file: str) -> str:
    return "weights-" + Path(shard_file).with_suffix(".bin").name


def window_count(tokens: int, seq_len: int) -> int:
    """Training windows of seq_len+1 tokens in a shard of `tokens` tokens (the loader's rule)."""
    return max(tokens - 1, 0) // seq_len


def check_shards(directory: str | Path, vocab_size: int, with_weights: bool = False) -> None:
    """Refuse a token folder that would train wrong, naming the file: a shard missing, or whose
    size is not what index.json says (truncated, or written over), or that does not end with the
    end-of-document token; a token id >= vocab_size; token weights missing or not the length of
    their shard. Cost: a stat and one token per shard, the max id from index.json; only a folder
    made before `ember prepare` recorded max_id is read whole (a numpy max over the memory map:
    about 4 GiB/s on one core from the page cache, disk speed otherwise)."""
    directory = Path(directory)
    index = read_index(directory)
    dtype = np.dtype(index["dtype"])
    if with_weights:
        _check_weight_values(directory / WEIGHTS_INDEX)
    for split, entries in index["splits"].items():
        for entry in entries:
            if not entry["tokens"]:
                continue
            _check_shard(directory / entry["file"], entry, dtype, index["eos_id"], vocab_size)
            if with_weights and split == "train":
                _check_weights(directory / weights_file(entry["file"]), entry["tokens"])


def _check_shard(path: Path, entry: dict, dtype: np.dtype, eos_id: int, vocab_size: int) -> None:
    n = entry["tokens"]
    if not path.is_file():
        raise ValueError(f"{path}: missing (index.json lists it with {n:,} tokens)")
    size, expected = path.stat().st_size, n * dtype.itemsize
    if size != expected:
        raise ValueError(
            f"{path}: {size:,} bytes where index.json says {n:,} {dtype.name} tokens ({expected:,} bytes): truncated or written over; run `ember prepare` again"
        )
    tokens = np.memmap(path, dtype=dtype, mode="r")
    if tokens[-1] != eos_id:  # every shard ends at a document boundary
        raise ValueError(
            f"{path}: corrupted: it ends with token {int(tokens[-1])}, not the end-of-document token {eos_id}; run `ember prepare` again"
        )
    top = entry["max_id"] if "max_id" in entry else int(tokens.max())
    if top >= vocab_size:
        raise ValueError(
            f"{path}: token id {top} is outside the model's vocabulary of {vocab_size} (ids 0..{vocab_size - 1}): "
            f"a tokenizer whose ids go past its vocab_size (set --model.vocab_size), or corrupted data"
        )


def _check_weight_values(path: Path) -> None:
    """Weights that average 0 or NaN train nothing: every step's loss and gradient would be 0."""
    mean = json.loads(path.read_text()).get("mean_weight", 1.0)
    if not (isinstance(mean, (int, float)) and np.isfinite(mean) and mean > 0):
        raise ValueError(
            f"{path}: the token weights average {mean}: training on them learns nothing; run `ember score` again"
        )


def _check_weights(path: Path, tokens: int) -> None:
    if not path.is_file():
        raise ValueError(
            f"{path}: missing: the folder has token weights ({WEIGHTS_INDEX}) but none for this shard; run `ember score` again"
        )
    size = path.stat().st_size
    if size != tokens * 4:
        raise ValueError(
            f"{path}: {size:,} bytes of float32 weights for a shard of {tokens:,} tokens ({tokens * 4:,} bytes): "
            f"it does not match its shard; run `ember score` again"
        )


@dataclass
class TokenSplit:
    """One split of a source: a list of token arrays (memory maps, or arrays in memory), and the
    token weights aligned with them when there are any."""

    shards: list
    weights: list | None = None

    @property
    def num_tokens(self) -> int:
        return sum(len(s) for s in self.shards)


def open_split(directory: str | Path, split: str, with_weights: bool = False) -> TokenSplit:
    directory = Path(directory)
    index = read_index(directory)
    entries = index["splits"].get(split, [])
    dtype = np.dtype(index["dtype"])
    shards = [
        np.memmap(directory / e["file"], dtype=dtype, mode="r") if e["tokens"] else np.zeros(0, dtype) for e in entries
    ]
    weights = None
    if with_weights:
        if not (directory / WEIGHTS_INDEX).is_file():
            raise FileNotFoundError(f"{directory}: no token weights ({WEIGHTS_INDEX}); make them with `ember score`")
        weights = []
        for e, s in zip(entries, shards):
            w = (
                np.memmap(directory / weights_file(e["file"]), dtype=np.float32, mode="r")
                if len(s)
                else np.zeros(0, np.float32)
            )
            if len(w) != len(s):
                raise ValueError(f"{directory}: {weights_file(e['file'])} has {len(w)} weights for {len(s)} tokens")
            weights.append(w)
    return TokenSplit(shards, weights)


class ShardWriter:
    """Appends documents' tokens into shards of about `shard_tokens` tokens (rolling over only
    between documents) and records them in the index."""

    def __init__(self, directory: Path, split: str, dtype: np.dtype, shard_tokens: int):
        self.directory, self.split, self.dtype, self.shard_tokens = directory, split, dtype, shard_tokens
        self.entries: list[dict] = []
        self.digest = hashlib.blake2b(digest_size=12)  # of every byte written, for the folder's fingerprint
        self._file = None

    def _open(self):
        name = f"{self.split}-{len(self.entries):05d}.bin"
        self.entries.append({"file": name, "tokens": 0, "documents": 0, "max_id": 0})
        self._file = open(self.directory / name, "wb")

    def write(self, tokens: np.ndarray, documents: int) -> None:
        if self._file is None or self.entries[-1]["tokens"] >= self.shard_tokens:
            self.close()
            self._open()
        top = int(tokens.max()) if len(tokens) else 0
        if top > np.iinfo(self.dtype).max:  # never wrap an id into a smaller dtype
            raise ValueError(
                f"ember prepare: token id {top} does not fit the shards' {self.dtype.name} (the tokenizer's ids pass its vocabulary)"
            )
        data = np.ascontiguousarray(tokens, dtype=self.dtype).tobytes()
        self._file.write(data)
        self.digest.update(data)
        entry = self.entries[-1]
        entry["tokens"] += int(len(tokens))
        entry["documents"] += documents
        # recorded here, where it is cheap: training checks ids without a read
        entry["max_id"] = max(entry["max_id"], top)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
