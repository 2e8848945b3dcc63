"""Odd requests lm-eval hands the model `ember`: a generate_until request with an empty context
(a task whose question field is empty) decodes from the prefix token instead of failing inside
the model on an empty batch."""

import pytest
import torch

from ember.data.tokenizer import ByteTokenizer
from ember.models import Llama, LlamaConfig


def test_generate_until_with_an_empty_context_starts_from_the_prefix_token():
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    from ember.evals.model import EmberLM

    with torch.device("meta"):
        model = Llama(LlamaConfig(dim=32, n_layers=1, n_heads=2, ffn_hidden=64, vocab_size=257, max_seq_len=16))
    model = model.to_empty(device="cpu").init_weights(0).eval()
    lm = EmberLM(model=model, tokenizer=ByteTokenizer())
    kwargs = {"until": [], "max_gen_toks": 4, "do_sample": False}
    (got,) = lm.generate_until([Instance("generate_until", {}, ("", kwargs), 0)])
    ids = [256]  # the end-of-document token stands for the empty context
    with torch.no_grad():
        for _ in range(4):
            nxt = int(model.logits(torch.tensor([ids]))[0, -1].argmax())
            if nxt == 256:
                break
            ids.append(nxt)
    assert got == ByteTokenizer().decode(ids[1:])
