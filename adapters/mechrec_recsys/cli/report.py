"""``mechrec reproduce`` and ``mechrec report``: the whole paper into one HTML report.

Commands:

* ``mechrec reproduce --dataset ml-100k --split paper --seed 0 --out RUN_DIR [--quick]
  [size options] [--budget MINUTES]``: run every step of the paper into ``RUN_DIR`` (dataset
  statistics, GPTRec vs popularity, Table 1, the analysis SAE, Table 2 / Figure 4, steering
  curves), then write ``RUN_DIR/report.html`` and print its path. Each step is skipped when
  its outputs are already there with the same settings, so rerunning after an interruption
  loses no finished work. ``--quick`` runs every step at toy size (seconds); the default is
  the paper's settings of ``docs/reproducing-the-paper.md`` (hours on a 2-core CPU);
  ``--budget MINUTES`` cuts those to fit a wall-time budget and the report says what it cut.
* ``mechrec report RUN_DIR [--out FILE]``: re-render the HTML report from the run folder's
  saved outputs (a missing output becomes a note naming the command that produces it).

Bad input (unknown dataset or split, a run folder that does not exist, an output path that
cannot be written, a run folder holding results of other settings) prints one line
``error: ...`` to stderr and exits with code 2.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from mechrec_recsys.cli._common import (
    DataDirOption,
    DeviceOption,
    DownloadOption,
    LogToOption,
    MlflowExperimentOption,
    RunNameOption,
    WandbLogFrequencyOption,
    WandbProjectOption,
    fail,
    on_interrupt,
    rerun_command,
    tracking_fields,
)
from mechrec_recsys.cli._config_file import (
    ConfigOption,
    WriteConfigOption,
    effective_settings,
    with_config_file,
)
from mechrec_recsys.cli.params import FLOAT_LIST, INT_LIST, NAME_LIST, VALUE_GRID, parsed
from mechrec_recsys.configs import ABLATIONS


def _check_writable(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and prove a file can be written in it, or fail."""
    if folder.exists() and not folder.is_dir():
        fail(f"{what} {folder} exists and is not a folder; choose another path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".mechrec-write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        fail(f"cannot write to {what} {folder}: {exc.strerror or exc}; choose a writable "
             "folder")


def _tuple_or_none(values: Sequence[object] | None) -> tuple | None:
    """An option's parsed values as the tuple a setting takes (``None``: not given)."""
    return tuple(values) if values is not None else None


def _fit_budget(settings: Any, minutes: float, data_dir: Path | None, download: bool,
                given: dict[str, object], progress: bool) -> tuple[Any, dict[str, Any]]:
    """The settings cut to fit ``minutes`` (options in ``given`` that are set stay as given),
    and the dataset and split the plan read (``run_pipeline``'s ``dataset`` and ``split``:
    cuts never change them, so the run loads them once); prints the plan to stderr."""
    from mechrec_recsys.durations import format_duration
    from mechrec_recsys.report.budget import load_split, plan_budget

    fixed = [name for name, value in given.items() if value is not None]
    dataset, split = load_split(settings, data_dir, download=download)
    plan = plan_budget(settings, minutes, fixed=fixed, split=split)
    if progress:
        cuts = "; ".join(plan.cuts) or "nothing cut"
        steps = ", ".join(f"{name} {format_duration(seconds)}"
                          for name, seconds in plan.estimate.items())
        total = format_duration(plan.total_seconds)
        typer.echo(f"budget {minutes:g} min: {cuts}. Estimated {total} ({steps}; GPTRec at "
                   "its epoch cap)", err=True)
    return plan.settings, {"dataset": dataset, "split": split}


@with_config_file
def reproduce_command(
    cli: typer.Context,
    out: Path | None = typer.Option(None, "--out", help="run folder (created; reused to "
                                    "resume); required, on the command line or in --config"),
    dataset: str = typer.Option("ml-100k", "--dataset",
                                help="MovieLens dataset name or a synthetic world's folder"),
    split: str = typer.Option("paper", "--split", help="paper | random (splits with SAE "
                              "users)"),
    seed: int = typer.Option(0, "--seed", help="seed of the split, models and control"),
    quick: bool = typer.Option(False, "--quick", help="toy sizes: every step in seconds, for "
                               "a first look and tests (not the paper's numbers)"),
    epochs: int | None = typer.Option(None, "--epochs", help="GPTRec: maximum epochs"),
    d_model: int | None = typer.Option(None, "--d-model", help="GPTRec: hidden size"),
    n_layers: int | None = typer.Option(None, "--n-layers", help="GPTRec: transformer "
                                        "blocks"),
    table1_l1: Sequence[float] | None = typer.Option(
        None, "--table1-l1", **parsed(FLOAT_LIST), help="Table 1: L1 weights "
        "(comma-separated)"),
    table1_d_sae: Sequence[int] | None = typer.Option(
        None, "--table1-d-sae", **parsed(INT_LIST), help="Table 1: dictionary sizes "
        "(comma-separated)"),
    table1_seeds: Sequence[int] | None = typer.Option(
        None, "--table1-seeds", **parsed(INT_LIST), help="Table 1: seeds per point "
        "(comma-separated)"),
    table1_steps: int | None = typer.Option(None, "--table1-steps", help="Table 1: steps "
                                            "per SAE"),
    d_sae: int | None = typer.Option(None, "--d-sae", help="analysis SAE: dictionary size"),
    l1: float | None = typer.Option(None, "--l1", help="analysis SAE: L1 weight"),
    sae_steps: int | None = typer.Option(None, "--sae-steps", help="analysis SAE: steps"),
    genres: Sequence[str] | None = typer.Option(None, "--genres", **parsed(NAME_LIST),
                                                help="steering: comma-separated genres"),
    values: Sequence[float] | None = typer.Option(None, "--values", **parsed(VALUE_GRID),
                                                  help="steering: start:stop:step (inclusive) "
                                                  "or a comma list"),
    align_bootstrap: int | None = typer.Option(
        None, "--align-bootstrap", help="alignment: bootstrap resamples of the test users for "
        "the confidence intervals (0 disables)"),
    ablations: Sequence[str] | None = typer.Option(
        None, "--ablations", **parsed(NAME_LIST), help=f"ablation rows: "
        f"{' | '.join(ABLATIONS)} (comma-separated), or none"),
    budget: float | None = typer.Option(
        None, "--budget", metavar="MINUTES", help="fit the run into about this many minutes "
        "of wall time: fewer Table-1 seeds and grid points, steering values, bootstrap "
        "resamples, ablation rows and GPTRec epochs (never the settings given explicitly); "
        "the report lists every cut"),
    report: Path | None = typer.Option(None, "--report", help="HTML file to write (default "
                                       "RUN_DIR/report.html)"),
    data_dir: DataDirOption = None,
    download: DownloadOption = True,
    device: DeviceOption = "cpu",
    progress: bool = typer.Option(True, "--progress/--no-progress",
                                  help="print one line per step to stderr"),
    log_to: LogToOption = None,
    wandb_project: WandbProjectOption = "mechrec",
    run_name: RunNameOption = None,
    mlflow_experiment: MlflowExperimentOption = "mechrec",
    wandb_log_frequency: WandbLogFrequencyOption = 10,
    config: ConfigOption = None,
    write_config: WriteConfigOption = None,
) -> None:
    """Run every step of the paper into a run folder and write its HTML report.

    ``--config reproduce.toml`` takes the options from a TOML file (``dataset = "ml-1m"``,
    ``table1_seeds = [0, 1, 2]``, ...); flags on the command line override it. The options
    it ran with are recorded in ``RUN_DIR/reproduce/provenance.json``.

    ``--log-to wandb|mlflow`` logs every SAE training (Table 1's, named
    ``RUN_NAME/table1/<grid point>``, and the analysis SAE's) with its results as the run's
    summary; it changes no result, so a resumed run keeps its finished steps."""
    tracking = tracking_fields(log_to, wandb_project, run_name, mlflow_experiment,
                               wandb_log_frequency)
    if out is None:
        fail("--out is required: give the run folder with --out DIR (or out = \"DIR\" in the "
             "--config file)")
    from mechrec_recsys.data.movielens import dataset_key, is_world
    from mechrec_recsys.data.registry import DATASET_NAMES
    from mechrec_recsys.report import ReproduceSettings, run_pipeline, write_report
    from mechrec_recsys.report.settings import SPLITS_WITH_SAE_USERS

    if dataset not in DATASET_NAMES and not is_world(dataset):
        fail(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_NAMES)}, or the "
             "folder of a synthetic world (`mechrec data synth`)")
    dataset = dataset_key(dataset)
    if split not in SPLITS_WITH_SAE_USERS:
        fail(f"split {split!r} cannot reproduce the paper (it needs SAE users); choose one of "
             f"{', '.join(SPLITS_WITH_SAE_USERS)}")
    ablation_kinds = _ablations(ablations)
    preset = (ReproduceSettings.quick_preset if quick else ReproduceSettings.paper)(
        dataset, split, seed)
    settings = preset.with_overrides(
        epochs=epochs, d_model=d_model, n_layers=n_layers, table1_l1=_tuple_or_none(table1_l1),
        table1_d_sae=_tuple_or_none(table1_d_sae), table1_seeds=_tuple_or_none(table1_seeds),
        table1_steps=table1_steps, sae_d_sae=d_sae, sae_l1=l1, sae_steps=sae_steps,
        steer_genres=_tuple_or_none(genres), steer_values=_tuple_or_none(values),
        align_bootstrap=align_bootstrap, ablations=ablation_kinds)
    loaded: dict[str, Any] = {}  # the dataset and split, when the budget already read them
    if budget is not None:
        settings, loaded = _fit_budget(settings, budget, data_dir, download, {
            "epochs": epochs, "table1_l1": table1_l1, "table1_d_sae": table1_d_sae,
            "table1_seeds": table1_seeds, "table1_steps": table1_steps,
            "steer_values": values, "align_bootstrap": align_bootstrap,
            "ablations": ablation_kinds}, progress)
    _check_writable(out, "run folder")
    if report is not None:
        _check_writable(report.parent if str(report.parent) else Path(os.curdir),
                        "report folder")

    def log(message: str) -> None:
        if progress:
            typer.echo(message, err=True)

    with on_interrupt(f"kept every finished step in {out} (and, of the step in progress, "
                      "GPTRec's finished epochs or the Table-1 SAEs already saved)",
                      rerun_command()):
        run_pipeline(settings, out, data_dir=data_dir, download=download, device=device,
                     log=log, extra_provenance={"command": effective_settings(cli)},
                     tracking=tracking, **loaded)
        path = write_report(out, report)
    typer.echo(str(path))


