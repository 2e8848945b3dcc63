"""Data: the built-in corpus, tokenizers, token shards (`ember prepare`) and the packed loader."""

from .corpus import stdlib_documents, stdlib_files
from .loader import PackedLoader, SourceSpec, parse_sources, validation_batches
from .prepare import prepare
from .shards import open_split, read_index
from .tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer

__all__ = [
    "ByteTokenizer",
    "HFTokenizer",
    "PackedLoader",
    "SourceSpec",
    "load_tokenizer",
    "open_split",
    "parse_sources",
    "prepare",
    "read_index",
    "stdlib_documents",
    "stdlib_files",
    "validation_batches",
]
