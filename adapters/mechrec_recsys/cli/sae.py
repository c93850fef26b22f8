"""``mechrec sae``: train SAEs on a run's activations, evaluate them, reproduce Table 1.

Commands:

* ``mechrec sae train RUN_DIR --hook blocks.0.hook_resid_post --architecture standard
  --d-sae 2048 --l1 0.1 --steps 3000 --seed 0 [--name NAME]``: train an SAE on the SAE users'
  activations, save it under ``RUN_DIR/saes/NAME/`` (sae-lens format + normaliser) and print
  its reconstruction metrics on the test users. ``--k`` sets TopK/BatchTopK sparsity,
  ``--target-l0`` / ``--l0-coefficient`` JumpReLU's.
* ``mechrec sae eval RUN_DIR SAE_DIR``: one SAE's Table-1 rows: the original model, then the
  model with the hook replaced by the reconstruction ("replace", the paper's Table 1) and by
  reconstruction + error ("replace + error", identical to the original by construction).
* ``mechrec sae table1 RUN_DIR [--l1 ...] [--d-sae ...] [--seeds 0,1,2,3,4] [--steps N]
  [--out FILE.csv]``: the paper's sweep (L1 weights at dictionary 2048, dictionary sizes at L1
  0.1, on the first block's output), mean ± std over seeds; writes CSV + JSON (the JSON is
  ``mechrec_recsys.saes.Table1``'s: ``Table1.load(FILE.json)`` reads the result back, with
  ``.frame()`` and ``.plot()``) and prints the table. Every SAE is saved as it finishes:
  rerun the same command after an interruption and it continues.

Bad input (a folder that is not a run, an unknown hook, an SAE of another model, a missing
normaliser, malformed lists, ...) prints one line ``error: ...`` to stderr and exits with
code 2.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from mechrec.saes.config import (
    ARCHITECTURES,
    PAPER_DICT_SIZES,
    PAPER_L1_GRID,
    SAETrainingConfig,
)
from mechrec_recsys.cli._common import (
    NOTHING_KEPT,
    AllowOtherModelOption,
    DataDirOption,
    DeviceOption,
    DownloadOption,
    ListLengthOption,
    LogToOption,
    MlflowExperimentOption,
    ProgressOption,
    RunDirArgument,
    RunNameOption,
    SAEDirArgument,
    SAEHookOption,
    StepProgress,
    WandbLogFrequencyOption,
    WandbProjectOption,
    fail,
    on_interrupt,
    rerun_command,
    tracking_fields,
    wide_console,
)
from mechrec_recsys.cli._config_file import (
    ConfigOption,
    WriteConfigOption,
    effective_settings,
    with_config_file,
)
from mechrec_recsys.cli.params import (
    FLOAT_LIST,
    INT_LIST,
    OPTION_SETTING,
    OptionPair,
    parsed,
)
from mechrec_recsys.configs import PAPER_HOOK
from mechrec_recsys.durations import format_duration

if TYPE_CHECKING:
    from mechrec.distributed import DistContext
    from mechrec.saes import NormalizedSAE
    from mechrec_recsys.experiment import Experiment
    from mechrec_recsys.saes import Table1

sae_app = typer.Typer(
    name="sae",
    help="Train sparse autoencoders on a run's activations, evaluate them, reproduce Table 1.",
    no_args_is_help=True,
)



def _number(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def _mean_spread(mean: Any, spread: Any, fmt: str) -> str:
    text = _number(mean, fmt)
    if spread is None or text == "-" or (isinstance(spread, float) and math.isnan(spread)):
        return text
    return f"{text} ± {format(spread, fmt)}"


def _open(run_dir: Path, data_dir: Path | None, download: bool, device: str) -> Experiment:
    from mechrec_recsys.experiment import Experiment

    return Experiment.open(run_dir, data_dir=data_dir, download=download, device=device)


def training_config(
    *, architecture: str, d_sae: int, l1: float | None, k: float | None,
    target_l0: float | None, l0_coefficient: float | None, steps: int, batch_size: int,
    lr: float, warm_up: int | None, seed: int, device: str, normalization: str = "per_dim",
    options: Mapping[str, Any] | None = None, tracking: Mapping[str, Any] | None = None,
) -> SAETrainingConfig:
    """The SAE config of ``mechrec sae train``'s options; a sparsity option that does not
    belong to ``architecture`` is an error naming the one that does. ``architecture`` may
    also name any architecture of sae-lens' training registry, with ``options`` (its config
    fields, e.g. ``matryoshka_widths``). ``tracking``: the config's tracking fields
    (``log_to``, ``wandb_project``, ``run_name``, ...; :func:`tracking_fields`)."""
    if architecture not in ARCHITECTURES:
        from mechrec.saes.registry import training_classes

        training_classes(architecture)  # unknown (or a transcoder): an error naming the known
    owners = {"--l1": (l1, ("standard", "gated")), "--k": (k, ("topk", "batchtopk")),
              "--target-l0": (target_l0, ("jumprelu",)),
              "--l0-coefficient": (l0_coefficient, ("jumprelu",))}
    for option, (value, archs) in owners.items():
        if value is not None and architecture not in ARCHITECTURES:
            continue  # a registry architecture: checked against its own fields below
        if value is not None and architecture not in archs:
            raise ValueError(f"{option} applies to {'/'.join(archs)}, not {architecture}; "
                             f"{architecture} takes {_sparsity_option(architecture)}")
    overrides: dict[str, Any] = {}
    if l1 is not None:
        overrides["l1_coefficient"] = l1
    if k is not None:
        overrides["k"] = k
    if target_l0 is not None:
        overrides["target_l0"] = target_l0
        overrides["l0_coefficient"] = 1.0 if l0_coefficient is None else l0_coefficient
    elif l0_coefficient is not None:
        overrides["l0_coefficient"] = l0_coefficient
    return SAETrainingConfig(
        architecture=architecture, d_sae=d_sae, steps=steps, batch_size=batch_size, lr=lr,
        lr_warm_up_steps="auto" if warm_up is None else warm_up, seed=seed, device=device,
        normalization=normalization, architecture_options=dict(options or {}),
        **dict(tracking or {}), **overrides)


def _sparsity_option(architecture: str) -> str:
    return {"standard": "--l1", "gated": "--l1", "topk": "--k", "batchtopk": "--k",
            "jumprelu": "--target-l0 or --l0-coefficient"}[architecture]


# -------------------------------------------------------------------------------- train
@sae_app.command("train")
@with_config_file
def train(
    cli: typer.Context,
    run_dir: Path = typer.Argument(..., help="run folder written by 'mechrec train'"),
    hook: str = typer.Option(PAPER_HOOK, "--hook", help="TransformerLens hook to read"),
    architecture: str = typer.Option("standard", "--architecture",
                                     help=" | ".join(ARCHITECTURES)),
    d_sae: int = typer.Option(2048, "--d-sae", help="dictionary size"),
    l1: float | None = typer.Option(None, "--l1", help="L1 weight (standard, gated; "
                                    "default 0.1)"),
    k: int | None = typer.Option(None, "--k", help="active features per row (topk, "
                                   "batchtopk; default 32)"),
    target_l0: float | None = typer.Option(None, "--target-l0", help="jumprelu: target L0 "
                                           "(penalises (L0 - target)^2)"),
    l0_coefficient: float | None = typer.Option(
        None, "--l0-coefficient", help="jumprelu: L0 penalty weight (default 1e-3; 1 with "
        "--target-l0)"),
    steps: int = typer.Option(3000, "--steps", help="optimisation steps"),
    batch_size: int = typer.Option(1024, "--batch-size", help="activation rows per step"),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate (the paper: 1e-3)"),
    warm_up: int | None = typer.Option(None, "--warm-up", help="learning-rate warm-up steps "
                                       "(default min(100, steps/10))"),
    seed: int = typer.Option(0, "--seed", help="seed of the initialisation and of the "
                             "batch order"),
    normalization: str = typer.Option("per_dim", "--normalization",
                                      help="per_dim (the paper: each dimension to mean 0, std "
                                      "1) | scalar | none"),
    option: list[OptionPair] = typer.Option(
        [], "--option", **parsed(OPTION_SETTING),
        help="an option of the architecture's sae-lens training config, e.g. "
        "matryoshka_widths=256,1024 (repeatable); --architecture also takes any name of "
        "sae-lens' training registry, e.g. matryoshka_batchtopk"),
    name: str | None = typer.Option(None, "--name", help="folder under RUN_DIR/saes/ "
                                    "(default: hook-architecture-size-sparsity-seed)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an SAE of that name"),
    memory_budget: float | None = typer.Option(
        None, "--memory-budget", metavar="MB", help="hold at most MB of activations in memory: "
        "the SAE and test users' activations spill to sharded stores under RUN_DIR/saes/ "
        "(removed afterwards); for data larger than memory"),
    log_to: LogToOption = None,
    wandb_project: WandbProjectOption = "mechrec",
    run_name: RunNameOption = None,
    mlflow_experiment: MlflowExperimentOption = "mechrec",
    wandb_log_frequency: WandbLogFrequencyOption = 10,
    n_checkpoints: int = typer.Option(
        0, "--n-checkpoints", help="also save N evenly spaced snapshots through sae-lens' "
        "SAETrainer.save_checkpoint (training SAE + trainer state; wandb artifacts with "
        "--log-to wandb) under --checkpoint-path"),
    checkpoint_path: Path | None = typer.Option(
        None, "--checkpoint-path", help="folder of the --n-checkpoints snapshots (default "
        "RUN_DIR/sae-lens-checkpoints/NAME)"),
    data_dir: DataDirOption = None,
    download: DownloadOption = True,
    device: DeviceOption = "cpu",
    progress: ProgressOption = True,
    config: ConfigOption = None,
    write_config: WriteConfigOption = None,
) -> None:
    """Train an SAE on the SAE users' activations at a hook, save it, print its metrics.

    ``--config sae.toml`` takes the options from a TOML file (``d_sae = 2048``, ``l1 =
    0.1``, ...); flags on the command line override it. The settings it ran with are
    recorded in the SAE's ``mechrec.json``.

    The training state is saved every 100 steps: after Ctrl-C the same command resumes it.
    Under ``torchrun --nproc_per_node N`` the ranks collect the activations in slices and
    train data-parallel (docs/distributed.md); rank 0 saves and prints."""
    from mechrec.distributed import setup_distributed, teardown_distributed

    if memory_budget is not None and memory_budget <= 0:
        fail(f"--memory-budget must be a positive number of MB, got {memory_budget:g}")
    ctx = setup_distributed(device)
    try:
        _train(ctx, run_dir, hook, architecture, d_sae, l1, k, target_l0, l0_coefficient, steps,
               batch_size, lr, warm_up, seed, name, overwrite, data_dir, download, device,
               progress and ctx.is_main, normalization, dict(option), memory_budget,
               effective_settings(cli),
               {**tracking_fields(log_to, wandb_project, run_name, mlflow_experiment,
                                  wandb_log_frequency),
                "n_checkpoints": n_checkpoints,
                "checkpoint_path": None if checkpoint_path is None else str(checkpoint_path)})
    finally:
        teardown_distributed(ctx)


def _train(
    ctx: DistContext, run_dir: Path, hook: str, architecture: str, d_sae: int, l1: float | None,
    k: int | None, target_l0: float | None, l0_coefficient: float | None, steps: int,
    batch_size: int, lr: float, warm_up: int | None, seed: int, name: str | None,
    overwrite: bool, data_dir: Path | None, download: bool, device: str, progress: bool,
    normalization: str = "per_dim", options: Mapping[str, Any] | None = None,
    memory_budget: float | None = None,
    settings: Mapping[str, Any] | None = None, tracking: Mapping[str, Any] | None = None,
) -> None:
    """:func:`train` on one rank (the only rank when not under ``torchrun``)."""
    from mechrec_recsys.saes import check_hook, default_sae_name, sae_checkpoint, train_run_sae

    with on_interrupt(lambda: _kept_sae_state(run_dir, name or default_sae_name(config, hook),
                                              steps),
                      rerun_command(drop=("--overwrite",))):
        config = training_config(
            architecture=architecture, d_sae=d_sae, l1=l1, k=k, target_l0=target_l0,
            l0_coefficient=l0_coefficient, steps=steps, batch_size=batch_size, lr=lr,
            warm_up=warm_up, seed=seed, device=device, normalization=normalization,
            options=options, tracking={**(tracking or {}), "n_checkpoints": 0})
        sae_name = name or default_sae_name(config, hook)
        n_checkpoints = int((tracking or {}).get("n_checkpoints") or 0)
        config = config.with_overrides(
            run_name=config.run_name or (sae_name if config.log_to is not None else None),
            n_checkpoints=n_checkpoints,
            checkpoint_path=config.checkpoint_path or (
                str(run_dir / "sae-lens-checkpoints" / sae_name) if n_checkpoints else None))
        experiment = _open(run_dir, data_dir, download, device)
        check_hook(experiment, hook)
        # under torchrun the ranks collect sae_train in slices; under a budget, into stores
        in_memory = not ctx.enabled and memory_budget is None
        parts = (("sae_train", "SAE"), ("test", "test")) if in_memory else ()
        for part, users in parts:
            with StepProgress(f"collecting activations at {hook} ({users} users)",
                              experiment.n_batches(part), enabled=progress,
                              unit="batches") as bar:
                experiment.activations(part, hook, progress=lambda done, _t: bar.update(done))
        resumed = None if overwrite else sae_checkpoint(
            run_dir, name or default_sae_name(config, hook)).saved_step()
        if progress and resumed is not None:
            typer.echo(f"resuming the interrupted training after step {resumed}", err=True)
        with StepProgress(f"training the {architecture} SAE ({d_sae} features)", steps,
                          enabled=progress, unit="steps", initial=resumed or 0) as bar:

            def report(record: dict[str, float]) -> None:
                bar.update(int(record["step"]), f"loss {record['loss']:.4f}, L0 "
                           f"{record['l0']:.1f}, dead {int(record['dead_features'])}")

            trained = train_run_sae(experiment, config, hook=hook, run_dir=run_dir, name=name,
                                    overwrite=overwrite, progress=report, dist=ctx,
                                    memory_budget_mb=memory_budget,
                                    provenance={"command": dict(settings)} if settings
                                    else None)
    if not ctx.is_main:
        return
    metrics = trained.test_metrics
    parameter, value = config.sparsity_parameter
    table = Table(title=f"{architecture} SAE at {hook}: {d_sae} features, {parameter} "
                  f"{value:g}, seed {seed}; metrics on {metrics.n_rows:,} test activations")
    for column in ("RMSE", "explained variance", "L0", "dead (test)", "dead (training)",
                   "resampled", "seconds"):
        table.add_column(column, justify="right")
    table.add_row(f"{metrics.rmse:.4f}", f"{metrics.explained_variance:.4f}",
                  f"{metrics.l0:.1f}", f"{metrics.dead_fraction:.3f}",
                  f"{trained.training.dead_fraction_train:.3f}",
                  str(trained.training.n_resampled), f"{trained.training.seconds:.1f}")
    console = wide_console(160)
    console.print(table)
    console.print(f"saved to {trained.directory} (sae-lens format + normalizer.safetensors); "
                  f"evaluate with: mechrec sae eval {run_dir} {trained.directory}",
                  highlight=False, soft_wrap=True)


def _kept_sae_state(run_dir: Path, name: str, steps: int) -> str:
    """What an interrupted ``mechrec sae train`` left: the step of its checkpoint (training
    resumes from there, exactly), or that nothing was kept yet."""
    from mechrec_recsys.saes import sae_checkpoint

    checkpoint = sae_checkpoint(run_dir, name)
    step = checkpoint.saved_step()
    if step is None:
        return (f"{NOTHING_KEPT} (the state is saved every {checkpoint.every} steps, "
                "after the activations are collected)")
    return f"kept the SAE training state after step {step} of {steps} in {checkpoint.directory}"


# -------------------------------------------------------------------------------- eval
def _hooks(nsae: NormalizedSAE) -> str:
    """Where an SAE sits, for titles: its hook, or a transcoder's ``input -> output``."""
    return (f"{nsae.hook_name} -> {nsae.hook_name_out}" if nsae.is_transcoder
            else nsae.hook_name)


