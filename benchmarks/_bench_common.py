"""Pieces shared by the benchmark scripts: where the MovieLens copies are, the paper's
GPTRec-sized stand-in transformer and left-padded random token batches.

Imported by name (``from _bench_common import ...``): a script run as
``python benchmarks/bench_x.py`` has this folder first on ``sys.path``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig


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
