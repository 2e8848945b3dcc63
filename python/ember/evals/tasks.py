"""lm-evaluation-harness tasks: names checked before anything loads (preflight, `ember eval`),
the tasks run through lm-eval's simple_evaluate, and their numbers as `task/<name>/<metric>`
values (the rows the trainer logs for --eval.tasks). Nothing here knows ember's models.

Local task files (--include-path, eval.tasks_include_path) are read with no network: a task whose
dataset is local (`dataset_path: json`, `dataset_kwargs: {data_files: ...}`) runs with
HF_DATASETS_OFFLINE=1."""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import math
import random
from pathlib import Path

import numpy as np
import torch

from ..train.config import ConfigError

INSTALL = "pip install 'ember[eval]'"


def task_names(spec: str) -> list[str]:
    """NAME,NAME,... as a list, in order, each once."""
    return list(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))


def require_lm_eval(where: str) -> None:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise ConfigError(f"{where} needs lm-evaluation-harness, which is not installed: {INSTALL}") from None


@functools.cache  # indexing lm-eval's own task folder takes seconds: once per process
def _task_manager(names: tuple[str, ...], include_path: str):
    """A TaskManager that knows `names`: the include folder's alone when it holds them all
    (indexing only it is fast), else lm-eval's tasks and the folder's."""
    from lm_eval.tasks import TaskManager

    if include_path:
        local = TaskManager(include_path=include_path, include_defaults=False)
        if all(n in local.all_tasks for n in names):
            return local
    return TaskManager(include_path=include_path or None)


def check_tasks(spec: str, include_path: str, where: str):
    """The TaskManager for the tasks named in `spec`; ConfigError (naming `where`) when lm-eval is
    missing, the include path is not a folder, a name is no task, group or tag it knows, or a
    task cannot be loaded (its dataset unreachable or unreadable)."""
    require_lm_eval(where)
    names = task_names(spec)
    if not names:
        raise ConfigError(f"{where}: no task named (NAME,...)")
    if include_path and not Path(include_path).is_dir():
        raise ConfigError(f"{where}: include path {include_path}: not a folder (of lm-eval task YAML files)")
    manager = _task_manager(tuple(names), str(Path(include_path).resolve()) if include_path else "")
    for name in names:
        if name not in manager.all_tasks:
            close = difflib.get_close_matches(name, manager.all_tasks, n=5, cutoff=0.6)
            hint = f" (close: {', '.join(close)})" if close else ""
            where_from = f"in {include_path} or lm-eval's tasks" if include_path else "among lm-eval's tasks"
            raise ConfigError(f"{where}: unknown task {name!r} {where_from}{hint}")
    for name in names:  # its dataset too, now: a task of lm-eval's own downloads one
        try:
            manager.load([name])
        except Exception as exc:  # datasets' and lm-eval's errors have no common base
            raise ConfigError(
                f"{where}: task {name!r} cannot be loaded ({type(exc).__name__}: {exc}); its dataset must be local "
                "or reachable (HF_DATASETS_OFFLINE=1 allows only local ones)"
            ) from None
    return manager


@contextlib.contextmanager
def _rng_kept():
    """simple_evaluate seeds Python's, NumPy's and torch's generators: a training run's draws
    after an evaluation stay those of a run without it."""
    py, npy, cpu = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def run_tasks(lm, spec: str, manager, num_fewshot: int | None, limit: int | None, bootstrap_iters: int) -> dict | None:
    """lm-eval's results dict for the tasks of `spec` (None on a process other than the first on
    its machine, as simple_evaluate returns; every process runs the same forward passes)."""
    from lm_eval import simple_evaluate

    with _rng_kept():
        return simple_evaluate(
            model=lm,
            tasks=task_names(spec),
            task_manager=manager,
            num_fewshot=num_fewshot,
            limit=limit or None,
            bootstrap_iters=bootstrap_iters,
            log_samples=False,
        )


def task_values(results: dict) -> dict[str, float]:
    """{"task/<name>/<metric>": value} of every finite number in lm-eval's results (a filter
    other than "none" is appended: exact_match_strict-match)."""
    out = {}
    for task, metrics in results["results"].items():
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")
            if not filt or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue  # the alias, "N/A" stderrs
            out[f"task/{task}/{metric}" + ("" if filt == "none" else f"_{filt}")] = float(value)
    return out


def plain(results: dict) -> dict:
    """The JSON-able part of lm-eval's results: per task its numbers, versions and shots."""
    keep = {k: results[k] for k in ("results", "groups", "versions", "n-shot", "higher_is_better") if k in results}
    return json.loads(json.dumps(keep, default=str))
