"""The `ember` command: train | prepare | score | eval | generate | skills-graph | plot | export | info | selftest.

`ember train` with no arguments trains the debug model on the built-in corpus (the Python
standard library's source), on CPU or GPU; under `torchrun --nproc-per-node N -m ember train`
it runs data-parallel (DDP, or FSDP2 with --training.parallel=fsdp).
"""

import argparse
import json
import sys
from pathlib import Path

COMMANDS = {
    "train": "pre-train a model (default: the debug model on the built-in corpus)",
    "prepare": "tokenize text / jsonl / parquet files into token shards",
    "score": "per-token PRIOR weights for a token folder from a reference checkpoint",
    "eval": "validation loss and perplexity of a checkpoint, or lm-evaluation-harness tasks (--tasks)",
    "generate": "sample text from a run's model (a prompt, a control token of conditional training)",
    "skills-graph": "estimate Skill-it's skills graph of data sources from a checkpoint",
    "plot": "PNG curves (loss, lr, tokens/s) of a run folder",
    "export": "a checkpoint as a Hugging Face model folder (transformers' from_pretrained loads it)",
    "info": "how ember was built and the ops it provides",
    "selftest": "check every kernel against its reference on this device (ember train does it first, cached)",
}


def _parser(command: str, details: str = "") -> argparse.ArgumentParser:
    """The parser of `ember COMMAND`: its one-line summary from COMMANDS, then `details`."""
    return argparse.ArgumentParser(prog=f"ember {command}", description=COMMANDS[command] + details)


def _info(argv) -> int:
    _parser("info").parse_args(argv)
    import ember

    import torch

    info = {**ember.build_info(), "cuda_available": ember.cuda_available()}
    width = max(map(len, info))
    print("ember build")
    for key, value in info.items():
        print(f"  {key:<{width}}  {value if value not in ('', None) else '-'}")
    print("ops (torch.ops.ember.*: kernels registered)")
    for name, keys in ember.ops_available().items():
        print(f"  {name.removeprefix('ember::'):<24} {', '.join(keys)}")
    from .kernel_check import cache, training

    print("selftest (cached results of `ember selftest` / `ember train`)")
    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())] if ember.cuda_available() else ["cpu"]
    for device in devices:
        print(f"  {device:<8} {training.describe(cache.load(torch.device(device)))}")
    return 0


def _selftest(argv) -> int:
    from .kernel_check import FAMILIES, selftest

    p = _parser(
        "selftest",
        ". Each kernel runs at shapes that reach each of its instantiations and is compared with its reference at "
        "the tests' tolerances; one line per kernel: pass/fail, its largest error against its tolerance, time. Exit "
        "status 0 only when every kernel passes. The results are cached for `ember train`.",
    )
    p.add_argument("--family", action="append", choices=FAMILIES, help="a family to check (repeat; default: all)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when a GPU is visible)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON")
    a = p.parse_args(argv)
    import ember

    if a.device not in (None, "cpu", "cuda") and not str(a.device).startswith("cuda:"):
        raise ValueError(f"--device must be cpu or cuda, got {a.device!r}")
    if a.device and a.device.startswith("cuda") and not ember.cuda_available():
        raise ValueError("--device cuda: ember's CUDA kernels are not built or no GPU is visible")
    if a.json and (Path(a.json).is_dir() or not Path(a.json).resolve().parent.is_dir()):
        raise ValueError(f"--json {a.json}: not a file in an existing folder (checked before the kernels run)")
    report = selftest(a.family, a.device)
    print("\n".join(report.lines()))
    if a.json:
        from .atomic import write_json

        try:
            write_json(a.json, report.to_dict())
        except OSError as exc:  # permissions, a full disk: after the report, one line and status 1
            raise ValueError(f"--json {a.json}: cannot be written ({exc.strerror or exc})") from None
    failed = report.failed()
    if failed:
        print(f"ember selftest: FAILED: {', '.join(failed)}", file=sys.stderr)
    return 0 if not failed else 1


def _train(argv) -> int:
    from .train import parse_config, train
    from .train.preempt import EXIT_PREEMPTED, Preempted

    cfg = parse_config(
        argv,
        description=COMMANDS["train"]
        + ". Every option below is a --section.key=value flag or a key of a TOML --config file.",
    )
    try:
        train(cfg)
    except Preempted:  # the trainer said where it stopped and how to go on
        return EXIT_PREEMPTED
    except KeyboardInterrupt:  # a second signal: no checkpoint for this step
        print("ember train: aborted; nothing more was saved (the last complete checkpoint is intact)", file=sys.stderr)
        return 130  # 128 + SIGINT, what a shell reports for Ctrl-C
    return 0


