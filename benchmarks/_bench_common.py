"""Pieces shared by the benchmark scripts: where the MovieLens copies are, the paper's
GPTRec-sized stand-in transformer and left-padded random token batches, the hand-written
alternatives the benchmarks compare against (activations by ``run_with_cache`` and mask
selection, a plain-PyTorch SAE training loop), wall-time and Markdown-table helpers.

Imported by name (``from _bench_common import ...``): a script run as
``python benchmarks/bench_x.py`` has this folder first on ``sys.path``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from mechrec.activations import ActivationSet, iter_batches
from mechrec.normalization import Normalizer
from mechrec.saes import SAETrainingConfig, build_training_sae


def data_root() -> Path:
    """``$MECHREC_DATA`` or the shared test copies beside the repository."""
    env = os.environ.get("MECHREC_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


#: Items (plus padding) of the random-weight stand-in, about MovieLens-100k's catalog.
GPTREC_VOCAB = 1700


def gptrec_sized_model(
    d_vocab: int = GPTREC_VOCAB, n_ctx: int = 200, device: str = "cpu"
) -> HookedTransformer:
    """A HookedTransformer of the paper's GPTRec size (3 layers, d_model 64, 2 heads, d_mlp
    256) with random weights (seed 0), as constructed (call ``.eval()`` for inference)."""
    cfg = HookedTransformerConfig(
        n_layers=3,
        d_model=64,
        n_heads=2,
        d_head=32,
        d_mlp=256,
        d_vocab=d_vocab,
        n_ctx=n_ctx,
        act_fn="gelu",
        normalization_type="LN",
        seed=0,
        device=device,
    )
    return HookedTransformer(cfg)


def random_left_padded(
    gen: torch.Generator, batch: int, seq_len: int, vocab: int = GPTREC_VOCAB
) -> tuple[torch.Tensor, torch.Tensor]:
    """One left-padded random batch ``(tokens, mask)``: tokens in ``1..vocab-1`` (0 is
    padding), real lengths uniform in ``[seq_len/2, seq_len]``, drawn from ``gen``."""
    tokens = torch.randint(1, vocab, (batch, seq_len), generator=gen)
    lengths = torch.randint(seq_len // 2, seq_len + 1, (batch,), generator=gen)
    mask = (torch.arange(seq_len)[None, :] >= (seq_len - lengths)[:, None]).long()
    return tokens * mask, mask


def markdown(
    rows: Sequence[dict], columns: Sequence[str], fmt: dict[str, str] | None = None
) -> str:
    """A Markdown table of ``rows`` restricted to ``columns``."""
    fmt = fmt or {}
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for col in columns:
            value = row.get(col, "")
            cells.append(format(value, fmt[col]) if col in fmt and value != "" else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_time(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    """Minimum wall time over ``repeats`` runs, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times), out


@torch.no_grad()
def run_with_cache_rows(
    model: HookedTransformer, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], hook: str
) -> torch.Tensor:
    """Activation collection as a user would write it by hand: ``run_with_cache`` on the full
    model for every batch, then the real positions picked with the mask; ``(rows, d)``."""
    rows = []
    for tokens, mask in batches:
        _, cache = model.run_with_cache(tokens, attention_mask=mask)
        rows.append(cache[hook][mask.bool()])
    return torch.cat(rows)


# --------------------------------------------------------------------------------------
# the plain-PyTorch SAE training loop (bench_saes.py throughput, bench_ml1m_stages.py)


class _JumpReLU(torch.autograd.Function):
    """f = h * (h > t); rectangle straight-through estimator towards t (Rajamanoharan et al.)."""

    @staticmethod
    def forward(ctx, h, t, bw):  # type: ignore[override]
        ctx.save_for_backward(h, t)
        ctx.bw = bw
        return h * (h > t)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        h, t = ctx.saved_tensors
        rect = ((h - t) / ctx.bw).abs() < 0.5
        return (h > t) * g, -(t / ctx.bw * rect * g).sum(0), None


