"""Sharded checkpoints (torch.distributed.checkpoint) across ranks: each rank writes its own shards,
a kill mid-save leaves the previous checkpoint, a resume at the same world size continues bit for
bit, and a checkpoint resumes at another world size or parallelism (2 → 1, 2 → 4, FSDP2 → DDP,
1 → 2) with the loader at the same global position; asynchronous saves give the same checkpoints. APOLLO, whose state is sharded too, is the optimizer."""

import pytest

from ember.train import checkpoint as ckpt
from ember.train.faults import ENV as CRASH_AT

from .helpers import cli, flags, losses, run

OPTS = (
    "--training.steps=6",
    "--checkpoint.every=2",
    "--checkpoint.keep=0",
    "--optimizer.name=apollo",
    "--optimizer.lr=0.01",
    "--optimizer.rank=8",
    "--optimizer.update_proj_gap=3",
    "--job.deterministic=true",
)


def train_fsdp(tmp, name, *extra, ranks=2, env=None):
    return cli("train", *flags(tmp, name, *OPTS, "--training.parallel=fsdp", *extra), nproc=ranks, env=env)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharded")
    r = train_fsdp(tmp, "full")
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp / "full"


@pytest.mark.slow
def test_each_rank_writes_its_shards_and_a_kill_mid_save_is_never_loaded(tmp_path, uninterrupted):
    shards = sorted(p.name for p in ckpt.find_checkpoint(uninterrupted).glob("*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"]
    r = train_fsdp(tmp_path, "k", env={CRASH_AT: "save:4"})
    assert r.returncode != 0
    run_dir = tmp_path / "k"
    assert ckpt.find_checkpoint(run_dir).name == "step-00000002"
    assert any(p.name.startswith("step-00000004.tmp-") for p in (run_dir / "checkpoints").iterdir())
    r = train_fsdp(tmp_path, "k", "--checkpoint.resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert losses(run_dir) == losses(uninterrupted)  # bit for bit at the same world size


@pytest.mark.slow
@pytest.mark.parametrize("how", ["one process", "fsdp 4 ranks", "ddp 2 ranks"])
def test_resume_at_another_world_size(tmp_path, uninterrupted, how):
    step2 = uninterrupted / "checkpoints" / "step-00000002"
    resume = f"--checkpoint.resume={step2}"
    if how == "one process":
        run(tmp_path, "r", *OPTS, resume)
    else:
        parallel, ranks = how.split()[0], int(how.split()[1])
        r = cli("train", *flags(tmp_path, "r", *OPTS, f"--training.parallel={parallel}", resume), nproc=ranks)
        assert r.returncode == 0, r.stderr[-3000:]
    got, want = losses(tmp_path / "r"), losses(uninterrupted)
    assert list(got) == [3, 4, 5, 6]  # the loader continues from the same global position
    for k in got:  # other ranks reduce in another order
        assert got[k] == pytest.approx(want[k], rel=1e-5)


@pytest.mark.slow
def test_one_process_checkpoint_resumes_sharded(tmp_path):
    one = run(tmp_path, "one", *OPTS)
    r = cli(
        "train",
        *flags(
            tmp_path,
            "r",
            *OPTS,
            "--training.parallel=fsdp",
            f"--checkpoint.resume={tmp_path}/one/checkpoints/step-00000002",
        ),
        nproc=2,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    got = losses(tmp_path / "r")
    assert list(got) == [3, 4, 5, 6]
    for k in got:
        assert got[k] == pytest.approx(one["losses"][k], rel=1e-5)


@pytest.mark.slow
def test_async_save_writes_the_same_checkpoints(tmp_path, uninterrupted):
    r = train_fsdp(tmp_path, "a", "--checkpoint.async_save=true")
    assert r.returncode == 0, r.stderr[-3000:]
    assert losses(tmp_path / "a") == losses(uninterrupted)
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path / "a")] == [f"step-{k:08d}" for k in (2, 4, 6)]
    r = train_fsdp(tmp_path, "b", f"--checkpoint.resume={tmp_path}/a/checkpoints/step-00000004")
    assert r.returncode == 0, r.stderr[-3000:]
    assert losses(tmp_path / "b") == {k: v for k, v in losses(uninterrupted).items() if k > 4}
