"""`ember prepare`: tokenize text / jsonl / parquet files (or the built-in corpus) into token
shards, with several processes and a progress bar. The output does not depend on the number of
processes: files are tokenized in parallel but written in input order."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import corpus
from .shards import FORMAT, INDEX, ShardWriter, write_json_atomic
from .tokenizer import load_tokenizer, token_dtype

TEXT_SUFFIXES = {".txt", ".md", ".py", ".rst", ".text"}
DATA_SUFFIXES = {".jsonl", ".parquet"}

_tok = None  # the tokenizer of a worker process


def _init_worker(spec, eos_token):
    global _tok
    _tok = load_tokenizer(spec, eos_token)


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files to read, in a fixed order: a folder contributes its text/jsonl/parquet files
    (sorted); 'stdlib' stands for the built-in corpus."""
    out = []
    for item in inputs:
        if item == corpus.NAME:
            out.append(item)
            continue
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES | DATA_SUFFIXES)
            if not files:
                raise FileNotFoundError(f"ember prepare: {p} holds no .txt/.md/.py/.jsonl/.parquet files")
            out += [str(f) for f in files]
        elif p.is_file():
            out.append(str(p))
        else:
            raise FileNotFoundError(f"ember prepare: no such file or folder: {item}")
    return out


def _documents(path: str, text_key: str):
    """(split or None, text) for each document in one input. None: split by hash."""
    if path == corpus.NAME:
        for name, p in corpus.stdlib_files():
            yield corpus.split_of(name), p.read_bytes()
        return
    suffix = Path(path).suffix
    if suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
                    if not isinstance(record, dict) or text_key not in record:
                        raise ValueError(f"{path}:{lineno}: no {text_key!r} field (set --text-key)")
                    yield None, record[text_key]
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise RuntimeError("reading parquet needs pyarrow: pip install pyarrow") from exc
        table = pq.read_table(path, columns=[text_key])
        for text in table.column(text_key).to_pylist():
            yield None, text or ""
    else:
        yield None, Path(path).read_bytes()


def _tokenize_file(job):
    """Worker: one input → {split: (concatenated tokens with eos after each document, #docs)}."""
    path, text_key, val_per_mille = job
    parts = {"train": [], "val": []}
    for i, (split, text) in enumerate(_documents(path, text_key)):
        if split is None:
            split = corpus.split_of(text, val_per_mille)
        parts[split].append(_tok.encode_document(text))
        parts[split].append(np.array([_tok.eos_id], dtype=parts[split][-1].dtype))
    return {s: (np.concatenate(v) if v else np.zeros(0, np.uint32), len(v) // 2) for s, v in parts.items()}


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
) -> dict:
    """Tokenize `inputs` into token shards in `out` and return the index."""
    out = Path(out)
    files = expand_inputs(inputs)
    tok = load_tokenizer(tokenizer, eos_token)  # fail early, in this process
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"ember prepare: {out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(tok.vocab_size)
    writers = {s: ShardWriter(out, s, dtype, shard_tokens) for s in ("train", "val")}
    workers = workers or min(len(files), mp.cpu_count())
    jobs = [(f, text_key, val_per_mille) for f in files]
    bar = tqdm(total=len(files), desc="tokenizing", unit="file", disable=not progress)
    with (
        mp.get_context("spawn").Pool(workers, _init_worker, (tokenizer, eos_token))
        if workers > 1
        else _Inline(tokenizer, eos_token) as pool
    ):
        for parts in pool.imap(_tokenize_file, jobs):
            for split, (tokens, docs) in parts.items():
                if docs:
                    writers[split].write(tokens, docs)
            bar.update()
    bar.close()
    for w in writers.values():
        w.close()
    if tokenizer != "byte":  # the tokenizer travels with the tokens (and `ember export` copies it on)
        shutil.copyfile(tok.path, out / "tokenizer.json")
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            if tok.folder is not None and (tok.folder / name).is_file():
                shutil.copyfile(tok.folder / name, out / name)
    index = {
        "format": FORMAT,
        "tokenizer": "byte" if tokenizer == "byte" else "tokenizer.json",
        "vocab_size": tok.vocab_size,
        "eos_id": tok.eos_id,
        "bos_id": tok.bos_id,
        "dtype": dtype.name,
        "inputs": inputs,
        "splits": {s: w.entries for s, w in writers.items()},
    }
    write_json_atomic(out / INDEX, index)
    return index


class _Inline:
    """The Pool interface in this process (one worker: no processes to spawn)."""

    def __init__(self, spec, eos_token):
        _init_worker(spec, eos_token)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def imap(self, fn, jobs):
        return map(fn, jobs)
