"""The field's standard SAE quality metrics on GPTRec: loss and NDCG recovered, KL, density,
absorption (issue: "the analyses the field expects").

For the test users' last position (the next-item prediction the paper scores), the model is
run four ways: as trained, with the SAE's hook replaced by the reconstruction (the paper's
"replace"), with the hook zeroed, and with the hook set to the mean activation of the
SAE-training users. From these :func:`splice_quality` reports

- ``loss_*``: mean next-item cross-entropy of the held-out target (softmax over every item),
  and ``loss_recovered_zero`` / ``loss_recovered_mean``: the share of the ablation's loss
  increase the SAE undoes (the recommender analogue of sae-lens' "CE loss recovered");
- ``ndcg_*`` and ``ndcg_recovered_zero`` / ``ndcg_recovered_mean``: the same for NDCG@k (seen
  items excluded, as everywhere in the paper);
- ``kl``: mean KL divergence of the next-item distribution, original || spliced.

Three of the four runs do not depend on the SAE: :func:`splice_baselines` computes them once
for a hook, and ``splice_quality(..., baselines=...)`` then runs only the spliced model (what
Table 1's sweep does for each of its SAEs, :func:`mechrec_recsys.saes.run_table1`).

:func:`feature_density_table` bins how often each feature fires on the test users, and
:func:`absorption_table` checks genre hierarchies (e.g. Animation inside Children's) for
feature absorption, with both features chosen on the SAE-training users.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack, nullcontext
from typing import Any

import numpy as np
import pandas as pd
import torch

from mechrec.alignment import alignment_stats, best_features, encode_sparse, token_attributes
from mechrec.hooks import output_hook
from mechrec.reconstruction import reconstruction_hooks
from mechrec.saes import NormalizedSAE
from mechrec.splice_quality import (
    ABLATIONS,
    ablation_hooks,
    absorption,
    density_histogram,
    feature_density,
    fraction_recovered,
    next_token_kl,
)
from mechrec_recsys.experiment import Experiment
from mechrec_recsys.metrics import ndcg_at_k
from mechrec_recsys.model import last_position_scores

__all__ = ["HIERARCHIES", "absorption_table", "feature_density_table", "splice_baselines",
           "splice_quality"]

HIERARCHIES: tuple[tuple[str, str], ...] = (("Children's", "Animation"), ("Thriller", "Crime"),
                                            ("Drama", "War"))
"""(parent, child) genre pairs checked for absorption by default; MovieLens spells the first
``Children's`` (ml-1m) or ``Children`` (ml-100k), which :func:`absorption_table` resolves."""

QUALITY_KEYS: tuple[str, ...] = (
    "loss_original", "loss_sae", "loss_zero", "loss_mean", "loss_recovered_zero",
    "loss_recovered_mean", "ndcg_original", "ndcg_sae", "ndcg_zero", "ndcg_mean",
    "ndcg_recovered_zero",
    "ndcg_recovered_mean", "kl")
"""Keys of :func:`splice_quality`'s result."""


@torch.no_grad()
def _last_logits(experiment: Experiment, part: str) -> torch.Tensor:
    """Last-position item scores of every sequence of ``part`` (hooks attached apply)."""
    out = [last_position_scores(experiment.model, tokens, mask).float().cpu()
           for tokens, mask in experiment.batches(part)]
    return torch.cat(out)


def _loss(scores: torch.Tensor, targets: np.ndarray) -> float:
    masked = scores.clone()
    masked[:, 0] = -torch.inf  # padding is never a next item
    log_p = torch.log_softmax(masked.double(), dim=-1)
    picked = log_p[torch.arange(len(targets)), torch.as_tensor(targets, dtype=torch.long)]
    return float(-picked.mean())


def _ndcg(experiment: Experiment, scores: torch.Tensor, part: str, k: int) -> float:
    top_k = experiment.top_k_from_last_scores(scores, experiment.part(part).sequences, k)
    return float(ndcg_at_k(top_k, experiment.part(part).targets, k).mean())


