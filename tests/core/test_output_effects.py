"""A feature's output effects on the tiny model, against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_model import make_token_batches

from mechrec.activations import collect_activations
from mechrec.output_effects import direct_effects, mean_logit_change, top_effects
from mechrec.reconstruction import reconstruction_hooks
from mechrec.saes import SAETrainingConfig, train_sae

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def sae(tiny_model):
    acts = collect_activations(tiny_model, make_token_batches(n_batches=4), HOOK)
    return train_sae(acts, SAETrainingConfig(d_sae=32, steps=40, batch_size=32)).sae


def test_direct_effects_read_the_direction_through_the_unembedding(tiny_model, sae) -> None:
    basis = torch.zeros(2, sae.d_sae)
    basis[1, 5] = 1.0
    with torch.no_grad():
        decoded = sae.decode(basis)
        expected = ((decoded[1] - decoded[0]) @ tiny_model.W_U).double().numpy()
    np.testing.assert_allclose(direct_effects(tiny_model, sae, 5), expected, rtol=1e-5,
                               atol=1e-6)


def test_measured_effect_is_the_mean_last_position_change(tiny_model, sae) -> None:
    batches = make_token_batches(n_batches=2)
    got = mean_logit_change(tiny_model, batches, sae, 5, 3.0)
    changes = []
    with torch.no_grad():
        for tokens, mask in batches:
            last = mask.shape[1] - 1  # left padding: the last column is every row's last item
            with reconstruction_hooks(tiny_model, sae, "replace"):
                base = tiny_model(tokens, attention_mask=mask)[:, last]
            with reconstruction_hooks(tiny_model, sae, "replace", {5: 3.0}):
                steered = tiny_model(tokens, attention_mask=mask)[:, last]
            changes.append((steered - base).double())
    np.testing.assert_allclose(got, torch.cat(changes).mean(0).numpy(), atol=1e-4)


def test_top_effects_and_errors(tiny_model, sae) -> None:
    effects = np.array([9.0, 1.0, -2.0, 3.0, 0.5])
    table = top_effects(effects, 2)
    assert table[table.side == "promotes"]["token"].tolist() == [3, 1]  # token 0 excluded
    assert table[table.side == "demotes"]["token"].tolist() == [2, 4]
    acts = collect_activations(tiny_model, make_token_batches(n_batches=2),
                               "blocks.0.mlp.hook_post")
    narrow = train_sae(acts, SAETrainingConfig(d_sae=8, steps=10, batch_size=32)).sae
    with pytest.raises(ValueError, match="only residual-stream directions"):
        direct_effects(tiny_model, narrow, 0)
    with pytest.raises(ValueError, match="no batches"):
        mean_logit_change(tiny_model, [], sae, 0, 1.0)
