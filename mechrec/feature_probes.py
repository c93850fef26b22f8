"""k-sparse probes on SAE features: a logistic regression on the ``k`` SAE features that best
separate an attribute.

A k-sparse probe on the neurons (:func:`mechrec.probes.fit_probes` with ``method="k_sparse"``,
after Gurnee et al. 2023) asks how much of an attribute ``k`` raw dimensions carry. The same
probe on SAE features asks it of the dictionary: if one feature "is" the genre, ``k = 1``
already matches the best single feature and more features add little; if the genre is spread
over many features, the probe gains with ``k``. Features are ranked by the distance of their
class means in pooled standard deviations (Cohen's d) on the fitting rows only, computed on
the sparse feature matrix without densifying it; the logistic regression sees only the ``k``
chosen columns, standardised.

``fit_feature_probes(features, labels, k=8)`` returns a :class:`FeatureProbeSet`;
``decision_function(features)`` scores other rows (e.g. the score rows of an honest alignment,
where this is the ``sae_k_sparse_probes`` source of :class:`mechrec.alignment.FeatureAlignment`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from mechrec.probes import DEFAULT_K, check_width_count, class_separation

__all__ = ["FeatureProbe", "FeatureProbeSet", "fit_feature_probes"]


@dataclass
class FeatureProbe:
    """A k-sparse probe on SAE features for one attribute.

    Attributes:
        attribute: the attribute's name.
        features: ``(k,)`` indices of the SAE features it reads, ascending.
        weight: ``(k,)`` weights on those features' raw activations.
        bias: intercept: ``logit = features[:, self.features] @ weight + bias``.
    """

    attribute: str
    features: np.ndarray
    weight: np.ndarray
    bias: float

    def decision_function(self, features: sp.spmatrix | np.ndarray) -> np.ndarray:
        """Probe logits for ``(R, d_sae)`` feature activations (sparse or dense)."""
        columns = features[:, self.features]
        columns = columns.toarray() if sp.issparse(columns) else np.asarray(columns)
        return columns.astype(np.float64) @ self.weight + self.bias


@dataclass
class FeatureProbeSet:
    """k-sparse feature probes by attribute, with the fitting settings.

    Attributes:
        probes: fitted probes by attribute (attributes with one class only are absent).
        k: features per probe.
        skipped: attribute -> why it has no probe.
        settings: fitting options, for provenance.
    """

    probes: dict[str, FeatureProbe]
    k: int
    skipped: dict[str, str] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def decision_matrix(self, features: sp.spmatrix | np.ndarray,
                        attributes: Sequence[str]) -> np.ndarray:
        """``(R, A)`` float32 logits of ``attributes``' probes on ``features``."""
        return np.stack([self.probes[a].decision_function(features) for a in attributes],
                        axis=1).astype(np.float32)


def fit_feature_probes(features: sp.spmatrix | np.ndarray, labels: pd.DataFrame, *,
                       k: int | None = None, max_train_rows: int | None = 50_000,
                       seed: int = 0, C: float = 1.0, balanced: bool = True,
                       max_iter: int = 1000) -> FeatureProbeSet:
    """Fit one k-sparse logistic probe per attribute on SAE feature activations.

    Args:
        features: ``(R, d_sae)`` feature activations (a scipy sparse matrix, e.g.
            :func:`mechrec.alignment.encode_sparse`, or dense).
        labels: ``(R, A)`` 0/1 labels, one column per attribute.
        k: features per probe (default ``min(mechrec.probes.DEFAULT_K, d_sae)``).
        max_train_rows: fit on at most this many rows drawn at random (``None``: all).
        seed: seed of that draw.
        C, balanced, max_iter: the logistic regression's inverse regularisation, class
            balancing and iterations (as :func:`mechrec.probes.fit_probes`).

    Raises:
        ValueError: ``k`` outside ``[1, d_sae]``, labels of another length, values other
            than 0/1.
    """
    matrix = sp.csr_matrix(features) if not sp.issparse(features) else features.tocsr()
    n, width = matrix.shape
    k = check_width_count(k, DEFAULT_K, width, "k", "SAE features per probe",
                          width_label="the SAE's d_sae")
    if not isinstance(labels, pd.DataFrame) or len(labels) != n:
        raise ValueError(f"labels must be a DataFrame with one row per feature row ({n}), got "
                         f"{type(labels).__name__} of length {len(labels)}")
    y = labels.to_numpy(dtype=np.float64)
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0/1 or booleans")
    rows = np.arange(n)
    if max_train_rows is not None and n > max_train_rows:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=max_train_rows,
                                                          replace=False))
    fit = matrix[rows]
    probes: dict[str, FeatureProbe] = {}
    skipped: dict[str, str] = {}
    for a, name in enumerate(str(c) for c in labels.columns):
        target = y[rows, a] > 0
        if target.all() or not target.any():
            skipped[name] = f"no {'negative' if target.all() else 'positive'} fitting rows"
            continue
        keep = np.sort(np.argsort(-class_separation(fit, target), kind="stable")[:k])
        dense = fit[:, keep].toarray().astype(np.float64)
        mean, scale = dense.mean(axis=0), dense.std(axis=0)
        scale[scale < 1e-12] = 1.0
        model = LogisticRegression(C=C, max_iter=max_iter,
                                   class_weight="balanced" if balanced else None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            model.fit((dense - mean) / scale, target)
        weight = model.coef_[0] / scale
        bias = float(model.intercept_[0] - np.dot(model.coef_[0], mean / scale))
        probes[name] = FeatureProbe(name, keep, weight, bias)
    settings = {"method": "k_sparse_sae", "k": k, "C": C, "balanced": balanced,
                "max_train_rows": max_train_rows, "seed": seed,
                "features": {a: [int(i) for i in p.features] for a, p in probes.items()}}
    return FeatureProbeSet(probes, k, skipped, settings)
