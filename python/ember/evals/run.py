"""lm-evaluation-harness tasks on ember models: a run's checkpoint (`ember eval --tasks`) and
the model being trained (the trainer's --eval.tasks)."""

from __future__ import annotations

from pathlib import Path

import torch

from .model import EmberLM
from .tasks import check_tasks, plain, run_tasks, task_values


def evaluate_run(checkpoint: str, spec: str, include_path: str, num_fewshot, limit, device, batch_size, dtype):
    """`ember eval CHECKPOINT --tasks ...`: (the report written by --output, lm-eval's results).
    The checkpoint and the task names are checked before the model loads."""
    from ..train.checkpoint import find_checkpoint, read_meta
    from ..train.distributed import pick_device

    path = find_checkpoint(checkpoint)
    try:
        device = str(pick_device(device))
    except RuntimeError as exc:  # cuda asked, none visible
        raise ValueError(f"--job.device {device}: {exc}") from None
    manager = check_tasks(spec, include_path, "ember eval: --tasks")
    lm = EmberLM(run=str(path), device=device, batch_size=batch_size, dtype=dtype)
    results = run_tasks(lm, spec, manager, num_fewshot, limit, bootstrap_iters=100_000)
    report = {"checkpoint": str(path), "step": read_meta(path)["step"], "tasks": task_values(results)}
    return {**report, **plain(results)}, results


def data_tokenizer(cfg):
    """The tokenizer of the data a run trains on (its first source's; the built-in corpus: data.tokenizer),
    with the end- and beginning-of-document ids its token folder records."""
    from ..data import corpus
    from ..data.loader import parse_sources
    from ..data.shards import read_index
    from ..data.tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer

    src = parse_sources(cfg.data.sources)[0]
    if src.path == corpus.NAME:
        return load_tokenizer(cfg.data.tokenizer)
    index = read_index(src.path)
    if index["tokenizer"] == "byte":
        return ByteTokenizer()
    from tokenizers import Tokenizer

    file = Path(src.path) / index["tokenizer"]
    tok = HFTokenizer(file, Tokenizer.from_file(str(file)).id_to_token(index["eos_id"]))
    tok.eos_id, tok.bos_id = index["eos_id"], index.get("bos_id")
    return tok


class TaskEvaluator:
    """The trainer's --eval.tasks: the tasks checked once, then run on the live model (the same
    on every rank: each runs every request, so a sharded model's collectives match)."""

    def __init__(self, cfg, max_length: int, dtype: torch.dtype):
        e = cfg.eval
        self.spec, self.fewshot, self.limit, self.every = e.tasks, e.tasks_num_fewshot, e.tasks_limit, e.tasks_every
        self.manager = check_tasks(e.tasks, e.tasks_include_path, "config: eval.tasks")
        self.tokenizer, self.max_length, self.dtype = data_tokenizer(cfg), max_length, dtype
        self.batch = e.batch_size

    def due(self, step: int, last_step: int) -> bool:
        """Step 0 and every eval.tasks_every steps (0: none of these), and the last step."""
        return step == last_step or bool(self.every) and step % self.every == 0

    def __call__(self, model) -> dict[str, float]:
        lm = EmberLM(
            model=model, tokenizer=self.tokenizer, max_length=self.max_length, dtype=self.dtype, batch_size=self.batch
        )
        results = run_tasks(lm, self.spec, self.manager, self.fewshot or None, self.limit, bootstrap_iters=0)
        return task_values(results) if results else {}
