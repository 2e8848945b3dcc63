"""What `ember prepare` reads: the files its arguments name (a folder is walked), and the
documents in each file, by a reader chosen from the file's suffixes (case-insensitive):

    .txt .md .py .rst .text   the whole file is one document
    .jsonl .ndjson            one JSON record per line, its --text-key field a document
    .json                     a JSON array of such records (or of strings), or JSON lines
    .parquet                  its --text-key column, a document per row
    + .gz .bz2 .xz            any of the above but parquet, compressed: decompressed while read

With --control-tokens FIELD:..., each record's FIELD is read with its text (control.scored);
text files, which have no fields, are refused.

A folder contributes the files it can read (following symlinked sub-folders, each real folder
once); what it skips (other suffixes, hidden files, token folders such as an earlier --out) is
reported, never dropped silently. A file named on the command line whose suffix is not listed is
read as text, unless it is compressed or an archive, which is refused. A byte-order mark at the
start of a file is dropped; a UTF-16 file (one that starts with its mark) is read as its text.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import json
import lzma
import os
from collections import Counter
from pathlib import Path

from . import control, corpus
from .shards import FORMAT, INDEX

TEXT = {".txt", ".md", ".py", ".rst", ".text"}
READERS = {**dict.fromkeys(TEXT, "text"), ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}
OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
REFUSED = {".zst", ".zstd", ".zip", ".7z", ".tar", ".tgz", ".lz4", ".rar", ".br"}  # archives, other compressors


def reader_of(path: str | Path) -> tuple[str | None, str | None]:
    """(reader, compression suffix or None) from a file's suffixes; reader None: none fits."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    packed = suffixes.pop() if suffixes and suffixes[-1] in OPENERS else None
    kind = READERS.get(suffixes[-1]) if suffixes else None
    if kind == "parquet" and packed or suffixes and suffixes[-1] in REFUSED:
        return None, packed
    return kind, packed


def _named_file(path: Path) -> str:
    kind, packed = reader_of(path)
    suffixes = {s.lower() for s in path.suffixes}
    if kind is None and (packed or suffixes & REFUSED):
        raise ValueError(
            f"ember prepare: {path}: cannot read {''.join(path.suffixes)} files (an archive, or compressed "
            "parquet): unpack it, or name the files inside"
        )
    return str(path)