def eval_table(rows: list[dict[str, Any]], title: str) -> Table:
    """A rich table of :func:`mechrec_recsys.saes.evaluate_sae` rows (mean ± SE cells)."""
    table = Table(title=title)
    table.add_column("model", style="bold")
    for column in ("RMSE", "expl. var.", "L0", "dead", "NDCG@10", "HR@10", "Coverage@10",
                   "ΔNDCG (paired)"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row["model"], _number(row.get("rmse"), ".4f"),
            _number(row.get("explained_variance"), ".4f"), _number(row.get("l0"), ".1f"),
            _number(row.get("dead_fraction"), ".3f"),
            *(_mean_spread(row[key], row[f"{key}_se"], ".4f")
              for key in ("ndcg", "hit_rate", "coverage")),
            _mean_spread(row.get("ndcg_delta"), row.get("ndcg_delta_se"), ".4f"))
    return table


@sae_app.command("eval")
def evaluate(
    run_dir: RunDirArgument,
    sae_dir: SAEDirArgument,
    k: ListLengthOption = 10,
    out: Path | None = typer.Option(None, "--out", help="also write the rows as JSON"),
    data_dir: DataDirOption = None,
    download: DownloadOption = True,
    device: DeviceOption = "cpu",
    allow_other_model: AllowOtherModelOption = False,
    hook: SAEHookOption = None,
) -> None:
    """One SAE's Table-1 rows: original model, "replace" and "replace + error"."""
    from mechrec._io import atomic_write_json
    from mechrec_recsys.saes import evaluate_sae, load_run_sae, resolve_sae_directory

    experiment = _open(run_dir, data_dir, download, device)
    directory = resolve_sae_directory(run_dir, sae_dir)
    nsae = load_run_sae(experiment, directory, device=device,
                        allow_other_model=allow_other_model, hook_name=hook)
    rows = evaluate_sae(experiment, nsae, k=k)
    if out is not None:
        atomic_write_json(out, {"sae": str(directory), "rows": rows}, sort_keys=False)
    recon = rows[1]
    title = (f"{nsae.architecture} SAE at {_hooks(nsae)} ({nsae.d_sae} features) on "
             f"{len(experiment.part('test'))} test users ({recon['n_rows']:,} activations)")
    console = wide_console(160)
    console.print(eval_table(rows, title))
    space = ("normalised space" if nsae.normalizer.mode != "none"
             else "raw space (the SAE has no normaliser)")
    console.print(f"reconstruction metrics in {space} on the test users' activations; "
                  "ranking metrics: mean ± standard error over test users (coverage: "
                  "bootstrap); ΔNDCG: paired difference with the original", highlight=False)


