"""Benchmark: fast last-position steering vs a full forward pass per steering value.

Setting (the paper's GPTRec size): 3 layers, d_model 64, 2 heads, d_mlp 256, 1700 items,
n_ctx 200, random weights; a batch of 64 left-padded sequences of length 200 (ragged real
lengths); 21 steering values (-10..10). Two interventions at ``blocks.0.hook_resid_post``:
an SAE feature edit (sae-lens StandardSAE, 2048 features, behind a per-dim Normalizer) and a
direction addition. Also a hook deeper in the model (``blocks.2.hook_mlp_out``).

Run:  OMP_NUM_THREADS=1 python benchmarks/bench_steering.py [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch
from _bench_common import best_time, gptrec_sized_model, random_left_padded
from sae_lens import StandardSAE, StandardSAEConfig
from transformer_lens import HookedTransformer

from mechrec.normalization import Normalizer
from mechrec.saes import NormalizedSAE
from mechrec.steering import (
    DirectionEdit,
    FeatureEdit,
    steered_last_logits,
    unit_variance_direction,
)

VALUES = [float(v) for v in range(-10, 11)]


def build_model(device: str) -> HookedTransformer:
    """A GPTRec-sized HookedTransformer with random weights."""
    return gptrec_sized_model(device=device).eval()


def build_batch(batch: int, seq_len: int, vocab: int, device: str) -> tuple[torch.Tensor, ...]:
    """Left-padded random tokens with real lengths in [seq_len/2, seq_len]; 0 is padding."""
    tokens, mask = random_left_padded(torch.Generator().manual_seed(0), batch, seq_len, vocab)
    return tokens.to(device), mask.to(device)


def build_sae(model: HookedTransformer, tokens, mask, hook: str) -> NormalizedSAE:
    """A random StandardSAE (2048 features) behind a Normalizer fit on real activations."""
    _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=hook)
    acts = cache[hook][mask.bool()]
    cfg = StandardSAEConfig(d_in=64, d_sae=2048, device=str(tokens.device))
    sae = StandardSAE(cfg)
    return NormalizedSAE(sae, Normalizer.fit(acts.cpu(), "per_dim"), hook_name=hook)


def main() -> None:
    """Time naive and fast paths for three interventions and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = build_model(args.device)
    tokens, mask = build_batch(args.batch, args.seq_len, model.cfg.d_vocab, args.device)
    hook0, hook2 = "blocks.0.hook_resid_post", "blocks.2.hook_mlp_out"
    sae = build_sae(model, tokens, mask, hook0)
    _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=hook2)
    acts2 = cache[hook2][mask.bool()]
    direction = unit_variance_direction(torch.randn(64), acts2, hook_name=hook2)
    cases = [
        ("SAE feature set", hook0, [FeatureEdit(sae, {7: v}) for v in VALUES]),
        ("SAE feature set+err", hook0, [FeatureEdit(sae, {7: v}, keep_error=True) for v in VALUES]),
        ("direction add", hook2, [DirectionEdit(direction, v) for v in VALUES]),
    ]
    print(
        f"model 3x64, 2 heads, vocab {model.cfg.d_vocab}; batch {args.batch} x len "
        f"{args.seq_len}; {len(VALUES)} values; device {args.device}; "
        f"threads {torch.get_num_threads()}; best of {args.repeats}"
    )
    header = (
        f"{'intervention':22s} {'hook':26s} {'naive s':>9s} {'fast s':>9s} "
        f"{'speed-up':>9s} {'max|diff|':>10s}"
    )
    print(header)
    print("-" * len(header))
    for label, hook, edits in cases:
        naive_t, naive = best_time(
            lambda h=hook, e=edits: steered_last_logits(model, tokens, mask, h, e, method="naive"),
            args.repeats,
        )
        fast_t, fast = best_time(
            lambda h=hook, e=edits: steered_last_logits(model, tokens, mask, h, e, method="fast"),
            args.repeats,
        )
        diff = float((fast - naive).abs().max())
        print(
            f"{label:22s} {hook:26s} {naive_t:9.3f} {fast_t:9.3f} {naive_t / fast_t:8.1f}x "
            f"{diff:10.2e}"
        )


if __name__ == "__main__":
    main()
