"""Memory while saving a sharded checkpoint: each rank's peak RSS during a save against its peak
during training steps that do not save, under FSDP2 on 2 ranks (gloo), sync and async saves.

Each cell is a real `ember train` job under torchrun. The job runs unchanged; this script wraps
`Trainer.train_step` and `Checkpointer.save` in the job's processes and reads the kernel's peak RSS
(VmHWM in /proc/self/status), reset before each measured interval by writing "5" to
/proc/self/clear_refs. It counts every thread of the process, so an async save's background
write is in it, and so are the training steps that run beside that write.

  training peak  the largest peak over steps that start and end with no save running, from the
                 second step (the optimizer state is made in the first) to the step of the first save
  saving peak    the first save's, from the start of `Checkpointer.save` to its return (sync: the
                 whole save; async: the staging copy, "staged") and, async, on to the end of the
                 background write (later saves reuse the heap the first one grew: "later adds")
  save adds      the saving peak less the RSS just before the save
  state          this rank's parameters and optimizer state (its shards), for scale

    python bench/bench_save_memory.py                      # adamw and apollo, sync and async
    python bench/bench_save_memory.py --dim 256 --layers 4 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from bench_scale import OPTIMIZERS as SCALE_OPTIMIZERS  # noqa: E402

OPTIMIZERS = {k: SCALE_OPTIMIZERS[k] for k in ("adamw", "apollo")}


def model_flags(dim: int, layers: int) -> list[str]:
    return [
        f"--model.dim={dim}",
        f"--model.n_layers={layers}",
        "--model.n_heads=8",
        "--model.n_kv_heads=4",
        f"--model.ffn_hidden={dim * 11 // 4 // 64 * 64}",
        "--data.seq_len=64",
        "--training.batch_size=4",
        "--training.parallel=fsdp",
        "--eval.every=0",
        "--eval.batches=1",
        "--eval.batch_size=4",
        "--checkpoint.keep=1",
        "--checkpoint.export_safetensors=false",
        "--metrics.log_every=1",
        "--metrics.progress=false",
        "--metrics.tensorboard=false",
        "--metrics.plot=false",
        "--job.device=cpu",
        "--lr_scheduler.warmup_steps=2",
    ]


def _status(key: str) -> int:
    """A VmRSS / VmHWM line of this process, in bytes."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1)) * 1024


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def _local_bytes(tensors) -> int:
    total = 0
    for t in tensors:
        local = t.to_local() if hasattr(t, "to_local") else t
        total += local.numel() * local.element_size()
    return total


class Probe:
    """Peak RSS per training step and per save, in this process."""

    def __init__(self):
        self.steps: list[dict] = []  # {step, peak, clean}
        self.saves: list[dict] = []  # {step, before, staged, written}
        self.state = {}
        self.writing = threading.Event()  # an async save's background write is running
        self.written = threading.Event()
        self.written.set()

    def install(self) -> None:
        import ember.train.checkpoint as ckpt
        import ember.train.trainer as trainer
        from ember.train.metrics import optimizer_state_bytes

        step_fn, save_fn = trainer.Trainer.train_step, ckpt.Checkpointer.save
        probe = self

        def train_step(self, step):
            clean = not probe.writing.is_set()
            if clean:
                _reset_peak()
            out = step_fn(self, step)
            probe.steps.append({"step": step, "peak": _status("VmHWM"), "clean": clean and not probe.writing.is_set()})
            return out

        def save(self, step, model, optimizer, *args, **kwargs):
            if not probe.state:
                params = _local_bytes(model.parameters())
                probe.state = {"model": params, "optim": optimizer_state_bytes(optimizer)}
            self.wait()  # what save does first: the previous write ends outside this interval
            probe.written.wait()
            before = _status("VmRSS")
            _reset_peak()
            t = time.perf_counter()
            out = save_fn(self, step, model, optimizer, *args, **kwargs)
            row = {"step": step, "before": before, "staged": _status("VmHWM"), "save_s": time.perf_counter() - t}
            row["written"] = row["staged"]
            probe.saves.append(row)
            if self.pending is not None:  # async: the write goes on in the background
                probe.writing.set()
                probe.written.clear()

                def done(_future, row=row, t=t):
                    row["written"] = _status("VmHWM")
                    row["write_s"] = time.perf_counter() - t
                    probe.writing.clear()
                    probe.written.set()

                self.pending.future.add_done_callback(done)
            return out

        trainer.Trainer.train_step = train_step
        ckpt.Checkpointer.save = save


