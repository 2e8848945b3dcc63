"""Data as users handle it: the same corpus named by different paths, documents that write
special-token strings, a run used from another project's directory (its own data/ and
tokenizer), data prepared again under a run, a run's data moved away, and eval / export / score
with flags other than train's. Each gives the run's own answer or a refusal naming what changed."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ember.cli import main as ember_main
from ember.data import load_tokenizer, prepare
from ember.data.shards import open_split
from ember.train import ConfigError
from ember.train.evaluate import evaluate_checkpoint
from ember.train.export import export_run
from tests.train.helpers import run

tokenizers = pytest.importorskip("tokenizers")

CODE = [f"def f{i}(x):\n    return x * {i} + {i * i}  # number {i}\n" * 3 for i in range(300)]
PROSE = [f"Chapter {i}. The river ran {i} miles to the sea, and nobody knew why.\n" * 3 for i in range(300)]


def tokenizer_folder(where: Path, texts: list[str], vocab: int = 300) -> Path:
    """A small byte-level BPE tokenizer trained on `texts`, in a model folder with its config."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<|endoftext|>", "<|im_start|>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials, initial_alphabet=alphabet)
    )
    where.mkdir(parents=True, exist_ok=True)
    tok.save(str(where / "tokenizer.json"))
    (where / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>", "bos_token": None}))
    return where


def jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


@pytest.fixture
def inside(monkeypatch):
    """Work from a directory, as a user in a project folder does."""
    return monkeypatch.chdir


def test_the_same_corpus_by_different_paths_gives_the_same_folder(tmp_path, inside):
    jsonl(tmp_path / "corpus" / "a.jsonl", CODE)
    inside(tmp_path)
    rel = prepare(["corpus"], "rel", workers=1, val_per_mille=100, progress=False)
    ab = prepare([str(tmp_path / "corpus")], tmp_path / "abs", workers=1, val_per_mille=100, progress=False)
    assert rel["fingerprint"] == ab["fingerprint"] and rel["splits"] == ab["splits"]
    assert (tmp_path / "rel" / "index.json").read_bytes() == (tmp_path / "abs" / "index.json").read_bytes()
    for split in ("train", "val"):
        a, b = (np.concatenate(open_split(tmp_path / d, split).shards) for d in ("rel", "abs"))
        assert len(a) == len(b) and (a == b).all()


def test_documents_that_write_special_token_strings(tmp_path):
    folder = tokenizer_folder(tmp_path / "model", CODE)
    docs = ["a <|endoftext|> b", "<|im_start|>user\nhi<|endoftext|>", "plain"]
    prepare([str(jsonl(tmp_path / "d.jsonl", docs))], tmp_path / "tok", str(folder), workers=1, progress=False)
    tok = load_tokenizer(str(folder))
    tokens = np.concatenate([np.asarray(s) for sp in ("train", "val") for s in open_split(tmp_path / "tok", sp).shards])
    assert (tokens == tok.eos_id).sum() == 3 and tok._tok.token_to_id("<|im_start|>") not in tokens
    documents = np.split(tokens, np.flatnonzero(tokens == tok.eos_id) + 1)[:-1]
    assert sorted(tok.decode(d[:-1]) for d in documents) == sorted(docs)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Project A: code data under its own tokenizer, prepared as `data` (a relative path) and a
    4-step run trained from A's directory with --data.sources=data. Project B: prose under
    another tokenizer, also in `data`."""
    root = tmp_path_factory.mktemp("projects")
    a, b = root / "a", root / "b"
    for where, texts in ((a, CODE), (b, PROSE)):
        tokenizer_folder(where / "model", texts, vocab=300 if where == a else 280)
        jsonl(where / "raw" / "docs.jsonl", texts)
    cwd = os.getcwd()
    try:
        for where in (a, b):
            os.chdir(where)
            prepare(["raw"], "data", "model", workers=1, val_per_mille=100, progress=False)
        os.chdir(a)
        summary = run(Path("runs"), "r", "--data.sources=data", "--training.steps=4", "--checkpoint.every=2")
    finally:
        os.chdir(cwd)
    return a, b, summary


@pytest.mark.slow
def test_a_run_names_its_data_absolutely_and_keeps_its_tokenizer(project):
    a, _, _ = project
    assert f'sources = "{a / "data"}"' in (a / "runs" / "r" / "config.toml").read_text()
    assert (a / "runs" / "r" / "tokenizer" / "tokenizer.json").read_bytes() == (
        a / "model" / "tokenizer.json"
    ).read_bytes()


@pytest.mark.slow
def test_eval_export_and_score_from_another_project(project, inside, tmp_path):
    a, b, summary = project
    inside(b)  # B has its own data/ and tokenizer
    result = evaluate_checkpoint(a / "runs" / "r")
    assert result["val_loss"] == pytest.approx(summary["val_loss"], rel=1e-6)
    out = export_run(a / "runs" / "r", tmp_path / "hf")
    assert out["tokenizer_files"] == ["tokenizer.json", "tokenizer_config.json"]
    assert (tmp_path / "hf" / "tokenizer.json").read_bytes() == (a / "model" / "tokenizer.json").read_bytes()
    # flags other than train's: another window, batch and device spelling
    other = evaluate_checkpoint(a / "runs" / "r", flags={"data.seq_len": 32, "eval.batch_size": 3, "job.device": "cpu"})
    assert other["val_loss"] != result["val_loss"] and np.isfinite(other["val_loss"])
    # B's data, named explicitly, has another tokenizer than the run's model
    with pytest.raises(ConfigError, match="another tokenizer than the run's data"):
        evaluate_checkpoint(a / "runs" / "r", flags={"data.sources": "data"})
    assert ember_main(["score", str(a / "runs" / "r"), "--data", "data"]) == 1  # B's: another tokenizer
    assert not list((b / "data").glob("weights*"))
    assert ember_main(["score", str(a / "runs" / "r"), "--data", str(a / "data"), "--seq-len", "32"]) == 0
    assert json.loads((a / "data" / "weights.json").read_text())["seq_len"] == 32


@pytest.mark.slow
def test_data_prepared_again_or_moved_under_a_run(tmp_path):
    """Resume and eval refuse a folder prepared again (other documents, another tokenizer) or
    moved away, naming it, before any state is loaded; export needs only the run."""
    data = tmp_path / "tok"
    prepare([str(jsonl(tmp_path / "code.jsonl", CODE))], data, workers=1, val_per_mille=100, progress=False)
    run(tmp_path, "r", f"--data.sources={data}", "--training.steps=2")
    resume = (f"--data.sources={data}", "--training.steps=4", "--checkpoint.resume=latest")
    shutil.rmtree(data)
    prepare([str(jsonl(tmp_path / "prose.jsonl", PROSE))], data, workers=1, val_per_mille=100, progress=False)
    with pytest.raises(ConfigError, match=f"{data} was prepared again since .*tokens"):
        run(tmp_path, "r", *resume)
    with pytest.raises(ConfigError, match=f"ember eval: the run's data changed .*{data} was prepared again"):
        evaluate_checkpoint(tmp_path / "r")
    shutil.rmtree(data)
    folder = tokenizer_folder(tmp_path / "model", PROSE)
    prepare([str(tmp_path / "prose.jsonl")], data, str(folder), workers=1, val_per_mille=100, progress=False)
    with pytest.raises(ConfigError, match="prepared again since \\(another tokenizer"):
        run(tmp_path, "r", *resume)  # once a DCP traceback (the embedding's shape)
    os.replace(data, tmp_path / "moved")
    with pytest.raises(ConfigError, match=f"{data} is gone"):
        evaluate_checkpoint(tmp_path / "r")
    # bytes: ember's byte ids as a tokenizer.json
    assert export_run(tmp_path / "r", tmp_path / "hf")["tokenizer_files"] == ["tokenizer.json", "tokenizer_config.json"]
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["eos_token_id"] == 256
    assert [p.name for p in (tmp_path / "r" / "checkpoints").iterdir()] == ["step-00000002"]


def _weights(data: Path, value: float) -> None:
    """Token weights as `ember score` lays them out, all `value`."""
    for e in json.loads((data / "index.json").read_text())["splits"]["train"]:
        np.full(e["tokens"], value, np.float32).tofile(data / f"weights-{e['file']}")
    (data / "weights.json").write_text(json.dumps({"method": "prior", "alpha": value, "mean_weight": value}))


@pytest.mark.slow
def test_token_weights_made_again_under_a_run(tmp_path):
    """A weighted run resumes only on the weights it trained with; eval does not read them."""
    data = tmp_path / "tok"
    prepare([str(jsonl(tmp_path / "code.jsonl", CODE))], data, workers=1, val_per_mille=100, progress=False)
    _weights(data, 1.0)
    weighted = (f"--data.sources={data}", f"--loss.token_weights={data}")
    run(tmp_path, "w", *weighted, "--training.steps=2")
    _weights(data, 2.0)
    with pytest.raises(ConfigError, match=f"{data}: its token weights were made again since"):
        run(tmp_path, "w", *weighted, "--training.steps=4", "--checkpoint.resume=latest")
    assert np.isfinite(evaluate_checkpoint(tmp_path / "w")["val_loss"])


@pytest.mark.slow
def test_a_run_from_before_runs_recorded_their_data(tmp_path, inside):
    """Its relative data path is read only from the directory it was trained in."""
    import torch

    (tmp_path / "a").mkdir()
    inside(tmp_path / "a")
    prepare([str(jsonl(tmp_path / "code.jsonl", CODE))], "tok", workers=1, val_per_mille=100, progress=False)
    run(Path("runs"), "r", "--data.sources=tok", "--training.steps=2")
    step = tmp_path / "a" / "runs" / "r" / "checkpoints" / "step-00000002"
    extra = torch.load(step / "extra.pt", weights_only=False)
    del extra["loader"]["data"]  # as such a run saved it: no record, the path as typed
    torch.save(extra, step / "extra.pt")
    meta = json.loads((step / "meta.json").read_text())
    meta["config"]["data"]["sources"], meta["config"]["job"]["dir"] = "tok", "runs"
    (step / "meta.json").write_text(json.dumps(meta))
    before = evaluate_checkpoint("runs/r")["val_loss"]
    (tmp_path / "b").mkdir()
    inside(tmp_path / "b")  # another project, with its own tok/
    prepare([str(jsonl(tmp_path / "prose.jsonl", PROSE))], "tok", workers=1, val_per_mille=100, progress=False)
    with pytest.raises(ConfigError, match="names it relatively \\(tok\\): run the command from the directory"):
        evaluate_checkpoint(tmp_path / "a" / "runs" / "r")
    inside(tmp_path / "a")
    assert evaluate_checkpoint("runs/r")["val_loss"] == before
