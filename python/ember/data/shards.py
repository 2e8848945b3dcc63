"""Token shards on disk: memory-mapped flat arrays of token ids (uint16 or uint32), documents
separated by the tokenizer's end-of-document id, and one `index.json` describing them:

    DIR/index.json               format, tokenizer, vocab_size, eos_id, dtype, splits → shards
    DIR/train-00000.bin ...      raw token ids, a shard ends at a document boundary
    DIR/val-00000.bin ...
    DIR/tokenizer.json           a copy of the tokenizer, when it is not the byte tokenizer
    DIR/weights.json             written by `ember score`: how the token weights were made
    DIR/weights-train-00000.bin  float32 per token, aligned with the shard (PRIOR weights)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = "ember-tokens-v1"
INDEX = "index.json"
WEIGHTS_INDEX = "weights.json"


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def read_index(directory: str | Path) -> dict:
    path = Path(directory) / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: not a token directory (no {INDEX}); make one with `ember prepare`")
    index = json.loads(path.read_text())
    if index.get("format") != FORMAT:
        raise ValueError(f"{path}: format {index.get('format')!r}, expected {FORMAT!r}")
    return index


def weights_file(shard_file: str) -> str:
    return "weights-" + Path(shard_file).with_suffix(".bin").name


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
    shards = [np.memmap(directory / e["file"], dtype=dtype, mode="r") if e["tokens"] else np.zeros(0, dtype) for e in entries]
    weights = None
    if with_weights:
        if not (directory / WEIGHTS_INDEX).is_file():
            raise FileNotFoundError(f"{directory}: no token weights ({WEIGHTS_INDEX}); make them with `ember score`")
        weights = []
        for e, s in zip(entries, shards):
            w = np.memmap(directory / weights_file(e["file"]), dtype=np.float32, mode="r") if len(s) else np.zeros(0, np.float32)
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
        self._file = None

    def _open(self):
        name = f"{self.split}-{len(self.entries):05d}.bin"
        self.entries.append({"file": name, "tokens": 0, "documents": 0})
        self._file = open(self.directory / name, "wb")

    def write(self, tokens: np.ndarray, documents: int) -> None:
        if self._file is None or self.entries[-1]["tokens"] >= self.shard_tokens:
            self.close()
            self._open()
        self._file.write(np.ascontiguousarray(tokens, dtype=self.dtype).tobytes())
        self.entries[-1]["tokens"] += int(len(tokens))
        self.entries[-1]["documents"] += documents

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
