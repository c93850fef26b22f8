"""Steering with a real mechrec NormalizedSAE (sae-lens StandardSAE + Normalizer)."""

from __future__ import annotations

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from steering_doubles import activations_at

from mechrec.normalization import Normalizer
from mechrec.saes import NormalizedSAE
from mechrec.steering import (
    FeatureEdit,
    SAELike,
    sae_feature_direction,
    steer,
    steered_last_logits,
)

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def nsae(tiny_model, token_batches):
    tokens, mask = token_batches[0]
    acts = activations_at(tiny_model, tokens, mask, HOOK)[mask.bool()]
    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=16, d_sae=64))
    with torch.no_grad():
        sae.b_enc.fill_(-0.5)  # sparse, like a trained SAE
    return NormalizedSAE(sae, Normalizer.fit(acts, "per_dim"), hook_name=HOOK)


def test_normalized_sae_satisfies_the_protocol(nsae):
    assert isinstance(nsae, SAELike)


def test_keep_error_reproduces_the_model_and_replace_does_not(tiny_model, token_batches, nsae):
    tokens, mask = token_batches[1]
    plain = tiny_model(tokens, attention_mask=mask)
    with steer(tiny_model, HOOK, FeatureEdit(nsae, {}, keep_error=True), "all", mask):
        kept = tiny_model(tokens, attention_mask=mask)
    with steer(tiny_model, HOOK, FeatureEdit(nsae, {}), "all", mask):
        replaced = tiny_model(tokens, attention_mask=mask)
    assert torch.equal(kept, plain)
    assert (replaced - plain).abs().max() > 1e-3


def test_keep_error_delta_equals_the_decode_difference(tiny_model, token_batches, nsae):
    tokens, mask = token_batches[1]
    rows = activations_at(tiny_model, tokens, mask, HOOK)[mask.bool()]
    with torch.no_grad():
        feats = nsae.encode(rows)
        edited = feats.clone()
        edited[:, 5] = 4.0
        expected = rows + nsae.decode(edited) - nsae.decode(feats)
        got = FeatureEdit(nsae, {5: 4.0}, keep_error=True).apply(rows)
    assert torch.allclose(got, expected, atol=1e-5)
    direction = sae_feature_direction(nsae, 5).vector
    assert torch.allclose(direction, nsae.decoder_directions()[5], atol=1e-6)


@pytest.mark.parametrize("keep_error", [False, True])
def test_fast_matches_naive_with_a_normalized_sae(tiny_model, token_batches, nsae, keep_error):
    tokens, mask = token_batches[2]
    edits = [None] + [
        FeatureEdit(nsae, {7: v, 30: 1.0}, keep_error=keep_error) for v in (-10.0, 0.0, 2.0, 10.0)
    ]
    fast = steered_last_logits(tiny_model, tokens, mask, HOOK, edits, method="fast")
    naive = steered_last_logits(tiny_model, tokens, mask, HOOK, edits, method="naive")
    assert (fast - naive).abs().max() <= 1e-5
    assert (naive[-1] - naive[0]).abs().max() > 1e-2


def test_normalized_sae_on_another_hook_or_width(tiny_model, token_batches, nsae):
    tokens, mask = token_batches[0]
    edit = FeatureEdit(nsae, {0: 1.0})
    with pytest.raises(ValueError, match=r"trained on 'blocks\.0\.hook_resid_post'"):
        steered_last_logits(tiny_model, tokens, mask, "blocks.1.hook_resid_post", [edit])
    wide = NormalizedSAE(
        StandardSAE(StandardSAEConfig(d_in=32, d_sae=8)),
        Normalizer.identity(32),
        hook_name=HOOK,
    )
    with pytest.raises(ValueError, match="width 32 but the activation"):
        steered_last_logits(tiny_model, tokens, mask, HOOK, [FeatureEdit(wide, {0: 1.0})])