def _prepare(argv) -> int:
    from .data.prepare import prepare

    p = _parser(
        "prepare",
        ". A folder contributes its .txt/.md/.py/.rst/.json/.jsonl/.parquet files (and .gz/.bz2/.xz of them; "
        "what it skips is reported); 'stdlib' is the built-in corpus.",
    )
    p.add_argument("inputs", nargs="+", help="files, folders, or 'stdlib'")
    p.add_argument("--out", required=True, help="output folder (created; must be empty)")
    p.add_argument(
        "--tokenizer",
        default="byte",
        help="'byte' (default), the path of a Hugging Face tokenizer.json, or a Hugging Face model folder (its "
        "tokenizer.json and its end/beginning-of-document tokens)",
    )
    p.add_argument(
        "--eos-token",
        default=None,
        help="end-of-document token of a tokenizer.json (default: the folder's, else found by name)",
    )
    p.add_argument(
        "--text-key", default="text", help="the text field of jsonl records / parquet column (default: text)"
    )
    p.add_argument("--workers", type=int, default=0, help="processes (default: one per core, at most one per file)")
    p.add_argument(
        "--val-per-mille", type=int, default=5, help="documents per thousand kept for validation (default: 5)"
    )
    p.add_argument("--shard-tokens", type=int, default=1 << 28, help="tokens per shard, about (default: 2^28)")
    p.add_argument(
        "--control-tokens",
        default=None,
        metavar="FIELD:THRESHOLD",
        help="conditional training: put <|good|> (the record's FIELD score >= THRESHOLD) or <|bad|> before each "
        "document (jsonl/json/parquet records; a list of scores: one per sentence); two ids after the vocabulary",
    )
    a = p.parse_args(argv)
    index = prepare(
        a.inputs,
        a.out,
        a.tokenizer,
        a.workers,
        a.text_key,
        a.val_per_mille,
        a.shard_tokens,
        a.eos_token,
        control_tokens=a.control_tokens,
    )
    for note in index["notes"]:
        print(f"ember prepare: note: {note}", file=sys.stderr)
    for split, shards in index["splits"].items():
        print(
            f"{split}: {sum(s['tokens'] for s in shards):,} tokens, {sum(s['documents'] for s in shards):,} documents, {len(shards)} shard(s)"
        )
    if "control" in index:
        c, ids = index["control"], index["control_tokens"]
        sentences = c.get("sentences")
        print(
            f"control tokens {', '.join(f'{k} {v}' for k, v in ids.items())} ({c['field']} >= {c['threshold']:g}): "
            f"{c['documents']['good']:,} good and {c['documents']['bad']:,} bad documents"
            + (f", {sentences['good']:,} good and {sentences['bad']:,} bad sentences" if sentences else "")
        )
    print(f"ember prepare: wrote {a.out} (vocabulary {index['vocab_size']}, {index['dtype']})")
    return 0