# -------------------------------------------------------------------------------- table1
def table1_table(table: Table1, title: str) -> Table:
    """A rich table like the paper's Table 1 (first row: the original model), with the
    splice-quality columns after it (``-`` for a table written before they existed)."""
    from mechrec_recsys.saes import QUALITY_COLUMN_KEYS

    out = Table(title=title)
    k = table.k
    for column in ("L1 weight", "dict size", "RMSE", "expl. var.", "L0", "dead",
                   f"NDCG@{k}", f"HR@{k}", f"Coverage@{k}", "genre corr. (Fig. 3)",
                   "loss rec. (zero)", "loss rec. (mean)", f"NDCG@{k} rec. (zero)",
                   f"NDCG@{k} rec. (mean)", "KL"):
        out.add_column(column, justify="right")
    rows = table.rows()
    original = rows[0]
    out.add_row("original", "-", "-", "-", "-", "-",
                *(_mean_spread(original[f"{key}_mean"], original[f"{key}_se"], ".4f")
                  for key in ("ndcg", "hit_rate", "coverage")), "-",
                *("-" for _ in QUALITY_COLUMN_KEYS))
    previous = None
    for row in rows[1:]:
        if previous is not None and row["sweep"] != previous:
            out.add_section()
        previous = row["sweep"]
        out.add_row(
            f"{row['l1_coefficient']:g}", str(row["d_sae"]),
            _mean_spread(row["rmse_mean"], row["rmse_std"], ".3f"),
            _mean_spread(row["explained_variance_mean"], row["explained_variance_std"], ".3f"),
            _mean_spread(row["l0_mean"], row["l0_std"], ".1f"),
            _mean_spread(row["dead_fraction_mean"], row["dead_fraction_std"], ".3f"),
            *(_mean_spread(row[f"{key}_mean"], row[f"{key}_std"], ".4f")
              for key in ("ndcg", "hit_rate", "coverage")),
            _mean_spread(row["genre_corr_honest_mean"], row["genre_corr_honest_std"], ".3f"),
            *(_mean_spread(row.get(f"{key}_mean"), row.get(f"{key}_std"), ".3f")
              for key in QUALITY_COLUMN_KEYS))
    return out


