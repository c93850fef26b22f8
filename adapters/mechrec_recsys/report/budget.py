"""Fit ``mechrec reproduce``'s settings into a wall-time budget, and say what was cut.

The paper preset on MovieLens 1M takes several hours on a 2-core CPU (GPTRec alone can run
200 epochs of about 45 s). :func:`fit_budget` estimates each step's wall time from the split's
sizes with a :class:`CostModel` (seconds per unit of work on one torch thread, measured on
that machine: see ``docs/performance.md``) and, while the total is over the budget, applies
the cuts of :data:`CUTS` in order: fewer Table-1 seeds, one steering edit mode, a thinner
Table-1 grid, a thinner steering grid, fewer bootstrap resamples, fewer ablation rows, fewer
GPTRec epochs and shorter Table-1 SAEs. Settings the user chose explicitly are never cut.

The plan is deterministic (the same dataset, split and budget give the same settings), so a
resumed run with the same ``--budget`` reuses its finished steps. The settings record the
budget and every cut, and the report shows them beside each step's measured wall time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace

import numpy as np

from mechrec_recsys.data import Dataset
from mechrec_recsys.data.splits import Split
from mechrec_recsys.report.settings import ReproduceSettings

__all__ = ["CUTS", "BudgetPlan", "CostModel", "WorkSize", "estimate_seconds", "fit_budget",
           "load_split", "plan_budget", "work_size"]


@dataclass(frozen=True)
class WorkSize:
    """The amounts of data the steps' costs scale with.

    Attributes:
        train_tokens: training positions GPTRec reads per epoch (histories cut at ``max_len``).
        sae_positions: positions of the SAE users (the SAEs' training rows).
        test_positions: positions of the test users (scored by the alignment and Table 1).
        test_users: users whose lists the steering sweep recomputes per value.
    """

    train_tokens: int
    sae_positions: int
    test_positions: int
    test_users: int


def work_size(split: Split, max_len: int) -> WorkSize:
    """The :class:`WorkSize` of a split for a GPTRec reading ``max_len`` items of history."""
    def positions(part: str) -> int:
        sequences = split.parts().get(part)
        if sequences is None or len(sequences) == 0:
            return 0
        return int(np.minimum(sequences.lengths(), max_len).sum())

    return WorkSize(train_tokens=positions("train") + positions("validation"),
                    sae_positions=positions("sae_train"),
                    test_positions=positions("test"), test_users=len(split.test))


@dataclass(frozen=True)
class CostModel:
    """Seconds per unit of work on one torch thread.

    The defaults were measured on the shared 2-core CPU of ``docs/performance.md`` (load
    average 2-4) on MovieLens 1M and 100K, which agree within 15%: read the estimates as
    that machine's, to within a factor of about 1.5.

    Attributes:
        gptrec_token_epoch: one training position for one epoch, validation included
            (ml-1m: 288,659 + 47,564 positions, 42-48 s per epoch).
        sae_row_feature: one activation row times one dictionary feature of SAE training
            (fast engine, standard SAE, batch 1,024).
        sae_eval_position_feature: one position times one feature when an SAE is measured
            (spliced ranking metrics and the Figure-3 correlation on SAE and test users).
        align_position: one SAE-user or test position of the alignment (SAE, neurons and the
            random control at 2,048 features, 200 bootstrap resamples; ml-1m: 237 s).
        steer_user_value_curve: one test user at one value of one curve of the steering sweep
            (ml-1m: 319 s for 596 users x 21 values x 25 curves).
    """

    gptrec_token_epoch: float = 1.4e-4
    sae_row_feature: float = 2.0e-8
    sae_eval_position_feature: float = 6.0e-8
    align_position: float = 7.5e-4
    steer_user_value_curve: float = 1.0e-3


def _table1_points(s: ReproduceSettings) -> list[tuple[float, int]]:
    points = [(l1, s.table1_l1_d_sae) for l1 in s.table1_l1]
    points += [(s.table1_d_sae_l1, d) for d in s.table1_d_sae
               if (s.table1_d_sae_l1, d) not in points]
    return points


def _steer_curves(s: ReproduceSettings) -> int:
    per_genre = len(s.steer_modes) + 1  # each SAE edit mode, and the random-feature control
    if s.steer_probes:
        per_genre += 2  # the probe direction and the SAE decoder direction
    return per_genre * len(s.steer_genres)


def _retrained_saes(s: ReproduceSettings) -> int:
    """SAEs the ablation step trains: one per kind that retrains, ``layers`` one per other
    block."""
    per_kind = {"topk": 1, "jumprelu": 1, "no-norm": 1, "mlp-out": 1,
                "layers": max(s.n_layers - 1, 0)}
    return sum(per_kind.get(kind, 0) for kind in s.ablations)


def _ablation_rows(s: ReproduceSettings) -> int:
    """Rows the ablation step aligns: the base row, ``items`` and each retrained SAE."""
    if not s.ablations:
        return 0
    return 1 + ("items" in s.ablations) + _retrained_saes(s)


def estimate_seconds(s: ReproduceSettings, size: WorkSize, cost: CostModel | None = None
                     ) -> dict[str, float]:
    """Estimated wall time of each step with settings ``s`` (GPTRec at its epoch cap).

    GPTRec usually stops early, so its estimate is an upper bound.
    """
    cost = cost or CostModel()
    eval_positions = size.sae_positions + size.test_positions

    def sae_seconds(steps: int, batch: int, d_sae: int) -> float:
        return d_sae * (steps * batch * cost.sae_row_feature
                        + eval_positions * cost.sae_eval_position_feature)

    table1 = len(s.table1_seeds) * sum(
        sae_seconds(s.table1_steps, s.table1_batch_size, d_sae)
        for _, d_sae in _table1_points(s))
    bootstrap_share = 0.5 + 0.5 * s.align_bootstrap / 200
    align = eval_positions * cost.align_position * bootstrap_share
    return {
        "data": 5.0,
        "train": s.epochs * size.train_tokens * cost.gptrec_token_epoch,
        "table1": table1,
        "sae": sae_seconds(s.sae_steps, s.sae_batch_size, s.sae_d_sae),
        "align": align,
        "steer": size.test_users * len(s.steer_values) * _steer_curves(s)
        * cost.steer_user_value_curve,
        "ablations": _ablation_rows(s) * align
        + _retrained_saes(s) * sae_seconds(s.sae_steps, s.sae_batch_size, s.sae_d_sae),
    }


def _thin(values: tuple, keep: Collection) -> tuple:
    """Every other value, keeping the first, the last and ``keep``."""
    if len(values) <= 2:
        return values
    last = len(values) - 1
    return tuple(v for i, v in enumerate(values) if i % 2 == 0 or i == last or v in keep)


#: A cut: the settings, the sizes, the budget in seconds and the cost model in; the cut
#: settings and a line saying what changed out, or ``None`` when it has nothing to cut.
Cut = Callable[[ReproduceSettings, WorkSize, float, CostModel],
               "tuple[ReproduceSettings, str] | None"]


def _first_only(name: str, describe: Callable[[tuple], str]) -> Cut:
    """A cut keeping only the first value of the tuple setting ``name``;
    ``describe(all_values)`` says what was kept."""

    def cut(s: ReproduceSettings, *_: object) -> tuple[ReproduceSettings, str] | None:
        values = getattr(s, name)
        if len(values) < 2:
            return None
        return replace(s, **{name: values[:1]}), describe(values)

    return cut


_cut_table1_seeds = _first_only(
    "table1_seeds", lambda seeds: f"Table 1: seed {seeds[0]} only (of {len(seeds)})")
_cut_steer_modes = _first_only(
    "steer_modes", lambda modes: f"steering: edit mode {modes[0]} only (of {', '.join(modes)})")


def _cut_table1_grid(s: ReproduceSettings, *_: object) -> tuple[ReproduceSettings, str] | None:
    l1 = _thin(s.table1_l1, {s.table1_d_sae_l1})
    d_sae = _thin(s.table1_d_sae, {s.table1_l1_d_sae})
    if (l1, d_sae) == (s.table1_l1, s.table1_d_sae):
        return None
    return (replace(s, table1_l1=l1, table1_d_sae=d_sae),
            f"Table 1: L1 weights {', '.join(f'{v:g}' for v in l1)} and dictionary sizes "
            f"{', '.join(str(v) for v in d_sae)} (every other point of the grid)")


def _cut_steer_values(s: ReproduceSettings, *_: object) -> tuple[ReproduceSettings, str] | None:
    values = _thin(s.steer_values, {0.0})
    if values == s.steer_values:
        return None
    return (replace(s, steer_values=values),
            f"steering: {len(values)} values (every other one of {len(s.steer_values)})")


def _cut_bootstrap(s: ReproduceSettings, *_: object) -> tuple[ReproduceSettings, str] | None:
    if s.align_bootstrap <= 100:
        return None
    return (replace(s, align_bootstrap=100),
            f"alignment: 100 bootstrap resamples (of {s.align_bootstrap})")


#: The ablation rows a budget keeps: the unit and the two architectures at matched L0.
KEPT_ABLATIONS: tuple[str, ...] = ("items", "topk", "jumprelu")


def _cut_ablations(s: ReproduceSettings, *_: object) -> tuple[ReproduceSettings, str] | None:
    kept = tuple(kind for kind in s.ablations if kind in KEPT_ABLATIONS)
    if kept == s.ablations:
        return None
    return (replace(s, ablations=kept),
            f"ablations: {', '.join(kept) or 'none'} only (of {', '.join(s.ablations)})")


#: Fewest GPTRec epochs a budget may leave (fewer would not be the paper's model at all).
MIN_EPOCHS = 10
#: Shortest Table-1 SAE training a budget may leave.
MIN_TABLE1_STEPS = 500


def _cut_epochs(s: ReproduceSettings, size: WorkSize, budget: float, cost: CostModel
                ) -> tuple[ReproduceSettings, str] | None:
    others = sum(v for k, v in estimate_seconds(s, size, cost).items() if k != "train")
    per_epoch = max(size.train_tokens * cost.gptrec_token_epoch, 1e-9)
    epochs = max(MIN_EPOCHS, int((budget - others) // per_epoch))
    if epochs >= s.epochs:
        return None
    return (replace(s, epochs=epochs),
            f"GPTRec: at most {epochs} epochs (of {s.epochs}; about "
            f"{per_epoch:.0f} s each)")


def _cut_table1_steps(s: ReproduceSettings, *_: object) -> tuple[ReproduceSettings, str] | None:
    steps = max(MIN_TABLE1_STEPS, s.table1_steps // 2)
    if steps >= s.table1_steps:
        return None
    return (replace(s, table1_steps=steps),
            f"Table 1: {steps} training steps per SAE (of {s.table1_steps})")


#: The cuts, in the order they are applied, with the settings each one changes.
CUTS: tuple[tuple[Cut, tuple[str, ...]], ...] = (
    (_cut_table1_seeds, ("table1_seeds",)),
    (_cut_steer_modes, ("steer_modes",)),
    (_cut_table1_grid, ("table1_l1", "table1_d_sae")),
    (_cut_steer_values, ("steer_values",)),
    (_cut_bootstrap, ("align_bootstrap",)),
    (_cut_ablations, ("ablations",)),
    (_cut_epochs, ("epochs",)),
    (_cut_table1_steps, ("table1_steps",)),
)


@dataclass(frozen=True)
class BudgetPlan:
    """The settings that fit a budget and how they were reached.

    Attributes:
        settings: the settings to run (recording ``budget_minutes`` and ``budget_cuts``).
        estimate: estimated seconds per step with those settings.
        cuts: one line per cut applied, in order.
    """

    settings: ReproduceSettings
    estimate: dict[str, float]
    cuts: tuple[str, ...]

    @property
    def total_seconds(self) -> float:
        """The estimated wall time of every step together."""
        return float(sum(self.estimate.values()))


def fit_budget(settings: ReproduceSettings, minutes: float, size: WorkSize, *,
               fixed: Collection[str] = (), cost: CostModel | None = None) -> BudgetPlan:
    """Cut ``settings`` (never the fields in ``fixed``) until the estimate fits ``minutes``.

    Args:
        settings: the settings asked for (a preset with the user's overrides).
        minutes: the wall-time budget of the whole pipeline.
        size: the split's sizes (:func:`work_size`).
        fixed: settings the user set explicitly; no cut touches them.
        cost: seconds per unit of work (default: :class:`CostModel`'s measurements).

    Returns:
        The plan; its settings carry the budget and the cuts (none when nothing was cut).

    Raises:
        ValueError: ``minutes`` is not positive, or even every allowed cut leaves an estimate
            over the budget (the message gives the smallest estimate and what was kept).
    """
    if not minutes > 0:
        raise ValueError(f"--budget must be a positive number of minutes, got {minutes!r}")
    cost = cost or CostModel()
    budget = 60.0 * minutes
    current, cuts = settings, []
    for cut, touches in CUTS:
        if sum(estimate_seconds(current, size, cost).values()) <= budget:
            break
        if set(touches) & set(fixed):
            continue
        applied = cut(current, size, budget, cost)
        if applied is not None:
            current, line = applied
            cuts.append(line)
    estimate = estimate_seconds(current, size, cost)
    total = sum(estimate.values())
    if total > budget:
        kept = sorted(set(fixed)) or ["nothing"]
        raise ValueError(
            f"a budget of {minutes:g} min is too small: with every allowed cut the estimate "
            f"is {total / 60:.1f} min (GPTRec {estimate['train'] / 60:.0f} min at "
            f"{current.epochs} epochs); settings you fixed: {', '.join(kept)}. Give a larger "
            "--budget, or smaller explicit settings (e.g. --epochs, --table1-d-sae)")
    planned = replace(current, budget_minutes=float(minutes), budget_cuts=tuple(cuts))
    return BudgetPlan(settings=planned, estimate=estimate, cuts=tuple(cuts))


def load_split(settings: ReproduceSettings, data_dir: str | os.PathLike | None = None, *,
               download: bool = True) -> tuple[Dataset, Split]:
    """The dataset and split ``settings`` names, made as the pipeline makes them (full
    histories; :class:`~mechrec_recsys.report.steps.StepContext`).

    Budget cuts never change the dataset, split or seed: the pair serves both
    :func:`plan_budget` and :func:`~mechrec_recsys.report.run_pipeline`, so a budgeted run
    loads the data once.
    """
    from mechrec_recsys.data import load_dataset
    from mechrec_recsys.data.splits import make_split
    from mechrec_recsys.experiment import FULL_HISTORY

    dataset = load_dataset(settings.dataset, data_dir, download=download)
    split = make_split(dataset, settings.split, seed=settings.seed, max_len=FULL_HISTORY)
    return dataset, split


def plan_budget(settings: ReproduceSettings, minutes: float, *,
                data_dir: str | os.PathLike | None = None, download: bool = True,
                fixed: Collection[str] = (), cost: CostModel | None = None,
                split: Split | None = None) -> BudgetPlan:
    """:func:`fit_budget` on the sizes of the split ``settings`` names.

    Args:
        settings: the settings asked for.
        minutes: the wall-time budget.
        data_dir: folder holding the dataset (default: ``$MECHREC_DATA``, cache, download).
        download: allow downloading the dataset when no local copy exists.
        fixed: settings the user set explicitly.
        cost: seconds per unit of work.
        split: that split, when the caller has loaded it (:func:`load_split`); by default
            the dataset is loaded and split here.
    """
    if split is None:
        _, split = load_split(settings, data_dir, download=download)
    return fit_budget(settings, minutes, work_size(split, settings.max_len), fixed=fixed,
                      cost=cost)
