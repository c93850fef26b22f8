"""Where every output of ``mechrec reproduce`` lives inside a run folder.

The library steps write where their own CLI commands write, so a folder built step by step
with ``mechrec train`` / ``sae`` / ``align`` / ``steer`` renders too::

    RUN_DIR/run.json, model/, metrics.json     GPTRec vs popularity   (mechrec train)
    RUN_DIR/table1.csv, table1.json            Table 1                (mechrec sae table1)
    RUN_DIR/saes/<name>/                       the analysis SAE       (mechrec sae train)
    RUN_DIR/saes/<name>/alignment/             Table 2, Figure 4      (mechrec align tables)
    RUN_DIR/steering/<name>/                   steering curves        (mechrec steer sweep)
    RUN_DIR/reproduce/                         settings, step records, provenance, dataset
                                               statistics, SAE metrics (mechrec reproduce)
    RUN_DIR/report.html                        the report             (mechrec report)
"""

from __future__ import annotations

from pathlib import Path

#: Sub-folder holding the files only ``mechrec reproduce`` writes.
REPRODUCE_DIR = "reproduce"
SETTINGS_FILE = "settings.json"
STEPS_FILE = "steps.json"
PROVENANCE_FILE = "provenance.json"
DATASET_STATS_FILE = "dataset_statistics.csv"
SPLIT_INFO_FILE = "split.json"
SAE_METRICS_FILE = "sae.json"
REPORT_FILE = "report.html"
#: SAE folder name used when a run folder records none.
DEFAULT_SAE_NAME = "paper"


class RunLayout:
    """Paths of one run folder's outputs (nothing is created or checked here).

    Args:
        run_dir: the run folder.
        sae_name: folder name of the analysis SAE under ``RUN_DIR/saes``.
    """

    def __init__(self, run_dir: str | Path, sae_name: str = DEFAULT_SAE_NAME) -> None:
        self.run_dir = Path(run_dir)
        self.sae_name = sae_name

    @property
    def reproduce_dir(self) -> Path:
        """``RUN_DIR/reproduce``."""
        return self.run_dir / REPRODUCE_DIR

    @property
    def settings(self) -> Path:
        """The settings of the last ``mechrec reproduce`` run."""
        return self.reproduce_dir / SETTINGS_FILE

    @property
    def steps(self) -> Path:
        """The step records (settings digest, wall time, completion token per step)."""
        return self.reproduce_dir / STEPS_FILE

    @property
    def provenance(self) -> Path:
        """Package versions and platform of the last ``mechrec reproduce`` run."""
        return self.reproduce_dir / PROVENANCE_FILE

    @property
    def dataset_statistics(self) -> Path:
        """:func:`mechrec_recsys.data.dataset_statistics` of the dataset and split (CSV)."""
        return self.reproduce_dir / DATASET_STATS_FILE

    @property
    def split_info(self) -> Path:
        """The split's bookkeeping (``Split.info``) as JSON."""
        return self.reproduce_dir / SPLIT_INFO_FILE

    @property
    def run_spec(self) -> Path:
        """``run.json`` (how the split was made)."""
        return self.run_dir / "run.json"

    @property
    def model_config(self) -> Path:
        """The best GPTRec checkpoint's config (written last when training ends)."""
        return self.run_dir / "model" / "config.json"

    @property
    def metrics(self) -> Path:
        """GPTRec vs popularity on the test users (``metrics.json``)."""
        return self.run_dir / "metrics.json"

    @property
    def table1_csv(self) -> Path:
        """Table 1 as CSV (the table's lines, for people and spreadsheets)."""
        return self.run_dir / "table1.csv"

    @property
    def table1_json(self) -> Path:
        """Table 1 as its result object's JSON (rows, every run, settings, grid, seeds):
        what ``mechrec_recsys.saes.Table1.load`` reads and the report shows."""
        return self.run_dir / "table1.json"

    @property
    def sae_dir(self) -> Path:
        """The analysis SAE (sae-lens format plus normaliser)."""
        return self.run_dir / "saes" / self.sae_name

    @property
    def sae_metrics(self) -> Path:
        """The analysis SAE's configuration and test-set reconstruction metrics."""
        return self.reproduce_dir / SAE_METRICS_FILE

    @property
    def alignment_dir(self) -> Path:
        """Alignment tables of the analysis SAE (``mechrec align tables``' default folder)."""
        return self.sae_dir / "alignment"

    @property
    def ablations_dir(self) -> Path:
        """Ablation rows of the analysis SAE (``mechrec align ablations``' default folder)."""
        return self.sae_dir / "ablations"

    @property
    def steering_dir(self) -> Path:
        """Steering tables of the analysis SAE (``mechrec steer sweep``' default folder)."""
        return self.run_dir / "steering" / self.sae_name

    @property
    def report(self) -> Path:
        """The HTML report's default path."""
        return self.run_dir / REPORT_FILE
