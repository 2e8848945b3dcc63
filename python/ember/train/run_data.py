"""A run's data, wherever the run is used from. A run names its token folders by absolute path
(in config.toml and every checkpoint), records what they held (data/fingerprint.py, in the
loader's state), and keeps its tokenizer files in RUN/tokenizer/. Resume, `ember eval`,
`ember export` and `ember score` then use the run's own data and tokenizer from any directory,
or refuse, naming the folder that changed, instead of reading another project's data/."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from .. import atomic
from ..data import corpus
from ..data.fingerprint import source_tokenizer, what_changed
from ..data.loader import parse_sources, source_vocab
from ..data.shards import read_index
from ..models.hf import TOKENIZER_FILES
from .checkpoint import find_checkpoint, read_meta
from .config import Config, ConfigError, config_from_dict

TOKENIZER_DIR = "tokenizer"


def absolute_sources(spec: str) -> str:
    """DIR[:options],... with each DIR made absolute (its options kept as typed)."""
    if not spec:
        return spec
    out = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        path = parse_sources(item)[0].path
        out.append(item if path == corpus.NAME else os.path.abspath(path) + item[len(path) :])
    return ",".join(out)


def absolute_paths(cfg: Config) -> Config:
    """A copy of cfg whose data paths (data.sources, data.tokenizer, data.skills_graph, eval.sources,
    eval.tasks_include_path, loss.token_weights) and model.init_from folder are absolute: resolved once, against the
    directory the run starts in."""
    cfg = config_from_dict(cfg.to_dict())
    cfg.data.sources = absolute_sources(cfg.data.sources)
    cfg.eval.sources = absolute_sources(cfg.eval.sources)
    if cfg.loss.token_weights:
        cfg.loss.token_weights = os.path.abspath(cfg.loss.token_weights)
    if cfg.data.tokenizer != "byte":
        cfg.data.tokenizer = os.path.abspath(cfg.data.tokenizer)
    if cfg.data.skills_graph != "identity":  # a resume from another directory reads the same graph
        cfg.data.skills_graph = os.path.abspath(cfg.data.skills_graph)
    if cfg.eval.tasks_include_path:  # lm-eval task files
        cfg.eval.tasks_include_path = os.path.abspath(cfg.eval.tasks_include_path)
    if cfg.model.init_from and Path(cfg.model.init_from).expanduser().is_dir():  # a folder, not a cache name
        cfg.model.init_from = os.path.abspath(Path(cfg.model.init_from).expanduser())
    return cfg


def recorded_data(checkpoint: Path) -> dict | None:
    """{source path: record} that a checkpoint's loader state holds (None: a checkpoint from
    before runs recorded their data)."""
    extra = torch.load(Path(checkpoint) / "extra.pt", map_location="cpu", weights_only=False)
    return extra.get("loader", {}).get("data")


def changes(record: dict | None, cfg: Config, only: list[str] | None = None, weights: bool = True) -> list[str]:
    """What differs between the recorded sources (those in `only`, if given) and the folders now
    (their token weights too, if `weights`)."""
    if not record:
        return []
    return [
        why
        for path, then in record.items()
        if only is None or path in only
        if (why := what_changed(path, then, cfg.data.tokenizer, weights)) is not None
    ]


def check_resume(cfg: Config, checkpoint: Path) -> None:
    """Refuse to resume on data prepared again since the checkpoint (before any state is loaded)."""
    changed = changes(recorded_data(checkpoint), cfg)
    if changed:
        raise ConfigError(
            f"checkpoint.resume: the run's data changed since {checkpoint}: {'; '.join(changed)}. Resuming would "
            "train on other tokens than the run's (and lose its validation set): restore the folder, or start a new run"
        )


def save_tokenizer(cfg: Config, run_dir: Path) -> None:
    """Copy the tokenizer files of the run's data into RUN/tokenizer/ (rank 0; none for bytes), and
    only those: files an earlier history of the run folder left there would ship with this model."""
    files = data_tokenizer_files(cfg)
    folder = Path(run_dir) / TOKENIZER_DIR
    mine = {f.name if f.name in TOKENIZER_FILES else "tokenizer.json" for f in files}
    for stale in set(TOKENIZER_FILES) - mine:
        (folder / stale).unlink(missing_ok=True)
    if not files:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:  # a --data.tokenizer file of any name is the run's tokenizer.json
        name = f.name if f.name in TOKENIZER_FILES else "tokenizer.json"
        with atomic.atomic_path(folder / name) as tmp:
            shutil.copyfile(f, tmp)


def data_tokenizer_files(cfg: Config) -> list[Path]:
    """The Hugging Face tokenizer files the run's data was made with (none for bytes)."""
    src = parse_sources(cfg.data.sources)[0]
    if src.path == corpus.NAME:
        return [Path(cfg.data.tokenizer)] if cfg.data.tokenizer != "byte" else []
    if read_index(src.path).get("tokenizer", "byte") == "byte":
        return []
    return [Path(src.path) / f for f in TOKENIZER_FILES if (Path(src.path) / f).is_file()]


