"""The trainer's configuration: one dataclass per section, a TOML file (shipped ones in
configs/, or a path), then `--section.key=value` overrides. Defaults are the debug run that
`ember train` does with no arguments.

Adding a switch: add a field (with its help) to a section here, check it in preflight.py
(`check_config`), and read it in the one place that builds what it changes (train/build.py).

Why a hand-written parser and not a config library: tyro and jsonargparse both turn nested
dataclasses into `--section.key` flags with a --help that shows defaults, but neither reads
the TOML files as they are (tyro reads no config file itself; jsonargparse reads YAML/JSON and
needs a custom loader for TOML), so loading a file, rejecting its unknown keys with the closest
match, and coercing its values would stay our code either way. tyro's booleans are also
`--flag/--no-flag` switches by default where the configs, tests and docs write `--key=true`.
What a library would take over (flag generation and --help) is about 30 lines of argparse
here, against a new dependency with dependencies of its own, so the parser stays hand-written:
the dataclasses below are the schema; argparse gives --help, tomllib reads files, difflib
finds "did you mean".
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_DIR = Path(__file__).parent / "configs"


def opt(default, help: str, choices: tuple | None = None):
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class Job:
    name: str = opt("", "run folder name under job.dir (default: a timestamp)")
    dir: str = opt("runs", "folder that holds the run folders")
    seed: int = opt(0, "seed of the initialization and the data order")
    deterministic: bool = opt(False, "deterministic algorithms only (slower on GPU)")
    device: str = opt("auto", "cpu, cuda or auto (cuda when a GPU is visible)")


@dataclass
class Model:
    name: str = opt("debug", "a named size from ember.models.CONFIGS")
    dim: int = opt(0, "width (0: the named size's)")
    n_layers: int = opt(0, "layers (0: the named size's)")
    n_heads: int = opt(0, "attention heads (0: the named size's)")
    n_kv_heads: int = opt(0, "key/value heads for grouped-query attention (0: the named size's)")
    ffn_hidden: int = opt(0, "SwiGLU hidden width (0: the named size's)")
    vocab_size: int = opt(0, "vocabulary (0: the tokenizer's)")
    init_from: str = opt(
        "",
        "start from a Hugging Face checkpoint (Llama, Mistral, Qwen2, Qwen3): a local folder or a name in "
        "the local HF cache, never downloaded; its size and vocabulary replace model.name's",
    )


@dataclass
class Data:
    sources: str = opt(
        "stdlib",
        "'stdlib' (the built-in corpus) or token folders from `ember prepare`: "
        "DIR[:WEIGHT][:tokens=N][:STEP=WEIGHT]...,... (tokens: train on a fixed subset of N tokens, epoch after "
        "epoch; STEP=WEIGHT: the weight from that step on)",
    )
    tokenizer: str = opt(
        "byte", "tokenizer of the built-in corpus: 'byte' or a tokenizer.json path (token folders carry their own)"
    )
    seq_len: int = opt(128, "tokens per sequence")
    mixing: str = opt(
        "fixed",
        "source weights: fixed (data.sources' weights and schedules) or skillit (Skill-it's online rule: every "
        "mixing_every steps, weights ∝ previous weights · exp(mixing_eta · A·L), L each source's validation loss, A the skills graph)",
        ("fixed", "skillit"),
    )
    mixing_every: int = opt(50, "skillit: optimizer steps between weight updates")
    mixing_eta: float = opt(0.5, "skillit: step size eta of the rule")
    mixing_batches: int = opt(
        2, "skillit: validation batches (of eval.batch_size sequences) per source for each update"
    )
    skills_graph: str = opt(
        "identity",
        "skillit: the skills graph A: identity, or a JSON file of a k×k matrix (`ember skills-graph` writes one)",
    )


@dataclass
class Training:
    steps: int = opt(300, "optimizer steps")
    batch_size: int = opt(32, "global batch, in sequences")
    micro_batch_size: int = opt(0, "sequences per rank per forward/backward (0: batch_size / ranks, no accumulation)")
    max_norm: float = opt(1.0, "gradient clipping norm (0: off)")
    dtype: str = opt(
        "auto", "compute dtype: bf16 autocast or fp32 (auto: bf16 on GPU, fp32 on CPU)", ("auto", "bf16", "fp32")
    )
    compile: bool = opt(False, "torch.compile each block")
    activation_checkpointing: bool = opt(False, "recompute each block's activations in the backward")
    parallel: str = opt(
        "ddp",
        "data parallelism under torchrun: replicate (ddp), shard (fsdp: FSDP2), or shard within groups of hsdp_shard ranks and replicate across them (hsdp)",
        ("ddp", "fsdp", "hsdp"),
    )
    hsdp_shard: int = opt(0, "hsdp: ranks in a sharding group (0: the ranks of one node, torchrun's LOCAL_WORLD_SIZE)")
    selftest: bool = opt(
        True,
        "check the kernels this run uses against their references on this device before training (`ember selftest`; cached per ember build, card and driver); false skips it, which is unsafe on a machine they never passed on",
    )
    kernel_fallback: bool = opt(
        False,
        "a kernel that fails its check takes its reference path for this run (slower; a warning and kernel_fallback.json in the run folder) instead of stopping the run",
    )


@dataclass
class Optimizer:
    name: str = opt(
        "adamw", "optimizer (apollo, apollo_mini: ember.optim; try lr 1e-2)", ("adamw", "sgd", "apollo", "apollo_mini")
    )
    lr: float = opt(3e-3, "peak learning rate")
    betas: tuple[float, float] = opt((0.9, 0.95), "Adam betas")
    eps: float = opt(1e-8, "Adam epsilon")
    weight_decay: float = opt(0.1, "decoupled weight decay (2-D weights only)")
    momentum: float = opt(0.9, "SGD momentum")
    rank: int = opt(0, "APOLLO projection rank (0: 256 for apollo, 1 for apollo_mini)")
    scale: float = opt(0.0, "APOLLO update scale (0: 1 for apollo, 128 for apollo_mini)")
    update_proj_gap: int = opt(200, "APOLLO: steps between projection refreshes")


@dataclass
class LRScheduler:
    warmup_steps: int = opt(50, "linear warmup steps")
    decay: str = opt("cosine", "shape after warmup", ("cosine", "linear", "wsd", "constant"))
    decay_ratio: float = opt(0.2, "wsd: fraction of the steps spent decaying at the end")
    min_lr_ratio: float = opt(0.1, "final learning rate / peak")


@dataclass
class Sparsity:
    target: float = opt(0.0, "fraction of the prunable weights removed at initialization, at random (0: dense)")
    method: str = opt("erk", "layer-wise densities", ("erk", "er", "uniform", "uniform_plus"))
    block: int = opt(0, "prune whole block×block tiles (16, 32, 64, 128: matmuls skip them; 0: single weights)")


@dataclass
class Float8:
    recipe: str = opt(
        "",
        "fp8 GEMMs for the transformer blocks' Linear layers (ember.float8; empty: off)",
        ("", "tensorwise", "rowwise", "blockwise"),
    )
    all_gather: bool = opt(
        False,
        "FSDP2 all-gathers the Float8Linear weights in fp8 with their scales, not in their dtype (needs float8.recipe and training.parallel=fsdp or hsdp; rowwise's dgrad then requantizes the gathered rows, blockwise needs shards of 128-row multiples, else that weight is gathered in its dtype)",
    )


@dataclass
class Loss:
    fused_linear_ce: bool = opt(
        True,
        "output head + cross-entropy through ember's kernel, without the full logits (false: F.linear + F.cross_entropy)",
    )
    token_weights: str = opt(
        "", "token folder with per-token weights from `ember score` (PRIOR); must be a data source"
    )
    distill: float = opt(
        0.0,
        "self-distillation: weight of KL(teacher || model) per token added to the training loss; the teacher is model.init_from's checkpoint, frozen (0: off)",
    )


@dataclass
class Eval:
    every: int = opt(100, "validation loss every N steps (0: only at the end)")
    batches: int = opt(4, "validation batches per source")
    batch_size: int = opt(16, "sequences per validation batch")
    sources: str = opt(
        "", "token folders evaluated but not trained on (e.g. the original domain's held-out set): DIR,..."
    )
    tasks: str = opt("", "lm-evaluation-harness tasks run during training, logged as task/<name>/<metric>: NAME,...")
    tasks_every: int = opt(0, "run eval.tasks every N steps (0: only at the end)")
    tasks_include_path: str = opt("", "folder of lm-evaluation-harness task files (YAML) for eval.tasks, read locally")
    tasks_num_fewshot: int = opt(0, "few-shot examples per eval.tasks question (0: each task's own, else zero-shot)")
    tasks_limit: int = opt(0, "examples per task (0: all)")


@dataclass
class Checkpoint:
    every: int = opt(100, "checkpoint every N steps (0: only at the end)")
    keep: int = opt(2, "keep the last K checkpoints (0: all)")
    resume: str = opt("", "'latest' (this run folder's), a run folder or a checkpoint folder")
    export_safetensors: bool = opt(True, "write the final model weights as model.safetensors")
    async_save: bool = opt(
        False,
        "write checkpoints in a background thread while training goes on (the state is first copied to host memory)",
    )


@dataclass
class Metrics:
    log_every: int = opt(10, "metrics line and JSONL record every N steps")
    progress: bool = opt(True, "live progress bar (a plain line per log step when not a terminal)")
    tensorboard: bool = opt(True, "TensorBoard logs when tensorboard is installed")
    plot: bool = opt(True, "PNG curves at the end of the run")
    wandb: bool = opt(
        False,
        "log the same numbers to Weights & Biases (pip install ember[wandb]; WANDB_MODE=offline works without a network)",
    )
    wandb_project: str = opt("ember", "metrics.wandb: the project (the run's name is its folder's)")


@dataclass
class Config:
    job: Job = field(default_factory=Job)
    model: Model = field(default_factory=Model)
    data: Data = field(default_factory=Data)
    training: Training = field(default_factory=Training)
    optimizer: Optimizer = field(default_factory=Optimizer)
    lr_scheduler: LRScheduler = field(default_factory=LRScheduler)
    loss: Loss = field(default_factory=Loss)
    sparsity: Sparsity = field(default_factory=Sparsity)
    float8: Float8 = field(default_factory=Float8)
    eval: Eval = field(default_factory=Eval)
    checkpoint: Checkpoint = field(default_factory=Checkpoint)
    metrics: Metrics = field(default_factory=Metrics)

    def to_dict(self) -> dict:
        return {
            s.name: {
                f.name: _plain(getattr(getattr(self, s.name), f.name))
                for f in dataclasses.fields(getattr(self, s.name))
            }
            for s in dataclasses.fields(self)
        }

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())


# Short flags people type, and the key they stand for.
ALIASES = {"--compile": "training.compile", "--activation_checkpointing": "training.activation_checkpointing"}


class ConfigError(ValueError):
    """A configuration that cannot run: raised before any work starts."""


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


@functools.cache  # type hints are strings here (annotations): evaluated once, not per key
def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


@functools.cache
def _fields(section_cls) -> dict[str, tuple[object, dataclasses.Field]]:
    hints = typing.get_type_hints(section_cls)
    return {f.name: (hints[f.name], f) for f in dataclasses.fields(section_cls)}


def _unknown(kind: str, name: str, known) -> ConfigError:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"config: unknown {kind} {name!r}{hint}")


def _coerce(key: str, typ, value):
    """value (from TOML, or a string from the command line) as `typ`, or a ConfigError."""
    origin = typing.get_origin(typ)
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        args = typing.get_args(typ)
        if not isinstance(items, (list, tuple)) or len(items) != len(args):
            raise ConfigError(f"config: {key} must be {len(args)} comma-separated values, got {value!r}")
        return tuple(_coerce(key, a, v) for a, v in zip(args, items))
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif typ is str:
        if isinstance(value, str):
            return value
    name = getattr(typ, "__name__", str(typ))
    raise ConfigError(
        f"config: {key} must be {'a' if name != 'int' else 'an'} {name}, got {type(value).__name__} {value!r}"
    )


def _set(cfg: Config, key: str, value) -> None:
    section, _, name = key.partition(".")
    sections = _sections()
    if section not in sections:
        raise _unknown("section", section, sections)
    fields = _fields(sections[section])
    if name not in fields:
        raise _unknown("key", key, (f"{section}.{k}" for k in fields))
    typ, f = fields[name]
    value = _coerce(key, typ, value)
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"config: {key} must be one of {', '.join(choices)}; got {value!r}")
    setattr(getattr(cfg, section), name, value)


def resolve_config_path(spec: str) -> Path:
    """A shipped config's name ('debug', 'llama_60m', ...) or a path to a TOML file."""
    path = Path(spec)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{spec}.toml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))
    raise ConfigError(f"config: no file {spec!r} and no shipped config of that name (shipped: {', '.join(names)})")


