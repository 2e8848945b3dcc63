"""Integration: short training jobs on the CPU (each a few seconds)."""

import json

import pytest
import torch

from ember.train import ConfigError, TrainingError, parse_config, train
from ember.train import checkpoint as ckpt
from ember.train.build import lr_factor

from .helpers import cli, flags, losses, run

pytestmark = pytest.mark.slow


def test_loss_falls_and_the_run_folder_has_everything(tmp_path):
    s = run(
        tmp_path,
        "r",
        "--training.steps=30",
        "--optimizer.lr=0.01",
        "--eval.every=15",
        "--checkpoint.every=10",
        "--checkpoint.keep=2",
        "--metrics.plot=true",
        "--checkpoint.export_safetensors=true",
        "--metrics.tensorboard=true",
    )
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    assert len(val) == 3 and val[0] > 5.0 and val[-1] < val[0] - 1.5, val
    assert s["val_loss"] == val[-1]
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path / "r")] == ["step-00000020", "step-00000030"]
    for f in ("config.toml", "loss.png", "lr.png", "tokens_per_s.png", "model.safetensors", "config.json"):
        assert (tmp_path / "r" / f).is_file(), f
    assert parse_config(["--config", str(tmp_path / "r" / "config.toml")]).training.steps == 30
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "r" / "model.safetensors")
    assert "tok_embeddings.weight" in weights and "layers.1.feed_forward.w2.weight" in weights
    assert any((tmp_path / "r" / "tensorboard").iterdir()), "no TensorBoard events"


def test_trains_on_each_device(tmp_path, device):
    run(tmp_path, "d", f"--job.device={device}", "--training.steps=12", "--optimizer.lr=0.01", "--eval.every=12")
    rows = [json.loads(x) for x in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    assert val[-1] < val[0] - 0.5, val
    if device == "cuda":
        assert all(r["mem_gib"] > 0 for r in rows if "loss" in r)


def test_resume_reproduces_the_uninterrupted_losses_exactly(tmp_path):
    full = run(tmp_path, "full", "--training.steps=8", "--checkpoint.every=4", "--checkpoint.keep=0")["losses"]
    resumed = run(
        tmp_path, "resumed", "--training.steps=8", f"--checkpoint.resume={tmp_path}/full/checkpoints/step-00000004"
    )
    assert list(resumed["losses"]) == [5, 6, 7, 8]
    assert resumed["losses"] == {k: v for k, v in full.items() if k > 4}  # bit for bit
    # resuming "latest" in its own folder after the end trains nothing more and keeps the losses
    again = run(tmp_path, "full", "--training.steps=8", "--checkpoint.resume")
    assert again["step"] == 8 and again["losses"] == full


@pytest.mark.parametrize("name", ["apollo", "apollo_mini"])
def test_apollo_resume_reproduces_the_losses_exactly(tmp_path, name):
    # The projection refreshes every 3 steps: the resumed half redraws P from the seed alone.
    opts = [
        f"--optimizer.name={name}",
        "--optimizer.lr=0.01",
        "--optimizer.rank=4",
        "--optimizer.update_proj_gap=3",
        "--training.steps=8",
    ]
    full = run(tmp_path, "full", *opts, "--checkpoint.every=4", "--checkpoint.keep=0")["losses"]
    resumed = run(tmp_path, "resumed", *opts, f"--checkpoint.resume={tmp_path}/full/checkpoints/step-00000004")
    assert resumed["losses"] == {k: v for k, v in full.items() if k > 4}  # bit for bit
    assert full[8] < full[1]


def test_sparse_run_keeps_its_masks_and_reports_densities(tmp_path):
    from ember.sparse import SparseLinear
    from ember.train.evaluate import load_model

    run(tmp_path, "sp", "--training.steps=6", "--sparsity.target=0.75", "--sparsity.block=16", "--checkpoint.every=3")
    report = json.loads((tmp_path / "sp" / "sparsity.json").read_text())
    assert report["density"] == pytest.approx(0.25, abs=0.02) and report["layers"][0]["name"] == "layers.0.attention.wq"
    model, _, _ = load_model(tmp_path / "sp")
    sparse = [m for m in model.modules() if isinstance(m, SparseLinear)]
    assert len(sparse) == 7 * model.config.n_layers
    for m in sparse:  # after 6 AdamW steps the pruned weights are still exactly zero
        assert (m.weight[~m.dense_mask()] == 0).all()
    resumed = run(
        tmp_path,
        "sp2",
        "--training.steps=6",
        "--sparsity.target=0.75",
        "--sparsity.block=16",
        f"--checkpoint.resume={tmp_path}/sp/checkpoints/step-00000003",
    )
    assert resumed["losses"] == {k: v for k, v in losses(tmp_path / "sp").items() if k > 3}


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    a = run(tmp_path, "a")["losses"]
    b = run(tmp_path, "b", "--training.micro_batch_size=2")["losses"]
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-5)