def _score(argv) -> int:
    from .train.score import score

    p = _parser(
        "score",
        ": w = (1 - p_ref)^alpha, averaging 1 over each document; stored beside the shards for --loss.token_weights.",
    )
    p.add_argument("checkpoint", help="the reference model: a checkpoint folder or a run folder (its latest)")
    p.add_argument("--data", required=True, help="token folder from `ember prepare`")
    p.add_argument("--alpha", type=float, default=1.0, help="exponent alpha (default: 1)")
    p.add_argument("--batch-size", type=int, default=16, help="windows per forward (default: 16)")
    p.add_argument("--seq-len", type=int, default=0, help="window length (default: the reference run's)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    a = p.parse_args(argv)
    from .train.distributed import pick_device

    try:
        device = pick_device(a.device)
    except RuntimeError as exc:  # cuda asked, none visible
        raise ValueError(f"--device {a.device}: {exc}") from None
    info = score(a.checkpoint, a.data, a.alpha, a.batch_size, device, a.seq_len)
    print(f"ember score: {info['tokens']:,} token weights (mean {info['mean_weight']:.4f}) written to {a.data}")
    return 0


def _eval(argv) -> int:
    from .train.config import build_parser, parse_flags
    from .train.evaluate import evaluate_checkpoint

    parser = build_parser(
        "ember eval",
        COMMANDS["eval"]
        + ". The checkpoint's own config, changed by any --section.key=value flag (e.g. --data.sources, --eval.batches). "
        "With --tasks, lm-evaluation-harness tasks on the run's model and tokenizer instead (--job.device applies).",
    )
    parser.add_argument("checkpoint", help="a checkpoint folder or a run folder (its latest)")
    _task_arguments(parser)
    flags = parse_flags(argv, parser)
    tasks = {k: flags.pop(k) for k in TASK_OPTIONS if k in flags}
    if tasks:
        return _eval_tasks(flags, tasks)
    result = evaluate_checkpoint(flags.pop("checkpoint"), flags=flags)
    print(f"step {result['step']}: val loss {result['val_loss']:.4f} nats/token, perplexity {result['perplexity']:.3f}")
    print(json.dumps(result))
    return 0


TASK_OPTIONS = ("tasks", "include_path", "num_fewshot", "limit", "output", "batch_size", "dtype")


def _task_arguments(parser: argparse.ArgumentParser) -> None:
    """`ember eval --tasks` and the options that go with it (given or absent: no defaults here)."""
    g = parser.add_argument_group("lm-evaluation-harness tasks (the `eval` extra: pip install 'ember[eval]')")
    for flag, kw in (
        ("--tasks", dict(metavar="NAMES", help="run these lm-eval tasks (NAME,...) on the checkpoint's model instead")),
        ("--include-path", dict(metavar="DIR", help="a folder of lm-eval task YAML files (read locally)")),
        ("--num-fewshot", dict(type=int, metavar="N", help="few-shot examples per question (default: each task's)")),
        ("--limit", dict(type=int, metavar="N", help="at most N examples per task (default: all)")),
        ("--output", dict(metavar="FILE.json", help="also write the numbers and lm-eval's results as JSON")),
        ("--batch-size", dict(type=int, metavar="N", help="requests per forward pass (default: 16)")),
        ("--dtype", dict(choices=("float32", "bfloat16"), help="compute dtype (default: float32)")),
    ):
        g.add_argument(flag, default=argparse.SUPPRESS, **kw)


def _eval_tasks(flags: dict, opts: dict) -> int:
    """`ember eval CHECKPOINT --tasks NAMES ...`: a table of task / metric / value, and --output."""
    if "tasks" not in opts:
        raise ValueError(f"--{next(iter(opts)).replace('_', '-')} needs --tasks")
    other = [k for k, v in flags.items() if k not in ("checkpoint", "job.device") and v is not None]
    if other:
        raise ValueError(f"--{other[0]} does not apply with --tasks (the run's own model and tokenizer are evaluated)")
    for key in ("num_fewshot", "limit", "batch_size"):
        if opts.get(key) is not None and opts[key] < (0 if key == "num_fewshot" else 1):
            raise ValueError(f"--{key.replace('_', '-')} must be {'>= 0' if key == 'num_fewshot' else '>= 1'}")
    out = opts.get("output")
    if out and (Path(out).is_dir() or not Path(out).resolve().parent.is_dir()):
        raise ValueError(f"--output {out}: not a file in an existing folder (checked before the model loads)")
    from .evals.tasks import require_lm_eval

    require_lm_eval("--tasks")  # before lm-eval's modules are imported
    from .evals.run import evaluate_run

    report, results = evaluate_run(
        flags["checkpoint"],
        opts["tasks"],
        opts.get("include_path", ""),
        opts.get("num_fewshot"),
        opts.get("limit"),
        flags.get("job.device", "auto"),
        opts.get("batch_size", 16),
        opts.get("dtype", "float32"),
    )
    from lm_eval.utils import make_table

    print(f"step {report['step']} ({report['checkpoint']})")
    print(make_table(results))
    if results.get("groups"):
        print(make_table(results, "groups"))
    if out:
        from .atomic import write_json

        write_json(out, report)
        print(f"ember eval: wrote {out}")
    return 0


def _generate(argv) -> int:
    from .train.generate import CONTROLS, Sampling, generate

    p = _parser(
        "generate",
        ". Starts from the run's beginning-of-document token (else its end-of-document token), then the --control "
        "token, then --prompt; a sample ends at the end-of-document token or after --max-new-tokens. The same "
        "command on the same device gives the same samples.",
    )
    p.add_argument("checkpoint", help="a checkpoint folder or a run folder (its latest); sharded ones too")
    p.add_argument("--prompt", default="", help="text the samples continue (default: none)")
    p.add_argument(
        "--control",
        choices=list(CONTROLS),
        default=None,
        help="condition on <|good|> or <|bad|> (a run prepared with --control-tokens; the other is never sampled)",
    )
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens per sample, at most (default: 128)")
    p.add_argument("--num-samples", type=int, default=1, help="samples to draw (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling generator (default: 0)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0: greedy (default: 1)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass, in (0, 1] (default: 1: all)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when a GPU is visible)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the samples and settings as JSON")
    a = p.parse_args(argv)
    from .train.distributed import pick_device

    try:
        device = pick_device(a.device)
    except RuntimeError as exc:  # cuda asked, none visible
        raise ValueError(f"--device {a.device}: {exc}") from None
    except ValueError:
        raise ValueError(f"--device must be cpu, cuda or auto, got {a.device!r}") from None
    if a.json and (Path(a.json).is_dir() or not Path(a.json).resolve().parent.is_dir()):
        raise ValueError(f"--json {a.json}: not a file in an existing folder")
    sampling = Sampling(a.max_new_tokens, a.num_samples, a.seed, a.temperature, a.top_p)
    result = generate(a.checkpoint, a.prompt, a.control, sampling, device)
    for i, sample in enumerate(result["samples"], 1):
        end = "end of document" if sample["ended"] else f"{a.max_new_tokens} tokens"
        print(f"--- sample {i} ({len(sample['ids'])} tokens, stopped at {end})\n{a.prompt}{sample['text']}")
    if a.json:
        from .atomic import write_json

        write_json(a.json, result)
    return 0


def _skills_graph(argv) -> int:
    from .train.config import build_parser, parse_flags
    from .train.skills_graph import format_graph, skills_graph

    parser = build_parser(
        "ember skills-graph",
        COMMANDS["skills-graph"]
        + ": A_ij = the drop in source j's validation loss after --steps steps on source i alone, each from the "
        "checkpoint's weights (Skill-it's procedure). The checkpoint's own config, changed by any --section.key=value "
        "flag (e.g. --data.sources, --optimizer.lr, --data.mixing_batches); give the sources in the order the "
        "training run names them, then --data.skills_graph=OUT.",
    )
    parser.add_argument("checkpoint", help="a checkpoint folder or a run folder (its latest)")
    parser.add_argument("--steps", type=int, required=True, help="optimizer steps on each source")
    parser.add_argument("--out", required=True, help="the JSON file to write (must not exist)")
    flags = parse_flags(argv, parser)
    checkpoint, steps, out = flags.pop("checkpoint"), flags.pop("steps"), flags.pop("out")
    result = skills_graph(checkpoint, flags, steps, out)
    print(f"skills graph after {steps} steps from {result['checkpoint']} (row: trained on; column: loss drop of)")
    print(format_graph(result))
    print(f"ember skills-graph: wrote {out}")
    return 0


def _plot(argv) -> int:
    from .train.plot import plot_run

    p = _parser("plot")
    p.add_argument("run_dir")
    a = p.parse_args(argv)
    for path in plot_run(a.run_dir):
        print(path)
    return 0


def _export(argv) -> int:
    from .train.export import export_run

    p = _parser(
        "export",
        ". A run started from a Hugging Face checkpoint keeps its architecture and tensor names; a run from scratch is a "
        "LlamaForCausalLM. The folder appears complete or not at all.",
    )
    p.add_argument("checkpoint", help="a checkpoint folder or a run folder (its latest)")
    p.add_argument("out_dir", help="output folder (created; must not exist or be empty)")
    p.add_argument(
        "--dtype", default=None, help="bf16, fp16 or fp32 (default: the weights' own, fp32 for a trained run)"
    )
    p.add_argument("--max-shard-gb", type=float, default=2.0, help="split the safetensors above this size (default: 2)")
    a = p.parse_args(argv)
    if not 0 < a.max_shard_gb < float("inf"):
        raise ValueError(f"ember export: --max-shard-gb must be a positive number of GiB, got {a.max_shard_gb}")
    info = export_run(a.checkpoint, a.out_dir, a.dtype, max(1, int(a.max_shard_gb * 2**30)))
    print(
        f"ember export: wrote {info['out_dir']} ({info['architecture']}) from {info['checkpoint']}"
        + (f", tokenizer files {', '.join(info['tokenizer_files'])}" if info["tokenizer_files"] else "")
    )
    return 0


HANDLERS = {
    "train": _train,
    "prepare": _prepare,
    "score": _score,
    "eval": _eval,
    "generate": _generate,
    "skills-graph": _skills_graph,
    "plot": _plot,
    "info": _info,
    "selftest": _selftest,
    "export": _export,
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in HANDLERS:
        width = max(map(len, COMMANDS))
        lines = [f"  {c:<{width}}  {h}" for c, h in COMMANDS.items()]
        print(
            "usage: ember {"
            + ",".join(COMMANDS)
            + "} ...\n\nember: cheaper LLM pre-training on Hopper GPUs\n\n"
            + "\n".join(lines)
            + "\n\n`ember COMMAND --help` lists a command's options."
        )
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nember: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0 if argv else 2
    from .kernel_check.training import KernelCheckFailed
    from .train import ConfigError, TrainingError

    try:
        return HANDLERS[argv[0]](argv[1:])
    except (ConfigError, TrainingError, KernelCheckFailed, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"ember {argv[0]}: error: {str(exc).removeprefix(f'ember {argv[0]}: ')}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
