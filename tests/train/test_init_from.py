"""`ember train --model.init_from=`: runs that start from a tiny Hugging Face checkpoint (built
by transformers in the test), with each ember family switched on, under FSDP2, exported back;
bad inputs are refused before any run folder exists."""

import json

import pytest
import torch
import torch.nn.functional as F

from ember.cli import main as ember_main
from ember.data.loader import parse_sources, validation_batches
from ember.train import ConfigError, parse_config, train

from .helpers import TINY, cli, losses
from .test_hf_import import FAMILIES, hf_model

transformers = pytest.importorskip("transformers")

VOCAB = 300  # the byte data's 257 ids fit in it
BASE = [f for f in TINY if not f.startswith("--model.")]  # the size comes from the checkpoint


def flags(tmp, name, *extra):
    return [*BASE, f"--job.dir={tmp}", f"--job.name={name}", *extra]


def run(tmp, name, *extra):
    summary = train(parse_config(flags(tmp, name, *extra)))
    summary["losses"] = losses(tmp / name)
    return summary


def checkpoint(tmp_path, family="llama", **changes):
    path = tmp_path / f"hf-{family}"
    if not path.exists():
        hf_model(family, seed=11, vocab_size=VOCAB, **changes).save_pretrained(path)
    return path


def hf_val_loss(path, seq_len=64, batch_size=8, batches=1) -> float:
    """Transformers' mean cross-entropy on the run's validation windows (the built-in corpus)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(path).float().eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for b in validation_batches(parse_sources("stdlib")[0], seq_len, batch_size, batches):
            logits = model(b[:, :-1]).logits
            total += F.cross_entropy(logits.flatten(0, 1).double(), b[:, 1:].flatten(), reduction="sum").item()
            count += b[:, 1:].numel()
    return total / count


def val_rows(run_dir):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "val_loss" in r]


# --- refused before any run folder ---------------------------------------------------------


def exported(run_dir, out_dir):
    """The export of `run_dir` in `out_dir`, loaded by transformers, checked to compute the run's logits."""
    from ember.train.evaluate import load_model

    back = transformers.AutoModelForCausalLM.from_pretrained(out_dir).eval()
    model, _, _ = load_model(run_dir)
    x = torch.randint(0, 257, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(x)
        assert ((back(x).logits - want).abs().max() / want.abs().max()).item() <= 1e-5
    return back


def refused(tmp_path, *extra) -> str:
    with pytest.raises(ConfigError) as info:
        train(parse_config(flags(tmp_path, "bad", *extra)))
    assert not (tmp_path / "bad").exists()
    return str(info.value)


def test_contradicting_size_flags(tmp_path):
    path = checkpoint(tmp_path)
    msg = refused(tmp_path, f"--model.init_from={path}", "--model.dim=64", "--model.n_layers=3")
    assert "model.n_layers=3 (the checkpoint has 2)" in msg and "model.dim" not in msg.split("contradict it")[1]
    msg = refused(tmp_path, f"--model.init_from={path}", "--model.vocab_size=400")
    assert "model.vocab_size=400 (the checkpoint has 300)" in msg


def test_vocabulary_mismatch(tmp_path):
    path = tmp_path / "small"
    hf_model("qwen2", vocab_size=200).save_pretrained(path)
    msg = refused(tmp_path, f"--model.init_from={path}")
    assert "data's vocabulary (257 ids" in msg and "larger than the model's" in msg and "(200)" in msg


def test_missing_unknown_and_wrong_dtype(tmp_path):
    assert "no such folder" in refused(tmp_path, f"--model.init_from={tmp_path}/absent")
    path = checkpoint(tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "architectures": ["PhiForCausalLM"]}))
    assert "'PhiForCausalLM' is not supported" in refused(tmp_path, f"--model.init_from={path}")
    (path / "config.json").write_text(json.dumps({**cfg, "rope_parameters": {"rope_type": "yarn", "factor": 2.0}}))
    assert f"model.init_from={path}: RoPE scaling type 'yarn'" in refused(tmp_path, f"--model.init_from={path}")
    (path / "config.json").write_text(json.dumps(cfg))
    from safetensors.torch import load_file, save_file

    sd = load_file(str(path / "model.safetensors"))
    save_file(
        {**sd, "model.norm.weight": sd["model.norm.weight"].to(torch.float8_e4m3fn)}, str(path / "model.safetensors")
    )
    assert "model.norm.weight is F8_E4M3, not a float tensor" in refused(tmp_path, f"--model.init_from={path}")
    (path / "model.safetensors").unlink()
    assert "no model.safetensors" in refused(tmp_path, f"--model.init_from={path}")


