"""mechrec.alignment.group_means: per-key means of every input kind, against pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from mechrec.alignment import LazyActivations, group_means


def _reference(values: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    frame = pd.DataFrame(values).groupby(keys).mean()
    return frame.index.to_numpy(), frame.to_numpy()


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    values = np.maximum(rng.normal(size=(40_000, 12)), 0).astype(np.float32)  # sparse-ish
    keys = rng.zipf(1.5, size=40_000) % 500  # long-tailed, like item popularity
    return values, keys


@pytest.mark.parametrize("kind", ["numpy", "torch", "sparse", "lazy"])
def test_group_means_match_pandas(data, kind):
    values, keys = data
    inputs = {
        "numpy": values,
        "torch": torch.from_numpy(values),
        "sparse": sp.csr_matrix(values),
        "lazy": LazyActivations(torch.from_numpy(values), lambda chunk: chunk * 1.0, 12,
                                chunk_rows=7000),
    }[kind]
    unique, means = group_means(inputs, torch.from_numpy(keys))
    expected_keys, expected = _reference(values.astype(np.float64), keys)
    np.testing.assert_array_equal(unique, expected_keys)
    np.testing.assert_allclose(means, expected, rtol=1e-6, atol=1e-9)
    assert means.shape == (len(np.unique(keys)), 12)


def test_group_means_rejects_bad_input(data):
    values, keys = data
    with pytest.raises(ValueError, match="keys has 3 entries for 40000 activation rows"):
        group_means(values, keys[:3])
    with pytest.raises(ValueError, match="integer"):
        group_means(values, keys.astype(float))
    with pytest.raises(ValueError, match="no activation rows"):
        group_means(values[:0], keys[:0])
