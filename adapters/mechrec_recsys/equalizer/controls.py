"""The equalizer's sliders: one genre each, its SAE feature and (optionally) its probe direction.

How a slider value becomes an edit at the SAE's hook (last position only):

- ``"sae"``: every non-zero slider adds its value to its genre's SAE feature, with the SAE's
  error term kept (:class:`~mechrec.steering.FeatureEdit` with ``mode="add"``,
  ``keep_error=True``). The activation moves by ``value x`` the feature's decoder direction and
  nothing else changes, so all sliders at 0 give exactly the unsteered model. (The paper *sets*
  the feature and *replaces* the activation by the SAE reconstruction; then even "no change"
  is not the original model. An equalizer needs a neutral position, hence the shift.) Two
  genres whose best feature is the same one add up on that feature.
- ``"probe"``: every non-zero slider adds ``value x`` its genre's logistic-probe direction,
  scaled to unit variance of the SAE-training activations
  (:class:`~mechrec.steering.DirectionEdit`, paper 8.2.3), so one unit is one standard
  deviation of the activations along the probe.

Each genre's feature is the existing choice of
:func:`mechrec_recsys.steering.select_genre_features` (best correlation on the SAE-training
users); the probes come from :func:`mechrec_recsys.steering.fit_genre_probes`, fitted on at
most :data:`DEFAULT_PROBE_ROWS` SAE-training rows by default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mechrec.hooks import output_hook
from mechrec.saes import NormalizedSAE
from mechrec.steering import Direction, DirectionEdit, Edit, FeatureEdit
from mechrec_recsys.equalizer.errors import EqualizerInputError
from mechrec_recsys.experiment import Experiment
from mechrec_recsys.steering import (
    fit_genre_probes,
    genre_key,
    resolve_genres,
    select_genre_features,
)

#: Steering methods a request may name.
METHODS: tuple[str, ...] = ("sae", "probe")
#: Default slider range: the paper's grid runs from -10 to 10 (section 8.2.1).
DEFAULT_MAX_VALUE = 10.0
#: Default cap on the SAE-training rows each probe is fitted on: enough for a stable linear
#: direction at the model widths of the paper, and seconds rather than minutes on ml-1m and
#: larger (the unit-variance scale still uses every row).
DEFAULT_PROBE_ROWS = 50_000
#: Catalog columns that are "no genre" markers, not genres (ml-100k, ml-20m and later).
NOT_GENRES: frozenset[str] = frozenset({genre_key("unknown"), genre_key("(no genres listed)")})


@dataclass(frozen=True)
class GenreControl:
    """One slider.

    Attributes:
        genre: the dataset's genre column (the name the API uses).
        feature: the SAE feature the slider shifts.
        correlation_select: the feature's correlation with the genre on the SAE-training users
            (where it was chosen).
        correlation_test: the same on the test users.
        probe: the unit-variance probe direction, or ``None`` (probes not fitted, or this
            genre's probe was skipped).
        probe_auc: the probe's ROC AUC on the test users' activations, when there is a probe.
    """

    genre: str
    feature: int
    correlation_select: float
    correlation_test: float
    probe: Direction | None = None
    probe_auc: float | None = None

    def describe(self, shared_with: Sequence[str] = ()) -> dict[str, Any]:
        """JSON-ready description for ``/api/meta``."""
        return {
            "genre": self.genre,
            "feature": self.feature,
            "correlation_select": _finite_or_none(self.correlation_select),
            "correlation_test": _finite_or_none(self.correlation_test),
            "probe": self.probe is not None,
            "probe_auc": _finite_or_none(self.probe_auc),
            "feature_shared_with": list(shared_with),
        }


def default_genres(experiment: Experiment) -> list[str]:
    """Every genre column of the run's catalog except "no genre" markers (``unknown``...)."""
    return [g for g in experiment.genre_names if genre_key(g) not in NOT_GENRES]


def build_controls(
    experiment: Experiment,
    sae: NormalizedSAE,
    genres: Sequence[str] | None = None,
    *,
    probes: bool = True,
    probe_rows: int | None = DEFAULT_PROBE_ROWS,
) -> tuple[list[GenreControl], list[str]]:
    """Choose each genre's SAE feature (and fit its probe) for the sliders.

    Args:
        experiment: the run.
        sae: an SAE at one of the model's hooks.
        genres: genre names (``Children`` finds ``Children's``; see
            :func:`~mechrec_recsys.steering.resolve_genres`); default :func:`default_genres`.
        probes: also fit logistic probes, for the ``"probe"`` method.
        probe_rows: fit each probe on at most this many SAE-training rows drawn at random
            (``None``: every row), so that big datasets start the page quickly; see
            :func:`~mechrec_recsys.steering.fit_genre_probes`.

    Returns:
        ``(controls, notes)``: the sliders in request order, and one line per genre left out
        or probe skipped, with the reason (not in this dataset, no feature with a defined
        correlation, no positive training rows for the probe).

    Raises:
        ValueError: an unknown genre name, or no genre left.
    """
    requested = default_genres(experiment) if genres is None else list(genres)
    notes: list[str] = []
    resolved = resolve_genres(requested, experiment.genre_names, notes=notes)
    chosen = select_genre_features(experiment, sae, resolved, notes=notes)
    probe_set = fit_genre_probes(experiment, output_hook(sae), list(chosen["column"]),
                                 max_train_rows=probe_rows, notes=notes) if probes else None
    notes = list(dict.fromkeys(" ".join(note.split()) for note in notes))
    aucs: dict[str, float] = {}
    if probe_set is not None and "test_roc_auc" in probe_set.metrics:
        aucs = dict(zip(probe_set.metrics["attribute"], probe_set.metrics["test_roc_auc"],
                        strict=True))
    controls = []
    seen: set[str] = set()
    for row in chosen.itertuples(index=False):
        column = str(row.column)
        if column in seen:  # two requested spellings of one genre
            continue
        seen.add(column)
        has_probe = probe_set is not None and column in probe_set.probes
        controls.append(GenreControl(
            genre=column,
            feature=int(row.feature),
            correlation_select=float(row.correlation_select),
            correlation_test=float(row.correlation_test),
            probe=probe_set.direction(column) if has_probe else None,
            probe_auc=float(aucs[column]) if has_probe and column in aucs else None,
        ))
    return controls, notes


class Equalizer:
    """The slider set: validates slider values and turns them into steering edits.

    Args:
        sae: the SAE whose features the sliders shift.
        controls: the sliders (:func:`build_controls`).
        max_value: sliders accept values in ``[-max_value, max_value]``.
    """

    def __init__(self, sae: NormalizedSAE, controls: Sequence[GenreControl],
                 max_value: float = DEFAULT_MAX_VALUE) -> None:
        if not controls:
            raise ValueError("the equalizer needs at least one genre slider")
        if not (isinstance(max_value, int | float) and math.isfinite(max_value)
                and max_value > 0):
            raise ValueError(f"max_value must be a positive finite number, got {max_value!r}")
        self.sae = sae
        self.hook_name: str = output_hook(sae)  # where the edits apply (a transcoder's output)
        self.max_value = float(max_value)
        self.controls: dict[str, GenreControl] = {c.genre: c for c in controls}
        self._by_key: dict[str, str] = {}
        for genre in self.controls:
            self._by_key.setdefault(genre_key(genre), genre)

    @property
    def genres(self) -> list[str]:
        """Slider genres, in display order."""
        return list(self.controls)

    @property
    def probes_available(self) -> bool:
        """Whether any slider has a probe direction."""
        return any(c.probe is not None for c in self.controls.values())

    def describe(self) -> list[dict[str, Any]]:
        """One JSON-ready description per slider (which other sliders share its feature)."""
        by_feature: dict[int, list[str]] = {}
        for control in self.controls.values():
            by_feature.setdefault(control.feature, []).append(control.genre)
        return [control.describe([g for g in by_feature[control.feature] if g != control.genre])
                for control in self.controls.values()]

    def resolve(self, name: Any) -> str:
        """The slider genre a request names: exact, else ignoring case and punctuation."""
        if not isinstance(name, str):
            raise EqualizerInputError(f"genre names must be strings, got {name!r}")
        if name in self.controls:
            return name
        found = self._by_key.get(genre_key(name))
        if found is None:
            raise EqualizerInputError(
                f"unknown genre {name!r}; the equalizer's genres are: {', '.join(self.genres)}"
            )
        return found

    def parse_values(self, values: Any) -> dict[str, float]:
        """Check slider values; return the non-zero ones by genre, in slider order.

        Args:
            values: ``{genre: number}``; genres left out stay at 0.

        Raises:
            EqualizerInputError: not a mapping, an unknown or repeated genre, a value that is
                not a finite number or lies outside ``[-max_value, max_value]``.
        """
        if values is None:
            return {}
        if not isinstance(values, Mapping):
            raise EqualizerInputError(
                f"'values' must be an object mapping genres to numbers, e.g. "
                f'{{"{self.genres[0]}": 2.0}}; got {type(values).__name__}'
            )
        parsed: dict[str, float] = {}
        for name, raw in values.items():
            genre = self.resolve(name)
            if genre in parsed:
                raise EqualizerInputError(f"genre {genre!r} is given twice (as {name!r} too)")
            parsed[genre] = self._check_value(genre, raw)
        return {g: parsed[g] for g in self.controls if parsed.get(g, 0.0) != 0.0}

    def _check_value(self, genre: str, raw: Any) -> float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise EqualizerInputError(
                f"value for {genre!r} must be a number, got {raw!r}"
            )
        value = float(raw)
        if not math.isfinite(value):
            raise EqualizerInputError(f"value for {genre!r} must be finite, got {raw!r}")
        if abs(value) > self.max_value:
            raise EqualizerInputError(
                f"value {value:g} for {genre!r} is outside the allowed range "
                f"[{-self.max_value:g}, {self.max_value:g}]"
            )
        return value

    def edits(self, values: Mapping[str, float], method: str) -> list[Edit]:
        """The edits at :attr:`hook_name` for checked, non-zero values (empty: unsteered).

        Raises:
            EqualizerInputError: unknown method, or a probe value for a genre without a probe.
        """
        if method not in METHODS:
            raise EqualizerInputError(
                f"unknown method {method!r}; choose {' or '.join(repr(m) for m in METHODS)}"
            )
        active = {g: float(v) for g, v in values.items() if v != 0.0}
        if not active:
            return []
        if method == "sae":
            shifts: dict[int, float] = {}
            for genre, value in active.items():
                feature = self.controls[genre].feature
                shifts[feature] = shifts.get(feature, 0.0) + value
            shifts = {f: v for f, v in shifts.items() if v != 0.0}
            if not shifts:
                return []
            return [FeatureEdit(self.sae, shifts, mode="add", keep_error=True)]
        missing = [g for g in active if self.controls[g].probe is None]
        if missing:
            reason = "probes were not fitted for this session" if not self.probes_available \
                else "their probes could not be fitted"
            raise EqualizerInputError(
                f"no probe direction for {', '.join(missing)} ({reason}); use method 'sae' "
                "or leave those sliders at 0"
            )
        return [DirectionEdit(self.controls[g].probe, v) for g, v in active.items()]


def _finite_or_none(value: float | None) -> float | None:
    """``None`` for missing or non-finite numbers (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