def _ablations(names: Sequence[str] | None) -> tuple[str, ...] | None:
    """``--ablations`` checked: ``None`` when not given, ``()`` for ``none``."""
    if names is None:
        return None
    kinds = tuple(names)
    if kinds == ("none",):
        return ()
    unknown = [kind for kind in kinds if kind not in ABLATIONS]
    if unknown or not kinds:
        fail(f"--ablations {','.join(kinds)!r}: choose from {', '.join(ABLATIONS)} "
             "(comma-separated), or none")
    return kinds


def report_command(
    run_dir: Path = typer.Argument(..., help="run folder written by 'mechrec reproduce'"),
    out: Path | None = typer.Option(None, "--out", help="HTML file to write (default "
                                    "RUN_DIR/report.html)"),
) -> None:
    """Re-render the HTML report of a run folder from its saved outputs."""
    from mechrec_recsys.report import RunLayout, write_report

    if not run_dir.is_dir():
        fail(f"run folder {run_dir} does not exist: pass the --out folder of 'mechrec "
             "reproduce'")
    layout = RunLayout(run_dir)
    if not (layout.steps.is_file() or layout.run_spec.is_file()):
        fail(f"{run_dir} is not a mechrec run folder (it has neither {layout.steps.name} "
             f"under {layout.reproduce_dir.name}/ nor {layout.run_spec.name}); create one "
             "with 'mechrec reproduce --out RUN_DIR'")
    if out is not None and out.is_dir():
        fail(f"--out {out} is a folder; give a file name such as {out / 'report.html'}")
    if out is not None:
        _check_writable(out.parent if str(out.parent) else Path(os.curdir), "report folder")
    path = write_report(run_dir, out)
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    """Add the ``reproduce`` and ``report`` commands to the ``mechrec`` application."""
    app.command("reproduce")(reproduce_command)
    app.command("report")(report_command)
