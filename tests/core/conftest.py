"""Fixtures for core tests: a tiny, non-recommender HookedTransformer and token batches.

The core must work on any HookedTransformer; these fixtures prove it on a small causal model
over a synthetic 24-token vocabulary, with no recommender code involved.
"""

from __future__ import annotations

import pytest
import torch
from tiny_model import make_tiny_model, make_token_batches
from transformer_lens import HookedTransformer


@pytest.fixture(scope="session")
def tiny_model() -> HookedTransformer:
    """A shared tiny HookedTransformer (do not mutate its weights in tests)."""
    return make_tiny_model()


@pytest.fixture(scope="session")
def token_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Three left-padded batches of 8 random sequences for the tiny model."""
    return make_token_batches()