def run_tokenizer_files(checkpoint: Path) -> list[Path] | None:
    """The tokenizer files a run kept (RUN/tokenizer/), or None if it kept none."""
    folder = Path(checkpoint).parent.parent / TOKENIZER_DIR
    found = [folder / f for f in TOKENIZER_FILES if (folder / f).is_file()]
    return found or None


def run_vocab(saved: Config, checkpoint: Path) -> tuple[int, int]:
    """(vocab_size, eos_id) of the data a checkpoint's run trained on: recorded, or (a run from
    before runs recorded their data) read from its first source."""
    record = recorded_data(checkpoint)
    if record:
        first = next(iter(record.values()))
        return first["vocab_size"], first["eos_id"]
    _check_legacy_paths(saved, checkpoint)
    return source_vocab(parse_sources(saved.data.sources)[0], saved.data.tokenizer)


def _check_legacy_paths(saved: Config, checkpoint: Path) -> None:
    """A run from before runs recorded their data names it as typed: a relative path means the
    directory it was trained in, recognized by its job.dir leading to the folder of the run. From
    anywhere else it would name another project's data."""
    relative = [
        s.path for s in parse_sources(saved.data.sources) if s.path != corpus.NAME and not os.path.isabs(s.path)
    ]
    if relative and Path(checkpoint).resolve().parent.parent.parent != Path(saved.job.dir).resolve():
        raise ConfigError(
            f"this run was trained before runs recorded their data and names it relatively ({relative[0]}): "
            "run the command from the directory it was trained in"
        )


def check_eval_data(cfg: Config, flags: dict, checkpoint: Path, command: str) -> None:
    """The data `command` (ember eval) reads: the run's own sources must be what the run recorded
    (or refused, naming what changed); sources given by flags must have the run's tokenizer."""
    record = recorded_data(checkpoint)
    if not record:
        return
    given = "data.sources" in flags or "data.tokenizer" in flags
    own = [] if given else [s.path for s in parse_sources(cfg.data.sources)]
    own += [s.path for s in parse_sources(cfg.eval.sources)] if cfg.eval.sources and "eval.sources" not in flags else []
    changed = changes(record, cfg, own, weights=False)  # evaluation reads no token weights
    if changed:
        raise ConfigError(
            f"{command}: the run's data changed since it was trained: {'; '.join(changed)}. "
            "Restore it, or name the data to evaluate on with --data.sources"
        )
    for spec in parse_sources(cfg.data.sources) + (parse_sources(cfg.eval.sources) if cfg.eval.sources else []):
        if spec.path != corpus.NAME and not (Path(spec.path) / "index.json").is_file():
            raise ConfigError(f"{command}: {spec.path}: not a token folder (no index.json)")
        if other_tokenizer(spec.path, cfg.data.tokenizer, record):
            raise ConfigError(f"{command}: {spec.path} was made with another tokenizer than the run's data")


