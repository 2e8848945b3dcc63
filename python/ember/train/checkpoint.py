"""Checkpoints: model, optimizer, scheduler, data position, RNG states, step, config.

Layout: RUN/checkpoints/step-00000200/ holds the model and optimizer as a sharded
torch.distributed.checkpoint (DCP): each rank writes its own shards (`__R_0.distcp`) and rank 0
the `.metadata`, so no rank ever gathers the whole state; beside them `extra.pt` (step,
scheduler, data position, every rank's RNG streams) and `meta.json`. DCP reshards on load: a
checkpoint loads under any number of ranks and either parallelism, or none.

A checkpoint is written into a temporary folder beside its final name, flushed to disk, then
renamed: a crash mid-save leaves only a `.tmp-*` folder, which loading ignores (and the next save
removes), never a checkpoint that loads wrong. Folders are deleted the same way round (renamed to
`.tmp-*` first), and the safetensors export is a temporary file, flushed, then renamed.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
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

from . import faults
from .distributed import Dist

_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and _complete(p)]
    return [p for _, p in sorted(found)]


def find_checkpoint(where: str | Path) -> Path:
    """A checkpoint folder, or the latest complete checkpoint of a run folder."""
    where = Path(where)
    if _complete(where):
        return where
    found = checkpoint_dirs(where)
    if not found:
        raise FileNotFoundError(f"no checkpoint in {where} (looked for {where}/checkpoints/step-*/)")
    return found[-1]


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("meta.json", "extra.pt", ".metadata"))


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


# An asynchronous save in flight: (its future, the publication to run once it is on disk).
_pending: list = []
_save_group = []  # the process group of asynchronous saves' own collectives, made once


def _async_group(d: Dist):
    """A gloo group for a background save's collectives: on the training group they would
    interleave with the training's and mismatch."""
    if d.enabled and not _save_group:
        _save_group.append(torch.distributed.new_group(backend="gloo"))
    return _save_group[0] if d.enabled else None


def save(
    run_dir: Path,
    step: int,
    model,
    optimizer,
    scheduler,
    loader,
    config: dict,
    d: Dist,
    keep: int = 0,
    async_save: bool = False,
) -> Path | None:
    """Every rank calls this and writes its own shards; rank 0 writes the rest and publishes.
    With async_save the shards are copied to host memory here and written by a background
    thread while training goes on; the checkpoint is published (renamed to its final name) by
    the next save or by finish_saves(). Returns the final folder on rank 0."""
    finish_saves(d)
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}
    rngs = _gather(rng_state(), d)
    final = Path(run_dir) / "checkpoints" / f"step-{step:08d}"
    tmp = final.parent / f"{final.name}.tmp-{d.broadcast(os.getpid())}"
    if d.is_main:
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in final.parent.glob("*.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    d.barrier()
    extra = {"step": step, "scheduler": scheduler.state_dict(), "loader": loader.state_dict(), "rng": rngs}
    meta = {"step": step, "world_size": d.world_size, "config": config}
    publish = lambda: _publish(tmp, final, extra, meta, run_dir, keep, d)  # noqa: E731
    writer = dcp.FileSystemWriter(tmp, sync_files=True)
    if async_save:
        future = dcp.async_save(state, storage_writer=writer, process_group=_async_group(d), no_dist=not d.enabled)
        _pending.append((future, publish))
    else:
        dcp.save(state, storage_writer=writer, no_dist=not d.enabled)
        publish()
    return final if d.is_main else None


def finish_saves(d: Dist) -> None:
    """Wait for an asynchronous save and publish it (every rank calls this)."""
    while _pending:
        future, publish = _pending.pop()
        future.result()
        publish()


def _publish(tmp: Path, final: Path, extra: dict, meta: dict, run_dir: Path, keep: int, d: Dist) -> None:
    """Once every rank's shards are on disk: rank 0 adds extra.pt and meta.json, then renames."""
    faults.crash_point(f"save:{extra['step']}", torn=tmp / f"__{d.rank}_0.distcp")
    d.barrier()
    if d.is_main:
        _write(tmp / "extra.pt", lambda f: torch.save(extra, f))
        _write(tmp / "meta.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))
        _fsync_file(tmp / ".metadata")
        _fsync_dir(tmp)
        old = _set_aside(final) if final.exists() else None  # the same step saved again (a rerun)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        if keep:
            for stale in checkpoint_dirs(run_dir)[:-keep]:
                shutil.rmtree(_set_aside(stale), ignore_errors=True)
    d.barrier()


def load(path: Path, model, optimizer, scheduler, loader, d: Dist) -> int:
    """Restore everything saved by `save`, resharded to this job's ranks; returns the step to
    continue from."""
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


def _set_aside(folder: Path) -> Path:
    """Rename a checkpoint out of the loadable names before deleting it: a crash mid-delete must
    not leave a step folder with meta.json but half its state."""
    aside = folder.with_name(f"{folder.name}.tmp-old-{os.getpid()}")
    os.replace(folder, aside)
    return aside


def write_atomic(path: Path, data: bytes) -> None:
    """The whole of `data` at `path`, or (after a crash) what was there before."""
    tmp = path.with_name(path.name + ".tmp")
    _write(tmp, lambda f: f.write(data))
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def export_safetensors(model, path: Path, model_config: dict, d: Dist) -> Path | None:
    """The model weights alone (full, unsharded; plain Llama names) as safetensors, with the
    model config in the file's metadata and beside it as config.json."""
    from safetensors.torch import save_file

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if d.is_main:
        # config.json first: a model.safetensors that exists is complete and has its config.
        write_atomic(path.parent / "config.json", json.dumps(model_config, indent=1).encode())
        tensors = {k: v.contiguous() for k, v in sd.items()}
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata={"format": "pt", "ember_model_config": json.dumps(model_config)})
        faults.crash_point("export", torn=tmp)
        _fsync_file(tmp)  # on disk before it takes the final name
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    d.barrier()
    return path if d.is_main else None