class _Step(torch.autograd.Function):
    """(h > t) with the rectangle straight-through estimator towards t."""

    @staticmethod
    def forward(ctx, h, t, bw):  # type: ignore[override]
        ctx.save_for_backward(h, t)
        ctx.bw = bw
        return (h > t).to(h)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        h, t = ctx.saved_tensors
        rect = ((h - t) / ctx.bw).abs() < 0.5
        return None, -(rect * g / ctx.bw).sum(0), None


def plain_pytorch_loop(
    cfg: SAETrainingConfig,
    acts: ActivationSet,
    normalizer: Normalizer,
    hook_name: str = "blocks.0.hook_resid_post",
) -> tuple[float, float]:
    """The loop a user would write by hand for ``cfg``'s architecture: ``(rows/s, last loss)``.

    Same initial weights (copied from sae-lens' initialisation), same batches, same loss
    (error norm + the architecture's sparsity and auxiliary terms, decoder-norm weighted L1),
    same Adam and gradient clipping as mechrec, written in plain PyTorch idioms with autograd.
    It leaves out what mechrec does on top: counting firing features every step (dead-feature
    statistics), and the aux-k / pre-activation losses on dead features, which stay zero for
    the first ``dead_feature_window`` (200) steps anyway.
    """
    arch = cfg.architecture
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        init = build_training_sae(cfg, acts.d, hook_name)
    p = {n: t.detach().clone().requires_grad_(True) for n, t in init.named_parameters()}
    opt = torch.optim.Adam(p.values(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2))
    batches = iter_batches(acts, cfg.batch_size, seed=cfg.seed, normalizer=normalizer)
    topk_threshold = torch.tensor(0.0, dtype=torch.double)
    start = time.perf_counter()
    for _ in range(cfg.steps):
        x = next(batches)
        xc = x - p["b_dec"]
        w_dec_norm = p["W_dec"].norm(dim=1)
        aux = x.new_zeros(())
        if arch == "standard":
            f = torch.relu(xc @ p["W_enc"] + p["b_enc"])
            out = f @ p["W_dec"] + p["b_dec"]
            aux = cfg.l1_coefficient * (f * w_dec_norm).sum(-1).mean()
        elif arch in ("topk", "batchtopk"):
            h = (xc @ p["W_enc"] + p["b_enc"]) * w_dec_norm
            if arch == "topk":
                values, idx = h.topk(int(cfg.k), dim=-1, sorted=False)
                f = torch.zeros_like(h).scatter(-1, idx, values.relu())
            else:
                flat = h.relu().flatten()
                values, idx = flat.topk(int(cfg.k * x.shape[0]))
                f = torch.zeros_like(flat).scatter(-1, idx, values).view_as(h)
                with torch.no_grad():
                    smallest = values[values > 0].min().to(torch.double)
                    topk_threshold = 0.99 * topk_threshold + 0.01 * smallest
            out = (f / w_dec_norm) @ p["W_dec"] + p["b_dec"]
        elif arch == "jumprelu":
            with torch.no_grad():
                p["threshold"].clamp_(min=0.0)
            h = xc @ p["W_enc"] + p["b_enc"]
            f = _JumpReLU.apply(h, p["threshold"], cfg.jumprelu_bandwidth)
            out = f @ p["W_dec"] + p["b_dec"]
            l0 = _Step.apply(h, p["threshold"], cfg.jumprelu_bandwidth).sum(-1)
            aux = cfg.l0_coefficient * l0.mean()
        else:  # gated
            gate = xc @ p["W_enc"] + p["b_gate"]
            magnitude = torch.relu(xc @ (p["W_enc"] * p["r_mag"].exp()) + p["b_mag"])
            f = (gate > 0) * magnitude
            out = f @ p["W_dec"] + p["b_dec"]
            gate_acts = torch.relu(gate)
            via_gate = gate_acts @ p["W_dec"] + p["b_dec"]
            aux = cfg.l1_coefficient * (gate_acts * w_dec_norm).sum(-1).mean()
            aux = aux + (via_gate - x).pow(2).sum(-1).mean()
        loss = (out - x).norm(dim=-1).mean() + aux
        loss.backward()
        torch.nn.utils.clip_grad_norm_(p.values(), 1.0)
        opt.step()
        opt.zero_grad()
    return cfg.steps * cfg.batch_size / (time.perf_counter() - start), loss.item()
