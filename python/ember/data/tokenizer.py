"""Tokenizers: raw bytes (the default: 256 byte values plus an end-of-document token) or a local
Hugging Face `tokenizer.json` through the `tokenizers` library (nothing is downloaded)."""

from __future__ import annotations

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

    def encode(self, text: str | bytes) -> np.ndarray:
        data = text.encode("utf-8") if isinstance(text, str) else text
        return np.frombuffer(data, dtype=np.uint8).astype(np.uint16)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A local `tokenizer.json` (Hugging Face `tokenizers`)."""

    def __init__(self, path: str | Path, eos_token: str | None = None):
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # an optional dependency
            raise RuntimeError("a tokenizer.json needs the `tokenizers` package: pip install tokenizers") from exc
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"tokenizer: no such file {self.path}")
        self.name = str(self.path)
        self._tok = Tokenizer.from_file(str(self.path))
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        names = (eos_token,) if eos_token else _EOS_CANDIDATES
        ids = [self._tok.token_to_id(t) for t in names]
        found = [i for i in ids if i is not None]
        if not found:
            raise ValueError(f"tokenizer {self.path}: no end-of-document token among {names}; name one with --eos-token")
        self.eos_id = found[0]

    def encode(self, text: str | bytes) -> np.ndarray:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.uint32)

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids])


def load_tokenizer(spec: str, eos_token: str | None = None):
    """'byte', or the path of a tokenizer.json."""
    if spec == "byte":
        return ByteTokenizer()
    return HFTokenizer(spec, eos_token)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)
