"""Linear probes: one direction per attribute at a hook (a logistic regression, a difference of
means, a k-sparse logistic regression or the best principal component).

A probe is trained on the same inputs as an SAE (activations, one row per real position) with a
binary attribute of the row's item as target (paper section 8.2.3). For every attribute we
report accuracy, balanced accuracy and ROC AUC on the training rows and on held-out rows, and
give a steering :class:`~mechrec.steering.Direction`:

- the probe is fit on standardised activations (for conditioning); its weights are mapped back
  to raw activation space, ``w_raw = w_std / scale``, so ``logit(x) = x @ w_raw + b_raw``;
- the steering direction is ``w_raw`` (the raw-space change that raises the probe's logit
  fastest), scaled to unit variance of the training activations along it
  (:func:`~mechrec.steering.unit_variance_direction`): adding ``k * direction`` moves an
  activation ``k`` standard deviations towards the attribute.

Four methods find the direction (:data:`PROBE_METHODS`), all from the training rows only:

- ``logistic``: a class-balanced logistic regression on every dimension;
- ``mean_difference``: the difference of the class means (the steering-vectors convention);
- ``k_sparse``: a k-sparse probe (Gurnee et al. 2023, "Finding Neurons in a Haystack"): the
  ``k`` raw dimensions whose class means differ most, in pooled standard deviations, then a
  logistic regression on those ``k`` dimensions only (every other weight is exactly zero);
- ``pca``: the top ``n_components`` principal components of the training activations; each
  attribute takes the component, with the sign, whose projection correlates best with it.

Attributes without both classes among the training rows (e.g. a genre no item has) are skipped
with a warning and reported with ``status`` explaining why.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from safetensors import safe_open
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import GroupShuffleSplit, ShuffleSplit

from mechrec._io import save_safetensors_atomically
from mechrec.steering.directions import Direction, unit_variance_direction

_FORMAT = "mechrec.probes/1"
#: How a probe's direction is found: a logistic regression, the difference of class means, a
#: logistic regression on the k best-separating dimensions, or the best principal component.
PROBE_METHODS: tuple[str, ...] = ("logistic", "mean_difference", "k_sparse", "pca")
#: Dimensions a ``k_sparse`` probe keeps when ``k`` is not given (fewer if the width is smaller).
DEFAULT_K = 8
#: Principal components a ``pca`` probe chooses from when not given (fewer if the width is
#: smaller).
DEFAULT_N_COMPONENTS = 64
METRIC_COLUMNS = (
    "attribute",
    "status",
    "n_train",
    "n_train_positive",
    "n_test",
    "n_test_positive",
    "train_accuracy",
    "test_accuracy",
    "train_balanced_accuracy",
    "test_balanced_accuracy",
    "train_roc_auc",
    "test_roc_auc",
)


@dataclass
class Probe:
    """A fitted probe for one attribute, in raw activation space.

    Attributes:
        attribute: the attribute's name.
        weight: ``(d,)`` raw-space weights: ``logit(x) = x @ weight + bias``.
        bias: raw-space intercept.
        direction: unit-variance steering direction (see the module docstring).
    """

    attribute: str
    weight: np.ndarray
    bias: float
    direction: Direction

    def decision_function(self, activations: np.ndarray | torch.Tensor) -> np.ndarray:
        """Probe logits for raw activations ``(R, d)``."""
        x = _as_matrix(activations, "activations")
        return (x @ self.weight.astype(x.dtype)).astype(np.float64) + self.bias

    def predict_proba(self, activations: np.ndarray | torch.Tensor) -> np.ndarray:
        """Probability of the attribute for raw activations ``(R, d)``."""
        return 1.0 / (1.0 + np.exp(-self.decision_function(activations)))


@dataclass
class ProbeSet:
    """Probes for several attributes at one hook, with their evaluation table.

    Attributes:
        hook_name: hook the activations came from (``None`` if unknown).
        probes: fitted probes by attribute name (skipped attributes are absent).
        metrics: one row per requested attribute, columns :data:`METRIC_COLUMNS`.
        settings: the fitting options (class balancing, C, split), for provenance.
    """

    hook_name: str | None
    probes: dict[str, Probe]
    metrics: pd.DataFrame
    settings: dict = field(default_factory=dict)

    def direction(self, attribute: str) -> Direction:
        """The unit-variance steering direction of ``attribute``'s probe."""
        if attribute not in self.probes:
            skipped = self.metrics.set_index("attribute")["status"].to_dict()
            why = f" ({skipped[attribute]})" if attribute in skipped else ""
            raise KeyError(
                f"no probe for {attribute!r}{why}; fitted attributes: {sorted(self.probes)}"
            )
        return self.probes[attribute].direction

    def directions(self) -> dict[str, Direction]:
        """All steering directions by attribute name."""
        return {name: probe.direction for name, probe in self.probes.items()}

    def save(self, path: str | os.PathLike) -> Path:
        """Write one safetensors file (weights, directions; JSON metadata), atomically."""
        path = Path(path)
        names = list(self.probes)
        d = next(iter(self.probes.values())).weight.shape[0] if names else 0
        tensors = {
            "weight": torch.as_tensor(
                np.stack([self.probes[n].weight for n in names]) if names else np.zeros((0, d))
            ).float(),
            "bias": torch.tensor([self.probes[n].bias for n in names], dtype=torch.float64),
            "direction": torch.stack([self.probes[n].direction.vector.float() for n in names])
            if names
            else torch.zeros(0, d),
        }
        meta = {
            "format": _FORMAT,
            "hook_name": json.dumps(self.hook_name),
            "attributes": json.dumps(names),
            "sigma": json.dumps([self.probes[n].direction.sigma for n in names]),
            "metrics": self.metrics.to_json(orient="records"),
            "settings": json.dumps(self.settings),
        }
        return save_safetensors_atomically(path, tensors, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ProbeSet:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no probe file at {path}; write one with ProbeSet.save(path)")
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            if meta.get("format") != _FORMAT:
                raise ValueError(
                    f"{path} is not a mechrec probe file (format {meta.get('format')!r}, "
                    f"expected {_FORMAT!r})"
                )
            weight = handle.get_tensor("weight").double().numpy()
            bias = handle.get_tensor("bias").numpy()
            vectors = handle.get_tensor("direction")
        hook_name = json.loads(meta["hook_name"])
        names = json.loads(meta["attributes"])
        sigmas = json.loads(meta["sigma"])
        probes = {
            name: Probe(
                attribute=name,
                weight=weight[i],
                bias=float(bias[i]),
                direction=Direction(
                    vectors[i], name=f"probe:{name}", hook_name=hook_name, sigma=sigmas[i]
                ),
            )
            for i, name in enumerate(names)
        }
        metrics = pd.DataFrame(json.loads(meta["metrics"]), columns=list(METRIC_COLUMNS))
        return cls(hook_name, probes, metrics, json.loads(meta["settings"]))


def fit_probes(
    activations: np.ndarray | torch.Tensor | object,
    labels: np.ndarray | torch.Tensor | pd.DataFrame,
    attribute_names: Sequence[str] | None = None,
    *,
    test_activations: np.ndarray | torch.Tensor | object | None = None,
    test_labels: np.ndarray | torch.Tensor | pd.DataFrame | None = None,
    test_fraction: float = 0.2,
    groups: np.ndarray | torch.Tensor | None = None,
    balanced: bool = True,
    C: float = 1.0,
    max_iter: int = 1000,
    max_train_rows: int | None = None,
    seed: int = 0,
    hook_name: str | None = None,
    method: str = "logistic",
    k: int | None = None,
    n_components: int | None = None,
) -> ProbeSet:
    """Fit one probe per attribute (logistic regression, difference of means, k-sparse
    logistic regression or best principal component) and evaluate it.

    Args:
        activations: ``(R, d)`` raw activations, or an ``ActivationSet`` (its rows, its
            ``sequence_index`` as ``groups`` and its ``hook_name`` are used).
        labels: ``(R, A)`` binary labels (bool/0/1), or a DataFrame whose columns are the
            attributes.
        attribute_names: names of the ``A`` label columns (defaults to the DataFrame's columns
            or ``attr0..``).
        test_activations, test_labels: held-out rows; if omitted, ``test_fraction`` of the rows
            is held out (whole groups at a time when ``groups`` is given, so positions of one
            sequence never land on both sides). ``test_fraction=0`` skips testing.
        groups: ``(R,)`` group ids for the split (e.g. sequence index).
        balanced: weight classes inversely to their frequency (``class_weight="balanced"``).
        C: inverse L2 regularisation strength of the logistic regression.
        max_iter: lbfgs iterations.
        max_train_rows: fit on at most this many random training rows (metrics and the
            unit-variance scale still use all training rows).
        seed: seed for the split and the subsample.
        hook_name: recorded on the probes' directions (steering refuses other hooks).
        method: ``"logistic"`` (a logistic regression) or ``"mean_difference"`` (the
            steering-vectors convention: the direction from the mean of the rows without the
            attribute to the mean of the rows with it, thresholded half-way between them;
            ``balanced``, ``C``, ``max_iter`` and ``max_train_rows`` do not apply),
            ``"k_sparse"`` (a k-sparse probe, Gurnee et al. 2023: the ``k`` dimensions with the
            largest difference of class means in pooled standard deviations of the fitting
            rows, then a logistic regression on those ``k`` only; ``balanced``, ``C``,
            ``max_iter`` apply; the direction is its weights scattered back into ``d``
            dimensions, every other one exactly zero) or ``"pca"`` (the principal components
            of the fitting rows; per attribute the component, sign included, whose projection
            correlates most with the attribute on those rows, thresholded half-way between the
            class means of the projection; ``balanced``, ``C``, ``max_iter`` do not apply).
            ``max_train_rows`` limits the fitting rows of ``logistic``, ``k_sparse`` and
            ``pca``. The chosen dimensions and components are listed in ``settings``
            (``"neurons"``, ``"components"``).
        k: with ``method="k_sparse"``, the number of dimensions each probe keeps
            (default ``min(DEFAULT_K, d)``); at most the activation width ``d``.
        n_components: with ``method="pca"``, the number of top principal components to choose
            from (default ``min(DEFAULT_N_COMPONENTS, d)``); at most ``d``.

    Raises:
        ValueError: an unknown method, ``k`` or ``n_components`` below 1 or above ``d`` (or
            given for another method), malformed activations or labels, a bad split.
    """
    if method not in PROBE_METHODS:
        raise ValueError(f"unknown probe method {method!r}; choose one of "
                         f"{', '.join(PROBE_METHODS)}")
    if k is not None and method != "k_sparse":
        raise ValueError(f"k={k!r} only applies to method='k_sparse' (got method={method!r}); "
                         "drop k or choose method='k_sparse'")
    if n_components is not None and method != "pca":
        raise ValueError(f"n_components={n_components!r} only applies to method='pca' (got "
                         f"method={method!r}); drop n_components or choose method='pca'")
    x, groups, hook_name = _unpack_activations(activations, groups, hook_name)
    width = x.shape[1]
    if method == "k_sparse":
        k = check_width_count(k, DEFAULT_K, width, "k", "k-sparse probe dimensions")
    if method == "pca":
        n_components = check_width_count(n_components, DEFAULT_N_COMPONENTS, width,
                                         "n_components", "principal components")
    y, names = _label_matrix(labels, attribute_names, len(x))
    if test_activations is not None or test_labels is not None:
        if test_activations is None or test_labels is None:
            raise ValueError("pass both test_activations and test_labels, or neither")
        x_test, _, _ = _unpack_activations(test_activations, None, None)
        y_test, _ = _label_matrix(test_labels, names, len(x_test))
        if x_test.shape[1] != x.shape[1]:
            raise ValueError(
                f"test activations have width {x_test.shape[1]} but training ones "
                f"{x.shape[1]}; both must come from the same hook"
            )
        x_train, y_train = x, y
    else:
        train_idx, test_idx = _split(len(x), test_fraction, groups, seed)
        x_train, y_train, x_test, y_test = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
    mean = x_train.mean(axis=0, dtype=np.float64)
    scale = x_train.std(axis=0, dtype=np.float64)
    scale[scale < 1e-12] = 1.0
    rng = np.random.default_rng(seed)
    fit_rows = np.arange(len(x_train))
    if max_train_rows is not None and len(fit_rows) > max_train_rows:
        fit_rows = np.sort(rng.choice(fit_rows, size=max_train_rows, replace=False))
    x_fit = x_train[fit_rows]
    z_fit = (x_fit - mean) / scale
    train_tensor = torch.from_numpy(x_train)
    if method == "pca":
        pca_mean, components, explained = _principal_components(x_fit, n_components)
        projections = (x_fit - pca_mean) @ components.T  # (fit rows, n_components)
    chosen: dict[str, object] = {}

    probes: dict[str, Probe] = {}
    rows = []
    for a, name in enumerate(names):
        row = {"attribute": name, "n_train": len(x_train), "n_test": len(x_test)}
        row["n_train_positive"] = int(y_train[:, a].sum())
        row["n_test_positive"] = int(y_test[:, a].sum())
        target = y_train[fit_rows, a]
        if target.min() == target.max():
            kind = "positive" if target.max() == 0 else "negative"
            row["status"] = f"skipped: no {kind} training examples"
            warnings.warn(f"probe for {name!r} skipped: no {kind} training examples", stacklevel=2)
            rows.append(row)
            continue
        if method == "mean_difference":
            positive = y_train[:, a] > 0
            high = x_train[positive].mean(axis=0, dtype=np.float64)
            low = x_train[~positive].mean(axis=0, dtype=np.float64)
            weight = high - low
            bias = float(-np.dot(weight, (high + low) / 2.0))
        elif method == "k_sparse":
            keep = _separating_dimensions(x_fit, target, k)
            model = LogisticRegression(
                C=C, max_iter=max_iter, class_weight="balanced" if balanced else None
            )
            model.fit(z_fit[:, keep], target)
            weight = np.zeros(width, dtype=np.float64)
            weight[keep] = model.coef_[0] / scale[keep]
            bias = float(model.intercept_[0] - np.dot(model.coef_[0], mean[keep] / scale[keep]))
            chosen[name] = [int(i) for i in keep]
        elif method == "pca":
            index, sign, r = _best_component(projections, target)
            weight = sign * components[index]
            positive = target > 0
            midpoint = (x_fit[positive].mean(axis=0, dtype=np.float64)
                        + x_fit[~positive].mean(axis=0, dtype=np.float64)) / 2.0
            bias = float(-np.dot(weight, midpoint))
            chosen[name] = {"component": index, "sign": sign, "correlation": r,
                            "explained_variance_ratio": float(explained[index])}
        else:
            model = LogisticRegression(
                C=C, max_iter=max_iter, class_weight="balanced" if balanced else None
            )
            model.fit(z_fit, target)
            weight = model.coef_[0] / scale
            bias = float(model.intercept_[0] - np.dot(model.coef_[0], mean / scale))
        direction = unit_variance_direction(
            torch.from_numpy(weight).float(),
            train_tensor,
            name=f"probe:{name}",
            hook_name=hook_name,
        )
        probe = Probe(name, weight, bias, direction)
        probes[name] = probe
        row["status"] = "ok"
        row.update(_scores("train", probe.decision_function(x_train), y_train[:, a]))
        row.update(_scores("test", probe.decision_function(x_test), y_test[:, a]))
        rows.append(row)
    metrics = pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
    settings = {
        "method": method,
        "balanced": balanced,
        "C": C,
        "max_iter": max_iter,
        "max_train_rows": max_train_rows,
        "seed": seed,
        "test_fraction": None if test_labels is not None else test_fraction,
        "grouped_split": groups is not None and test_labels is None,
    }
    if method == "k_sparse":
        settings["k"] = k
        settings["neurons"] = chosen
    if method == "pca":
        settings["n_components"] = n_components
        settings["components"] = chosen
    return ProbeSet(hook_name, probes, metrics, settings)


def check_width_count(value: int | None, default: int, width: int, name: str, what: str,
                      width_label: str = "the activation width d") -> int:
    """``value`` (or ``min(default, width)``) checked to be a whole number in ``[1, width]``:
    the ``k`` of a k-sparse probe or the component count of a PCA probe on ``width``-wide
    activations; ``name`` and ``what`` word the error.

    Raises:
        ValueError: not a whole number, below 1, or above ``width`` (naming both and the fix).
    """
    if value is None:
        return min(default, width)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be a whole number of {what}, got {value!r}")
    if value < 1:
        raise ValueError(f"{name}={value} {what}: need at least 1")
    if value > width:
        raise ValueError(
            f"{name}={value} is larger than {width_label}={width}: pass "
            f"{name} <= {width} (or leave it out for min({default}, {width}))"
        )
    return int(value)


def class_separation(x: np.ndarray | sp.spmatrix, positive: np.ndarray) -> np.ndarray:
    """Per column of ``x`` (dense or scipy sparse), the distance between the class means in
    pooled standard deviations (Cohen's d), in float64.

    A column constant within each class but different between them separates perfectly
    (``inf``); a constant column scores 0.
    """
    positive = np.asarray(positive, dtype=bool)
    moments = []
    for rows in (positive, ~positive):
        part = x[rows]
        count = int(rows.sum())
        if sp.issparse(part):
            total = np.asarray(part.sum(axis=0), dtype=np.float64).ravel()
            squares = np.asarray(part.multiply(part).sum(axis=0), dtype=np.float64).ravel()
        else:
            part = np.asarray(part, dtype=np.float64)
            total, squares = part.sum(axis=0), np.square(part).sum(axis=0)
        mean = total / max(count, 1)
        # sum of squared deviations, never negative from rounding
        deviations = np.maximum(squares - count * mean * mean, 0.0)
        moments.append((count, mean, deviations))
    (n_a, mean_a, dev_a), (n_b, mean_b, dev_b) = moments
    difference = np.abs(mean_a - mean_b)
    pooled = np.sqrt((dev_a + dev_b) / max(n_a + n_b - 2, 1))
    tiny = 1e-12
    return np.where(pooled > tiny, difference / np.maximum(pooled, tiny),
                    np.where(difference > tiny, np.inf, 0.0))


def _separating_dimensions(x: np.ndarray, target: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` columns of ``x`` whose class means differ most in pooled standard deviations
    (:func:`class_separation`), sorted by index; ties go to the lower index."""
    order = np.argsort(-class_separation(x, target > 0), kind="stable")
    return np.sort(order[:k])


def _principal_components(x: np.ndarray, n_components: int
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, top ``n_components`` principal axes ``(n, d)`` and their explained variance ratios
    of the rows ``x``, from the eigendecomposition of their covariance (deterministic).

    Each axis' sign is fixed so that its largest-magnitude entry is positive (sklearn's
    ``svd_flip`` convention); the probe chooses its own sign per attribute anyway.
    """
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=0)
    centred = x64 - mean
    covariance = centred.T @ centred / max(len(x64) - 1, 1)
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(-values, kind="stable")[:n_components]
    axes = vectors[:, order].T.copy()
    biggest = np.argmax(np.abs(axes), axis=1)
    axes *= np.sign(axes[np.arange(len(axes)), biggest])[:, None]
    total = float(values.clip(min=0).sum())
    ratio = values[order].clip(min=0) / total if total > 0 else np.zeros(len(order))
    return mean, axes, ratio


def _best_component(projections: np.ndarray, target: np.ndarray) -> tuple[int, int, float]:
    """``(index, sign, correlation)`` of the projection column most correlated (in absolute
    value) with the 0/1 ``target``; constant columns never win unless all are constant."""
    y = target.astype(np.float64) - target.mean()
    p = projections - projections.mean(axis=0)
    norms = np.sqrt((p**2).sum(axis=0) * (y**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(norms > 1e-12, (p.T @ y) / norms, 0.0)
    index = int(np.argmax(np.abs(r)))
    sign = 1 if r[index] >= 0 else -1
    return index, sign, float(abs(r[index]))


def _scores(prefix: str, logits: np.ndarray, target: np.ndarray) -> dict[str, float]:
    if len(target) == 0:
        return {}
    pred = (logits > 0).astype(np.int64)
    out = {f"{prefix}_accuracy": float(accuracy_score(target, pred))}
    both = target.min() != target.max()
    out[f"{prefix}_balanced_accuracy"] = (
        float(balanced_accuracy_score(target, pred)) if both else float("nan")
    )
    out[f"{prefix}_roc_auc"] = float(roc_auc_score(target, logits)) if both else float("nan")
    return out


def _split(
    n: int, test_fraction: float, groups: np.ndarray | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if test_fraction == 0.0:
        return np.arange(n), np.arange(0)
    if groups is not None:
        splitter = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
        train, test = next(splitter.split(np.zeros(n), groups=groups))
    else:
        splitter = ShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
        train, test = next(splitter.split(np.zeros(n)))
    return np.sort(train), np.sort(test)


def _unpack_activations(
    activations: object, groups: object, hook_name: str | None
) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    if hasattr(activations, "activations") and hasattr(activations, "hook_name"):
        source = activations
        activations = source.activations  # type: ignore[attr-defined]
        hook_name = hook_name or source.hook_name  # type: ignore[attr-defined]
        if groups is None and hasattr(source, "sequence_index"):
            groups = source.sequence_index  # type: ignore[attr-defined]
    x = _as_matrix(activations, "activations")
    if groups is not None:
        groups = np.asarray(groups.cpu() if isinstance(groups, torch.Tensor) else groups)
        if groups.shape != (len(x),):
            raise ValueError(f"groups must have shape ({len(x)},), got {groups.shape}")
    return x, groups, hook_name


def _as_matrix(values: object, what: str) -> np.ndarray:
    """A float32/float64 ``(rows, d)`` array (float32 inputs stay float32 to save memory)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        values = (
            values if values.dtype in (torch.float32, torch.float64) else values.double()
        ).numpy()
    arr = np.asarray(values)
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a (rows, d) matrix, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contain NaN or infinite values; drop or fix those rows first")
    return arr


def _label_matrix(
    labels: object, names: Sequence[str] | None, n_rows: int
) -> tuple[np.ndarray, list[str]]:
    if isinstance(labels, pd.DataFrame):
        if names is None:
            names = [str(c) for c in labels.columns]
        labels = labels.to_numpy()
    elif isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n_rows:
        raise ValueError(
            f"labels must be (rows={n_rows}, attributes), got shape {arr.shape}; build one "
            "row per activation row (e.g. attribute_matrix[token])"
        )
    numeric = arr.astype(np.float64)
    if not np.isin(numeric, (0.0, 1.0)).all():
        raise ValueError("labels must be binary (bool, or 0/1); found other values")
    names = list(names) if names is not None else [f"attr{i}" for i in range(arr.shape[1])]
    if len(names) != arr.shape[1]:
        raise ValueError(f"{len(names)} attribute names for {arr.shape[1]} label columns")
    if len(set(names)) != len(names):
        raise ValueError(f"attribute names must be unique, got {names}")
    return numeric.astype(np.int64), names
