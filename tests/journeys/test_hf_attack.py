"""Hugging Face folders as they come from the wild, and the misuses of continual pre-training:
each gives transformers' answer, or a refusal naming the file or flag before anything is written
(never a traceback, never other weights than transformers loads)."""

import json
import shutil

import pytest
import torch

from ember.cli import main as ember_main
from ember.models import from_hf, to_hf
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


def test_tied_checkpoint_that_saved_the_head_only(tmp_path):
    """A tied model saved with lm_head.weight and no model.embed_tokens.weight: transformers ties
    the embedding to the saved head, and so does from_hf (it refused the embedding as missing)."""
    from safetensors.torch import load_file, save_file

    path = tmp_path / "m"
    hf_model("qwen2").save_pretrained(path)  # tie_word_embeddings=true
    tensors = load_file(str(path / "model.safetensors"))
    tensors["lm_head.weight"] = tensors.pop("model.embed_tokens.weight")
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    same_logits(path)
    assert from_hf(path).config.tie_embeddings


def test_a_tensor_in_two_shards_is_refused(tmp_path):
    """A tensor that two of the listed files hold (with other values): transformers takes the last
    file's silently; from_hf refuses, naming both files."""
    from safetensors.torch import load_file, save_file

    path = tmp_path / "m"
    hf_model("llama").save_pretrained(path, max_shard_size="30KB")
    first = sorted(path.glob("model-*.safetensors"))[0]
    tensors = load_file(str(first))
    tensors["model.norm.weight"] = torch.full((64,), 7.0)
    save_file(tensors, str(first), metadata={"format": "pt"})
    with pytest.raises(HFCheckpointError, match=f"model.norm.weight is in both {first.name} and model-"):
        from_hf(path)


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


# --- the data's tokenizer and the model's -----------------------------------------------------


def test_data_of_another_tokenizer_than_the_models_is_refused(tmp_path, capsys):
    """A checkpoint that ships its tokenizer.json, and data made without it (`ember prepare`
    without --tokenizer: bytes; the built-in corpus; another tokenizer of the same size): its ids
    name other tokens, and training would silently unlearn the model. Refused, naming the fix,
    before the run folder; data made with the model's own tokenizer passes."""
    from ember.train import parse_config
    from ember.train.preflight import check_config
    from tests.train.test_hf_tokenizer import TEXTS, model_folder

    src = model_folder(tmp_path)  # a BPE tokenizer.json of 300 ids
    hf_model("llama", vocab_size=VOCAB).save_pretrained(src)
    (tmp_path / "tok2").mkdir()
    other = model_folder(tmp_path / "tok2")  # the same tokenizer with two ids swapped
    tok = json.loads((other / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    (other / "tokenizer.json").write_text(json.dumps(tok))
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t * 4}) + "\n" for t in TEXTS))
    for name, tok in (("own", [f"--tokenizer={src}"]), ("bytes", []), ("other", [f"--tokenizer={other}"])):
        assert ember_main(["prepare", str(docs), "--out", str(tmp_path / name), "--workers=1", *tok]) == 0
    args = [*BASE, f"--job.dir={tmp_path}", "--job.name=run", f"--model.init_from={src}"]
    check_config(parse_config([*args, f"--data.sources={tmp_path}/own"]))
    capsys.readouterr()
    for data in ("bytes", "other"):
        assert ember_main(["train", *args, f"--data.sources={tmp_path}/{data}"]) == 1
        err = capsys.readouterr().err
        assert f"{tmp_path}/{data}" in err and "not the tokenizer of model.init_from" in err
        assert f"ember prepare --tokenizer {src}" in err
    assert ember_main(["train", *args]) == 1  # the built-in corpus, in bytes
    assert "not the tokenizer of model.init_from" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_damaged_tokenizer_in_the_checkpoint_is_named(tmp_path, capsys):
    """A checkpoint folder whose tokenizer.json does not parse: `ember train` exits 1 naming the
    file, before the run folder (the tokenizer check raised the tokenizers library's Exception)."""
    src = tmp_path / "src"
    hf_model("llama", vocab_size=VOCAB).save_pretrained(src)
    (src / "tokenizer.json").write_text("{")
    args = [*BASE, f"--job.dir={tmp_path}", "--job.name=run", f"--model.init_from={src}"]
    assert ember_main(["train", *args]) == 1
    assert f"{src / 'tokenizer.json'}: not a tokenizer.json" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_an_ember_run_or_checkpoint_as_the_folder(tmp_path):
    """A run folder without a config.json (checkpoint.export_safetensors=false) or one of its
    checkpoints passed to from_hf: the error says what it is and points to `ember export` (it said
    only "no config.json")."""
    (tmp_path / "run" / "checkpoints" / "step-00000002").mkdir(parents=True)
    (tmp_path / "run" / "config.toml").write_text("[model]\n")
    (tmp_path / "run" / "checkpoints" / "step-00000002" / "meta.json").write_text("{}")
    for folder in (tmp_path / "run", tmp_path / "run" / "checkpoints" / "step-00000002"):
        with pytest.raises(FileNotFoundError, match="no config.json: an ember run or checkpoint.*ember export"):
            from_hf(folder)


