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
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"def f{i}(x):\n    return x * {i}\n" * 9}) + "\n" for i in range(40)))
    assert ember_main(["prepare", str(docs), "--out", str(tmp_path / "tok"), "--workers", "1"]) == 0
    capsys.readouterr()
    assert ember_main(["score", run, "--data", str(tmp_path / "tok"), "--seq-len", "128"]) == 1
    assert "sliding window of 64 tokens" in capsys.readouterr().err
    assert ember_main(["eval", run, "--data.seq_len=32"]) == 0  # within the window: what transformers computes
    assert ember_main(["eval", run, "--model.n_layers=3"]) == 1  # the checkpoint's model, not another
    assert "model.n_layers" in capsys.readouterr().err


# --- generation settings ---------------------------------------------------------------------

GENERATION = dict(
    do_sample=True, temperature=0.7, top_p=0.9, repetition_penalty=1.3, bos_token_id=1, eos_token_id=[2, 7]
)


def with_generation(path, family="llama", **changes):
    """A saved tiny model whose generation_config.json has sampling defaults and two end ids."""
    model = hf_model(family, **changes)
    model.generation_config = transformers.GenerationConfig(**GENERATION)
    model.save_pretrained(path)
    return path


def generation_of(path) -> dict:
    gen = json.loads((path / "generation_config.json").read_text())
    return {k: v for k, v in gen.items() if k != "transformers_version"}


@torch.no_grad()
def always_predicts(model, token: int):
    """Make ember's model predict `token` after anything: blocks that add nothing, a residual
    stream whose first channel is large, and a head that reads only that channel."""
    for layer in model.layers:
        layer.attention.wo.weight.zero_()
        layer.feed_forward.w2.weight.zero_()
    model.tok_embeddings.weight[:, 0] = 10.0
    model.norm.weight.zero_()
    model.norm.weight[0] = 1.0
    model.output.weight.zero_()
    model.output.weight[token, 0] = 1.0


def test_from_hf_to_hf_keeps_generation_config(tmp_path):
    """The exported folder has the source's generation_config.json, and transformers' generate
    stops at its second end id (7), which config.json does not name."""
    src = with_generation(tmp_path / "src")
    model = from_hf(src)
    always_predicts(model, 7)
    to_hf(model, tmp_path / "out")
    assert generation_of(tmp_path / "out") == generation_of(src)
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert back.generation_config.repetition_penalty == 1.3 and back.generation_config.eos_token_id == [2, 7]
    out = back.generate(tokens(n=5, batch=1), max_new_tokens=6, do_sample=False)
    assert out.shape == (1, 6) and out[0, -1] == 7  # one new token: the end


def test_scratch_export_writes_generation_config(tmp_path):
    """A model trained from scratch gets a generation_config.json with its tokenizer's ids."""
    from ember.models import CONFIGS, Llama

    with torch.device("meta"):
        model = Llama(CONFIGS["debug"].replace(dim=64, n_layers=2, n_heads=4, ffn_hidden=96, tie_embeddings=False))
    model.to_empty(device="cpu").init_weights(seed=0)
    always_predicts(model, 256)
    to_hf(model, tmp_path / "out", eos_token_id=256)
    assert generation_of(tmp_path / "out") == {"eos_token_id": 256}
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert back.generate(tokens(n=5, batch=1), max_new_tokens=6, do_sample=False).shape == (1, 6)
    x = tokens(vocab=257)
    with torch.no_grad():  # and back into ember: the same model
        assert torch.equal(from_hf(tmp_path / "out")(x), model(x))


@pytest.mark.slow
def test_export_of_a_run_keeps_generation_config(tmp_path):
    """`ember export` of a run from a Hugging Face folder carries the folder's generation settings."""
    src = with_generation(tmp_path / "src", vocab_size=VOCAB)
    run = train_from(tmp_path, src)
    assert ember_main(["export", run, str(tmp_path / "out")]) == 0
    assert generation_of(tmp_path / "out") == generation_of(src)


@pytest.mark.slow
def test_scratch_run_export_has_its_tokenizers_ids(tmp_path):
    """A run from scratch on data of a Hugging Face tokenizer: generation_config.json has that
    tokenizer's end and beginning of document ids."""
    from ember.data import load_tokenizer
    from tests.train.test_hf_tokenizer import TEXTS, model_folder

    folder = model_folder(tmp_path)
    tok = load_tokenizer(str(folder))
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t * 4}) + "\n" for t in TEXTS))
    prepare = ["prepare", str(docs), "--out", str(tmp_path / "tok"), "--tokenizer", str(folder), "--workers", "1"]
    assert ember_main([*prepare, "--val-per-mille", "100"]) == 0
    args = [*TINY, f"--job.dir={tmp_path}", "--job.name=s", f"--data.sources={tmp_path}/tok", "--training.steps=2"]
    assert ember_main(["train", *args]) == 0
    assert ember_main(["export", str(tmp_path / "s"), str(tmp_path / "out")]) == 0
    assert generation_of(tmp_path / "out") == {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id}


# --- folders handed over by mistake -----------------------------------------------------------


