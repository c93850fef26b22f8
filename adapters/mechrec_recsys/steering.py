"""Genre steering on a trained GPTRec: the paper's control experiments (sections 4.3 and 8).

The recipe is the core's (:mod:`mechrec.attribute_steering`: choose features on one row set,
steer and score another, SAE feature / decoder direction / probe direction / random feature);
this module adds what is about items: genre names, the paper's user sets (features chosen on
the SAE-training users, the test users steered), top-K lists with every seen item masked, the
ranking metrics, before/after lists of chosen users and the fast-path check.

What it does
------------
1. **Genres.** Requested genre names are matched to the dataset's genre columns exactly, else
   by a key that ignores case, punctuation, spaces and a possessive ``'s``: ``Children`` finds
   ml-100k/ml-1m's ``Children's``, ``scifi`` finds ``Sci-Fi`` (:func:`resolve_genres`). A
   MovieLens genre that this dataset lacks (``IMAX`` on ml-100k) is skipped with a warning; a
   name that is no MovieLens genre and no column of this dataset is an error.
2. **Features.** For each genre, the SAE feature with the largest correlation with the genre
   on the *SAE-training* users' activations (never on the test users, so that picking the best
   of thousands of features does not flatter the SAE); its correlation on the test users'
   activations is reported beside it (:func:`select_genre_features`).
3. **Sweep** (:func:`run_genre_sweep`, paper 8.2.1-8.2.3). At the last position of every test
   user, for each value of the grid (default ``[-10, 10]`` step 1), one curve per genre and
   method:

   - ``sae_feature`` / ``replace``: encode, set the feature, decode and *replace* the activation
     (the paper's procedure, Fig. 8). Even the value the feature already has is not the
     unsteered model here, because the SAE's reconstruction error is dropped: the table carries
     a ``sae_reconstruction`` row (replace with an unedited reconstruction) beside the
     ``unsteered`` one.
   - ``sae_feature`` / ``keep-error``: the same edit with the SAE's error term kept, so only the
     feature's change reaches the model.
   - ``sae_direction`` / ``add``: add ``value x`` the feature's decoder direction scaled to unit
     variance of the SAE-training activations (the SAE side of Fig. 9).
   - ``probe_direction`` / ``add``: add ``value x`` a logistic probe's direction (fitted on the
     SAE-training activations with genre labels), scaled the same way (Fig. 9).
   - ``random_feature`` / ``replace``: the control. The ``replace`` edit of a feature drawn at
     random (seeded) among those alive on the SAE-training users: what moving *some* feature
     does to the genre's share, beside what moving the genre's best feature does.

   Each (curve, value) records the share of every genre in the top-10, NDCG@10 (with its
   standard error over users), HR@10, MRR@10, Coverage@10 and inter-list diversity@10. All
   last-position curves use the core's fast path (prefix once, re-run the last position).
4. **Users** (:func:`user_recommendations`, Fig. 7): before/after top-10 lists with titles and
   genres for chosen users and values; :func:`user_shares` gives every test user's target share
   per value, for paired comparisons between values.
5. **Fast path check** (:func:`compare_fast_naive`): times the last-position fast path against
   full forward passes and reports the largest logit difference.

Results are tidy tables (:class:`GenreSweep`) written as CSV/JSON by :meth:`GenreSweep.save`.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from mechrec._io import json_safe
from mechrec.attribute_steering import (
    BASELINE,
    AttributeSweep,
    attribute_sweep,
    attribute_targets,
    fit_attribute_probes,
    select_attribute_features,
)
from mechrec.attribute_steering import monotonicity as attribute_monotonicity
from mechrec.probes import ProbeSet
from mechrec.saes import NormalizedSAE
from mechrec.steering import SAELike, steered_last_logits
from mechrec.steering.validation import check_finite_scores, check_finite_values
from mechrec.sweep import SteeringTarget, value_grid
from mechrec_recsys.configs import DEFAULT_GENRES, MODES
from mechrec_recsys.data.registry import ML1M_GENRES, MODERN_GENRES
from mechrec_recsys.experiment import Experiment
from mechrec_recsys.metrics import attribute_share_at_k, mean_and_se
from mechrec_recsys.saes import check_sae_fits

__all__ = [
    "DEFAULT_GENRES",
    "EVAL_PART",
    "METHODS",
    "MODES",
    "PAPER_VALUES",
    "SELECT_PART",
    "GenreSweep",
    "compare_fast_naive",
    "example_users",
    "fit_genre_probes",
    "genre_key",
    "genre_targets",
    "monotonicity",
    "resolve_genres",
    "run_genre_sweep",
    "select_genre_features",
    "steering_values",
    "top_k_unseen",
    "user_recommendations",
    "user_shares",
]

#: The paper's grid of feature values: -10..10 step 1 (section 8.2.1).
PAPER_VALUES: list[float] = value_grid(-10.0, 10.0, 1.0)
#: Steering methods in the tables.
METHODS: tuple[str, ...] = ("sae_feature", "sae_direction", "probe_direction")
#: Users whose activations choose features and fit probes (the paper's SAE users).
SELECT_PART = "sae_train"
#: Users whose top-K lists are scored (their held-out targets give NDCG/HR).
EVAL_PART = "test"

#: Genre labels of every MovieLens release (ml-100k adds "unknown", ml-1m spells
#: "Children's"); a requested name among these but absent from a dataset is skipped.
KNOWN_GENRES: tuple[str, ...] = tuple(
    dict.fromkeys((*ML1M_GENRES, *MODERN_GENRES, "Children's", "unknown"))
)


# --------------------------------------------------------------------------------------------
# Input parsing
# --------------------------------------------------------------------------------------------


def genre_key(name: str) -> str:
    """Matching key of a genre name: lower case, possessive ``'s`` and punctuation removed.

    ``"Children's" -> "children"``, ``"Sci-Fi" -> "scifi"``, ``"Film-Noir" -> "filmnoir"``.
    """
    text = str(name).strip().lower().replace("\u2019", "'")
    text = re.sub(r"'s\b", "", text)
    return re.sub(r"[^0-9a-z]+", "", text)


def resolve_genres(
    requested: Sequence[str], available: Sequence[str], *, warn: bool = True,
    notes: list[str] | None = None,
) -> dict[str, str]:
    """Map requested genre names to the dataset's genre columns.

    A name matches a column exactly, else when both have the same :func:`genre_key` (so
    ``Children`` finds ml-100k's ``Children's``). A name that matches no column but is a
    MovieLens genre (e.g. ``IMAX`` on ml-100k) is skipped with a warning.

    Args:
        requested: genre names as the user wrote them.
        available: the dataset's genre columns.
        warn: warn about skipped genres (unless ``notes`` collects them).
        notes: if given, a line about skipped genres is appended to it instead of warning.

    Returns:
        ``{requested name: dataset column}`` in request order (duplicates collapse).

    Raises:
        ValueError: a name that is neither a column of this dataset nor a MovieLens genre, or
            nothing left to steer.
    """
    names = [str(g).strip() for g in requested if str(g).strip()]
    if not names:
        raise ValueError("no genres given: pass genre names such as 'Action,Sci-Fi'")
    by_key: dict[str, list[str]] = {}
    for column in available:
        by_key.setdefault(genre_key(column), []).append(str(column))
    known_keys = {genre_key(g) for g in KNOWN_GENRES}
    resolved: dict[str, str] = {}
    skipped: list[str] = []
    for name in names:
        if name in available:
            resolved.setdefault(name, name)
            continue
        matches = by_key.get(genre_key(name), [])
        if len(matches) == 1:
            resolved.setdefault(name, matches[0])
        elif len(matches) > 1:
            raise ValueError(
                f"genre {name!r} matches several columns {matches}; give the exact column name"
            )
        elif genre_key(name) in known_keys:
            skipped.append(name)
        else:
            raise ValueError(
                f"unknown genre {name!r}; this dataset's genres are: {', '.join(available)}"
            )
    if skipped:
        message = (f"genres {skipped} are not in this dataset and are skipped (its genres: "
                   f"{', '.join(available)})")
        if notes is not None:
            notes.append(message)
        elif warn:
            warnings.warn(message, stacklevel=2)
    if not resolved:
        raise ValueError(
            f"none of the genres {names} is in this dataset; its genres are: "
            f"{', '.join(available)}"
        )
    return resolved


def steering_values(values: Sequence[float]) -> list[float]:
    """``values`` as a list of floats: at least one, each finite (NaN or infinite is an error).

    Text such as ``"-10:10:1"`` is read by the command line (``mechrec_recsys.cli.params``),
    not here: pass numbers, e.g. :func:`mechrec.sweep.value_grid`'s.
    """
    if isinstance(values, str):
        raise TypeError(f"steering values must be numbers, got the text {values!r}: pass a "
                        "list such as value_grid(-10, 10, 1) or [0, 2, 5]")
    out = check_finite_values(list(values))
    if not out:
        raise ValueError("no steering values given: pass at least one, e.g. [0, 2, 5]")
    return out


# --------------------------------------------------------------------------------------------
# Features, probes and targets: the core's recipe with the paper's user sets and genre names
# --------------------------------------------------------------------------------------------


def _to_core(features: pd.DataFrame) -> pd.DataFrame:
    return features.rename(columns={"genre": "attribute", "correlation_test": "correlation_score"})


def _from_core(features: pd.DataFrame) -> pd.DataFrame:
    return features.rename(columns={"attribute": "genre", "correlation_score": "correlation_test"})


def select_genre_features(
    experiment: Experiment,
    sae: NormalizedSAE,
    genres: Mapping[str, str],
    *,
    overrides: Mapping[str, int] | None = None,
    notes: list[str] | None = None,
    control_seed: int = 0,
) -> pd.DataFrame:
    """The best SAE feature per genre by correlation, chosen on the SAE-training users.

    :func:`mechrec.attribute_steering.select_attribute_features` with ``select="sae_train"`` and
    ``score="test"``.

    Args:
        experiment: the run.
        sae: an SAE at one of the model's hooks.
        genres: ``{genre: dataset column}`` from :func:`resolve_genres`.
        overrides: ``{genre: feature index}`` to use instead of the automatic choice.
        notes: if given, one line per genre left out (with the reason) is appended to this
            list instead of being warned about.
        control_seed: seeds the draw of each genre's control feature.

    Returns:
        One row per genre with a feature: ``genre, column, feature, chosen_by,
        correlation_select`` (on the SAE-training users), ``correlation_test`` (the same feature
        on the test users), ``prevalence_select``, and ``control_feature``: a feature drawn at
        random (``control_seed``) among those alive on the SAE-training users, other than
        ``feature``, with its ``control_correlation_select`` - the random-feature control of
        the steering curves. Genres whose correlation is undefined for every feature (no
        positive rows) are dropped with a warning (or a line in ``notes``).

    Raises:
        ValueError: a bad override, or no genre left.
    """
    return _from_core(select_attribute_features(
        experiment, sae, genres, select=SELECT_PART, score=EVAL_PART, overrides=overrides,
        notes=notes, control_seed=control_seed))


def fit_genre_probes(
    experiment: Experiment,
    hook_name: str,
    columns: Sequence[str],
    *,
    seed: int = 0,
    max_train_rows: int | None = None,
    notes: list[str] | None = None,
) -> ProbeSet:
    """Logistic probes per genre on the SAE-training users' activations at ``hook_name``,
    evaluated on the test users' rows (:func:`mechrec.attribute_steering.fit_attribute_probes`;
    paper 8.2.3).

    Args:
        experiment: the run.
        hook_name: the hook whose activations the probes read.
        columns: genre columns of the catalog.
        seed: seed of the fit (and of the row sample).
        max_train_rows: fit each probe on at most this many SAE-training rows drawn at random;
            the unit-variance scale and the training metrics still use every row. ``None``
            (default): fit on every row.
        notes: if given, one line per genre whose probe was skipped is appended to it.

    Raises:
        ValueError: ``max_train_rows`` is not a positive whole number.
    """
    return fit_attribute_probes(experiment, hook_name, columns, select=SELECT_PART,
                                score=EVAL_PART, seed=seed, max_train_rows=max_train_rows,
                                notes=notes)


def genre_targets(
    experiment: Experiment,
    sae: SAELike,
    features: pd.DataFrame,
    *,
    modes: Sequence[str] = MODES,
    probes: ProbeSet | None = None,
    sae_directions: bool = True,
    random_control: bool = False,
) -> tuple[list[SteeringTarget], dict[str, dict[str, Any]]]:
    """Sweep targets for the chosen features (and probes), with what each curve is
    (:func:`mechrec.attribute_steering.attribute_targets`; directions scaled on the SAE-training
    users).

    Args:
        experiment: the run.
        sae: the SAE the features belong to.
        features: :func:`select_genre_features` output.
        modes: SAE feature edit modes to include (``"replace"``, ``"keep-error"``).
        probes: probe directions to include, or ``None``.
        sae_directions: include the unit-variance decoder direction of each feature.
        random_control: include, per genre, the ``replace`` edit of its random alive
            ``control_feature``.

    Returns:
        ``(targets, curves)`` where ``curves[name]`` holds ``genre, column, method, mode,
        feature`` for the target of that name.
    """
    targets, curves = attribute_targets(
        experiment, sae, _to_core(features), select=SELECT_PART, modes=modes, probes=probes,
        sae_directions=sae_directions, random_control=random_control)
    renamed = {name: {("genre" if key == "attribute" else key): value
                      for key, value in curve.items()} for name, curve in curves.items()}
    return targets, renamed


# --------------------------------------------------------------------------------------------
# Evaluation plumbing
# --------------------------------------------------------------------------------------------


def top_k_unseen(experiment: Experiment, k: int, exclude_seen: bool = True,
                 part: str = EVAL_PART) -> Callable[..., np.ndarray]:
    """``collect`` for :func:`mechrec.sweep.run_sweep` over ``part``'s batches: the top-``k``
    items of each row's last-position scores, every item of the user's full history masked
    (not only the last ``n_ctx``); the batch's row ids find the histories."""
    sequences = experiment.part(part).sequences

    def collect(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None,
                rows: np.ndarray) -> np.ndarray:
        histories = [sequences[int(r)] for r in rows]
        return experiment.top_k_from_last_scores(logits, histories, k,
                                                 exclude_seen=exclude_seen)

    return collect


