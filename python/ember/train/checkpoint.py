"""Checkpoints: model, optimizer, scheduler, data position, RNG states, step, config.

Layout: RUN/checkpoints/step-00000200/ holds the model and optimizer as a sharded
torch.distributed.checkpoint (DCP): each rank writes its own shards (`__R_0.distcp`) and rank 0
the `.metadata`, so no rank ever gathers the whole state; beside them `extra.pt` (step,
scheduler, data position, every rank's RNG streams) and `meta.json`. DCP reshards on load: a
checkpoint loads under any number of ranks and either parallelism, or none.

A checkpoint is written into a temporary folder beside its final name, flushed to disk, then
renamed: a crash mid-save leaves only a `.tmp-*` folder, which loading ignores (and the next save
removes), never a checkpoint that loads wrong. Folders are deleted the same way round (renamed to
`.tmp-*` first), and the safetensors export is a temporary file, flushed, then renamed. An
asynchronous save is published the same way by its background thread as soon as its write is
complete, so a crash leaves the last complete checkpoint whichever way it was written.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import random
import re
import shutil
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from .. import atomic
from . import faults
from .distributed import Dist
from .plot import PLOTS

_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and _complete(p)]
    return [p for _, p in sorted(found)]


def find_checkpoint(where: str | Path) -> Path:
    """A checkpoint folder, or the latest complete checkpoint of a run folder (or of its
    checkpoints/ folder)."""
    where = Path(where)
    if _complete(where):
        return where
    if where.is_file():
        raise FileNotFoundError(f"{where} is a file, not a checkpoint folder (RUN/checkpoints/step-N/) or a run folder")
    if _STEP_DIR.match(where.name.split(".tmp-")[0]):
        raise FileNotFoundError(
            f"{where} is an incomplete checkpoint (a save cut short): give its run folder to take the last complete one"
        )
    found = checkpoint_dirs(where.parent if where.name == "checkpoints" else where)
    if not found:
        raise FileNotFoundError(f"no checkpoint in {where} (looked for {where}/checkpoints/step-*/)")
    return found[-1]


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("meta.json", "extra.pt", ".metadata"))


def set_aside_after(run_dir: Path, step: int) -> Path | None:
    """A rewind to `step`: the run's later checkpoints (and its model.safetensors and plots, theirs)
    move to RUN/abandoned/after-step-N-TIME/, out of the names that loading and `latest` look at.
    Returns that folder, or None when there was nothing later."""
    later = [p for p in checkpoint_dirs(run_dir) if int(_STEP_DIR.match(p.name).group(1)) > step]
    if not later:
        return None
    when = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    aside = new_folder(Path(run_dir) / "abandoned" / f"after-step-{step:08d}-{when}")
    (aside / "checkpoints").mkdir()
    for folder in later:
        atomic.move(folder, aside / "checkpoints" / folder.name)
    for name in ("model.safetensors", *PLOTS):
        if (Path(run_dir) / name).is_file():
            atomic.move(Path(run_dir) / name, aside / name)
    return aside


def new_folder(path: Path) -> Path:
    """`path`, made now by this process alone, or path-2, path-3, ... when it exists (another run
    started in the same second)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for k in itertools.count(1):
        candidate = path if k == 1 else path.with_name(f"{path.name}-{k}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue


def _quiet_single_process() -> None:
    """A one-process DCP save or load warns, every time, that it runs in one process: it is meant
    to (idempotent: warnings keeps one copy of a filter)."""
    for verb in ("save", "load"):
        warnings.filterwarnings("ignore", message=f"torch.distributed is .*the intent is to {verb} in a single")


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class Checkpointer:
    """Writes a run's checkpoints: every rank calls save() and writes its own shards; rank 0 writes
    the rest and publishes. Owns the asynchronous save in flight and the process group of its
    collectives."""

    def __init__(self, run_dir: Path, d: Dist, keep: int = 0, async_save: bool = False):
        self.run_dir, self.d, self.keep, self.async_save = Path(run_dir), d, keep, async_save
        self.pending: _BackgroundSave | None = None
        self._group = None  # made on the first asynchronous save under torchrun
        _quiet_single_process()

    def save(self, step: int, model, optimizer, scheduler, loader, config: dict, async_ok: bool = True) -> Path | None:
        """With async_save (and async_ok) the shards are copied to host memory here and written by
        a background thread while training goes on, which publishes the checkpoint (renames it to
        its final name) as soon as every rank's shards are on disk. Returns the final folder on
        rank 0."""
        d = self.d
        self.wait()
        state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}
        rngs = _gather(rng_state(), d)
        final = self.run_dir / "checkpoints" / f"step-{step:08d}"
        tmp = final.parent / f"{final.name}.tmp-{d.broadcast(os.getpid())}"
        if d.is_main:
            final.parent.mkdir(parents=True, exist_ok=True)
            for stale in final.parent.glob("*.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp.mkdir()
        d.barrier()
        extra = {"step": step, "scheduler": scheduler.state_dict(), "loader": loader.state_dict(), "rng": rngs}
        meta = {"step": step, "world_size": d.world_size, "config": config}
        publish = lambda: self._publish(tmp, final, extra, meta)  # noqa: E731
        writer = dcp.FileSystemWriter(tmp, sync_files=True)
        if self.async_save and async_ok:
            future = dcp.async_save(
                state, storage_writer=writer, process_group=self._async_group(), no_dist=not d.enabled
            )
            self.pending = _BackgroundSave(future, publish)
        else:
            dcp.save(state, storage_writer=writer, no_dist=not d.enabled)
            d.barrier()  # every rank's shards are on disk
            publish()
            d.barrier()
        return final if d.is_main else None

    def wait(self) -> None:
        """Until the asynchronous save in flight is written and published (every rank calls this)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.join()

    def settle(self) -> None:
        """Until the asynchronous save in flight has ended, however (its error is raised by wait(),
        in the training's order)."""
        if self.pending is not None:
            threading.Thread.join(self.pending)

    def _async_group(self):
        """A gloo group for a background save's collectives: on the training group they would
        interleave with the training's and mismatch."""
        if self.d.enabled and self._group is None:
            self._group = torch.distributed.new_group(backend="gloo")
        return self._group

    def _publish(self, tmp: Path, final: Path, extra: dict, meta: dict) -> None:
        """Once every rank's shards are on disk (DCP's metadata, written last by rank 0, says so):
        rank 0 adds extra.pt and meta.json, then renames. No collectives: a background save's
        thread calls it too."""
        d = self.d
        faults.crash_point(f"save:{extra['step']}", torn=tmp / f"__{d.rank}_0.distcp")
        if not d.is_main:
            return
        _write(tmp / "extra.pt", lambda f: torch.save(extra, f))
        _write(tmp / "meta.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))
        atomic.publish_dir(tmp, final)  # the same step saved again (a rerun) replaces it whole
        if self.keep:
            for stale in checkpoint_dirs(self.run_dir)[: -self.keep]:
                shutil.rmtree(atomic.set_aside(stale), ignore_errors=True)


class _BackgroundSave(threading.Thread):
    """Waits for DCP's background write, then publishes the checkpoint. Not a daemon: a process
    that ends (an exception, a second Ctrl-C) still finishes and publishes the save in flight."""

    def __init__(self, future, publish):
        super().__init__(name="ember-checkpoint-publish")
        self.future, self.publish, self.error = future, publish, None
        self.start()

    def run(self) -> None:
        try:
            self.future.result()
            self.publish()
        except BaseException as exc:  # raised in the training thread by join()
            self.error = exc

    def join(self, timeout=None) -> None:
        super().join(timeout)
        if self.error is not None:
            raise self.error


def load(path: Path, model, optimizer, scheduler, loader, d: Dist) -> int:
    """Restore everything saved by `save`, resharded to this job's ranks; returns the step to
    continue from."""
    _quiet_single_process()
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}
    dcp.load(state, storage_reader=dcp.FileSystemReader(path), no_dist=not d.enabled)
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, state["optim"])
    extra = torch.load(Path(path) / "extra.pt", map_location="cpu", weights_only=False)
    scheduler.load_state_dict(extra["scheduler"])
    loader.load_state_dict(extra["loader"])
    rngs = extra["rng"]
    if len(rngs) == d.world_size:  # the same ranks: each gets its own streams back
        set_rng_state(rngs[d.rank])
    return int(extra["step"])


def load_model_weights(path: Path, model) -> None:
    """Only the model's weights from a checkpoint into `model` (plain or sharded), in place."""
    _quiet_single_process()
    state = {"model": get_model_state_dict(model)}
    dcp.load(state, storage_reader=dcp.FileSystemReader(path), no_dist=not torch.distributed.is_initialized())
    set_model_state_dict(model, state["model"])


def read_meta(path: Path) -> dict:
    return json.loads((Path(path) / "meta.json").read_text())


def _gather(obj, d: Dist) -> list:
    if not d.enabled:
        return [obj]
    out = [None] * d.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def _write(path: Path, fill) -> None:
    with open(path, "wb") as f:
        fill(f)
        f.flush()
        os.fsync(f.fileno())


def export_safetensors(model, path: Path, model_config: dict, d: Dist) -> Path | None:
    """The model weights alone (full, unsharded; plain Llama names) as safetensors, with the
    model config in the file's metadata and beside it as config.json."""
    from safetensors.torch import save_file

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if d.is_main:
        # config.json first: a model.safetensors that exists is complete and has its config.
        atomic.write_json(path.parent / "config.json", model_config)
        tensors = {k: v.contiguous() for k, v in sd.items()}
        with atomic.atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt", "ember_model_config": json.dumps(model_config)})
            faults.crash_point("export", torn=tmp)
    d.barrier()
    return path if d.is_main else None
