"""`ember prepare --control-tokens FIELD:THRESHOLD` (conditional training on preference scores):
the parsing of the flag, the ids and counts it writes, sentence-level scores, and its refusals."""

import json
import math

import numpy as np
import pytest

from ember.cli import main as ember_main
from ember.data import prepare, read_index
from ember.data.control import parse_control, split_sentences
from ember.data.fingerprint import source_record
from ember.data.shards import open_split

GOOD, BAD = 257, 258  # after the byte tokenizer's 257 ids


def jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def documents(out) -> list[list[int]]:
    """The documents of a token folder (train and val), as id lists without their eos."""
    tokens = np.concatenate([np.asarray(s) for split in ("train", "val") for s in open_split(out, split).shards])
    cuts = np.flatnonzero(tokens == 256)
    return [tokens[a + 1 if i else 0 : b].tolist() for i, (a, b) in enumerate(zip([-1, *cuts[:-1]], cuts))]


def text_of(ids) -> str:
    return bytes(i for i in ids if i < 256).decode()


@pytest.mark.parametrize(
    "spec, field, threshold",
    [("score:0.5", "score", 0.5), ("tox:-1e-3", "tox", -0.001), ("a:b:2", "a:b", 2.0), ("s:7", "s", 7.0)],
)
def test_the_flag_is_field_then_threshold(spec, field, threshold):
    c = parse_control(spec, 257)
    assert (c.field, c.threshold, c.good_id, c.bad_id) == (field, threshold, GOOD, BAD)


@pytest.mark.parametrize(
    "spec, why",
    [
        (":0.5", "a threshold without a field"),
        ("score", "no threshold"),
        ("score:", "is not a number"),
        ("score:high", "'high' is not a number"),
        ("score:nan", "finite number"),
        ("score:inf", "finite number"),
    ],
)
def test_a_malformed_flag_is_refused_by_name(spec, why):
    with pytest.raises(ValueError, match=f"--control-tokens.*{why}"):
        parse_control(spec, 257)


def test_good_and_bad_documents_are_counted_and_marked(tmp_path):
    scores = [0.1, 0.5, 0.9, 0.49, 2.0, -3.0, 0.5]
    src = jsonl(tmp_path / "d.jsonl", [{"text": f"doc {i}", "score": s} for i, s in enumerate(scores)])
    index = prepare([src], tmp_path / "out", workers=1, progress=False, control_tokens="score:0.5")
    assert index["vocab_size"] == 259 and index["control_tokens"] == {"<|good|>": GOOD, "<|bad|>": BAD}
    assert index["control"] == {
        "field": "score",
        "threshold": 0.5,
        "sentence_level": False,
        "documents": {"good": 4, "bad": 3},
    }
    want = {f"doc {i}": GOOD if s >= 0.5 else BAD for i, s in enumerate(scores)}
    assert {text_of(d): d[0] for d in documents(tmp_path / "out")} == want
    assert read_index(tmp_path / "out")["control"]["documents"] == {"good": 4, "bad": 3}
    assert source_record(str(tmp_path / "out"))["control_tokens"] == {"<|good|>": GOOD, "<|bad|>": BAD}
    plain = prepare([src], tmp_path / "plain", workers=1, progress=False)
    assert source_record(str(tmp_path / "plain"))["control_tokens"] == {} and "control" not in plain


def test_sentence_scores_put_a_control_token_before_each_sentence(tmp_path):
    records = [
        {"text": ["One is fine. ", "Two is not."], "score": [0.9, 0.1]},  # the sentences as scored
        {"text": "Good. Also good!  Fine?", "score": [1, 0.7, 0.6]},  # split at . ! ? and white space
        {"text": "Whole.", "score": 0.2},  # a document score among them
        {"text": ["", ""], "score": [0.9, 0.1]},  # nothing to condition: skipped
    ]
    index = prepare(
        [jsonl(tmp_path / "s.jsonl", records)], tmp_path / "out", workers=1, progress=False, control_tokens="score:0.5"
    )
    assert index["control"]["sentence_level"] is True
    assert index["control"]["documents"] == {"good": 1, "bad": 2}
    assert index["control"]["sentences"] == {"good": 4, "bad": 1}
    got = sorted(documents(tmp_path / "out"), key=len)
    b = lambda s: list(s.encode())  # noqa: E731
    assert got == sorted(
        [
            [GOOD, *b("One is fine. "), BAD, *b("Two is not.")],
            [GOOD, *b("Good. "), GOOD, *b("Also good!  "), GOOD, *b("Fine?")],
            [BAD, *b("Whole.")],
        ],
        key=len,
    )
    assert split_sentences("A. B?C! D") == ["A. ", "B?C! ", "D"] and split_sentences("") == []


