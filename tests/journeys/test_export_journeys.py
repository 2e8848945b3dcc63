"""`ember train` then `ember export`, then transformers: the folder loads with AutoTokenizer and
AutoModelForCausalLM, whose tokens and logits are ember's."""

import json

import pytest
import torch

from ember.cli import main as ember_main
from ember.data.tokenizer import ByteTokenizer
from ember.train.evaluate import load_model

transformers = pytest.importorskip("transformers")

SMALL = [
    "--model.name=debug",
    "--model.dim=32",
    "--model.n_layers=1",
    "--model.n_heads=2",
    "--data.seq_len=32",
    "--training.batch_size=4",
    "--training.steps=2",
    "--metrics.progress=false",
    "--metrics.plot=false",
    "--metrics.tensorboard=false",
    "--training.selftest=false",
    "--job.device=cpu",
]
TEXT = "Grüße 世界 🙂\n\t a  b\r\n"  # 28 bytes: within the run's 32


@pytest.mark.slow
def test_byte_run_exports_a_tokenizer_transformers_loads(tmp_path):
    assert ember_main(["train", *SMALL, f"--job.dir={tmp_path}", "--job.name=r"]) == 0
    assert ember_main(["export", str(tmp_path / "r"), str(tmp_path / "hf")]) == 0
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert tok.eos_token_id == config["eos_token_id"] == 256 and len(tok) <= config["vocab_size"]
    assert tok.model_max_length == 32
    ids = tok(TEXT, return_tensors="pt").input_ids
    assert ids[0].tolist() == ByteTokenizer().encode(TEXT).tolist()
    model, _, _ = load_model(tmp_path / "r")
    with torch.no_grad():
        theirs, ours = hf(ids).logits.float(), model.logits(ids)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    assert tok.decode(ids[0]) == TEXT
