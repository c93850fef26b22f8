"""Test doubles for the steering, probe and sweep tests.

``ToySAE`` satisfies :class:`mechrec.steering.SAELike` without sae-lens: a ReLU SAE behind a
per-dimension affine normaliser, with sparse activations (negative encoder bias).
"""

from __future__ import annotations

import math

import torch
from tiny_model import TINY_CTX, TINY_VOCAB, make_tiny_model, random_left_padded
from transformer_lens import HookedTransformer

VOCAB = TINY_VOCAB
CTX = TINY_CTX


class ToySAE:
    """ReLU SAE on normalised activations; ``decode`` returns raw (de-normalised) ones."""

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        hook_name: str,
        seed: int = 0,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
    ) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.hook_name, self.d_in, self.d_sae = hook_name, d_in, d_sae
        self.W_enc = torch.randn(d_in, d_sae, generator=gen) / math.sqrt(d_in)
        self.b_enc = torch.full((d_sae,), -0.3)
        dec = torch.randn(d_sae, d_in, generator=gen)
        self.W_dec = dec / dec.norm(dim=1, keepdim=True)
        self.b_dec = 0.1 * torch.randn(d_in, generator=gen)
        self.mean = torch.zeros(d_in) if mean is None else mean
        self.std = torch.ones(d_in) if std is None else std

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Raw -> features."""
        z = (x - self.mean) / self.std
        return torch.relu((z - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Features -> raw."""
        return (f @ self.W_dec + self.b_dec) * self.std + self.mean


def make_model(seed: int = 0, **overrides: object) -> HookedTransformer:
    """A tiny causal model like the conftest one, with config overrides (rotary, ...)."""
    return make_tiny_model(seed, **overrides)


def left_padded(
    batch: int = 6, seq_len: int = CTX, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded random tokens (0 = padding) and their mask; at least one full row."""
    gen = torch.Generator().manual_seed(seed)
    return random_left_padded(gen, batch, seq_len, full_first_row=True)


def activations_at(model: HookedTransformer, tokens, mask, hook_name: str) -> torch.Tensor:
    """``(batch, pos, d)`` activations at a hook (trailing dims flattened)."""
    _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=hook_name)
    act = cache[hook_name]
    return act.reshape(act.shape[0], act.shape[1], -1)
