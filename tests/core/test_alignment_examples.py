"""mechrec.alignment.examples: top activating rows, context, p_top-k."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from mechrec.alignment import (
    DegenerateInputWarning,
    LazyActivations,
    p_top_k,
    p_top_k_table,
    token_attributes,
    top_activating_rows,
    top_examples,
)


@pytest.fixture(scope="module")
def acts() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.exponential(size=(1000, 5)) * (rng.random((1000, 5)) < 0.2)
    x[:, 3] = np.round(x[:, 3])  # many ties
    x[:, 4] = 0.0  # dead
    return x


def expected_top(col: np.ndarray, k: int) -> np.ndarray:
    return np.lexsort((np.arange(col.size), -col))[:k]


def test_top_rows_match_a_full_sort_with_ties_by_row(acts: np.ndarray) -> None:
    top = top_activating_rows(acts, [0, 3, 4], k=25)
    assert list(top.columns) == ["feature", "rank", "row", "activation"]
    for f in (0, 3, 4):
        got = top[top.feature == f]
        np.testing.assert_array_equal(got.row, expected_top(acts[:, f], 25))
        np.testing.assert_array_equal(got.activation, acts[got.row, f])
        assert got["rank"].tolist() == list(range(1, 26))
    chunked = top_activating_rows(LazyActivations(acts, lambda c: c, 5, chunk_rows=37), [3], 25)
    sparse = top_activating_rows(sp.csr_matrix(acts), 3, 25)
    for other in (chunked, sparse):
        np.testing.assert_array_equal(other.row, top[top.feature == 3].row)
    assert len(top_activating_rows(acts[:10], 0, k=50)) == 10
    with pytest.raises(ValueError, match="out of range"):
        top_activating_rows(acts, 5)


def test_top_examples_attach_row_info_and_context(acts: np.ndarray) -> None:
    n = acts.shape[0]
    sequence = np.arange(n) // 10
    position = np.arange(n) % 10
    seen = {}

    def preceding(rows: np.ndarray) -> dict[str, list[str]]:
        seen["rows"] = rows
        return {"history": [f"seq{sequence[r]}:{position[r]}" for r in rows]}

    ex = top_examples(
        acts,
        0,
        k=5,
        row_info={"sequence": sequence, "position": position},
        context=preceding,
    )
    assert list(ex.columns) == ["rank", "row", "activation", "sequence", "position", "history"]
    rows = expected_top(acts[:, 0], 5)
    np.testing.assert_array_equal(ex.row, rows)
    np.testing.assert_array_equal(seen["rows"], rows)
    np.testing.assert_array_equal(ex.sequence, sequence[rows])
    assert ex.history[0] == f"seq{sequence[rows[0]]}:{position[rows[0]]}"

    info = pd.DataFrame({"token": np.arange(n) + 100})
    framed = top_examples(acts, 0, k=3, row_info=info, context=lambda r: [len(r)] * len(r))
    np.testing.assert_array_equal(framed.token, rows[:3] + 100)
    assert framed.context.tolist() == [3, 3, 3]

    # a feature active on fewer rows than k: only active rows, unless min_activation=None
    n_active = int((acts[:, 1] > 0).sum())
    assert len(top_examples(acts, 1, k=n_active + 20)) == n_active
    assert len(top_examples(acts, 1, k=n_active + 20, min_activation=None)) == n_active + 20
    assert top_examples(acts, 4).empty

    with pytest.raises(ValueError, match="row_info\\['sequence'\\] has shape \\(3,\\)"):
        top_examples(acts, 0, row_info={"sequence": np.arange(3)})
    with pytest.raises(ValueError, match="context returned 1 entries for 5 rows"):
        top_examples(acts, 0, k=5, context=lambda r: ["x"])


def test_p_top_k_is_the_share_of_top_mass(acts: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    pred = rng.random(acts.shape[0]) < 0.4
    rows = expected_top(acts[:, 0], 100)
    mass = acts[rows, 0]
    expected = mass[pred[rows]].sum() / mass.sum()
    assert p_top_k(acts, 0, pred, k=100) == pytest.approx(expected)
    assert p_top_k(acts, 0, lambda r: pred[r], k=100) == pytest.approx(expected)
    assert p_top_k(acts, 0, np.ones(acts.shape[0], bool)) == pytest.approx(1.0)
    assert p_top_k(acts, 0, np.zeros(acts.shape[0], bool)) == 0.0

    table = p_top_k_table(acts, [0, 2], {"pred": pred, "all": np.ones(len(pred), bool)}, k=100)
    assert table.index.tolist() == [0, 2] and table.columns.tolist() == ["pred", "all"]
    assert table.loc[0, "pred"] == pytest.approx(expected)
    frame = p_top_k_table(acts, [0], pd.DataFrame({"a": pred, "b": ~pred}), k=100)
    assert frame.loc[0, "a"] + frame.loc[0, "b"] == pytest.approx(1.0)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert np.isnan(p_top_k(acts, 4, pred))
    assert sum(issubclass(w.category, DegenerateInputWarning) for w in caught) == 1
    with pytest.raises(ValueError, match="has shape \\(3,\\)"):
        p_top_k(acts, 0, np.ones(3, bool))
    with pytest.raises(ValueError, match="returned shape"):
        p_top_k(acts, 0, lambda r: np.ones(2, bool))


def test_token_attributes_label_rows_by_token() -> None:
    table = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=bool)  # token 0 = padding
    rows = token_attributes(np.array([3, 1, 1, 2]), table, names=["action", "drama"])
    assert rows.columns.tolist() == ["action", "drama"]
    np.testing.assert_array_equal(rows.to_numpy(), table[[3, 1, 1, 2]])
    frame = pd.DataFrame({"g": [1.0, 0.0, 1.0]}, index=[2, 0, 1])
    np.testing.assert_array_equal(token_attributes([0, 2], frame)["g"], [0.0, 1.0])
    with pytest.raises(ValueError, match=r"token 4 is outside the table's token ids 0\.\.3"):
        token_attributes(np.array([4]), table)
    with pytest.raises(ValueError, match=r"tokens \[1\] .* no \(complete\) row"):
        token_attributes([1], pd.DataFrame({"g": [1.0, 1.0]}, index=[0, 2]))
    with pytest.raises(ValueError, match="integer ids"):
        token_attributes(np.array([0.5]), table)
