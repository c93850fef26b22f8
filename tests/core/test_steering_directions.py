"""Unit-variance directions and SAE feature directions."""

from __future__ import annotations

import pytest
import torch
from steering_doubles import ToySAE

from mechrec.steering import (
    Direction,
    DirectionEdit,
    FeatureEdit,
    sae_feature_direction,
    steered_last_logits,
    unit_variance_direction,
)


def _activations(seed=0, rows=500, d=8):
    gen = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.5, 4.0, d)
    return torch.randn(rows, d, generator=gen) * scales + 3.0


def test_unit_variance_definition():
    acts = _activations()
    raw = torch.tensor([1.0, 2.0, 0.0, 0.0, -1.0, 0.0, 0.0, 3.0])
    direction = unit_variance_direction(raw, acts, name="d", hook_name="h")
    unit = raw / raw.norm()
    sigma = float((acts.double() @ unit.double()).std(unbiased=False))
    assert direction.sigma == pytest.approx(sigma)
    assert torch.allclose(direction.vector, sigma * unit)
    # Adding k * v shifts the standardised coordinate along u by exactly k.
    z = lambda x: (x @ unit - (acts @ unit).mean()) / sigma  # noqa: E731
    edited = DirectionEdit(direction, 2.5).apply(acts)
    assert torch.allclose(z(edited) - z(acts), torch.full((len(acts),), 2.5), atol=1e-4)
    assert float(z(acts).std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)


def test_scaling_ignores_the_input_norm():
    acts = _activations(1)
    raw = torch.randn(8, generator=torch.Generator().manual_seed(2))
    a = unit_variance_direction(raw, acts)
    b = unit_variance_direction(100.0 * raw, acts)
    assert torch.allclose(a.vector, b.vector, atol=1e-6)


def test_unit_variance_errors():
    acts = _activations()
    with pytest.raises(ValueError, match="length 5 but the activations have width 8"):
        unit_variance_direction(torch.ones(5), acts)
    flat = torch.zeros(10, 8)
    flat[:, 0] = torch.arange(10.0)
    with pytest.raises(ValueError, match="do not vary"):
        unit_variance_direction(torch.eye(8)[1], flat)
    bad = acts.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        unit_variance_direction(torch.ones(8), bad)


def test_sae_feature_direction_is_the_denormalised_decoder_row():
    std = torch.linspace(1.0, 2.0, 8)
    sae = ToySAE(8, 20, "blocks.0.hook_resid_post", mean=torch.ones(8), std=std)
    direction = sae_feature_direction(sae, 4)
    assert torch.allclose(direction.vector, sae.W_dec[4] * std, atol=1e-6)
    assert direction.hook_name == "blocks.0.hook_resid_post"
    # keep_error edits move activations along exactly these directions
    rows = torch.randn(5, 8)
    edit = FeatureEdit(sae, {4: 1.0}, mode="add", keep_error=True)
    assert torch.allclose(edit.apply(rows) - rows, direction.vector.expand(5, -1), atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        sae_feature_direction(sae, 20)


def test_direction_from_another_hook_is_refused(tiny_model, token_batches):
    tokens, mask = token_batches[0]
    direction = Direction(torch.linspace(-1, 1, 16), name="x", hook_name="blocks.1.hook_resid_post")
    with pytest.raises(ValueError, match=r"direction was trained on 'blocks\.1\.hook_resid_post'"):
        steered_last_logits(
            tiny_model, tokens, mask, "blocks.0.hook_resid_post", [DirectionEdit(direction, 1.0)]
        )
