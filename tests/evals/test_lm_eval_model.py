"""The lm-eval model `ember` against lm-eval's own `hf` model on the same weights and tokenizer
(the folder to_hf writes): every request's log-likelihood, greedy flag, rolling log-likelihood and
greedy continuation, with contexts longer than the model's window (cut on the left, as HFLM does),
an empty context, and trailing spaces (moved to the continuation). Slow: building lm-eval's hf
model loads transformers."""

import json

import pytest
import torch

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.registry import get_model  # noqa: E402

from ember.data.tokenizer import HFTokenizer  # noqa: E402
from ember.evals.model import EmberLM  # noqa: E402
from ember.models import Llama, LlamaConfig, to_hf  # noqa: E402
from tests.evals.local_tasks import QUESTIONS, TEXTS  # noqa: E402
from tests.journeys.test_data_journeys import CODE, tokenizer_folder  # noqa: E402

PAIRS = [(q, " " + c) for q, cs, _ in QUESTIONS for c in cs] + [
    ("", "def f(x): return x"),  # an empty context: the end-of-document token stands for it
    ("return x ", "* 2"),  # the context's trailing space goes to the continuation
    (TEXTS[2], "class B:"),  # longer than max_seq_len: cut on the left
]


pytestmark = pytest.mark.slow


def with_bos(folder):
    """The tokenizer puts <|im_start|> before every text (a post-processor, as Llama's does) and
    declares it the beginning-of-document token."""
    from tokenizers import Tokenizer, processors

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    bos = "<|im_start|>"
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>", "bos_token": bos}))


@pytest.fixture(scope="module", params=["no-bos", "bos"])
def models(tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp("lm")
    folder = tokenizer_folder(tmp / "tok", CODE)
    if request.param == "bos":
        with_bos(folder)
    tok = HFTokenizer(folder)
    assert (tok.bos_id is not None) == (request.param == "bos")
    cfg = LlamaConfig(dim=32, n_layers=1, n_heads=2, ffn_hidden=64, vocab_size=tok.vocab_size, max_seq_len=16)
    with torch.device("meta"):
        model = Llama(cfg)
    model = model.to_empty(device="cpu").init_weights(3).eval()
    files = [folder / "tokenizer.json", folder / "tokenizer_config.json"]
    to_hf(model, tmp / "hf", tokenizer_files=files, eos_token_id=tok.eos_id)
    hf = get_model("hf")(pretrained=str(tmp / "hf"), device="cpu", batch_size=4, dtype="float32")
    assert (hf.tok_encode("x = 1")[0] == tok.bos_id) == (request.param == "bos")  # transformers adds it
    return EmberLM(model=model, tokenizer=tok, batch_size=3), hf


def requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


def test_loglikelihoods_equal_the_hf_models(models):
    ours, hf = models
    got, want = (m.loglikelihood(requests("loglikelihood", PAIRS)) for m in (ours, hf))
    assert [g for _, g in got] == [g for _, g in want]
    assert max(abs(a - b) for (a, _), (b, _) in zip(got, want)) < 1e-4
    assert ours.max_length == hf.max_length == 16


def test_rolling_loglikelihoods_equal_the_hf_models(models):
    ours, hf = models
    got, want = (m.loglikelihood_rolling(requests("loglikelihood_rolling", [(t,) for t in TEXTS])) for m in models)
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-4
    assert len(ours.tok_encode(TEXTS[2])) > 2 * ours.max_length  # several windows were scored


def test_greedy_continuations_equal_the_hf_models(models):
    args = [(q, {"until": ["\n"], "max_gen_toks": 6, "do_sample": False}) for q, _, _ in QUESTIONS[:3]]
    got, want = (m.generate_until(requests("generate_until", args)) for m in models)
    assert got == want
