"""Benchmark: GPTRec (a TransformerLens HookedTransformer) vs a plain-PyTorch causal transformer.

Both models have the paper's size (3 layers, 2 heads, d_model 64, d_mlp 256, max_len 200,
dropout 0.2, tied output layer with a per-item bias) and the *same weights*: the plain model is
loaded from GPTRec's state dict and the script checks that both give the same scores before it
times anything. Every variant trains on the same left-padded batches (next-item cross-entropy
over the full catalog at real positions, Adam), in interleaved rounds so that machine noise hits
all variants alike.

Variants (each GPTRec variant is the same HookedTransformer; only the fast path differs):
  plain           nn.Linear / nn.LayerNorm / F.scaled_dot_product_attention
  tl              ``fast_path=False``: the stock TransformerLens components
  tl+sdpa         attention through F.scaled_dot_product_attention (no score/pattern tensors)
  tl+sdpa+ln      ... and F.layer_norm instead of TransformerLens' hand-written LayerNorm
  tl+fast         GPTRec as shipped: ... and ln1 computed once per block with a fused QKV matmul

Reported per variant: training throughput (sequences/s), the ratio plain / variant, the bytes
autograd saves for backward per step (peak over batches), and, with ``--rss`` (Linux), the peak
resident memory of a fresh process running the same loop, above its resident memory after
setup (``/proc/self/status``: VmHWM after resetting it, minus VmRSS).

Run:  OMP_NUM_THREADS=1 python benchmarks/bench_gptrec.py [--batches 12] [--rounds 3] [--rss]
      [--data synthetic|ml-100k] [--profile]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mechrec_recsys.model import (
    FastAttention,
    FastLayerNorm,
    FastTransformerBlock,
    GPTRecConfig,
    build_gptrec,
    last_position_scores,
)
from mechrec_recsys.training import make_training_batches, next_item_loss

VARIANTS = ("plain", "tl", "tl+sdpa", "tl+sdpa+ln", "tl+fast")


# --------------------------------------------------------------------------------------------
# The plain-PyTorch reference
# --------------------------------------------------------------------------------------------


class PlainBlock(nn.Module):
    """Pre-LayerNorm transformer block with the same computation as a TransformerLens block."""

    def __init__(self, d_model: int, n_heads: int, d_mlp: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.fc_in, self.fc_out = nn.Linear(d_model, d_mlp), nn.Linear(d_mlp, d_model)

    def forward(self, x: torch.Tensor, visible: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        batch, length, d_model = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d_model, dim=-1)
        q, k, v = (t.view(batch, length, self.n_heads, -1).transpose(1, 2) for t in (q, k, v))
        z = F.scaled_dot_product_attention(q, k, v, attn_mask=visible) * real
        attn = self.out(z.transpose(1, 2).reshape(batch, length, d_model))
        x = x + F.dropout(attn, self.dropout, self.training)
        mlp = self.fc_out(F.gelu(self.fc_in(self.ln2(x))))
        return x + F.dropout(mlp, self.dropout, self.training)


class PlainGPTRec(nn.Module):
    """GPTRec in plain PyTorch (learned positions counted from the first real item)."""

    def __init__(self, vocab_size: int, cfg: GPTRecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.item = nn.Embedding(vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        self.blocks = nn.ModuleList(
            PlainBlock(cfg.d_model, cfg.n_heads, cfg.d_mlp, cfg.dropout)
            for _ in range(cfg.n_layers)
        )
        self.ln_final = nn.LayerNorm(cfg.d_model)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def hidden(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Final residual stream before ``ln_final``."""
        positions = (mask.cumsum(1) - 1).clamp_min(0)
        x = F.dropout(self.item(tokens), self.cfg.dropout, self.training)
        x = x + self.pos(positions) * mask.unsqueeze(-1)
        length = tokens.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril_()
        visible = (causal & mask.bool()[:, None, None, :]) | torch.eye(
            length, dtype=torch.bool, device=tokens.device
        )
        real = mask[:, None, :, None].to(x.dtype)
        for block in self.blocks:
            x = block(x, visible, real)
        return x

    def loss(self, tokens: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor):
        """Full-catalog next-item cross-entropy at real positions."""
        real = mask.bool()
        h = self.ln_final(self.hidden(tokens, mask)[real])
        scores = F.linear(h, self.item.weight, self.bias)
        scores[:, 0] = torch.finfo(scores.dtype).min
        return F.cross_entropy(scores, targets[real])

    @torch.no_grad()
    def last_scores(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Scores after the last real item."""
        h = self.ln_final(self.hidden(tokens, mask)[:, -1])
        scores = F.linear(h, self.item.weight, self.bias)
        scores[:, 0] = torch.finfo(scores.dtype).min
        return scores


def plain_from_gptrec(model, cfg: GPTRecConfig) -> PlainGPTRec:
    """A plain model holding exactly the weights of a GPTRec model."""
    plain = PlainGPTRec(model.cfg.d_vocab, cfg)
    sd = model.state_dict()
    with torch.no_grad():
        plain.item.weight.copy_(sd["embed.W_E"])
        plain.pos.weight.copy_(sd["pos_embed.W_pos"])
        plain.bias.copy_(sd["unembed.b_U"])
        plain.ln_final.weight.copy_(sd["ln_final.w"])
        plain.ln_final.bias.copy_(sd["ln_final.b"])
        for i, block in enumerate(plain.blocks):
            p = f"blocks.{i}."
            w = [sd[p + f"attn.W_{n}"].permute(0, 2, 1).reshape(-1, cfg.d_model) for n in "QKV"]
            b = [sd[p + f"attn.b_{n}"].reshape(-1) for n in "QKV"]
            block.qkv.weight.copy_(torch.cat(w))
            block.qkv.bias.copy_(torch.cat(b))
            block.out.weight.copy_(sd[p + "attn.W_O"].reshape(-1, cfg.d_model).T)
            block.out.bias.copy_(sd[p + "attn.b_O"])
            block.ln1.weight.copy_(sd[p + "ln1.w"])
            block.ln1.bias.copy_(sd[p + "ln1.b"])
            block.ln2.weight.copy_(sd[p + "ln2.w"])
            block.ln2.bias.copy_(sd[p + "ln2.b"])
            block.fc_in.weight.copy_(sd[p + "mlp.W_in"].T)
            block.fc_in.bias.copy_(sd[p + "mlp.b_in"])
            block.fc_out.weight.copy_(sd[p + "mlp.W_out"].T)
            block.fc_out.bias.copy_(sd[p + "mlp.b_out"])
    return plain


# --------------------------------------------------------------------------------------------
# Setup shared by all variants
# --------------------------------------------------------------------------------------------


def training_sequences(data: str, n_items: int = 1682) -> tuple[list[np.ndarray], int]:
    """Training sequences and vocabulary size: ml-100k leave-one-out, or a synthetic stand-in."""
    if data == "ml-100k":
        from mechrec_recsys.data import leave_one_out_split, load_dataset

        repo = Path(__file__).resolve().parents[1]
        split = leave_one_out_split(
            load_dataset("ml-100k", repo.parent / "shared" / "data", download=False)
        )
        return list(split.train.sequences), split.vocab.size
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(4.2, 0.9, 943).astype(int), 18, 700)  # ml-100k-like
    return [rng.integers(1, n_items + 1, n) for n in lengths], n_items + 1


def make_variant(name: str, vocab_size: int, cfg: GPTRecConfig):
    """(module to train, loss function, scorer) for one variant; all share one set of weights."""
    model = build_gptrec(vocab_size, cfg)
    enabled = {
        "plain": (),
        "tl": (),
        "tl+sdpa": (FastAttention,),
        "tl+sdpa+ln": (FastAttention, FastLayerNorm),
        "tl+fast": (FastAttention, FastLayerNorm, FastTransformerBlock),
    }[name]
    for module in model.modules():
        if isinstance(module, (FastAttention, FastLayerNorm, FastTransformerBlock)):
            module.fast_path = isinstance(module, enabled)
    if name == "plain":
        plain = plain_from_gptrec(model, cfg)
        return plain, plain.loss, plain.last_scores
    return (
        model,
        lambda t, m, y: next_item_loss(model, t, m, y),
        lambda t, m: last_position_scores(model, t, m),
    )


def check_same_function(vocab_size: int, cfg: GPTRecConfig, batch) -> float:
    """Largest score difference between the variants on one batch (eval mode)."""
    tokens, mask, _ = batch
    scores = []
    for name in VARIANTS:
        module, _, scorer = make_variant(name, vocab_size, cfg)
        module.eval()
        with torch.no_grad():
            scores.append(scorer(tokens, mask)[:, 1:])
    return max(float((s - scores[0]).abs().max()) for s in scores[1:])


def train_steps(module, loss_fn, batches) -> float:
    """Run one optimiser step per batch; returns seconds."""
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    module.train()
    start = time.perf_counter()
    for tokens, mask, targets in batches:
        loss = loss_fn(tokens, mask, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def saved_bytes(module, loss_fn, batches) -> int:
    """Peak over batches of the bytes autograd keeps for backward (distinct storages)."""
    module.train()
    peak = 0
    for tokens, mask, targets in batches:
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor, storages: dict[int, int] = storages) -> torch.Tensor:
            s = t.untyped_storage()
            storages[s.data_ptr()] = s.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_fn(tokens, mask, targets)
        params = {p.untyped_storage().data_ptr() for p in module.parameters()}
        peak = max(peak, sum(n for ptr, n in storages.items() if ptr not in params))
        loss.backward()
    return peak


def rss_child(name: str, args: argparse.Namespace) -> None:
    """Entry of the ``--rss`` subprocess: print the peak RSS increase of training (KiB)."""
    cfg = GPTRecConfig(dropout=0.2)
    sequences, vocab_size = training_sequences(args.data)
    batches = make_training_batches(
        sequences, args.batch_size, cfg.max_len, np.random.default_rng(0)
    )[: args.batches]
    module, loss_fn, _ = make_variant(name, vocab_size, cfg)
    base = _proc_status_kib("VmRSS")  # setup done, nothing trained yet
    # Reset the high-water mark to the current RSS so that setup peaks do not count.
    Path("/proc/self/clear_refs").write_text("5")
    train_steps(module, loss_fn, batches)
    print(json.dumps({"base_kib": base, "peak_kib": _proc_status_kib("VmHWM")}))


def _proc_status_kib(field: str) -> int:
    """A memory figure of this process from ``/proc/self/status`` (Linux), in KiB.

    ``VmHWM`` belongs to the current address space, unlike ``getrusage``'s ``ru_maxrss``,
    which a child process inherits from the (large) parent that spawned it.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status (Linux only)")


def measure_rss(name: str, args: argparse.Namespace) -> dict:
    """Run :func:`rss_child` in a fresh interpreter."""
    cmd = [
        sys.executable,
        __file__,
        "--rss-child",
        name,
        "--data",
        args.data,
        "--batches",
        str(args.batches),
        "--batch-size",
        str(args.batch_size),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def profile(name: str, vocab_size: int, cfg: GPTRecConfig, batches) -> None:
    """Print the top operators of a few training steps of one variant."""
    module, loss_fn, _ = make_variant(name, vocab_size, cfg)
    train_steps(module, loss_fn, batches[:1])
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        train_steps(module, loss_fn, batches)
    print(f"\n== profile: {name} ==")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main() -> None:
    """Parse arguments, run the comparison, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", choices=["synthetic", "ml-100k"], default="synthetic")
    parser.add_argument("--rss", action="store_true", help="also measure peak RSS per variant")
    parser.add_argument("--profile", action="store_true", help="print operator profiles")
    parser.add_argument("--rss-child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args)
        return

    cfg = GPTRecConfig(dropout=0.2)
    sequences, vocab_size = training_sequences(args.data)
    batches = make_training_batches(
        sequences, args.batch_size, cfg.max_len, np.random.default_rng(0)
    )[: args.batches]
    n_seq = sum(b[0].shape[0] for b in batches)
    real = sum(int(b[1].sum()) for b in batches)
    cells = sum(b[1].numel() for b in batches)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, data {args.data}, "
        f"{len(batches)} batches x {args.batch_size} sequences, vocab {vocab_size}, "
        f"{real / cells:.0%} of positions real"
    )
    print(
        f"max |score difference| between variants (same weights): "
        f"{check_same_function(vocab_size, cfg, batches[0]):.2e}"
    )

    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name in VARIANTS:
            module, loss_fn, _ = make_variant(name, vocab_size, cfg)
            train_steps(module, loss_fn, batches[:1])  # warm-up
            times[name].append(train_steps(module, loss_fn, batches))
    memory = {}
    for name in VARIANTS:
        module, loss_fn, _ = make_variant(name, vocab_size, cfg)
        memory[name] = saved_bytes(module, loss_fn, batches)
    rss = {name: measure_rss(name, args) for name in VARIANTS} if args.rss else {}

    speed = {name: n_seq / statistics.median(t) for name, t in times.items()}
    header = f"{'variant':<12} {'seq/s':>8} {'plain/var':>9} {'saved MiB':>10} {'mem/plain':>9}"
    if rss:
        header += f" {'peak RSS+ MiB':>14} {'RSS+/plain':>10}"
    print(header)
    for name in VARIANTS:
        row = (
            f"{name:<12} {speed[name]:>8.1f} {speed['plain'] / speed[name]:>9.2f} "
            f"{memory[name] / 2**20:>10.1f} {memory[name] / memory['plain']:>9.2f}"
        )
        if rss:
            inc = {n: (r["peak_kib"] - r["base_kib"]) / 1024 for n, r in rss.items()}
            row += f" {inc[name]:>14.1f} {inc[name] / max(inc['plain'], 1e-9):>10.2f}"
        print(row)
    if args.profile:
        for name in VARIANTS:
            profile(name, vocab_size, cfg, batches[:4])


if __name__ == "__main__":
    main()
