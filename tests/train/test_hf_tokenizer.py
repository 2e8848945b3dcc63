"""`ember prepare --tokenizer MODEL_FOLDER`: a Hugging Face model folder's tokenizer.json and its
end/beginning-of-document tokens; the data trains the model it came with and exports with it."""

import json

import numpy as np
import pytest

from ember.cli import main as ember_main
from ember.data import load_tokenizer
from ember.data.shards import open_split, read_index

tokenizers = pytest.importorskip("tokenizers")
TEXTS = [f"def f{i}(x):\n    return x * {i} + {i * i}  # number {i}\n" for i in range(200)]


def model_folder(tmp_path, bos="<s>", eos="</s>", add_bos=True, vocab=300):
    """A folder with a small BPE tokenizer.json trained here and its tokenizer_config.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        TEXTS,
        trainers.BpeTrainer(
            vocab_size=vocab,
            special_tokens=["<unk>", "<s>", "</s>", "<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": eos, "add_bos_token": add_bos}
        )
    )
    return folder


def test_folder_tokens(tmp_path):
    folder = model_folder(tmp_path)
    tok = load_tokenizer(str(folder))
    assert tok.eos_id == tok._tok.token_to_id("</s>") and tok.bos_id == tok._tok.token_to_id("<s>")
    ids = tok.encode_document(TEXTS[3])
    assert ids[0] == tok.bos_id and tok.decode(ids[1:]) == TEXTS[3]
    # the older form of a special token, and add_bos_token false
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {"bos_token": "<s>", "add_bos_token": False, "eos_token": {"__type": "AddedToken", "content": "<unk>"}}
        )
    )
    tok = load_tokenizer(str(folder))
    assert tok.bos_id is None and tok.eos_id == tok._tok.token_to_id("<unk>")
    # Qwen-like: no bos, eos named "<|endoftext|>"
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": None, "eos_token": "<|endoftext|>"}))
    tok = load_tokenizer(str(folder))
    assert tok.bos_id is None and tok.eos_id == tok._tok.token_to_id("<|endoftext|>")
    assert tok.encode_document(TEXTS[0]).tolist() == tok.encode(TEXTS[0]).tolist()
    # no tokenizer_config.json: config.json's eos_token_id, else a known name
    (folder / "tokenizer_config.json").unlink()
    (folder / "config.json").write_text(json.dumps({"eos_token_id": [2, 3]}))
    assert load_tokenizer(str(folder)).eos_id == 2
    (folder / "config.json").unlink()
    assert load_tokenizer(str(folder)).eos_id == tok._tok.token_to_id("<|endoftext|>")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no tokenizer.json"):
        load_tokenizer(str(folder))


def test_prepare_with_model_folder(tmp_path):
    folder = model_folder(tmp_path)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    assert (
        ember_main(["prepare", str(docs), "--out", str(tmp_path / "tok"), "--tokenizer", str(folder), "--workers", "1"])
        == 0
    )
    index = read_index(tmp_path / "tok")
    tok = load_tokenizer(str(folder))
    assert (index["eos_id"], index["bos_id"], index["vocab_size"]) == (tok.eos_id, tok.bos_id, tok.vocab_size)
    assert {p.name for p in (tmp_path / "tok").glob("tokenizer*")} == {"tokenizer.json", "tokenizer_config.json"}
    tokens = np.concatenate([np.asarray(s) for s in open_split(tmp_path / "tok", "train").shards])
    ends = np.flatnonzero(tokens == tok.eos_id)
    assert tokens[0] == tok.bos_id and all(tokens[ends[:-1] + 1] == tok.bos_id)  # every document starts with bos


@pytest.mark.slow
def test_init_from_with_its_tokenizer_exports_it(tmp_path):
    transformers = pytest.importorskip("transformers")
    from .test_hf_import import hf_model
    from .test_init_from import run

    folder = model_folder(tmp_path)
    vocab = load_tokenizer(str(folder)).vocab_size
    hf_model("llama", vocab_size=vocab + 4).save_pretrained(folder)  # the model beside its tokenizer
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t * 4}) + "\n" for t in TEXTS))
    assert (
        ember_main(
            [
                "prepare",
                str(docs),
                "--out",
                str(tmp_path / "tok"),
                "--tokenizer",
                str(folder),
                "--workers",
                "1",
                "--val-per-mille",
                "100",
            ]
        )
        == 0
    )
    run(tmp_path, "r", f"--model.init_from={folder}", f"--data.sources={tmp_path}/tok", "--training.steps=2")
    assert ember_main(["export", str(tmp_path / "r"), str(tmp_path / "out")]) == 0
    # the source's tokenizer, but for a post-processor that puts its declared <s> first, as the run trained
    exported, source = (json.loads((f / "tokenizer.json").read_text()) for f in (tmp_path / "out", folder))
    assert exported.pop("post_processor") != source.pop("post_processor") and exported == source
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert hf_tok.eos_token == "</s>" and hf_tok.bos_token == "<s>"
    assert hf_tok(TEXTS[1])["input_ids"] == load_tokenizer(str(folder)).encode_document(TEXTS[1]).tolist()
    assert hf_tok.decode(hf_tok(TEXTS[1], add_special_tokens=False)["input_ids"]) == TEXTS[1]


def test_special_token_strings_in_documents_are_text(tmp_path):
    """A document that writes "</s>" or "<|endoftext|>" gets those characters as text: only ember
    places special tokens (bos before, eos after each document)."""
    folder = model_folder(tmp_path)
    docs = ["one </s> two", "three <|endoftext|><s> four", "plain"]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    out = tmp_path / "tok"
    assert ember_main(["prepare", str(tmp_path / "docs.jsonl"), "--out", str(out), "--tokenizer", str(folder)]) == 0
    tok = load_tokenizer(str(folder))
    tokens = np.concatenate([np.asarray(s) for sp in ("train", "val") for s in open_split(out, sp).shards])
    special = {tok._tok.token_to_id(t) for t in ("<unk>", "<s>", "</s>", "<|endoftext|>")}
    assert (tokens == tok.eos_id).sum() == (tokens == tok.bos_id).sum() == 3
    texts = [tok.decode(d[1:]) for d in np.split(tokens, np.flatnonzero(tokens == tok.eos_id) + 1)[:-1]]
    assert sorted(texts) == sorted(docs)
    inner = np.concatenate([d[1:-1] for d in np.split(tokens, np.flatnonzero(tokens == tok.eos_id) + 1)[:-1]])
    assert not special & set(inner.tolist())


def test_ids_past_the_reported_vocabulary_are_never_wrapped(tmp_path):
    """A tokenizer that reports 3 tokens but has the id 70000: uint32 shards, a vocabulary that
    covers the id, and the id itself in the shard (it was once stored as 70000 mod 65536)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"a": 0, "</s>": 1, "b": 70000}, unk_token="a"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "docs.txt").write_text("a b a b")
    out = tmp_path / "tok"
    assert (
        ember_main(
            ["prepare", str(tmp_path / "docs.txt"), "--out", str(out), "--tokenizer", str(tmp_path / "tokenizer.json")]
        )
        == 0
    )
    index = read_index(out)
    assert index["dtype"] == "uint32" and index["vocab_size"] == 70001
    tokens = np.concatenate([np.asarray(s) for s in open_split(out, "train").shards])
    assert tokens.tolist() == [0, 70000, 0, 70000, 1]


def test_shard_writer_refuses_ids_its_dtype_cannot_hold(tmp_path):
    from ember.data.shards import ShardWriter

    w = ShardWriter(tmp_path, "train", np.dtype(np.uint16), 100)
    with pytest.raises(ValueError, match="70000.*uint16"):
        w.write(np.array([5, 70000, 1], dtype=np.uint32), 1)
