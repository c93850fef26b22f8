"""The paper's ablation rows on a recommender run: the core recipe with items and users.

:func:`mechrec.ablations.run_ablations` on an :class:`~mechrec_recsys.experiment.Experiment`:
variant SAEs are trained, L0 is matched and best features are chosen on the SAE users
(``sae_train``), everything is scored on the test users, the bootstrap resamples test users,
and the reported mean is over the genres. The core's ``tokens`` row is called ``items`` here
(the alignment's unit is the distinct item, activations averaged over its positions).

``mechrec align ablations RUN_DIR SAE`` and the ``ablations`` step of ``mechrec reproduce``
call :func:`run_sae_ablations`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from mechrec.ablations import Ablation, AblationTable, run_ablations, standard_ablations
from mechrec_recsys.configs import ABLATIONS

__all__ = [
    "ABLATIONS",
    "SCORE_PART",
    "SELECT_PART",
    "alignment_identity",
    "recsys_ablations",
    "run_sae_ablations",
    "sae_training_config",
    "saved_base_alignment",
]

#: The users that train the variants and choose features, and those that score them.
SELECT_PART, SCORE_PART = "sae_train", "test"
#: The attribute group whose mean best-attribute correlation each row reports.
GROUP = "genre"
#: Sub-folder of an SAE folder holding its ablation rows.
ABLATIONS_DIR = "ablations"


def recsys_ablations(model: Any, hook: str, kinds: Sequence[str] = ABLATIONS
                     ) -> list[Ablation]:
    """:func:`~mechrec.ablations.standard_ablations` with the unit row named ``items``.

    Raises:
        ValueError: an unknown kind (the message lists :data:`ABLATIONS`).
    """
    unknown = [kind for kind in kinds if kind not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablation {unknown[0]!r}; choose from {', '.join(ABLATIONS)}")
    core = ["tokens" if kind == "items" else kind for kind in kinds]
    return [replace(a, name="items", description="unit = distinct items (activations "
                    "averaged over the item's positions)") if a.name == "tokens" else a
            for a in standard_ablations(model, hook, core)]


def sae_training_config(sae_dir: str | Path) -> Any:
    """The :class:`~mechrec.saes.SAETrainingConfig` an SAE folder was trained with (its
    ``mechrec.json``, written by ``mechrec sae train`` and the pipeline).

    Raises:
        ValueError: the folder records no training configuration (an SAE trained elsewhere:
            its variants cannot be retrained the same way).
    """
    from mechrec.saes import SAETrainingConfig

    path = Path(sae_dir) / "mechrec.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    config = record.get("training_config") if isinstance(record, dict) else None
    if not isinstance(config, dict):
        raise ValueError(f"{sae_dir} records no training configuration (no training_config in "
                         "mechrec.json): ablations retrain the SAE with one setting changed, so "
                         "they need an SAE trained by 'mechrec sae train'")
    return SAETrainingConfig.from_dict(config)


def alignment_identity(experiment: Any, sae: Any) -> dict[str, str]:
    """What a saved alignment records of the model and the SAE it was made with (their
    weight hashes), so that :func:`saved_base_alignment` reuses it only for them."""
    from mechrec_recsys.saes import model_weights_sha256

    return {"model_sha256": model_weights_sha256(experiment), "sae_sha256": sae.weights_sha256()}


def saved_base_alignment(folder: str | Path, experiment: Any, sae: Any, *, bootstrap: int,
                         seed: int) -> tuple[Any, str]:
    """The alignment saved in ``folder`` (by ``mechrec align tables`` or the pipeline's
    ``align`` step) when it can stand for the base ablation row, and why (not).

    It can when it was made with this model and SAE (:func:`alignment_identity`), on every
    user of both parts, with the catalog's genres, and with the settings the base row uses
    (:func:`mechrec.ablations.base_run_mismatch`).

    Returns:
        ``(run, reason)``: the loaded :class:`~mechrec.alignment.AlignmentRun` or ``None``,
        and a line saying which it is and why.
    """
    from mechrec.ablations import base_run_mismatch
    from mechrec.alignment import AlignmentRun
    from mechrec.alignment.persist import RUN_FILE

    folder = Path(folder)
    if not (folder / RUN_FILE).is_file() or not (folder / "alignment.json").is_file():
        return None, f"no saved alignment in {folder}: the base row is aligned afresh"
    provenance = json.loads((folder / "alignment.json").read_text()).get("provenance") or {}
    identity = alignment_identity(experiment, sae)
    if any(provenance.get(key) != value for key, value in identity.items()):
        return None, (f"the alignment in {folder} was made with another model or SAE (or "
                      "before mechrec recorded them): the base row is aligned afresh")
    if provenance.get("sampled_users") or provenance.get("attributes") != "catalog":
        return None, (f"the alignment in {folder} used a sample of users or other labels "
                      "than the catalog's: the base row is aligned afresh")
    try:
        run = AlignmentRun.load(folder)
    except (OSError, ValueError, KeyError) as exc:
        return None, f"the alignment in {folder} cannot be read ({exc}): aligned afresh"
    problem = base_run_mismatch(run, sae, select=SELECT_PART, score=SCORE_PART, seed=seed,
                                group=GROUP, bootstrap=bootstrap)
    if problem:
        return None, f"the alignment in {folder} does not fit: {problem}; aligned afresh"
    return run, f"the base row reads the saved alignment in {folder}"


def run_sae_ablations(experiment: Any, sae: Any, config: Any,
                      kinds: Sequence[str] = ABLATIONS, *, bootstrap: int = 200,
                      confidence: float = 0.95, seed: int = 0,
                      out_dir: str | Path | None = None,
                      progress: Callable[[str], None] | None = None,
                      base_run: Any = None) -> AblationTable:
    """The ablation rows of ``kinds`` for the run's SAE: chosen on the SAE users, scored on
    the test users, mean over genres, paired bootstrap over test users.

    Args:
        experiment: the trained run.
        sae: its SAE (the base recipe).
        config: the SAE's training configuration (:func:`sae_training_config`).
        kinds: ablation kinds (:data:`ABLATIONS`).
        bootstrap: resamples of the test users (0: no intervals).
        confidence: coverage of the intervals.
        seed: seed of the random control and the bootstrap.
        out_dir: save each row (and its SAE) here as it finishes; reuse saved rows.
        progress: receives one line per row.
        base_run: the base SAE's saved alignment, to reuse for the base row (see
            :func:`saved_base_alignment`).
    """
    return run_ablations(experiment, sae, config,
                         recsys_ablations(experiment.model, sae.hook_name, kinds),
                         select=SELECT_PART, score=SCORE_PART, bootstrap=bootstrap,
                         confidence=confidence, seed=seed, group=GROUP, out_dir=out_dir,
                         progress=progress, base_run=base_run)
