"""One comparison of a kernel's output with its reference, and the error it reports.

tol is either a number, the allowed error relative to the reference's largest element (or, with
norm=True, ‖got − want‖ / ‖want‖), or a tensor of allowed absolute errors per element (the
error is then the largest ratio, allowed 1). tol 0 asks for equality. A NaN where the reference
has none, or an infinity that is not the reference's, fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Compare:
    what: str
    got: torch.Tensor
    want: torch.Tensor
    tol: float | torch.Tensor
    norm: bool = False

    def corrupted(self) -> Compare:
        """The same comparison of a wrong result (EMBER_SELFTEST_INJECT): every element off by more
        than its reference's magnitude."""
        wrong = self.got.detach().double().cpu() + 1.0 + self.want.detach().double().cpu().abs()
        return Compare(self.what, wrong, self.want, self.tol, self.norm)

    def error(self) -> tuple[float, float]:
        """(error, allowed)."""
        got, want = self.got.detach().double().cpu(), self.want.detach().double().cpu()
        if got.shape != want.shape:
            return math.inf, self._allowed()
        if got.numel() == 0:
            return 0.0, self._allowed()
        if (got.isnan() != want.isnan()).any() or ((got.isinf() | want.isinf()) & (got != want)).any():
            return math.inf, self._allowed()
        finite = want.isfinite()
        diff = torch.where(finite, got - want, torch.zeros_like(got)).abs()
        if isinstance(self.tol, torch.Tensor):
            return (diff / self.tol.double().cpu()).max().item(), 1.0
        ref = torch.where(finite, want, torch.zeros_like(want))
        if self.norm:
            return (diff.norm() / ref.norm().clamp_min(1e-300)).item(), float(self.tol)
        return (diff.max() / ref.abs().max().clamp_min(1e-30)).item(), float(self.tol)

    def _allowed(self) -> float:
        return 1.0 if isinstance(self.tol, torch.Tensor) else float(self.tol)
