"""ember's data commands misused the way pre-training users misuse them: documents with byte-order
marks or broken surrogates, source specs with infinite or rounded-away numbers or a folder named
twice, a tokenizer folder whose declared end-of-document id it lacks, a tokenizer folder edited
between two prepares in one process, a token-weight publish cut short. Each gives the documents'
text or a refusal naming the argument, before anything is written."""

import json
from pathlib import Path

import numpy as np
import pytest

from ember.data import load_tokenizer, prepare
from ember.data.loader import parse_sources
from ember.data.shards import open_split, read_index


def _prepare(inputs, out, **kw):
    return prepare([str(i) for i in inputs], out, progress=False, workers=1, val_per_mille=0, **kw)


def _train_tokens(folder) -> list[int]:
    return np.concatenate(open_split(folder, "train").shards).tolist()


# --- documents: the text they say ---------------------------------------------------------


def test_lone_surrogates_in_json_records_become_replacement_characters(tmp_path):
    """JSON may escape half an emoji ("\\ud83d"): json.loads gives a str utf-8 cannot encode. It
    crashed prepare with a bare UnicodeEncodeError naming no file; now it is U+FFFD, noted."""
    src = tmp_path / "web.jsonl"
    src.write_text('{"text": "ok \\ud83d end"}\n{"text": "pair \\ud83d\\ude00 kept"}\n')
    index = _prepare([src], tmp_path / "out")
    text = bytes(t for t in _train_tokens(tmp_path / "out") if t < 256).decode("utf-8")
    assert text == "ok \ufffd end" + "pair \U0001f600 kept"
    assert any("surrogate" in n and "web.jsonl" in n for n in index["notes"])


@pytest.mark.parametrize("name", ["a.jsonl", "a.txt", "a.json"])
def test_a_utf8_byte_order_mark_is_not_text(tmp_path, name):
    """A BOM marks the encoding (Windows editors write it); it is not part of the document. A
    .jsonl with one was refused ("not JSON") though the same .json was read; a .txt trained on it."""
    src = tmp_path / name
    body = b'{"text": "hello"}\n' if name.endswith("l") else b'[{"text": "hello"}]' if "json" in name else b"hello"
    src.write_bytes(b"\xef\xbb\xbf" + body)
    _prepare([src], tmp_path / "out")
    assert _train_tokens(tmp_path / "out") == [*b"hello", 256]


# --- data.sources: numbers that mean what they say -----------------------------------------


@pytest.mark.parametrize(
    "spec, word",
    [
        ("a:inf", "finite"),  # inf/inf: a NaN mixture, a crash at the first batch
        ("a:1e400", "finite"),
        ("a:0.5:100=inf,b", "finite"),  # accepted, crashed at step 100 of the run
        ("a:0.5:100=nan,b", "finite"),  # refused as "every weight is 0 from step 100"
        ("a:tokens=0", "tokens"),  # silently trained on all of the source
        ("a:tokens=0.4", "tokens"),  # rounded to 0: all of the source
        ("a:tokens=lots", "tokens"),  # became a folder named 'a:tokens=lots'
        ("a:tokens=inf", "tokens"),  # a bare OverflowError
        ("a:100=half", "100"),
    ],
)
def test_source_numbers_that_cannot_be_meant_are_refused(spec, word):
    with pytest.raises(ValueError, match=word) as err:
        parse_sources(spec)
    assert "data.sources" in str(err.value)


def test_a_source_named_twice_is_refused(tmp_path):
    """'data,./data' trained the folder at twice its weight, each name with its own epoch order."""
    (tmp_path / "d").mkdir()
    for spec in (f"{tmp_path}/d:0.5,{tmp_path}/d:0.5", f"{tmp_path}/d,{tmp_path}/./d:2", "stdlib,stdlib"):
        with pytest.raises(ValueError, match="named twice"):
            parse_sources(spec)


def test_source_weights_that_mean_something_still_parse():
    specs = parse_sources("a:0.7:tokens=1.5k:100=0.1,b:0.3,c:0:50=1")
    assert [(s.path, s.weight, s.tokens, s.schedule) for s in specs] == [
        ("a", 0.7, 1500, ((100, 0.1),)),
        ("b", 0.3, 0, ()),
        ("c", 0.0, 0, ((50, 1.0),)),
    ]


# --- tokenizers: the ids the index names are the ids in the shards ------------------------


@pytest.fixture
def tok_folder(tmp_path):
    pytest.importorskip("tokenizers")
    from tests.train.test_hf_tokenizer import model_folder

    return model_folder(tmp_path, add_bos=False)


