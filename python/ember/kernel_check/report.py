"""The selftest's report: one result per kernel, printed one line each, saved as JSON."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass
class KernelResult:
    name: str
    status: str  # "pass", "fail", or "skip" (the kernel does not exist on this device)
    error: float = 0.0  # the largest error of its comparisons, relative to...
    tolerance: float = 0.0  # ...what that comparison allows
    seconds: float = 0.0
    detail: str = ""  # the worst comparison, the exception, or why it was skipped

    def line(self) -> str:
        if self.status == "skip":
            return f"{self.name:<38} skip  {self.detail}"
        err = "-" if math.isnan(self.error) else f"{self.error:.2g}"
        return f"{self.name:<38} {self.status:<5} err {err:>8} / tol {self.tolerance:<8.2g} {self.seconds:6.2f}s  {self.detail}"


@dataclass
class Report:
    device: str  # "cpu", "cuda:0", ...
    device_name: str
    results: list[KernelResult] = field(default_factory=list)
    cached: bool = False  # read from the cache, not run now
    key: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed()

    def failed(self) -> list[str]:
        return [r.name for r in self.results if r.status == "fail"]

    def result(self, name: str) -> KernelResult:
        return next(r for r in self.results if r.name == name)

    def lines(self) -> list[str]:
        head = f"ember selftest on {self.device} ({self.device_name}){' [cached]' if self.cached else ''}"
        counts = {s: sum(r.status == s for r in self.results) for s in ("pass", "fail", "skip")}
        tail = f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} not on this device"
        return [head, *(r.line() for r in self.results), tail]

    def to_dict(self) -> dict:
        """As standard JSON holds it: an error that is no number (a kernel that raised) is null."""
        data = asdict(self)
        for r in data["results"]:
            r.update({k: None for k in ("error", "tolerance") if not math.isfinite(r[k])})
        return {**data, "ok": self.ok}

    @classmethod
    def from_dict(cls, data: dict) -> Report:
        results = [
            KernelResult(**{**r, **{k: math.nan for k in ("error", "tolerance") if r.get(k, 0) is None}})
            for r in data.get("results", [])
        ]
        return cls(data["device"], data["device_name"], results, bool(data.get("cached")), data.get("key", {}))
