"""Interventions: SAE feature edits, direction addition, positions, hooks, bad input."""

from __future__ import annotations

import pytest
import torch
from steering_doubles import ToySAE, activations_at

from mechrec.steering import (
    DirectionEdit,
    FeatureEdit,
    SteeringHook,
    make_steering_hook,
    resolve_positions,
    steer,
    steered_logits,
)

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def batch(token_batches):
    return token_batches[0]


@pytest.fixture(scope="module")
def acts(tiny_model, batch):
    tokens, mask = batch
    return activations_at(tiny_model, tokens, mask, HOOK)


@pytest.fixture(scope="module")
def sae(acts, batch):
    real = acts[batch[1].bool()]
    return ToySAE(16, 40, HOOK, mean=real.mean(0), std=real.std(0))


def test_keep_error_without_change_reproduces_the_model_exactly(tiny_model, batch, sae):
    tokens, mask = batch
    plain = tiny_model(tokens, attention_mask=mask)
    for edit in (
        FeatureEdit(sae, {}, keep_error=True),
        FeatureEdit(sae, {3: 0.0}, mode="add", keep_error=True),
    ):
        with steer(tiny_model, HOOK, edit, positions="all", attention_mask=mask) as hook:
            steered = tiny_model(tokens, attention_mask=mask)
        assert hook.calls == 1
        assert torch.equal(steered, plain)


def test_replace_mode_is_not_the_unsteered_model(tiny_model, batch, sae, acts):
    _tokens, mask = batch
    out = SteeringHook(FeatureEdit(sae, {}), "all", mask)(acts)
    real = mask.bool()
    assert torch.allclose(out[real], sae.decode(sae.encode(acts[real])), atol=1e-6)
    assert torch.equal(out[~real], acts[~real])
    assert (out[real] - acts[real]).abs().max() > 1e-2  # the SAE's error was dropped


def test_set_and_add_match_their_definitions(sae, acts, batch):
    rows = acts[batch[1].bool()]
    feats = sae.encode(rows)
    for mode, keep in (("set", False), ("add", False), ("set", True), ("add", True)):
        edit = FeatureEdit(sae, {5: 2.5, 11: -1.0}, mode=mode, keep_error=keep)
        edited = feats.clone()
        if mode == "set":
            edited[:, [5, 11]] = torch.tensor([2.5, -1.0])
        else:
            edited[:, [5, 11]] += torch.tensor([2.5, -1.0])
        expected = sae.decode(edited)
        if keep:
            expected = rows + expected - sae.decode(feats)
        assert torch.allclose(edit.apply(rows), expected, atol=1e-5), (mode, keep)


def test_equalizer_edits_several_features_at_once(sae, acts, batch):
    rows = acts[batch[1].bool()]
    edit = FeatureEdit(sae, {1: 3.0, 2: 0.0, 7: -2.0})
    feats = sae.encode(rows)
    feats[:, [1, 2, 7]] = torch.tensor([3.0, 0.0, -2.0])
    assert torch.allclose(edit.apply(rows), sae.decode(feats), atol=1e-6)
    one_by_one = FeatureEdit(sae, {1: 3.0}).apply(rows)
    assert not torch.allclose(edit.apply(rows), one_by_one, atol=1e-3)


def test_direction_edit_adds_value_times_direction_at_selected_cells(acts, batch):
    _, mask = batch
    v = torch.linspace(-1, 1, 16)
    out = SteeringHook(DirectionEdit(v, 2.0), "last", mask)(acts)
    assert torch.allclose(out[:, -1], acts[:, -1] + 2.0 * v)
    assert torch.equal(out[:, :-1], acts[:, :-1])


def test_all_positions_never_touch_padding(acts, batch):
    _, mask = batch
    assert (mask == 0).any(), "fixture must contain padding"
    out = SteeringHook(DirectionEdit(torch.ones(16), 1.0), "all", mask)(acts)
    real = mask.bool()
    assert torch.allclose(out[real], acts[real] + 1.0)
    assert torch.equal(out[~real], acts[~real])


def test_explicit_and_tensor_positions(acts, batch):
    _, mask = batch
    sel = resolve_positions([-1, -2], *mask.shape, attention_mask=mask)
    assert sel[:, -1].all()
    assert torch.equal(sel[:, -2], mask[:, -2].bool())  # padding cells are skipped
    cells = torch.zeros_like(mask, dtype=torch.bool)
    cells[0, 5] = True
    out = SteeringHook(DirectionEdit(torch.ones(16), 1.0), cells, None)(acts)
    changed = (out != acts).any(-1)
    assert torch.equal(changed, cells)


def test_last_follows_the_mask_for_right_padding():
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    sel = resolve_positions("last", 3, 4, attention_mask=mask)
    assert sel.tolist() == [
        [False, True, False, False],
        [False, False, False, True],
        [False, False, False, False],
    ]


