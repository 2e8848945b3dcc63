"""run_data.run_tokenizer / control_tokens: a checkpoint's run gives back its own tokenizer, with the
run's ids and control tokens, from the files it kept (checkpoint folders made by hand: no training)."""

import json

import numpy as np
import pytest
import torch

from ember.data.tokenizer import ByteTokenizer, HFTokenizer
from ember.train import config as config_mod
from ember.train.run_data import TOKENIZER_DIR, control_tokens, run_tokenizer

from .test_hf_tokenizer import model_folder

CONTROL = {"<|good|>": 257, "<|bad|>": 258}


def fake_checkpoint(run, record: dict, data_tokenizer: str = "byte"):
    """RUN/checkpoints/step-00000001/ with what the run's tokenizer is read from: its config
    (meta.json) and its data record (extra.pt's loader state)."""
    step = run / "checkpoints" / "step-00000001"
    step.mkdir(parents=True)
    cfg = config_mod.Config()
    cfg.data.sources, cfg.data.tokenizer = str(run / "tokens"), data_tokenizer
    (step / "meta.json").write_text(json.dumps({"config": cfg.to_dict(), "step": 1}))
    torch.save({"loader": {"data": {str(run / "tokens"): record}}}, step / "extra.pt")
    (step / ".metadata").write_bytes(b"")
    return step


def byte_record(**extra):
    return {"fingerprint": "f", "tokenizer": "byte", "vocab_size": 257, "eos_id": 256, "bos_id": None, **extra}


def test_byte_run_with_control_tokens(tmp_path):
    step = fake_checkpoint(tmp_path / "r", byte_record(vocab_size=259, control_tokens=CONTROL))
    for where in (step, tmp_path / "r"):  # a checkpoint, or its run folder
        tok = run_tokenizer(where)
        assert isinstance(tok, ByteTokenizer)
        assert (tok.vocab_size, tok.eos_id, tok.bos_id, tok.control_tokens) == (259, 256, None, CONTROL)
        assert control_tokens(where) == CONTROL
    assert ByteTokenizer.vocab_size == 257  # the class is untouched
    # text is text: a control token written in a document stays its bytes
    assert tok.encode("<|good|>").tolist() == list(b"<|good|>")
    assert tok.decode([CONTROL["<|good|>"], *b"hi", 256]) == "hi"


def test_run_without_control_tokens(tmp_path):
    tok = run_tokenizer(fake_checkpoint(tmp_path / "r", byte_record()))  # a record from before control tokens
    assert tok.control_tokens == {} and tok.vocab_size == 257


def test_hf_run_from_its_kept_tokenizer(tmp_path):
    folder = model_folder(tmp_path)
    probe = HFTokenizer(folder)
    vocab = probe.vocab_size
    record = {
        "fingerprint": "f",
        "tokenizer": "x",
        "vocab_size": vocab + 2,
        "eos_id": probe.eos_id,
        "bos_id": probe.bos_id,
        "control_tokens": {"<|good|>": vocab, "<|bad|>": vocab + 1},
    }
    run = tmp_path / "r"
    fake_checkpoint(run, record, str(tmp_path / "gone"))
    (run / TOKENIZER_DIR).mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (run / TOKENIZER_DIR / name).write_bytes((folder / name).read_bytes())
    tok = run_tokenizer(run)  # from the kept copy: the data folder is gone
    assert isinstance(tok, HFTokenizer)
    assert (tok.eos_id, tok.bos_id, tok.vocab_size) == (probe.eos_id, probe.bos_id, vocab + 2)
    assert tok.control_tokens == {"<|good|>": vocab, "<|bad|>": vocab + 1}
    text = "def f3(x): <|good|> </s>"
    assert np.array_equal(tok.encode(text), probe.encode(text))
    assert vocab not in tok.encode(text).tolist()


def test_hf_run_with_another_end_of_document_token(tmp_path):
    """A run prepared with --eos-token keeps that end, not the folder's declared one."""
    folder = model_folder(tmp_path)
    probe = HFTokenizer(folder, "<|endoftext|>")
    assert probe.eos_id != HFTokenizer(folder).eos_id
    record = {"fingerprint": "f", "tokenizer": "x", "vocab_size": probe.vocab_size, "eos_id": probe.eos_id}
    run = tmp_path / "r"
    fake_checkpoint(run, record, str(tmp_path / "gone"))
    (run / TOKENIZER_DIR).mkdir()
    (run / TOKENIZER_DIR / "tokenizer.json").write_bytes((folder / "tokenizer.json").read_bytes())
    tok = run_tokenizer(run)
    assert tok.eos_id == probe.eos_id and tok.control_tokens == {}


def test_missing_run_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError):
        run_tokenizer(tmp_path)
