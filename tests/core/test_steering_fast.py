"""The fast last-position path must equal a full forward pass per steering value."""

from __future__ import annotations

import pytest
import torch
from steering_doubles import ToySAE, activations_at, left_padded, make_model

from mechrec.steering import (
    DirectionEdit,
    FeatureEdit,
    LastPositionSteerer,
    hook_start_layer,
    last_real_logits,
    steered_last_logits,
)

TOL = 1e-5
VALUES = (-4.0, -1.0, 0.5, 3.0)

HOOKS = [
    "hook_embed",
    "hook_pos_embed",
    "blocks.0.hook_resid_pre",
    "blocks.0.ln1.hook_normalized",
    "blocks.0.attn.hook_k",
    "blocks.0.attn.hook_v",
    "blocks.0.attn.hook_z",
    "blocks.0.hook_attn_out",
    "blocks.0.hook_resid_mid",
    "blocks.0.mlp.hook_post",
    "blocks.0.hook_mlp_out",
    "blocks.0.hook_resid_post",
    "blocks.1.attn.hook_q",
    "blocks.1.hook_resid_mid",
    "blocks.1.hook_mlp_out",
    "blocks.1.hook_resid_post",
    "ln_final.hook_normalized",
]


def _direction_edits(model, tokens, mask, hook, seed=0):
    width = activations_at(model, tokens, mask, hook).shape[-1]
    v = torch.randn(width, generator=torch.Generator().manual_seed(seed))
    return [None] + [DirectionEdit(v, x) for x in VALUES]


def _compare(model, tokens, mask, hook, edits):
    fast = steered_last_logits(model, tokens, mask, hook, edits, method="fast")
    naive = steered_last_logits(model, tokens, mask, hook, edits, method="naive")
    assert fast.shape == (len(edits), tokens.shape[0], model.cfg.d_vocab)
    assert (fast - naive).abs().max() <= TOL, hook
    return fast, naive


@pytest.mark.parametrize("hook", HOOKS)
def test_fast_matches_naive_at_every_hook(tiny_model, token_batches, hook):
    tokens, mask = token_batches[1]
    _fast, naive = _compare(
        tiny_model, tokens, mask, hook, _direction_edits(tiny_model, tokens, mask, hook)
    )
    assert (naive[1:] - naive[0]).abs().max() > 1e-2, "the edit must change the output"


@pytest.mark.parametrize("hook", ["blocks.0.hook_resid_post", "blocks.1.hook_resid_mid"])
@pytest.mark.parametrize("keep_error", [False, True])
def test_fast_matches_naive_with_sae_edits(tiny_model, token_batches, hook, keep_error):
    tokens, mask = token_batches[2]
    acts = activations_at(tiny_model, tokens, mask, hook)[mask.bool()]
    sae = ToySAE(16, 48, hook, mean=acts.mean(0), std=acts.std(0))
    edits = [None, FeatureEdit(sae, {}, keep_error=keep_error)]
    edits += [FeatureEdit(sae, {3: v, 9: -v}, keep_error=keep_error) for v in VALUES]
    _compare(tiny_model, tokens, mask, hook, edits)


@pytest.mark.parametrize(
    "overrides",
    [
        {"positional_embedding_type": "rotary", "rotary_dim": 8},
        {"positional_embedding_type": "shortformer"},
        {"parallel_attn_mlp": True},
        {"normalization_type": "RMS"},
    ],
    ids=["rotary", "shortformer", "parallel", "rms"],
)
@pytest.mark.parametrize("hook", ["hook_embed", "blocks.0.attn.hook_k", "blocks.1.hook_mlp_out"])
def test_fast_matches_naive_on_other_architectures(overrides, hook):
    model = make_model(seed=3, **overrides)
    tokens, mask = left_padded(seed=4)
    _compare(model, tokens, mask, hook, _direction_edits(model, tokens, mask, hook))


def test_unsteered_fast_run_equals_the_plain_model(tiny_model, token_batches):
    tokens, mask = token_batches[0]
    plain = last_real_logits(tiny_model(tokens, attention_mask=mask), mask)
    steerer = LastPositionSteerer(tiny_model, tokens, mask, "blocks.1.hook_resid_pre")
    assert (steerer.run([None])[0] - plain).abs().max() <= TOL


def test_no_mask_and_several_values_per_pass(tiny_model):
    tokens, _ = left_padded(seed=7)
    tokens[tokens == 0] = 1  # no padding at all
    hook = "blocks.0.hook_mlp_out"
    edits = _direction_edits(tiny_model, tokens, None, hook)
    fast, _ = _compare(tiny_model, tokens, None, hook, edits)
    stacked = LastPositionSteerer(tiny_model, tokens, None, hook, values_per_pass=3).run(edits)
    assert (stacked - fast).abs().max() <= TOL