def test_steering_the_last_position_leaves_earlier_logits_unchanged(tiny_model, batch):
    tokens, mask = batch
    plain = tiny_model(tokens, attention_mask=mask)
    # (a constant vector would be removed by the next LayerNorm's centring)
    edit = DirectionEdit(torch.linspace(-1, 1, 16), 5.0)
    steered = steered_logits(tiny_model, tokens, mask, HOOK, edit)
    assert torch.allclose(steered[:, :-1], plain[:, :-1], atol=1e-6)
    assert (steered[:, -1] - plain[:, -1]).abs().max() > 1e-2


def test_hook_function_works_with_run_with_hooks(tiny_model, batch):
    tokens, mask = batch
    edit = DirectionEdit(torch.linspace(-1, 1, 16), 5.0)
    pair = make_steering_hook(tiny_model, HOOK, edit, "last", mask)
    a = tiny_model.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=[pair])
    b = steered_logits(tiny_model, tokens, mask, HOOK, edit)
    assert torch.equal(a, b)
    assert not torch.allclose(a, tiny_model(tokens, attention_mask=mask))


def test_head_shaped_activations_are_flattened(tiny_model, batch):
    tokens, mask = batch
    hook = "blocks.1.attn.hook_z"  # (batch, pos, head, d_head) = 2 x 8
    acts = tiny_model.run_with_cache(tokens, attention_mask=mask, names_filter=hook)[1][hook]
    v = torch.arange(16.0)
    out = SteeringHook(DirectionEdit(v, 1.0), "last", mask)(acts)
    assert out.shape == acts.shape
    assert torch.allclose(out[:, -1].reshape(-1, 16), acts[:, -1].reshape(-1, 16) + v)


# ---- bad input ---------------------------------------------------------------------------


def test_feature_index_out_of_range(sae):
    with pytest.raises(ValueError, match=r"out of range for an SAE with 40 features.*0\.\.39"):
        FeatureEdit(sae, {40: 1.0})
    with pytest.raises(ValueError, match="out of range"):
        FeatureEdit(sae, {-1: 1.0})
    with pytest.raises(ValueError, match="must be an integer"):
        FeatureEdit(sae, {1.5: 1.0})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values(sae, bad):
    with pytest.raises(ValueError, match="finite"):
        FeatureEdit(sae, {0: bad})
    with pytest.raises(ValueError, match="finite"):
        DirectionEdit(torch.ones(16), bad)
    with pytest.raises(ValueError, match="NaN or infinite"):
        DirectionEdit(torch.tensor([1.0, bad]), 1.0)


def test_unknown_hook_suggests_close_matches(tiny_model):
    with pytest.raises(ValueError, match=r"blocks\.0\.hook_resid_post"):
        make_steering_hook(tiny_model, "blocks.0.hook_resid_pots", DirectionEdit(torch.ones(16)))


def test_attention_pattern_hooks_are_refused(tiny_model):
    with pytest.raises(ValueError, match="hook_z"):
        make_steering_hook(tiny_model, "blocks.0.attn.hook_pattern", None)


def test_sae_from_another_hook_is_refused(tiny_model, sae):
    with pytest.raises(ValueError, match=r"trained on 'blocks.0.hook_resid_post'.*applied at"):
        make_steering_hook(tiny_model, "blocks.1.hook_resid_post", FeatureEdit(sae, {0: 1.0}))


def test_sae_of_another_width_is_refused(tiny_model, batch):
    tokens, mask = batch
    wide = ToySAE(16, 8, "blocks.0.mlp.hook_post")  # that hook has width 32
    with pytest.raises(ValueError, match=r"width 16 .* width 32"):
        steered_logits(tiny_model, tokens, mask, "blocks.0.mlp.hook_post", FeatureEdit(wide, {}))


def test_direction_of_the_wrong_dimension_is_refused(tiny_model, batch):
    tokens, mask = batch
    with pytest.raises(ValueError, match=r"expects activations of width 10 .* width 16"):
        steered_logits(tiny_model, tokens, mask, HOOK, DirectionEdit(torch.ones(10), 1.0))
    with pytest.raises(ValueError, match="1-D"):
        DirectionEdit(torch.ones(2, 16), 1.0)
    with pytest.raises(ValueError, match="all zeros"):
        DirectionEdit(torch.zeros(16), 1.0)


def test_bad_positions(acts, batch):
    with pytest.raises(ValueError, match="unknown positions"):
        SteeringHook(None, "first")
    with pytest.raises(ValueError, match="out of range"):
        resolve_positions([16], 2, 16)
    with pytest.raises(ValueError, match="boolean with shape"):
        SteeringHook(None, torch.ones(3))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        SteeringHook(DirectionEdit(torch.ones(16)), "all", torch.ones(2, 3))(acts)


def test_not_an_sae_or_edit():
    with pytest.raises(TypeError, match="lacks"):
        FeatureEdit(object(), {})
    with pytest.raises(TypeError, match="expected FeatureEdit/DirectionEdit"):
        SteeringHook([torch.ones(16)])


def test_hook_that_never_fires_is_reported(tiny_model, batch):
    tokens, mask = batch
    edit = DirectionEdit(torch.ones(16), 1.0)
    with pytest.raises(RuntimeError, match="use_attn_result"):
        steered_logits(tiny_model, tokens, mask, "blocks.0.attn.hook_result", edit)
