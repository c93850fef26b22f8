"""A tiny, non-recommender HookedTransformer and token batches for core tests.

Imported by name from test modules (``from tiny_model import ...``); a unique module name,
unlike ``conftest``, cannot collide with another test folder's helpers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from mechrec.study import TokenStudy

TINY_VOCAB = 24
TINY_CTX = 16


def make_tiny_model(seed: int = 0, **overrides: object) -> HookedTransformer:
    """A 2-layer, d_model 16 attention+MLP model with random weights, in eval mode.

    ``overrides`` replace entries of its :class:`HookedTransformerConfig` (e.g.
    ``positional_embedding_type="rotary"``).
    """
    kwargs: dict[str, object] = dict(
        n_layers=2,
        d_model=16,
        n_heads=2,
        d_head=8,
        d_mlp=32,
        d_vocab=TINY_VOCAB,
        n_ctx=TINY_CTX,
        act_fn="gelu",
        normalization_type="LN",
        seed=seed,
        device="cpu",
    )
    kwargs.update(overrides)
    model = HookedTransformer(HookedTransformerConfig(**kwargs))
    model.eval()
    return model


def random_left_padded(
    gen: torch.Generator, batch_size: int, seq_len: int, *, full_first_row: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """One left-padded random batch ``(tokens, mask)``: tokens in 1..V-1, 0 is padding, real
    lengths in 2..seq_len drawn from ``gen`` (the first row full if ``full_first_row``)."""
    tokens = torch.randint(1, TINY_VOCAB, (batch_size, seq_len), generator=gen)
    lengths = torch.randint(2, seq_len + 1, (batch_size,), generator=gen)
    if full_first_row:
        lengths[0] = seq_len
    mask = (torch.arange(seq_len)[None, :] >= (seq_len - lengths)[:, None]).long()
    return tokens * mask, mask


def make_token_batches(
    n_batches: int = 3, batch_size: int = 8, seq_len: int = TINY_CTX, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Left-padded random token batches: tokens in 1..V-1, 0 is padding, ragged lengths."""
    gen = torch.Generator().manual_seed(seed)
    return [random_left_padded(gen, batch_size, seq_len) for _ in range(n_batches)]


def random_tokens(seed: int, n: int = 48, length: int = 12) -> torch.Tensor:
    """``(n, length)`` random tokens in 1..V-1 (no padding), seeded."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(1, TINY_VOCAB, (n, length), generator=gen)


def parity_range_study(n: int = 48, length: int = 12, batch_size: int = 16) -> TokenStudy:
    """A :class:`~mechrec.study.TokenStudy` of the tiny model: row sets ``fit`` and ``eval``
    of random tokens, attributes ``even`` (group ``parity``), ``low`` and ``high`` (group
    ``range``); padding carries none."""
    tok = np.arange(TINY_VOCAB)
    table = pd.DataFrame({"even": tok % 2 == 0, "low": tok < 8, "high": tok >= 18}
                         ).astype(np.float32)
    table.iloc[0] = 0.0
    groups = pd.Series({"even": "parity", "low": "range", "high": "range"})
    return TokenStudy(make_tiny_model(), {"fit": random_tokens(0, n, length),
                                          "eval": random_tokens(1, n, length)}, table, groups,
                      batch_size=batch_size)