@sae_app.command("table1")
def table1(
    run_dir: Path = typer.Argument(..., help="run folder written by 'mechrec train'"),
    hook: str = typer.Option(PAPER_HOOK, "--hook", help="TransformerLens hook to read"),
    l1: Sequence[float] = typer.Option(",".join(f"{v:g}" for v in PAPER_L1_GRID), "--l1",
                                       **parsed(FLOAT_LIST),
                                       help="L1 weights of the L1 sweep (comma-separated)"),
    d_sae: Sequence[int] = typer.Option(",".join(str(v) for v in PAPER_DICT_SIZES), "--d-sae",
                                        **parsed(INT_LIST), help="dictionary sizes of the size "
                                        "sweep (comma-separated)"),
    l1_d_sae: int = typer.Option(2048, "--l1-d-sae", help="dictionary size of the L1 sweep"),
    d_sae_l1: float = typer.Option(0.1, "--d-sae-l1", help="L1 weight of the size sweep"),
    seeds: Sequence[int] = typer.Option("0,1,2,3,4", "--seeds", **parsed(INT_LIST),
                                        help="seeds per point (comma-separated)"),
    steps: int = typer.Option(3000, "--steps", help="optimisation steps per SAE"),
    batch_size: int = typer.Option(1024, "--batch-size", help="activation rows per step"),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate (the paper: 1e-3)"),
    warm_up: int | None = typer.Option(None, "--warm-up", help="learning-rate warm-up steps "
                                       "(default min(100, steps/10))"),
    k: int = typer.Option(10, "--k", help="length of the recommendation lists"),
    out: Path | None = typer.Option(None, "--out", help="CSV to write (JSON beside it, "
                                    "read by Table1.load); default RUN_DIR/table1.csv"),
    data_dir: DataDirOption = None,
    download: DownloadOption = True,
    device: DeviceOption = "cpu",
    progress: bool = typer.Option(True, "--progress/--no-progress",
                                  help="print one line per finished SAE to stderr"),
    log_to: LogToOption = None,
    wandb_project: WandbProjectOption = "mechrec",
    run_name: RunNameOption = None,
    mlflow_experiment: MlflowExperimentOption = "mechrec",
    wandb_log_frequency: WandbLogFrequencyOption = 10,
) -> None:
    """The paper's Table 1: L1 weights at one dictionary size, dictionary sizes at one L1
    weight, averaged over seeds; resumable.

    With ``--log-to wandb|mlflow`` every SAE trained logs to its own run (named by its grid
    point, under ``--run-name``), and its Table-1 row (reconstruction, ranking, genre
    correlation, splice quality) becomes that run's summary."""
    tracking = tracking_fields(log_to, wandb_project, run_name, mlflow_experiment,
                               wandb_log_frequency)
    from mechrec_recsys.saes import SAES_DIR, TABLE1_DIR, run_table1

    with on_interrupt(f"kept every SAE of the sweep finished so far, under "
                      f"{run_dir / SAES_DIR / TABLE1_DIR}", rerun_command()):
        base = SAETrainingConfig(architecture="standard", d_sae=l1_d_sae,
                                 l1_coefficient=d_sae_l1, steps=steps,
                                 batch_size=batch_size, lr=lr,
                                 lr_warm_up_steps="auto" if warm_up is None else warm_up,
                                 device=device, **tracking)
        experiment = _open(run_dir, data_dir, download, device)

        started = time.perf_counter()
        first_done: list[int] = []

        def report(done: int, total: int, row: dict[str, Any]) -> None:
            # SAEs found already saved (a resumed sweep) report at once: time the rest only
            if not first_done:
                first_done.append(done - 1)
            trained_here = done - first_done[0]
            left = (time.perf_counter() - started) / trained_here * (total - done)
            if progress:
                typer.echo(f"[{done}/{total}] d_sae={row['d_sae']} l1={row['l1_coefficient']:g} "
                           f"seed={row['seed']}: L0 {row['l0']:.1f}, EV "
                           f"{row['explained_variance']:.3f}, NDCG {row['ndcg']:.4f} "
                           f"({row['seconds']:.1f} s training; ~{format_duration(left)} left)",
                           err=True)

        result = run_table1(experiment, run_dir, hook=hook, l1_values=list(l1),
                            d_sae_values=list(d_sae), seeds=list(seeds), l1_d_sae=l1_d_sae,
                            d_sae_l1=d_sae_l1, base=base, k=k, progress=report)
        csv_path, json_path = result.save(out if out is not None else run_dir / "table1.csv")
    n = len(result.seeds)
    title = (f"Table 1 on {result.info['run']['dataset']} ({result.info['test_users']} test "
             f"users), {result.hook}: standard SAEs, {steps} steps of {batch_size}, "
             f"{n} seed{'s' if n > 1 else ''}")
    console = wide_console(270)  # with the splice-quality columns, one line per row
    console.print(table1_table(result, title))
    identical = sum(r.get("replace_error_identical", 0.0) == 1.0 for r in result.runs)
    console.print(
        f"SAE rows: mean ± std over seeds; original: ± standard error over test users. "
        f"Metrics on the test users; reconstruction in normalised space; genre corr.: mean "
        f"over genres of the best feature's correlation, chosen on the SAE users and scored "
        f"on the test users (Figure 3); rec.: share of the next-item loss / NDCG@{k} that "
        f"the SAE recovers against a zero / mean ablation of the hook (1 = as trained, 0 = "
        f"as ablated), KL: of the next-item distribution, original || SAE, in nats (as "
        f"'mechrec sae quality'). \"replace + error\" "
        f"gave the original top-{k} lists for {identical}/{len(result.runs)} SAEs.",
        highlight=False)
    console.print(f"wrote {csv_path} and {json_path}; SAEs in {result.directory}",
                  highlight=False, soft_wrap=True)


