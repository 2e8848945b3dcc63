"""Real sizes past 2^31 elements (opt-in: `python -m pytest -m large`, on a machine with ~40 GB of
free host or GPU memory): the kernels' offsets must be 64-bit. Each test checks the rows and
columns at the far end, where a 32-bit offset would have wrapped, against a float64 reference."""

import pytest
import torch

import ember
from ember.float8.reference import quantize_fp8_reference

from ember.reference import cross_entropy as reference

pytestmark = pytest.mark.large

TOKENS, VOCAB, DIM = 32768, 128256, 4096  # N × V = 4.2e9 logits; V × d = 5.3e8 weights


def _far_rows(n):
    return torch.tensor([0, n // 2, n - 2, n - 1])


def test_cross_entropy_at_32k_tokens_by_128k_vocabulary(device):
    g = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(TOKENS, VOCAB, generator=g, device=device, dtype=torch.bfloat16)
    target = torch.randint(0, VOCAB, (TOKENS,), generator=g, device=device)
    target[-1] = VOCAB - 1
    loss, lse, _, _ = torch.ops.ember.cross_entropy_forward(logits, target, None, -100, 0.0, 0.0, 0.0, False, False)
    grad_loss = torch.ones(TOKENS, device=device)
    grad = torch.ops.ember.cross_entropy_backward(grad_loss, logits, target, None, lse, -100, 0.0, 0.0, 0.0)
    rows = _far_rows(TOKENS)
    z = logits[rows.to(device)].cpu()
    rloss, rlse, _, _ = reference.rows(z, target[rows.to(device)].cpu())
    torch.testing.assert_close(loss[rows.to(device)].cpu().double(), rloss, rtol=1e-5, atol=1e-4)
    rgrad = reference.grad(z, target[rows.to(device)].cpu(), torch.ones(()))
    torch.testing.assert_close(grad[rows.to(device)].cpu().double(), rgrad, rtol=0, atol=2 * 2**-8)


def test_rowwise_quantize_at_32k_by_128k(device):
    x = torch.randn(TOKENS, VOCAB, device=device, dtype=torch.bfloat16)
    q, scale = ember.ops.quantize_fp8(x, granularity="row")
    rows = _far_rows(TOKENS).to(device)
    rq, rs = quantize_fp8_reference(x[rows].cpu(), torch.float8_e4m3fn, "row")
    assert torch.equal(q[rows].cpu().view(torch.uint8), rq.view(torch.uint8))
    assert torch.equal(scale[rows].cpu(), rs)


def test_bitmask_linear_on_a_128k_by_4k_weight(device):
    g = torch.Generator(device=device).manual_seed(1)
    w = torch.randn(VOCAB, DIM, generator=g, device=device, dtype=torch.bfloat16)
    mask = torch.rand(VOCAB, DIM, generator=g, device=device) < 0.5
    x = torch.randn(8, DIM, generator=g, device=device, dtype=torch.bfloat16)
    y = ember.ops.masked_linear(x, w, ember.ops.pack_mask(mask))
    cols = _far_rows(VOCAB).to(device)
    ref = x.double() @ torch.where(mask[cols], w[cols], 0).double().t()
    torch.testing.assert_close(y[:, cols].double(), ref, rtol=2e-2, atol=2e-2 * DIM**0.5)
