"""A comparison, not a test: the same small Llama trained dense and randomly pruned at 50 % and
80 % ERK sparsity (single weights, and 16×16 tiles), through `ember train` on the built-in corpus:
final validation loss, tokens/s (ms: per optimizer step) in one table.

    python examples/train_sparse.py [--quick] [--steps N] [--device cpu|cuda] [--json out.json]
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))  # the benchmark harness
from harness import Report, common_args, environment  # noqa: E402

from ember.train import parse_config, train  # noqa: E402

RUNS = {
    "dense": [],
    "ERK 50%": ["--sparsity.target=0.5"],
    "ERK 80%": ["--sparsity.target=0.8"],
    "ERK 80%, 16x16 tiles": ["--sparsity.target=0.8", "--sparsity.block=16"],
}


def main() -> None:
    p = common_args(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None)
    a = p.parse_args()
    steps = a.steps or (40 if a.quick else 600)
    device = "cuda" if a.device.startswith("cuda") else "cpu"
    report = Report(
        f"train_sparse: debug Llama, {steps} steps, ember train defaults",
        environment(a.device),
        baseline="dense",
        metrics=["val loss", "loss vs dense", "tokens/s", "density"],
    )
    results = {}
    for name, flags in RUNS.items():
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            summary = train(
                parse_config(
                    [
                        f"--training.steps={steps}",
                        f"--job.dir={tmp}",
                        "--job.name=r",
                        f"--job.device={device}",
                        "--metrics.progress=false",
                        "--metrics.plot=false",
                        "--checkpoint.every=0",
                        "--checkpoint.export_safetensors=false",
                        *flags,
                    ]
                )
            )
            rows = [json.loads(x) for x in (Path(tmp) / "r" / "metrics.jsonl").read_text().splitlines()]
            sparsity = Path(tmp) / "r" / "sparsity.json"
            density = json.loads(sparsity.read_text())["density"] if sparsity.exists() else 1.0
        tps = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][1:]
        results[name] = (summary["val_loss"], sum(tps) / max(len(tps), 1), density)
        print(f"# {name}: val loss {results[name][0]:.4f}", flush=True)
    base = results["dense"][0]
    for name, (loss, tps, density) in results.items():
        tokens_per_step = 16 * 256  # ember train's default batch
        report.add(
            "debug",
            name,
            1e3 * tokens_per_step / tps if tps else float("nan"),
            **{"val loss": loss, "loss vs dense": loss / base - 1, "tokens/s": tps, "density": density},
        )
    report.print()
    report.write_json(a.json)


if __name__ == "__main__":
    main()