def test_tied_config_with_a_distinct_head_computes_as_transformers(tmp_path):
    """A config that ties the head, saved with both tensors and different values: transformers
    keeps both (untied), and so does from_hf; export says so in config.json."""
    from safetensors.torch import load_file, save_file

    path = tmp_path / "tied"
    hf_model("qwen2").save_pretrained(path)  # tie_word_embeddings=true
    sd = load_file(str(path / "model.safetensors"))
    sd["lm_head.weight"] = torch.randn_like(sd["model.embed_tokens.weight"]) * 0.1
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    ref = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    x = tokens()
    model = from_hf(path)
    assert not model.config.tie_embeddings
    with torch.no_grad():
        assert rel_err(model(x), hf_logits(ref, x)) <= 1e-4
    to_hf(model, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["tie_word_embeddings"] is False
    with torch.no_grad():
        back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
        assert rel_err(hf_logits(back, x), hf_logits(ref, x)) <= 1e-5
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"].clone()  # the same values: tied, as before
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    assert from_hf(path).config.tie_embeddings


def test_round_trip_and_bf16(tmp_path):
    """from_hf → to_hf → from_hf gives the same logits bit for bit; a bf16 checkpoint stays bf16
    (config.json's dtype says so on export) and equals transformers in fp32."""
    hf_model("qwen3").to(torch.bfloat16).save_pretrained(tmp_path / "src")
    a = from_hf(tmp_path / "src")
    assert a.tok_embeddings.weight.dtype == torch.bfloat16
    to_hf(a, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"
    b = from_hf(tmp_path / "out")
    x = tokens()
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
        assert rel_err(from_hf(tmp_path / "out", dtype="fp32")(x), hf_logits(ref, x)) <= 1e-4


def test_pytorch_bin_only_and_names_not_in_cache(tmp_path, monkeypatch, capsys):
    path = tmp_path / "bin"
    model = hf_model("llama")
    model.save_pretrained(path)
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    (path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="found pytorch_model.bin.*save_pretrained"):
        from_hf(path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    args = [*BASE, f"--job.dir={tmp_path}", "--job.name=r", "--model.init_from=org/absent"]
    assert ember_main(["train", *args]) == 1
    assert "'org/absent'" in capsys.readouterr().err and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_export_into_used_folders(tmp_path, capsys):
    """A non-empty folder and the run's checkpoints folder (which training prunes and rewinds)
    are refused before the model is read; a folder beside the checkpoints, in the run, is fine."""
    src = tmp_path / "src"
    hf_model("llama", vocab_size=VOCAB).save_pretrained(src)
    run = train_from(tmp_path, src)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert ember_main(["export", run, str(tmp_path / "used")]) == 1
    assert "not empty" in capsys.readouterr().err and (tmp_path / "used" / "notes.txt").read_text() == "mine"
    inside = f"{run}/checkpoints/step-00000002/hf"
    assert ember_main(["export", run, inside]) == 1
    assert "checkpoints" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints" / "step-00000002" / "hf").exists()
    assert ember_main(["export", run, f"{run}/hf"]) == 0
    transformers.AutoModelForCausalLM.from_pretrained(f"{run}/hf")


def test_wrong_things_passed_as_the_folder(tmp_path, monkeypatch):
    """Its config.json instead of the folder, an ember run folder (its config.json is ember's),
    and a cache whose `main` names a snapshot that is gone (another revision is there): each
    refused, saying what was found."""
    from ember.models import CONFIGS

    path = tmp_path / "m"
    hf_model("llama").save_pretrained(path)
    with pytest.raises(FileNotFoundError, match="config.json is a file: pass its folder"):
        from_hf(path / "config.json")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(CONFIGS["debug"].to_dict()))
    with pytest.raises(HFCheckpointError, match="not a Hugging Face model folder.*ember export"):
        from_hf(run)
    repo = tmp_path / "hub" / "models--org--m"
    (repo / "snapshots").mkdir(parents=True)
    (path).rename(repo / "snapshots" / "old")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("new")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="refs/main names snapshot 'new'.*not there"):
        from_hf("org/m")


@pytest.mark.slow
def test_run_outlives_its_source_folder(tmp_path, capsys):
    """A run keeps its source's config.json and generation_config.json (RUN/init_from/): once the
    Hugging Face folder is gone (or replaced by another model), eval and export still build the
    model the run trained."""
    import shutil

    src = with_generation(tmp_path / "src", vocab_size=VOCAB)
    run = train_from(tmp_path, src)
    capsys.readouterr()
    assert ember_main(["eval", run]) == 0
    before = json.loads(capsys.readouterr().out.splitlines()[-1])["val_loss"]
    shutil.rmtree(src)
    hf_model("qwen3", vocab_size=VOCAB).save_pretrained(src)  # another model under the same name
    assert ember_main(["eval", run]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["val_loss"] == before
    shutil.rmtree(src)
    assert ember_main(["export", run, str(tmp_path / "out")]) == 0
    assert generation_of(tmp_path / "out") == generation_of(tmp_path / "run" / "init_from")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert type(back).__name__ == "LlamaForCausalLM" and back.generation_config.eos_token_id == [2, 7]


@pytest.mark.slow
def test_resume_refuses_a_changed_source(tmp_path, capsys):
    """Resuming reads the source folder again: one whose config.json changed since the run
    started (another RoPE base) is refused, naming the key, before anything is made."""
    src = tmp_path / "src"
    hf_model("llama", vocab_size=VOCAB).save_pretrained(src)
    run = train_from(tmp_path, src)
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(
        json.dumps({**cfg, "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}})
    )
    capsys.readouterr()
    args = [*BASE, f"--job.dir={tmp_path}", "--job.name=run", f"--model.init_from={src}", "--training.steps=3"]
    assert ember_main(["train", *args, f"--checkpoint.resume={run}"]) == 1
    assert "rope_parameters" in capsys.readouterr().err
    (src / "config.json").write_text(json.dumps(cfg))
    assert ember_main(["train", *args, f"--checkpoint.resume={run}"]) == 0
