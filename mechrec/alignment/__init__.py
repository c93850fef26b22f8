"""Attribute alignment: how well features (SAE features or neurons) match known attributes.

- :mod:`~mechrec.alignment.stats`: ``F x A`` matrices of correlation, exact ROC AUC, sensitivity,
  precision and conditional mean (:func:`alignment_stats`), bounded memory for millions of rows.
- :mod:`~mechrec.alignment.ranking`: top features per attribute, monosemanticity, the overall
  interpretability number, selection on one set of rows and scoring on another, side-by-side
  comparisons of feature sets.
- :mod:`~mechrec.alignment.bootstrap`: bootstrap confidence intervals (rows or groups
  resampled) for the scores of a fixed feature selection, paired differences between sources.
- :mod:`~mechrec.alignment.controls`: random-projection control features.
- :mod:`~mechrec.alignment.examples`: top activating rows with context, p_top-k.
- :mod:`~mechrec.alignment.labels`: attributes of activation rows from token-level tables.
- :mod:`~mechrec.alignment.grouping`: activation rows averaged by key (one row per distinct
  token instead of per position).
- :mod:`~mechrec.alignment.sources`: accepted activation inputs, incl. lazily computed features.

Typical use (``train``/``test`` are activation rows of the SAE-training and test users)::

    sae_train = alignment_stats(features_train, genres_train, attribute_names=names)
    sae_test = alignment_stats(features_test, genres_test, attribute_names=names)
    best_feature_table(sae_test, "correlation", select_on=sae_train)   # paper Table 2, honest
    interpretability_summary(
        {"SAE": sae_test, "neurons": neurons_test, "random": control_test},
        select_on={"SAE": sae_train, "neurons": neurons_train, "random": control_train},
    )
"""

from mechrec.alignment._validation import DegenerateInputWarning
from mechrec.alignment.bootstrap import (
    AlignmentBootstrap,
    FewGroupsWarning,
    bootstrap_alignment,
    selected_columns,
)
from mechrec.alignment.controls import RandomProjection, random_projection_control
from mechrec.alignment.examples import (
    Predicate,
    p_top_k,
    p_top_k_table,
    top_activating_rows,
    top_examples,
)
from mechrec.alignment.grouping import group_means
from mechrec.alignment.labels import token_attributes
from mechrec.alignment.ranking import (
    MEAN_ROW,
    best_feature_table,
    best_features,
    compare_interpretability,
    feature_profiles,
    interpretability_score,
    interpretability_summary,
    monosemanticity,
    score_features,
    top_features,
)
from mechrec.alignment.sources import ActivationsLike, LazyActivations
from mechrec.alignment.stats import BINARY_METRICS, METRICS, AlignmentStats, alignment_stats

__all__ = [
    "BINARY_METRICS",
    "MEAN_ROW",
    "METRICS",
    "ActivationsLike",
    "AlignmentBootstrap",
    "AlignmentStats",
    "DegenerateInputWarning",
    "FewGroupsWarning",
    "LazyActivations",
    "Predicate",
    "RandomProjection",
    "alignment_stats",
    "best_feature_table",
    "best_features",
    "bootstrap_alignment",
    "compare_interpretability",
    "feature_profiles",
    "group_means",
    "interpretability_score",
    "interpretability_summary",
    "monosemanticity",
    "p_top_k",
    "p_top_k_table",
    "random_projection_control",
    "score_features",
    "selected_columns",
    "token_attributes",
    "top_activating_rows",
    "top_examples",
    "top_features",
]