def load_toml(cfg: Config, path: Path) -> None:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML: {exc}") from None
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"config: {path}: top-level key {section!r} must be a [section]")
        for name, value in values.items():
            _set(cfg, f"{section}.{name}", value)


def build_parser(prog: str = "ember train", description: str = "") -> argparse.ArgumentParser:
    """An argparse parser whose --help lists every option with its default and meaning."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Values come from the defaults, then --config, then --section.key=value flags.",
    )
    p.add_argument(
        "--config",
        default=None,
        help="a shipped config (" + ", ".join(sorted(x.stem for x in CONFIG_DIR.glob("*.toml"))) + ") or a TOML file",
    )
    defaults = Config()
    for section, cls in _sections().items():
        group = p.add_argument_group(f"[{section}]")
        for name, (typ, f) in _fields(cls).items():
            key = f"{section}.{name}"
            default = getattr(getattr(defaults, section), name)
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else repr(default)
            choices = f.metadata.get("choices")
            extra = f" {{{','.join(choices)}}}" if choices else ""
            flags = [f"--{key}"] + [a for a, k in ALIASES.items() if k == key]
            kwargs = dict(dest=key, default=argparse.SUPPRESS, help=f"{f.metadata['help']}{extra} (default: {shown})")
            if typ is bool:
                group.add_argument(*flags, nargs="?", const="true", metavar="BOOL", **kwargs)
            elif key == "checkpoint.resume":
                group.add_argument(*flags, nargs="?", const="latest", metavar="WHERE", **kwargs)
            else:
                group.add_argument(*flags, metavar=getattr(typ, "__name__", "VALUES").upper(), **kwargs)
    return p


def parse_config(
    argv: list[str] | None,
    prog: str = "ember train",
    description: str = "",
    base: Config | None = None,
    parser: argparse.ArgumentParser | None = None,
) -> Config:
    """Defaults (or `base`), then the --config file, then the flags. Unknown flags and keys,
    wrong types and values outside the choices raise ConfigError (argparse exits with status 2
    for flags)."""
    return apply_flags(parse_flags(argv, parser or build_parser(prog, description)), base)


def parse_flags(argv: list[str] | None, parser: argparse.ArgumentParser) -> dict:
    """The arguments given, by destination ('section.key', 'config', and any the caller added to
    the parser): an unknown flag is an argparse error (exit status 2) naming the closest one."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flag = unknown[0].split("=", 1)[0]
        known = [o for a in parser._actions for o in a.option_strings]
        close = difflib.get_close_matches(flag, known, n=1)
        parser.error(f"unknown option {flag}" + (f" (did you mean {close[0]}?)" if close else ""))
    return vars(args)


def apply_flags(flags: dict, base: Config | None = None) -> Config:
    """`base` (default: the defaults; changed in place), then flags['config']'s TOML file, then
    the other 'section.key' values."""
    cfg = base or Config()
    values = dict(flags)
    config_file = values.pop("config", None)
    if config_file:
        load_toml(cfg, resolve_config_path(config_file))
    for key, value in values.items():
        _set(cfg, key, value)
    return cfg


def config_from_dict(data: dict) -> Config:
    cfg = Config()
    for section, values in data.items():
        for name, value in values.items():
            _set(cfg, f"{section}.{name}", value)
    return cfg
