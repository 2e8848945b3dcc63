"""`ember prepare`: tokenize text / json / jsonl / parquet files (or the built-in corpus) into
token shards, with several processes and a progress bar. The output does not depend on the
number of processes: files are tokenized in parallel but written in input order. The folder is
made under a temporary name, flushed to disk and renamed when complete (ember.atomic): a failed
prepare leaves nothing behind.
What files are read, and how, is inputs.py's."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import multiprocessing as mp
import os
import re
import shutil
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..atomic import atomic_dir
from . import control, corpus
from .inputs import documents, expand_inputs, reader_of
from .shards import FORMAT, INDEX, ShardWriter, write_json_atomic
from .tokenizer import load_tokenizer, token_dtype


_SURROGATE = re.compile("[\ud800-\udfff]")  # left unpaired by json.loads: utf-8 cannot encode them


@functools.cache
def _tokenizer(spec: str, eos_token: str | None):
    """The tokenizer, loaded once per process (each worker loads its own)."""
    return load_tokenizer(spec, eos_token)


def _tokenize_file(job, tok=None):
    """Worker: one input → ({split: (concatenated tokens with eos after each document, #docs)},
    notes on what was dropped or changed, control-token counts). `tok`: this process's, loaded by
    this prepare; `ctl`: the control tokens to put before documents (or None)."""
    path, text_key, val_per_mille, spec, eos_token, ctl = job
    tok = tok or _tokenizer(spec, eos_token)
    parts, empty, not_utf8, halves, counts = {"train": [], "val": []}, 0, 0, 0, control.Counts()
    for split, text, score in documents(path, text_key, ctl and ctl.field):
        if isinstance(text, bytes) and text and tok.name != "byte" and not _is_utf8(text):
            not_utf8 += 1  # the byte tokenizer keeps the bytes; a text tokenizer gets U+FFFD for them
        pieces = text if isinstance(text, list) else [text]
        if any(isinstance(t, str) and _SURROGATE.search(t) for t in pieces):  # JSON's "\ud83d": half a character
            halves += 1
            pieces = [_SURROGATE.sub("\ufffd", t) for t in pieces]
            text = pieces if isinstance(text, list) else pieces[0]
        ids = tok.encode_document(text) if ctl is None else control.encode(tok, ctl, text, score, counts)
        if ids is None or not len(ids) or not text:  # an empty document would train on an end-of-document token alone
            empty += 1
            continue
        split = split or corpus.split_of(text if isinstance(text, (str, bytes)) else "".join(text), val_per_mille)
        parts[split].append(ids)
        parts[split].append(np.array([tok.eos_id], dtype=ids.dtype))
    notes = [f"{path}: {empty} empty document(s) skipped"] if empty else []
    if not_utf8:
        notes.append(f"{path}: not UTF-8: its invalid bytes were read as U+FFFD (the byte tokenizer keeps them)")
    if halves:
        notes.append(f"{path}: {halves} record(s) with lone surrogates (half a character): read as U+FFFD")
    tokens = {s: (np.concatenate(v) if v else np.zeros(0, np.uint32), len(v) // 2) for s, v in parts.items()}
    return tokens, notes, counts


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _check_out(out: Path, inputs: list[str]) -> None:
    """--out must be empty (or not exist) and outside every input folder: a later prepare of
    that folder would read the shards' index.json and tokenizer files as documents."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"ember prepare: {out} exists and is not empty (or is not a folder)")
    real = Path(os.path.realpath(out))
    for item in inputs:
        folder = Path(os.path.realpath(item))
        if item != corpus.NAME and folder.is_dir() and (real == folder or folder in real.parents):
            raise ValueError(f"ember prepare: --out {out} is inside the input folder {item}; choose another --out")


def prepare(
    inputs: list[str],
    out: str | Path,
    tokenizer: str = "byte",
    workers: int = 0,
    text_key: str = "text",
    val_per_mille: int = 5,
    shard_tokens: int = 1 << 28,
    eos_token: str | None = None,
    progress: bool = True,
    control_tokens: str | None = None,
) -> dict:
    """Tokenize `inputs` into token shards in `out` and return the index; index['notes'] says
    what was skipped (files a folder walk passed over, empty documents, files named twice).
    control_tokens: FIELD:THRESHOLD, a control token before each document by its score (control.py)."""
    out = Path(os.path.abspath(out))
    for flag, value, ok, want in (
        ("--val-per-mille", val_per_mille, 0 <= val_per_mille <= 1000, "in 0..1000"),
        ("--shard-tokens", shard_tokens, shard_tokens >= 1, ">= 1"),
        ("--workers", workers, workers >= 0, ">= 0 (0: one per core)"),
    ):
        if not ok:
            raise ValueError(f"ember prepare: {flag} must be {want}, got {value}")
    files, notes = expand_inputs(inputs)
    if corpus.NAME in files and val_per_mille != corpus.VAL_PER_MILLE:
        notes.append(
            f"{corpus.NAME}: its split is the built-in one ({corpus.VAL_PER_MILLE} per mille, by file name: the one "
            f"the `{corpus.NAME}` source trains on), not --val-per-mille {val_per_mille}"
        )
    tok = load_tokenizer(tokenizer, eos_token)  # fail early, in this process
    ctl = control.parse_control(control_tokens, tok.vocab_size) if control_tokens is not None else None
    if ctl is not None:
        _check_scored(files, ctl, tok, notes)
    _check_out(out, inputs)
    with atomic_dir(out) as tmp:  # onto an empty folder too; every file on disk before the rename
        index = _write(
            files, tmp, tok, tokenizer, eos_token, workers, text_key, val_per_mille, shard_tokens, progress, ctl
        )
        named = [i if i == corpus.NAME else os.path.abspath(i) for i in inputs]  # where the folder came from
        index.update(inputs=named, val_per_mille=val_per_mille, notes=notes + index["notes"])
        write_json_atomic(tmp / INDEX, index)
    return index


def _check_scored(files: list[str], ctl: control.Control, tok, notes: list[str]) -> None:
    """Refuse inputs without fields (text files) before anything is read or made; note a token of
    the tokenizer's own spelled like a control token (the control ids are the appended ones)."""
    unscored = [f for f in files if f == corpus.NAME or reader_of(f)[0] == "text"]
    if unscored:
        raise ValueError(
            f"ember prepare: {control.FLAG}: {unscored[0]} is a text file (or the built-in corpus): it has no "
            f"{ctl.field!r} field to score its documents by; give jsonl, json or parquet records"
        )
    own = getattr(tok, "_tok", None)
    for name, cid in ctl.ids().items():
        tid = own.token_to_id(name) if own is not None else None
        if tid is not None:
            notes.append(
                f"the tokenizer has its own token {name} (id {tid}); the control token {name} is id {cid}, "
                "and text spelling it is tokenized as text"
            )


def _write(
    files, out: Path, tok, tokenizer, eos_token, workers, text_key, val_per_mille, shard_tokens, progress, ctl=None
):
    """Tokenize the files into shards in `out` (the tokenizer's files beside them); the index."""
    vocab_size = tok.vocab_size + (2 if ctl is not None else 0)  # the control ids come after the tokenizer's
    dtype = token_dtype(vocab_size)
    writers = {s: ShardWriter(out, s, dtype, shard_tokens) for s in ("train", "val")}
    workers = workers or min(len(files), mp.cpu_count())
    jobs = [(f, text_key, val_per_mille, tokenizer, eos_token, ctl) for f in files]
    notes, counts = [], control.Counts()
    with (
        tqdm(total=len(files), desc="tokenizing", unit="file", disable=not progress) as bar,
        _pool(workers, tok) as pool,
    ):
        for parts, file_notes, file_counts in _results(pool, jobs):
            for split, (tokens, docs) in parts.items():
                if docs:
                    writers[split].write(tokens, docs)
            notes += file_notes
            counts.add(file_counts)
            bar.update()
    for w in writers.values():
        w.close()
    if not any(w.entries for w in writers.values()):
        named = ", ".join(files[:3]) + (f" and {len(files) - 3} more files" if len(files) > 3 else "")
        raise ValueError(f"ember prepare: no document in {named} has any text")
    if val_per_mille and not writers["val"].entries:
        notes.append(
            f"no document fell into the validation split (--val-per-mille {val_per_mille}): runs will report no val_loss"
        )
    if tokenizer != "byte":  # the tokenizer travels with the tokens (and `ember export` copies it on)
        shutil.copyfile(tok.path, out / "tokenizer.json")
        for name in ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
            if tok.folder is not None and (tok.folder / name).is_file():
                shutil.copyfile(tok.folder / name, out / name)
    index = {
        "format": FORMAT,
        "tokenizer": "byte" if tokenizer == "byte" else "tokenizer.json",
        "vocab_size": vocab_size,
        "eos_id": tok.eos_id,
        "bos_id": tok.bos_id,
        "dtype": dtype.name,
        "splits": {s: w.entries for s, w in writers.items()},
        "notes": notes,
    }
    if ctl is not None:
        index.update(control_tokens=ctl.ids(), control=control.index_entry(ctl, counts))
    index["fingerprint"] = _fingerprint(index, writers, None if tokenizer == "byte" else out / "tokenizer.json")
    return index


def _fingerprint(index: dict, writers: dict, tokenizer_file: Path | None) -> str:
    """A hash of what training reads: the tokens written, their layout and the tokenizer. Runs
    record it, so that a folder prepared again (other documents, another tokenizer) is noticed."""
    h = hashlib.blake2b(digest_size=12)
    h.update(repr([index[k] for k in ("format", "vocab_size", "eos_id", "bos_id", "dtype", "splits")]).encode())
    if "control" in index:  # one folder's tokens made with another threshold are other data
        h.update(repr([index["control_tokens"], index["control"]]).encode())
    for split in sorted(writers):
        h.update(writers[split].digest.digest())
    if tokenizer_file is not None:
        h.update(tokenizer_file.read_bytes())
    return h.hexdigest()


@contextlib.contextmanager
def _pool(workers: int, tok):
    """Worker processes (spawned: no fork of a process whose tokenizer threads may have run), or
    one worker in this process. On an error the files not yet started are dropped, not tokenized."""
    if workers <= 1:
        yield _Inline(tok)
        return
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _results(pool, jobs):
    """The jobs' results in order. A worker that dies fails the prepare (a multiprocessing.Pool
    waited for it forever)."""
    try:
        yield from pool.map(_tokenize_file, jobs)
    except BrokenProcessPool:
        raise RuntimeError(
            "ember prepare: a worker process died: killed for memory (try fewer --workers), or the script calling "
            "prepare() has no `if __name__ == '__main__':` guard, so each spawned worker ran it again"
        ) from None


class _Inline:
    """The executor interface in this process (one worker: no processes to spawn), with the tokenizer
    this prepare loaded: a cached one may predate an edit of its folder (a notebook's second run)."""

    def __init__(self, tok):
        self.tok = tok

    def map(self, fn, jobs):
        return map(functools.partial(fn, tok=self.tok), jobs)
