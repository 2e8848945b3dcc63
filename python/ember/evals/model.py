"""The lm-evaluation-harness model `ember`: an ember checkpoint (or a live model during
training) scored the way lm-eval's `hf` model scores the folder `ember export` writes.

Parity with `--model hf` rests on doing what HFLM does: TemplateLM's context/continuation split
(trailing spaces move to the continuation, the whole text is encoded then cut), the beginning-
of-document token (else end-of-document) as the context of an empty context and of the first
rolling window, windows of the model's max_seq_len (`max_position_embeddings` of the export of a
run from scratch; an init_from run's export keeps its source's, so `hf` needs `max_length`),
inputs cut on the left to max_length + 1 tokens, float32 log-softmax.

Importing this module registers `ember` with lm-eval; lm-eval 0.4.13 has no plugin discovery
for models (its registry is filled from its own table), so its command line finds `ember` only
through `python -m ember.evals`, which registers it and then runs lm-eval's command line."""

from __future__ import annotations

import warnings

import lm_eval.models  # noqa: F401  lm-eval's own models first: a registry holding only `ember` would hide them
import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import Collator, handle_stop_sequences, normalize_gen_kwargs
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from ..train.runtime import autocast

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
DEFAULT_BATCH = 16


def _batch_size(value) -> int:
    """lm-eval passes batch_size as typed ("auto", "8"): auto is the default here."""
    if value in (None, "auto") or str(value).startswith("auto"):
        return DEFAULT_BATCH
    n = int(value)
    if n < 1:
        raise ValueError(f"ember model: batch_size must be at least 1, got {value}")
    return n


@register_model("ember")
class EmberLM(TemplateLM):
    """model_args: run=RUN_OR_CHECKPOINT, device (cpu, cuda, auto), batch_size, dtype (float32,
    bfloat16: autocast). From code: EmberLM(model=m, tokenizer=t, max_length=n) scores a live
    model (the trainer's, DDP- or FSDP-wrapped: called through its forward)."""

    def __init__(
        self,
        run: str | None = None,
        device: str = "auto",
        batch_size=DEFAULT_BATCH,
        dtype: str = "float32",
        max_batch_size=None,
        model=None,
        tokenizer=None,
        max_length: int | None = None,
        **unused,
    ):
        super().__init__()
        if unused:
            raise ValueError(
                f"ember model: unknown model_args {', '.join(sorted(unused))} (run, device, batch_size, dtype)"
            )
        if not isinstance(dtype, torch.dtype) and str(dtype) not in DTYPES:
            raise ValueError(f"ember model: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.dtype = dtype if isinstance(dtype, torch.dtype) else DTYPES[str(dtype)]
        self._batch = _batch_size(batch_size)
        if model is None:
            if not run:
                raise ValueError("ember model: model_args needs run=RUN_OR_CHECKPOINT (a run or checkpoint folder)")
            model, tokenizer, max_length = _load(run, device)
        self.model, self.tok = model, tokenizer
        self._device = next(model.parameters()).device
        self._max_length = int(max_length or model.config.max_seq_len)

    @property
    def eot_token_id(self) -> int:
        return int(self.tok.eos_id)

    @property
    def prefix_token_id(self) -> int:
        return int(self.tok.bos_id if self.tok.bos_id is not None else self.tok.eos_id)

    @property
    def max_length(self) -> int:
        return self._max_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        """The run's tokenizer; its beginning-of-document token first (what a Hugging Face
        tokenizer adds by default), unless asked not to or the text already starts with it."""
        ids = [int(i) for i in self.tok.encode(string)]
        bos = self.tok.bos_id
        if add_special_tokens is None:
            add_special_tokens = not (bos is not None and string.startswith(_token_text(self.tok, bos)))
        return [int(bos)] + ids if add_special_tokens and bos is not None else ids

    def tok_decode(self, tokens) -> str:
        return self.tok.decode(tokens)

    @torch.no_grad()
    def _log_probs(self, rows: list[list[int]]) -> torch.Tensor:
        """float32 log-softmax (B, T, V) of right-padded rows (causal: padding changes nothing before it)."""
        width = max(map(len, rows))
        batch = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            batch[i, : len(r)] = torch.tensor(r)
        with autocast(self._device, self.dtype):
            logits = self.model(batch.to(self._device))
        return F.log_softmax(logits.float(), dim=-1)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """(log p(continuation | context), whether greedy decoding gives it) per request, as HFLM:
        the longest first, the input cut on the left to max_length + 1 tokens."""
        order = Collator(requests, sort_fn=lambda r: (-len(r[1] + r[2]), tuple(r[1] + r[2])))
        out = []
        for chunk in order.get_batched(n=self._batch):
            inputs = [(ctx + cont)[-(self.max_length + 1) :][:-1] for _, ctx, cont in chunk]
            logp = self._log_probs(inputs)
            for (_, _, cont), inp, row in zip(chunk, inputs, logp):
                picked = row[len(inp) - len(cont) : len(inp)]
                target = torch.tensor(cont, device=picked.device)
                greedy = bool((picked.argmax(-1) == target).all())
                out.append((float(picked.gather(1, target[:, None]).sum()), greedy))
        return order.get_original(out)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Σ log p of each text over disjoint windows of max_length tokens (HFLM's windows)."""
        totals = []
        for (text,) in (r.args for r in requests):
            windows = [
                (None, *make_disjoint_window(w))
                for w in get_rolling_token_windows(self.tok_encode(text), self.prefix_token_id, self.max_length, 1)
            ]
            totals.append(sum(ll for ll, _ in self._loglikelihood_tokens(windows)) if windows else 0.0)
        return totals

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations, stopped at the first stop string (or end of document, or max_gen_toks)."""
        out = []
        for context, gen_kwargs in (r.args for r in requests):
            kwargs = normalize_gen_kwargs(dict(gen_kwargs), 256)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=None)
            steps = int(kwargs["max_gen_toks"])
            # an empty context starts from the prefix token, as a loglikelihood request's does
            ids = self.tok_encode(context)[-max(1, self.max_length - steps) :] or [self.prefix_token_id]
            new: list[int] = []
            for _ in range(steps):
                nxt = int(self._log_probs([ids + new])[0, -1].argmax())
                if nxt == self.eot_token_id:
                    break
                new.append(nxt)
                text = self.tok_decode(new)
                if any(s and s in text for s in until) or len(ids) + len(new) >= self.max_length:
                    break
            text = self.tok_decode(new)
            for s in until:
                text = text.split(s)[0] if s else text
            out.append(text)
        return out


def _token_text(tok, token_id: int) -> str:
    """A special token as text (what HFLM compares a context's start with)."""
    inner = getattr(tok, "_tok", None)  # a Hugging Face tokenizer: its token string, which decode() skips
    return inner.id_to_token(int(token_id)) if inner is not None else tok.decode([token_id])


def _load(run: str, device: str):
    """(model, tokenizer, max_length) of a run or checkpoint folder, on `device`."""
    from ..train.distributed import pick_device
    from ..train.evaluate import load_model
    from ..train.run_data import run_tokenizer

    device = str(device or "auto")
    if device.startswith("cuda") and not torch.cuda.is_available():  # lm-eval's default is cuda:0
        warnings.warn(f"ember model: device {device}: no GPU is visible, running on the CPU (as lm-eval's hf does)")
        device = "cpu"
    where = pick_device(device) if device in ("auto", "cpu", "cuda") else torch.device(device)
    model, _, path = load_model(run, where)
    return model, run_tokenizer(path), model.config.max_seq_len