def _with_rows(experiment: Experiment, part: str = EVAL_PART
               ) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
    """``part``'s batches with each batch's row ids."""
    offset = 0
    for tokens, mask in experiment.batches(part):
        rows = np.arange(offset, offset + tokens.shape[0], dtype=np.int64)
        offset += tokens.shape[0]
        yield tokens, mask, rows


def _evaluator(experiment: Experiment, k: int) -> Callable[[np.ndarray], dict[str, float]]:
    """Scores of test top-K lists: the experiment's metrics plus ``share_se:<genre>``, the
    standard error over users of each genre's share."""
    attributes = experiment.token_attributes()
    matrix, names = attributes

    def evaluate(top_k: np.ndarray) -> dict[str, float]:
        scores = experiment.evaluate_top_k(top_k, k=k, attributes=attributes)
        per_user = attribute_share_at_k(top_k, matrix, k)
        for name, column in zip(names, per_user.T, strict=True):
            scores[f"share_se:{name}"] = mean_and_se(column).se
        return scores

    return evaluate


# --------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------

#: Metrics shown beside the target share in :meth:`GenreSweep.target_share_table`.
HEADLINE: tuple[str, ...] = ("ndcg", "ndcg_se", "hit_rate", "hit_rate_se", "coverage",
                             "diversity")


