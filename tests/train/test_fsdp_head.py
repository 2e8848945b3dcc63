"""The fused linear cross-entropy under FSDP2 with a sharded head (tied or not): the head is
all-gathered once per micro-batch (with the rest of the root's parameters), never once per chunk
of the loss, and the loss and gradients equal one process's."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ember.models import Llama
from ember.models.llama import CONFIGS

MICRO = 3  # micro-batches per step


def _config(tied: bool):
    # the debug config's heads (4, 2 of them key/value), smaller
    return CONFIGS["debug"].replace(
        dim=64, n_layers=2, ffn_hidden=128, vocab_size=1031, max_seq_len=32, tie_embeddings=tied
    )


def _batches():
    g = torch.Generator().manual_seed(3)
    return [torch.randint(0, 1031, (4, 17), generator=g) for _ in range(MICRO)]


def _loss_and_grads(model, rank=0, world=1):
    for b in _batches():
        rows = b[rank * 4 // world : (rank + 1) * 4 // world]
        model(rows[:, :-1], rows[:, 1:]).backward()


def _worker(rank, world, folder, tied):
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = Llama(_config(tied)).init_weights(0)
        for layer in model.layers:
            fully_shard(layer)
        fully_shard(model)
        head_numel = model.output_weight.numel() // world  # one rank's shard of the head
        gathers = []
        real = dist.all_gather_single

        def counted(out, inp, *a, **k):
            gathers.append(inp.numel())
            return real(out, inp, *a, **k)

        dist.all_gather_single = counted
        _loss_and_grads(model, rank, world)
        dist.all_gather_single = real
        grads = {n: p.grad.full_tensor() for n, p in model.named_parameters()}
        root = [n for n in gathers if n >= head_numel]  # the root group's all-gathers hold the head shard
        torch.save((root, grads), f"{folder}/rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_head_is_gathered_once_per_micro_batch(tmp_path, tied):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.start_processes(_worker, args=(2, str(tmp_path), tied), nprocs=2, start_method="spawn")
    root_gathers, grads = torch.load(tmp_path / "rank0.pt")
    assert len(root_gathers) == MICRO, root_gathers
    torch.manual_seed(0)
    one = Llama(_config(tied)).init_weights(0)
    for b in _batches():  # one process: the same rows, in two halves as the ranks see them
        for half in (b[:2], b[2:]):
            (one(half[:, :-1], half[:, 1:]) / 2).backward()  # FSDP2 averages the two ranks' gradients
    for n, p in one.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-6 * p.grad.abs().max().item())