# -------------------------------------------------------------------------------- quality
@sae_app.command("quality")
def quality(
    run_dir: RunDirArgument,
    sae_dir: SAEDirArgument,
    k: ListLengthOption = 10,
    out: Path | None = typer.Option(None, "--out", help="write quality.json, density.csv and "
                                                          "absorption.csv into this folder"),
    data_dir: DataDirOption = None,
    download: DownloadOption = True,
    device: DeviceOption = "cpu",
    allow_other_model: AllowOtherModelOption = False,
    hook: SAEHookOption = None,
) -> None:
    """The field's standard SAE metrics: next-item loss and NDCG@k recovered against zero and
    mean ablation of the hook, KL of the next-item distribution, the feature density
    histogram and feature absorption in genre hierarchies (e.g. Animation in Children's)."""
    from mechrec._io import atomic_write_bytes, atomic_write_json
    from mechrec_recsys.sae_quality import (
        absorption_table,
        feature_density_table,
        splice_quality,
    )
    from mechrec_recsys.saes import load_run_sae, resolve_sae_directory

    experiment = _open(run_dir, data_dir, download, device)
    directory = resolve_sae_directory(run_dir, sae_dir)
    nsae = load_run_sae(experiment, directory, device=device,
                        allow_other_model=allow_other_model, hook_name=hook)
    scores = splice_quality(experiment, nsae, k=k)
    density = feature_density_table(experiment, nsae)
    absorbed = absorption_table(experiment, nsae)
    if out is not None:
        atomic_write_json(out / "quality.json", {"sae": str(directory), "k": k, **scores},
                          sort_keys=False)
        atomic_write_bytes(out / "density.csv", density.to_csv(index=False).encode())
        atomic_write_bytes(out / "absorption.csv", absorbed.to_csv(index=False).encode())
    console = wide_console(160)
    table = Table(title=f"{nsae.architecture} SAE at {_hooks(nsae)}: what the model keeps "
                        f"({len(experiment.part('test'))} test users, last position)")
    for column in ("", "original", "SAE (replace)", "zero ablation", "mean ablation",
                   "recovered vs zero", "recovered vs mean"):
        table.add_column(column, justify="right")
    table.add_row("next-item loss", *(_number(scores[f"loss_{m}"], ".4f")
                                      for m in ("original", "sae", "zero", "mean",
                                                "recovered_zero", "recovered_mean")))
    table.add_row(f"NDCG@{k}", *(_number(scores[f"ndcg_{m}"], ".4f")
                                 for m in ("original", "sae", "zero", "mean",
                                           "recovered_zero", "recovered_mean")))
    console.print(table)
    console.print(
        f"KL(original || SAE) of the next-item distribution: {scores['kl']:.4f} nats. "
        "Recovered: (ablated - SAE) / (ablated - original); above 1 means the model does "
        "better with the SAE than as trained.", highlight=False)
    dense = density[density["features"] > 0]
    console.print("features per log10 firing density on the test users: " + ", ".join(
        f"{row.bin}: {row.features}" for row in dense.itertuples()), highlight=False)
    for row in absorbed.itertuples():
        console.print(
            f"{row.child} in {row.parent}: parent feature {row.parent_feature} fires on "
            f"{row.parent_recall_parent_only:.0%} of {row.parent}-only positions and "
            f"{row.parent_recall_with_child:.0%} of {row.child} positions; absorbed "
            f"(parent silent, child feature {row.child_feature} firing) on "
            f"{row.absorption_rate:.0%}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``sae`` command group to the ``mechrec`` application."""
    app.add_typer(sae_app, name="sae")
