"""The tokenizer files an exported model ships with, so that transformers' AutoTokenizer loads its
folder and gives the ids the model was trained on.

- A run on bytes gets a tokenizer.json built with the `tokenizers` library: byte-level (each byte
  one symbol of GPT-2's byte alphabet, no prefix space, no regex split) over a vocabulary with no
  merges whose symbol for byte b has id b, and `<|endoftext|>` as the special token 256, ember's
  end of document. Any text then encodes to its UTF-8 bytes, and decodes back.
- A run on a Hugging Face tokenizer ships its own files, unchanged, unless its tokenizer.json does
  not itself put the beginning-of-document token the run trained with before a text (a
  tokenizer_config.json naming a bos_token the tokenizer.json never adds): then a post-processor
  adds it, so that transformers (and lm-eval's `hf` model) tokenize text as the model was trained.
- Control tokens of conditional training (`<|good|>`, ...: ids past the tokenizer's vocabulary)
  become added special tokens at their trained ids, so that `tokenizer("<|good|>...")` gives them.

As everywhere in transformers, a special token's text inside a string (`<|endoftext|>`, a control
token) encodes to the token itself, where ember's own tokenizer reads document text as text
(`split_special_tokens=True` gives ember's ids there).
"""

from __future__ import annotations

import json
from pathlib import Path

BYTE_EOS = "<|endoftext|>"


def byte_symbols() -> list[str]:
    """The symbol of each byte value in the ByteLevel pre-tokenizer's alphabet (GPT-2's table:
    printable bytes stand for themselves, the others for 256, 257, ... in byte order)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(others)) for b in range(256)]


def byte_tokenizer(eos_id: int = 256):
    """ember's ByteTokenizer as a `tokenizers.Tokenizer`: byte b is id b, BYTE_EOS is eos_id."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab={s: b for b, s in enumerate(byte_symbols())}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(BYTE_EOS, special=True, normalized=False)])
    if tok.token_to_id(BYTE_EOS) != eos_id:
        raise ValueError(
            f"ember export: the byte tokenizer's end of document would be id {tok.token_to_id(BYTE_EOS)}, not {eos_id}"
        )
    return tok


def add_control_tokens(tok, control: dict[str, int]) -> None:
    """Add the control tokens to `tok` as special tokens at their trained ids, or refuse (the
    library appends added tokens after the ones it has: a tokenizer whose ids skip some, or that
    already holds the token's text elsewhere, would put it at another id than the model learned)."""
    from tokenizers import AddedToken

    for text, want in sorted(control.items(), key=lambda kv: kv[1]):
        tok.add_special_tokens([AddedToken(text, special=True, normalized=False)])
        got = tok.token_to_id(text)
        if got != want:
            raise ValueError(
                f"ember export: the control token {text} would have id {got} in the exported tokenizer.json, not "
                f"{want}, the id the model was trained on; its tokenizer cannot express it"
            )


def add_bos(tok, bos_id: int) -> bool:
    """Make `tok` put the token bos_id before every text, as the run's documents had it, where it
    does not already; returns whether it was changed."""
    from tokenizers import processors

    if tok.encode("a").ids[:1] == [bos_id]:
        return False
    bos = tok.id_to_token(bos_id)
    template = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, bos_id)]
    )
    tok.post_processor = template if tok.post_processor is None else processors.Sequence([tok.post_processor, template])
    return True


def tokenizer_config(eos: str, bos: str | None, max_length: int) -> dict:
    """tokenizer_config.json of a tokenizer.json that came without one: its end (and beginning)
    of document by name, and the fast tokenizer class, not the one config.json's model type names
    (which would add its own beginning-of-document token)."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": eos,
        "bos_token": bos,
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
    }


def write_tokenizer(
    out: Path, files: list[Path], *, eos_id: int, bos_id: int | None, control: dict[str, int], max_length: int
) -> list[Path]:
    """The tokenizer files of a model, written into the folder `out` where they are not the run's
    own: `files` are a Hugging Face tokenizer's (its tokenizer.json first, under any name), none
    for bytes; `control` its control tokens. Returns the files to ship (each under its name)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(files[0])) if files else byte_tokenizer(eos_id)
    shipped = list(files[1:])
    bos_added = bos_id is not None and add_bos(tok, bos_id)
    if control or bos_added or not files or files[0].name != "tokenizer.json":  # else the run's own, byte for byte
        add_control_tokens(tok, control)
        tok.save(str(out / "tokenizer.json"))
        shipped.insert(0, out / "tokenizer.json")
    else:
        shipped.insert(0, files[0])
    if not any(f.name == "tokenizer_config.json" for f in shipped):
        bos = tok.id_to_token(bos_id) if bos_id is not None else None
        config = tokenizer_config(tok.id_to_token(eos_id), bos, max_length)
        (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")
        shipped.append(out / "tokenizer_config.json")
    return shipped
