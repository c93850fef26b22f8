"""Test doubles for the steering, probe and sweep tests.

``ToySAE`` satisfies :class:`mechrec.steering.SAELike` without sae-lens: a ReLU SAE behind a
per-dimension affine normaliser, with sparse activations (negative encoder bias).
"""

from __future__ import annotations

import math

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

VOCAB = 24
CTX = 16


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


def make_model(seed: int = 0, **overrides) -> HookedTransformer:
    """A tiny causal model like the conftest one, with config overrides (rotary, ...)."""
    kwargs = dict(
        n_layers=2,
        d_model=16,
        n_heads=2,
        d_head=8,
        d_mlp=32,
        d_vocab=VOCAB,
        n_ctx=CTX,
        act_fn="gelu",
        normalization_type="LN",
        seed=seed,
        device="cpu",
    )
    kwargs.update(overrides)
    model = HookedTransformer(HookedTransformerConfig(**kwargs))
    model.eval()
    return model


def left_padded(batch: int = 6, seq_len: int = CTX, seed: int = 0):
    """Left-padded random tokens (0 = padding) and their mask; at least one full row."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, VOCAB, (batch, seq_len), generator=gen)
    lengths = torch.randint(2, seq_len + 1, (batch,), generator=gen)
    lengths[0] = seq_len
    mask = (torch.arange(seq_len)[None, :] >= (seq_len - lengths)[:, None]).long()
    return tokens * mask, mask


def activations_at(model: HookedTransformer, tokens, mask, hook_name: str) -> torch.Tensor:
    """``(batch, pos, d)`` activations at a hook (trailing dims flattened)."""
    _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=hook_name)
    act = cache[hook_name]
    return act.reshape(act.shape[0], act.shape[1], -1)
