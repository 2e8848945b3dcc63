"""The debug config's first training losses, against a committed golden file.

The corpus is this Python's standard library, so the golden file records which one it was made
from (its file count and size); on another Python the test is skipped with that reason. Same
corpus: every loss within TOLERANCE of the golden value (CPU kernels may round differently
between processors; a changed model, loader, init or optimizer moves the losses far more).
Regenerate after an intended change: EMBER_UPDATE_GOLDEN=1 python -m pytest tests/train/test_golden.py
"""

import json
import os
import pathlib

import pytest

from ember.data import corpus
from ember.train import parse_config, train

from .helpers import QUIET_CPU, losses

GOLDEN = pathlib.Path(__file__).with_name("golden_debug.json")
TOLERANCE = 2e-3  # nats per byte, per step
FLAGS = [
    "--config=debug",
    "--training.steps=20",
    "--training.batch_size=8",
    "--data.seq_len=128",
    "--eval.every=0",
    "--checkpoint.every=0",
    "--job.deterministic=true",
    *QUIET_CPU,
]

pytestmark = pytest.mark.slow


def corpus_fingerprint() -> dict:
    files = corpus.stdlib_files()
    return {"files": len(files), "bytes": sum(p.stat().st_size for _, p in files)}


def test_debug_losses_match_golden(tmp_path):
    train(parse_config([*FLAGS, f"--job.dir={tmp_path}", "--job.name=g"]))
    got = losses(tmp_path / "g")
    if os.environ.get("EMBER_UPDATE_GOLDEN"):
        GOLDEN.write_text(
            json.dumps(
                {
                    "flags": FLAGS,
                    "corpus": corpus_fingerprint(),
                    "tolerance": TOLERANCE,
                    "losses": {str(k): v for k, v in got.items()},
                },
                indent=1,
            )
            + "\n"
        )
    golden = json.loads(GOLDEN.read_text())
    if golden["corpus"] != corpus_fingerprint():
        pytest.skip(
            f"golden losses were made on another standard library ({golden['corpus']} vs {corpus_fingerprint()})"
        )
    assert golden["flags"] == FLAGS
    want = {int(k): v for k, v in golden["losses"].items()}
    assert list(got) == list(want)
    worst = max(abs(got[k] - want[k]) for k in want)
    assert worst <= TOLERANCE, {k: (got[k], want[k]) for k in want}
    assert want[20] < want[1] - 1.0  # the golden run itself learned