def monotonicity(table: pd.DataFrame, *, tolerance: float = 0.01) -> pd.DataFrame:
    """How monotonically each curve's target-genre share rises with the steering value
    (:func:`mechrec.attribute_steering.monotonicity` on a :attr:`GenreSweep.table`)."""
    return attribute_monotonicity(table, tolerance=tolerance, label="genre")


@dataclass
class GenreSweep(AttributeSweep):
    """A genre steering sweep's tables: the core's
    :class:`~mechrec.attribute_steering.AttributeSweep` with the label column ``genre`` and the
    ranking metrics as headline.

    ``table`` columns: ``curve``, ``genre`` (as requested), ``column`` (the dataset's genre
    column), ``method``, ``mode``, ``feature``, ``value``, ``target_share``,
    ``target_share_se``, ``ndcg``, ``ndcg_se``, ``hit_rate``, ``hit_rate_se``, ``mrr``,
    ``mrr_se``, ``coverage``, ``diversity`` and ``share:<genre>`` for every genre.
    """

    label: str = "genre"
    headline: tuple[str, ...] = HEADLINE


def run_genre_sweep(
    experiment: Experiment,
    sae: NormalizedSAE,
    *,
    genres: Sequence[str] = DEFAULT_GENRES,
    values: Sequence[float] = PAPER_VALUES,
    modes: Sequence[str] = MODES,
    probes: bool = True,
    sae_directions: bool | None = None,
    features: Mapping[str, int] | None = None,
    k: int = 10,
    method: str = "auto",
    progress: bool = False,
    random_control: bool = True,
    control_seed: int = 0,
    probe_methods: Sequence[str] = ("logistic",),
    probe_k: int | None = None,
    pca_components: int | None = None,
) -> GenreSweep:
    """Steer each genre's best SAE feature (and probe) at the last position over ``values``.

    The core's :func:`mechrec.attribute_steering.attribute_sweep` on the run: features chosen and
    probes fitted on the SAE-training users, the test users' last positions steered, top-``k``
    lists with seen items masked, scored by NDCG/HR/MRR/coverage/diversity and genre shares.

    Args:
        experiment: the run (model, split, catalog).
        sae: an SAE trained on one of the model's hooks (e.g. ``blocks.0.hook_resid_post``).
        genres: genre names (see :func:`resolve_genres`; missing MovieLens genres are skipped
            with a warning).
        values: steering values (the paper: -10..10 step 1).
        modes: SAE feature edit modes (``"replace"``: paper; ``"keep-error"``).
        probes: add probe-direction curves (fitted on the SAE-training users).
        sae_directions: add the unit-variance SAE decoder-direction curves, the probes'
            counterpart in Fig. 9 (default: the same as ``probes``).
        features: ``{genre: feature index}`` overriding the automatic choice.
        k: list length (the paper: 10).
        method: ``"auto"`` (fast last-position path), ``"fast"`` or ``"naive"``.
        progress: show a progress bar.
        random_control: add, per genre, a ``random_feature`` curve: the ``replace`` edit of a
            random feature alive on the SAE-training users (the control of Fig. 8).
        control_seed: seeds the control features' draw.
        probe_methods: with ``probes``, the probe kinds steered by (``"logistic"``: the
            paper's probe; ``"mean_difference"``: the difference of genre means;
            ``"k_sparse"``: a logistic probe on the ``probe_k`` neurons that best separate the
            genre; ``"pca"``: the principal component that correlates best with the genre).
        probe_k: neurons per ``k_sparse`` probe (default ``min(8, d)``).
        pca_components: principal components a ``pca`` probe chooses from (default
            ``min(64, d)``).

    Returns:
        a :class:`GenreSweep`; the ``unsteered`` row is the model as trained, the
        ``sae_reconstruction`` row replaces the last position by its unedited SAE
        reconstruction (the reference for ``replace`` curves).
    """
    values = steering_values(values)
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    check_sae_fits(experiment, sae)
    resolved = resolve_genres(genres, experiment.genre_names)
    sweep = attribute_sweep(
        experiment, sae, resolved, select=SELECT_PART, score=EVAL_PART, values=values,
        modes=modes, probes=probes, sae_directions=sae_directions, features=features, k=k,
        collect=top_k_unseen(experiment, k), evaluate=_evaluator(experiment, k), method=method,
        progress=progress, random_control=random_control, control_seed=control_seed,
        probe_methods=probe_methods, probe_k=probe_k, pca_components=pca_components)
    core = sweep.metadata
    metadata = {
        "run": experiment.spec.__dict__,
        **{key: core[key] for key in ("hook_name", "sae", "values", "k", "positions",
                                      "modes")},
        "genres": resolved,
        "n_test_users": len(experiment.part(EVAL_PART)),
        "selection": f"max correlation on the {SELECT_PART} users' activations",
        **{key: core[key] for key in ("probes", "unit_variance_on", "curve_methods",
                                      "sweep_seconds")},
        "notes": {**core["notes"],
                  "random_feature": "control: the replace edit of a random feature alive on "
                                    f"the {SELECT_PART} users (seed {control_seed}), one per "
                                    "genre"},
    }
    return GenreSweep(table=sweep.table.rename(columns={"attribute": "genre"}),
                      features=_from_core(sweep.features), probe_metrics=sweep.probe_metrics,
                      metadata=metadata)


