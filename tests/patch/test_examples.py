"""With transformers.Trainer: the example runs end to end (tiny sizes) and prints its table, and
gradient accumulation (the Trainer passes num_items_in_batch) trains the patched model exactly as
the unpatched one."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers' Trainer needs it
sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import VOCAB, tiny_model  # noqa: E402

EXAMPLE = Path(__file__).parents[2] / "examples" / "hf_trainer_example.py"


@pytest.mark.slow
def test_trainer_example_prints_the_three_runs():
    r = subprocess.run(
        [sys.executable, str(EXAMPLE), "--vocab", "4000", "--seq", "64", "--batch", "4", "--steps", "3"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {
        line.split()[0]: line.split()
        for line in r.stdout.splitlines()
        if line.split() and line.split()[0] in ("plain", "plain+Apollo", "ember")
    }
    assert rows.keys() == {"plain", "plain+Apollo", "ember"}
    assert all(float(v[1]) > 0 for v in rows.values())  # a finite last loss for each run


class _Padded(torch.utils.data.Dataset):
    """Sequences with different numbers of ignored labels, so that normalizing by the tokens of
    the whole accumulated batch (num_items_in_batch) differs from averaging micro-batch means."""

    def __init__(self):
        g = torch.Generator().manual_seed(4)
        self.ids = torch.randint(0, VOCAB, (12, 16), generator=g)
        self.labels = self.ids.clone()
        for i in range(12):
            self.labels[i, : 2 + (5 * i) % 13] = -100

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def _train(tmp_path, patched: bool):
    from transformers import Trainer, TrainingArguments

    from ember.patch import apply_ember

    model = tiny_model("llama").train()
    if patched:
        apply_ember(model)
    args = TrainingArguments(
        output_dir=str(tmp_path / str(patched)),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=3,
        max_steps=2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    trainer = Trainer(model=model, args=args, train_dataset=_Padded(), optimizers=(opt, None))
    trainer.train()
    return [r["loss"] for r in trainer.state.log_history if "loss" in r], model


@pytest.mark.slow
def test_trainer_gradient_accumulation_same_as_unpatched(tmp_path):
    ref_losses, ref = _train(tmp_path, patched=False)
    losses, got = _train(tmp_path, patched=True)
    assert len(losses) == 2
    assert losses == pytest.approx(ref_losses, rel=1e-4)
    for (n, p), q in zip(got.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