def test_a_peft_adapter_as_the_folder(tmp_path, capsys):
    """A LoRA adapter folder (adapter_config.json, adapter_model.safetensors, no config.json)
    passed as the model: the error says it is an adapter and how to merge it (it said only "no
    config.json"), and `ember train` refuses it before the run folder."""
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "x"}))
    with pytest.raises(FileNotFoundError, match="a PEFT adapter.*merge_and_unload"):
        from_hf(adapter)
    args = [*BASE, f"--job.dir={tmp_path}", "--job.name=run", f"--model.init_from={adapter}"]
    assert ember_main(["train", *args]) == 1
    assert "a PEFT adapter" in capsys.readouterr().err and not (tmp_path / "run").exists()


# --- config.json as people write it --------------------------------------------------------


def test_architectures_as_a_string(tmp_path):
    """ "architectures": "LlamaForCausalLM" (not a list): transformers builds the Llama, and so does
    from_hf (it read the first letter, 'L', and refused it)."""
    path = tmp_path / "m"
    hf_model("llama").save_pretrained(path)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "architectures": "LlamaForCausalLM"}))
    same_logits(path)


@pytest.mark.parametrize("name, dtype", [("half", torch.float16), ("float", torch.float32), ("double", torch.float64)])
def test_dtype_by_torchs_other_names(tmp_path, name, dtype):
    """config.json's dtype as torch names it too ("half", "float"): transformers loads in that
    dtype (getattr(torch, name)), and so does from_hf (it refused them as not float dtypes)."""
    path = tmp_path / "m"
    hf_model("llama").save_pretrained(path)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "dtype": name}))
    assert transformers.AutoModelForCausalLM.from_pretrained(path).dtype == dtype
    assert from_hf(path).tok_embeddings.weight.dtype == dtype


def test_sequences_past_max_position_embeddings(tmp_path):
    """from_hf builds RoPE tables for the config's max_position_embeddings; a longer sequence is
    refused saying how to get longer tables (the error named no way out), and with max_seq_len it
    computes what transformers does (plain RoPE has no length limit there)."""
    path = tmp_path / "m"
    hf_model("mistral", max_position_embeddings=16).save_pretrained(path)
    x = tokens(n=40)
    with pytest.raises(ValueError, match=r"exceeds max_seq_len 16.*from_hf\(path, max_seq_len=40\)"):
        from_hf(path)(x)
    ref = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        assert rel_err(from_hf(path, max_seq_len=40)(x), hf_logits(ref, x)) <= 1e-4


def test_heads_that_do_not_group_name_the_checkpoint(tmp_path, capsys):
    """num_key_value_heads that does not divide num_attention_heads: an HFCheckpointError that
    names the config keys (a bare LlamaConfig ValueError before), and `ember train` refuses it
    naming model.init_from, before the run folder."""
    path = tmp_path / "m"
    hf_model("llama", vocab_size=VOCAB).save_pretrained(path)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "num_key_value_heads": 3}))
    with pytest.raises(HFCheckpointError, match="from_hf: .*num_attention_heads=4.*num_key_value_heads=3"):
        from_hf(path)
    args = [*BASE, f"--job.dir={tmp_path}", "--job.name=run", f"--model.init_from={path}"]
    assert ember_main(["train", *args]) == 1
    assert f"model.init_from={path}" in capsys.readouterr().err and not (tmp_path / "run").exists()


# --- export ------------------------------------------------------------------------------------


