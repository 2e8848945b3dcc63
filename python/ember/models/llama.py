"""A Llama-style decoder: RMSNorm, RoPE, SwiGLU, grouped-query attention through
F.scaled_dot_product_attention, optional tied embeddings. The options that Mistral, Qwen2 and
Qwen3 checkpoints need (q/k/v biases, per-head q/k RMSNorm, a head size other than dim/heads,
Llama-3 RoPE scaling) are off by default; `ember.models.from_hf` sets them.

Built on the meta device and then initialized (`Llama.init_weights`), so a large config can be
sharded before any memory is spent on it:

    with torch.device("meta"):
        model = Llama(cfg)
    model.to_empty(device="cuda")
    model.init_weights(seed=0)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..amp import autocast_dtype_of
from ..losses.lm import CausalLMLoss
from ..sparse import SparseLinear


@dataclass(frozen=True)
class LlamaConfig:
    dim: int = 256
    n_layers: int = 4
    n_heads: int = 8
    n_kv_heads: int | None = None  # None: as many as query heads (no grouping)
    vocab_size: int = 257
    ffn_hidden: int | None = None  # None: Llama's rule, 8/3·dim rounded up to `multiple_of`
    multiple_of: int = 64
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 2048
    tie_embeddings: bool = False
    init_std: float = 0.02
    head_size: int = 0  # 0: dim // n_heads (Qwen3 and some Mistral checkpoints set another)
    attn_bias: bool = False  # biases on the q, k, v projections (Qwen2)
    qk_norm: bool = False  # RMSNorm of each query and key head before RoPE (Qwen3)
    # RoPE frequency scaling, Hugging Face's rope_parameters without rope_theta: None, or
    # {"rope_type": "linear", "factor": f} or {"rope_type": "llama3", "factor", "low_freq_factor",
    # "high_freq_factor", "original_max_position_embeddings"}.
    rope_scaling: dict | None = None
    # The Hugging Face config.json this model was imported from (kept so that an export writes the
    # same architecture back); not part of the model's identity.
    hf_config: dict | None = field(default=None, compare=False, repr=False)
    # Its generation_config.json (sampling defaults, end-of-sequence ids), written back on export.
    hf_generation_config: dict | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        kv = self.kv_heads
        if self.head_size:
            if self.head_size % 2:
                raise ValueError(f"LlamaConfig: head_size {self.head_size} must be even")
        elif self.dim % self.n_heads or (self.dim // self.n_heads) % 2:
            raise ValueError(f"LlamaConfig: dim {self.dim} must split into {self.n_heads} heads of even size")
        if self.n_heads % kv:
            raise ValueError(f"LlamaConfig: n_heads {self.n_heads} must be a multiple of n_kv_heads {kv}")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.head_size or self.dim // self.n_heads

    @property
    def hidden(self) -> int:
        if self.ffn_hidden:
            return self.ffn_hidden
        return self.multiple_of * math.ceil(int(8 * self.dim / 3) / self.multiple_of)

    def replace(self, **changes) -> "LlamaConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


# Named sizes. "debug" trains on a CPU in minutes; the LLaMA sizes are those of the GaLore /
# APOLLO papers (their vocabulary: the 32000-token T5 tokenizer, 256-token context); "8b" is
# Llama 3.1 8B. The trainer replaces vocab_size with its tokenizer's.
_BYTE_LEVEL = dict(vocab_size=257, max_seq_len=1024, tie_embeddings=True)  # a vocabulary small enough to tie
_LLAMA3 = dict(n_kv_heads=8, vocab_size=128256, rope_theta=500000.0)  # grouped-query heads, its tokenizer, RoPE base
CONFIGS: dict[str, LlamaConfig] = {
    "debug": LlamaConfig(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_hidden=384, **_BYTE_LEVEL),
    "60m": LlamaConfig(dim=512, n_layers=8, n_heads=8, ffn_hidden=1376, vocab_size=32000, max_seq_len=1024),
    "130m": LlamaConfig(dim=768, n_layers=12, n_heads=12, ffn_hidden=2048, vocab_size=32000, max_seq_len=1024),
    "350m": LlamaConfig(dim=1024, n_layers=24, n_heads=16, ffn_hidden=2736, vocab_size=32000, max_seq_len=1024),
    "1b": LlamaConfig(dim=2048, n_layers=24, n_heads=32, ffn_hidden=5461, vocab_size=32000, max_seq_len=1024),
    "7b": LlamaConfig(dim=4096, n_layers=32, n_heads=32, ffn_hidden=11008, vocab_size=32000, max_seq_len=2048),
    "8b": LlamaConfig(dim=4096, n_layers=32, n_heads=32, ffn_hidden=14336, max_seq_len=8192, **_LLAMA3),
}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)

    def reset_parameters(self):
        nn.init.ones_(self.weight)


def rope_tables(cfg: LlamaConfig, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (max_seq_len, head_dim/2), computed in float64 then stored in fp32."""
    inv = 1.0 / cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float64, device=device) / cfg.head_dim)
    if cfg.rope_scaling:
        inv = scale_rope_frequencies(inv, cfg.rope_scaling)
    angles = torch.outer(torch.arange(cfg.max_seq_len, dtype=torch.float64, device=device), inv)
    return angles.cos().float(), angles.sin().float()


