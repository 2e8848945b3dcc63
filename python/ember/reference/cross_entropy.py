"""float64 reference of the cross-entropy ops with their special-value semantics (documented in
python/ember/ops/cross_entropy.py), written from the formula, row by row. The tests hold the
kernels to it, the selftest does on the user's device, and a disabled kernel's calls run through
it (on `device`: the CPU by default, where the tests compare):

- a −inf logit is a class of probability 0: nothing in lse, 0·(−inf) = 0 in the entropy, p = 0 in
  the gradient; a −inf target logit gives loss +inf; label smoothing over a −inf logit gives +inf;
- a +inf or NaN logit (after the softcap) makes the row's lse, loss, log-prob, entropy and
  gradient NaN; an all −inf row has lse −inf and NaN loss, log-prob, entropy and gradient;
- a token that is ignored, or of weight 0, has loss 0 and gradient exactly 0 whatever its logits;
  otherwise the weight and the upstream gradient are plain factors (NaN / inf propagate).
"""

from __future__ import annotations

import torch


def _prepare(z, softcap, device):
    z = z.double().to(device)  # differentiable: the tests also take autograd's gradient of these rows
    return softcap * torch.tanh(z / softcap) if softcap else z


def _lse(z):
    poisoned = z.isnan().any(-1) | (z == float("inf")).any(-1)
    lse = torch.logsumexp(z, -1)
    return torch.where(poisoned, torch.full_like(lse, float("nan")), lse)


def _probs(z, lse):
    masked = (z == float("-inf")) & (lse != float("-inf"))[:, None]  # an all −inf row has no p: NaN
    return torch.where(masked, torch.zeros_like(z), torch.exp(z - lse[:, None]))


def _scale(target, weight, ignore_index, n, device):
    w = torch.ones(n, dtype=torch.float64, device=device) if weight is None else weight.detach().double().to(device)
    dead = (target == ignore_index) | (w == 0)
    return w, dead


def rows(z, target, weight=None, ignore_index=-100, label_smoothing=0.0, z_loss=0.0, softcap=None, device="cpu"):
    """Per-token (loss, lse, log p(target), entropy), float64."""
    z, target = _prepare(z, softcap, device), target.to(device)
    n, v = z.shape
    lse = _lse(z)
    w, dead = _scale(target, weight, ignore_index, n, device)
    y = torch.where(target == ignore_index, 0, target)
    zy = z.gather(1, y[:, None])[:, 0]
    ls = label_smoothing
    smooth = ls * (lse - z.mean(-1)) if ls > 0 else torch.zeros_like(lse)
    loss = w * ((1 - ls) * (lse - zy) + smooth + z_loss * lse**2)
    p = _probs(z, lse)
    pd = torch.where(p == 0, torch.zeros_like(z), p * (lse[:, None] - z))  # Σ p·(lse − z): no cancellation
    ent = pd.sum(-1)
    zero = torch.zeros_like(lse)
    ignored = target == ignore_index
    return (torch.where(dead, zero, loss), lse, torch.where(ignored, zero, zy - lse), torch.where(ignored, zero, ent))


def grad(
    z_raw,
    target,
    grad_loss,
    weight=None,
    ignore_index=-100,
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
    device="cpu",
):
    """∂(Σ_i grad_loss_i·loss_i)/∂z_raw, float64."""
    z, target = _prepare(z_raw, softcap, device), target.to(device)
    n, v = z.shape
    lse = _lse(z)
    w, dead = _scale(target, weight, ignore_index, n, device)
    s = w * grad_loss.detach().double().to(device).expand(n)
    g = _probs(z, lse) * (1 + 2 * z_loss * lse)[:, None] - label_smoothing / v
    y = torch.where(target == ignore_index, 0, target)
    g[torch.arange(n, device=device), y] -= 1 - label_smoothing
    if softcap:  # tanh saturates to exactly 1 in fp32 (z = c): the kernels' derivative is then 0
        t = (z / softcap).float().double()
        g = g * (1 - t**2)
    g = g * s[:, None]
    return torch.where(dead[:, None], torch.zeros_like(g), g)
