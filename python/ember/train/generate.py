"""`ember generate`: samples from any run's model (a checkpoint folder, or a run folder: its
latest; sharded checkpoints too), on CPU or GPU.

A sample starts from the run's beginning-of-document token, or, for a tokenizer without one, its
end-of-document token (what precedes every document in the packed training windows, as GPT-2
samples unconditionally from <|endoftext|>); then the control token asked for (conditional
training: the other control token is never sampled, as in Korbak et al.), then the prompt. Each
new token is drawn from softmax(logits / temperature) cut to the top-p nucleus (temperature 0:
the argmax), with a torch.Generator seeded by --seed on the device: the same command on the same
device gives the same samples. A sample ends at the end-of-document token or after
max_new_tokens. An ember Llama keeps each layer's keys and values (a KV cache): a step runs the
new token alone; another model with `logits(tokens)` runs the whole sequence each step."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.llama import Llama
from . import checkpoint as ckpt
from . import run_data
from .config import config_from_dict
from .evaluate import load_model
from .runtime import autocast, compute_dtype

CONTROLS = {"good": "<|good|>", "bad": "<|bad|>"}


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 128
    num_samples: int = 1
    seed: int = 0
    temperature: float = 1.0
    top_p: float = 1.0

    def check(self) -> None:
        for flag, ok, want, value in (
            ("--max-new-tokens", self.max_new_tokens >= 1, ">= 1", self.max_new_tokens),
            ("--num-samples", self.num_samples >= 1, ">= 1", self.num_samples),
            ("--temperature", 0 <= self.temperature < float("inf"), "finite and >= 0 (0: greedy)", self.temperature),
            ("--top-p", 0 < self.top_p <= 1, "in (0, 1]", self.top_p),
            ("--seed", -(1 << 63) <= self.seed < 1 << 64, "in [-2^63, 2^64) (torch's seeds)", self.seed),
        ):
            if not ok:  # `not ok` also catches NaN
                raise ValueError(f"ember generate: {flag} must be {want}, got {value}")


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """logits (..., V) with -inf outside the nucleus: the most probable tokens whose probabilities
    reach top_p together (the one that crosses it included; the most probable always kept)."""
    if top_p >= 1:
        return logits
    probs, order = logits.softmax(-1).sort(-1, descending=True)
    before = probs.cumsum(-1) - probs  # the mass of the tokens more probable than each
    drop = torch.zeros_like(before, dtype=torch.bool).scatter(-1, order, before >= top_p)
    return logits.masked_fill(drop, float("-inf"))


def next_tokens(logits: torch.Tensor, s: Sampling, gen: torch.Generator) -> torch.Tensor:
    """(B,) ids from the last position's float32 logits (B, V)."""
    if s.temperature == 0:
        return logits.argmax(-1)
    # shifted to a maximum of 0, in float64: no temperature overflows the logits or turns a banned
    # -inf into NaN (-inf / inf), which multinomial refuses
    shifted = logits.double() - logits.max(-1, keepdim=True).values.double()
    probs = top_p_filter(shifted / s.temperature, s.top_p).softmax(-1)
    return torch.multinomial(probs, 1, generator=gen)[:, 0]


class Recompute:
    """Next-token logits of any model with `logits(tokens)`: the whole sequence every step."""

    def __init__(self, model):
        self.model, self.seq = model, None

    def __call__(self, new: torch.Tensor) -> torch.Tensor:
        self.seq = new if self.seq is None else torch.cat([self.seq, new], 1)
        return self.model.logits(self.seq)[:, -1]


class Cached:
    """Next-token logits of an ember Llama with a KV cache: Llama.hidden's blocks run on the new
    tokens alone, attending to the keys and values kept from the earlier ones; then Llama.logits'
    head (the tests check both against Llama.logits on the whole sequence)."""

    def __init__(self, model: Llama):
        self.model, self.keys, self.values, self.length = model, [], [], 0

    def _attention(self, i: int, att, x: torch.Tensor, cos, sin) -> torch.Tensor:
        q, k, v = att.project(x, cos, sin)
        if i < len(self.keys):
            k, v = torch.cat([self.keys[i], k], 2), torch.cat([self.values[i], v], 2)
            self.keys[i], self.values[i] = k, v
        else:
            self.keys.append(k)
            self.values.append(v)
        # the first call sees its tokens alone (causal); later ones one token that sees everything
        return att.attend(q, k, v, causal=self.length == 0 and x.shape[1] > 1)

    def __call__(self, new: torch.Tensor) -> torch.Tensor:
        m, start = self.model, self.length
        if start + new.shape[1] > m.config.max_seq_len:
            raise ValueError(f"generate: {start + new.shape[1]} tokens pass max_seq_len {m.config.max_seq_len}")
        cos, sin = m.rope_cos[start : start + new.shape[1]], m.rope_sin[start : start + new.shape[1]]
        x = m.tok_embeddings(new)
        for i, layer in enumerate(m.layers):
            x = x + self._attention(i, layer.attention, layer.attention_norm(x), cos, sin)
            x = x + layer.feed_forward(layer.ffn_norm(x))
        self.length += new.shape[1]
        return m.head_logits(m.norm(x)[:, -1])


