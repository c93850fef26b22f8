"""The standard splice metrics on the tiny non-recommender model, against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_model import make_token_batches

from mechrec.activations import collect_activations
from mechrec.saes import SAETrainingConfig, train_sae
from mechrec.splice_quality import (
    ablation_hooks,
    absorption,
    density_histogram,
    feature_density,
    fraction_recovered,
    next_token_kl,
)

HOOK = "blocks.0.hook_resid_post"


def test_ablation_replaces_the_hook_at_every_position(tiny_model) -> None:
    tokens, mask = make_token_batches(n_batches=1)[0]
    mean = torch.arange(16, dtype=torch.float32)
    for mode, expected in (("zero", torch.zeros(16)), ("mean", mean)):
        with torch.no_grad(), ablation_hooks(tiny_model, HOOK, mode, mean):
            _, cache = tiny_model.run_with_cache(tokens, attention_mask=mask,
                                                 names_filter=[HOOK])
        assert torch.equal(cache[HOOK], expected.expand_as(cache[HOOK]))
    with torch.no_grad():  # the hook is gone afterwards
        _, cache = tiny_model.run_with_cache(tokens, attention_mask=mask, names_filter=[HOOK])
    assert cache[HOOK].abs().sum() > 0
    for args, message in (((), "needs mean="), ((torch.zeros(3),), "has 3 values but")):
        with pytest.raises(ValueError, match=message), ablation_hooks(tiny_model, HOOK,
                                                                      "mean", *args):
            pass
    with pytest.raises(ValueError, match="unknown ablation"), ablation_hooks(tiny_model, HOOK,
                                                                             "resample"):
        pass


def test_fraction_recovered_for_losses_and_scores() -> None:
    assert fraction_recovered(2.0, 2.5, 4.0) == pytest.approx(0.75)   # a loss
    assert fraction_recovered(0.3, 0.2, 0.1) == pytest.approx(0.5)    # a score
    assert fraction_recovered(2.0, 1.9, 4.0) > 1                      # better than original
    assert math.isnan(fraction_recovered(1.0, 1.0, 1.0))


def test_next_token_kl_matches_torch() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 30, generator=gen), torch.randn(5, 30, generator=gen)
    expected = torch.nn.functional.kl_div(torch.log_softmax(b.double(), -1),
                                          torch.log_softmax(a.double(), -1), log_target=True,
                                          reduction="none").sum(-1)
    torch.testing.assert_close(next_token_kl(a, b), expected)
    assert torch.allclose(next_token_kl(a, a), torch.zeros(5, dtype=torch.float64))
    a[:, 0] = b[:, 0] = -torch.inf  # a token masked in both is ignored
    assert torch.isfinite(next_token_kl(a, b)).all()


def test_density_and_histogram(tiny_model) -> None:
    acts = collect_activations(tiny_model, make_token_batches(n_batches=4), HOOK)
    sae = train_sae(acts, SAETrainingConfig(d_sae=32, steps=30, batch_size=32,
                                            lr_warm_up_steps=2)).sae
    density = feature_density(sae, acts, batch_size=7)
    direct = (sae.encode(acts.activations) > 0).float().mean(0).detach().numpy()
    np.testing.assert_allclose(density, direct, atol=1e-12)
    table = density_histogram(np.array([0.0, 0.0, 1e-7, 0.004, 0.05, 1.0]))
    assert table["features"].sum() == 6
    assert table.iloc[0]["bin"] == "dead" and table.iloc[0]["features"] == 2
    assert table.loc[table["bin"] == "[-6.0, -5.5)", "features"].item() == 1  # clipped up
    assert table.loc[table["bin"] == "[-2.5, -2.0)", "features"].item() == 1  # 0.004
    assert table.iloc[-1]["features"] == 1                                   # density 1


def test_absorption_counts_rows_by_hand() -> None:
    parent = np.array([1, 1, 1, 1, 1, 1, 0, 0], dtype=bool)
    child = np.array([0, 0, 1, 1, 1, 1, 0, 1], dtype=bool)
    p_values = np.array([1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 1.0, 0.0])
    c_values = np.array([0.0, 0.0, 3.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    out = absorption(p_values, c_values, parent, child)
    assert out["rows_parent_only"] == 2 and out["rows_both"] == 4
    assert out["parent_recall_parent_only"] == pytest.approx(0.5)
    assert out["parent_recall_with_child"] == pytest.approx(0.25)
    assert out["absorption_rate"] == pytest.approx(0.5)   # rows 2 and 3
    assert out["recall_gap"] == pytest.approx(0.25)