@pytest.mark.parametrize(
    "record, why",
    [
        ({"text": "x"}, r"d.jsonl:2: no 'score' field"),
        ({"text": "x", "score": None}, r"d.jsonl:2: 'score' is null"),
        ({"text": "x", "score": "0.9"}, r"d.jsonl:2: 'score' is a str"),
        ({"text": "x", "score": True}, r"d.jsonl:2: 'score' is a bool"),
        ({"text": "x", "score": math.nan}, r"d.jsonl:2: 'score' is NaN"),
        ({"text": "One. Two.", "score": [0.1]}, r"d.jsonl:2: 1 sentence scores for 2 sentences"),
        ({"text": "x", "score": [0.1, None]}, r"d.jsonl:2: 'score'\[1\] is null"),
        ({"text": ["a", "b"], "score": 0.5}, r"d.jsonl:2: its text is a list: a list of sentences needs a list"),
    ],
)
def test_a_record_without_a_usable_score_is_refused_naming_file_and_line(tmp_path, record, why):
    src = jsonl(tmp_path / "d.jsonl", [{"text": "fine", "score": 1.0}, record])
    with pytest.raises(ValueError, match=why):
        prepare([src], tmp_path / "out", workers=1, progress=False, control_tokens="score:0.5")
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["d.jsonl"]


def test_text_files_and_a_malformed_flag_are_refused_by_the_command(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("no fields here")
    assert (
        ember_main(["prepare", str(tmp_path / "a.txt"), "--out", str(tmp_path / "o"), "--control-tokens", "s:1"]) == 1
    )
    assert "ember prepare: error: --control-tokens: " in capsys.readouterr().err
    src = jsonl(tmp_path / "d.jsonl", [{"text": "x", "s": 1}])
    assert ember_main(["prepare", src, "--out", str(tmp_path / "o"), "--control-tokens", ":1"]) == 1
    assert "a threshold without a field" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert ember_main(["prepare", src, "--out", str(tmp_path / "o"), "--control-tokens", "s:1", "--workers=1"]) == 0
    assert "1 good and 0 bad documents" in capsys.readouterr().out


def test_parquet_scores(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"text": ["a b", "c d", "e"], "tox": [0.9, 0.1, 0.3]}), tmp_path / "d.parquet")
    index = prepare(
        [str(tmp_path / "d.parquet")], tmp_path / "out", workers=1, progress=False, control_tokens="tox:0.3"
    )
    assert index["control"]["documents"] == {"good": 2, "bad": 1}
    with pytest.raises(ValueError, match="no column 'score'.*--control-tokens"):
        prepare([str(tmp_path / "d.parquet")], tmp_path / "o2", workers=1, progress=False, control_tokens="score:0")


def test_a_tokenizer_with_a_bos_and_its_own_good_token(tmp_path):
    """The control token follows the beginning-of-document token; the appended ids stay distinct
    from the tokenizer's own token spelled <|good|>, which text spelling it does not become."""
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    texts = ["the cat sat", "a dog ran", "the <|good|> word"]
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>", "</s>", "<s>", "<|good|>"])
    tok.train_from_iterator(texts, trainer)
    folder = tmp_path / "tok"
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>", "bos_token": "<s>"}))
    vocab, bos, eos, own = (
        tok.get_vocab_size(),
        tok.token_to_id("<s>"),
        tok.token_to_id("</s>"),
        tok.token_to_id("<|good|>"),
    )
    src = jsonl(tmp_path / "d.jsonl", [{"text": t, "s": i} for i, t in enumerate(texts)])
    index = prepare([src], tmp_path / "out", str(folder), workers=1, progress=False, control_tokens="s:1")
    assert index["control_tokens"] == {"<|good|>": vocab, "<|bad|>": vocab + 1} and index["vocab_size"] == vocab + 2
    assert any("its own token <|good|>" in n for n in index["notes"])
    tokens = np.concatenate(
        [np.asarray(s) for split in ("train", "val") for s in open_split(tmp_path / "out", split).shards]
    )
    docs = np.split(tokens, np.flatnonzero(tokens == eos) + 1)[:-1]
    assert sorted(d[:2].tolist() for d in docs) == sorted([[bos, vocab + 1], [bos, vocab], [bos, vocab]])
    assert all(vocab not in d[2:] and vocab + 1 not in d[2:] for d in docs) and own not in tokens
