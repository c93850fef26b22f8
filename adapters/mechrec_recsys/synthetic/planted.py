"""Score features against a synthetic world's planted truth instead of catalog labels.

A catalog labels an item with all its genres; a world also records, for every event, the one
genre the user's taste chose (``events.genre``, ``-1`` for franchise continuations and
popularity picks). :func:`planted_attributes` turns that per-event truth into
:class:`mechrec.study.RowAttributes` for a run trained on the world, so the core's honest
alignment (choose on the SAE users, score on the test users, beside neurons and a random
control) asks "which feature fires when the user is *acting on* a taste for Horror", not
"which feature fires on items labelled Horror"::

    experiment = Experiment.open("runs/world-1m")          # trained on a world folder
    run = align(experiment, sae, select="sae_train", score="test",
                attributes=planted_attributes(experiment))

Every activation row is joined to its event through the split's users and the row's
position (a sequence truncated to its last ``n`` items starts at order ``length - n``), and
the join is checked: the event's item must be the row's input item.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from mechrec.activations import ActivationSet
from mechrec.study import RowAttributes
from mechrec_recsys.data.movielens import is_world
from mechrec_recsys.experiment import Experiment
from mechrec_recsys.synthetic.files import read_truth

__all__ = ["PLANTED", "PlantedTruth", "planted_attributes"]

PLANTED: dict[str, str] = {"genre": "planted genre", "era": "planted era"}
"""Planted factors that label events: ``events`` column -> attribute group."""


class PlantedTruth:
    """A world's per-event truth joined to the activation rows of a run trained on it.

    Args:
        experiment: a run whose dataset is a world (``mechrec train WORLD_FOLDER``).
        world: the world folder (default: the run's dataset).
    """

    def __init__(self, experiment: Experiment, world: str | Path | None = None) -> None:
        folder = experiment.spec.dataset if world is None else str(world)
        if not is_world(folder):
            raise ValueError(f"{folder} is not a synthetic world folder: planted truth exists "
                             "only for runs trained on `mechrec data synth` worlds (pass "
                             "world=FOLDER if the run's world moved)")
        self.experiment = experiment
        self.folder = Path(folder)

    @cached_property
    def _truth(self):
        return read_truth(self.folder, event_columns=["user_id", "order", "genre", "era"])

    @cached_property
    def _items(self) -> np.ndarray:
        return pd.read_parquet(self.folder / "interactions.parquet",
                               columns=["item_id"])["item_id"].to_numpy()

    def names(self, factor: str) -> list[str]:
        """The planted values of ``factor`` (``genre`` or ``era``), in index order."""
        return list(self._truth.info[f"{factor}s"])

    def event_rows(self, part: str, acts: ActivationSet) -> np.ndarray:
        """The world's event row of every activation row of split part ``part``.

        Raises:
            ValueError: the rows' input items are not the events' items (the run was not
                trained on this world, or its sequences are not the world's prefixes).
        """
        sequences = self.experiment.part(part)
        index = acts.sequence_index.cpu().numpy()
        lengths = sequences.lengths()[index]
        shown = np.minimum(lengths, int(self.experiment.model.cfg.n_ctx))
        order = lengths - shown + acts.position.cpu().numpy()
        users = np.asarray(sequences.users)[index].astype(np.int64)
        tokens = acts.token.cpu().numpy()
        expected = np.asarray(self.experiment.vocab.item_ids)[tokens - 1]  # token 0 pads
        fix = "the run was not trained on this world (pass world=FOLDER of its world)"
        try:
            rows = self._truth.rows(users, order)
        except IndexError as error:  # users or positions this world lacks
            raise ValueError(f"activation rows of part {part!r} do not hold the item of their "
                             f"event in {self.folder} ({error}): {fix}") from None
        wrong = int((self._items[rows] != expected).sum())
        if wrong:
            raise ValueError(f"{wrong} of {len(order)} activation rows of part {part!r} do not "
                             f"hold the item of their event in {self.folder}: {fix}")
        return rows

    def labels(self, part: str, acts: ActivationSet, factors: tuple[str, ...]) -> pd.DataFrame:
        """0/1 labels: one column per planted value of each factor (``Horror``, ...)."""
        rows = self.event_rows(part, acts)
        columns: dict[str, np.ndarray] = {}
        for factor in factors:
            value = self._truth.events[factor].to_numpy()[rows]
            for i, name in enumerate(self.names(factor)):
                columns[_column(factor, name, factors)] = value == i
        return pd.DataFrame(columns)

    def attributes(self, factors: tuple[str, ...] = ("genre",)) -> RowAttributes:
        """The planted factors as :class:`~mechrec.study.RowAttributes` for alignment."""
        unknown = [f for f in factors if f not in PLANTED]
        if unknown or not factors:
            raise ValueError(f"unknown planted factors {unknown or list(factors)}; choose from "
                             f"{', '.join(PLANTED)}")
        groups = {_column(f, n, factors): PLANTED[f] for f in factors for n in self.names(f)}
        return RowAttributes(lambda part, acts: self.labels(part, acts, factors), groups,
                             name=" and ".join(PLANTED[f] for f in factors))


def _column(factor: str, name: str, factors: tuple[str, ...]) -> str:
    """A genre keeps its name; with several factors, eras are prefixed (``era 1990s``)."""
    return name if factor == "genre" or len(factors) == 1 else f"{factor} {name}"


def planted_attributes(experiment: Experiment, world: str | Path | None = None,
                       factors: tuple[str, ...] = ("genre",)) -> RowAttributes:
    """The planted truth of the world ``experiment`` was trained on, as row attributes.

    ``PlantedTruth(experiment, world).attributes(factors)``: pass the result as
    ``attributes=`` to :func:`mechrec.alignment.align`.
    """
    return PlantedTruth(experiment, world).attributes(tuple(factors))
