"""GPTRec as a HookedTransformer: tying, padding, dropout, hooks, fast path, sae-lens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mechrec_recsys.model import (
    GPTRecConfig,
    build_gptrec,
    final_hidden,
    item_scores,
    last_position_scores,
    set_fast_path,
    to_hooked_sae_transformer,
    validate_batch,
)
from mechrec_recsys.sequences import left_pad
from sae_lens import StandardSAE, StandardSAEConfig
from transformer_lens import HookedTransformer

VOCAB = 41
SMALL = GPTRecConfig(n_layers=2, n_heads=2, d_model=16, d_mlp=32, max_len=24, dropout=0.2)


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    m = build_gptrec(VOCAB, SMALL)
    with torch.no_grad():  # a non-zero output bias so that tests see it
        m.unembed.b_U.normal_(0, 0.1)
    return m


def random_sequences(n: int, seed: int = 0, low: int = 1, high: int = 24) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, VOCAB, rng.integers(low, high + 1)) for _ in range(n)]


def test_defaults_match_the_paper() -> None:
    m = build_gptrec(11)
    assert isinstance(m, HookedTransformer)
    assert (m.cfg.n_layers, m.cfg.n_heads, m.cfg.d_model, m.cfg.n_ctx) == (3, 2, 64, 200)
    assert 0.1 <= m.gptrec_config.dropout <= 0.2
    assert m.cfg.d_vocab == 11 and not m.training


def test_output_layer_shares_storage_with_the_item_embedding(model: HookedTransformer) -> None:
    m = build_gptrec(VOCAB, SMALL)
    assert m.W_U.shape == (SMALL.d_model, VOCAB)
    assert m.W_U.data_ptr() == m.W_E.data_ptr()
    assert "unembed.W_U" not in m.state_dict()
    assert sum(p is m.W_E for p in m.parameters()) == 1
    tokens, mask = left_pad(random_sequences(4))
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    m(tokens, attention_mask=mask)[:, -1].logsumexp(-1).sum().backward()
    opt.step()
    assert torch.equal(m.W_U, m.W_E.T)  # still tied after an update
    expected = m.ln_final(final_hidden(m, tokens, mask)) @ m.W_E.T + m.b_U
    got = m(tokens, attention_mask=mask)
    assert torch.allclose(got[..., 1:], expected[..., 1:], atol=1e-5)


def test_padding_is_never_scored_or_recommended(model: HookedTransformer) -> None:
    tokens, mask = left_pad(random_sequences(6))
    logits = model(tokens, attention_mask=mask)
    assert (logits[..., 0] == torch.finfo(logits.dtype).min).all()
    assert (logits.argmax(-1) != 0).all()
    assert torch.isfinite(logits.log_softmax(-1)).all()


def test_dropout_only_in_training(model: HookedTransformer) -> None:
    tokens, mask = left_pad(random_sequences(5))
    model.eval()
    first = model(tokens, attention_mask=mask)
    assert torch.equal(first, model(tokens, attention_mask=mask))
    logits, _cache = model.run_with_cache(tokens, attention_mask=mask)
    assert torch.allclose(logits, first, atol=1e-5)  # cached run: TransformerLens path
    model.train()
    try:
        a, b = model(tokens, attention_mask=mask), model(tokens, attention_mask=mask)
    finally:
        model.eval()
    assert not torch.allclose(a, b)
    no_dropout = build_gptrec(VOCAB, GPTRecConfig(**{**SMALL.to_json(), "dropout": 0.0}))
    no_dropout.train()
    assert torch.equal(no_dropout(tokens, attention_mask=mask),
                       no_dropout(tokens, attention_mask=mask))
    model.train()
    try:  # reset_hooks (even permanent ones) does not remove the dropout
        model.reset_hooks(including_permanent=True)
        assert not torch.allclose(model(tokens, attention_mask=mask),
                                  model(tokens, attention_mask=mask))
    finally:
        model.eval()


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(1, 24), min_size=1, max_size=6), seed=st.integers(0, 10**6),
       fast=st.booleans())
def test_last_position_scores_do_not_depend_on_left_padding(
    model: HookedTransformer, lengths: list[int], seed: int, fast: bool
) -> None:
    rng = np.random.default_rng(seed)
    sequences = [rng.integers(1, VOCAB, n) for n in lengths]
    set_fast_path(model, fast)
    try:
        tokens, mask = left_pad(sequences)
        batched = last_position_scores(model, tokens, mask)
        for row, seq in enumerate(sequences):
            alone = last_position_scores(model, torch.from_numpy(seq)[None], None)
            extra, extra_mask = left_pad([seq, np.ones(24, dtype=np.int64)])
            padded = last_position_scores(model, extra, extra_mask)[0]
            for other in (batched[row], padded):
                assert torch.allclose(alone[0, 1:], other[1:], atol=1e-5, rtol=1e-5)
            assert torch.equal(alone[0, 1:].topk(5).indices, padded[1:].topk(5).indices)
    finally:
        set_fast_path(model, True)


def test_fast_path_matches_transformer_lens_values_and_gradients() -> None:
    cfg = GPTRecConfig(**{**SMALL.to_json(), "dropout": 0.0})
    tokens, mask = left_pad(random_sequences(7, seed=3))
    results = []
    for fast in (True, False):
        m = build_gptrec(VOCAB, cfg)
        set_fast_path(m, fast)
        m.train()
        hidden = final_hidden(m, tokens, mask)
        loss = item_scores(m, hidden[mask.bool()]).log_softmax(-1)[:, 1:].mean()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in m.parameters())
        results.append((hidden[mask.bool()].detach(), {n: p.grad for n, p in m.named_parameters()}))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-5)
    for name, grad in results[0][1].items():
        assert torch.allclose(grad, results[1][1][name], atol=1e-5, rtol=1e-4), name


def test_hooks_use_standard_names_and_observe_the_transformer_lens_path(
    model: HookedTransformer,
) -> None:
    tokens, mask = left_pad(random_sequences(4, seed=5))
    logits, cache = model.run_with_cache(tokens, attention_mask=mask)
    for name in ("hook_embed", "blocks.0.hook_resid_post", "blocks.1.attn.hook_pattern",
                 "blocks.0.ln1.hook_normalized", "unembed.hook_out", "ln_final.hook_normalized"):
        assert name in cache.cache_dict, name
    assert cache["blocks.0.hook_resid_post"].shape == (4, tokens.shape[1], SMALL.d_model)
    pattern = cache["blocks.1.attn.hook_pattern"]  # padded keys get no attention
    assert (pattern * (1 - mask)[:, None, None, :] == 0).all()

    def zero(act: torch.Tensor, hook) -> torch.Tensor:
        return torch.zeros_like(act)

    patched = model.run_with_hooks(tokens, attention_mask=mask,
                                   fwd_hooks=[("blocks.0.hook_resid_post", zero)])
    assert not torch.allclose(patched, logits)
    assert torch.allclose(model(tokens, attention_mask=mask), logits, atol=1e-5)


def test_converts_losslessly_to_hooked_sae_transformer(model: HookedTransformer) -> None:
    from sae_lens import HookedSAETransformer

    tokens, mask = left_pad(random_sequences(5, seed=7))
    sae_model = to_hooked_sae_transformer(model)
    assert isinstance(sae_model, HookedSAETransformer)
    reference = model(tokens, attention_mask=mask)
    assert torch.equal(sae_model(tokens, attention_mask=mask), reference)
    assert sae_model.W_U.data_ptr() == sae_model.W_E.data_ptr()
    sae = StandardSAE(StandardSAEConfig(d_in=SMALL.d_model, d_sae=32))
    sae.cfg.metadata.hook_name = "blocks.0.hook_resid_post"
    gen = torch.Generator().manual_seed(11)  # not the global stream: the suite's order moves it
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    with_error = sae_model.run_with_saes(tokens, attention_mask=mask, saes=[sae],
                                         use_error_term=True)
    assert torch.allclose(with_error, reference, atol=1e-4)
    replaced = sae_model.run_with_saes(tokens, attention_mask=mask, saes=[sae])
    assert not torch.allclose(replaced, reference, atol=1e-3)
    assert torch.equal(sae_model(tokens, attention_mask=mask), reference)

    # An SAE spliced inside attention (hook_z) must be honoured by the fast path too.
    z_sae = StandardSAE(StandardSAEConfig(d_in=SMALL.d_model // SMALL.n_heads, d_sae=16))
    z_sae.cfg.metadata.hook_name = "blocks.0.attn.hook_z"
    with torch.no_grad():
        for p in z_sae.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    spliced = []
    for fast in (True, False):
        set_fast_path(sae_model, fast)
        spliced.append(sae_model.run_with_saes(tokens, attention_mask=mask, saes=[z_sae]))
    set_fast_path(sae_model, True)
    assert not torch.allclose(spliced[0], reference, atol=1e-3)
    # The fused and the hooked attention round differently in float32: over 30 random models
    # the largest logit difference was 1.9e-6, on logits near 0 as well as near 4.
    torch.testing.assert_close(spliced[0], spliced[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("tokens", "mask", "message"),
    [
        (torch.zeros((0, 3), dtype=torch.long), torch.zeros((0, 3), dtype=torch.long), "empty"),
        (torch.tensor([[0, 0], [1, 2]]), torch.tensor([[0, 0], [1, 1]]), "all padding"),
        (torch.tensor([[1, 2, VOCAB]]), None, "outside the model vocabulary"),
        (torch.tensor([[1, -1]]), torch.tensor([[1, 1]]), "outside the model vocabulary"),
        (torch.tensor([[1, 0]]), torch.tensor([[1, 0]]), "not left-padded"),
        (torch.tensor([[0, 1]]), None, "no attention_mask"),
        (torch.ones((1, 25), dtype=torch.long), None, "exceeds the model's max_len"),
        (torch.tensor([[1, 2]]), torch.tensor([[1, 1, 1]]), "shape"),
    ],
)
def test_bad_batches_raise_clear_errors(model, tokens, mask, message) -> None:
    with pytest.raises(ValueError, match=message):
        validate_batch(model, tokens, mask)
    with pytest.raises(ValueError, match=message):
        last_position_scores(model, tokens, mask)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="divisible"):
        GPTRecConfig(d_model=10, n_heads=3)
    with pytest.raises(ValueError, match="dropout"):
        GPTRecConfig(dropout=1.0)
    with pytest.raises(ValueError, match="unknown GPTRec config keys"):
        GPTRecConfig.from_json({"n_layers": 2, "bogus": 1})
    assert GPTRecConfig.from_json(SMALL.to_json()) == SMALL
    with pytest.raises(ValueError, match="vocab_size"):
        build_gptrec(1)
