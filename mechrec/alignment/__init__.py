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
- :mod:`~mechrec.alignment.recipe`: the whole honest recipe on any
  :class:`~mechrec.study.Study`: :func:`align` / :class:`FeatureAlignment` (choose on one row
  set, score on another, SAE vs neurons vs random control vs probes, grouped bootstrap).

The recipe in three lines (``study`` wraps any HookedTransformer, see :mod:`mechrec.study`)::

    run = align(study, sae, select="fit", score="eval")
    run.summary()                                   # best-feature scores per source
    run.difference_table(run.bootstrap(200))        # paired intervals, groups resampled

The primitives underneath (``train``/``test``: activation rows of the select and score sets)::

    sae_train = alignment_stats(features_train, genres_train, attribute_names=names)
    sae_test = alignment_stats(features_test, genres_test, attribute_names=names)
    best_feature_table(sae_test, "correlation", select_on=sae_train)   # paper Table 2, honest
    interpretability_summary(
        {"SAE": sae_test, "neurons": neurons_test, "random": control_test},
        select_on={"SAE": sae_train, "neurons": neurons_train, "random": control_train},
    )
"""

from mechrec._lazy import lazy_exports

#: Public name -> the submodule defining it; each is imported on first use, so importing
#: this package (or one light submodule of it) does not load torch.
_EXPORTS: dict[str, str] = {
    "DegenerateInputWarning": "_validation",
    "AlignmentBootstrap": "bootstrap",
    "FewGroupsWarning": "bootstrap",
    "bootstrap_alignment": "bootstrap",
    "selected_columns": "bootstrap",
    "RandomProjection": "controls",
    "random_projection_control": "controls",
    "Predicate": "examples",
    "p_top_k": "examples",
    "p_top_k_table": "examples",
    "top_activating_rows": "examples",
    "top_examples": "examples",
    "group_means": "grouping",
    "token_attributes": "labels",
    "MEAN_ROW": "ranking",
    "best_feature_table": "ranking",
    "best_features": "ranking",
    "compare_interpretability": "ranking",
    "feature_profiles": "ranking",
    "interpretability_score": "ranking",
    "interpretability_summary": "ranking",
    "monosemanticity": "ranking",
    "score_features": "ranking",
    "top_features": "ranking",
    "ActivationsLike": "sources",
    "LazyActivations": "sources",
    "AlignmentStats": "stats",
    "BINARY_METRICS": "metric_names",
    "METRICS": "metric_names",
    "alignment_stats": "stats",
    "ALL_SOURCES": "recipe",
    "AlignmentRun": "recipe",
    "FeatureAlignment": "recipe",
    "ScoredRows": "recipe",
    "align": "recipe",
    "encode_sparse": "recipe",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
