"""What one SAE feature of GPTRec is: where it fires, which items it pushes, an export page.

- :func:`feature_output_effects`: the items a feature promotes and demotes, with titles and
  genres. GPTRec's output layer is tied to its item embedding, so a residual-stream decoder
  direction reads straight through it (``direct``, :func:`mechrec.output_effects.direct_effects`);
  ``measured`` is the mean change of the test users' next-item scores when the feature is set
  to ``value`` at the last position (later blocks included).
- :func:`feature_dashboard`: a JSON-ready page in the spirit of SAEDashboard / Neuronpedia
  feature pages: the top activating sequences as item titles with the feature's activation
  at each shown position (the paper's Fig. 6), the activation histogram split by the
  feature's top genre (Fig. 5), the promoted and demoted items (``pos_str`` / ``neg_str``),
  the share of positions where it fires and its top genres by p_top-k.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from mechrec.alignment import DegenerateInputWarning, token_attributes
from mechrec.output_effects import direct_effects, mean_logit_change, top_effects
from mechrec.saes import NormalizedSAE
from mechrec.steering.validation import check_feature_index
from mechrec_recsys.alignment import check_encoded, feature_p_top_k, item_table
from mechrec_recsys.experiment import Experiment

__all__ = ["DASHBOARD_FORMAT", "feature_dashboard", "feature_output_effects"]

DASHBOARD_FORMAT = "mechrec.feature_dashboard/1"
"""Format tag of :func:`feature_dashboard`'s JSON."""


def feature_output_effects(experiment: Experiment, sae: NormalizedSAE, feature: int, *,
                           k: int = 10, value: float = 10.0, part: str = "test"
                           ) -> dict[str, pd.DataFrame]:
    """The ``k`` items feature ``feature`` promotes and demotes, two ways.

    Returns:
        ``{"direct": ..., "measured": ...}``, each with ``side`` (``promotes`` /
        ``demotes``), ``rank``, ``token``, ``effect``, ``item_id``, ``title``, ``genres``.
        ``measured`` is the mean score change over ``part``'s users with the feature set to
        ``value`` (against the unedited reconstruction).
    """
    feature = check_feature_index(sae, feature)
    items = item_table(experiment)[["item_id", "title", "genres"]]
    measured = mean_logit_change(experiment.model, experiment.batches(part), sae, feature,
                                 value)
    return {
        "direct": top_effects(direct_effects(experiment.model, sae, feature), k, names=items),
        "measured": top_effects(measured, k, names=items),
    }


def _histogram(values: np.ndarray, mask: np.ndarray, bins: int) -> dict[str, Any]:
    active = values > 0
    if not active.any():
        return {"edges": [], "with_attribute": [], "without_attribute": []}
    edges = np.histogram_bin_edges(values[active], bins=bins)
    with_attr, _ = np.histogram(values[active & mask], bins=edges)
    without, _ = np.histogram(values[active & ~mask], bins=edges)
    return {"edges": edges.tolist(), "with_attribute": with_attr.tolist(),
            "without_attribute": without.tolist()}


def feature_dashboard(experiment: Experiment, sae: NormalizedSAE, feature: int, *,
                      k: int = 10, context: int = 5, bins: int = 20, part: str = "sae_train",
                      value: float = 10.0, encoded: sp.spmatrix | None = None
                      ) -> dict[str, Any]:
    """A JSON-ready feature page (see the module docstring).

    Keys: ``format``, ``hook_name``, ``index``, ``d_sae``, ``frac_nonzero`` (share of
    ``part``'s positions where the feature fires), ``activations`` (one entry per top
    position: ``tokens`` — the titles of up to ``context`` preceding items and the item —,
    ``values`` — the feature's activation at each —, ``maxValue``, ``user``), ``pos_str`` /
    ``pos_values`` and ``neg_str`` / ``neg_values`` (measured promoted / demoted items),
    ``direct_pos_str`` / ``direct_neg_str`` (through the tied output layer), ``top_genres``
    (p_top-100 shares, best first), ``histogram`` (activation histogram of the positions with
    and without the top genre, Fig. 5).

    ``encoded``: the SAE's features of ``part``'s activations
    (:func:`~mechrec.alignment.encode_sparse`, best as CSC), when the caller already has them:
    the pages of several features of one SAE then encode ``part`` once (default: encoded here).
    """
    feature = check_feature_index(sae, feature)
    acts = experiment.activations(part, sae.hook_name)
    encoded = check_encoded(sae, acts, part, encoded).tocsc()
    column = encoded[:, feature].toarray().ravel()
    items = item_table(experiment)
    titles = items["title"].to_numpy()
    seq = acts.sequence_index.cpu().numpy()
    pos = acts.position.cpu().numpy()
    tok = acts.token.cpu().numpy()
    users = experiment.part(part).users
    order = np.argsort(-column, kind="stable")[:k]
    examples = []
    for row in order:
        if column[row] <= 0:
            break
        shown = np.flatnonzero((seq == seq[row]) & (pos <= pos[row]) & (pos >= pos[row] - context))
        shown = shown[np.argsort(pos[shown])]
        examples.append({"tokens": [str(titles[t]) for t in tok[shown]],
                         "values": [float(v) for v in column[shown]],
                         "maxValue": float(column[row]),
                         "maxValueTokenIndex": int(len(shown) - 1),
                         "user": users[seq[row]].item() if hasattr(users[seq[row]], "item")
                         else users[seq[row]]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateInputWarning)
        shares = feature_p_top_k(experiment, sae, feature, decades=False, part=part,
                                 encoded=encoded).iloc[0]
    ranked = shares.dropna().sort_values(ascending=False)
    top_genre = ranked.index[0] if len(ranked) else None
    effects = feature_output_effects(experiment, sae, feature, k=k, value=value)
    page: dict[str, Any] = {
        "format": DASHBOARD_FORMAT, "hook_name": sae.hook_name, "index": feature,
        "d_sae": int(sae.d_sae), "part": part, "frac_nonzero": float((column > 0).mean()),
        "activations": examples,
        "top_genres": [{"genre": str(g), "p_top_100": float(v)} for g, v in ranked.head(5)
                       .items()],
        "steering_value": float(value),
    }
    for key, frame in (("", effects["measured"]), ("direct_", effects["direct"])):
        for side, tag in (("promotes", "pos"), ("demotes", "neg")):
            rows = frame[frame["side"] == side]
            page[f"{key}{tag}_str"] = rows["title"].astype(str).tolist()
            page[f"{key}{tag}_values"] = rows["effect"].astype(float).tolist()
    if top_genre is not None:
        table, _ = experiment.attribute_table(decades=False)
        mask = token_attributes(acts.token, table[[top_genre]]).to_numpy()[:, 0] > 0
        page["histogram"] = {"attribute": str(top_genre), **_histogram(column, mask, bins)}
    return page
