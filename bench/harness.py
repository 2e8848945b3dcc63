"""The one timing and reporting helper every bench_<family>.py uses.

- time_ms(): median of many timed calls after a warm-up. On CUDA: CUDA events around each call,
  inputs rotated among enough copies to exceed twice the L2 cache (so the cache is not what is
  measured). On CPU: perf_counter around each call.
- environment(): card, clocks, power limit and bandwidth (nvidia-ml-py), torch/CUDA/ember
  versions, date.
- Report: rows of named implementations side by side, each with its ratio to the named baseline;
  printed as a table and optionally written as JSON.
- run_ranks(): a multi-process bench's worker as a torchrun job.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

# Datasheet HBM bandwidth (TB/s), used when NVML cannot tell.
_BANDWIDTH_TBS = {"H100 SXM": 3.35, "H100 80GB HBM3": 3.35, "H100 PCIe": 2.0, "H100 NVL": 3.9, "H200": 4.8}


def common_args(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="few shapes, few repetitions (smoke run)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--reps", type=int, default=None, help="timed calls per measurement")
    return p


def run_ranks(script: str, args: Sequence[str], ranks: int, what: str) -> None:
    """Run ``script --worker *args`` as a torchrun job of ``ranks`` processes (one rank: a plain
    process), each with its share of the CPU threads; raises with the job's stderr if it fails."""
    worker = [str(script), "--worker", *args]
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"] if ranks > 1 else []
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // ranks))}
    r = subprocess.run([sys.executable, *launch, *worker], capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(f"{what} failed:\n{r.stderr[-3000:]}")


def _nvml_facts(index: int) -> dict:
    try:
        import pynvml
    except ImportError:
        return {"nvml": "not installed (pip install nvidia-ml-py)"}
    try:
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        facts = {
            "driver": pynvml.nvmlSystemGetDriverVersion(),
            "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
            "sm_clock_max_mhz": pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM),
            "mem_clock_max_mhz": pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM),
            "power_limit_w": pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000,
            "temperature_c": pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
        }
        try:
            bus_bits = pynvml.nvmlDeviceGetMemoryBusWidth(h)
            facts["mem_bus_bits"] = bus_bits
            # HBM transfers twice per clock.
            facts["bandwidth_tbs_nvml"] = round(2 * facts["mem_clock_max_mhz"] * 1e6 * bus_bits / 8 / 1e12, 2)
        except pynvml.NVMLError:
            pass
        return facts
    except Exception as exc:  # NVML missing in a container, no permission, ...
        return {"nvml": f"unavailable: {exc}"}


def environment(device: str) -> dict:
    import ember

    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "ember": ember.build_info(),
        "device": device,
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        env.update(card=props.name, sms=props.multi_processor_count, l2_mb=props.L2_cache_size / 2**20)
        env.update(_nvml_facts(torch.device(device).index or 0))
        env["bandwidth_tbs"] = env.get("bandwidth_tbs_nvml") or next(
            (v for k, v in _BANDWIDTH_TBS.items() if k in props.name), None
        )
    else:
        env.update(card=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return env


def time_ms(
    fn: Callable, make_args: Callable[[], tuple], device: str, reps: int = 50, warmup: int = 5, bytes_per_call: int = 0
) -> float:
    """Median milliseconds of fn(*args). make_args() builds one input set; on CUDA as many sets are
    built as it takes to exceed twice the L2 cache, and calls cycle through them."""
    sets = [make_args()]
    if device.startswith("cuda"):
        l2 = torch.cuda.get_device_properties(device).L2_cache_size
        while len(sets) < 16 and len(sets) * max(bytes_per_call, 1) < 2 * l2:
            sets.append(make_args())
    for i in range(warmup):
        fn(*sets[i % len(sets)])
    times = []
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for i, (start, end) in enumerate(events):
            args = sets[i % len(sets)]
            start.record()
            fn(*args)
            end.record()
        torch.cuda.synchronize(device)
        times = [s.elapsed_time(e) for s, e in events]
    else:
        for i in range(reps):
            args = sets[i % len(sets)]
            t0 = time.perf_counter()
            fn(*args)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


@dataclass
class Report:
    """Rows of (case, implementation, ms, extra metrics); ratios are taken against `baseline`
    within each case, from this one run."""

    title: str
    env: dict
    baseline: str
    metrics: Sequence[str] = ()
    rows: list = field(default_factory=list)

    def add(self, case: str, impl: str, ms: float, **metrics) -> None:
        self.rows.append({"case": case, "impl": impl, "ms": ms, **metrics})

    def _with_ratios(self) -> list:
        base = {r["case"]: r["ms"] for r in self.rows if r["impl"] == self.baseline}
        return [
            {**r, f"speedup vs {self.baseline}": base[r["case"]] / r["ms"] if r["case"] in base else None}
            for r in self.rows
        ]

    def print(self) -> None:
        env = self.env
        print(f"# {self.title}")
        card = env.get("card")
        clocks = (
            f", SM {env['sm_clock_max_mhz']} MHz max, {env['power_limit_w']:.0f} W" if "power_limit_w" in env else ""
        )
        bw = f", {env['bandwidth_tbs']} TB/s" if env.get("bandwidth_tbs") else ""
        print(
            f"# {card}{clocks}{bw} | torch {env['torch']} CUDA {env['cuda']} | ember {env['ember']['version']} | {env['date']}"
        )
        rows = self._with_ratios()
        cols = ["case", "impl", "ms", *self.metrics, f"speedup vs {self.baseline}"]
        cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(cols)]
        print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
        for row in cells:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths)))

    def as_dict(self) -> dict:
        return {"title": self.title, "env": self.env, "baseline": self.baseline, "rows": self._with_ratios()}

    def write_json(self, path: str | None) -> None:
        write_reports(path, [self])


def write_reports(path: str | None, reports: Sequence[Report]) -> None:
    """One report as its dict, several as {"reports": [...]}."""
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(
            reports[0].as_dict() if len(reports) == 1 else {"reports": [r.as_dict() for r in reports]}, f, indent=1
        )


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)
