"""The built-in corpus, tokenizers, `ember prepare` and the packed loader."""

import json

import numpy as np
import pytest

from ember.data import PackedLoader, corpus, parse_sources, prepare, read_index
from ember.data.loader import SourceSpec, Windows, validation_batches
from ember.data.shards import open_split
from ember.data.tokenizer import ByteTokenizer, HFTokenizer

DOCS = [f"document {i}: " + "lorem ipsum dolor " * (i % 7 + 1) + "é✓" for i in range(300)]


@pytest.fixture(scope="module")
def jsonl_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("text")
    (d / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in DOCS[:200]))
    (d / "b.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in DOCS[200:]) + "\n\n")
    (d / "notes.txt").write_text("a plain text file is one document")
    return d


def test_stdlib_corpus_split_is_disjoint_and_stable():
    files = corpus.stdlib_files()
    assert len(files) > 500 and all(name.endswith(".py") and "site-packages" not in name for name, _ in files)
    val = [n for n, _ in files if corpus.split_of(n) == "val"]
    assert 0 < len(val) < len(files) / 50
    assert corpus.split_of("os.py") == corpus.split_of("os.py")
    assert len(corpus.stdlib_documents("val")) == len(val)


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    ids = tok.encode("héllo ✓")
    assert ids.dtype == np.uint16 and ids.max() < 256 and tok.decode(ids) == "héllo ✓"


def test_prepare_byte_shards(tmp_path, jsonl_dir):
    index = prepare([str(jsonl_dir)], tmp_path / "out", workers=1, shard_tokens=2000, progress=False)
    assert index["vocab_size"] == 257 and index["dtype"] == "uint16"
    splits = open_split(tmp_path / "out", "train").shards + open_split(tmp_path / "out", "val").shards
    tokens = np.concatenate([np.asarray(s) for s in splits])
    docs = bytes(int(t) if t < 256 else 0 for t in tokens).split(b"\0")[:-1]
    assert sorted(docs) == sorted([t.encode() for t in DOCS] + [b"a plain text file is one document"])
    train = index["splits"]["train"]
    assert (
        len(train) > 1
        and sum(e["documents"] for e in train) + sum(e["documents"] for e in index["splits"]["val"]) == 301
    )
    for e in train:  # shards end at document boundaries
        assert np.asarray(np.memmap(tmp_path / "out" / e["file"], dtype=np.uint16, mode="r"))[-1] == 256


def test_prepare_output_does_not_depend_on_workers(tmp_path, jsonl_dir):
    prepare([str(jsonl_dir)], tmp_path / "one", workers=1, progress=False)
    prepare([str(jsonl_dir)], tmp_path / "two", workers=2, progress=False)
    for f in sorted(p.name for p in (tmp_path / "one").iterdir()):
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f


def test_prepare_parquet_and_hf_tokenizer(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(DOCS, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "</s>"]))
    tok.save(str(tmp_path / "tokenizer.json"))
    pq.write_table(pa.table({"text": DOCS}), tmp_path / "docs.parquet")
    index = prepare(
        [str(tmp_path / "docs.parquet")], tmp_path / "out", tokenizer=str(tmp_path / "tokenizer.json"), progress=False
    )
    hf = HFTokenizer(tmp_path / "out" / "tokenizer.json")
    assert index["eos_id"] == hf.eos_id == tok.token_to_id("</s>") and index["vocab_size"] == tok.get_vocab_size()
    tokens = np.concatenate([np.asarray(s) for s in open_split(tmp_path / "out", "train").shards])
    assert (tokens == hf.eos_id).sum() == sum(e["documents"] for e in index["splits"]["train"])
    assert hf.decode(tokens[: list(tokens).index(hf.eos_id)]).replace(" ", "") in {d.replace(" ", "") for d in DOCS}


def test_prepare_errors(tmp_path, jsonl_dir):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        prepare([str(tmp_path / "missing")], tmp_path / "o1", progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2: no 'text' field"):
        prepare([str(bad)], tmp_path / "o2", workers=1, progress=False)
    prepare([str(jsonl_dir)], tmp_path / "o3", workers=1, progress=False)
    with pytest.raises(FileExistsError, match="not empty"):
        prepare([str(jsonl_dir)], tmp_path / "o3", workers=1, progress=False)
    with pytest.raises(FileNotFoundError, match="not a token directory"):
        read_index(tmp_path)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, jsonl_dir):
    out = tmp_path_factory.mktemp("tok") / "shards"
    prepare([str(jsonl_dir)], out, workers=1, shard_tokens=3000, progress=False)
    return out


