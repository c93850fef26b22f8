"""``mechrec align``: how well an SAE's features match item attributes (paper sections 4.2, 7).

Commands:

* ``mechrec align tables RUN_DIR SAE_DIR [--out DIR] [--metric correlation]
  [--decades/--no-decades] [--top-k 5] [--seed 0] [--bootstrap 200] [--confidence 0.95]
  [--title-contains TEXT]... [--years A-B]...``:
  label every position of the SAE-training and test users by its item (genres, release decade,
  custom predicates), compute feature x attribute statistics for the SAE's features, the raw
  neurons at its hook and a random-projection control, and write them with the per-genre table
  (paper Table 2), the SAE vs neurons vs control summary (Fig. 4), the top-feature profiles
  (Fig. 2), monosemanticity and the top features per attribute, as CSV and parquet, into
  ``--out`` (default ``SAE_DIR/alignment``). The best feature per attribute is chosen on the
  SAE-training users and scored on the test users ("honest"); the in-sample variant (chosen
  and scored on the test users, as in the paper) is reported beside it. ``--bootstrap N``
  (default 200; 0 disables) resamples the test users N times to give confidence intervals of
  the honest scores and paired intervals of SAE - neurons, SAE - random and neurons - random
  (bootstrap_intervals, bootstrap_differences, bootstrap.json).
* ``mechrec align examples RUN_DIR SAE_DIR FEATURE [--k 10]``: the feature's top activating
  positions with the titles of the items before them, and its p_top-k for genres, decades and
  custom predicates.

Example::

    mechrec align tables runs/ml100k-paper runs/ml100k-paper/saes/paper-l1-0.1
    mechrec align examples runs/ml100k-paper runs/ml100k-paper/saes/paper-l1-0.1 117 \\
        --title-contains "Star Wars" --years 1980-1989

Bad input (not a run folder, not an SAE folder, an SAE trained on another hook or model, an
unknown metric, a feature out of range) prints one line ``error: ...`` to stderr and exits with
code 2.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from mechrec.alignment.metric_names import METRICS
from mechrec_recsys.cli._common import (
    NOTHING_KEPT_UNTIL_DONE,
    DataDirOption,
    DeviceOption,
    DownloadOption,
    MaxUsersOption,
    SAEHookOption,
    check_max_users,
    fail,
    on_interrupt,
    rerun_command,
    sampled,
    wide_console,
)
from mechrec_recsys.cli.params import YEAR_RANGE, YearSpan, parsed
from mechrec_recsys.configs import ABLATIONS as ABLATION_KINDS
from mechrec_recsys.configs import UNITS

if TYPE_CHECKING:
    from mechrec.ablations import AblationTable
    from mechrec.alignment import AlignmentBootstrap
    from mechrec.saes import NormalizedSAE
    from mechrec_recsys.alignment import AlignmentRun, ItemPredicate
    from mechrec_recsys.experiment import Experiment

align_app = typer.Typer(
    name="align",
    help="Align SAE features with item attributes (genres, decades, predicates): the paper's "
    "Table 2 and Fig. 2/4 with an honest selection, neurons and a random control. "
    "Commands: 'tables' writes every table; 'examples' shows a feature's top positions; "
    "'ablations' reruns the comparison with one setting changed per row.",
    no_args_is_help=True,
)

PARTS = ("sae_train", "test", "train", "validation")
METRIC_LABELS = {"correlation": "corr", "roc_auc": "AUC", "sensitivity": "sens",
                 "precision": "prec", "mean_given_attribute": "mean|attr"}




def _fmt(value: Any, digits: int = 3) -> str:
    import pandas as pd

    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def build_predicates(title_texts: Sequence[str], year_ranges: Sequence[YearSpan]
                     ) -> dict[str, ItemPredicate]:
    """Named item predicates from ``--title-contains`` texts and ``--years`` ranges."""
    from mechrec_recsys.alignment import title_contains, year_between

    predicates: dict[str, ItemPredicate] = {}
    for text in title_texts:
        predicates[f"title: {text}"] = title_contains(text)
    for first, last in year_ranges:
        predicates[f"years {first}-{last}"] = year_between(first, last)
    return predicates


def open_run(run_dir: Path, sae_dir: Path, data_dir: Path | None, download: bool,
             device: str, hook: str | None = None) -> tuple[Experiment, NormalizedSAE]:
    """Open the run (its folder and trained model are checked first), then its SAE (a folder,
    or a name under ``RUN_DIR/saes``; ``hook`` for SAEs that do not record theirs)."""
    from mechrec_recsys.experiment import Experiment

    experiment = Experiment.open(run_dir, data_dir=data_dir, download=download, device=device)
    return experiment, experiment.sae(sae_dir, allow_other_model=True, hook_name=hook)


def per_genre_rich(run: AlignmentRun) -> Table:
    """Rich table of :meth:`AlignmentRun.per_attribute_table` with a mean row per group."""
    frame = run.per_attribute_table("SAE")
    summary = run.summary()
    m = run.metric
    table = Table(title=f"Best SAE feature per attribute (paper Table 2): chosen by {m} on "
              f"{run.select_part} users, scored on {run.score_part} users; in-sample = chosen "
              f"and scored on {run.score_part} users")
    table.add_column("attribute", style="bold")
    table.add_column("share", justify="right")
    table.add_column("feature", justify="right")
    for metric in run.reported:
        table.add_column(METRIC_LABELS.get(metric, metric), justify="right")
    table.add_column(f"{METRIC_LABELS.get(m, m)} on select", justify="right")
    table.add_column("in-sample feature", justify="right")
    table.add_column(f"in-sample {METRIC_LABELS.get(m, m)}", justify="right")
    groups = list(dict.fromkeys(frame["group"]))
    for group in groups:
        sub = frame[frame["group"] == group]
        for attribute, row in sub.iterrows():
            table.add_row(str(attribute), _fmt(row["share"]), _fmt(row["feature"]),
                          *(_fmt(row[metric]) for metric in run.reported),
                          _fmt(row[f"{m}_on_select"]), _fmt(row["feature_in_sample"]),
                          _fmt(row[f"{m}_in_sample"]))
        honest = summary[(summary["group"] == group) & (summary["features"] == "SAE")
                         & (summary["selection"] == "honest")].iloc[0]
        in_sample = summary[(summary["group"] == group) & (summary["features"] == "SAE")
                            & (summary["selection"] == "in-sample")].iloc[0]
        means = [_fmt(honest[f"{m}_mean"])] + [_fmt(honest[f"{x}_mean"])
                                                for x in run.reported[1:]]
        table.add_row(f"mean ({group}, n={honest['attributes']})",
                      _fmt(float(sub["share"].mean())), "", *means, "", "",
                      _fmt(in_sample[f"{m}_mean"]), style="italic", end_section=True)
    return table


def summary_rich(run: AlignmentRun) -> Table:
    """Rich table of :meth:`AlignmentRun.summary` (SAE vs neurons vs random control)."""
    frame = run.summary()
    m = run.metric
    table = Table(title=f"SAE vs neurons vs random control: best feature per attribute, "
                  f"min/mean/max of {m} (paper section 7.1.3 / Fig. 4)")
    for name in ("group", "features", "selection"):
        table.add_column(name, style="bold" if name == "features" else None)
    table.add_column("width", justify="right")
    table.add_column("attrs", justify="right")
    label = METRIC_LABELS.get(m, m)
    for column in (f"{label} min", f"{label} mean", f"{label} max"):
        table.add_column(column, justify="right")
    for x in run.reported[1:]:
        table.add_column(f"{METRIC_LABELS.get(x, x)} mean", justify="right")
    previous = None
    for _, row in frame.iterrows():
        if previous is not None and row["group"] != previous:
            table.add_section()
        previous = row["group"]
        table.add_row(str(row["group"]), str(row["features"]), str(row["selection"]),
                      str(row["n_features"]), str(row["attributes"]),
                      _fmt(row[f"{m}_min"]), _fmt(row[f"{m}_mean"]), _fmt(row[f"{m}_max"]),
                      *(_fmt(row[f"{x}_mean"]) for x in run.reported[1:]))
    return table


def _interval(estimate: float, lower: float, upper: float) -> str:
    return f"{_fmt(estimate)} [{_fmt(lower)}, {_fmt(upper)}]"


def bootstrap_rich(run: AlignmentRun, boot: AlignmentBootstrap, confidence: float) -> Table:
    """Rich table of the bootstrap: per group, each feature set's mean metrics with their
    intervals, then the paired differences of the selecting metric."""
    from mechrec.alignment import MEAN_ROW

    intervals = run.interval_table(boot, confidence)
    diffs = run.difference_table(boot, confidence)
    means = intervals[intervals["attribute"] == MEAN_ROW]
    dmeans = diffs[(diffs["attribute"] == MEAN_ROW) & (diffs["metric"] == run.metric)]
    unit = f"{run.score_part} users" if boot.grouped else "rows"
    pct = f"{100 * confidence:g}%"
    table = Table(title=f"Uncertainty of the honest scores: mean over attributes with {pct} "
                  f"percentile intervals ({boot.n_resamples} resamples of {boot.n_groups:,} "
                  f"{unit}, features fixed); differences paired on the same resamples")
    table.add_column("group", style="bold")
    table.add_column("features", style="bold")
    for metric in run.reported:
        table.add_column(f"{METRIC_LABELS.get(metric, metric)} mean [{pct}]", justify="right")
    label = METRIC_LABELS.get(run.metric, run.metric)
    table.add_column(f"difference in {label} mean [{pct}]", justify="right")
    table.add_column("share > 0", justify="right")
    for group in dict.fromkeys(means["group"]):
        sub = means[means["group"] == group]
        for source in dict.fromkeys(sub["features"]):
            cells = []
            for metric in run.reported:
                row = sub[(sub["features"] == source) & (sub["metric"] == metric)]
                cells.append(_interval(*row[["estimate", "lower", "upper"]].iloc[0])
                             if len(row) else "")
            table.add_row(str(group), str(source), *cells, "", "")
        dsub = dmeans[dmeans["group"] == group]
        for i, (_, row) in enumerate(dsub.iterrows()):
            table.add_row("", f"{row['features']} - {row['versus']}",
                          *([""] * len(run.reported)),
                          _interval(row["estimate"], row["lower"], row["upper"]),
                          _fmt(row["share_positive"], 2), style="italic",
                          end_section=i == len(dsub) - 1)
    return table


@align_app.command("tables")
def tables_command(
    run_dir: Path = typer.Argument(..., help="run folder written by 'mechrec train'"),
    sae_dir: Path = typer.Argument(..., help="SAE folder (NormalizedSAE.save) trained on the "
                                   "run's model, or its name under RUN_DIR/saes"),
    out: Path | None = typer.Option(None, "--out", help="output folder (default: "
                                    "SAE_DIR/alignment)"),
    metric: str = typer.Option("correlation", "--metric",
                               help=f"chooses the best feature: {' | '.join(METRICS)}"),
    decades: bool = typer.Option(True, "--decades/--no-decades",
                                 help="also align with release decades"),
    top_k: int = typer.Option(5, "--top-k", help="top features per attribute in "
                              "top_features.csv"),
    seed: int = typer.Option(0, "--seed", help="seed of the random-projection control and "
                             "of the bootstrap"),
    bootstrap: int = typer.Option(200, "--bootstrap", help="resamples of the test users for "
                                  "confidence intervals of the honest scores and paired "
                                  "differences (0 disables)"),
    confidence: float = typer.Option(0.95, "--confidence", help="coverage of the bootstrap "
                                     "intervals, in (0, 1)"),
    unit: str = typer.Option("positions", "--unit", metavar="positions|items",
                             help="one data point per position (the paper) or per distinct "
                             "item, averaged over its positions"),
    title_texts: list[str] = typer.Option([], "--title-contains",
                                          help="custom attribute: title contains TEXT "
                                          "(repeatable)"),
    year_ranges: list[YearSpan] = typer.Option([], "--years", **parsed(YEAR_RANGE),
                                               help="custom attribute: release year in "
                                               "FIRST-LAST, e.g. 1980-1989 (repeatable)"),
    baselines: str | None = typer.Option(
        None, "--baselines", metavar="NAME,...",
        help="also compare these sources with the SAE, neurons and random control: probes | "
        "mean_difference | k_sparse_probes | pca | sae_k_sparse_probes (comma-separated)"),
    max_users: MaxUsersOption = None,
    planted: str | None = typer.Option(
        None, "--planted", metavar="genre|era|genre,era",
        help="score against the planted truth of the synthetic world the run was trained on "
        "(the genre each event's taste chose, its era) instead of the items' catalog labels"),
    data_dir: DataDirOption = None,
    download: DownloadOption = True,
    device: DeviceOption = "cpu",
    hook: SAEHookOption = None,
) -> None:
    """Write SAE / neuron / random-control alignment tables and print Table 2 and the summary.

    Files in --out (CSV and parquet each): sae, neurons, control (every metric of every
    feature x attribute pair on the select and score rows, long form), per_genre (best SAE
    feature per attribute, honest and in-sample), summary (SAE vs neurons vs control),
    comparison (per attribute, all three), profiles (Fig. 2), monosemanticity, top_features;
    plus alignment.json (rows, hook, notes). With --bootstrap N > 0 also bootstrap_intervals,
    bootstrap_differences and bootstrap.json (test users resampled, features fixed).
    """
    if metric not in METRICS:
        fail(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if top_k < 1:
        fail(f"--top-k must be a positive integer, got {top_k}")
    if bootstrap < 0:
        fail(f"--bootstrap must be >= 0 (0 disables), got {bootstrap}")
    if not 0.0 < confidence < 1.0:
        fail(f"--confidence must be in (0, 1), e.g. 0.95, got {confidence}")
    if unit not in UNITS:
        fail(f"unknown --unit {unit!r}; choose one of {', '.join(UNITS)}")
    factors = _planted_factors(planted, unit, bool(title_texts or year_ranges))
    sources = _sources(baselines)
    check_max_users(max_users)
    from mechrec_recsys.ablations import alignment_identity
    from mechrec_recsys.alignment import align
    from mechrec_recsys.saes import resolve_sae_directory

    with on_interrupt(NOTHING_KEPT_UNTIL_DONE, rerun_command()):
        predicates = build_predicates(title_texts, year_ranges)
        experiment, sae = open_run(run_dir, sae_dir, data_dir, download, device, hook)
        experiment = sampled(experiment, max_users, seed)
        sae_path = resolve_sae_directory(run_dir, sae_dir)
        sae_folder = sae_path.parent if sae_path.is_file() else sae_path  # an ae.pt
        out_dir = out if out is not None else sae_folder / "alignment"
        attributes = None
        if factors:
            from mechrec_recsys.synthetic.planted import planted_attributes

            attributes = planted_attributes(experiment, factors=factors)
        run = align(experiment, sae, metric=metric, decades=decades, predicates=predicates,
                    seed=seed, unit=unit, attributes=attributes, sources=sources)
        boot = run.bootstrap(bootstrap, seed=seed) if bootstrap else None
        written = run.save(out_dir, top_k=top_k, provenance={
            "run_dir": str(run_dir), "sae_dir": str(sae_path),
            "command": "mechrec align tables",
            "sampled_users": experiment.split.info.get("sampled_users"),
            "attributes": f"planted: {','.join(factors)}" if factors else "catalog",
            **alignment_identity(experiment, sae)},
            bootstrap=boot, confidence=confidence)
    console = wide_console(160)
    console.print(per_genre_rich(run))
    console.print(summary_rich(run))
    if boot is not None:
        console.print(bootstrap_rich(run, boot, confidence))
    rows = {part: run.stats["SAE"][part].n_rows for part in ("select", "score")}
    what = "distinct items (activations averaged over their positions)" if unit == "items" \
        else "positions"
    console.print(
        f"hook {run.hook_name}; honest = best feature chosen on {rows['select']:,} {what} of "
        f"the {run.select_part} users, scored on {rows['score']:,} {what} of the "
        f"{run.score_part} users; in-sample = chosen and scored on the {run.score_part} users "
        "(flatters wide dictionaries). Random control: as many random directions as the SAE "
        "has features, each firing as often as its SAE feature.", highlight=False)
    for note in run.notes:
        console.print(f"note: {note}", style="dim", highlight=False)
    for part, (kept, total) in experiment.split.info.get("sampled_users", {}).items():
        console.print(f"note: {kept:,} of the {total:,} {part} users, drawn at random "
                      f"(--max-users, seed {seed})", style="dim", highlight=False)
    console.print(f"tables written to {written['summary'].parent}", highlight=False)


@align_app.command("ablations")
def ablations_command(
    run_dir: Path = typer.Argument(..., help="run folder written by 'mechrec train'"),
    sae_dir: Path = typer.Argument(..., help="SAE folder trained by 'mechrec sae train' on the "
                                   "run's model, or its name under RUN_DIR/saes"),
    kinds: str = typer.Option(",".join(ABLATION_KINDS), "--kinds", metavar="KIND,...",
                              help=f"rows to make: {' | '.join(ABLATION_KINDS)} "
                              "(comma-separated)"),
    out: Path | None = typer.Option(None, "--out", help="output folder (default: "
                                    "SAE_DIR/ablations)"),
    seed: int = typer.Option(0, "--seed", help="seed of the random control and the bootstrap"),
    bootstrap: int = typer.Option(200, "--bootstrap", help="resamples of the test users for "
                                  "the paired intervals (0 disables)"),
    confidence: float = typer.Option(0.95, "--confidence", help="coverage of the intervals, "
                                     "in (0, 1)"),
    data_dir: DataDirOption = None,
    download: DownloadOption = True,
    device: DeviceOption = "cpu",
) -> None:
    """Ablation rows: the SAE vs neurons vs random control with one thing changed per row.

    Rows: the SAE as trained (base); items (unit = distinct items); topk and jumprelu (the
    same dictionary with the base SAE's L0, measured on the SAE users); no-norm (trained on raw
    activations); layers (each other block's resid_post); mlp-out (the block's MLP output).
    Variant SAEs train with the base SAE's recorded configuration on the SAE users; best
    features are chosen there and scored on the test users; each row gives the honest mean
    best-genre correlation and paired bootstrap intervals of SAE - random and SAE - neurons.
    Every finished row is saved at once (OUT/<row>/), so a rerun resumes. The base row reads
    SAE_DIR/alignment when 'mechrec align tables' made it for this model and SAE on all users
    with the same seed (the same numbers, without aligning again).
    """
    chosen = tuple(k.strip() for k in kinds.split(",") if k.strip())
    unknown = [k for k in chosen if k not in ABLATION_KINDS]
    if unknown or not chosen:
        fail(f"--kinds {kinds!r}: choose from {', '.join(ABLATION_KINDS)} (comma-separated)")
    if bootstrap < 0:
        fail(f"--bootstrap must be >= 0 (0 disables), got {bootstrap}")
    if not 0.0 < confidence < 1.0:
        fail(f"--confidence must be in (0, 1), e.g. 0.95, got {confidence}")
    from mechrec_recsys.ablations import (
        ABLATIONS_DIR,
        run_sae_ablations,
        sae_training_config,
        saved_base_alignment,
    )
    from mechrec_recsys.saes import resolve_sae_directory

    experiment, sae = open_run(run_dir, sae_dir, data_dir, download, device)
    sae_path = resolve_sae_directory(run_dir, sae_dir)
    config = sae_training_config(sae_path).with_overrides(device=device)
    out_dir = out if out is not None else sae_path / ABLATIONS_DIR
    base_run, reason = saved_base_alignment(sae_path / "alignment", experiment, sae,
                                            bootstrap=bootstrap, seed=seed)
    typer.echo(f"  {reason}", err=True)
    with on_interrupt(f"every finished row, in {out_dir}", rerun_command()):
        table = run_sae_ablations(experiment, sae, config, chosen, bootstrap=bootstrap,
                                  confidence=confidence, seed=seed, out_dir=out_dir,
                                  progress=lambda line: typer.echo(f"  {line}", err=True),
                                  base_run=base_run)
    wide_console(160).print(ablations_rich(table))
    typer.echo(f"rows written to {out_dir}")


def ablations_rich(table: AblationTable) -> Table:
    """Rich table of ablation rows (honest means and paired intervals)."""
    meta = table.meta
    pct = f"{100 * meta.get('confidence', 0.95):g}%"
    out = Table(title=f"Ablations: mean best-{meta.get('group')} {meta.get('metric')}, chosen on "
                f"{meta.get('select')} users, scored on {meta.get('score')} users; "
                f"{pct} paired intervals over {meta.get('bootstrap')} resamples")
    for column in ("row", "hook", "L0", "EV", "SAE", "neurons", "random",
                   f"SAE - random [{pct}]", f"SAE - neurons [{pct}]", "changed"):
        out.add_column(column, justify="left" if column in ("row", "hook", "changed")
                       else "right")
    for row in table.rows:
        out.add_row(str(row["name"]), str(row["hook"]), _fmt(row["l0"], 0),
                    _fmt(row["explained_variance"]), _fmt(row["SAE"]), _fmt(row["neurons"]),
                    _fmt(row["random"]),
                    _interval(row["SAE - random"], row["SAE - random lower"],
                              row["SAE - random upper"]),
                    _interval(row["SAE - neurons"], row["SAE - neurons lower"],
                              row["SAE - neurons upper"]),
                    str(row.get("changes") or row.get("description")))
    return out


def _sources(baselines: str | None) -> tuple[str, ...]:
    """SAE, neurons and random, plus the ``--baselines`` named (checked)."""
    from mechrec.alignment.recipe import ALL_SOURCES, SOURCES

    extra = tuple(b.strip() for b in (baselines or "").split(",") if b.strip())
    unknown = [b for b in extra if b not in ALL_SOURCES or b in SOURCES]
    if unknown or (baselines is not None and not extra):
        choices = ", ".join(s for s in ALL_SOURCES if s not in SOURCES)
        fail(f"--baselines {baselines!r}: choose from {choices} (comma-separated)")
    return (*SOURCES, *extra)


def _planted_factors(planted: str | None, unit: str, item_labels: bool) -> tuple[str, ...]:
    """The factors ``--planted`` names (checked), or ``()`` without it."""
    if planted is None:
        return ()
    from mechrec_recsys.synthetic.planted import PLANTED

    factors = tuple(f.strip() for f in planted.split(",") if f.strip())
    unknown = [f for f in factors if f not in PLANTED]
    if unknown or not factors:
        fail(f"--planted {planted!r}: choose from {', '.join(PLANTED)} (comma-separated)")
    if unit != "positions":
        fail("--planted labels each event (position); it cannot be used with --unit items")
    if item_labels:
        fail("--planted replaces the item labels: drop --title-contains and --years")
    return factors


@align_app.command("examples")
def examples_command(
    run_dir: Path = typer.Argument(..., help="run folder written by 'mechrec train'"),
    sae_dir: Path = typer.Argument(..., help="SAE folder trained on the run's model, or its "
                                   "name under RUN_DIR/saes"),
    feature: int = typer.Argument(..., help="SAE feature index"),
    k: int = typer.Option(10, "--k", help="top activating positions to show"),
    part: str = typer.Option("sae_train", "--part",
                             help=f"users whose positions are searched: {' | '.join(PARTS)}"),
    context: int = typer.Option(5, "--context", help="preceding items shown per position"),
    p_top: int = typer.Option(100, "--p-top", help="k of p_top-k (share of the top-k "
                              "activation mass on items with an attribute)"),
    title_texts: list[str] = typer.Option([], "--title-contains",
                                          help="p_top-k for: title contains TEXT (repeatable)"),
    year_ranges: list[YearSpan] = typer.Option([], "--years", **parsed(YEAR_RANGE),
                                               help="p_top-k for: release year in FIRST-LAST "
                                               "(repeatable)"),
    effects: bool = typer.Option(True, "--effects/--no-effects",
                                 help="also print the items the feature promotes and demotes"),
    export: Path | None = typer.Option(None, "--export", help="write the feature's page as "
                                       "JSON (top sequences, histogram, output effects)"),
    data_dir: DataDirOption = None,
    download: DownloadOption = True,
    device: DeviceOption = "cpu",
    hook: SAEHookOption = None,
) -> None:
    """Print a feature's top activating positions with the items before them, p_top-k and the
    items it promotes and demotes; optionally export its page as JSON."""
    if part not in PARTS:
        fail(f"unknown --part {part!r}; choose one of {', '.join(PARTS)}")
    for name, value in (("--k", k), ("--p-top", p_top)):
        if value < 1:
            fail(f"{name} must be a positive integer, got {value}")
    if context < 0:
        fail(f"--context must be >= 0, got {context}")
    from mechrec.alignment import DegenerateInputWarning
    from mechrec_recsys.alignment import feature_examples, feature_p_top_k

    predicates = build_predicates(title_texts, year_ranges)
    experiment, sae = open_run(run_dir, sae_dir, data_dir, download, device, hook)
    examples = feature_examples(experiment, sae, feature, k=k, part=part, context=context)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateInputWarning)
        shares = feature_p_top_k(experiment, sae, feature, predicates=predicates, k=p_top,
                                 part=part)
    console = wide_console(160)
    table = Table(title=f"feature {feature}: top {k} positions of the {part} users "
                  f"(context: up to {context} preceding items, oldest first)")
    for name in ("rank", "activation", "user", "pos"):
        table.add_column(name, justify="right")
    longest = max((len(str(t)) for t in examples["title"]), default=4)
    table.add_column("item", style="bold", no_wrap=True, min_width=min(longest, 80))
    table.add_column("genres")
    table.add_column("context")
    for _, row in examples.iterrows():
        table.add_row(str(row["rank"]), f"{row['activation']:.3f}", str(row["user"]),
                      str(row["position"]), str(row["title"]), str(row["genres"]),
                      str(row["context"]))
    console.print(table)
    if examples.empty:
        console.print(f"feature {feature} never fires on the {part} users", highlight=False)
        return
    values = shares.iloc[0]
    custom = [c for c in values.index if c in predicates]
    ranked = values.drop(labels=custom).dropna().sort_values(ascending=False)
    ranked = ranked[ranked > 0].head(8)
    parts = [f"{name} {value:.3f}" for name, value in ranked.items()]
    parts += [f"{name} {_fmt(float(values[name]))}" for name in custom]
    console.print(f"p_top{p_top} (share of the top-{p_top} activation mass): " + "; ".join(parts),
                  highlight=False)
    if effects:
        from mechrec_recsys.feature_pages import feature_output_effects

        for name, frame in feature_output_effects(experiment, sae, feature, k=5).items():
            how = ("mean change of the test users' next-item scores with the feature set to "
                   "10" if name == "measured" else "decoder direction through the tied output "
                   "layer")
            for side in ("promotes", "demotes"):
                rows = frame[frame["side"] == side]
                console.print(f"{side} ({how}): " + "; ".join(
                    f"{r.title} ({r.effect:+.3f})" for r in rows.itertuples()),
                    highlight=False)
    if export is not None:
        from mechrec._io import atomic_write_json
        from mechrec_recsys.feature_pages import feature_dashboard

        page = feature_dashboard(experiment, sae, feature, k=k, context=context, part=part)
        atomic_write_json(export, page, sort_keys=False)
        console.print(f"feature page written to {export}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``align`` command group to the ``mechrec`` application."""
    app.add_typer(align_app, name="align")