# --------------------------------------------------------------------------------------------
# Users (Fig. 7)
# --------------------------------------------------------------------------------------------


def user_recommendations(
    experiment: Experiment,
    target: SteeringTarget,
    users: Sequence[Any],
    values: Sequence[float],
    *,
    genre_column: str | None = None,
    k: int = 10,
) -> pd.DataFrame:
    """Before/after top-``k`` lists of chosen users under a steering target (paper Fig. 7).

    Args:
        experiment: the run.
        target: e.g. ``feature_target(sae, feature)`` (replace mode) or a probe direction.
        users: raw user ids (searched in the test users first, then the other parts; see
            :meth:`Experiment.find_user <mechrec_recsys.experiment.Experiment.find_user>`).
        values: steering values; the unsteered list comes first as ``setting == "before"``.
        genre_column: the target genre's column, flagged per item in ``has_target_genre``.
        k: list length.

    Returns:
        One row per (user, setting, rank): ``user_id, part, curve, setting, value, rank,
        token, item_id, title, genres, has_target_genre, in_before``. Seen items are excluded.
    """
    values = steering_values(values)
    if not users:
        raise ValueError("no users given")
    catalog = experiment.dataset.catalog
    genre_matrix, genre_names = experiment.token_attributes()
    if genre_column is not None and genre_column not in genre_names:
        raise ValueError(f"unknown genre column {genre_column!r}")
    model, vocab = experiment.model, experiment.vocab
    device = next(model.parameters()).device
    rows = []
    for user in users:
        part, index = experiment.find_user(user)
        history = experiment.part(part).sequences[index]
        user_id = json_safe(experiment.part(part).users[index])
        window = history[-model.cfg.n_ctx:]
        tokens = torch.as_tensor(window, dtype=torch.long, device=device)[None, :]
        mask = torch.ones_like(tokens)
        edits = [None] + [target.make_edit(v) for v in values]
        logits = steered_last_logits(model, tokens, mask, target.hook_name, edits,
                                     positions=target.positions)
        for value, scores in zip(values, logits[1:], strict=True):
            check_finite_scores(scores, value)
        before: set[int] = set()
        for setting, value, scores in zip(["before", *[f"{v:+g}" for v in values]],
                                          [np.nan, *values], logits, strict=True):
            top = experiment.top_k_from_last_scores(scores, [history], k)[0]
            if setting == "before":
                before = set(top.tolist())
            for rank, token in enumerate(top.tolist(), start=1):
                if token == 0:
                    continue
                item = int(vocab.to_items(np.array([token]))[0])
                flags = genre_matrix[token]
                rows.append({
                    "user_id": user_id,
                    "part": part,
                    "curve": target.name,
                    "setting": setting,
                    "value": value,
                    "rank": rank,
                    "token": token,
                    "item_id": item,
                    "title": str(catalog.items["title"].get(item, "")),
                    "genres": "|".join(n for n, f in zip(genre_names, flags, strict=True) if f),
                    "has_target_genre": bool(genre_matrix[token, genre_names.index(genre_column)])
                    if genre_column is not None else None,
                    "in_before": token in before,
                })
    return pd.DataFrame(rows)


