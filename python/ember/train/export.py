"""`ember export`: a run's checkpoint as a Hugging Face model folder (ember.models.to_hf), with
a tokenizer transformers loads (models/hf_tokenizer.py): for a run on a Hugging Face tokenizer,
the copy the run kept in RUN/tokenizer/ (run_data.py), so export ships the run's tokenizer from
any directory; for a run on bytes, a tokenizer.json with ember's byte ids; in both, the run's
control tokens as added special tokens at their trained ids."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..models.hf import check_out_dir as check_hf_out_dir
from ..models.hf import parse_dtype, to_hf
from ..models.hf_tokenizer import write_tokenizer
from . import run_data
from .checkpoint import find_checkpoint


def bos_id(files: list[Path]) -> int | None:
    """The beginning-of-document id of the Hugging Face tokenizer shipped with the model (declared
    in its tokenizer_config.json); None for bytes or a bare tokenizer.json."""
    if not any(f.name == "tokenizer_config.json" for f in files):
        return None
    from ..data.tokenizer import HFTokenizer

    return HFTokenizer(files[0].parent).bos_id


def check_out_dir(checkpoint: str | Path, out_dir: str | Path) -> None:
    """out_dir is new or empty, and not inside the run's checkpoints folder, whose folders
    training deletes (checkpoint.keep) and sets aside on a rewind."""
    out = Path(out_dir)
    check_hf_out_dir(out, "ember export")
    root = find_checkpoint(checkpoint).resolve().parent
    if root.name == "checkpoints" and (out.resolve() == root or root in out.resolve().parents):
        raise ValueError(
            f"ember export: {out_dir} is inside the run's checkpoints folder {root}, which training prunes "
            f"(checkpoint.keep) and rewinds; export beside it (e.g. {root.parent / 'hf'})"
        )


def export_run(checkpoint: str | Path, out_dir: str | Path, dtype=None, max_shard_bytes: int = 2 << 30) -> dict:
    """Write the checkpoint (or a run folder's latest) to out_dir; dtype None keeps the weights'."""
    from .evaluate import load_model

    dtype = parse_dtype(dtype, "ember export")
    check_out_dir(checkpoint, out_dir)  # before the model is loaded
    model, cfg, path = load_model(checkpoint, "cpu")
    files, eos = run_data.export_tokenizer(cfg, path)  # the run's own, from wherever export is called
    bos = bos_id(files)
    with tempfile.TemporaryDirectory() as staging:  # the files made here, until to_hf publishes them
        files = write_tokenizer(
            Path(staging),
            files,
            eos_id=eos,
            bos_id=bos,
            control=run_data.control_tokens(path),
            max_length=model.config.max_seq_len,
        )
        out = to_hf(
            model,
            out_dir,
            dtype,
            tokenizer_files=files,
            eos_token_id=eos,
            bos_token_id=bos,
            max_shard_bytes=max_shard_bytes,
        )
    arch = json.loads((out / "config.json").read_text())["architectures"][0]
    return {
        "checkpoint": str(path),
        "out_dir": str(out),
        "architecture": arch,
        "tokenizer_files": [f.name for f in files],
    }