BASELINES: tuple[str, ...] = ("original", *ABLATIONS)
"""The SAE-independent runs of :func:`splice_quality` (:func:`splice_baselines`' keys)."""


def _check_parts(experiment: Experiment, part: str, mean_part: str) -> np.ndarray:
    if part == mean_part:
        raise ValueError(f"part and mean_part are both {part!r}: take the ablation's mean "
                         "from other users than those scored")
    targets = experiment.part(part).targets
    if targets is None:
        raise ValueError(f"the {part!r} part has no held-out targets to score")
    return targets


def splice_baselines(experiment: Experiment, hook: str, *, part: str = "test",
                     mean_part: str = "sae_train") -> dict[str, torch.Tensor]:
    """The last-position item scores of ``part``'s users with ``hook`` as trained
    (``"original"``), zeroed (``"zero"``) and set to ``mean_part``'s mean activation
    (``"mean"``): what :func:`splice_quality` compares every SAE at ``hook`` with, computed
    once to pass to it as ``baselines`` for several SAEs.

    Raises:
        ValueError: ``part`` is ``mean_part``, or ``part`` has no held-out targets.
    """
    _check_parts(experiment, part, mean_part)
    mean = experiment.activations(mean_part, hook).activations.mean(dim=0)
    settings: dict[str, Any] = {
        "original": nullcontext(),
        **{mode: ablation_hooks(experiment.model, hook, mode, mean if mode == "mean" else None)
           for mode in ABLATIONS},
    }
    logits: dict[str, torch.Tensor] = {}
    for name, context in settings.items():
        with ExitStack() as stack:
            stack.enter_context(context)
            logits[name] = _last_logits(experiment, part)
    return logits


