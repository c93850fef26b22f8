"""Read a run folder's saved outputs for the report, never failing on a missing one.

Every accessor of :class:`RunOutputs` returns the parsed file or raises
:class:`MissingOutput`, which names the file, why it cannot be used and which pipeline step
writes it; the report turns that into a note instead of crashing.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mechrec_recsys.report.layout import DEFAULT_SAE_NAME, RunLayout

if TYPE_CHECKING:  # pragma: no cover - the SAE glue (torch) loads when Table 1 is read
    from mechrec_recsys.saes import Table1


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

    def alignment_table(self, stem: str) -> pd.DataFrame:
        """An alignment CSV (``per_genre``, ``summary``, ``comparison``,
        ``bootstrap_intervals``, ``bootstrap_differences``, ...)."""
        return _csv(self.layout.alignment_dir / f"{stem}.csv", "align")

    @cached_property
    def alignment_meta(self) -> dict[str, Any]:
        """``alignment.json`` (rows, hook, notes)."""
        return _json(self.layout.alignment_dir / "alignment.json", "align")

    @cached_property
    def alignment_bootstrap(self) -> dict[str, Any]:
        """``bootstrap.json`` of the alignment (resamples, confidence, headline intervals)."""
        return _json(self.layout.alignment_dir / "bootstrap.json", "align")

    def steering_table(self, name: str) -> pd.DataFrame:
        """A steering CSV (``target_share``, ``features``, ``probes``, ``monotonicity``)."""
        return _csv(self.layout.steering_dir / f"{name}.csv", "steer")

    @cached_property
    def steering_summary(self) -> dict[str, Any]:
        """``summary.json`` of the sweep (metadata, reference rows)."""
        return _json(self.layout.steering_dir / "summary.json", "steer")