@pytest.mark.parametrize(
    "switch",
    [
        ["--compile"],
        ["--activation_checkpointing"],
        ["--loss.fused_linear_ce=false"],
        ["--training.dtype=bf16"],
        ["--optimizer.name=sgd", "--optimizer.lr=0.3"],
        ["--optimizer.name=apollo", "--optimizer.lr=0.01", "--optimizer.rank=8", "--optimizer.update_proj_gap=2"],
        ["--optimizer.name=apollo_mini", "--optimizer.lr=0.01"],
        ["--sparsity.target=0.5", "--sparsity.method=er"],
        ["--lr_scheduler.decay=wsd"],
        ["--lr_scheduler.decay=linear", "--job.deterministic=true"],
    ],
)
def test_each_switch_trains(tmp_path, switch):
    s = run(tmp_path, "s", "--training.steps=4", *switch)
    assert len(s["losses"]) == 4 and all(torch.isfinite(torch.tensor(list(s["losses"].values()))))


@pytest.mark.parametrize("decay", ["cosine", "linear", "wsd", "constant"])
def test_schedules(decay):
    cfg = parse_config(
        [
            "--training.steps=100",
            "--lr_scheduler.warmup_steps=10",
            f"--lr_scheduler.decay={decay}",
            "--lr_scheduler.min_lr_ratio=0.1",
            "--lr_scheduler.decay_ratio=0.3",
        ]
    )
    f = [lr_factor(s, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b - 1e-12 for a, b in zip(f[9:], f[10:]))  # never rises after warmup
    end = {"constant": 1.0}.get(decay, 0.1)
    assert f[-1] == pytest.approx(end)
    if decay == "wsd":
        assert f[69] == 1.0 and f[71] < 1.0


def test_non_finite_loss_stops_the_step(tmp_path, monkeypatch):
    import ember.losses.lm as lm

    real, calls = lm.causal_lm_loss_sum, []

    def poisoned(*a, **k):
        calls.append(torch.is_grad_enabled())  # training calls, not evaluation
        out = real(*a, **k)
        return out * float("nan") if sum(calls) == 3 and calls[-1] else out

    monkeypatch.setattr(lm, "causal_lm_loss_sum", poisoned)
    with pytest.raises(TrainingError, match="step 3: non-finite loss .* the update was not applied"):
        run(tmp_path, "nan", "--training.steps=5")
    assert list(losses(tmp_path / "nan")) == [1, 2]


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--data.sources=/nonexistent/tokens", "/nonexistent/tokens: no such folder"),
        ("--model.name=huge", "model.name must be one of"),
        ("--training.batch_size=6", "training.micro_batch_size 4 must divide the per-rank batch 6"),
        ("--loss.token_weights=/tmp", "must also be a data source"),
        ("--checkpoint.resume=/nonexistent/run", "no such run or checkpoint folder"),
        ("--optimizer.lr=-1", "optimizer.lr must be > 0"),
    ],
)
def test_bad_configs_fail_before_any_work(tmp_path, flag, message):
    extra = ["--training.micro_batch_size=4"] if "batch_size=6" in flag else []
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        train(parse_config(flags(tmp_path, "bad", flag, *extra)))
    assert not (tmp_path / "bad").exists()


def test_existing_run_folder_is_not_overwritten(tmp_path):
    run(tmp_path, "x", "--training.steps=2")
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        run(tmp_path, "x", "--training.steps=2")