def example_users(experiment: Experiment, genre_column: str, *, k: int = 10,
                  n: int = 1) -> list[Any]:
    """Test users to show for a genre (as in Fig. 7): the ``n`` whose unsteered top-``k``
    holds the most items of the genre, then the ``n`` (others) holding the fewest."""
    matrix, _ = experiment.token_attributes([genre_column])
    top = experiment.recommend(EVAL_PART, k=k)
    share = matrix[top, 0].mean(axis=1)
    users = experiment.part(EVAL_PART).users
    order = np.argsort(-share, kind="stable")
    most = [users[i] for i in order[:n]]
    fewest = [users[i] for i in order[::-1] if users[i] not in most][:n]
    return [json_safe(u) for u in [*most, *fewest]]


def user_shares(
    experiment: Experiment,
    target: SteeringTarget,
    genre_column: str,
    values: Sequence[float],
    *,
    k: int = 10,
) -> pd.DataFrame:
    """Per test user, the share of ``genre_column`` in the top-``k`` at each value.

    Returns a DataFrame indexed by user id with one column per value plus ``"unsteered"``;
    differences between two columns are paired over users (same users, same lists otherwise),
    so their standard error is far smaller than that of two separate means.
    """
    values = steering_values(values)
    matrix, _ = experiment.token_attributes([genre_column])
    collect = top_k_unseen(experiment, k)
    parts: list[np.ndarray] = []
    for tokens, mask, rows in _with_rows(experiment):
        edits = [None] + [target.make_edit(v) for v in values]
        logits = steered_last_logits(experiment.model, tokens, mask, target.hook_name, edits,
                                     positions=target.positions)
        for value, scores in zip(values, logits[1:], strict=True):
            check_finite_scores(scores, value)
        tops = [collect(scores, tokens, mask, rows) for scores in logits]
        parts.append(np.stack([attribute_share_at_k(top, matrix, k)[:, 0] for top in tops],
                              axis=1))
    table = np.concatenate(parts)
    users = pd.Index(experiment.part(EVAL_PART).users, name="user_id")
    return pd.DataFrame(table, index=users, columns=[BASELINE, *values])


