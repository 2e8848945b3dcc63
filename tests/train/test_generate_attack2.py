"""`ember generate` on inputs its first tests did not try: a SentencePiece-style tokenizer (whose
decode drops the space that starts a text), extreme temperatures with a banned control token, and a
seed torch cannot take."""

import pytest
import torch

from ember.data.tokenizer import HFTokenizer
from ember.train.generate import Sampling, continuation, next_tokens


@pytest.fixture(scope="module")
def metaspace(tmp_path_factory):
    """A Llama-2/Mistral-like tokenizer: words with a leading '▁' that decode drops at the start."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {"<unk>": 0, "</s>": 1, "▁the": 2, "▁cat": 3, "▁sat": 4, ".": 5}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    path = tmp_path_factory.mktemp("sp") / "tokenizer.json"
    tok.save(str(path))
    t = HFTokenizer(path, "</s>")
    t.control_tokens = {"<|good|>": 6, "<|bad|>": 7}
    return t


def test_a_sample_keeps_the_space_between_the_prompt_and_its_first_word(metaspace):
    prompt = [int(i) for i in metaspace.encode("the cat")]
    assert prompt == [2, 3]
    assert "the cat" + continuation(metaspace, prompt, [4, 5]) == "the cat sat."
    assert continuation(metaspace, [], [2, 3]) == "the cat"  # no prompt: the document's first word
    assert continuation(metaspace, prompt, [4, 6, 2]) == " sat<|good|>the"


@pytest.mark.parametrize("temperature", [1e300, 1e-300, 5e-324])
def test_an_extreme_temperature_samples_without_nan(temperature):
    logits = torch.randn(3, 10) * 5
    logits[:, 7] = float("-inf")  # a banned control token
    s = Sampling(temperature=temperature)
    s.check()
    ids = next_tokens(logits, s, torch.Generator().manual_seed(0))
    assert (ids != 7).all()
    if temperature < 1:  # that cold is greedy
        assert torch.equal(ids, logits.argmax(-1))


@pytest.mark.parametrize(
    "s, flag", [(Sampling(temperature=float("inf")), "--temperature"), (Sampling(seed=1 << 64), "--seed")]
)
def test_a_temperature_or_seed_torch_cannot_use_is_refused_by_flag(s, flag):
    with pytest.raises(ValueError, match=f"ember generate: {flag} must be"):
        s.check()