def scale_rope_frequencies(inv: torch.Tensor, scaling: dict) -> torch.Tensor:
    """RoPE inverse frequencies stretched for a longer context: "linear" divides them all by the
    factor; "llama3" (Llama 3.1) divides the low frequencies (wavelengths past the original
    context / low_freq_factor), keeps the high ones and interpolates in between."""
    kind, factor = scaling["rope_type"], float(scaling["factor"])
    if kind == "linear":
        return inv / factor
    if kind != "llama3":
        raise ValueError(f"LlamaConfig.rope_scaling: rope_type {kind!r} is not supported (linear, llama3)")
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    context = float(scaling["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > context / low, inv / factor, inv)
    smooth = (context / wavelen - low) / (high - low)
    between = (wavelen <= context / low) & (wavelen >= context / high)
    return torch.where(between, (1 - smooth) * scaled / factor + smooth * scaled, scaled)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, D), rotating the pairs (x[..., :D/2], x[..., D/2:]) (the "half" layout)."""
    t = x.shape[-2]
    cos, sin = cos[:t].to(x.dtype), sin[:t].to(x.dtype)
    a, b = x.chunk(2, dim=-1)
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.n_heads, self.kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=cfg.attn_bias)
        self.wk = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, bias=cfg.attn_bias)
        self.wv = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, bias=cfg.attn_bias)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps)
            self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps)
        self.qk_norm = cfg.qk_norm

    def forward(self, x, cos, sin):
        return self.attend(*self.project(x, cos, sin), causal=True)

    def project(self, x, cos, sin):
        """(q, k, v) of x, each (B, heads, T, head_dim), RoPE applied: what forward attends with
        (and what a KV cache keeps of k and v)."""
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, self.n_heads, self.head_dim)
        k = self.wk(x).view(b, t, self.kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = self.wv(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def attend(self, q, k, v, causal: bool):
        """The output projection of q's attention over k, v (causal: position i sees keys <= i)."""
        b, _, t, _ = q.shape
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=self.kv_heads != self.n_heads)
        return self.wo(y.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.hidden, bias=False)  # gate
        self.w3 = nn.Linear(cfg.dim, cfg.hidden, bias=False)  # up
        self.w2 = nn.Linear(cfg.hidden, cfg.dim, bias=False)  # down

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x, cos, sin):
        x = x + self.attention(self.attention_norm(x), cos, sin)
        return x + self.feed_forward(self.ffn_norm(x))


_PLAIN_LOSS = CausalLMLoss()  # immutable: Σ w_i·CE_i through the fused kernel


