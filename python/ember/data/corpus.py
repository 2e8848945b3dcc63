"""The built-in corpus: the Python standard library's own source files.

Every machine with Python has it, so the default run needs no download. Files are found through
`sysconfig` (its stdlib path, never site-packages / dist-packages), read in sorted
order and split into train / validation by a hash of their relative path, so the split is the
same on every machine with the same Python.
"""

from __future__ import annotations

import os
import sysconfig
import zlib
from pathlib import Path

NAME = "stdlib"
VAL_PER_MILLE = 5  # the built-in corpus's validation share (by file name)
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}


def stdlib_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    roots = {Path(paths[k]).resolve() for k in ("stdlib",) if k in paths}
    return sorted(r for r in roots if r.is_dir())


def stdlib_files() -> list[tuple[str, Path]]:
    """(relative name, path) of every .py file of the standard library, sorted by name."""
    found = {}
    for root in stdlib_roots():
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            for f in filenames:
                if f.endswith(".py"):
                    p = Path(dirpath) / f
                    found.setdefault(p.relative_to(root).as_posix(), p)
    return sorted(found.items())


def split_of(key: str | bytes, val_per_mille: int = VAL_PER_MILLE) -> str:
    """'val' for about val_per_mille/1000 of the keys (by a CRC of the key), else 'train': the
    split of the built-in corpus's files (key: the relative name) and of the documents `ember
    prepare` reads (key: the document's content, so that neither the path typed nor the file a
    document sits in moves it between splits, and duplicates land together)."""
    data = key.encode("utf-8", errors="surrogatepass") if isinstance(key, str) else key
    return "val" if zlib.crc32(data) % 1000 < val_per_mille else "train"


def stdlib_documents(split: str) -> list[bytes]:
    """The contents of the standard library's files in one split ('train' or 'val')."""
    if split not in ("train", "val"):
        raise ValueError(f"stdlib corpus: split must be 'train' or 'val', got {split!r}")
    return [p.read_bytes() for name, p in stdlib_files() if split_of(name) == split]
