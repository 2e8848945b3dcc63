"""The tokenizer `ember export` ships (models/hf_tokenizer.py), loaded by transformers'
AutoTokenizer: a byte run's gives ember's byte ids for any text and decodes them back; control
tokens are added special tokens at their trained ids, or refused."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ember.data.tokenizer import ByteTokenizer, HFTokenizer
from ember.models.hf_tokenizer import BYTE_EOS, byte_symbols, write_tokenizer

from .test_hf_tokenizer import model_folder

transformers = pytest.importorskip("transformers")
CONTROL = {"<|good|>": 257, "<|bad|>": 258}
SPECIAL = (BYTE_EOS, *CONTROL)


def shipped(tmp, files=(), **kw) -> "transformers.PreTrainedTokenizerBase":
    """AutoTokenizer of a folder holding what write_tokenizer ships (as to_hf copies it)."""
    staging, folder = tmp / "staging", tmp / "folder"
    staging.mkdir()
    folder.mkdir()
    args = {"eos_id": 256, "bos_id": None, "control": {}, "max_length": 64, **kw}
    for f in write_tokenizer(staging, list(files), **args):
        (folder / f.name).write_bytes(f.read_bytes())
    return transformers.AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def byte_tok(tmp_path_factory):
    return shipped(tmp_path_factory.mktemp("bytes"), control=CONTROL)


def test_byte_symbols_are_the_byte_level_alphabet():
    from tokenizers import pre_tokenizers

    symbols = byte_symbols()
    assert len(set(symbols)) == 256 and set(symbols) == set(pre_tokenizers.ByteLevel.alphabet())
    level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    for text in ("a Z~!\n\t", "é", "🙂"):  # the pre-tokenizer maps each byte to its symbol
        assert level.pre_tokenize_str(text)[0][0] == "".join(symbols[b] for b in text.encode("utf-8"))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(["", " ", "  a\r\n\n", "🙂x"])
)
def test_byte_tokenizer_ids_are_embers(byte_tok, text):
    if any(s in text for s in SPECIAL):  # special tokens' text: see test_special_tokens_in_text
        return
    ids = ByteTokenizer().encode(text).tolist()
    assert byte_tok(text, add_special_tokens=False).input_ids == ids
    assert byte_tok(text).input_ids == ids  # no beginning-of-document token is added
    assert byte_tok.decode(ids) == text
    assert byte_tok.decode([*ids, 256, 257], skip_special_tokens=True) == text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(st.integers(0, 258), max_size=24))
def test_byte_tokenizer_decodes_any_ids_as_ember(byte_tok, ids):
    """Cut UTF-8 sequences, lone continuation bytes: the same replacement characters as ember's."""
    assert byte_tok.decode(ids, skip_special_tokens=True) == ByteTokenizer().decode(ids)


def test_special_tokens_in_text(byte_tok):
    """transformers matches a special token's text (ember reads it as text); split_special_tokens
    gives ember's ids."""
    text = "a<|good|>b<|endoftext|>"
    assert byte_tok(text).input_ids == [97, 257, 98, 256]
    assert byte_tok(text, split_special_tokens=True).input_ids == list(text.encode())
    assert byte_tok.decode([97, 257, 98, 256]) == text


def test_byte_tokenizer_config(byte_tok):
    assert (byte_tok.eos_token, byte_tok.eos_token_id, byte_tok.bos_token) == (BYTE_EOS, 256, None)
    assert byte_tok.model_max_length == 64 and len(byte_tok) == 259
    assert byte_tok.convert_tokens_to_ids(list(CONTROL)) == [257, 258]


def test_hf_tokenizer_gets_control_tokens_at_their_ids(tmp_path):
    folder = model_folder(tmp_path)
    ember_tok = HFTokenizer(folder)
    vocab = ember_tok.vocab_size
    control = {"<|good|>": vocab, "<|bad|>": vocab + 1}
    files = [folder / "tokenizer.json", folder / "tokenizer_config.json"]
    tok = shipped(tmp_path, files, eos_id=ember_tok.eos_id, bos_id=ember_tok.bos_id, control=control)
    text = "def f7(x):\n    return x * 7"
    assert tok(text, add_special_tokens=False).input_ids == ember_tok.encode(text).tolist()
    assert tok("<|bad|>" + text, add_special_tokens=False).input_ids == [vocab + 1, *ember_tok.encode(text).tolist()]
    assert tok.decode([vocab, *ember_tok.encode(text).tolist()], skip_special_tokens=True) == text


def test_run_tokenizer_files_ship_unchanged_without_control_tokens(tmp_path):
    folder = model_folder(tmp_path)
    (tmp_path / "staging").mkdir()
    files = [folder / "tokenizer.json", folder / "tokenizer_config.json"]
    assert write_tokenizer(tmp_path / "staging", files, eos_id=2, bos_id=None, control={}, max_length=8) == files
    # a bare tokenizer.json gets a tokenizer_config.json naming its end of document
    out = write_tokenizer(tmp_path / "staging", files[:1], eos_id=2, bos_id=None, control={}, max_length=8)
    assert out == [files[0], tmp_path / "staging" / "tokenizer_config.json"]
    config = json.loads(out[1].read_text())
    assert (config["eos_token"], config["bos_token"], config["model_max_length"]) == ("</s>", None, 8)


def test_control_token_at_another_id_is_refused(tmp_path):
    """A tokenizer whose ids skip some: the library would append the control token elsewhere."""
    from tokenizers import Tokenizer, models

    path = tmp_path / "tokenizer.json"
    Tokenizer(models.WordLevel({"a": 0, "</s>": 1, "z": 9}, unk_token="a")).save(str(path))
    assert HFTokenizer(path).vocab_size == 10
    (tmp_path / "staging").mkdir()
    with pytest.raises(ValueError, match="control token <\\|good\\|> would have id .* not 10"):
        write_tokenizer(tmp_path / "staging", [path], eos_id=1, bos_id=None, control={"<|good|>": 10}, max_length=8)
    assert not (tmp_path / "staging" / "tokenizer.json").exists()


def test_a_beginning_token_the_tokenizer_does_not_add_is_added_as_the_run_trained(tmp_path):
    """tokenizer_config.json names <s>, tokenizer.json never puts it: the run's documents began with
    it (HFTokenizer.encode_document), so the exported tokenizer puts it first, as lm-eval's `ember`
    model does (ember eval --tasks equals lm-eval's hf model on the export)."""
    pytest.importorskip("lm_eval")
    from ember.evals.model import EmberLM

    folder = model_folder(tmp_path)
    ember_tok = HFTokenizer(folder)
    files = [folder / "tokenizer.json", folder / "tokenizer_config.json"]
    tok = shipped(tmp_path, files, eos_id=ember_tok.eos_id, bos_id=ember_tok.bos_id)
    lm = EmberLM.__new__(EmberLM)
    lm.tok = ember_tok
    for text in ("def f7(x):\n    return x * 7", ""):
        assert tok(text).input_ids == lm.tok_encode(text) == ember_tok.encode_document(text).tolist()
    assert tok("x", add_special_tokens=False).input_ids == ember_tok.encode("x").tolist()