def _is_token_folder(folder: str) -> bool:
    """An `ember prepare` output (its index.json says so), not a corpus with a file of that name."""
    try:
        return json.loads(Path(folder, INDEX).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _walk(folder: Path, skipped: Counter) -> list[str]:
    """The readable files under folder, sorted, following symlinked folders (each real one once)."""
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen or _is_token_folder(dirpath):
            skipped["folders seen before through a link" if real in seen else "token folders (index.json)"] += 1
            dirnames[:] = []
            continue
        seen.add(real)
        if any(d.startswith(".") for d in dirnames):
            skipped["hidden folders"] += sum(d.startswith(".") for d in dirnames)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            path = os.path.join(dirpath, f)
            if f.startswith("."):
                skipped["hidden files"] += 1
            elif reader_of(f)[0] is None:
                skipped[f"{Path(f).suffix.lower() or 'suffix-less'} files"] += 1
            elif not os.path.isfile(path):
                skipped["broken links"] += 1
            else:
                found.append(path)
    return sorted(found)


def expand_inputs(inputs: list[str]) -> tuple[list[str], list[str]]:
    """(the files to read, in a fixed order: a folder's sorted; notes on what was skipped).
    'stdlib' stands for the built-in corpus. A file named twice (or inside a folder also named)
    is read once."""
    out, notes, real = [], [], {}
    for item in inputs:
        p = Path(item)
        if item == corpus.NAME:
            files = [item]
        elif p.is_dir():
            skipped = Counter()
            files = _walk(p, skipped)
            if skipped:
                notes.append(f"{p}: skipped " + ", ".join(f"{n} {what}" for what, n in sorted(skipped.items())))
            if not files:
                raise FileNotFoundError(
                    f"ember prepare: {p} holds no file it can read (.txt .md .py .rst .jsonl .json .parquet, "
                    f"or .gz/.bz2/.xz of them){'; ' + notes[-1] if skipped else ''}"
                )
        elif p.is_file():
            files = [_named_file(p)]
        else:
            raise FileNotFoundError(f"ember prepare: no such file or folder: {item}")
        for f in files:
            key = f if f == corpus.NAME else os.path.realpath(f)
            if key in real:
                notes.append(f"{f} was given twice" + (f" (as {real[key]})" if real[key] != f else "") + ": read once")
                continue
            real[key] = f
            out.append(f)
    return out, notes


def _json_lines(path: str, data: bytes):
    """(line number, parsed record) of each non-blank line."""
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        if raw.strip():
            try:
                yield lineno, json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
            except ValueError as exc:  # an integer of more digits than Python converts
                raise ValueError(f"{path}:{lineno}: {exc}") from None


def _texts(path: str, records, text_key: str, where: str = "", score_key: str | None = None):
    """(text, score) of each (number, record): its text_key field (or the record itself, a
    string); score None, or with score_key that field's (control.scored: a number, or a list with
    the text's sentences)."""
    for n, record in records:
        if not isinstance(record, (dict, str, type(None))):
            raise ValueError(
                f"{path}:{where}{n}: a {type(record).__name__}, not an object with a {text_key!r} field (or a string)"
            )
        text = record.get(text_key, ...) if isinstance(record, dict) else record
        if text is ...:
            raise ValueError(
                f"{path}:{where}{n}: no {text_key!r} field (set --text-key, or move the file out of the inputs)"
            )
        if score_key is not None:
            yield control.scored(record, text, score_key, f"{path}:{where}{n}")
            continue
        if text is not None and not isinstance(text, str):
            raise ValueError(f"{path}:{where}{n}: {text_key!r} is a {type(text).__name__}, not text")
        yield text or "", None


def documents(path: str, text_key: str, score_key: str | None = None):
    """(split or None, text, score) for each document of one input: the built-in corpus's files
    come with their split; text files as their own bytes, records as str. score: None, or with
    score_key each record's score (control.scored), which text files have none of."""
    if score_key is not None and (path == corpus.NAME or reader_of(path)[0] == "text"):
        raise ValueError(
            f"ember prepare: {control.FLAG}: {path} is a text file: it has no {score_key!r} field to score its "
            "documents by (use jsonl, json or parquet records)"
        )
    if path == corpus.NAME:
        for name, p in corpus.stdlib_files():
            yield corpus.split_of(name), p.read_bytes(), None
        return
    kind, packed = reader_of(path)
    if kind == "parquet":
        yield from ((None, *t) for t in _parquet(path, text_key, score_key))
        return
    try:
        with OPENERS[packed](path, "rb") if packed else open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise ValueError(f"{path}: not a readable {packed or 'file'} ({exc})") from None
    data = _utf8(path, data)
    if kind == "json":
        try:
            whole = json.loads(data)
        except json.JSONDecodeError as exc:  # JSON lines in a .json file, unless it is an array
            if data.lstrip().startswith(b"["):
                raise ValueError(f"{path}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
            kind = "jsonl"
        except UnicodeDecodeError:
            kind = "jsonl"  # whose reader names the line
        except ValueError as exc:  # an integer of more digits than Python converts
            raise ValueError(f"{path}: {exc}") from None
        else:
            records = enumerate(whole if isinstance(whole, list) else [whole], 1)
            yield from ((None, *t) for t in _texts(path, records, text_key, "record ", score_key))
            return
    if kind == "jsonl":
        yield from ((None, *t) for t in _texts(path, _json_lines(path, data), text_key, "", score_key))
    else:
        yield None, data, None


def _utf8(path: str, data: bytes) -> bytes:
    """A file's bytes as UTF-8 without a byte-order mark: the mark tells the encoding (Windows
    editors write one; Notepad's "Unicode" is UTF-16), it is not text."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16").encode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: starts with a UTF-16 byte-order mark but is not UTF-16 ({exc.reason})") from None
    return data.removeprefix(codecs.BOM_UTF8)


def _parquet(path: str, text_key: str, score_key: str | None = None):
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise RuntimeError("reading parquet needs pyarrow: pip install pyarrow") from exc
    try:
        names = pq.read_schema(path).names
    except Exception as exc:  # pyarrow's own errors: not a parquet file, truncated
        raise ValueError(f"{path}: not a readable parquet file ({exc})") from None
    for key, flag in ((text_key, "set --text-key"), (score_key, f"the FIELD of {control.FLAG}")):
        if key is not None and key not in names:
            raise ValueError(f"{path}: no column {key!r} (it has {', '.join(names)}; {flag})")
    columns = [k for k in dict.fromkeys((text_key, score_key)) if k is not None]
    table = pq.read_table(path, columns=columns)
    rows = table.to_pylist() if score_key is not None else ({text_key: v} for v in table.column(text_key).to_pylist())
    yield from _texts(path, enumerate(rows, 1), text_key, "row ", score_key)