# --------------------------------------------------------------------------------------------
# Fast path check
# --------------------------------------------------------------------------------------------


def compare_fast_naive(
    experiment: Experiment,
    target: SteeringTarget,
    values: Sequence[float],
    *,
    naive_values: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Time the fast last-position path against full forward passes on the test users.

    The fast path runs every value of ``values`` (its prefix pass included in its time); the
    naive path runs ``naive_values`` (default: the first two values), each a full forward pass.
    Both are compared on the values they share.

    Returns:
        ``fast_seconds``, ``fast_seconds_per_value``, ``naive_seconds``,
        ``naive_seconds_per_value``, ``speedup`` (naive per value / fast per value),
        ``max_abs_logit_diff`` over the shared values and ``same_top_k`` (identical top-10
        lists), plus the batch shape.
    """
    values = steering_values(values)
    naive_values = steering_values(naive_values) if naive_values is not None else values[:2]
    shared = [v for v in naive_values if v in values]
    if not shared:
        raise ValueError("naive_values must be among values, to compare the two paths")
    model = experiment.model
    with torch.no_grad():  # warm-up, so neither path pays for first-call initialisation
        tokens, mask = next(iter(experiment.batches(EVAL_PART)))
        model(tokens, attention_mask=mask)
    fast_time = naive_time = 0.0
    max_diff = 0.0
    same = True
    max_len = 0
    collect = top_k_unseen(experiment, 10)
    for tokens, mask, rows in _with_rows(experiment):
        max_len = max(max_len, int(tokens.shape[1]))
        edits = [target.make_edit(v) for v in values]
        start = time.perf_counter()
        fast = steered_last_logits(model, tokens, mask, target.hook_name, edits, method="fast")
        fast_time += time.perf_counter() - start
        naive_edits = [target.make_edit(v) for v in naive_values]
        start = time.perf_counter()
        naive = steered_last_logits(model, tokens, mask, target.hook_name, naive_edits,
                                    method="naive")
        naive_time += time.perf_counter() - start
        for v in shared:
            a, b = fast[values.index(v)], naive[naive_values.index(v)]
            max_diff = max(max_diff, float((a - b).abs().max()))
            same &= bool(np.array_equal(collect(a, tokens, mask, rows),
                                        collect(b, tokens, mask, rows)))
    fast_per = fast_time / len(values)
    naive_per = naive_time / len(naive_values)
    return {
        "target": target.name,
        "n_users": len(experiment.part(EVAL_PART)),
        "batch_size": experiment.batch_size,
        "max_len": max_len,
        "values": values,
        "naive_values": naive_values,
        "fast_seconds": fast_time,
        "fast_seconds_per_value": fast_per,
        "naive_seconds": naive_time,
        "naive_seconds_per_value": naive_per,
        "speedup": naive_per / fast_per if fast_per > 0 else float("nan"),
        "max_abs_logit_diff": max_diff,
        "same_top_k": same,
        "device": str(next(model.parameters()).device),
    }