def splice_quality(experiment: Experiment, nsae: NormalizedSAE, *, k: int = 10,
                   part: str = "test", mean_part: str = "sae_train",
                   baselines: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Loss and NDCG@k recovered against zero and mean ablation, and the KL of the spliced
    next-item distribution, on ``part``'s last positions (see the module docstring).

    Args:
        experiment: the run.
        nsae: an SAE at one of the run's hooks.
        k: list length of NDCG.
        part: the users scored (their held-out targets).
        mean_part: the users whose mean activation the mean ablation uses (other users).
        baselines: :func:`splice_baselines` of the hook the SAE writes (a transcoder's
            output hook, ``nsae.hook_name_out``) with the same ``part`` and
            ``mean_part``, when already computed (e.g. for several SAEs at one hook); the
            result is the same as without.

    Returns:
        The :data:`QUALITY_KEYS`, each a float.

    Raises:
        ValueError: ``part`` is ``mean_part``, ``part`` has no held-out targets, or
            ``baselines`` lacks a run or has another number of users.
    """
    targets = _check_parts(experiment, part, mean_part)
    if baselines is None:
        baselines = splice_baselines(experiment, output_hook(nsae), part=part,
                                     mean_part=mean_part)
    missing = [name for name in BASELINES if name not in baselines]
    if missing:
        raise ValueError(f"baselines lack {missing}: pass splice_baselines(...)'s result")
    with reconstruction_hooks(experiment.model, nsae, "replace"):
        spliced = _last_logits(experiment, part)
    logits = {"original": baselines["original"], "sae": spliced,
              **{mode: baselines[mode] for mode in ABLATIONS}}
    for name, scores in logits.items():
        if scores.shape != spliced.shape:
            raise ValueError(f"the {name!r} baseline has shape {tuple(scores.shape)}, the "
                             f"{part!r} users' scores {tuple(spliced.shape)}: compute the "
                             "baselines for the same part and hook")
    loss = {name: _loss(scores, targets) for name, scores in logits.items()}
    ndcg = {name: _ndcg(experiment, scores, part, k) for name, scores in logits.items()}
    reference = logits["original"].clone()
    reference[:, 0] = -torch.inf
    spliced = logits["sae"].clone()
    spliced[:, 0] = -torch.inf
    out = {f"loss_{name}": value for name, value in loss.items()}
    out.update({f"ndcg_{name}": ndcg[name] for name in ("original", "sae")})
    for mode in ABLATIONS:
        out[f"loss_recovered_{mode}"] = fraction_recovered(loss["original"], loss["sae"],
                                                           loss[mode])
        out[f"ndcg_{mode}"] = ndcg[mode]
        out[f"ndcg_recovered_{mode}"] = fraction_recovered(ndcg["original"], ndcg["sae"],
                                                           ndcg[mode])
    out["kl"] = float(next_token_kl(reference, spliced).mean())
    return {key: out[key] for key in QUALITY_KEYS}


def feature_density_table(experiment: Experiment, nsae: NormalizedSAE, *,
                          part: str = "test") -> pd.DataFrame:
    """Features per log10 firing-density bin on ``part``'s activations (a ``dead`` row
    first); see :func:`mechrec.splice_quality.density_histogram`."""
    density = feature_density(nsae, experiment.activations(part, nsae.hook_name))
    return density_histogram(density)


def _resolve(experiment: Experiment, name: str) -> str | None:
    """The dataset's genre column for ``name``, matched as everywhere else
    (:func:`mechrec_recsys.steering.resolve_genres`), or ``None`` when the dataset has none."""
    from mechrec_recsys.steering import resolve_genres

    try:
        resolved = resolve_genres([name], experiment.genre_names, notes=[])
    except ValueError:  # not a genre of this dataset (or a name several columns match)
        return None
    return next(iter(resolved.values()))


def absorption_table(experiment: Experiment, nsae: NormalizedSAE, *,
                     pairs: Sequence[tuple[str, str]] = HIERARCHIES,
                     select_part: str = "sae_train", score_part: str = "test"
                     ) -> pd.DataFrame:
    """Feature absorption per (parent, child) genre pair.

    The parent's and the child's features are the best by correlation on the
    ``select_part`` users; absorption is measured on the ``score_part`` users' positions
    (:func:`mechrec.splice_quality.absorption`). Pairs whose genres this dataset lacks are
    left out.

    Returns:
        One row per pair: ``parent``, ``child``, ``parent_feature``, ``child_feature`` and
        the absorption measures.
    """
    resolved = [(_resolve(experiment, p), _resolve(experiment, c)) for p, c in pairs]
    kept = [(p, c) for p, c in resolved if p is not None and c is not None]
    if not kept:
        return pd.DataFrame(columns=["parent", "child", "parent_feature", "child_feature"])
    table, _ = experiment.attribute_table(decades=False)
    columns = list(dict.fromkeys(g for pair in kept for g in pair))
    select = experiment.activations(select_part, nsae.hook_name)
    score = experiment.activations(score_part, nsae.hook_name)
    stats = alignment_stats(encode_sparse(nsae, select.activations),
                            token_attributes(select.token, table[columns]),
                            metrics=("correlation",))
    chosen = best_features(stats, "correlation")
    features = encode_sparse(nsae, score.activations).tocsc()
    labels = token_attributes(score.token, table[columns]).astype(bool)
    rows = []
    for parent, child in kept:
        p_feature, c_feature = chosen[parent], chosen[child]
        if p_feature is None or c_feature is None:
            continue
        values = {f: features[:, int(f)].toarray().ravel() for f in (p_feature, c_feature)}
        rows.append({"parent": parent, "child": child, "parent_feature": int(p_feature),
                     "child_feature": int(c_feature),
                     **absorption(values[p_feature], values[c_feature],
                                  labels[parent].to_numpy(), labels[child].to_numpy())})
    return pd.DataFrame(rows)
