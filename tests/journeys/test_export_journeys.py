"""`ember train` then `ember export`, then transformers: the folder loads with AutoTokenizer and
AutoModelForCausalLM, whose tokens and logits are ember's."""

import json

import pytest
import torch

from ember.cli import main as ember_main
from ember.data.tokenizer import ByteTokenizer
from ember.train.evaluate import load_model
from ember.train.run_data import run_tokenizer
from tests.train.helpers import SMALL as BASE

transformers = pytest.importorskip("transformers")

SMALL = [*BASE, "--training.steps=2"]
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
    # lm-evaluation-harness's own Hugging Face model reads the folder: ember's log-likelihood
    lm_eval_hf = pytest.importorskip("lm_eval.models.huggingface")
    from lm_eval.api.instance import Instance

    lm = lm_eval_hf.HFLM(pretrained=str(tmp_path / "hf"), device="cpu", batch_size=1)
    request = Instance(request_type="loglikelihood", doc={}, arguments=("Grüße", " 世界"), idx=0)
    ((theirs, _),) = lm.loglikelihood([request])
    n = len("Grüße".encode())
    logprobs = torch.log_softmax(ours[0], -1)
    assert theirs == pytest.approx(sum(logprobs[i - 1, ids[0, i]].item() for i in range(n, n + 7)), rel=1e-5)


@pytest.mark.slow
def test_control_tokens_export_as_special_tokens(tmp_path):
    """A byte run on data prepared with --control-tokens: transformers' tokenizer gives <|good|>
    and <|bad|> their trained ids, and the model's logits after them are ember's."""
    from tests.journeys.test_conditional_training import corpus

    docs = corpus(tmp_path / "docs.jsonl", n=120)
    prepare = ["prepare", str(docs), "--out", str(tmp_path / "ctl"), "--workers=1", "--val-per-mille=100"]
    assert ember_main([*prepare, "--control-tokens", "score:0.5"]) == 0
    assert ember_main(["train", *SMALL, f"--job.dir={tmp_path}", "--job.name=r", f"--data.sources={tmp_path}/ctl"]) == 0
    assert ember_main(["export", str(tmp_path / "r"), str(tmp_path / "hf")]) == 0
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["vocab_size"] == len(tok) == 259
    ids = tok("<|good|>apple river", return_tensors="pt").input_ids
    assert ids[0].tolist() == [257, *b"apple river"]
    assert tok("<|bad|>").input_ids == [258]
    assert tok.decode(ids[0], skip_special_tokens=True) == "apple river"
    model, _, _ = load_model(tmp_path / "r")
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits.float(), model.logits(ids), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_control_tokens_of_a_hugging_face_tokenizer_run(tmp_path):
    """Data prepared with a Hugging Face tokenizer and --control-tokens: the exported tokenizer is
    the run's with <|good|> and <|bad|> added at the ids after its vocabulary."""
    from tests.journeys.test_conditional_training import corpus
    from tests.train.test_hf_tokenizer import model_folder

    folder = model_folder(tmp_path)
    docs = corpus(tmp_path / "docs.jsonl", n=120)
    prepare = ["prepare", str(docs), "--out", str(tmp_path / "ctl"), f"--tokenizer={folder}", "--workers=1"]
    assert ember_main([*prepare, "--val-per-mille=100", "--control-tokens", "score:0.5"]) == 0
    assert ember_main(["train", *SMALL, f"--job.dir={tmp_path}", "--job.name=r", f"--data.sources={tmp_path}/ctl"]) == 0
    assert ember_main(["export", str(tmp_path / "r"), str(tmp_path / "hf")]) == 0
    ours = run_tokenizer(tmp_path / "r")
    good, bad = ours.control_tokens["<|good|>"], ours.control_tokens["<|bad|>"]
    assert bad == good + 1 == ours.vocab_size - 1
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "apple river stone"
    assert tok("<|bad|>" + text, add_special_tokens=False).input_ids == [bad, *ours.encode(text).tolist()]
    assert tok.convert_tokens_to_ids(["<|good|>"]) == [good]
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["vocab_size"] == ours.vocab_size
