"""Conditional training as continual pre-training: data prepared with the checkpoint's own tokenizer
and --control-tokens has two ids past its vocabulary. ember does not add embedding rows to a
checkpoint: the run is refused saying how to grow it, and the grown checkpoint trains, exports with
the control tokens at their ids, samples under --control and distills from its own start."""

import json

import pytest

from ember.cli import main as ember_main
from ember.data.shards import read_index
from ember.train import ConfigError, parse_config, train

from ..train.helpers import SMALL
from ..train.test_hf_import import hf_model
from ..train.test_hf_tokenizer import TEXTS, model_folder

transformers = pytest.importorskip("transformers")
BASE = [f for f in SMALL if not f.startswith("--model.")] + ["--training.steps=2", "--eval.batches=1"]


def scored(tmp_path):
    """A Llama whose vocabulary is its tokenizer's, and control-token data made with that tokenizer."""
    folder = model_folder(tmp_path)
    vocab = len(json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"])
    hf_model("llama", seed=1, vocab_size=vocab).save_pretrained(folder)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t * 3, "score": i % 3 / 2}) + "\n" for i, t in enumerate(TEXTS)))
    args = [str(docs), "--out", str(tmp_path / "D"), "--tokenizer", str(folder), "--control-tokens", "score:0.5"]
    assert ember_main(["prepare", *args, "--workers", "1"]) == 0
    return folder, vocab


def test_control_tokens_past_the_checkpoints_vocabulary_are_refused_saying_how_to_grow_it(tmp_path):
    folder, vocab = scored(tmp_path)
    assert read_index(tmp_path / "D")["control_tokens"] == {"<|good|>": vocab, "<|bad|>": vocab + 1}
    flags = [*BASE, f"--job.dir={tmp_path}", "--job.name=r", f"--model.init_from={folder}"]
    with pytest.raises(ConfigError) as info:
        train(parse_config([*flags, f"--data.sources={tmp_path}/D"]))
    msg = str(info.value)
    assert f"control tokens (<|good|> {vocab}, <|bad|> {vocab + 1})" in msg and f"({vocab} ids)" in msg
    assert f"resize_token_embeddings({vocab + 2}" in msg and "ember prepare --tokenizer" not in msg
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_grown_checkpoint_trains_exports_samples_and_distills(tmp_path):
    folder, vocab = scored(tmp_path)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    model.resize_token_embeddings(vocab + 2, mean_resizing=True)
    model.save_pretrained(tmp_path / "grown")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "grown" / name).write_bytes((folder / name).read_bytes())
    flags = [*BASE, f"--job.dir={tmp_path}", f"--model.init_from={tmp_path}/grown", f"--data.sources={tmp_path}/D"]
    train(parse_config([*flags, "--job.name=r"]))
    train(parse_config([*flags, "--job.name=d", "--loss.distill=0.5"]))
    assert ember_main(["export", str(tmp_path / "r"), str(tmp_path / "out")]) == 0
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tok.convert_tokens_to_ids(["<|good|>", "<|bad|>"]) == [vocab, vocab + 1]
    assert transformers.AutoConfig.from_pretrained(tmp_path / "out").vocab_size == vocab + 2
    args = ["--control", "good", "--prompt", "def", "--max-new-tokens", "4", "--device", "cpu"]
    assert ember_main(["generate", str(tmp_path / "r"), *args]) == 0