def test_right_padding_is_refused_by_fast_and_handled_by_auto(tiny_model):
    tokens = torch.tensor([[3, 4, 5, 0], [6, 7, 8, 9]])
    mask = (tokens != 0).long()
    edits = [DirectionEdit(torch.linspace(-1, 1, 16), 2.0)]
    with pytest.raises(ValueError, match="left-padded"):
        steered_last_logits(
            tiny_model, tokens, mask, "blocks.0.hook_resid_post", edits, method="fast"
        )
    auto = steered_last_logits(tiny_model, tokens, mask, "blocks.0.hook_resid_post", edits)
    naive = steered_last_logits(
        tiny_model, tokens, mask, "blocks.0.hook_resid_post", edits, method="naive"
    )
    assert torch.equal(auto, naive)


def test_fast_path_rejects_what_it_cannot_do(tiny_model, token_batches):
    tokens, mask = token_batches[0]
    edit = [DirectionEdit(torch.ones(16), 1.0)]
    with pytest.raises(ValueError, match="only the last position"):
        steered_last_logits(
            tiny_model,
            tokens,
            mask,
            "blocks.0.hook_resid_post",
            edit,
            positions="all",
            method="fast",
        )
    with pytest.raises(RuntimeError, match="never fired"):
        LastPositionSteerer(tiny_model, tokens, mask, "blocks.0.attn.hook_result").run(edit)
    bidirectional = make_model(attention_dir="bidirectional")
    with pytest.raises(ValueError, match="not causal"):
        LastPositionSteerer(bidirectional, tokens, mask, "blocks.0.hook_resid_post")
    with pytest.raises(ValueError, match="method must be"):
        steered_last_logits(tiny_model, tokens, mask, "blocks.0.hook_resid_post", edit, method="x")


def test_other_positions_go_through_the_naive_path(tiny_model, token_batches):
    tokens, mask = token_batches[0]
    edit = DirectionEdit(torch.linspace(-1, 1, 16), 3.0)
    out = steered_last_logits(
        tiny_model, tokens, mask, "blocks.0.hook_resid_post", [edit], positions="all"
    )
    last = steered_last_logits(tiny_model, tokens, mask, "blocks.0.hook_resid_post", [edit])
    assert out.shape == last.shape
    assert (out - last).abs().max() > 1e-3


def test_hook_start_layer(tiny_model):
    assert hook_start_layer(tiny_model, "hook_embed") is None
    assert hook_start_layer(tiny_model, "blocks.1.attn.hook_z") == 1
    assert hook_start_layer(tiny_model, "ln_final.hook_normalized") == 2


def test_single_position_sequences(tiny_model):
    tokens = torch.tensor([[3], [7]])
    mask = torch.ones_like(tokens)
    for hook in ("hook_embed", "blocks.0.hook_resid_post"):
        _compare(tiny_model, tokens, mask, hook, _direction_edits(tiny_model, tokens, mask, hook))


@pytest.mark.parametrize("hook", ["hook_embed", "blocks.0.hook_resid_post",
                                  "blocks.1.hook_resid_mid", "ln_final.hook_normalized"])
def test_prefix_keys_and_values_are_stored_once(tiny_model, token_batches, hook):
    """One copy of the prefix K/V (plus the re-run slot): the prefix pass's full-size storage
    is not kept, and the one-value cache re-runs use is the prefix cache itself."""
    tokens, mask = token_batches[0]
    cfg = tiny_model.cfg
    batch, length = tokens.shape
    kv_heads = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    one_copy = cfg.n_layers * 2 * batch * length * kv_heads * cfg.d_head * 4  # T-1 + slot
    extras = (tokens.numel() * 8 * 3  # tokens, mask, trimmed mask
              + batch * cfg.d_model * 4)  # residual at the last position
    steerer = LastPositionSteerer(tiny_model, tokens, mask, hook)
    before = steerer.nbytes()
    steerer.run([None, DirectionEdit(torch.ones(activations_at(
        tiny_model, tokens, mask, hook).shape[-1]), 1.0)])
    assert steerer.nbytes() == before  # running builds no second copy
    prefix_kv = cfg.n_layers * 2 * batch * (length - 1) * kv_heads * cfg.d_head * 4
    assert prefix_kv <= before <= one_copy + extras
    storages = set()
    for cache in steerer._caches.values():
        for entry in cache.entries:
            for t in (entry.past_keys, entry.past_values):
                assert t.untyped_storage().nbytes() <= batch * length * kv_heads * cfg.d_head * 4
                storages.add(t.untyped_storage().data_ptr())
    assert len(storages) == 2 * cfg.n_layers
