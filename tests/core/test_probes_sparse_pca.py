"""k-sparse probes (Gurnee et al. 2023) and the PCA baseline of ``fit_probes``: chosen on the
fitting rows only, exactly ``k`` nonzero weights, the planted component found, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mechrec.probes import DEFAULT_K, PROBE_METHODS, ProbeSet, fit_probes


def _two_dim_attribute(seed: int = 0, rows: int = 3000, d: int = 20):
    """Activations of mixed scales; attribute ``a`` is carried by dimensions 3 and 11 only."""
    rng = np.random.default_rng(seed)
    scales = np.linspace(0.5, 3.0, d)
    x = rng.normal(size=(rows, d)) * scales + 2.0
    signal = (x[:, 3] - 2.0) / scales[3] - (x[:, 11] - 2.0) / scales[11]
    a = signal + rng.normal(scale=0.3, size=rows) > 0
    return x, pd.DataFrame({"a": a})


def _planted_component(seed: int = 0, rows: int = 4000, d: int = 16):
    """Activations with a large-variance nuisance axis, then the attribute's axis ``u`` (the
    second principal component), then isotropic noise; ``b`` is the sign of the ``u`` part."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    nuisance, u = basis[:, 0], basis[:, 1]
    t_nuisance = rng.normal(size=rows) * 8.0
    t = rng.normal(size=rows) * 4.0
    x = t_nuisance[:, None] * nuisance + t[:, None] * u + rng.normal(size=(rows, d)) + 0.5
    return x, pd.DataFrame({"b": t > 0}), u, nuisance


def test_methods_are_listed():
    assert {"k_sparse", "pca"} <= set(PROBE_METHODS)


def test_k_sparse_keeps_exactly_k_dimensions_and_finds_the_planted_pair():
    x, labels = _two_dim_attribute()
    probes = fit_probes(x, labels, method="k_sparse", k=2, seed=0)
    weight = probes.probes["a"].weight
    assert np.count_nonzero(weight) == 2
    assert np.flatnonzero(weight).tolist() == [3, 11]
    assert probes.settings["neurons"] == {"a": [3, 11]} and probes.settings["k"] == 2
    assert weight[3] > 0 > weight[11]  # the signs of the planted rule
    row = probes.metrics.iloc[0]
    assert row["status"] == "ok" and row["test_roc_auc"] > 0.97
    # a wider k keeps the pair and exactly k dimensions
    wide = fit_probes(x, labels, method="k_sparse", k=5, seed=0).probes["a"].weight
    assert np.count_nonzero(wide) == 5 and {3, 11} <= set(np.flatnonzero(wide).tolist())
    # k = 1 cannot carry both: the probe is worse than with the pair
    one = fit_probes(x, labels, method="k_sparse", k=1, seed=0)
    assert np.count_nonzero(one.probes["a"].weight) == 1
    assert one.metrics.iloc[0]["test_roc_auc"] < row["test_roc_auc"] - 0.05
    # the default k
    default = fit_probes(x, labels, method="k_sparse", seed=0)
    assert default.settings["k"] == DEFAULT_K
    assert np.count_nonzero(default.probes["a"].weight) == DEFAULT_K


def test_k_sparse_logits_are_a_logistic_regression_on_the_chosen_dimensions():
    x, labels = _two_dim_attribute(1)
    probe = fit_probes(x, labels, method="k_sparse", k=2, test_fraction=0.0).probes["a"]
    from sklearn.linear_model import LogisticRegression

    kept = x[:, [3, 11]]
    z = (kept - x.mean(0)[[3, 11]]) / x.std(0)[[3, 11]]
    ref = LogisticRegression(max_iter=1000, class_weight="balanced").fit(z, labels["a"])
    np.testing.assert_allclose(probe.decision_function(x), ref.decision_function(z), atol=1e-6)
    # the direction is the weights in d dimensions, unit variance on the training rows
    unit = probe.weight / np.linalg.norm(probe.weight)
    np.testing.assert_allclose(probe.direction.vector.numpy() / probe.direction.sigma, unit,
                               atol=1e-5)


def test_k_sparse_chooses_on_the_fitting_rows_only():
    """Held-out rows where another dimension separates perfectly change nothing."""
    x, labels = _two_dim_attribute(2)
    fit_x, fit_y = x[:2000], labels.iloc[:2000]
    rng = np.random.default_rng(0)
    leaky = rng.normal(size=(500, x.shape[1]))
    leaky_labels = pd.DataFrame({"a": rng.random(500) > 0.5})
    leaky[:, 0] = np.where(leaky_labels["a"], 50.0, -50.0)  # dimension 0 gives it away there
    plain = fit_probes(fit_x, fit_y, method="k_sparse", k=2, test_activations=x[2000:],
                       test_labels=labels.iloc[2000:])
    leaked = fit_probes(fit_x, fit_y, method="k_sparse", k=2, test_activations=leaky,
                        test_labels=leaky_labels)
    np.testing.assert_array_equal(plain.probes["a"].weight, leaked.probes["a"].weight)
    assert leaked.settings["neurons"] == {"a": [3, 11]}


