"""Control tokens of conditional training (Korbak et al., "Pretraining Language Models with Human
Preferences"): `ember prepare --control-tokens FIELD:THRESHOLD` reads a score from each record's
FIELD and puts <|good|> (score >= THRESHOLD) or <|bad|> (below) before the text.

Two ids are appended after the tokenizer's vocabulary: <|good|> = its vocab_size, <|bad|> = +1.
They are never the tokenizer's own tokens, even one spelled "<|good|>": text is encoded as text
and never yields a control id.

Sentence-level scores (FIELD holds a list, one score per sentence) put a control token before each
sentence. The sentences are either the text field itself, a list of strings parallel to the scores
(joined as they are: any space between sentences belongs to the strings), or, when the text field
is one string, the pieces that SENTENCE_END splits it into: a sentence ends at '.', '!' or '?'
followed by white space, which stays with the sentence before it. The number of sentences must equal
the number of scores. A document with sentence-level scores counts as good when every one of its
sentences is."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

GOOD, BAD = "<|good|>", "<|bad|>"
SENTENCE_END = re.compile(r"(?<=[.!?])(?=\s)\s+")
FLAG = "--control-tokens"


@dataclass(frozen=True)
class Control:
    """What --control-tokens asks for, with the ids of the tokenizer it is applied to."""

    field: str
    threshold: float
    good_id: int
    bad_id: int

    def ids(self) -> dict[str, int]:
        return {GOOD: self.good_id, BAD: self.bad_id}


def parse_control(spec: str, vocab_size: int) -> Control:
    """FIELD:THRESHOLD (the threshold after the last ':', a finite number), for a tokenizer of
    vocab_size ids."""
    field, sep, number = spec.rpartition(":")
    if not sep or not field:
        raise ValueError(
            f"ember prepare: {FLAG} {spec!r}: expected FIELD:THRESHOLD (e.g. score:0.5), "
            f"{'a threshold without a field' if sep else 'no threshold'}"
        )
    try:
        threshold = float(number)
    except ValueError:
        raise ValueError(f"ember prepare: {FLAG} {spec!r}: the threshold {number!r} is not a number") from None
    if not math.isfinite(threshold):
        raise ValueError(f"ember prepare: {FLAG} {spec!r}: the threshold must be a finite number, got {number!r}")
    return Control(field, threshold, vocab_size, vocab_size + 1)


def _number(value, at: str, what: str) -> float:
    if value is None:
        raise ValueError(f"{at}: {what} is null, not a score")
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):  # Decimal: a parquet decimal column
        raise ValueError(f"{at}: {what} is a {type(value).__name__} ({value!r:.40}), not a number")
    try:
        number = float(value)
    except OverflowError:  # a JSON integer past float's range: infinite, as JSON's 1e400 is
        number = math.inf if value > 0 else -math.inf
    if math.isnan(number):
        raise ValueError(f"{at}: {what} is NaN, not a score")
    return number


def scored(record, text, field: str, at: str) -> tuple[str | list[str], float | list[float]]:
    """(text, score) of one record: score a number, or a list of numbers with text then a list of
    sentences of the same length. Refused, naming `at` (file:line): no field, null, not a number,
    NaN, a count of sentences other than the count of scores."""
    if not isinstance(record, dict) or field not in record:
        raise ValueError(f"{at}: no {field!r} field to score it by ({FLAG} {field}:...)")
    score = record[field]
    if not isinstance(score, list):
        if text is not None and not isinstance(text, str):
            raise ValueError(f"{at}: its text is a {type(text).__name__}: a list of sentences needs a list of scores")
        return text or "", _number(score, at, repr(field))
    scores = [_number(s, at, f"{field!r}[{i}]") for i, s in enumerate(score)]
    if isinstance(text, list):
        bad = next((s for s in text if not isinstance(s, str)), ...)
        if bad is not ...:
            raise ValueError(f"{at}: a sentence of its text is a {type(bad).__name__}, not text")
        sentences = text
    elif text is None or isinstance(text, str):
        sentences = split_sentences(text or "")
    else:
        raise ValueError(f"{at}: its text is a {type(text).__name__}, not text or a list of sentences")
    if len(sentences) != len(scores):
        raise ValueError(
            f"{at}: {len(scores)} sentence scores for {len(sentences)} sentences (sentences end at . ! or ? "
            "followed by a space; or give the text as a list of sentences)"
        )
    return sentences, scores


def split_sentences(text: str) -> list[str]:
    """The sentences of a text by SENTENCE_END, joined back they are the text ([] for '')."""
    if not text:
        return []
    ends = [m.end() for m in SENTENCE_END.finditer(text)]
    return [text[a:b] for a, b in zip([0, *ends], [*ends, len(text)]) if a < b]


@dataclass
class Counts:
    """Documents and sentences put after <|good|> / <|bad|>."""

    good: int = 0
    bad: int = 0
    good_sentences: int = 0
    bad_sentences: int = 0
    sentence_level: bool = False

    def add(self, other: Counts) -> None:
        for k in ("good", "bad", "good_sentences", "bad_sentences"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.sentence_level |= other.sentence_level


def encode(tok, control: Control, text, score, counts: Counts) -> np.ndarray | None:
    """The document's ids (its beginning-of-document token, control token, text; sentence by
    sentence for a list of scores), without eos; None for a document with no text."""
    if isinstance(score, list):
        pairs = [(s, x) for s, x in zip(text, score) if s]  # an empty sentence has nothing to condition
        if not pairs:
            return None
        good = [x >= control.threshold for _, x in pairs]
        counts.sentence_level = True
        counts.good_sentences += sum(good)
        counts.bad_sentences += len(good) - sum(good)
        counts.good += all(good)
        counts.bad += not all(good)
    elif not text:
        return None
    else:
        pairs, good = [(text, score)], [score >= control.threshold]
        counts.good += good[0]
        counts.bad += not good[0]
    dtype = np.uint32 if control.bad_id > np.iinfo(np.uint16).max else np.uint16
    parts = [] if tok.bos_id is None else [np.array([tok.bos_id], dtype)]
    for (sentence, _), ok in zip(pairs, good):
        parts.append(np.array([control.good_id if ok else control.bad_id], dtype))
        parts.append(tok.encode(sentence).astype(dtype))
    return np.concatenate(parts)


def index_entry(control: Control, counts: Counts) -> dict:
    """index.json's "control": what made the control tokens and how many documents got each."""
    entry = {
        "field": control.field,
        "threshold": control.threshold,
        "sentence_level": counts.sentence_level,
        "documents": {"good": counts.good, "bad": counts.bad},
    }
    if counts.sentence_level:
        entry["sentences"] = {"good": counts.good_sentences, "bad": counts.bad_sentences}
    return entry
