"""`ember generate`'s sampling against direct computations: greedy is the argmax of the logits step
by step, top-p keeps the nucleus, a seed fixes the samples, a sample ends at end-of-document,
and misuse is refused before any model loads."""

import pytest
import torch

from ember.data.tokenizer import ByteTokenizer
from ember.models import Llama, LlamaConfig
from ember.train.generate import Cached, Sampling, decode, prompt_ids, sample, top_p_filter

CFG = LlamaConfig(dim=32, n_layers=1, n_heads=2, ffn_hidden=64, vocab_size=259, max_seq_len=48)
EOS = 256


@pytest.fixture(scope="module")
def model():
    with torch.device("meta"):
        m = Llama(CFG)
    return m.to_empty(device="cpu").init_weights(3).eval()


def test_greedy_is_the_argmax_of_the_logits_at_every_step(model):
    prompt = [EOS, 257, 104, 105]
    rows = sample(model, prompt, Sampling(max_new_tokens=20, num_samples=2, temperature=0), eos_id=999, banned=[258])
    assert rows[0] == rows[1] and len(rows[0]) == 20
    seq = list(prompt)
    for token in rows[0]:
        logits = model.logits(torch.tensor([seq]))[0, -1]
        logits[258] = float("-inf")
        assert token == int(logits.argmax()) and token != 258
        seq.append(token)


def test_the_kv_cache_gives_the_logits_of_the_whole_sequence():
    cfg = CFG.replace(n_heads=4, n_kv_heads=2, qk_norm=True, attn_bias=True, tie_embeddings=False)
    with torch.device("meta"):
        m = Llama(cfg)
    m = m.to_empty(device="cpu").init_weights(1).eval()
    seq = torch.randint(0, cfg.vocab_size, (2, 9))
    step = Cached(m)
    with torch.no_grad():
        torch.testing.assert_close(step(seq[:, :5]), m.logits(seq[:, :5])[:, -1], rtol=1e-5, atol=1e-5)
        for t in range(5, 9):
            torch.testing.assert_close(step(seq[:, t : t + 1]), m.logits(seq[:, : t + 1])[:, -1], rtol=1e-5, atol=1e-5)


def test_top_p_keeps_the_smallest_set_that_reaches_p():
    torch.manual_seed(0)
    logits = torch.randn(5, 40) * 3
    for p in (0.05, 0.3, 0.5, 0.9, 0.999):
        kept = top_p_filter(logits, p).isfinite()
        for row, keep in zip(logits, kept):
            probs = row.double().softmax(-1)
            order = probs.argsort(descending=True).tolist()
            want, mass = set(), 0.0
            for i in order:  # add the most probable until p is reached
                want.add(i)
                mass += float(probs[i])
                if mass >= p:
                    break
            assert set(torch.nonzero(keep).flatten().tolist()) == want, p
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def test_a_seed_fixes_the_samples_and_top_p_limits_them(model):
    s = Sampling(max_new_tokens=12, num_samples=3, seed=5, temperature=1.5)
    a, b = sample(model, [EOS], s, EOS), sample(model, [EOS], s, EOS)
    assert a == b and a != sample(model, [EOS], Sampling(12, 3, 6, 1.5), EOS)
    narrow = sample(model, [EOS], Sampling(1, 20, 0, 1.0, top_p=1e-6), EOS)  # the nucleus is the argmax alone
    assert {r[0] for r in narrow} == {int(model.logits(torch.tensor([[EOS]]))[0, -1].argmax())}


class Scripted(torch.nn.Module):
    """A model whose next token is position-dependent: row 0 ends (eos) at its 3rd new token,
    row 1 never does."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    @property
    def output_weight(self):
        return self.w

    def logits(self, seq):
        out = torch.full((seq.shape[0], seq.shape[1], 10), -10.0)
        out[:, -1, 7] = 0.0
        if seq.shape[1] == 3:
            out[0, -1, 9] = 10.0
        return out


def test_a_sample_ends_at_end_of_document_and_stays_ended():
    rows = sample(Scripted(), [1], Sampling(max_new_tokens=6, num_samples=2, temperature=0), eos_id=9)
    assert rows == [[7, 7], [7] * 6]


def test_misuse_is_refused_by_flag():
    for s, flag in (
        (Sampling(max_new_tokens=0), "--max-new-tokens"),
        (Sampling(num_samples=0), "--num-samples"),
        (Sampling(temperature=-0.1), "--temperature"),
        (Sampling(top_p=0.0), "--top-p"),
        (Sampling(top_p=1.5), "--top-p"),
        (Sampling(top_p=float("nan")), "--top-p"),
    ):
        with pytest.raises(ValueError, match=f"ember generate: {flag} must be"):
            s.check()
    tok = ByteTokenizer()
    tok.control_tokens = {}
    with pytest.raises(
        ValueError, match="--control good: .* no <\\|good\\|> token .*prepared without --control-tokens"
    ):
        prompt_ids(tok, "hi", "good", "RUN")
    assert prompt_ids(tok, "hi", None, "RUN") == [EOS, 104, 105]
    tok.control_tokens = {"<|good|>": 257, "<|bad|>": 258}
    assert prompt_ids(tok, "hi", "bad", "RUN") == [EOS, 258, 104, 105]
    assert decode(tok, [104, 257, 105, 258]) == "h<|good|>i<|bad|>"