class Llama(nn.Module):
    def __init__(self, cfg: LlamaConfig, *, activation_checkpointing: bool = False):
        super().__init__()
        self.config = cfg
        self.activation_checkpointing = activation_checkpointing  # recompute each block in the backward
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = None if cfg.tie_embeddings else nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        # Recomputed by init_weights (not saved: they follow from the config).
        self.register_buffer("rope_cos", torch.empty(cfg.max_seq_len, cfg.head_dim // 2), persistent=False)
        self.register_buffer("rope_sin", torch.empty(cfg.max_seq_len, cfg.head_dim // 2), persistent=False)

    @property
    def output_weight(self) -> torch.Tensor:
        """The (vocab, dim) matrix of the output head (the embedding when tied; a pruned head's
        weight through its mask, as its forward would use it: the head's GEMM is in the loss)."""
        if self.output is None:
            return self.tok_embeddings.weight
        if isinstance(self.output, SparseLinear):
            return self.output.weight.masked_fill(~self.output.dense_mask(), 0)
        return self.output.weight

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> "Llama":
        """Initialize every parameter and buffer in place (after `to_empty`), reproducibly from
        `seed`: normal(0, init_std) for embeddings and projections, output projections of each
        block scaled by 1/sqrt(2·n_layers) (GPT-2), ones for norms."""
        cfg = self.config
        gen = torch.Generator(device="cpu")
        gen.manual_seed(0 if seed is None else seed)

        def normal_(p, std):
            p.copy_(torch.empty(p.shape, dtype=torch.float32).normal_(0.0, std, generator=gen))

        normal_(self.tok_embeddings.weight, cfg.init_std)
        deep = cfg.init_std / math.sqrt(2 * cfg.n_layers)
        for layer in self.layers:
            for lin in (
                layer.attention.wq,
                layer.attention.wk,
                layer.attention.wv,
                layer.feed_forward.w1,
                layer.feed_forward.w3,
            ):
                normal_(lin.weight, cfg.init_std)
            normal_(layer.attention.wo.weight, deep)
            normal_(layer.feed_forward.w2.weight, deep)
            layer.attention_norm.reset_parameters()
            layer.ffn_norm.reset_parameters()
            if cfg.attn_bias:
                for lin in (layer.attention.wq, layer.attention.wk, layer.attention.wv):
                    nn.init.zeros_(lin.bias)
            if cfg.qk_norm:
                layer.attention.q_norm.reset_parameters()
                layer.attention.k_norm.reset_parameters()
        self.norm.reset_parameters()
        if self.output is not None:
            normal_(self.output.weight, cfg.init_std)
        self.init_buffers()
        return self

    @torch.no_grad()
    def init_buffers(self) -> None:
        cos, sin = rope_tables(self.config)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final normed hidden states (B, T, dim): what the output head (or a fused
        linear + cross-entropy) consumes."""
        if tokens.shape[-1] > self.config.max_seq_len:
            imported = self.config.hf_config is not None  # its RoPE tables end at max_position_embeddings
            hint = f" (from_hf(path, max_seq_len={tokens.shape[-1]}) makes longer tables)" if imported else ""
            raise ValueError(
                f"Llama: sequence length {tokens.shape[-1]} exceeds max_seq_len {self.config.max_seq_len}{hint}"
            )
        x = self.tok_embeddings(tokens)
        for layer in self.layers:
            if self.activation_checkpointing and torch.is_grad_enabled():
                x = checkpoint(layer, x, self.rope_cos, self.rope_sin, use_reentrant=False)
            else:
                x = layer(x, self.rope_cos, self.rope_sin)
        return self.norm(x)

    def forward(
        self,
        tokens: torch.Tensor,
        targets: torch.Tensor | None = None,
        token_weights: torch.Tensor | None = None,
        loss: CausalLMLoss | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, vocab); with targets, the loss summed over the tokens instead: `loss`
        (the caller's; default Σ w_i·CE_i through the fused kernel, targets of -100 ignored; see
        ember.losses.lm), computed inside forward so that DDP / FSDP wrappers see the output head
        used."""
        h = self.hidden(tokens)
        if targets is None:
            return F.linear(h, self.output_weight)
        return (loss or _PLAIN_LOSS)(tokens, h, self.output_weight, targets, token_weights)

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Float32 logits (B, T, vocab) of every position: the head's GEMM in the dtype the
        training loss computes it in (autocast's when on, else the weights'), then cast up, so
        that log_softmax of them is the per-token loss forward's targets give. On a plain module
        (not an FSDP-wrapped one, whose parameters are gathered only inside its forward)."""
        return self.head_logits(self.hidden(tokens))

    def head_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Float32 logits of final hidden states h (..., dim), by logits()' rule."""
        dtype = autocast_dtype_of(h)
        return F.linear(h.to(dtype), self.output_weight.to(dtype)).float()

    def num_params(self, embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if not embeddings:
            n -= self.tok_embeddings.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6 per non-embedding parameter (plus the output head when
        tied) and 12·layers·dim·seq for attention scores (PaLM appendix B)."""
        cfg = self.config
        n = self.num_params(embeddings=False) + (cfg.vocab_size * cfg.dim if cfg.tie_embeddings else 0)
        return 6 * n + 12 * cfg.n_layers * cfg.dim * seq_len
