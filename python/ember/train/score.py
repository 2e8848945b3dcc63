"""`ember score`: a reference model's per-token log-probs over a token folder, turned into PRIOR
weights (ember.losses.prior_token_weights, each document a segment) and stored beside the
shards, where `--loss.token_weights=DIR` finds them."""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..atomic import fsync_dir, fsync_tree, move
from ..data.shards import WEIGHTS_INDEX, check_shards, read_index, weights_file, write_json_atomic
from ..losses import prior_token_weights
from ..ops import linear_cross_entropy
from .evaluate import load_model
from .run_data import other_tokenizer, recorded_data


@torch.no_grad()
def token_logprobs(model, tokens: np.ndarray, seq_len: int, batch_size: int, device) -> np.ndarray:
    """log p(tokens[p] | the tokens before it in its window), windows of seq_len+1 starting at
    multiples of seq_len (the trainer's windows); position 0 gets 0."""
    n = len(tokens)
    out = np.zeros(n, dtype=np.float32)
    starts = list(range(0, max(n - 1, 0), seq_len))
    full = [s for s in starts if s + seq_len + 1 <= n]
    tail = [s for s in starts if s + seq_len + 1 > n]

    def run(batch_starts, length):
        x = torch.from_numpy(np.stack([np.asarray(tokens[s : s + length], dtype=np.int64) for s in batch_starts])).to(
            device
        )
        # The PRIOR scoring pass: log p(target) from the fused head + cross-entropy (no logits).
        h = model.hidden(x[:, :-1])
        _, lp = linear_cross_entropy(
            h, model.output_weight.to(h.dtype), x[:, 1:], reduction="sum", return_logprobs=True
        )
        lp = lp.cpu().numpy()
        for row, s in zip(lp, batch_starts):
            out[s + 1 : s + length] = row

    for i in tqdm(
        range(0, len(full), batch_size), desc="scoring", unit="batch", leave=False, disable=len(full) < 4 * batch_size
    ):
        run(full[i : i + batch_size], seq_len + 1)
    for s in tail:
        run([s], n - s)
    return out


def check_arguments(alpha: float, batch_size: int, seq_len: int) -> None:
    """`ember score`'s numbers, before anything is loaded or written (a negative window or NaN
    alpha once wrote weights of 0 or NaN, which train nothing)."""
    if not 0 <= alpha < float("inf"):
        raise ValueError(f"--alpha must be >= 0 and finite, got {alpha}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if seq_len < 0:
        raise ValueError(f"--seq-len must be >= 1 (or 0: the reference run's), got {seq_len}")


def shard_weights(model, tokens: np.ndarray, eos: int, alpha: float, seq_len: int, batch_size: int, device):
    """PRIOR weights of one shard, each document a segment."""
    lp = torch.from_numpy(token_logprobs(model, tokens, seq_len, batch_size, device))
    # The document of token p: the number of end-of-document tokens before it.
    is_eos = torch.from_numpy(np.asarray(tokens) == eos)
    segments = torch.cumsum(is_eos.long(), 0) - is_eos.long()
    ignore = torch.zeros(len(tokens), dtype=torch.bool)
    ignore[:1] = True  # nothing predicts the first token of a shard
    return prior_token_weights(lp, alpha, segments, ignore).numpy().astype(np.float32)


def score(
    checkpoint: str | Path,
    data_dir: str | Path,
    alpha: float = 1.0,
    batch_size: int = 16,
    device: str = "cpu",
    seq_len: int = 0,
) -> dict:
    check_arguments(alpha, batch_size, seq_len)
    data_dir = Path(data_dir)
    index = read_index(data_dir)
    model, saved, path = load_model(checkpoint, device, seq_len=seq_len)
    record = recorded_data(path)
    control = index.get("control_tokens") or {}
    if control and index["vocab_size"] > model.config.vocab_size >= index["vocab_size"] - len(control):
        raise ValueError(
            f"ember score: {data_dir} has control tokens ({', '.join(f'{t} {i}' for t, i in control.items())}) past "
            f"the reference model's vocabulary ({model.config.vocab_size}): it has no logits for them; score it with "
            "a reference run trained on data prepared with --control-tokens"
        )
    if index["vocab_size"] > model.config.vocab_size or record and other_tokenizer(str(data_dir), "byte", record):
        raise ValueError(
            f"ember score: {data_dir} was made with another tokenizer than the reference model's data "
            f"(vocabulary {index['vocab_size']}, the model's {model.config.vocab_size})"
        )
    check_shards(data_dir, model.config.vocab_size)  # a shard cut short would get weights for what is left
    seq_len = seq_len or saved.data.seq_len
    dtype = np.dtype(index["dtype"])
    total, weight_sum = 0, 0.0
    # Staged in a folder of this call's own (another `ember score` of this folder may be staging
    # too), published as one set by _publish; a failure removes the stage and changes nothing.
    staged = Path(tempfile.mkdtemp(prefix=".score-", dir=data_dir))
    try:
        for entry in index["splits"].get("train", []):
            tokens = (
                np.memmap(data_dir / entry["file"], dtype=dtype, mode="r") if entry["tokens"] else np.zeros(0, dtype)
            )
            w = shard_weights(model, tokens, index["eos_id"], alpha, seq_len, batch_size, device)
            if not np.isfinite(w).all():
                raise ValueError(f"ember score: non-finite weights for {entry['file']}; nothing was written")
            w.tofile(staged / weights_file(entry["file"]))
            total += len(w)
            weight_sum += float(w.sum(dtype=np.float64))
        if not weight_sum > 0:
            why = "has no training tokens" if not total else "gets a weight of 0 for every token"
            raise ValueError(f"ember score: {data_dir} {why}; nothing was written")
        info = {
            "method": "prior",
            "alpha": alpha,
            "reference": str(Path(path).resolve()),
            "seq_len": seq_len,
            "splits": ["train"],
            "tokens": total,
            "mean_weight": weight_sum / max(total, 1),
        }
        _publish(data_dir, staged, info)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return info


def _publish(data_dir: Path, staged: Path, info: dict) -> None:
    """The staged weight files renamed in, then weights.json written, under a lock (two scores
    of one folder publish one after the other, never a mix). weights.json goes first: a crash
    midway leaves a folder with no token weights (refused by name), never new weights under
    the weights.json a run recorded."""
    fsync_tree(staged)
    with open(data_dir / ".weights.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (data_dir / WEIGHTS_INDEX).unlink(missing_ok=True)
        fsync_dir(data_dir)
        for f in sorted(staged.iterdir()):
            move(f, data_dir / f.name)
        write_json_atomic(data_dir / WEIGHTS_INDEX, info)
        fsync_dir(data_dir)