def test_windows_are_consecutive_slices(shards):
    split = open_split(shards, "train")
    w = Windows(split, 50)
    assert w.n == sum((len(s) - 1) // 50 for s in split.shards)
    first = np.asarray(split.shards[0])
    np.testing.assert_array_equal(w.get(1)[0], first[50:101])
    k = int(w.starts[1])  # first window of the second shard
    np.testing.assert_array_equal(w.get(k)[0], np.asarray(split.shards[1])[:51])


def test_loader_is_deterministic_resumable_and_rank_sliced(shards):
    src = [SourceSpec(str(shards))]
    a = PackedLoader(src, 32, 6, seed=1)
    batches = [a.next_batch() for _ in range(40)]  # several epochs of a small source
    assert all((b["inputs"][:, 1:] == b["targets"][:, :-1]).all() for b in batches)
    b = PackedLoader(src, 32, 6, seed=1)
    for _ in range(17):
        b.next_batch()
    c = PackedLoader(src, 32, 6, seed=1)
    c.load_state_dict(b.state_dict())
    for got, want in zip([c.next_batch() for _ in range(23)], batches[17:]):
        assert (got["inputs"] == want["inputs"]).all()
    ranks = [PackedLoader(src, 32, 6, seed=1, rank=r, world_size=3) for r in range(3)]
    for want in batches[:5]:
        rows = [r.next_batch()["inputs"] for r in ranks]
        assert all(len(x) == 2 for x in rows)
        assert (np.concatenate(rows) == want["inputs"].numpy()).all()
    other = PackedLoader(src, 32, 6, seed=2)
    assert not (other.next_batch()["inputs"] == batches[0]["inputs"]).all()
    with pytest.raises(ValueError, match="made with seed 1"):
        other.load_state_dict(a.state_dict())


def test_mixture_weights(shards):
    loader = PackedLoader(parse_sources(f"stdlib:3,{shards}:1"), 32, 64, seed=0)
    for _ in range(20):
        loader.next_batch()
    share = loader.counters[0] / sum(loader.counters)
    assert 0.68 < share < 0.82
    assert parse_sources("a:2, b")[1].weight == 1.0 and parse_sources("a:2")[0].path == "a"
    with pytest.raises(ValueError, match="must be > 0"):
        parse_sources("a:0")


def test_validation_batches_split_evenly_over_ranks(shards):
    whole = validation_batches(SourceSpec("stdlib"), 64, 8, 3)
    parts = [validation_batches(SourceSpec("stdlib"), 64, 8, 3, rank=r, world_size=2) for r in range(2)]
    assert len(whole) == 3 and sum(b.shape[0] for p in parts for b in p) == 24
    assert len(parts[0]) == len(parts[1])


def test_split_is_a_function_of_content_not_path(tmp_path, jsonl_dir, monkeypatch):
    """The same corpus named by a relative and by an absolute path gives the same splits."""
    monkeypatch.chdir(jsonl_dir.parent)
    prepare([jsonl_dir.name], tmp_path / "rel", workers=1, val_per_mille=300, progress=False)
    prepare([str(jsonl_dir)], tmp_path / "abs", workers=1, val_per_mille=300, progress=False)
    for split in ("train", "val"):
        a, b = (np.concatenate(open_split(tmp_path / d, split).shards) for d in ("rel", "abs"))
        assert len(a) and len(a) == len(b) and (a == b).all(), split
    # a document goes where its content says, wherever it sits
    (tmp_path / "moved").mkdir()
    (tmp_path / "moved" / "z.jsonl").write_text((jsonl_dir / "a.jsonl").read_text())
    prepare([str(tmp_path / "moved")], tmp_path / "m", workers=1, val_per_mille=300, progress=False)
    val_docs = set(bytes(np.asarray(open_split(tmp_path / "m", "val").shards[0]).astype(np.uint8)).split(b"\0"))
    all_val = set(bytes(np.asarray(open_split(tmp_path / "abs", "val").shards[0]).astype(np.uint8)).split(b"\0"))
    assert val_docs and val_docs <= all_val


def _prepared_texts(out) -> list[bytes]:
    tokens = np.concatenate([np.asarray(s) for sp in ("train", "val") for s in open_split(out, sp).shards])
    return sorted(bytes(int(t) if t < 256 else 0 for t in tokens).split(b"\0")[:-1])


def test_inputs_are_read_by_their_suffix_whatever_its_case(tmp_path):
    """A.JSONL, x.json, x.jsonl.gz named on the command line; in a folder also .TXT files and a
    symlinked sub-folder. Once read as raw bytes (JSON syntax and gzip bytes as text) or skipped."""
    import gzip

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "A.JSONL").write_text(json.dumps({"text": "upper jsonl"}) + "\n")
    (src / "x.json").write_text(json.dumps([{"text": "json array 1"}, {"text": "json array 2"}]))
    (src / "y.json").write_text(json.dumps({"text": "json lines 1"}) + "\n" + json.dumps({"text": "json lines 2"}))
    (src / "z.jsonl.gz").write_bytes(gzip.compress((json.dumps({"text": "gzipped"}) + "\n").encode()))
    (src / "sub" / "NOTES.TXT").write_text("upper txt")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "linked.md").write_text("through a link")
    (src / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (src / "data.csv").write_text("a,b\n")
    (src / "sub" / "index.json").write_text(json.dumps([{"text": "a corpus file named index.json"}]))
    (src / ".hidden.txt").write_text("hidden")
    want = sorted(
        b"upper jsonl|json array 1|json array 2|json lines 1|json lines 2|gzipped|upper txt|through a link".split(b"|")
    )
    want = sorted([*want, b"a corpus file named index.json"])
    named = [
        str(src / f)
        for f in ("A.JSONL", "x.json", "y.json", "z.jsonl.gz", "sub/NOTES.TXT", "sub/index.json", "link/linked.md")
    ]
    prepare(named, tmp_path / "named", workers=1, progress=False)
    assert _prepared_texts(tmp_path / "named") == want
    index = prepare([str(src)], tmp_path / "walked", workers=1, val_per_mille=0, progress=False)
    assert _prepared_texts(tmp_path / "walked") == want
    assert index["notes"] == [f"{src}: skipped 1 .csv files, 1 hidden files"]


def test_prepare_refuses_or_reports_misuse(tmp_path, jsonl_dir):
    (tmp_path / "a.tar.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(ValueError, match="cannot read .tar.gz files"):
        prepare([str(tmp_path / "a.tar.gz")], tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match="is inside the input folder"):
        prepare([str(jsonl_dir)], jsonl_dir / "tok", progress=False)
    (tmp_path / "bad.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2: not UTF-8"):
        prepare([str(tmp_path / "bad.jsonl")], tmp_path / "o", workers=1, progress=False)
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.tmp-*"))  # a failed prepare leaves nothing
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="no document .* has any text"):
        prepare([str(tmp_path / "empty.txt")], tmp_path / "o", workers=1, progress=False)
    (tmp_path / "d.jsonl").write_text('{"text": "one"}\n{"text": ""}\n{"text": null}\n')
    index = prepare(
        [str(tmp_path / "d.jsonl"), str(tmp_path / "d.jsonl"), str(tmp_path / "empty.txt")],
        tmp_path / "o",
        workers=1,
        progress=False,
    )
    assert _prepared_texts(tmp_path / "o") == [b"one"]
    assert index["notes"] == [
        f"{tmp_path / 'd.jsonl'} was given twice: read once",
        f"{tmp_path / 'd.jsonl'}: 2 empty document(s) skipped",
        f"{tmp_path / 'empty.txt'}: 1 empty document(s) skipped",
        "no document fell into the validation split (--val-per-mille 5): runs will report no val_loss",
    ]
    assert index["fingerprint"] != prepare([str(jsonl_dir)], tmp_path / "p", workers=1, progress=False)["fingerprint"]


@pytest.mark.parametrize(
    "arg, value, flag",
    [("val_per_mille", 1001, "--val-per-mille"), ("shard_tokens", 0, "--shard-tokens"), ("workers", -1, "--workers")],
)
def test_prepare_numbers_out_of_range_are_named(tmp_path, jsonl_dir, arg, value, flag):
    with pytest.raises(ValueError, match=f"{flag} must be .*, got {value}"):
        prepare([str(jsonl_dir)], tmp_path / "o", progress=False, **{arg: value})
    assert not (tmp_path / "o").exists()
