"""Publishing files and folders atomically and durably: the one place ember renames into place.

A file or folder is made under a temporary name beside its final one, flushed to disk (every
file, then the folder), renamed over the final name, and the parent folder flushed so the rename
itself survives a power cut. After a crash at any point the final name holds the old complete
content or the new complete content, never part of either; a leftover temporary name (it starts
with "." and holds ".tmp-") is never read and is cleared by the next publish of that name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _clear_leftovers(path: Path) -> None:
    """Temporary names of `path` a crashed writer (any process) left behind."""
    for old in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (a rename or a new name in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | Path) -> None:
    """Flush every file and folder under `path` (and `path`) to disk."""
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(root)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """`with atomic_path(path) as tmp: (write the file tmp by name)`, for writers that take a file
    name (safetensors, shutil.copyfile): `path` holds the complete file, or what it held before."""
    path = Path(path)
    _clear_leftovers(path)
    tmp = _temporary(path)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator:
    """`with atomic_file(path) as f: f.write(...)`: `path` holds everything written, or (after an
    error or a crash) what it held before. `mode` is "wb" or "w" (text, UTF-8)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"ember.atomic.atomic_file: mode must be 'wb' or 'w', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """`with atomic_dir(out) as tmp: (fill the folder tmp)`: `out` appears complete, or not at all.
    An existing `out` must be empty unless `replace`, which swaps the old folder out whole: renamed
    aside, the new one renamed in, then the old one deleted (a crash between the two renames leaves
    no folder under the final name, never a partial one)."""
    path = Path(path)
    if path.exists() and not replace and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} exists and is not an empty folder")
    _clear_leftovers(path)
    tmp = _temporary(path)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        publish_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_dir(tmp: str | Path, path: str | Path) -> None:
    """Rename the complete folder `tmp` to `path` durably: every file flushed first, an existing
    `path` set aside and deleted after (for folders filled by several processes, such as a sharded
    checkpoint, whose writers have finished)."""
    tmp, path = Path(tmp), Path(path)
    fsync_tree(tmp)
    aside = set_aside(path) if path.exists() else None
    os.replace(tmp, path)
    fsync_dir(path.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def set_aside(path: str | Path) -> Path:
    """Rename `path` out of its name (to a temporary one that readers skip), before deleting it: a
    crash mid-delete must not leave a half-deleted folder under a name that is read."""
    path = Path(path)
    aside = path.with_name(f".{path.name}.tmp-old-{os.getpid()}")
    os.replace(path, aside)
    return aside


def move(src: str | Path, dst: str | Path) -> None:
    """Rename `src` to `dst` durably (both folders' entries flushed)."""
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)
    if Path(src).parent != Path(dst).parent:
        fsync_dir(Path(src).parent)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    with atomic_file(path, "w") as f:
        f.write(text)


def write_json(path: str | Path, obj, indent: int | None = 1) -> None:
    write_text(path, json.dumps(obj, indent=indent) + "\n")
