"""The Llama model against plain references: causal, RoPE, GQA, meta-device init, loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from ember.losses.lm import CausalLMLoss
from ember.models import CONFIGS, Llama, LlamaConfig
from ember.models.llama import apply_rope, rope_tables

CFG = LlamaConfig(dim=48, n_layers=2, n_heads=6, n_kv_heads=2, ffn_hidden=72, vocab_size=101, max_seq_len=37)


def make(cfg=CFG, seed=0):
    with torch.device("meta"):
        m = Llama(cfg)
    return m.to_empty(device="cpu").init_weights(seed)


def test_meta_init_is_reproducible_and_seeded():
    a, b, c = make(seed=3), make(seed=3), make(seed=4)
    for (n, p), q, r in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(p, q), n
        if p.ndim == 2:
            assert not torch.equal(p, r), n
    std = a.layers[0].attention.wq.weight.std().item()
    assert std == pytest.approx(0.02, rel=0.1)


def reference_attention(block, x, cos, sin):
    """Grouped-query attention written out: repeat k/v heads, explicit causal softmax."""
    att = block.attention
    b, t, _ = x.shape
    q = att.wq(x).view(b, t, att.n_heads, att.head_dim).transpose(1, 2)
    k = att.wk(x).view(b, t, att.kv_heads, att.head_dim).transpose(1, 2)
    v = att.wv(x).view(b, t, att.kv_heads, att.head_dim).transpose(1, 2)

    # RoPE as complex rotation of the pairs (i, i + D/2)
    def rot(z):
        half = z.shape[-1] // 2
        zc = torch.complex(z[..., :half].double(), z[..., half:].double())
        pos = torch.arange(t, dtype=torch.float64)[:, None]
        freqs = 1.0 / CFG.rope_theta ** (torch.arange(0, z.shape[-1], 2, dtype=torch.float64) / z.shape[-1])
        zc = zc * torch.polar(torch.ones(t, half, dtype=torch.float64), pos * freqs)
        return torch.cat([zc.real, zc.imag], -1)

    q, k, v = rot(q), rot(k), v.double()
    rep = att.n_heads // att.kv_heads
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    s = q @ k.transpose(-1, -2) / math.sqrt(att.head_dim)
    s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    y = (s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1)
    return F.linear(y, att.wo.weight.double())


def test_attention_matches_reference():
    m = make()
    x = torch.randn(3, 29, CFG.dim)
    got = m.layers[0].attention(x, m.rope_cos, m.rope_sin)
    torch.testing.assert_close(
        got.double(), reference_attention(m.layers[0], x, m.rope_cos, m.rope_sin), rtol=1e-4, atol=1e-5
    )


def test_rope_preserves_norms_and_relative_positions():
    cos, sin = rope_tables(CFG)
    x = torch.randn(1, 1, 29, CFG.head_dim)
    torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))
    q, k = torch.randn(CFG.head_dim), torch.randn(CFG.head_dim)

    def dot(i, j):
        qs = apply_rope(q.expand(1, 1, 29, -1), cos, sin)[0, 0, i]
        ks = apply_rope(k.expand(1, 1, 29, -1), cos, sin)[0, 0, j]
        return (qs @ ks).item()

    assert dot(5, 2) == pytest.approx(dot(20, 17), rel=1e-4)


def test_causal_and_loss_matches_logits():
    m = make()
    tokens = torch.randint(0, CFG.vocab_size, (2, 31))
    logits = m(tokens)
    changed = tokens.clone()
    changed[:, 20:] = (changed[:, 20:] + 1) % CFG.vocab_size
    torch.testing.assert_close(m(changed)[:, :20], logits[:, :20])
    targets = torch.randint(0, CFG.vocab_size, (2, 31))
    targets[0, :3] = -100
    w = torch.rand(2, 31)
    ref = (
        F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none", ignore_index=-100) * w.flatten()
    ).sum()
    torch.testing.assert_close(m(tokens, targets, w), ref, rtol=1e-5, atol=1e-4)  # ember's fused kernel
    torch.testing.assert_close(m(tokens, targets, w, loss=CausalLMLoss(fused_linear_ce=False)), ref)


@pytest.mark.parametrize("autocast", [False, True])
def test_logits_are_float32_and_give_the_per_token_loss_of_forward(autocast):
    m = make()
    tokens, targets = torch.randint(0, CFG.vocab_size, (2, 7)), torch.randint(0, CFG.vocab_size, (2, 7))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = m.logits(tokens)
        per_token = torch.empty(2, 7)
        for b in range(2):
            for t in range(7):
                one = torch.zeros(2, 7)
                one[b, t] = 1.0  # forward's sum with one token weighted: that token's loss
                per_token[b, t] = m(tokens, targets, one)
    assert logits.dtype == torch.float32 and logits.shape == (2, 7, CFG.vocab_size)
    mine = -logits.log_softmax(-1).gather(-1, targets[..., None])[..., 0]
    tol = dict(rtol=2e-2, atol=2e-2) if autocast else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mine, per_token, **tol)
    if not autocast:
        torch.testing.assert_close(logits, m(tokens))


def test_activation_checkpointing_gives_the_same_gradients():
    m = make()
    tokens, targets = torch.randint(0, 101, (2, 17)), torch.randint(0, 101, (2, 17))
    m(tokens, targets).backward()
    g = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    m.activation_checkpointing = True
    m(tokens, targets).backward()
    for a, p in zip(g, m.parameters()):
        torch.testing.assert_close(p.grad, a)


def test_named_sizes():
    assert set(CONFIGS) >= {"debug", "60m", "130m", "350m", "1b", "7b", "8b"}
    with torch.device("meta"):
        sizes = {k: Llama(c).num_params() for k, c in CONFIGS.items()}
    assert 0.5e6 < sizes["debug"] < 3e6
    assert 55e6 < sizes["60m"] < 65e6 + 32000 * 512 and 1.2e9 < sizes["1b"] < 1.4e9
    assert 7.9e9 < sizes["8b"] < 8.1e9
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        LlamaConfig(dim=64, n_heads=4, n_kv_heads=3)
