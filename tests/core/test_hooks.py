"""Hook-name validation, suggestions and what to compute for a hook."""

from __future__ import annotations

import pytest

from mechrec.hooks import (
    HookNameError,
    check_per_position,
    hook_layer,
    hook_names,
    hook_width,
    stop_layer_for,
    suggest_hook_names,
    validate_hook_name,
)


def test_known_hook_is_returned(tiny_model):
    assert validate_hook_name(tiny_model, "blocks.0.hook_resid_post") == "blocks.0.hook_resid_post"
    assert "blocks.1.attn.hook_z" in hook_names(tiny_model)


def test_unknown_hook_suggests_close_matches(tiny_model):
    with pytest.raises(HookNameError) as err:
        validate_hook_name(tiny_model, "blocks.0.hook_resid_pos")
    message = str(err.value)
    assert "blocks.0.hook_resid_pos'" in message
    assert "did you mean 'blocks.0.hook_resid_post'" in message
    assert isinstance(err.value, ValueError)


def test_unrelated_hook_lists_examples(tiny_model):
    with pytest.raises(HookNameError, match="examples: hook_embed"):
        validate_hook_name(tiny_model, "zzzzzz")
    assert suggest_hook_names(tiny_model, "zzzzzz") == []


def test_non_string_hook_name(tiny_model):
    with pytest.raises(HookNameError, match="must be a string"):
        validate_hook_name(tiny_model, 3)


def test_layer_and_stop_layer(tiny_model):
    assert hook_layer("blocks.1.mlp.hook_post") == 1
    assert hook_layer("hook_embed") == -1
    assert hook_layer("ln_final.hook_normalized") is None
    assert stop_layer_for(tiny_model, "hook_embed") == 0
    assert stop_layer_for(tiny_model, "blocks.0.hook_resid_post") == 1
    # the last block needs the whole stack: no early stop
    assert stop_layer_for(tiny_model, "blocks.1.hook_resid_post") is None
    assert stop_layer_for(tiny_model, "ln_final.hook_normalized") is None


def test_hook_width(tiny_model):
    assert hook_width(tiny_model, "blocks.0.hook_resid_post") == 16
    assert hook_width(tiny_model, "blocks.0.mlp.hook_post") == 32
    assert hook_width(tiny_model, "blocks.1.attn.hook_z") == 2 * 8  # heads x d_head
    assert hook_width(tiny_model, "ln_final.hook_normalized") == 16


def test_attention_patterns_are_not_per_position(tiny_model):
    with pytest.raises(HookNameError, match="attention patterns"):
        check_per_position("blocks.0.attn.hook_pattern")
    with pytest.raises(HookNameError):
        hook_width(tiny_model, "blocks.0.attn.hook_attn_scores")
