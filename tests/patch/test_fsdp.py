"""A patched transformers model under FSDP2 (fully_shard) and DDP, 2 CPU ranks, gloo: the loss and
the gradients equal one process's, and the head module is called once per micro-batch (its own
pre-forward hook is what FSDP unshards it in)."""

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import VOCAB, tiny_model  # noqa: E402

MICRO_BATCHES = 2


def _batches(rank: int):
    g = torch.Generator().manual_seed(10 + rank)
    out = []
    for _ in range(MICRO_BATCHES):
        ids = torch.randint(0, VOCAB, (2, 13), generator=g)
        labels = ids.clone()
        labels[:, :2] = -100
        out.append((ids, labels))
    return out


def _worker(rank: int, world: int, folder: str, parallel: str) -> None:
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    from ember.patch import apply_ember

    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    try:
        model = tiny_model("llama").train()
        apply_ember(model)
        head_calls = []
        model.lm_head.register_forward_pre_hook(lambda m, a: head_calls.append(1))
        if parallel == "fsdp2":
            for layer in model.model.layers:
                fully_shard(layer)
            fully_shard(model.lm_head)
            wrapped = fully_shard(model)
        else:
            wrapped = DistributedDataParallel(model)
        losses = []
        for ids, labels in _batches(rank):  # gradient accumulation over micro-batches
            out = wrapped(input_ids=ids, labels=labels)
            assert out.logits is None
            (out.loss / MICRO_BATCHES).backward()
            losses.append(out.loss.detach())
        grads = {
            n.removeprefix("module."): p.grad.full_tensor() if parallel == "fsdp2" else p.grad
            for n, p in wrapped.named_parameters()
        }
        torch.save((losses, grads, len(head_calls)), f"{folder}/rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["fsdp2", "ddp"])
def test_patched_model_under_fsdp2_and_ddp_equals_one_process(tmp_path, parallel):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    world = 2
    mp.start_processes(_worker, args=(world, str(tmp_path), parallel), nprocs=world, start_method="spawn")
    ref = tiny_model("llama").train()  # unpatched, one process, every rank's micro-batches
    for rank in range(world):
        for ids, labels in _batches(rank):
            (ref(input_ids=ids, labels=labels).loss / (MICRO_BATCHES * world)).backward()
    ref_losses = [[ref(input_ids=i, labels=y).loss.detach() for i, y in _batches(r)] for r in range(world)]
    for rank in range(world):
        losses, grads, head_calls = torch.load(tmp_path / f"rank{rank}.pt")
        assert head_calls == MICRO_BATCHES  # one gather of the head per micro-batch
        for got, want in zip(losses, ref_losses[rank]):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
        for n, p in ref.named_parameters():
            top = p.grad.abs().max()
            torch.testing.assert_close(grads[n], p.grad, rtol=1e-3, atol=1e-5 * top.item())
