"""Conditional training end to end through `ember`: prepare scored documents with control tokens,
train, resume exactly, eval, score, generate conditioned on <|good|> (also from a sharded FSDP
checkpoint), and the refusals of generate on a run without control tokens."""

import json
import random
from pathlib import Path

import pytest

from ember.cli import main as ember_main
from ember.data import read_index
from ember.train.generate import Sampling, sample
from ember.train.run_data import run_tokenizer
from tests.train.helpers import cli, flags, losses, run

WORDS = "apple river stone cloud green quiet lamp paper orange window".split()


def corpus(path: Path, n: int = 400) -> Path:
    """Documents of ten words; those holding 'spam' score 0 (undesired), the others 1."""
    records = []
    for i in range(n):
        words = random.Random(i).choices(WORDS, k=10)
        if i % 3 == 0:
            words[i % 10] = "spam"
        records.append({"text": " ".join(words) + ".", "score": 0.0 if "spam" in words else 1.0})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cond")
    src = corpus(root / "docs.jsonl")
    for name, extra in (("ctl", ["--control-tokens", "score:0.5"]), ("plain", [])):
        assert (
            ember_main(["prepare", str(src), "--out", str(root / name), "--workers=1", "--val-per-mille=100", *extra])
            == 0
        )
    return root


@pytest.mark.slow
def test_a_control_token_run_trains_resumes_evaluates_scores_and_generates(data, tmp_path, capsys):
    index = read_index(data / "ctl")
    assert index["vocab_size"] == 259 and index["control"]["documents"] == {"good": 266, "bad": 134}
    assert sum(e["documents"] for e in index["splits"]["val"]) > 10
    opts = (f"--data.sources={data / 'ctl'}", "--checkpoint.every=2", "--eval.every=2")
    full = run(tmp_path, "full", *opts, "--training.steps=4")["losses"]
    resumed = run(
        tmp_path, "res", *opts, "--training.steps=4", f"--checkpoint.resume={tmp_path}/full/checkpoints/step-00000002"
    )
    assert resumed["losses"] == {k: v for k, v in full.items() if k > 2}  # bit for bit
    assert ember_main(["eval", str(tmp_path / "full")]) == 0
    assert ember_main(["score", str(tmp_path / "full"), "--data", str(data / "ctl")]) == 0
    tok = run_tokenizer(tmp_path / "full")
    assert tok.control_tokens == {"<|good|>": 257, "<|bad|>": 258} and tok.vocab_size == 259
    args = ["generate", str(tmp_path / "full"), "--control", "good", "--prompt", "apple", "--max-new-tokens", "20"]
    args += ["--num-samples", "3", "--seed", "4", "--device", "cpu"]
    for name in ("a.json", "b.json"):
        assert ember_main([*args, "--json", str(tmp_path / name)]) == 0
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["samples"] == b["samples"] and len(a["samples"]) == 3 and a["control"] == "good"
    assert all(258 not in s["ids"] for s in a["samples"])  # <|bad|> is never sampled under <|good|>
    assert "--- sample 3 " in capsys.readouterr().out


@pytest.mark.slow
def test_generate_refuses_control_on_a_run_without_control_tokens(data, tmp_path, capsys):
    run(tmp_path, "plain", f"--data.sources={data / 'plain'}", "--training.steps=1")
    assert ember_main(["generate", str(tmp_path / "plain"), "--control", "good", "--max-new-tokens", "4"]) == 1
    err = capsys.readouterr().err
    assert "ember generate: error: --control good: " in err and "prepared without --control-tokens" in err
    assert ember_main(["generate", str(tmp_path / "plain"), "--max-new-tokens", "64"]) == 1
    assert "pass the run's sequence length 64" in capsys.readouterr().err
    assert ember_main(["generate", str(tmp_path / "plain"), "--max-new-tokens", "5", "--temperature", "0"]) == 0


@pytest.mark.slow
def test_generate_from_a_sharded_fsdp_checkpoint(data, tmp_path):
    train = flags(tmp_path, "fsdp", f"--data.sources={data / 'ctl'}", "--training.steps=2", "--training.parallel=fsdp")
    r = cli("train", *train, "--checkpoint.export_safetensors=true", nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = tmp_path / "fsdp" / "checkpoints" / "step-00000002"
    assert len(list(ckpt.glob("*.distcp"))) == 2 and losses(tmp_path / "fsdp")
    out = tmp_path / "g.json"
    r = cli(
        "generate",
        str(tmp_path / "fsdp"),
        "--control",
        "bad",
        "--temperature",
        "0",
        "--max-new-tokens",
        "16",
        "--json",
        str(out),
        "--device",
        "cpu",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    # the same greedy tokens from the full weights the run exported beside its sharded checkpoint
    from safetensors.torch import load_file

    from ember.models import Llama, LlamaConfig

    model = Llama(LlamaConfig(**json.loads((tmp_path / "fsdp" / "config.json").read_text())))
    model.load_state_dict(load_file(tmp_path / "fsdp" / "model.safetensors"))
    model.init_buffers()
    want = sample(model.eval(), [256, 258], Sampling(16, 1, 0, 0.0), 256, banned=[257])
    assert json.loads(out.read_text())["samples"][0]["ids"] == want[0]