def other_tokenizer(path: str, tokenizer: str, record: dict) -> bool:
    """Whether the source at `path` has another tokenizer than a run's recorded data: another
    tokenizer.json, vocabulary size, end- or beginning-of-document id (one tokenizer.json
    prepared with another --eos-token is another tokenizer)."""
    first = next(iter(record.values()))
    vocab, eos, bos, ident = source_tokenizer(path, tokenizer)
    plain = first["vocab_size"] - len(first.get("control_tokens") or {})  # the same text without control tokens
    return (
        vocab not in (first["vocab_size"], plain)
        or (eos, ident) != (first["eos_id"], first["tokenizer"])
        or bos != first.get("bos_id", bos)
    )


def export_tokenizer(saved: Config, checkpoint: Path) -> tuple[list[Path], int]:
    """(the tokenizer files to ship with a checkpoint's model, its end-of-document id): the ones
    the run kept, else its data's while that data is what the run recorded (refused otherwise:
    another folder's tokenizer would ship with the model)."""
    record = recorded_data(checkpoint)
    if not record:  # a run from before runs recorded their data: its first source, as named
        return data_tokenizer_files(saved), run_vocab(saved, checkpoint)[1]
    path, first = next(iter(record.items()))
    if first["tokenizer"] == "byte":
        return [], first["eos_id"]
    kept = run_tokenizer_files(checkpoint)
    if kept:
        return kept, first["eos_id"]
    changed = changes(record, saved, [path], weights=False)
    if changed:
        raise ConfigError(
            f"ember export: the run kept no copy of its tokenizer ({TOKENIZER_DIR}/ beside its checkpoints) and its "
            f"data changed: {changed[0]}; the tokenizer there is not the model's"
        )
    return data_tokenizer_files(saved), first["eos_id"]


def control_tokens(checkpoint: str | Path) -> dict[str, int]:
    """{token: id} of the control tokens (conditional training) a checkpoint's run trained with:
    its first source's, as recorded ({} when none, or for a run from before runs recorded them)."""
    record = recorded_data(find_checkpoint(checkpoint))
    return dict(next(iter(record.values())).get("control_tokens") or {}) if record else {}


def run_tokenizer(checkpoint: str | Path):
    """The tokenizer of a checkpoint's run (a checkpoint folder, or a run folder: its latest): a
    ByteTokenizer, or an HFTokenizer from the files the run kept (else its data's, as `ember export`
    finds them), with the run's end- and beginning-of-document ids and vocabulary size as recorded
    and `control_tokens` ({token: id}, ids past the tokenizer's own). encode() never produces a
    control id: text is text, callers place control ids themselves."""
    from ..data.tokenizer import ByteTokenizer, HFTokenizer

    path = find_checkpoint(checkpoint)
    saved = config_from_dict(read_meta(path)["config"])
    files, eos = export_tokenizer(saved, path)
    vocab, _ = run_vocab(saved, path)
    if not files:
        tok = ByteTokenizer()
    else:
        from tokenizers import Tokenizer

        tokenizer_json = next((f for f in files if f.name not in TOKENIZER_FILES[1:]), files[0])
        where = tokenizer_json.parent if any(f.name == "tokenizer_config.json" for f in files) else tokenizer_json
        tok = HFTokenizer(where, Tokenizer.from_file(str(tokenizer_json)).id_to_token(eos))
        record = recorded_data(path)
        if record and "bos_id" in next(iter(record.values())):
            tok.bos_id = next(iter(record.values()))["bos_id"]
    tok.eos_id, tok.vocab_size = eos, vocab  # the model's: control tokens included
    tok.control_tokens = control_tokens(path)
    return tok
