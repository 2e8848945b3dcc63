"""--metrics.wandb: every row of metrics.jsonl logged to Weights & Biases as well (rank 0), at its
step. The W&B run is named after the run folder and keeps its files in RUN/wandb/; its id is kept in
RUN/wandb_id, so a resumed run continues the W&B run its checkpoint logged to (trainer._wandb: a
rewind, W&B off then or another project start a new one, which is given the rows metrics.jsonl
kept first). A W&B that cannot start a run (no login, no network) stops the run with one line.
WANDB_MODE=offline works without a network (`wandb sync RUN/wandb/offline-run-*` uploads it later)."""

from __future__ import annotations

import importlib.util
import secrets
from pathlib import Path

from .. import atomic
from .config import ConfigError

ID_FILE = "wandb_id"


def check_installed() -> None:
    if importlib.util.find_spec("wandb") is None:
        raise ConfigError(
            "config: metrics.wandb needs Weights & Biases, which is not installed: pip install ember[wandb]"
        )


def scalars(row: dict) -> dict[str, float]:
    """The numbers of a metrics row by name: a list (one value per rank) or a dict becomes NAME/i
    or NAME/key; strings, None, the step and the wall time are left out."""
    out = {}
    for key, value in row.items():
        if key in ("step", "time"):
            continue
        items = enumerate(value) if isinstance(value, list) else value.items() if isinstance(value, dict) else None
        for name, v in [(f"{key}/{i}", v) for i, v in items] if items is not None else [(key, value)]:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[name] = v
    return out


class WandbRun:
    """The W&B run of a run folder (rank 0)."""

    def __init__(self, run_dir: Path, project: str, config: dict, resume: bool):
        import wandb

        path = Path(run_dir) / ID_FILE
        self.continued = resume and path.is_file()  # else metrics.py logs the rows kept before this run
        run_id = path.read_text().strip() if self.continued else secrets.token_hex(6)
        try:
            self.run = wandb.init(
                project=project, name=Path(run_dir).name, id=run_id, dir=str(run_dir), config=config, resume="allow"
            )
        except Exception as exc:  # no login, no network: wandb's own error, said in one line
            raise ConfigError(
                f"metrics.wandb: Weights & Biases could not start a run: {exc} (`wandb login`, or "
                "WANDB_MODE=offline to keep it in RUN/wandb/ and `wandb sync` it later)"
            ) from None
        atomic.write_text(path, run_id + "\n")

    def log(self, row: dict) -> None:
        values = scalars(row)
        if values:
            self.run.log(values, step=int(row["step"]))

    def close(self) -> None:
        self.run.finish()
