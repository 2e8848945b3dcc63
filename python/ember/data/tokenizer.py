"""Tokenizers: raw bytes (the default: 256 byte values plus an end-of-document token) or a local
Hugging Face `tokenizer.json` through the `tokenizers` library, alone or in a model folder whose
tokenizer_config.json / config.json name its end- and beginning-of-document tokens (nothing is
downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# End-of-document tokens tried, in order, when a tokenizer.json does not name one.
_EOS_CANDIDATES = ("<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>", "<|im_end|>", "[SEP]")


class ByteTokenizer:
    """Each byte is a token (0..255); 256 ends a document. Loss in nats per token is then nats
    per byte, comparable across runs whatever the text."""

    name = "byte"
    vocab_size = 257
    eos_id = 256
    bos_id = None  # no beginning-of-document token

    def encode(self, text: str | bytes) -> np.ndarray:
        data = text.encode("utf-8") if isinstance(text, str) else text
        return np.frombuffer(data, dtype=np.uint8).astype(np.uint16)

    encode_document = encode

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


def folder_special_tokens(folder: Path) -> tuple[str | None, str | None, int | None]:
    """(eos token, bos token, eos id) that a Hugging Face model folder declares: its
    tokenizer_config.json's eos_token / bos_token (bos only when add_bos_token is not false),
    else config.json's eos_token_id."""
    tc, mc = folder / "tokenizer_config.json", folder / "config.json"
    tok_cfg = json.loads(tc.read_text()) if tc.is_file() else {}
    model_cfg = json.loads(mc.read_text()) if mc.is_file() else {}
    eos = _token_text(tok_cfg.get("eos_token"))
    bos = _token_text(tok_cfg.get("bos_token")) if tok_cfg.get("add_bos_token", True) is not False else None
    eos_id = model_cfg.get("eos_token_id")
    if isinstance(eos_id, list):
        eos_id = eos_id[0] if eos_id else None
    return eos, bos, eos_id


class HFTokenizer:
    """A local `tokenizer.json` (Hugging Face `tokenizers`), or a model folder holding one: then
    its declared end-of-document token, and its beginning-of-document token (`bos_id`, put
    before each document) when it has one distinct from the end."""

    def __init__(self, path: str | Path, eos_token: str | None = None):
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # an optional dependency
            raise RuntimeError("a tokenizer.json needs the `tokenizers` package: pip install tokenizers") from exc
        self.path, folder = Path(path), None
        if self.path.is_dir():
            folder, self.path = self.path, self.path / "tokenizer.json"
            if not self.path.is_file():
                raise FileNotFoundError(f"tokenizer: model folder {folder} has no tokenizer.json")
        if not self.path.is_file():
            raise FileNotFoundError(f"tokenizer: no such file {self.path}")
        self.name = str(folder or self.path)
        self.folder = folder
        self._tok = Tokenizer.from_file(str(self.path))
        # Document text is text: a "</s>" written in it is five characters, not the end-of-document
        # token (ember places special tokens itself; add_special_tokens=False alone still matches them).
        if not hasattr(self._tok, "encode_special_tokens"):
            raise RuntimeError(
                "a tokenizer.json needs tokenizers >= 0.15 (encode_special_tokens): pip install -U tokenizers"
            )
        self._tok.encode_special_tokens = True
        # The ids the tokenizer can produce, not the count it reports: a tokenizer.json may skip ids
        # (a vocabulary of 3 holding the id 70000), and the model and the shard dtype must hold them all.
        top = max(self._tok.get_vocab(with_added_tokens=True).values(), default=-1)
        self.vocab_size = max(self._tok.get_vocab_size(with_added_tokens=True), top + 1)
        self.bos_id = None
        declared_eos, bos, declared_id = folder_special_tokens(folder) if folder else (None, None, None)
        names = (eos_token,) if eos_token else ((declared_eos,) if declared_eos else _EOS_CANDIDATES)
        ids = [self._tok.token_to_id(t) for t in names]
        found = [i for i in ids if i is not None]
        if declared_id is not None and not eos_token and not declared_eos:  # the folder's word before a guess by name
            ok = isinstance(declared_id, int) and 0 <= declared_id < self.vocab_size
            if not ok or self._tok.id_to_token(declared_id) is None:
                raise ValueError(
                    f"tokenizer {folder}: config.json's eos_token_id {declared_id} is not a token of its tokenizer.json "
                    f"(ids 0..{self.vocab_size - 1}); name the end-of-document token with --eos-token"
                )
            found = [declared_id]
        if not found:
            raise ValueError(
                f"tokenizer {self.path}: no end-of-document token among {names}; name one with --eos-token"
            )
        self.eos_id = found[0]
        if bos is not None:
            bos_id = self._tok.token_to_id(bos)
            if bos_id is None:
                raise ValueError(
                    f"tokenizer {folder}: tokenizer_config.json names bos_token {bos!r}, which the tokenizer lacks"
                )
            self.bos_id = bos_id if bos_id != self.eos_id else None

    def encode(self, text: str | bytes) -> np.ndarray:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.uint32)

    def encode_document(self, text: str | bytes) -> np.ndarray:
        """A document's ids: its beginning-of-document token (if any), the text; the caller
        appends eos."""
        ids = self.encode(text)
        return ids if self.bos_id is None else np.concatenate([np.array([self.bos_id], dtype=ids.dtype), ids])

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids])


def load_tokenizer(spec: str, eos_token: str | None = None):
    """'byte', the path of a tokenizer.json, or a Hugging Face model folder holding one."""
    if spec == "byte":
        return ByteTokenizer()
    return HFTokenizer(spec, eos_token)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)
