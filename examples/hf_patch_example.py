"""ember in a Hugging Face transformers training loop, in one call: a tiny randomly initialized
LlamaForCausalLM (a config, no download) trained for a few steps on the built-in corpus with
AdamW, then with ember.optim.Apollo plus ember.patch.apply_ember_to_llama (fused linear +
cross-entropy loss, 50 % ERK random pruning of the decoder), and with --float8 also AdamW with
the decoder's Linear layers in fp8; printing the losses side by side.

With --memory instead: peak training memory (one forward + backward) of a tiny model with a
large vocabulary, patched and unpatched, per architecture family (plain, MoE with aux loss,
soft-capped, scaled logits), each measured in a fresh process: the unpatched step holds the
(tokens × vocabulary) logits and their gradient, the patched one no memory that grows with both.

    python examples/hf_patch_example.py [--steps 30] [--float8 tensorwise|rowwise|blockwise]
    python examples/hf_patch_example.py --memory [--vocab 128256] [--tokens 2048]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch
import transformers

import ember
from ember.data.loader import open_source, parse_sources
from tiny_hf_models import BYTE_VOCAB, DEBUG_LLAMA, small_causal_lm


def make_model():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=BYTE_VOCAB, max_position_embeddings=256, **DEBUG_LLAMA)
    return transformers.LlamaForCausalLM(cfg).train()


def train(model, opt, tokens, steps, seq=128, batch=8):
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        ix = torch.randint(0, len(tokens) - seq, (batch,), generator=g)
        ids = torch.stack([tokens[i : i + seq] for i in ix])
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


# architecture family -> (model type, config keys that make it that family)
FAMILIES = {
    "llama": ("llama", {}),
    "qwen3": ("qwen3", {}),
    "mixtral (MoE aux loss)": ("mixtral", dict(num_local_experts=4, num_experts_per_tok=2, output_router_logits=True)),
    "gemma2 (soft-cap)": ("gemma2", dict(final_logit_softcapping=30.0, query_pre_attn_scalar=16)),
    "granite (scaled logits)": ("granite", dict(logits_scaling=4.0)),
    "cohere (scaled, tied)": ("cohere", dict(logit_scale=0.5, tie_word_embeddings=True)),
}


def memory_run(family: str, patched: bool, vocab: int, tokens: int) -> dict:
    """One forward + backward in this process: the peak memory above what the built model holds."""
    import resource

    model_type, extra = FAMILIES[family]
    model = small_causal_lm(model_type, vocab, max_positions=4096, **extra)
    model.train()
    if patched:
        ember.patch.apply_ember(model)
    seq = 512
    ids = torch.randint(0, vocab, (max(1, tokens // seq), seq), generator=torch.Generator().manual_seed(1))
    cuda = torch.cuda.is_available()
    if cuda:
        model.cuda()
        ids = ids.cuda()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model(input_ids=ids, labels=ids).loss.backward()
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return dict(
        family=family, patched=patched, step_bytes=peak - before, tokens=ids.numel(), device="cuda" if cuda else "cpu"
    )


def memory_table(vocab: int, tokens: int) -> None:
    rows = {}
    for family in FAMILIES:
        for patched in (False, True):
            cmd = [sys.executable, __file__, "--memory-run", family, "--vocab", str(vocab), "--tokens", str(tokens)]
            r = subprocess.run(cmd + (["--patched"] if patched else []), capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"{family} ({'patched' if patched else 'unpatched'}) failed:\n{r.stderr[-3000:]}")
            rows[family, patched] = json.loads(r.stdout.strip().splitlines()[-1])
    first = rows[next(iter(FAMILIES)), False]
    n = first["tokens"]
    print(
        f"# peak memory of one training step above the built model, vocabulary {vocab}, {n} tokens, "
        f"{first['device']}; the fp32 logits alone are {n * vocab * 4 / 2**20:.0f} MiB"
    )
    print(f"{'family':<26}{'unpatched MiB':>14}{'ember MiB':>11}{'ratio':>8}")
    for family in FAMILIES:
        u, e = rows[family, False]["step_bytes"], rows[family, True]["step_bytes"]
        print(f"{family:<26}{u / 2**20:>14.0f}{e / 2**20:>11.0f}{e / max(u, 1):>8.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--float8", choices=["tensorwise", "rowwise", "blockwise"], help="add a run with fp8 Linear layers")
    p.add_argument("--memory", action="store_true", help="peak memory per architecture family instead")
    p.add_argument("--vocab", type=int, default=128256)
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--memory-run", choices=list(FAMILIES), help=argparse.SUPPRESS)  # the child of --memory
    p.add_argument("--patched", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.memory_run:
        print(json.dumps(memory_run(a.memory_run, a.patched, a.vocab, a.tokens)))
        return
    if a.memory:
        memory_table(a.vocab, a.tokens)
        return
    tokens = torch.from_numpy(open_source(parse_sources("stdlib")[0], "train").shards[0][:2_000_000].astype("int64"))

    plain = make_model()
    base = train(plain, torch.optim.AdamW(plain.parameters(), lr=3e-3), tokens, a.steps)

    patched = make_model()
    for line in ember.patch.apply_ember_to_llama(patched, sparsity=dict(target=0.5, method="erk", seed=0)):
        print("#", line)
    opt = ember.optim.Apollo(ember.optim.apollo_param_groups(patched, rank=32, lr=1e-2))
    ours = train(patched, opt, tokens, a.steps)

    runs = {"AdamW": base, "ember (Apollo + fused CE + 50% ERK)": ours}
    if a.float8:
        fp8 = make_model()
        print(
            "#", f"{len(ember.patch.apply_ember_to_llama(fp8, float8=a.float8)) - 1} Linear layers in fp8 ({a.float8})"
        )
        runs[f"ember (AdamW + fused CE + fp8 {a.float8})"] = train(
            fp8, torch.optim.AdamW(fp8.parameters(), lr=3e-3), tokens, a.steps
        )
    print(f"{'step':>5}  " + "  ".join(f"{name:>{max(8, len(name))}}" for name in runs))
    for i in sorted({*range(0, a.steps, max(1, a.steps // 10)), a.steps - 1}):
        print(f"{i + 1:>5}  " + "  ".join(f"{losses[i]:>{max(8, len(name))}.4f}" for name, losses in runs.items()))


if __name__ == "__main__":
    main()
