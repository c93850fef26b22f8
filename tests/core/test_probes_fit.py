"""Logistic-regression probes: metrics, directions, skipping, balancing, save/load."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from steering_doubles import activations_at

from mechrec.probes import METRIC_COLUMNS, ProbeSet, _split, fit_probes
from mechrec.steering import DirectionEdit, SteeringHook

HOOK = "blocks.0.hook_resid_post"


def _planted(seed=0, rows=2000, d=12):
    """Activations with attribute 'a' along a planted direction, 'rare' 5% positive."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, d)) * np.linspace(0.5, 3.0, d) + 1.0
    w = rng.normal(size=d)
    score = (x - 1.0) @ w
    a = (score + rng.normal(scale=0.3 * score.std(), size=rows)) > 0
    rare = score > np.quantile(score, 0.95)
    empty = np.zeros(rows, dtype=bool)
    labels = pd.DataFrame({"a": a, "rare": rare, "empty": empty})
    groups = np.repeat(np.arange(rows // 10), 10)
    return x, labels, groups, w


def test_probe_recovers_a_planted_attribute():
    x, labels, groups, w = _planted()
    with pytest.warns(UserWarning, match="'empty' skipped: no positive"):
        probes = fit_probes(x, labels, groups=groups, hook_name=HOOK)
    table = probes.metrics.set_index("attribute")
    assert list(probes.metrics.columns) == list(METRIC_COLUMNS)
    assert table.loc["a", "status"] == "ok"
    assert table.loc["a", "test_roc_auc"] > 0.95
    assert table.loc["a", "test_accuracy"] > 0.85
    assert table.loc["a", "n_train"] + table.loc["a", "n_test"] == len(x)
    assert table.loc["empty", "status"].startswith("skipped")
    assert np.isnan(table.loc["empty", "test_roc_auc"])
    assert set(probes.probes) == {"a", "rare"}
    # the raw-space weights point along the planted direction
    cosine = (
        probes.probes["a"].weight
        @ w
        / np.linalg.norm(probes.probes["a"].weight)
        / np.linalg.norm(w)
    )
    assert cosine > 0.95


def test_raw_space_logits_match_sklearn_on_standardised_inputs():
    x, labels, _, _ = _planted(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probes = fit_probes(x, labels[["a"]], test_fraction=0.0)
    probe = probes.probes["a"]
    from sklearn.linear_model import LogisticRegression

    z = (x - x.mean(0)) / x.std(0)
    ref = LogisticRegression(max_iter=1000, class_weight="balanced").fit(z, labels["a"])
    assert np.allclose(probe.decision_function(x), ref.decision_function(z), atol=1e-6)
    assert np.allclose(probe.predict_proba(x), ref.predict_proba(z)[:, 1], atol=1e-6)
    assert probes.metrics.loc[0, "n_test"] == 0


def test_direction_is_unit_variance_and_steers_the_probe_logit():
    x, labels, _, _ = _planted(2)
    probes = fit_probes(x, labels[["a"]], test_fraction=0.0)
    direction = probes.direction("a")
    probe = probes.probes["a"]
    unit = probe.weight / np.linalg.norm(probe.weight)
    assert direction.sigma == pytest.approx(float(np.std(x @ unit)), rel=1e-6)
    assert np.allclose(direction.vector.numpy() / direction.sigma, unit, atol=1e-5)
    moved = DirectionEdit(direction, 2.0).apply(torch.from_numpy(x).float()).double().numpy()
    gain = probe.decision_function(moved) - probe.decision_function(x)
    assert np.allclose(gain, 2.0 * direction.sigma * np.linalg.norm(probe.weight), rtol=1e-4)


def test_balancing_helps_a_rare_attribute():
    x, labels, groups, _ = _planted(4)
    kw = dict(groups=groups, C=0.01, seed=0)
    plain = fit_probes(x, labels[["rare"]], balanced=False, **kw).metrics.iloc[0]
    balanced = fit_probes(x, labels[["rare"]], balanced=True, **kw).metrics.iloc[0]
    assert balanced["test_balanced_accuracy"] > plain["test_balanced_accuracy"]


def test_grouped_split_keeps_groups_together_and_explicit_test_set():
    x, labels, groups, _ = _planted(5)
    train, test = _split(len(x), 0.3, groups, seed=0)
    assert not set(groups[train]) & set(groups[test])
    assert len(test) == pytest.approx(0.3 * len(x), rel=0.1)
    probes = fit_probes(x, labels[["a"]], groups=groups, test_fraction=0.3)
    assert probes.settings["grouped_split"] is True
    assert probes.metrics.loc[0, "n_test"] == len(test)
    explicit = fit_probes(
        x[:1500],
        labels[["a"]].iloc[:1500],
        test_activations=x[1500:],
        test_labels=labels[["a"]].iloc[1500:],
    )
    assert explicit.metrics.loc[0, "n_test"] == 500
    assert explicit.metrics.loc[0, "test_roc_auc"] > 0.95


def test_activation_set_like_input_and_model_activations(tiny_model, token_batches):
    tokens, mask = token_batches[0]
    acts = activations_at(tiny_model, tokens, mask, HOOK)[mask.bool()]
    real_tokens = tokens[mask.bool()]

    class Rows:  # duck-typed ActivationSet
        hook_name = HOOK
        activations = acts
        sequence_index = torch.nonzero(mask)[:, 0]

    labels = np.stack([(real_tokens % 2 == 0).numpy(), (real_tokens < 8).numpy()], axis=1)
    probes = fit_probes(Rows(), labels, ["even", "small"], test_fraction=0.25)
    assert probes.hook_name == HOOK
    direction = probes.direction("small")
    assert direction.hook_name == HOOK
    out = SteeringHook(DirectionEdit(direction, 1.0), "last", mask, hook_name=HOOK)(
        activations_at(tiny_model, tokens, mask, HOOK)
    )
    assert out.shape == (tokens.shape[0], tokens.shape[1], 16)


def test_save_and_load_roundtrip(tmp_path):
    x, labels, groups, _ = _planted(6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probes = fit_probes(x, labels, groups=groups, hook_name=HOOK)
    path = probes.save(tmp_path / "probes.safetensors")
    loaded = ProbeSet.load(path)
    assert loaded.hook_name == HOOK
    assert set(loaded.probes) == set(probes.probes)
    for name, probe in probes.probes.items():
        assert np.allclose(loaded.probes[name].weight, probe.weight, atol=1e-6)
        assert loaded.probes[name].bias == pytest.approx(probe.bias)
        assert torch.allclose(loaded.direction(name).vector, probe.direction.vector)
        assert loaded.direction(name).sigma == pytest.approx(probe.direction.sigma)
    pd.testing.assert_frame_equal(loaded.metrics, probes.metrics, check_dtype=False)
    with pytest.raises(KeyError, match="skipped: no positive"):
        loaded.direction("empty")


def test_bad_input(tmp_path):
    x, labels, _, _ = _planted()
    with pytest.raises(ValueError, match="binary"):
        fit_probes(x, np.full((len(x), 1), 2))
    with pytest.raises(ValueError, match=r"labels must be \(rows=2000"):
        fit_probes(x, labels.iloc[:10])
    bad = x.copy()
    bad[3, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        fit_probes(bad, labels[["a"]])
    with pytest.raises(ValueError, match="both test_activations and test_labels"):
        fit_probes(x, labels[["a"]], test_activations=x)
    with pytest.raises(ValueError, match="test_fraction"):
        fit_probes(x, labels[["a"]], test_fraction=1.0)
    with pytest.raises(FileNotFoundError):
        ProbeSet.load(tmp_path / "missing.safetensors")