def worker(run_root: str, name: str, flags: list[str]) -> None:
    """One cell, as one rank of a torchrun job."""
    probe = Probe()
    probe.install()
    from ember.train import parse_config, train

    train(parse_config([*flags, f"--job.dir={run_root}", f"--job.name={name}"]))
    probe.written.wait()
    rank = int(os.environ.get("RANK", "0"))
    out = {"steps": probe.steps, "saves": probe.saves, "state": probe.state}
    (Path(run_root) / name / f"memory-rank{rank}.json").write_text(json.dumps(out))


def run_cell(root: Path, name: str, flags: list[str], ranks: int) -> list[dict]:
    harness.run_ranks(Path(__file__).resolve(), [str(root), name, *flags], ranks, name)
    return [json.loads((root / name / f"memory-rank{k}.json").read_text()) for k in range(ranks)]


def summarize(got: dict) -> dict:
    """The first save against the training before it (later saves reuse the heap the first one
    grew: glibc keeps freed memory in the process here, `host.keep_freed_memory`)."""
    first = got["saves"][0]
    train = [s["peak"] for s in got["steps"] if s["clean"] and 2 <= s["step"] <= first["step"]]
    later = got["saves"][1:]
    return {
        "train_peak": max(train),
        "staged_peak": first["staged"],
        "save_peak": first["written"],
        "save_adds": first["written"] - first["before"],
        "later_adds": max((s["written"] - s["before"] for s in later), default=0),
        "save_s": first.get("write_s", first["save_s"]),
        "state": got["state"]["model"] + got["state"]["optim"],
        **{f"state_{k}": v for k, v in got["state"].items()},
    }


def print_table(results: list[dict]) -> None:
    mib = 2**20
    print(
        f"{'cell':<14}{'rank':>5}{'state MiB':>10}{'train peak':>11}{'staged peak':>12}{'save peak':>10}"
        f"{'ratio':>7}{'save adds':>10}{'adds/state':>11}{'later adds':>11}{'save s':>7}"
    )
    for r in results:
        print(
            f"{r['cell']:<14}{r['rank']:>5}{r['state'] / mib:>10.1f}{r['train_peak'] / mib:>11.1f}"
            f"{r['staged_peak'] / mib:>12.1f}{r['save_peak'] / mib:>10.1f}{r['save_peak'] / r['train_peak']:>7.3f}"
            f"{r['save_adds'] / mib:>10.1f}{r['save_adds'] / r['state']:>11.2f}{r['later_adds'] / mib:>11.1f}"
            f"{r['save_s']:>7.2f}"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], sys.argv[4:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=int, default=1024, help="model width (the debug model: 128)")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--every", type=int, default=6, help="checkpoint every N steps")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=list(OPTIMIZERS))
    p.add_argument("--json", metavar="PATH")
    a = p.parse_args()
    base = [*model_flags(a.dim, a.layers), f"--training.steps={a.steps}", f"--checkpoint.every={a.every}"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for optimizer in a.optimizers:
            for mode in ("sync", "async"):
                name = f"{optimizer}-{mode}"
                flags = [*base, *OPTIMIZERS[optimizer], f"--checkpoint.async_save={str(mode == 'async').lower()}"]
                for rank, got in enumerate(run_cell(Path(tmp), name, flags, a.ranks)):
                    results.append({"cell": name, "rank": rank, **summarize(got), "raw": got})
    print_table(results)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
