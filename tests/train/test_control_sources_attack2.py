"""Control-token data beside data of the same tokenizer prepared without --control-tokens: the
plain folder is evaluated (--eval.sources, ember eval --data.sources: its ids are the run's less
the control ids), and mixed into training it is refused saying what differs."""

import json

import pytest

from ember.cli import main as ember_main
from ember.train import ConfigError, parse_config, train
from ember.train.preflight import check_config

from .helpers import SMALL


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("control")
    docs = tmp / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"pear {i} " * 9, "score": i % 2}) + "\n" for i in range(120)))
    for name, extra in (("scored", ["--control-tokens", "score:0.5"]), ("plain", [])):
        args = [str(docs), "--out", str(tmp / name), "--workers", "1", "--val-per-mille", "100", *extra]
        assert ember_main(["prepare", *args]) == 0
    return tmp


def config(tmp, *extra):
    return parse_config([*SMALL, f"--job.dir={tmp}", "--training.steps=1", "--eval.batches=1", *extra])


def test_a_plain_folder_is_an_eval_source_of_a_control_token_run(folders):
    check_config(config(folders, f"--data.sources={folders}/scored", f"--eval.sources={folders}/plain"))
    with pytest.raises(ConfigError, match="another tokenizer"):  # the other way, the control ids are unknown
        check_config(config(folders, f"--data.sources={folders}/plain", f"--eval.sources={folders}/scored"))


def test_mixing_plain_and_control_token_training_sources_is_refused_saying_so(folders):
    with pytest.raises(ConfigError) as info:
        check_config(config(folders, f"--data.sources={folders}/scored,{folders}/plain"))
    assert f"with --control-tokens: {folders}/scored; without: {folders}/plain" in str(info.value)


@pytest.mark.slow
def test_ember_eval_of_a_control_token_run_on_plain_data(folders, capsys):
    train(config(folders, f"--data.sources={folders}/scored", "--job.name=r"))
    capsys.readouterr()
    assert ember_main(["eval", str(folders / "r"), f"--data.sources={folders}/plain"]) == 0
    assert str(folders / "plain") in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["per_source"]


@pytest.mark.slow
def test_ember_score_of_control_token_data_with_a_reference_model_trained_without_them(folders, capsys):
    train(config(folders, f"--data.sources={folders}/plain", "--job.name=ref"))
    capsys.readouterr()
    assert ember_main(["score", str(folders / "ref"), "--data", str(folders / "scored")]) == 1
    err = capsys.readouterr().err
    assert "control tokens (<|good|> 257, <|bad|> 258) past the reference model's vocabulary (257)" in err
    assert not (folders / "scored" / "weights.json").exists()