def test_a_tokenizer_folder_edited_between_two_prepares_in_one_process(tmp_path, tok_folder):
    """A notebook prepares, fixes the folder's eos_token, prepares again: the one-worker path
    kept the first tokenizer (cached by its path), so index.json named the new eos while every
    document in the shards ended with the old one."""
    (tmp_path / "a.txt").write_text("hello world\n" * 5)
    first = _prepare([tmp_path / "a.txt"], tmp_path / "one", tokenizer=str(tok_folder))
    config = tok_folder / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "eos_token": "<|endoftext|>"}))
    second = _prepare([tmp_path / "a.txt"], tmp_path / "two", tokenizer=str(tok_folder))
    assert first["eos_id"] != second["eos_id"]
    assert _train_tokens(tmp_path / "two")[-1] == second["eos_id"]


@pytest.mark.parametrize("declared", [70000, 400, -1])
def test_a_declared_eos_id_the_tokenizer_lacks_is_refused_at_load(tmp_path, tok_folder, declared):
    """config.json's eos_token_id was taken on trust: an id past the vocabulary made prepare fail
    after tokenizing (70000: does not fit uint16) or write a folder training refuses (400)."""
    (tok_folder / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": False}))
    (tok_folder / "config.json").write_text(json.dumps({"eos_token_id": declared}))
    with pytest.raises(ValueError, match=f"eos_token_id {declared}"):
        load_tokenizer(str(tok_folder))


# --- ember score: token weights published as one set -------------------------------------


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A token folder of a document a shard, some of them validation, and a reference run."""
    from tests.train.helpers import run

    tmp = tmp_path_factory.mktemp("scored")
    (tmp / "docs").mkdir()
    for i in range(12):
        (tmp / "docs" / f"{i}.txt").write_text(f"def f{i}(x):\n    return x * {i}\n" * 40)
    prepare([str(tmp / "docs")], tmp / "tok", progress=False, workers=1, val_per_mille=300, shard_tokens=500)
    splits = read_index(tmp / "tok")["splits"]
    assert len(splits["train"]) >= 3 and splits["val"]
    run(tmp, "ref", f"--data.sources={tmp / 'tok'}", "--training.steps=2")
    return tmp


def _weights(folder) -> list[np.ndarray]:
    return [np.fromfile(p, np.float32) for p in sorted(Path(folder).glob("weights-train-*.bin"))]


@pytest.mark.slow
def test_a_score_cut_short_while_publishing_leaves_no_mismatched_weights(scored, monkeypatch):
    """The new weights were renamed in, then weights.json written: a crash between left the old
    weights.json (whose hash the run recorded) over new weights, and a resume trained on them."""
    from ember.train import score as score_module

    tok = scored / "tok"
    score_module.score(scored / "ref", tok, alpha=1.0, batch_size=8)
    before = _weights(tok)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(score_module, "write_json_atomic", crash)
    with pytest.raises(OSError, match="disk full"):
        score_module.score(scored / "ref", tok, alpha=0.0, batch_size=8)
    now = _weights(tok)
    unchanged = all(np.array_equal(a, b) for a, b in zip(before, now))
    assert unchanged or not (tok / "weights.json").exists()
    assert not [p for p in tok.iterdir() if ".tmp" in p.name]


@pytest.mark.slow
def test_two_scores_of_one_folder_at_once_publish_one_whole_set(scored, monkeypatch):
    """Both wrote the same weights-*.bin.tmp names: a second `ember score` finishing while the
    first was still scoring took the first's staged files, and the first then crashed."""
    from ember.train import score as score_module

    tok, real = scored / "tok", score_module.shard_weights
    calls = []

    def nested(*args, **kwargs):  # the other score runs while this one scores its second shard
        calls.append(1)
        if len(calls) == 2:
            score_module.score(scored / "ref", tok, alpha=0.0, batch_size=8)
        return real(*args, **kwargs)

    monkeypatch.setattr(score_module, "shard_weights", nested)
    info = score_module.score(scored / "ref", tok, alpha=1.0, batch_size=8)
    assert info["alpha"] == 1.0 == json.loads((tok / "weights.json").read_text())["alpha"]
    weights = np.concatenate(_weights(tok))
    assert len(weights) == info["tokens"] and np.isclose(weights.mean(), info["mean_weight"])
    assert not np.allclose(weights, 1.0)  # alpha 0 gives every token weight 1: not the set published


# --- mixing and eval sources: one tokenizer, not one vocabulary size -----------------------


@pytest.fixture
def two_tokenizers(tmp_path):
    """Two folders from two tokenizers of one vocabulary size and one eos id (Llama 2 and
    Mistral 7B are both 32000 tokens, eos 2): the same ids mean other text."""
    pytest.importorskip("tokenizers")
    from tests.journeys.test_data_journeys import CODE, PROSE, jsonl, tokenizer_folder

    for name, texts in (("code", CODE), ("prose", PROSE)):
        prepare(
            [str(jsonl(tmp_path / f"{name}.jsonl", texts))],
            tmp_path / name,
            tokenizer=str(tokenizer_folder(tmp_path / f"{name}-tok", texts)),
            progress=False,
            workers=1,
            val_per_mille=200,
        )
    a, b = read_index(tmp_path / "code"), read_index(tmp_path / "prose")
    assert (a["vocab_size"], a["eos_id"]) == (b["vocab_size"], b["eos_id"])
    return tmp_path / "code", tmp_path / "prose"


@pytest.mark.parametrize("flag", ["--data.sources={a},{b}", "--data.sources={a} --eval.sources={b}"])
def test_sources_of_two_tokenizers_of_one_size_are_refused(tmp_path, two_tokenizers, flag):
    from ember.train import ConfigError, parse_config
    from ember.train.preflight import check_config
    from tests.train.helpers import flags

    a, b = two_tokenizers
    cfg = parse_config(flags(tmp_path, "r", *flag.format(a=a, b=b).split()))
    with pytest.raises(ConfigError, match="another tokenizer|different tokenizers"):
        check_config(cfg)


@pytest.mark.parametrize("command", ["eval", "score"])
@pytest.mark.slow
def test_a_shard_cut_short_is_refused_by_eval_and_score(scored, tmp_path, command):
    """Training checks each shard against index.json; `ember eval` and `ember score` read them
    unchecked: eval measured fewer windows than the folder's validation set, silently, and score
    wrote weights for the part that was left (which training then refused)."""
    import shutil

    from ember.train import parse_config
    from ember.train.evaluate import evaluate_checkpoint
    from ember.train.score import score

    copy = tmp_path / "tok"
    shutil.copytree(scored / "tok", copy)
    split = "val" if command == "eval" else "train"
    shard = copy / read_index(copy)["splits"][split][0]["file"]
    shard.write_bytes(shard.read_bytes()[:-64])
    weights = {p.name: p.read_bytes() for p in copy.glob("weights*")}
    with pytest.raises(ValueError, match="truncated") as err:
        if command == "eval":
            evaluate_checkpoint(scored / "ref", parse_config(["--job.device=cpu", f"--data.sources={copy}"]))
        else:
            score(scored / "ref", copy, batch_size=8)
    assert shard.name in str(err.value)
    assert {p.name: p.read_bytes() for p in copy.glob("weights*")} == weights


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
@pytest.mark.parametrize("name", ["notes.txt", "notes.jsonl"])
def test_a_utf16_file_with_its_byte_order_mark_is_read_as_its_text(tmp_path, name, encoding):
    """Windows Notepad's "Unicode" is UTF-16 with a BOM: the byte tokenizer trained on its bytes
    (a NUL after every ASCII letter) without a word, and a .jsonl of it was refused as not UTF-8."""
    text = "héllo wörld"
    body = text if name.endswith(".txt") else json.dumps({"text": text}) + "\r\n"
    bom = "\ufeff" if encoding == "utf-16-be" else ""  # "utf-16" writes its own
    (tmp_path / name).write_bytes((bom + body).encode(encoding))
    _prepare([tmp_path / name], tmp_path / "out")
    assert _train_tokens(tmp_path / "out") == [*text.encode("utf-8"), 256]


@pytest.mark.slow
def test_eval_and_score_refuse_data_of_the_runs_tokenizer_with_another_eos(tmp_path):
    """One tokenizer.json, another --eos-token: the tokenizer's hash matched, so `ember eval` and
    `ember score` took the folder, whose documents end with a token the model never saw end one."""
    pytest.importorskip("tokenizers")
    from ember.train import ConfigError
    from ember.train.evaluate import evaluate_checkpoint
    from ember.train.score import score
    from tests.journeys.test_data_journeys import CODE, jsonl, tokenizer_folder
    from tests.train.helpers import run

    tok, docs = tokenizer_folder(tmp_path / "tok", CODE), jsonl(tmp_path / "code.jsonl", CODE)
    for name, eos in (("a", None), ("b", "<|im_start|>")):
        prepare([str(docs)], tmp_path / name, str(tok), 1, val_per_mille=200, eos_token=eos, progress=False)
    assert read_index(tmp_path / "a")["eos_id"] != read_index(tmp_path / "b")["eos_id"]
    run(tmp_path, "ref", f"--data.sources={tmp_path / 'a'}", "--training.steps=1")
    with pytest.raises(ConfigError, match="another tokenizer"):
        evaluate_checkpoint(tmp_path / "ref", flags={"data.sources": str(tmp_path / "b")})
    with pytest.raises(ValueError, match="another tokenizer"):
        score(tmp_path / "ref", tmp_path / "b", batch_size=8)
    assert not list((tmp_path / "b").glob("weights*"))


# --- validation sets that training has seen --------------------------------------------------


@pytest.mark.parametrize("flag", ["--data.sources={a} --eval.sources={b}", "--data.sources={a},{b}"])
def test_one_corpus_prepared_with_two_validation_shares_is_refused(tmp_path, flag):
    """The split is a hash of each document below --val-per-mille: the same corpus prepared at 5
    and at 200 per mille puts most of the second folder's validation documents in the first's
    training split, and its val_loss measured text the model was trained on."""
    from ember.train import ConfigError, parse_config
    from ember.train.preflight import check_one_split
    from ember.train.preflight import check_config
    from tests.train.helpers import flags

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(60):
        (corpus / f"{i}.txt").write_text(f"def f{i}(x):\n    return x * {i}\n" * 20)
    for name, share in (("a", 5), ("b", 200), ("c", 200)):
        prepare([str(corpus)], tmp_path / name, progress=False, workers=1, val_per_mille=share)
    a, b, c = (tmp_path / n for n in "abc")
    cfg = parse_config(flags(tmp_path, "r", *flag.format(a=a, b=b).split()))
    with pytest.raises(ConfigError, match="val-per-mille"):
        check_config(cfg)
    with pytest.raises(ConfigError, match="val-per-mille"):  # what `ember eval` checks too
        check_one_split(cfg)
    check_config(parse_config(flags(tmp_path, "r", *flag.format(a=b, b=c).split())))  # one split: fine


# --- refusals that say what is wrong ---------------------------------------------------------


@pytest.mark.parametrize(
    "name, body, said",
    [
        # a JSON array cut short was read again as JSON lines and refused at line 1 ("Expecting value")
        ("cut.json", '[{"text": "a"},\n {"text": "b"},\n {"text": "c"', "cut.json: not JSON .*line 3"),
        # a record that is not an object: "'text' is a int", as if the field were
        ("num.jsonl", '{"text": "a"}\n5\n', "num.jsonl:2: a int, not an object with a 'text' field"),
        ("list.jsonl", '["a", "b"]\n', "list.jsonl:1: a list, not an object with a 'text' field"),
    ],
)
def test_malformed_json_is_named_for_what_it_is(tmp_path, name, body, said):
    (tmp_path / name).write_text(body)
    with pytest.raises(ValueError, match=said):
        _prepare([tmp_path / name], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_parquet_column_that_is_not_text_is_named_as_a_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "n.parquet")
    with pytest.raises(ValueError, match="n.parquet:row 1: 'text' is a int, not text"):
        _prepare([tmp_path / "n.parquet"], tmp_path / "out")


@pytest.mark.slow
def test_a_worker_that_dies_fails_prepare_instead_of_hanging_it(tmp_path):
    """prepare(workers=2) from a script without `if __name__ == "__main__":` (each spawned worker
    runs the script again and dies starting up), or a worker killed for memory: the pool waited
    for it forever. Now prepare fails, saying why a worker may have died, and leaves no folder."""
    import subprocess
    import sys

    (tmp_path / "a.txt").write_text("hello\n")
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from ember.data import prepare\n"
        f"prepare([{str(tmp_path / 'a.txt')!r}], {str(tmp_path / 'out')!r}, workers=2, progress=False)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240)
    assert done.returncode != 0
    assert "a worker process died" in done.stderr and "__main__" in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_built_in_corpus_says_its_split_is_its_own(tmp_path, monkeypatch):
    """`ember prepare stdlib --val-per-mille 200` kept the built-in split (5 per mille, by file
    name: the one the `stdlib` source trains on) without a word."""
    from ember.data import corpus

    files = [(f"m{i}.py", tmp_path / f"m{i}.py") for i in range(3)]
    for _, p in files:
        p.write_text("x = 1\n")
    monkeypatch.setattr(corpus, "stdlib_files", lambda: files)
    index = prepare(["stdlib"], tmp_path / "out", progress=False, workers=1, val_per_mille=200)
    assert any("--val-per-mille" in n and "stdlib" in n for n in index["notes"])
