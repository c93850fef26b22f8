"""Read a run folder's saved outputs for the report, never failing on a missing one.

Every accessor of :class:`RunOutputs` returns the parsed file, or the result object a step
saved (Table 1, the alignment run, the steering sweep: read by their own ``load``, never by
table file names), or raises :class:`MissingOutput`, which names the file, why it cannot be
used and which pipeline step writes it; the report turns that into a note instead of
crashing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mechrec_recsys.report.layout import DEFAULT_SAE_NAME, RunLayout

if TYPE_CHECKING:  # pragma: no cover - the result objects' modules (torch) load when read
    from mechrec.ablations import AblationTable
    from mechrec.alignment import AlignmentRun
    from mechrec_recsys.saes import Table1
    from mechrec_recsys.steering import GenreSweep


class MissingOutput(Exception):
    """A run output the report needs is absent or unreadable.

    Attributes:
        path: the file.
        step: the pipeline step that writes it.
        reason: ``"missing"`` or a short parse error.
    """

    def __init__(self, path: Path, step: str, reason: str = "missing") -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.step = step
        self.reason = reason


def _json(path: Path, step: str) -> Any:
    if not path.is_file():
        raise MissingOutput(path, step)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise MissingOutput(path, step, f"unreadable ({exc})") from None
    except json.JSONDecodeError as exc:
        raise MissingOutput(path, step, f"invalid JSON at line {exc.lineno}, column "
                                        f"{exc.colno}") from None


def _csv(path: Path, step: str, **kwargs: Any) -> pd.DataFrame:
    if not path.is_file():
        raise MissingOutput(path, step)
    try:
        return pd.read_csv(path, **kwargs)
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        raise MissingOutput(path, step, f"unreadable CSV ({' '.join(str(exc).split())})"
                            ) from None


@dataclass(frozen=True)
class SavedBootstrap:
    """The alignment's saved bootstrap as the report shows it: what
    :class:`~mechrec.alignment.AlignmentRun` makes of its ``saved_bootstrap``."""

    confidence: float
    """Coverage of the intervals."""
    intervals: pd.DataFrame
    """:meth:`~mechrec.alignment.AlignmentRun.interval_table`."""
    differences: pd.DataFrame
    """:meth:`~mechrec.alignment.AlignmentRun.difference_table`."""
    meta: dict[str, Any]
    """:meth:`~mechrec.alignment.AlignmentRun.bootstrap_meta` (resamples, unit, method)."""


class RunOutputs:
    """Lazy, cached access to everything the steps wrote into one run folder.

    Args:
        run_dir: the run folder.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.layout = RunLayout(self.run_dir, self._sae_name())

    def _sae_name(self) -> str:
        try:
            name = _json(RunLayout(self.run_dir).settings, "reproduce").get("sae_name")
        except (MissingOutput, AttributeError):
            return DEFAULT_SAE_NAME
        return str(name) if name else DEFAULT_SAE_NAME

    # ------------------------------------------------------------------ reproduce/
    @cached_property
    def settings(self) -> dict[str, Any]:
        """``reproduce/settings.json``."""
        return _json(self.layout.settings, "reproduce")

    @cached_property
    def steps(self) -> dict[str, Any]:
        """``reproduce/steps.json``'s step records."""
        return dict(_json(self.layout.steps, "reproduce").get("steps", {}))

    @cached_property
    def provenance(self) -> dict[str, Any]:
        """``reproduce/provenance.json``."""
        return _json(self.layout.provenance, "reproduce")

    @cached_property
    def dataset_statistics(self) -> pd.DataFrame:
        """Dataset statistics, indexed by statistic."""
        return _csv(self.layout.dataset_statistics, "data", index_col=0)

    @cached_property
    def split_info(self) -> dict[str, Any]:
        """The split's bookkeeping."""
        return _json(self.layout.split_info, "data")

    @cached_property
    def sae_metrics(self) -> dict[str, Any]:
        """The analysis SAE's configuration and test metrics."""
        return _json(self.layout.sae_metrics, "sae")

    # ------------------------------------------------------------------ library outputs
    @cached_property
    def run_spec(self) -> dict[str, Any]:
        """``run.json``."""
        return _json(self.layout.run_spec, "train")

    @cached_property
    def metrics(self) -> dict[str, Any]:
        """``metrics.json``: GPTRec vs popularity."""
        return _json(self.layout.metrics, "train")

    @cached_property
    def table1(self) -> Table1:
        """Table 1 as its result object (:meth:`mechrec_recsys.saes.Table1.load` of
        ``table1.json``; a file from an earlier version is read too). A folder holding only
        ``table1.csv``, or a damaged JSON, is a missing output whose reason says to re-run
        the step."""
        from mechrec_recsys.saes import Table1

        path = self.layout.table1_json
        try:
            return Table1.load(path)
        except FileNotFoundError as exc:
            if not self.layout.table1_csv.is_file():
                raise MissingOutput(path, "table1") from None
            raise MissingOutput(path, "table1", " ".join(str(exc).split())) from None
        except (OSError, ValueError) as exc:
            raise MissingOutput(path, "table1", " ".join(str(exc).split())) from None

    @cached_property
    def alignment(self) -> AlignmentRun:
        """The alignment as its result object (:meth:`mechrec.alignment.AlignmentRun.load` of
        the folder's ``run.npz``): Table 2, the summary, Figures 2 and 4 and the bootstrap
        are its tables. A folder holding only the CSV tables (written before the run was saved
        whole), or a damaged ``run.npz``, is a missing output whose reason says to rerun the
        step."""
        from mechrec.alignment import AlignmentRun
        from mechrec.alignment.persist import RUN_FILE

        folder = self.layout.alignment_dir
        path = folder / RUN_FILE
        try:
            return AlignmentRun.load(folder)
        except FileNotFoundError:
            if (folder / "alignment.json").is_file():
                raise MissingOutput(path, "align", "missing (the tables beside it were "
                                    "written before the run was saved whole: rerun the align "
                                    "step)") from None
            raise MissingOutput(path, "align") from None
        except (OSError, KeyError, ValueError) as exc:
            raise MissingOutput(path, "align", " ".join(str(exc).split())) from None

    @cached_property
    def alignment_bootstrap(self) -> SavedBootstrap:
        """The bootstrap saved with :attr:`alignment`, as its tables; a run saved without one
        (``align_bootstrap`` 0, or a ``run.npz`` older than the kept bootstrap) is a missing
        output."""
        from mechrec.alignment.persist import RUN_FILE

        run = self.alignment
        boot, confidence = run.saved_bootstrap, run.saved_confidence
        if boot is None:
            raise MissingOutput(self.layout.alignment_dir / RUN_FILE, "align",
                                "saved without a bootstrap (align_bootstrap 0, or saved "
                                "before run.npz kept it: rerun the align step)")
        return SavedBootstrap(confidence=confidence,
                              intervals=run.interval_table(boot, confidence),
                              differences=run.difference_table(boot, confidence),
                              meta=run.bootstrap_meta(boot, confidence))

    @cached_property
    def ablations(self) -> AblationTable:
        """The ablation rows as their result object
        (:meth:`mechrec.ablations.AblationTable.load` of ``ablations.json``); a missing or
        damaged file is a missing output whose reason says to rerun the step."""
        from mechrec.ablations import TABLE_JSON, AblationTable

        folder = self.layout.ablations_dir
        try:
            return AblationTable.load(folder)
        except FileNotFoundError:
            raise MissingOutput(folder / TABLE_JSON, "ablations") from None
        except (OSError, KeyError, ValueError) as exc:
            raise MissingOutput(folder / TABLE_JSON, "ablations",
                                " ".join(str(exc).split())) from None

    @cached_property
    def steering(self) -> GenreSweep:
        """The steering sweep as its result object
        (:meth:`mechrec_recsys.steering.GenreSweep.load` of the folder's ``sweep.json``,
        ``features.csv`` and ``probes.csv``). A folder without ``sweep.json`` or with a
        damaged one is a missing output whose reason says to rerun the step."""
        from mechrec_recsys.steering import GenreSweep

        folder = self.layout.steering_dir
        path = folder / "sweep.json"
        try:
            return GenreSweep.load(folder)
        except FileNotFoundError:
            if path.is_file():  # the sweep's table is there, its chosen features are not
                raise MissingOutput(folder / "features.csv", "steer") from None
            if (folder / "summary.json").is_file():
                raise MissingOutput(path, "steer", "missing (the tables beside it were "
                                    "written before the sweep was saved whole: rerun the "
                                    "steer step)") from None
            raise MissingOutput(path, "steer") from None
        except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
            raise MissingOutput(path, "steer", " ".join(str(exc).split())) from None