def test_cli_error_and_no_folder(tmp_path):
    assert ember_main(["train", *flags(tmp_path, "bad", f"--model.init_from={tmp_path}/absent")]) == 1
    assert not (tmp_path / "bad").exists()


# --- runs ----------------------------------------------------------------------------------

FEATURES = {  # each family with one of ember's switches: (flags, step-0 loss tolerance or None)
    "llama": (["--float8.recipe=tensorwise"], 5e-2),  # fp8 GEMMs round the step-0 forward
    "mistral": (["--optimizer.name=apollo_mini", "--optimizer.lr=1e-2"], 1e-5),
    "qwen2": (["--sparsity.target=0.5"], None),  # pruned before the first evaluation
    "qwen3": ([], 1e-5),  # token weights: below
}


@pytest.mark.slow
@pytest.mark.parametrize("family", FEATURES)
def test_init_from_each_family(tmp_path, family):
    path = checkpoint(tmp_path, family)
    extra, tol = FEATURES[family]
    out = run(tmp_path, family, f"--model.init_from={path}", *extra, "--checkpoint.export_safetensors=true")
    rows = val_rows(tmp_path / family)
    assert rows[0]["step"] == 0 and rows[-1]["step"] == 6
    if tol is not None:  # the run starts from the checkpoint's weights
        assert rows[0]["val_loss"] == pytest.approx(hf_val_loss(path), rel=tol)
    assert all(map(lambda v: v == v, out["losses"].values())) and out["losses"][6] < out["losses"][1]
    if family == "qwen2":
        report = json.loads((tmp_path / family / "sparsity.json").read_text())
        assert report["density"] == pytest.approx(0.5, abs=0.02)
    # the trained weights (pruned ones as zeros) back in the source's architecture
    assert ember_main(["export", str(tmp_path / family), str(tmp_path / "out")]) == 0
    back = exported(tmp_path / family, tmp_path / "out")
    assert type(back).__name__ == FAMILIES[family][1]


@pytest.mark.slow
def test_init_from_token_weights_and_export(tmp_path):
    """PRIOR weights scored by an init_from run, a weighted init_from run, both exported back."""
    from ember.train.score import score

    path = checkpoint(tmp_path, "qwen3")
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        "".join(json.dumps({"text": f"def f{i}(x):\n    return x * {i} + {i * i}\n" * 3}) + "\n" for i in range(300))
    )
    assert (
        ember_main(["prepare", str(docs), "--out", str(tmp_path / "tok"), "--workers", "1", "--val-per-mille", "100"])
        == 0
    )
    src = [f"--data.sources={tmp_path}/tok", f"--model.init_from={path}"]
    run(tmp_path, "ref", *src)
    score(tmp_path / "ref", tmp_path / "tok", 1.0, 8, torch.device("cpu"))
    weighted = run(tmp_path, "w", *src, f"--loss.token_weights={tmp_path}/tok")
    plain = run(tmp_path, "p", *src)
    assert weighted["losses"][1] != plain["losses"][1]
    # export: the source's architecture and tensor names, equal logits, fp32 unless asked
    assert ember_main(["export", str(tmp_path / "w"), str(tmp_path / "out")]) == 0
    back = exported(tmp_path / "w", tmp_path / "out")
    assert type(back).__name__ == "Qwen3ForCausalLM" and back.dtype == torch.float32
    from safetensors import safe_open

    with (
        safe_open(str(path / "model.safetensors"), "pt") as a,
        safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as b,
    ):
        assert set(a.keys()) == set(b.keys())
    assert ember_main(["export", str(tmp_path / "w"), str(tmp_path / "half"), "--dtype", "bf16"]) == 0
    size = lambda d: (d / "model.safetensors").stat().st_size  # noqa: E731
    assert abs(size(tmp_path / "half") / size(tmp_path / "out") - 0.5) < 0.01
    assert ember_main(["export", str(tmp_path / "w"), str(tmp_path / "bad"), "--dtype", "int4"]) == 1
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_scratch_run_exports_as_llama(tmp_path):
    run(tmp_path, "s", "--training.steps=2", "--model.dim=64", "--model.n_layers=2", "--model.n_heads=4")
    assert ember_main(["export", str(tmp_path / "s"), str(tmp_path / "out")]) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["eos_token_id"] == 256
    exported(tmp_path / "s", tmp_path / "out")


