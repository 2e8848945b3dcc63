"""The fuzz suite's shared pieces: which ops exist, how a case is laid out in memory, which special
values it gets, and what a case must satisfy.

Every op in the `ember` library (bindings/ops.cpp) must have a fuzz test: a test function marked
`@covers("op_name")` in a `tests/fuzz/test_*.py` module (test_registry.py fails for an op without
one). A case either matches the float64 reference (non-finite values in the same places, finite
ones within the stated tolerance) or raises an error that names the op and the argument — and in
both cases the inputs are byte-for-byte unchanged, except an op's documented in-place outputs.
"""

from __future__ import annotations

import re

import torch
from hypothesis import HealthCheck, settings, strategies as st

COVERED: set[str] = set()


def registered_ops() -> set[str]:
    """The names of every op of the `ember` library, from the dispatcher."""
    return {
        name.split("::", 1)[1].split(".")[0]
        for name in torch._C._dispatch_get_all_op_names()
        if name.startswith("ember::")
    }


def covers(*ops: str):
    """Marks a test as the fuzz test of these ops."""

    def mark(fn):
        COVERED.update(ops)
        return fn

    return mark


# Hypothesis with the `device` fixture: the fixture is per test, the examples share it on purpose.
fuzz = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)

# ---- sizes ----------------------------------------------------------------------------------------
ODD_SIZES = [1, 2, 3, 5, 7, 13, 15, 16, 17, 31, 33, 63, 65, 127, 129]


def sizes(min_value: int = 1, max_value: int = 129) -> st.SearchStrategy[int]:
    """0 and 1, primes, 2^k ± 1 (and a few plain integers) within [min_value, max_value]."""
    picks = [s for s in [0, *ODD_SIZES] if min_value <= s <= max_value]
    return st.one_of(st.sampled_from(picks), st.integers(min_value, max_value))


# ---- layouts --------------------------------------------------------------------------------------
LAYOUTS_2D = ("contiguous", "transposed", "row_sliced", "offset", "expanded")
LAYOUTS_1D = ("contiguous", "strided", "offset", "expanded")


def lay_out(t: torch.Tensor, layout: str) -> torch.Tensor:
    """A tensor equal to t (for "expanded": to t's first row / element, repeated) in this layout:
    transposed (column-major 2-D), row_sliced (rows further apart than their width: a slice of a
    wider buffer), offset (a nonzero storage offset), strided (1-D, every other element),
    expanded (stride 0 along dim 0)."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "transposed":
        return t.t().contiguous().t()
    if layout == "row_sliced":
        wide = (
            torch.full((t.shape[0], t.shape[1] + 3), float("nan"), dtype=t.dtype, device=t.device)
            if t.is_floating_point()
            else torch.zeros((t.shape[0], t.shape[1] + 3), dtype=t.dtype, device=t.device)
        )
        wide[:, : t.shape[1]] = t
        return wide[:, : t.shape[1]]
    if layout == "offset":
        flat = torch.empty(t.numel() + 5, dtype=t.dtype, device=t.device)
        out = flat[5:].view(t.shape)
        out.copy_(t)
        return out
    if layout == "strided":
        buf = torch.empty(2 * max(t.numel(), 1), dtype=t.dtype, device=t.device)
        out = buf[::2][: t.numel()]  # 1-D only
        out.copy_(t)
        return out
    if layout == "expanded":
        if t.shape[0] == 0:
            return t.contiguous()
        return t[:1].expand(t.shape)
    raise ValueError(layout)


def layouts(dims: int = 2) -> st.SearchStrategy[str]:
    return st.sampled_from(LAYOUTS_2D if dims == 2 else LAYOUTS_1D)


# ---- special values -------------------------------------------------------------------------------
def special_values(dtype: torch.dtype) -> list[float]:
    """±inf, NaN, −0.0, 0, the smallest subnormal and normal, and for fp8 inputs the maxima of
    e4m3 (448) and e5m2 (57344) and values just beyond them."""
    fi = torch.finfo(dtype)
    return [
        float("inf"),
        float("-inf"),
        float("nan"),
        -0.0,
        0.0,
        fi.tiny,
        fi.tiny * fi.eps,
        -fi.tiny * fi.eps,
        448.0,
        -448.0,
        464.0,
        57344.0,
        -61440.0,
    ]


@st.composite
def sprinkle(draw, t: torch.Tensor, values: list[float], max_fraction: float = 0.2) -> torch.Tensor:
    """t with a random few elements (none when drawn so) replaced by values from `values`."""
    if t.numel() == 0 or not draw(st.booleans()):
        return t
    n = draw(st.integers(1, max(1, int(t.numel() * max_fraction))))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, t.numel(), (n,), generator=g)
    vals = torch.tensor(values, dtype=torch.float64)[torch.randint(0, len(values), (n,), generator=g)]
    out = t.detach().cpu().clone().reshape(-1)
    out[idx] = vals.to(out.dtype)
    return out.view(t.shape).to(t.device)


def randn(shape, dtype, seed: int, device="cpu", scale: float = 1.0) -> torch.Tensor:
    """Fresh random non-zero values (never all zeros)."""
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype).to(device)


# ---- what a case must satisfy -------------------------------------------------------------------------
def storage_bytes(t: torch.Tensor) -> torch.Tensor:
    """A copy of every byte of t's storage (so a write anywhere in it shows, not only in t's view)."""
    raw = torch.empty(0, dtype=torch.uint8, device=t.device).set_(t.untyped_storage())
    return raw.clone()


class Unchanged:
    """`with Unchanged(a, b, ...):` fails if the block changed a byte of the tensors' storages."""

    def __init__(self, *tensors):
        self.tensors = [t for t in tensors if isinstance(t, torch.Tensor)]

    def __enter__(self):
        self.before = [storage_bytes(t) for t in self.tensors]
        return self

    def __exit__(self, *exc):
        for i, (t, b) in enumerate(zip(self.tensors, self.before)):
            assert torch.equal(storage_bytes(t), b), f"input {i} (shape {tuple(t.shape)}) was modified"
        return False


