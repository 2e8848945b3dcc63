"""One torchrun job that trains every cell of the feature matrix in turn (one interpreter start and
one process group for all): `python -m torch.distributed.run ... matrix_job.py RUN_ROOT PARALLEL
FEATURE [FEATURE ...]`; RUN_ROOT's parent holds the shared data (the weighted token folder). The
tests read each cell's metrics.jsonl and checkpoint."""

import sys
from pathlib import Path

import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ember.train import distributed, parse_config, train  # noqa: E402
from train.helpers import flags  # noqa: E402
from train.test_parallel_matrix import FEATURES, STEPS  # noqa: E402

root, parallel, names = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
dist.init_process_group("gloo")
distributed.shutdown = lambda: None  # train() joins this group and leaves it up for the next cell
extra = ["--training.hsdp_shard=2"] if parallel == "hsdp" else []
for name in names:
    train(
        parse_config(
            flags(
                root,
                name,
                f"--training.steps={STEPS}",
                "--job.deterministic=true",
                f"--training.parallel={parallel}",
                *extra,
                *FEATURES[name](root.parent),
            )
        )
    )
dist.destroy_process_group()