def test_export_into_the_working_directory(tmp_path, monkeypatch):
    """to_hf(model, ".") from inside an empty folder: refused, naming the folder, and nothing is
    written (an OSError from rmdir('.') before; removing the folder would leave the shell in a
    deleted directory)."""
    hf_model("llama").save_pretrained(tmp_path / "src")
    model = from_hf(tmp_path / "src")
    (tmp_path / "hf").mkdir()
    monkeypatch.chdir(tmp_path / "hf")
    with pytest.raises(ValueError, match="to_hf: . is the working directory"):
        to_hf(model, ".")
    assert not any((tmp_path / "hf").iterdir()) and sorted(p.name for p in tmp_path.iterdir()) == ["hf", "src"]
    to_hf(model, "../out")
    same_logits(tmp_path / "out")


@pytest.mark.slow
def test_export_arguments_are_checked_first(tmp_path, monkeypatch, capsys):
    """`ember export RUN .` from an empty folder and a --max-shard-gb that is not a positive
    number: exit 1 naming the argument, nothing written (a traceback before: OSError from
    rmdir('.'), OverflowError for inf); a relative OUT_DIR from another folder works."""
    from tests.journeys.test_hf_journeys import train_from

    hf_model("llama", vocab_size=VOCAB).save_pretrained(tmp_path / "src")
    run = train_from(tmp_path, tmp_path / "src")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    capsys.readouterr()
    assert ember_main(["export", run, "."]) == 1
    assert "is the working directory" in capsys.readouterr().err
    for size in ("inf", "nan", "0", "-1"):
        assert ember_main(["export", run, "../out", "--max-shard-gb", size]) == 1
        assert "--max-shard-gb must be a positive number of GiB" in capsys.readouterr().err
    assert not any((tmp_path / "cwd").iterdir()) and not (tmp_path / "out").exists()
    assert ember_main(["export", run, "../out", "--max-shard-gb", "0.00002"]) == 0
    assert len(list((tmp_path / "out").glob("model-*.safetensors"))) > 2
    transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")


@pytest.mark.slow
def test_export_keeps_the_chat_template(tmp_path):
    """transformers 5 saves a tokenizer's chat template as chat_template.jinja (no longer in
    tokenizer_config.json): a run on data prepared with the model's folder exports it with the
    tokenizer, so AutoTokenizer loads the template the source had (it had none)."""
    from tests.journeys.test_hf_journeys import train_from
    from tests.train.test_hf_tokenizer import TEXTS, model_folder

    src = model_folder(tmp_path)
    hf_model("llama", vocab_size=VOCAB).save_pretrained(src)
    tok = transformers.AutoTokenizer.from_pretrained(src)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}</s>{% endfor %}"
    tok.save_pretrained(src)
    assert (src / "chat_template.jinja").is_file()
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t * 4}) + "\n" for t in TEXTS))
    prepare = ["prepare", str(docs), "--out", str(tmp_path / "tok"), f"--tokenizer={src}", "--workers=1"]
    assert ember_main([*prepare, "--val-per-mille=100"]) == 0
    run = train_from(tmp_path, src, "run", f"--data.sources={tmp_path}/tok")
    assert ember_main(["export", run, str(tmp_path / "out")]) == 0
    back = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert back.chat_template == tok.chat_template
    chat = [{"role": "user", "content": "hi"}]
    assert back.apply_chat_template(chat, tokenize=False) == tok.apply_chat_template(chat, tokenize=False)


@pytest.mark.slow
def test_relative_init_from_resumes_from_another_directory(tmp_path, monkeypatch):
    """A run started with --model.init_from=src (relative) names it absolutely, as it names its
    data: `ember train --config RUN/config.toml` from another directory goes on from the same
    folder (it looked for src there: refused when absent, another model's when present)."""
    hf_model("llama", vocab_size=VOCAB).save_pretrained(tmp_path / "src")
    monkeypatch.chdir(tmp_path)
    run = ["train", *BASE, "--job.dir=runs", "--job.name=r", "--model.init_from=src", "--training.steps=2"]
    assert ember_main(run) == 0
    toml = (tmp_path / "runs" / "r" / "config.toml").read_text()
    assert f'init_from = "{tmp_path / "src"}"' in toml
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    resume = ["train", f"--config={tmp_path}/runs/r/config.toml", "--checkpoint.resume=latest", "--training.steps=3"]
    assert ember_main(resume) == 0