class OnlyInside:
    """`with OnlyInside(a, ...):` fails if the block wrote a byte of a tensor's storage outside the
    tensor's own view (an in-place op on a row-sliced view must leave the gaps between rows alone)."""

    def __init__(self, *tensors):
        self.tensors = tensors

    def __enter__(self):
        self.before = [storage_bytes(t) for t in self.tensors]
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is not None:  # the op raised: Unchanged (not this) checks what it left
            return False
        for t, before in zip(self.tensors, self.before):
            before.view(t.dtype).as_strided(t.shape, t.stride(), t.storage_offset()).copy_(t)
            assert torch.equal(storage_bytes(t), before), f"a write outside the view of {tuple(t.shape)}"
        return False


def clear_error(err: BaseException, op: str, *arguments: str) -> None:
    """The error names the op and one of the arguments it is about."""
    msg = str(err)
    assert op in msg, f"the error does not name the op {op!r}: {msg}"
    assert not arguments or any(re.search(rf"\b{re.escape(a)}\b", msg) for a in arguments), (
        f"the error names none of {arguments}: {msg}"
    )


def assert_matches(out: torch.Tensor, ref: torch.Tensor, rtol: float, what: str, atol: float = 0.0) -> None:
    """Non-finite values in the same places with the same sign; finite values within rtol of the
    largest finite reference magnitude (plus atol)."""
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)}, expected {tuple(ref.shape)}"
    nan_o, nan_r = out.isnan(), ref.isnan()
    assert torch.equal(nan_o, nan_r), (
        f"{what}: NaN at {nan_o.nonzero()[:5].tolist()}, expected at {nan_r.nonzero()[:5].tolist()}"
    )
    inf_o, inf_r = out.isinf(), ref.isinf()
    assert torch.equal(inf_o, inf_r) and torch.equal(out[inf_o], ref[inf_r]), f"{what}: infinities differ"
    fin = ref.isfinite()
    if fin.any():
        scale = ref[fin].abs().max().clamp_min(1e-30)
        err = ((out[fin] - ref[fin]).abs() - atol).clamp_min(0).max() / scale
        assert err <= rtol, f"{what}: max error {err:.3g} relative to the largest value (allowed {rtol:.3g})"
