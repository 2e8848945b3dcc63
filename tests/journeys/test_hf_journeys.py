"""Hugging Face checkpoints as users handle them: a run from a Mistral evaluated at a longer
sequence, exports that keep the generation settings and that transformers' generate uses, round
trips, and the folders people hand to from_hf / to_hf by mistake (a pytorch_model.bin only, bf16
weights, a tied head saved twice, a name not in the cache, an export into a used folder or into
the run). Each gives transformers' answer or a refusal that names the argument."""

import json

import pytest
import torch

from ember.cli import main as ember_main
from ember.models import from_hf, to_hf
from ember.models.hf import HFCheckpointError
from tests.train.helpers import TINY
from tests.train.test_hf_import import hf_logits, hf_model, rel_err, tokens

transformers = pytest.importorskip("transformers")

VOCAB = 300  # the byte data's 257 ids fit in it
BASE = [f for f in TINY if not f.startswith("--model.")]  # the size comes from the checkpoint


def train_from(tmp_path, src, name="run", *extra) -> str:
    """A 2-step run started from the Hugging Face folder `src`; its folder."""
    args = [*BASE, f"--job.dir={tmp_path}", f"--job.name={name}", f"--model.init_from={src}", "--training.steps=2"]
    assert ember_main(["train", *args, *extra]) == 0
    return str(tmp_path / name)


@pytest.mark.slow
def test_commands_refuse_what_train_refuses(tmp_path, capsys):
    """A run from a Mistral with a 64-token window trains at 64 tokens; `ember eval` and `ember
    score` at 128 are refused as `train` refuses them, naming the window (they once computed plain
    causal attention: 5.0815 against transformers' 5.0850)."""
    src = tmp_path / "mistral"
    hf_model("mistral", vocab_size=VOCAB, sliding_window=64).save_pretrained(src)
    run = train_from(tmp_path, src)
    capsys.readouterr()
    assert ember_main(["eval", run, "--data.seq_len=128"]) == 1
    assert "sliding window of 64 tokens" in capsys.readouterr().err
    assert (
        ember_main(
            [
                "train",
                *BASE,
                f"--job.dir={tmp_path}",
                "--job.name=long",
                f"--model.init_from={src}",
                "--data.seq_len=128",
            ]
        )
        == 1
    )
    assert "sliding window of 64 tokens" in capsys.readouterr().err and not (tmp_path / "long").exists()
    assert ember_main(["eval", run, "--data.seq_len=32"]) == 0  # within the window: what transformers computes
    assert ember_main(["eval", run, "--model.n_layers=3"]) == 1  # the checkpoint's model, not another
    assert "model.n_layers" in capsys.readouterr().err
