"""Every op's CPU (and CUDA) kernel refuses a tensor argument on the meta device or on another
device than the op's, with an error that names the op and the argument, before it reads or writes
anything. The kernels are called through the dispatcher key of their device (a mixed call's
dispatch may pick another key: under accelerate's offload it was the CPU kernel that got the meta
tensor). The Meta key itself (the fake kernels) is for torch.compile and stays as it is."""

from __future__ import annotations

import pytest
import torch

import ember  # noqa: F401  (registers the ops)

from . import harness

E4M3 = torch.float8_e4m3fn
OPTS = (-100, 0.0, 0.0, 0.0)


def _ce(device):
    z, y, w = torch.randn(5, 7, device=device), torch.tensor([0, 1, 2, -100, 6], device=device), None
    lse = torch.ops.ember.cross_entropy_forward(z, y, w, *OPTS, False, False)[1]
    return z, y, lse


def _linear(device):
    h, wt, y = torch.randn(5, 4, device=device), torch.randn(7, 4, device=device), torch.arange(5, device=device)
    lse = torch.ops.ember.linear_cross_entropy_forward(h, wt, y, None, None, *OPTS, False, False, False)[1]
    return h, wt, y, torch.rand(5, device=device), torch.randn(7, device=device), lse


def _apollo(device):
    p, g = torch.randn(6, 4, device=device), torch.randn(6, 4, device=device)
    m, v, n = torch.zeros(6, 2, device=device), torch.zeros(6, 2, device=device), torch.zeros(1, device=device)
    return ([p], [g], [m], [v], [n], [1], [0], 1e-2, 0.9, 0.999, 1e-6, 0.0, 1.0, False, 1.01, 2, 200, 0, False)


def _fp8(device):
    a = torch.randn(8, 32, device=device).to(E4M3)
    b = torch.randn(16, 32, device=device).to(E4M3)
    return a, torch.ones(8, 1, device=device), b, torch.ones(16, 1, device=device)


def _sparse(device):
    mask = torch.rand(6, 32, generator=torch.Generator().manual_seed(0)) < 0.5
    packed = torch.ops.ember.pack_mask(mask.to(device), 0)
    x, w = torch.randn(3, 32, device=device), torch.randn(6, 32, device=device)
    return mask.to(device), packed, x, w


def sample_args(op: str, device: str) -> tuple:
    """Valid arguments of `op` on `device`, every optional tensor given."""
    if op.startswith("cross_entropy"):
        z, y, lse = _ce(device)
        wt, gl = torch.rand(5, device=device), torch.rand(5, device=device)
        return {
            "cross_entropy_forward": (z, y, wt, *OPTS, True, True),
            "cross_entropy_backward": (gl, z, y, wt, lse, *OPTS),
            "cross_entropy_backward_": (z.clone(), gl, y, wt, lse, *OPTS),
        }[op]
    if op.startswith("linear_cross_entropy"):
        h, w, y, tw, b, lse = _linear(device)
        if op == "linear_cross_entropy_forward":
            return (h, w, y, tw, b, *OPTS, True, True, True)
        return (torch.rand(5, device=device), h, w, y, tw, b, lse, *OPTS)
    if op == "apollo_step_":
        return _apollo(device)
    if op == "apollo_projection_":
        return (torch.empty(2, 6, device=device), 0, 0, 0)
    if op == "quantize_fp8":
        return (torch.randn(8, 32, device=device), E4M3, "row", 128, False)
    if op == "fp8_gemm":
        return (*_fp8(device), torch.float32, torch.randn(16, device=device), False)
    mask, packed, x, w = _sparse(device)
    return {
        "pack_mask": (mask, 0),
        "unpack_mask": (packed, 6, 32, 0),
        "masked_linear": (x, w, packed, 0, torch.randn(6, device=device)),
        "masked_linear_backward": (torch.randn(3, 6, device=device), x, w, packed, 0, True, True),
    }[op]


def tensor_positions(args):
    """(argument index, list index or None) of every tensor among args."""
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            yield i, None
        elif isinstance(a, list):
            yield from ((i, k) for k, t in enumerate(a) if isinstance(t, torch.Tensor))


def replaced(args, i, k, device):
    args = list(args)
    if k is None:
        args[i] = args[i].to(device)
    else:
        args[i] = [t.to(device) if j == k else t for j, t in enumerate(args[i])]
    return tuple(args)


DEVICES = ["cpu"] + (["cuda"] if ember.cuda_available() else [])
OPS = sorted(harness.registered_ops())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
def test_kernel_refuses_a_tensor_on_another_device(op, device):
    handle = getattr(torch.ops.ember, op).default
    names = [a.name for a in handle._schema.arguments]
    handle(*sample_args(op, device))  # the sample is valid
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU if device == "cpu" else torch._C.DispatchKey.CUDA)
    others = ["meta"] + (["cpu"] if device == "cuda" else [])
    for i, k in tensor_positions(sample_args(op, device)):
        for other in others:
            args = sample_args(op, device)
            bad = replaced(args, i, k, other)
            with harness.Unchanged(*(a for a in args if isinstance(a, torch.Tensor))):
                with pytest.raises(RuntimeError) as err:
                    handle.redispatch(keys, *bad)
            harness.clear_error(err.value, f"ember.{op}", names[i])
            assert other in str(err.value), str(err.value)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
def test_a_meta_tensor_among_real_ones_is_refused(op, device):
    # the dispatcher sends such a call to the Meta key, the fake kernel, which must not answer it
    # with uninitialized tensors; a call with every tensor on meta is shape inference, and works
    handle = getattr(torch.ops.ember, op).default
    names = [a.name for a in handle._schema.arguments]
    positions = list(tensor_positions(sample_args(op, device)))
    if len(positions) == 1:
        handle(*replaced(sample_args(op, device), *positions[0], "meta"))
        return
    for i, k in positions:
        args = sample_args(op, device)
        with harness.Unchanged(*(a for a in args if isinstance(a, torch.Tensor))):
            with pytest.raises(RuntimeError) as err:
                handle(*replaced(args, i, k, "meta"))
        harness.clear_error(err.value, f"ember.{op}", names[i])
