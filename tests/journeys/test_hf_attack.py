"""Hugging Face folders as they come from the wild, and the misuses of continual pre-training:
each gives transformers' answer, or a refusal naming the file or flag before anything is written
(never a traceback, never other weights than transformers loads)."""

import json
import shutil

import pytest
import torch

from ember.cli import main as ember_main
from ember.models import from_hf
from ember.models.hf import HFCheckpointError
from tests.journeys.test_hf_journeys import BASE, VOCAB
from tests.train.test_hf_import import hf_logits, hf_model, rel_err, tokens

transformers = pytest.importorskip("transformers")


def same_logits(path):
    """from_hf(path) computes what transformers' from_pretrained(path) computes (fp32)."""
    ref = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    x = tokens()
    with torch.no_grad():
        assert rel_err(from_hf(path, dtype="fp32")(x), hf_logits(ref, x)) <= 1e-4


# --- which safetensors files are the checkpoint ----------------------------------------------


def test_stale_index_beside_model_safetensors(tmp_path):
    """save_pretrained sharded, then unsharded into the same folder, leaves the old index (and
    here its shards) beside the new model.safetensors: transformers reads model.safetensors, so
    does from_hf (it read the old shards' weights, or refused the folder once they were gone)."""
    path = tmp_path / "m"
    hf_model("llama", seed=1).save_pretrained(path, max_shard_size="30KB")
    hf_model("llama", seed=2).save_pretrained(tmp_path / "new")
    shutil.copyfile(tmp_path / "new" / "model.safetensors", path / "model.safetensors")
    same_logits(path)
    for shard in path.glob("model-*.safetensors"):
        shard.unlink()
    same_logits(path)


def test_index_that_names_the_wrong_shard(tmp_path):
    """An index whose weight_map puts a tensor in another of its files: transformers finds the
    tensor where it is (the files' own headers), and so does from_hf (it crashed in safetensors)."""
    path = tmp_path / "m"
    hf_model("llama").save_pretrained(path, max_shard_size="30KB")
    index = json.loads((path / "model.safetensors.index.json").read_text())
    wmap = index["weight_map"]
    wmap["model.norm.weight"] = next(f for f in sorted(set(wmap.values())) if f != wmap["model.norm.weight"])
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    same_logits(path)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: (p / "model.safetensors.index.json").write_text("{"), "index.json: not valid JSON"),
        (lambda p: (p / "model.safetensors.index.json").write_text("{}"), "index.json has no weight_map"),
        (lambda p: (p / "config.json").write_text("[]"), "config.json is not a JSON object"),
        (lambda p: (p / "model-00001-of-00012.safetensors").write_bytes(b"\x08"), "model-00001-of-00012.safetensors"),
    ],
)
def test_damaged_files_are_named(tmp_path, damage, message):
    """A damaged index, config.json or shard: an HFCheckpointError naming the file (a KeyError,
    AttributeError or safetensors' own error before)."""
    path = tmp_path / "m"
    hf_model("llama").save_pretrained(path, max_shard_size="30KB")
    damage(path)
    with pytest.raises(HFCheckpointError, match=message):
        from_hf(path)


def test_train_from_a_damaged_folder_is_refused(tmp_path, capsys):
    """`ember train --model.init_from` on a damaged shard: exit 1 naming the file, no run folder
    (a traceback from safetensors before)."""
    src = tmp_path / "src"
    hf_model("llama", vocab_size=VOCAB).save_pretrained(src)
    (src / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes()[:100])
    args = [*BASE, f"--job.dir={tmp_path}", "--job.name=run", f"--model.init_from={src}"]
    assert ember_main(["train", *args]) == 1
    assert "model.safetensors: not a readable safetensors file" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