@pytest.mark.slow
def test_fsdp_two_processes_equal_one(tmp_path):
    """Each rank loads its own slices of a sharded checkpoint; the losses equal one process's."""
    path = tmp_path / "sharded"
    hf_model("qwen2", seed=4, vocab_size=VOCAB).save_pretrained(path, max_shard_size="40KB")
    one = run(tmp_path, "one", f"--model.init_from={path}", "--training.steps=4")["losses"]
    r = cli(
        "train",
        *flags(tmp_path, "two", f"--model.init_from={path}", "--training.steps=4", "--training.parallel=fsdp"),
        nproc=2,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    two = losses(tmp_path / "two")
    assert list(two) == list(one)
    for k in one:
        assert two[k] == pytest.approx(one[k], rel=1e-5, abs=1e-6)
    assert val_rows(tmp_path / "two")[0]["val_loss"] == pytest.approx(hf_val_loss(path), rel=1e-5)


READS = """
import json, sys
import safetensors
from ember.train import distributed, parse_config
from ember.train.build import build_model, model_config

real_open, read = safetensors.safe_open, []

class Slice:
    def __init__(self, name, s):
        self.name, self.s = name, s
    def get_shape(self):
        return self.s.get_shape()
    def get_dtype(self):
        return self.s.get_dtype()
    def __getitem__(self, index):
        t = self.s[index]
        read.append(t.numel())
        return t

class File:  # safe_open that counts the elements read
    def __init__(self, *args, **kwargs):
        self.f = real_open(*args, **kwargs)
    def __enter__(self):
        self.f.__enter__()
        return self
    def __exit__(self, *exc):
        return self.f.__exit__(*exc)
    def keys(self):
        return self.f.keys()
    def get_slice(self, name):
        return Slice(name, self.f.get_slice(name))
    def get_tensor(self, name):
        t = self.f.get_tensor(name)
        read.append(t.numel())
        return t

safetensors.safe_open = File
cfg = parse_config(["--model.init_from=" + sys.argv[1], "--training.parallel=fsdp", "--job.device=cpu", "--data.seq_len=64"])
d = distributed.init("cpu")
model = build_model(cfg, model_config(cfg, 257), d).model
total = sum(p.numel() for p in model.parameters())
# one file per rank: lines two ranks print to one pipe can interleave
with open(f"{sys.argv[2]}/reads{d.rank}.json", "w") as out:
    json.dump({"rank": d.rank, "read": sum(read), "total": total}, out)
distributed.shutdown()
"""


@pytest.mark.slow
def test_fsdp_ranks_read_only_their_slices(tmp_path):
    """Under FSDP2 each rank reads about half of every tensor from the files, not the whole model."""
    import subprocess
    import sys

    from .helpers import cli_env

    path = tmp_path / "hf"
    hf_model("llama", seed=2, vocab_size=VOCAB).save_pretrained(path, max_shard_size="40KB")
    script = tmp_path / "reads.py"
    script.write_text(READS)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            str(script),
            str(path),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=cli_env(),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    reads = [json.loads((tmp_path / f"reads{rank}.json").read_text()) for rank in (0, 1)]
    assert sorted(x["rank"] for x in reads) == [0, 1]
    total = reads[0]["total"]
    assert sum(x["read"] for x in reads) == total  # together, every element once
    assert all(x["read"] <= total * 0.55 for x in reads)


@pytest.mark.slow
def test_init_from_run_resumes_exactly(tmp_path):
    path = checkpoint(tmp_path, "qwen3")
    whole = run(tmp_path, "a", f"--model.init_from={path}", "--checkpoint.every=3", "--checkpoint.keep=0")["losses"]
    ckpt = next(p for p in (tmp_path / "a" / "checkpoints").iterdir() if p.name.endswith("3"))
    resumed = run(tmp_path, "b", f"--model.init_from={path}", f"--checkpoint.resume={ckpt}")["losses"]
    assert list(resumed) == [4, 5, 6]  # it started from the checkpoint, not from the HF weights
    assert [resumed[k] for k in (4, 5, 6)] == [whole[k] for k in (4, 5, 6)]