def test_pca_picks_the_component_of_the_planted_direction():
    x, labels, u, nuisance = _planted_component()
    probes = fit_probes(x, labels, method="pca", n_components=5, seed=0)
    chosen = probes.settings["components"]["b"]
    assert chosen["component"] == 1  # not the larger-variance nuisance axis
    assert chosen["sign"] in (1, -1) and chosen["correlation"] > 0.7
    weight = probes.probes["b"].weight
    assert np.linalg.norm(weight) == pytest.approx(1.0)
    assert weight @ u > 0.99  # aligned with the planted direction, sign included
    assert abs(weight @ nuisance) < 0.05
    assert probes.metrics.iloc[0]["test_roc_auc"] > 0.97
    # the opposite attribute takes the same component with the other sign
    flipped = fit_probes(x, pd.DataFrame({"not_b": ~labels["b"]}), method="pca",
                         n_components=5, seed=0)
    assert flipped.settings["components"]["not_b"]["component"] == 1
    assert flipped.settings["components"]["not_b"]["sign"] == -chosen["sign"]
    assert flipped.probes["not_b"].weight @ u < -0.99
    # with the top component only there is nothing to choose: it is the nuisance, no signal
    top_only = fit_probes(x, labels, method="pca", n_components=1, seed=0)
    assert abs(top_only.probes["b"].weight @ nuisance) > 0.99
    assert top_only.metrics.iloc[0]["test_roc_auc"] < 0.6
    # deterministic given the seed; the default component count is min(64, d)
    again = fit_probes(x, labels, method="pca", n_components=5, seed=0)
    np.testing.assert_array_equal(again.probes["b"].weight, weight)
    assert fit_probes(x, labels, method="pca").settings["n_components"] == x.shape[1]


def test_pca_components_come_from_the_fitting_rows_only():
    x, labels, u, _ = _planted_component(1)
    rng = np.random.default_rng(1)
    other = rng.normal(size=(800, x.shape[1])) * 30.0  # held-out rows of another shape
    other_labels = pd.DataFrame({"b": rng.random(800) > 0.5})
    plain = fit_probes(x, labels, method="pca", n_components=4, test_fraction=0.0)
    held = fit_probes(x, labels, method="pca", n_components=4, test_activations=other,
                      test_labels=other_labels)
    np.testing.assert_array_equal(plain.probes["b"].weight, held.probes["b"].weight)
    assert plain.probes["b"].weight @ u > 0.99


def test_new_methods_round_trip_through_save_and_load(tmp_path):
    x, labels = _two_dim_attribute(3)
    for method, options in (("k_sparse", {"k": 3}), ("pca", {"n_components": 6})):
        probes = fit_probes(x, labels, method=method, hook_name="h", **options)
        loaded = ProbeSet.load(probes.save(tmp_path / f"{method}.safetensors"))
        assert loaded.settings == probes.settings
        np.testing.assert_allclose(loaded.probes["a"].weight, probes.probes["a"].weight,
                                   atol=1e-6)
        assert torch.allclose(loaded.direction("a").vector, probes.direction("a").vector)


def test_bad_k_and_component_counts_are_named():
    x, labels = _two_dim_attribute()
    with pytest.raises(ValueError, match=r"k=21 is larger than the activation width d=20: "
                                         r"pass k <= 20"):
        fit_probes(x, labels, method="k_sparse", k=21)
    with pytest.raises(ValueError, match=r"k=0 .*at least 1"):
        fit_probes(x, labels, method="k_sparse", k=0)
    with pytest.raises(ValueError, match="whole number"):
        fit_probes(x, labels, method="k_sparse", k=2.5)
    with pytest.raises(ValueError, match=r"n_components=30 is larger than the activation "
                                         r"width d=20: pass n_components <= 20"):
        fit_probes(x, labels, method="pca", n_components=30)
    with pytest.raises(ValueError, match="only applies to method='k_sparse'"):
        fit_probes(x, labels, method="logistic", k=2)
    with pytest.raises(ValueError, match="only applies to method='pca'"):
        fit_probes(x, labels, method="k_sparse", n_components=2)
    with pytest.raises(ValueError, match=r"unknown probe method 'sparse'.*k_sparse, pca"):
        fit_probes(x, labels, method="sparse")
