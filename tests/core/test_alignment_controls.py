"""mechrec.alignment.controls: the random-projection control."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechrec.alignment import (
    LazyActivations,
    RandomProjection,
    alignment_stats,
    interpretability_summary,
    random_projection_control,
)


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(loc=3.0, size=(2000, 8)).astype(np.float32)


def test_directions_are_seeded_unit_vectors(inputs: np.ndarray) -> None:
    a = RandomProjection.fit(inputs, 32, seed=7)
    b = RandomProjection.fit(inputs, 32, seed=7)
    c = RandomProjection.fit(inputs, 32, seed=8)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert not np.allclose(a.weight, c.weight)
    np.testing.assert_allclose(np.linalg.norm(a.weight, axis=0), 1.0)
    np.testing.assert_allclose(a.offset, inputs.astype(np.float64).mean(axis=0), rtol=1e-12)
    assert (a.bias == 0).all()
    assert (a.d_in, a.width) == (8, 32)
    uncentred = RandomProjection.fit(inputs, 4, center=False)
    assert (uncentred.offset == 0).all()


def test_output_is_relu_of_projection(inputs: np.ndarray) -> None:
    proj = RandomProjection.fit(inputs, 16, seed=1, active_fraction=0.1)
    out = proj(inputs[:50])
    expected = np.maximum((inputs[:50] - proj.offset) @ proj.weight + proj.bias, 0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert out.dtype == np.float32
    np.testing.assert_allclose(proj.columns(inputs[:50], 3, 9), out[:, 3:9], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(proj(torch.from_numpy(inputs[:50])), out, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="d_in=8"):
        proj(np.zeros((3, 5)))


def test_active_fraction_sets_firing_rates(inputs: np.ndarray) -> None:
    # A sample holding every row: the rates hold on the data (up to a row of rounding).
    one = RandomProjection.fit(inputs, 64, seed=2, active_fraction=0.05, sample_rows=10_000)
    rates = (one(inputs) > 0).mean(axis=0)
    np.testing.assert_allclose(rates, 0.05, atol=2.0 / len(inputs))
    per = np.linspace(0.0, 1.0, 64)
    each = RandomProjection.fit(inputs, 64, seed=2, active_fraction=per, sample_rows=10_000)
    np.testing.assert_allclose((each(inputs) > 0).mean(axis=0), per, atol=2.0 / len(inputs))
    # A smaller sample only estimates them.
    est = RandomProjection.fit(inputs, 64, seed=3, active_fraction=0.2, sample_rows=500)
    assert abs((est(inputs) > 0).mean() - 0.2) < 0.03
    with pytest.raises(ValueError, match="give one rate or 64 rates"):
        RandomProjection.fit(inputs, 64, active_fraction=[0.1, 0.2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        RandomProjection.fit(inputs, 4, active_fraction=1.5)
    with pytest.raises(ValueError, match="width must be a positive integer"):
        RandomProjection.fit(inputs, 0)


def test_control_feeds_alignment_like_any_activations(inputs: np.ndarray) -> None:
    y = inputs[:, :2] > 3.0  # attributes that a direction along the first axes would find
    control = random_projection_control(
        torch.from_numpy(inputs), 48, seed=4, active_fraction=0.1, chunk_rows=300
    )
    assert isinstance(control, LazyActivations)
    assert control.shape == (2000, 48)
    lazy_stats = alignment_stats(control, y, max_memory=20_000)
    dense_stats = alignment_stats(control.materialize(), y)
    # The lazy path computes feature blocks with narrower matmuls than the dense one, so
    # float32 rounding differs; a value sitting on the ReLU boundary may flip between 0 and a
    # tiny positive, moving that feature's metrics by about one row's worth (1/2000). How many
    # values sit on the boundary depends on the BLAS thread count (4 of 96 at one thread).
    for m in lazy_stats.metrics:
        lazy, dense = lazy_stats.values[m], dense_stats.values[m]
        np.testing.assert_array_equal(np.isnan(lazy), np.isnan(dense))
        diff = np.abs(np.nan_to_num(lazy) - np.nan_to_num(dense))
        assert (diff > 1e-5).sum() <= 6 and diff.max() < 0.01, (m, diff.max())
    np.testing.assert_allclose(lazy_stats.feature_active_rate, 0.1, atol=0.05)
    neurons = alignment_stats(inputs, y)
    summary = interpretability_summary({"neurons": neurons, "random": lazy_stats})
    # The neurons contain the attribute's own axis, so they beat random directions.
    assert summary.loc["neurons", "correlation"] > summary.loc["random", "correlation"]
