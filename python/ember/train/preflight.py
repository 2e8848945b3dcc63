"""Preflight checks: a configuration that cannot run is rejected before any work starts (no
model built, no folder made). (The validation loss is evaluate.py's.)"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import corpus
from ..data.fingerprint import plain_tokenizer, source_tokenizer
from ..data.loader import parse_sources, same_path
from ..data.mixing import load_graph
from ..data.shards import WEIGHTS_INDEX, check_shards, read_index, window_count
from ..models import CONFIGS
from .config import Config, ConfigError
from .eval_sources import eval_specs


def check_config(cfg: Config, world_size: int = 1) -> None:
    """Every check of every switch, in this one list and order: the numbers, the features, the
    ranks, the device, the data, the eval-only sources, the Hugging Face source, the resume target.
    The first failure raises ConfigError."""
    for check in (
        check_ranges,
        _check_features,
        lambda c: _check_ranks(c, world_size),
        _check_device,
        _check_data,
        _check_mixing,
        _check_eval_sources,
        _check_tasks,
        _check_init_from,
        _check_metrics,
        _check_resume,
    ):
        check(cfg)


def _check_device(cfg: Config) -> None:
    if cfg.job.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config: job.device=cuda but no GPU is visible")
    if cfg.job.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"config: job.device must be auto, cpu or cuda; got {cfg.job.device!r}")


def _check_tasks(cfg: Config) -> None:
    """--eval.tasks: lm-eval installed, every name a task it knows (the include folder's or its
    own), the numbers >= 0; its settings only with it."""
    e = cfg.eval
    for key in ("tasks_every", "tasks_num_fewshot", "tasks_limit"):
        if getattr(e, key) < 0:
            raise ConfigError(f"config: eval.{key} must be >= 0, got {getattr(e, key)}")
    if not e.tasks:
        given = [k for k in ("tasks_every", "tasks_include_path", "tasks_num_fewshot", "tasks_limit") if getattr(e, k)]
        if given:
            raise ConfigError(f"config: eval.{given[0]} needs eval.tasks (the lm-evaluation-harness tasks to run)")
        return
    from ..evals.tasks import check_tasks

    check_tasks(e.tasks, e.tasks_include_path, "config: eval.tasks")


def _check_metrics(cfg: Config) -> None:
    """--metrics.wandb: wandb installed, a project name W&B accepts."""
    if not cfg.metrics.wandb:
        return
    from .metrics_wandb import check_installed

    check_installed()
    project = cfg.metrics.wandb_project
    if not project or len(project) > 128 or any(c in project for c in "/\\#?%:"):
        raise ConfigError(
            f"config: metrics.wandb_project must be 1 to 128 characters without / \\ # ? % :, got {project!r}"
        )


def _check_init_from(cfg: Config) -> None:
    """--model.init_from (the checks every command that builds the run's model makes: init_from.py),
    and --loss.distill, whose teacher it is."""
    if cfg.loss.distill < 0 or cfg.loss.distill and not cfg.model.init_from:
        raise ConfigError(
            f"config: loss.distill must be >= 0 and needs model.init_from (the teacher); got {cfg.loss.distill} with model.init_from={cfg.model.init_from!r}"
        )
    if cfg.model.init_from:
        from .init_from import check_init_from

        check_init_from(cfg)


def _check_mixing(cfg: Config) -> None:
    """--data.mixing=skillit: its numbers, at least two sources (each with a validation split), no
    weight schedule (the rule sets the weights), a skills graph that fits; its settings only with it."""
    d = cfg.data
    if d.mixing != "skillit":
        if d.skills_graph != "identity":
            raise ConfigError(
                f"config: data.skills_graph={d.skills_graph} needs data.mixing=skillit (it is Skill-it's graph)"
            )
        return
    if d.mixing_every < 1 or d.mixing_batches < 1 or not 0 <= d.mixing_eta < float("inf"):
        raise ConfigError(
            "config: data.mixing=skillit needs data.mixing_every >= 1, data.mixing_batches >= 1 and data.mixing_eta "
            f"finite and >= 0; got {d.mixing_every}, {d.mixing_batches} and {d.mixing_eta}"
        )
    sources = parse_sources(d.sources)
    if len(sources) < 2:
        raise ConfigError("config: data.mixing=skillit needs two or more data.sources (one source: nothing to mix)")
    timed = [s.path for s in sources if s.schedule]
    if timed:
        raise ConfigError(
            f"config: data.mixing=skillit sets the source weights itself: drop the STEP=WEIGHT schedule of {', '.join(timed)}"
        )
    for s in sources:
        val = [] if s.path == corpus.NAME else read_index(s.path)["splits"].get("val") or []
        if s.path != corpus.NAME and not sum(window_count(x["tokens"], d.seq_len) for x in val):
            raise ConfigError(
                f"config: data.mixing=skillit needs each source's validation loss: {s.path} has no validation window "
                f"of {d.seq_len + 1} tokens (ember prepare --val-per-mille)"
            )
    try:
        load_graph(d.skills_graph, len(sources), names=[s.path for s in sources])
    except ValueError as exc:
        raise ConfigError(f"config: {exc}") from None


def _check_eval_sources(cfg: Config) -> None:
    """Each --eval.sources folder is a token folder with a validation split, of the training data's
    tokenizer; no source's validation documents are in another's training split."""
    check_one_split(cfg)
    if not cfg.eval.sources:
        return
    first = parse_sources(cfg.data.sources)[0].path
    want = source_tokenizer(first, cfg.data.tokenizer)
    plain = plain_tokenizer(first, cfg.data.tokenizer)  # data prepared without --control-tokens: evaluated
    for s in parse_sources(cfg.eval.sources):
        if s.path != "stdlib" and not (Path(s.path) / "index.json").is_file():
            raise ConfigError(
                f"config: eval.sources: {s.path}: not a token folder (no index.json; make one with `ember prepare`)"
            )
        if s.path != "stdlib" and not read_index(s.path)["splits"].get("val"):
            raise ConfigError(f"config: eval.sources: {s.path} has no validation split (ember prepare --val-per-mille)")
        got = source_tokenizer(s.path, cfg.data.tokenizer)
        if got not in (want, plain):
            raise ConfigError(
                f"config: eval.sources: {s.path} has another tokenizer (vocab size, eos id, bos id, tokenizer.json "
                f"hash) {got} than data.sources {want}"
            )


def _check_control_alike(sources, tokenizer: str) -> None:
    """Training sources of one tokenizer where some have control tokens and others not: ConfigError
    saying so (their vocabularies differ by the control ids, not by another tokenizer)."""
    plain = {s.path: plain_tokenizer(s.path, tokenizer) for s in sources}
    control = [s.path for s in sources if plain[s.path] != source_tokenizer(s.path, tokenizer)]
    if len(set(plain.values())) == 1 and control:
        raise ConfigError(
            f"config: data.sources: prepared with --control-tokens: {', '.join(control)}; without: "
            f"{', '.join(p for p in plain if p not in control)}: prepare every training source with "
            "--control-tokens (a source without them may be an --eval.sources folder)"
        )


def check_one_split(cfg: Config) -> None:
    """The training and eval folders prepared from a common input (a file, or a folder holding
    it) must share --val-per-mille: the split is a hash of each document below it, so a larger
    share puts documents in validation that the other folder trains on. (Folders from before
    index.json recorded the share are not compared.) ember eval checks it too."""
    folders = [s.path for s in eval_specs(cfg) if s.path != "stdlib" and (Path(s.path) / "index.json").is_file()]
    made = [(f, read_index(f)) for f in folders]
    made = [
        (f, i["val_per_mille"], [Path(p) for p in i.get("inputs", []) if p != "stdlib"])
        for f, i in made
        if "val_per_mille" in i
    ]
    for k, (a, share_a, inputs_a) in enumerate(made):
        for b, share_b, inputs_b in made[k + 1 :]:
            common = next((p for p in inputs_a for q in inputs_b if p == q or p in q.parents or q in p.parents), None)
            if common is not None and share_a != share_b:
                raise ConfigError(
                    f"config: {a} (--val-per-mille {share_a}) and {b} (--val-per-mille {share_b}) were both prepared "
                    f"from {common}: one's validation documents are in the other's training split; prepare them "
                    "with one --val-per-mille"
                )


def check_ranges(cfg: Config) -> None:
    """The model name, and every number within its range."""
    t, m, d, o, s, e, c = cfg.training, cfg.model, cfg.data, cfg.optimizer, cfg.lr_scheduler, cfg.eval, cfg.checkpoint
    if m.name not in CONFIGS:
        raise ConfigError(f"config: model.name must be one of {', '.join(CONFIGS)}; got {m.name!r}")
    positive = {
        "training.steps": t.steps,
        "training.batch_size": t.batch_size,
        "data.seq_len": d.seq_len,
        "optimizer.lr": o.lr,
        "eval.batches": e.batches,
        "eval.batch_size": e.batch_size,
        "metrics.log_every": cfg.metrics.log_every,
    }
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"config: {key} must be > 0, got {value}")
    non_negative = {
        "training.micro_batch_size": t.micro_batch_size,
        "training.max_norm": t.max_norm,
        "lr_scheduler.warmup_steps": s.warmup_steps,
        "optimizer.weight_decay": o.weight_decay,
        "eval.every": e.every,
        "checkpoint.every": c.every,
        "checkpoint.keep": c.keep,
        **{
            f"model.{k}": getattr(m, k)
            for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden", "vocab_size")
        },
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"config: {key} must be >= 0, got {value}")
    if not 0 <= s.min_lr_ratio <= 1 or not 0 < s.decay_ratio <= 1:
        raise ConfigError(
            f"config: lr_scheduler.min_lr_ratio must be in [0, 1] and decay_ratio in (0, 1]; got {s.min_lr_ratio} and {s.decay_ratio}"
        )
    if not all(0 <= b < 1 for b in o.betas):
        raise ConfigError(f"config: optimizer.betas must be in [0, 1), got {o.betas}")


def _check_features(cfg: Config) -> None:
    """Sparsity, float8 and APOLLO settings, and the combinations that do not work together."""
    sp, o = cfg.sparsity, cfg.optimizer
    if not 0 <= sp.target < 1:
        raise ConfigError(f"config: sparsity.target must be in [0, 1), got {sp.target}")
    if sp.block not in (0, 16, 32, 64, 128):
        raise ConfigError(f"config: sparsity.block must be 0, 16, 32, 64 or 128, got {sp.block}")
    if cfg.float8.recipe and sp.target:
        raise ConfigError(
            "config: float8.recipe and sparsity.target cannot be combined (pruned layers are SparseLinear, which has no fp8 path)"
        )
    if cfg.float8.all_gather and not cfg.float8.recipe:
        raise ConfigError("config: float8.all_gather needs float8.recipe (it all-gathers Float8Linear weights in fp8)")
    if cfg.float8.all_gather and cfg.training.parallel not in ("fsdp", "hsdp"):
        raise ConfigError(
            f"config: float8.all_gather needs training.parallel=fsdp or hsdp (it changes what FSDP2 all-gathers), got {cfg.training.parallel!r}"
        )
    if cfg.training.kernel_fallback and not cfg.training.selftest:
        raise ConfigError(
            "config: training.kernel_fallback needs training.selftest (it acts on the kernels that fail it)"
        )
    if o.name.startswith("apollo"):
        if o.rank < 0 or o.scale < 0 or o.update_proj_gap < 1:
            raise ConfigError(
                f"config: optimizer.rank and optimizer.scale must be >= 0 and update_proj_gap >= 1, got {o.rank}, {o.scale} and {o.update_proj_gap}"
            )


def _check_ranks(cfg: Config, world_size: int) -> None:
    """The HSDP mesh, the global batch and the micro-batch against the number of ranks."""
    t = cfg.training
    if t.parallel == "hsdp" and world_size > 1:
        from .build import hsdp_shard_size

        shard = hsdp_shard_size(cfg, world_size)
        if shard < 1 or world_size % shard:
            raise ConfigError(
                f"config: training.hsdp_shard {shard} must divide the {world_size} ranks (a mesh of replicas × shards)"
            )
    per_rank, rem = divmod(t.batch_size, world_size)
    if rem:
        raise ConfigError(f"config: training.batch_size {t.batch_size} must be divisible by the {world_size} ranks")
    micro = t.micro_batch_size or per_rank
    if per_rank % micro:
        raise ConfigError(f"config: training.micro_batch_size {micro} must divide the per-rank batch {per_rank}")


def _check_resume(cfg: Config) -> None:
    c = cfg.checkpoint
    if c.resume and c.resume != "latest" and not Path(c.resume).exists():
        raise ConfigError(f"config: checkpoint.resume: no such run or checkpoint folder {c.resume}")
    if c.resume == "latest" and not cfg.job.name:
        raise ConfigError("config: checkpoint.resume=latest needs the run's --job.name (or pass its folder)")


def _check_data(cfg: Config) -> None:
    """The sources and tokenizer exist and agree; token weights where asked; each token folder's shards."""
    try:
        sources = parse_sources(cfg.data.sources)
    except ValueError as exc:
        raise ConfigError(f"config: {exc}") from None
    if cfg.data.tokenizer != "byte" and not Path(cfg.data.tokenizer).is_file():
        raise ConfigError(f"config: data.tokenizer: no such tokenizer.json {cfg.data.tokenizer}")
    vocabs = {}
    for src in sources:
        if src.path != corpus.NAME and not (Path(src.path) / "index.json").is_file():
            why = (
                "no such folder"
                if not Path(src.path).exists()
                else "not a token folder (no index.json; make one with `ember prepare`)"
            )
            raise ConfigError(f"config: data.sources: {src.path}: {why}")
        try:
            vocabs[src.path] = source_tokenizer(src.path, cfg.data.tokenizer)
        except ValueError as exc:  # an index.json that does not parse, or the wrong format
            raise ConfigError(f"data: {exc}") from None
    if len(set(vocabs.values())) > 1:
        _check_control_alike(sources, cfg.data.tokenizer)
        raise ConfigError(
            f"config: data.sources have different tokenizers (vocab size, eos id, bos id, tokenizer.json hash): {vocabs}"
        )
    tw = cfg.loss.token_weights
    if tw:
        if not any(s.path != corpus.NAME and same_path(s.path, tw) for s in sources):
            raise ConfigError(f"config: loss.token_weights={tw} must also be a data source (e.g. --data.sources={tw})")
        if not (Path(tw) / WEIGHTS_INDEX).is_file():
            raise ConfigError(
                f"config: loss.token_weights: {tw} has no token weights ({WEIGHTS_INDEX}); make them with `ember score`"
            )
    vocab = next(iter(vocabs.values()))[0]
    if cfg.model.vocab_size and cfg.model.vocab_size < vocab:
        raise ConfigError(f"config: model.vocab_size {cfg.model.vocab_size} is smaller than the tokenizer's {vocab}")
    for src in sources:
        if src.path != corpus.NAME:
            _check_token_folder(
                src.path, cfg.model.vocab_size or vocab, cfg.data.seq_len, bool(tw) and same_path(src.path, tw)
            )


def _check_token_folder(path: str, vocab: int, seq_len: int, with_weights: bool) -> None:
    """The shards themselves (see check_shards), and enough training tokens for one window."""
    try:
        check_shards(path, vocab, with_weights)
    except ValueError as exc:
        raise ConfigError(f"data: {exc}") from None
    train = read_index(path)["splits"].get("train", [])
    if not sum(window_count(e["tokens"], seq_len) for e in train):
        tokens = sum(e["tokens"] for e in train)
        raise ConfigError(
            f"data: {Path(path) / 'index.json'}: no training data: {tokens:,} tokens in the train split, "
            f"and a sequence needs {seq_len + 1} from one shard (data.seq_len {seq_len})"
        )