@torch.no_grad()
def sample(model, prompt: list[int], s: Sampling, eos_id: int, banned=(), dtype=torch.float32) -> list[list[int]]:
    """num_samples continuations of `prompt` (each without its end-of-document token); `banned`:
    ids never sampled."""
    device = model.output_weight.device
    gen = torch.Generator(device=device).manual_seed(s.seed)
    seq = torch.tensor([prompt] * s.num_samples, dtype=torch.long, device=device)
    done = torch.zeros(s.num_samples, dtype=torch.bool, device=device)
    step, new = (Cached if isinstance(model, Llama) else Recompute)(model), seq
    for _ in range(s.max_new_tokens):
        with autocast(device, dtype):
            logits = step(new)
        if banned:
            logits[:, list(banned)] = float("-inf")
        new = next_tokens(logits, s, gen)
        new = torch.where(done, torch.full_like(new, eos_id), new)  # a finished sample stays finished
        new, done = new[:, None], done | (new == eos_id)
        seq = torch.cat([seq, new], 1)
        if bool(done.all()):
            break
    out = []
    for row in seq[:, len(prompt) :].tolist():
        out.append(row[: row.index(eos_id)] if eos_id in row else row)
    return out


def decode(tok, ids: list[int]) -> str:
    """Text of ids, with the control tokens written as their names (a sentence-level run places
    them between sentences)."""
    names = {v: k for k, v in tok.control_tokens.items()}
    text, run = [], []
    for i in ids:
        if i in names:
            text += [tok.decode(run), names[i]]
            run = []
        else:
            run.append(i)
    return "".join(text + [tok.decode(run)])


def continuation(tok, prompt: list[int], ids: list[int]) -> str:
    """Text of a sample's ids as they follow the prompt's ids: both decoded together, the prompt's
    text cut off (a SentencePiece tokenizer drops the space that starts the text it decodes, so
    "The" and " cat" decoded apart print as "Thecat")."""
    head, whole = decode(tok, prompt), decode(tok, prompt + ids)
    return whole[len(head) :] if whole.startswith(head) else decode(tok, ids)


def prompt_ids(tok, prompt: str, control: str | None, checkpoint) -> list[int]:
    """The start token, the control token asked for, the prompt's ids."""
    ids = [tok.bos_id if tok.bos_id is not None else tok.eos_id]
    if control is not None:
        name = CONTROLS[control]
        if name not in tok.control_tokens:
            has = ", ".join(tok.control_tokens) or "none: its data was prepared without --control-tokens"
            raise ValueError(
                f"ember generate: --control {control}: the run of {checkpoint} has no {name} token (its control "
                f"tokens: {has})"
            )
        ids.append(tok.control_tokens[name])
    return ids + [int(i) for i in tok.encode(prompt)] if prompt else ids


def generate(checkpoint, prompt: str = "", control: str | None = None, s: Sampling = Sampling(), device="cpu") -> dict:
    """Samples of a checkpoint's model: {"checkpoint", "step", "prompt", "control", sampling
    settings, "samples": [{"text", "ids", "ended"}]}. Everything is checked before the model loads."""
    s.check()
    path = ckpt.find_checkpoint(checkpoint)
    meta = ckpt.read_meta(path)
    saved = config_from_dict(meta["config"])
    tok = run_data.run_tokenizer(path)
    ids = prompt_ids(tok, prompt, control, path)
    limit = saved.data.seq_len
    if len(ids) + s.max_new_tokens > limit:
        raise ValueError(
            f"ember generate: --max-new-tokens {s.max_new_tokens}: the start ({len(ids)} tokens: start token, control "
            f"token, prompt) and the new tokens pass the run's sequence length {limit}, the longest it trained on"
            + (f"; ask for at most {limit - len(ids)}" if len(ids) < limit else "; shorten --prompt")
        )
    model, _, _ = load_model(path, device)
    device = model.output_weight.device
    banned = [tok.control_tokens[CONTROLS[c]] for c in CONTROLS if control and c != control]
    banned += range(tok.vocab_size, model.config.vocab_size)  # a --model.vocab_size padding: no token's id
    rows = sample(model, ids, s, tok.eos_id, banned, compute_dtype(saved, device))
    head = ids[1 + (control is not None) :]  # the prompt's own ids, after the start and control tokens
    samples = [{"text": continuation(tok, head, r), "ids": r, "ended": len(r) < s.max_new_tokens} for r in rows]
    return {
        "checkpoint": str(path),
        "step": meta["step"],
        "prompt": prompt,
        "control": control,
        "device": str(device),
        **vars(s),
        "samples": samples,
    }