def test_crash_mid_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    run(tmp_path, "c", "--training.steps=4", "--checkpoint.every=2", "--checkpoint.keep=0")
    good = ckpt.find_checkpoint(tmp_path / "c")
    real_save = torch.save

    def crash(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(BaseException, match="power cut"):  # as it is, or wrapped by the sharded writer
        run(tmp_path, "c", "--training.steps=6", "--checkpoint.every=2", "--checkpoint.resume")
    monkeypatch.undo()
    assert ckpt.find_checkpoint(tmp_path / "c") == good
    assert any(p.name.startswith("step-00000006.tmp-") for p in (tmp_path / "c" / "checkpoints").iterdir())
    resumed = run(tmp_path, "c", "--training.steps=6", "--checkpoint.every=2", "--checkpoint.resume")
    assert resumed["step"] == 6
    assert not any(".tmp-" in p.name for p in (tmp_path / "c" / "checkpoints").iterdir())


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_gloo_processes_equal_one(tmp_path, parallel):
    one = run(tmp_path, "one", "--training.steps=4")["losses"]
    r = cli("train", *flags(tmp_path, "two", "--training.steps=4", f"--training.parallel={parallel}"), nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    two = losses(tmp_path / "two")
    assert list(two) == list(one)
    for k in one:
        assert two[k] == pytest.approx(one[k], rel=1e-5, abs=1e-6)
    # memory per rank, and the optimizer state one rank holds: FSDP2 shards it, DDP replicates it
    mem = [_step_rows(tmp_path / n)[-1] for n in ("one", "two")]
    assert len(mem[0]["peak_mem_gib_per_rank"]) == 1 and len(mem[1]["peak_mem_gib_per_rank"]) == 2
    assert all(g > 0 for g in mem[1]["peak_mem_gib_per_rank"])
    ratio = mem[1]["optimizer_state_bytes"] / mem[0]["optimizer_state_bytes"]
    assert ratio < 0.6 if parallel == "fsdp" else ratio == 1, ratio
    # a checkpoint written by 2 ranks resumes in 1 process
    resumed = run(
        tmp_path, "three", "--training.steps=4", f"--checkpoint.resume={tmp_path}/two/checkpoints/step-00000004"
    )
    assert resumed["step"] == 4


def _step_rows(run_dir):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_prepare_eval_score_and_weighted_training(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        "".join(json.dumps({"text": f"def f{i}(x):\n    return x * {i} + {i * i}\n" * 3}) + "\n" for i in range(400))
    )
    r = cli("prepare", str(docs), "--out", str(tmp_path / "tok"), "--workers", "2", "--val-per-mille", "100")
    assert r.returncode == 0, r.stderr
    ref = run(tmp_path, "ref", f"--data.sources={tmp_path}/tok")
    r = cli("eval", str(tmp_path / "ref"))  # the run's own validation set: the run's last val loss
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["step"] == 6 and result["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-6)
    r = cli("eval", str(tmp_path / "ref"), "--eval.batches=2")  # overrides apply
    assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1])["val_loss"] != result["val_loss"]
    r = cli("score", str(tmp_path / "ref"), "--data", str(tmp_path / "tok"))
    assert r.returncode == 0, r.stderr
    info = json.loads((tmp_path / "tok" / "weights.json").read_text())
    assert info["alpha"] == 1.0 and info["mean_weight"] == pytest.approx(1.0, rel=0.01)
    weighted = run(tmp_path, "w", f"--data.sources={tmp_path}/tok", f"--loss.token_weights={tmp_path}/tok")
    plain = run(tmp_path, "p", f"--data.sources={tmp_path}/tok")
    assert weighted["losses"][1] != plain["losses"][1]
    assert all(torch.isfinite(torch.tensor(list(weighted["losses"].values()))))


def test_cli_plot_and_help(tmp_path):
    run(tmp_path, "pl", "--training.steps=3")
    r = cli("plot", str(tmp_path / "pl"))
    assert r.returncode == 0 and (tmp_path / "pl" / "loss.png").stat().st_size > 1000
    r = cli("train", "--help")
    assert r.returncode == 0 and "--optimizer.lr" in r.stdout and "--checkpoint.resume" in r.stdout
    r = cli("train", "--data.sources=/nope")
    assert r.returncode == 1 and "ember train: error: config: data.sources: /nope: no such folder" in r.stderr


@pytest.mark.parametrize("flag", ["--eval.batch_size=0", "--eval.batches=-1", "--data.seq_len=0"])
def test_eval_refuses_an_out_of_range_flag_by_name(tmp_path, capsys, flag):
    from ember.cli import main

    run(tmp_path, "r", "--training.steps=1")
    assert main(["eval", str(tmp_path / "r"), flag]) == 1
    assert f"{flag.split('=')[0][2:]} must be" in capsys.readouterr().err
