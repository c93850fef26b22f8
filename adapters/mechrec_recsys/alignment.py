"""Attribute alignment of a trained GPTRec run and an SAE: the paper's section 4.2 and 7.

The recipe itself is the core's (:func:`mechrec.alignment.align` on the run, which is a
:class:`mechrec.study.Study`); this module adds what is about items:

- :func:`align`: the paper's defaults: choose features on the SAE-training users
  (``sae_train``), score them on the test users (``test``), label rows with genres, release
  decades and custom item predicates (:mod:`mechrec_recsys.items`), bootstrap over users, and
  ``unit="items"`` (each distinct item one data point);
- :func:`feature_examples`: the top activating positions of a feature with the titles of the
  items before them; :func:`feature_p_top_k`: p_top-k of features for genres and predicates.

The result is the core's :class:`~mechrec.alignment.AlignmentRun`; its tables (paper Table 2,
Fig. 4 and 2, section 7.1.3) and :meth:`~mechrec.alignment.AlignmentRun.write` are
documented there. Written tables keep the paper's file names (``per_genre.csv``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from mechrec.activations import ActivationSet
from mechrec.alignment import p_top_k_table, token_attributes, top_examples
from mechrec.alignment.recipe import (
    BOOTSTRAP_PAIRS,
    REPORTED_METRICS,
    SELECTIONS,
    SOURCES,
    AlignmentRun,
    ScoredRows,
    encode_sparse,
)
from mechrec.alignment.recipe import (
    align as align_study,
)
from mechrec.saes import NormalizedSAE
from mechrec.steering.validation import check_feature_index
from mechrec.study import RowAttributes
from mechrec_recsys.configs import UNITS, parse_year_range
from mechrec_recsys.experiment import Experiment
from mechrec_recsys.items import (
    GROUPS,
    ItemPredicate,
    item_table,
    title_contains,
    token_attribute_table,
    token_predicate_table,
    year_between,
)
from mechrec_recsys.saes import check_sae_fits

__all__ = [
    "BOOTSTRAP_PAIRS",
    "GROUPS",
    "REPORTED_METRICS",
    "SELECTIONS",
    "SOURCES",
    "TABLE_STEMS",
    "UNITS",
    "AlignmentRun",
    "ItemPredicate",
    "ScoredRows",
    "align",
    "encode_sparse",
    "feature_examples",
    "feature_p_top_k",
    "item_table",
    "parse_year_range",
    "title_contains",
    "token_attribute_table",
    "token_predicate_table",
    "year_between",
]

TABLE_STEMS: dict[str, str] = {"per_attribute": "per_genre"}
"""File names of the run folder's alignment tables that differ from the core's."""


def align(
    experiment: Experiment,
    sae: NormalizedSAE,
    *,
    metric: str = "correlation",
    decades: bool = True,
    names: Sequence[str] | None = None,
    predicates: Mapping[str, ItemPredicate] | None = None,
    seed: int = 0,
    select_part: str = "sae_train",
    score_part: str = "test",
    unit: str = "positions",
    attributes: RowAttributes | None = None,
    sources: Sequence[str] = SOURCES,
) -> AlignmentRun:
    """Alignment of an SAE's features, the raw neurons and a random control with item labels.

    Args:
        experiment: the trained run (its split and model).
        sae: an SAE trained on a hook of that model (``sae.hook_name``).
        metric: metric that chooses the best feature per attribute (one of
            :data:`mechrec.alignment.METRICS`; the paper uses ``correlation``).
        decades: label rows with the item's release decade too.
        names: catalog attributes to use (default: every genre).
        predicates: custom item predicates, e.g. ``{"Star Wars": title_contains("Star Wars")}``.
        seed: seed of the random-projection control.
        select_part: split part whose rows choose the best features (SAE-training users).
        score_part: split part whose rows score them (test users).
        unit: ``"positions"`` (the paper: every position of every sequence is a data point,
            labelled by its item) or ``"items"`` (each distinct item of a part is one data
            point, its activations averaged over the positions where it occurs; the bootstrap
            then resamples items). The random control is fitted on positions either way.
        attributes: labels of the activation rows to use instead of the items' (e.g. a
            synthetic world's truth, :func:`mechrec_recsys.synthetic.planted.planted_attributes`);
            ``names``, ``decades`` and ``predicates`` then go unused. Positions only.
        sources: feature sources to compare (default SAE, neurons, random; add baselines
            from :data:`mechrec.alignment.recipe.ALL_SOURCES`, e.g. ``"probes"``,
            ``"k_sparse_probes"``, ``"sae_k_sparse_probes"``).

    Returns:
        :class:`~mechrec.alignment.AlignmentRun` with statistics of ``SAE``, ``neurons`` and
        ``random`` on both parts; its bootstrap resamples test users.

    Raises:
        ValueError: the SAE does not fit the model, a part is missing, or bad arguments.
    """
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; choose one of {', '.join(UNITS)}")
    if select_part == score_part:
        raise ValueError(f"select_part and score_part are both {select_part!r}: choose the "
                         "best features on other rows than those that score them")
    check_sae_fits(experiment, sae)
    if attributes is not None and unit != "positions":
        raise ValueError(f"{attributes.name} label positions, not items: use unit='positions'")
    if attributes is not None and (names is not None or predicates):
        raise ValueError(f"names and predicates label items; they cannot be combined with "
                         f"{attributes.name}")
    if attributes is None:
        attributes = experiment.attribute_table(names, decades=decades, predicates=predicates)
    run = align_study(experiment, sae, select=select_part, score=score_part, metric=metric,
                      attributes=attributes, seed=seed, sources=sources,
                      unit="tokens" if unit == "items" else "positions")
    run.unit = unit
    run.group_unit = "item" if unit == "items" else "user"
    run.table_stems = dict(TABLE_STEMS)
    return run


# ------------------------------------------------------------------------------ examples
def feature_examples(
    experiment: Experiment,
    sae: NormalizedSAE,
    feature: int,
    *,
    k: int = 10,
    part: str = "sae_train",
    context: int = 5,
) -> pd.DataFrame:
    """The top ``k`` activating positions of one SAE feature, with the items before them.

    Args:
        experiment: the run.
        sae: its SAE.
        feature: feature index.
        k: number of positions.
        part: split part whose rows are searched.
        context: how many preceding items' titles to show.

    Returns:
        DataFrame with ``rank, activation, user, position, item_id, title, year, genres`` and
        ``context`` (the titles of up to ``context`` preceding items, oldest first, joined by
        `` | ``). Only positions with a positive activation are kept.
    """
    feature = check_feature_index(sae, feature)
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    check_sae_fits(experiment, sae)
    acts = experiment.activations(part, sae.hook_name)
    features = encode_sparse(sae, acts.activations)
    items = item_table(experiment)
    seq_index = acts.sequence_index.cpu().numpy()
    position = acts.position.cpu().numpy()
    token = acts.token.cpu().numpy()
    sequences = experiment.part(part).sequences
    users = experiment.part(part).users
    n_ctx = experiment.model.cfg.n_ctx
    titles = items["title"].to_numpy()

    def describe(rows: np.ndarray) -> pd.DataFrame:
        before = []
        for r in rows:
            seq = np.asarray(sequences[seq_index[r]])[-n_ctx:]
            p = int(position[r])
            before.append(" | ".join(titles[seq[max(0, p - context):p]]) if context else "")
        tok = token[rows]
        return pd.DataFrame({
            "user": users[seq_index[rows]],
            "position": position[rows],
            "item_id": items["item_id"].to_numpy()[tok],
            "title": titles[tok],
            "year": items["year"].to_numpy()[tok],
            "genres": items["genres"].to_numpy()[tok],
            "context": before,
        })

    top = top_examples(features, feature, k, context=describe)
    top["year"] = pd.array(top["year"].tolist(), dtype="Int64") if len(top) else pd.array(
        [], dtype="Int64")
    return top.drop(columns="row")


def feature_p_top_k(
    experiment: Experiment,
    sae: NormalizedSAE,
    features: int | Sequence[int],
    *,
    predicates: Mapping[str, ItemPredicate] | None = None,
    decades: bool = True,
    k: int = 100,
    part: str = "sae_train",
    encoded: sp.spmatrix | None = None,
) -> pd.DataFrame:
    """p_top-k (paper section 7.2.2) of SAE features for every genre, decade and predicate.

    The share of a feature's top-``k`` activation mass (on ``part``'s rows) that falls on items
    with the attribute. Returns a DataFrame indexed by feature with one column per attribute.

    ``encoded``: the SAE's features of ``part``'s activations (:func:`encode_sparse`), when the
    caller already has them (several pages of one SAE encode ``part`` once); default: encoded
    here.
    """
    feats = [features] if isinstance(features, (int, np.integer)) else list(features)
    feats = [check_feature_index(sae, f) for f in feats]
    check_sae_fits(experiment, sae)
    acts = experiment.activations(part, sae.hook_name)
    encoded = check_encoded(sae, acts, part, encoded)
    table, _ = token_attribute_table(experiment, decades=decades, predicates=predicates)
    labels = token_attributes(acts.token, table).astype(bool)
    return p_top_k_table(encoded, feats, labels, k)


def check_encoded(sae: NormalizedSAE, acts: ActivationSet, part: str,
                  encoded: sp.spmatrix | None) -> sp.spmatrix:
    """``encoded`` if it has one row per activation of ``acts`` and one column per SAE
    feature; the SAE's features of ``acts`` (:func:`encode_sparse`) when it is ``None``.

    Raises:
        ValueError: ``encoded`` has another shape (features of another part or SAE).
    """
    if encoded is None:
        return encode_sparse(sae, acts.activations)
    expected = (len(acts), int(sae.d_sae))
    if tuple(encoded.shape) != expected:
        raise ValueError(f"the encoded features have shape {tuple(encoded.shape)}, but the "
                         f"{part!r} part has {expected[0]} activations and the SAE "
                         f"{expected[1]} features: encode this part's activations with this "
                         "SAE (encode_sparse)")
    return encoded
