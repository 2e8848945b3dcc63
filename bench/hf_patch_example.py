"""ember in a Hugging Face transformers training loop, in one call: a tiny randomly initialized
LlamaForCausalLM (a config, no download) trained for a few steps on the built-in corpus with
AdamW, then with ember.optim.Apollo plus ember.patch.apply_ember_to_llama (fused linear +
cross-entropy loss, 50 % ERK random pruning of the decoder), and with --float8 also AdamW with
the decoder's Linear layers in fp8; printing the losses side by side.

    python bench/hf_patch_example.py [--steps 30] [--float8 tensorwise|rowwise|blockwise]
"""

from __future__ import annotations

import argparse

import torch
import transformers

import ember
from ember.data.loader import open_source, parse_sources


def make_model():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=257, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--float8", choices=["tensorwise", "rowwise", "blockwise"], help="add a run with fp8 Linear layers")
    a = p.parse_args()
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
        print("#", f"{len(ember.patch.apply_ember_to_llama(fp8, float8=a.float8)) - 1} Linear layers in fp8 ({a.float8})")
        runs[f"ember (AdamW + fused CE + fp8 {a.float8})"] = train(fp8, torch.optim.AdamW(fp8.parameters(), lr=3e-3),
                                                                   tokens, a.steps)
    print(f"{'step':>5}  " + "  ".join(f"{name:>{max(8, len(name))}}" for name in runs))
    for i in sorted({*range(0, a.steps, max(1, a.steps // 10)), a.steps - 1}):
        print(f"{i + 1:>5}  " + "  ".join(f"{losses[i]:>{max(8, len(name))}.4f}" for name, losses in runs.items()))


if __name__ == "__main__":
    main()
