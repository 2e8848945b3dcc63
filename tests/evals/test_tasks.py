"""The lm-eval model `ember` and the task plumbing, quickly: log-likelihoods against the model's
own log-softmax, the task numbers as logged rows, and the --eval.tasks refusals made before
anything is built (lm-eval missing, no include folder, a setting without eval.tasks)."""

import sys

import pytest
import torch
import torch.nn.functional as F

from ember.data.tokenizer import ByteTokenizer
from ember.evals.tasks import task_names, task_values
from ember.models import Llama, LlamaConfig
from ember.train import ConfigError, parse_config
from ember.train.preflight import check_config


def test_task_numbers_become_task_rows():
    results = {
        "results": {
            "mc": {"alias": "mc", "acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": 1},
            "gen": {"exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": "N/A"},
            "ppl": {"word_perplexity,none": float("inf"), "bits_per_byte,none": 1.5, "sample_len": 3},
        }
    }
    assert task_values(results) == {
        "task/mc/acc": 0.5,
        "task/mc/acc_stderr": 0.1,
        "task/mc/acc_norm": 1.0,
        "task/gen/exact_match_strict-match": 0.25,
        "task/ppl/bits_per_byte": 1.5,
    }
    assert task_names(" a, b,,a ") == ["a", "b"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--eval.tasks_every=5"], "eval.tasks_every needs eval.tasks"),
        (["--eval.tasks_include_path=tasks"], "eval.tasks_include_path needs eval.tasks"),
        (["--eval.tasks=x", "--eval.tasks_limit=-1"], "eval.tasks_limit must be >= 0"),
        (["--eval.tasks=x", "--eval.tasks_include_path=no/such/folder"], "no/such/folder: not a folder"),
    ],
)
def test_eval_tasks_settings_are_checked_before_the_run(flags, message):
    with pytest.raises(ConfigError, match=message):
        check_config(parse_config(flags))


def test_eval_tasks_without_lm_eval_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval raises ImportError
    with pytest.raises(
        ConfigError, match=r"config: eval.tasks needs lm-evaluation-harness.*pip install 'ember\[eval\]'"
    ):
        check_config(parse_config(["--eval.tasks=hellaswag"]))


def test_ember_eval_tasks_without_lm_eval_names_the_extra(monkeypatch, capsys):
    from ember.cli import main

    monkeypatch.setitem(sys.modules, "lm_eval", None)
    assert main(["eval", "runs/none", "--tasks", "hellaswag"]) == 1
    assert "ember eval: error: --tasks needs lm-evaluation-harness" in capsys.readouterr().err


def test_loglikelihoods_are_the_models_log_probabilities():
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    from ember.evals.model import EmberLM

    with torch.device("meta"):
        model = Llama(LlamaConfig(dim=32, n_layers=1, n_heads=2, ffn_hidden=64, vocab_size=257, max_seq_len=64))
    model = model.to_empty(device="cpu").init_weights(0).eval()
    lm = EmberLM(model=model, tokenizer=ByteTokenizer(), batch_size=2)
    pairs = [("ab", "c"), ("hello ", "world"), ("", "xyz")]  # "hello " → "hello", " world"; "" → eos, "xyz"
    got = lm.loglikelihood([Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)])
    rolled = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("xyz",), 0)])
    with torch.no_grad():
        for (ctx, cont), (ll, _) in zip([("ab", "c"), ("hello", " world"), ("\x00", "xyz")], got):
            ids = [256] if ctx == "\x00" else list(ctx.encode())
            ids += list(cont.encode())
            logp = F.log_softmax(model.logits(torch.tensor([ids[:-1]]))[0], -1)
            n = len(cont.encode())
            want = logp[-n:].gather(1, torch.tensor(ids[-n:])[:, None]).sum().item()
            assert ll == pytest.approx(want, abs=1e-5)
    assert rolled[0] == pytest.approx(got[2][0], abs=1e-5)  # a whole text: the empty context's case
