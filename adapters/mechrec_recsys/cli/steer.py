"""``mechrec steer``: steer genres with SAE features and probes (paper section 8).

Commands:

* ``mechrec steer sweep RUN_DIR SAE_DIR [--genres Action,Sci-Fi] [--values -10:10:1]
  [--mode replace|keep-error|both] [--probes/--no-probes]
  [--probe-methods logistic,mean_difference,k_sparse,pca] [--out DIR]``: for each genre's best
  SAE feature (chosen on the SAE-training users), set it at the last position to every value
  and score the test users' top-10 (genre shares, NDCG/HR with standard errors, coverage,
  diversity); with probes, also add unit-variance probe and SAE decoder directions (Fig. 9).
  Writes tidy tables (``sweep.csv``/``.json``, ``target_share.csv``, ``monotonicity.csv``,
  ``features.csv``, ``probes.csv``, ``users.csv``, ``summary.json``) and prints the target-genre
  share and NDCG at -10, -2, 0, 2 and 10.
* ``mechrec steer user RUN_DIR SAE_DIR --user ID --genre Sci-Fi --values 0,2,5``: one user's
  top-10 before and after setting the genre's feature (Fig. 7), with titles and genres.

``replace`` mode replaces the last position's activation by the edited SAE reconstruction (the
paper's procedure; even value 0 is then not the unsteered model); ``keep-error`` keeps the SAE's
error term. Bad input (unknown genre, feature index out of range, NaN values, an SAE from
another hook or model width, an unknown user, a missing run or SAE folder) prints one line
``error: ...`` to stderr and exits with code 2.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from mechrec_recsys.cli._common import (
    NOTHING_KEPT_UNTIL_DONE,
    AllowOtherModelOption,
    DataDirOption,
    DeviceOption,
    DownloadOption,
    MaxUsersOption,
    ProgressOption,
    SAEHookOption,
    check_max_users,
    fail,
    on_interrupt,
    rerun_command,
    sampled,
    wide_console,
)
from mechrec_recsys.cli.params import FEATURE_MAP, NAME_LIST, VALUE_GRID, parsed
from mechrec_recsys.configs import DEFAULT_GENRES, MODES

if TYPE_CHECKING:
    import pandas as pd

    from mechrec_recsys.steering import GenreSweep

steer_app = typer.Typer(
    name="steer",
    help="Steer genres in a trained GPTRec with SAE features and probe directions.",
    no_args_is_help=True,
)

SUMMARY_VALUES = (-10.0, -2.0, 0.0, 2.0, 10.0)



@contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """Show Python warnings raised inside as one line ``warning: ...`` each on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            shown: set[str] = set()
            for item in caught:
                if issubclass(item.category, DeprecationWarning | FutureWarning):
                    continue
                line = " ".join(str(item.message).split())
                if line not in shown:
                    shown.add(line)
                    typer.echo(f"warning: {line}", err=True)



def _open(run_dir: Path, sae_dir: Path, data_dir: Path | None, download: bool, device: str,
          batch_size: int, allow_other_model: bool = False,
          hook: str | None = None) -> tuple[Any, Any]:
    """Open the run and its SAE (a folder, or a name under ``RUN_DIR/saes``); check they fit."""
    from mechrec_recsys.experiment import Experiment

    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    experiment = Experiment.open(run_dir, data_dir=data_dir, download=download, device=device,
                                 batch_size=batch_size)
    return experiment, experiment.sae(sae_dir, allow_other_model=allow_other_model,
                                      hook_name=hook)


def _modes(mode: str) -> list[str]:
    if mode == "both":
        return list(MODES)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose replace, keep-error or both")
    return [mode]



def _fmt(value: float, digits: int = 3) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def summary_tables(result: GenreSweep) -> list[Table]:
    """Two rich tables: target-genre share and NDCG@k per curve at -10, -2, 0, 2, 10.

    The share table also counts the steps of the whole grid where the share went down and
    gives the Spearman correlation of share with value (1 = monotonic rise).
    """
    import pandas as pd

    summary = result.summary(SUMMARY_VALUES)
    mono = result.monotonicity().set_index("curve")
    k = result.metadata.get("k", 10)
    base = result.reference("unsteered")
    recon = result.reference("sae_reconstruction")
    at = [c.split("@", 1)[1] for c in summary.columns if c.startswith("share@")]
    share = Table(title=f"share of the target genre in the top-{k} (test users)")
    ndcg = Table(title=f"NDCG@{k} (unsteered {base['ndcg']:.3f} ± {base['ndcg_se']:.3f}; "
                       f"replace with unedited reconstruction {recon['ndcg']:.3f} ± "
                       f"{recon['ndcg_se']:.3f})")
    for table in (share, ndcg):
        for name in ("genre", "method", "mode", "feature"):
            table.add_column(name, style="bold" if name == "genre" else None)
    share.add_column("unsteered", justify="right")
    for value in at:
        share.add_column(value, justify="right")
        ndcg.add_column(value, justify="right")
    share.add_column("steps down", justify="right")
    share.add_column("spearman", justify="right")
    for row in summary.to_dict(orient="records"):
        column = result.curves.loc[result.curves["curve"] == row["curve"], "column"].iloc[0]
        feature = "" if pd.isna(row["feature"]) else str(int(row["feature"]))
        head = [str(row["genre"]), str(row["method"]), str(row["mode"]), feature]
        curve = mono.loc[row["curve"]]
        share.add_row(*head, _fmt(float(base[f"share:{column}"])),
                      *(_fmt(row[f"share@{v}"]) for v in at),
                      f"{curve['decreases']}/{curve['n_steps']}", _fmt(curve["spearman"], 2))
        ndcg.add_row(*head, *(_fmt(row[f"ndcg@{v}"]) for v in at))
    return [share, ndcg]


@steer_app.command("sweep")
def sweep_command(
    run_dir: Path = typer.Argument(..., help="run folder written by 'mechrec train'"),
    sae_dir: Path = typer.Argument(..., help="SAE folder, or its name under RUN_DIR/saes"),
    genres: Sequence[str] = typer.Option(",".join(DEFAULT_GENRES), "--genres",
                                         **parsed(NAME_LIST), help="comma-separated genres; "
                                         "Children also finds Children's"),
    values: Sequence[float] = typer.Option("-10:10:1", "--values", **parsed(VALUE_GRID),
                                           help="start:stop:step (inclusive) or a comma "
                                           "list; the paper uses -10:10:1, values far beyond "
                                           "that (about |v| > 1e4) overflow the model: NaN or "
                                           "infinite scores are an error"),
    mode: str = typer.Option("both", "--mode", help="SAE feature edits: replace (paper: the "
                             "activation becomes the edited reconstruction) | keep-error | both"),
    probes: bool = typer.Option(True, "--probes/--no-probes",
                                help="also steer with probe and SAE decoder directions "
                                "(unit variance, Fig. 9)"),
    features: Mapping[str, int] | None = typer.Option(
        None, "--features", **parsed(FEATURE_MAP),
        help="GENRE=INDEX,... instead of the best features"),
    probe_methods: Sequence[str] = typer.Option(
        "logistic", "--probe-methods", **parsed(NAME_LIST),
        help="with --probes, the probe kinds to steer by: logistic, mean_difference, "
        "k_sparse (a logistic probe on the --probe-k best-separating neurons), pca (the "
        "principal component that correlates best with the genre) (comma-separated)"),
    probe_k: int | None = typer.Option(
        None, "--probe-k", help="neurons per k_sparse probe (default: 8, or the width if "
        "smaller)"),
    pca_components: int | None = typer.Option(
        None, "--pca-components", help="principal components a pca probe chooses from "
        "(default: 64, or the width if smaller)"),
    random_control: bool = typer.Option(
        True, "--random-control/--no-random-control",
        help="also steer a random alive SAE feature per genre (replace mode): the control"),
    control_seed: int = typer.Option(0, "--control-seed",
                                     help="seed of the random control features"),
    k: int = typer.Option(10, "--k", help="length of the recommendation lists"),
    users: int = typer.Option(1, "--example-users", help="per genre, the N test users with the "
                              "most and the N with the fewest items of the genre get before/"
                              "after lists in users.csv (0: none)"),
    user_values: Sequence[float] = typer.Option("-2,0,2,5", "--user-values",
                                                **parsed(VALUE_GRID),
                                                help="feature values for the example users' "
                                                "lists"),
    naive: int = typer.Option(0, "--compare-naive", help="also run the naive full forward "
                              "pass on this many values and report the fast path's speed-up "
                              "and largest logit difference (0: skip)"),
    out: Path | None = typer.Option(None, "--out",
                                    help="output folder (default RUN_DIR/steering/SAE_NAME)"),
    data_dir: DataDirOption = None,
    download: DownloadOption = True,
    device: DeviceOption = "cpu",
    batch_size: int = typer.Option(256, "--batch-size", help="test users per forward pass"),
    progress: ProgressOption = True,
    allow_other_model: AllowOtherModelOption = False,
    hook: SAEHookOption = None,
    max_users: MaxUsersOption = None,
) -> None:
    """Sweep each genre's SAE feature (and probe) over values; write tables, print a summary."""
    from mechrec_recsys.steering import run_genre_sweep

    with _warnings_to_stderr(), on_interrupt(NOTHING_KEPT_UNTIL_DONE, rerun_command()):
        grid = list(values)
        chosen_modes = _modes(mode)
        overrides = dict(features or {})
        if k < 1:
            fail(f"--k must be >= 1, got {k}")
        if users < 0 or naive < 0:
            fail("--example-users and --compare-naive must be >= 0")
        from mechrec.attribute_steering import PROBE_CURVES

        unknown = [m for m in probe_methods if m not in PROBE_CURVES]
        if probes and (unknown or not probe_methods):
            fail(f"unknown --probe-methods {unknown}; choose from {', '.join(PROBE_CURVES)}")
        for option, count in (("--probe-k", probe_k), ("--pca-components", pca_components)):
            if count is not None and count < 1:
                fail(f"{option} must be >= 1, got {count}")
        check_max_users(max_users)
        experiment, sae = _open(run_dir, sae_dir, data_dir, download, device, batch_size,
                                allow_other_model, hook)
        experiment = sampled(experiment, max_users, control_seed)
        genre_list = list(genres)
        result = run_genre_sweep(
            experiment, sae, genres=genre_list, values=grid, modes=chosen_modes, probes=probes,
            features=overrides, k=k, progress=progress, random_control=random_control,
            control_seed=control_seed, probe_methods=tuple(probe_methods), probe_k=probe_k,
            pca_components=pca_components)
        user_table = None
        if users > 0:
            user_table = _example_user_lists(experiment, sae, result, users, list(user_values),
                                             chosen_modes[0], k)
        extra: dict[str, Any] = {"command": {
            "run_dir": str(run_dir), "sae_dir": str(sae_dir), "genres": genre_list,
            "values": grid, "mode": mode, "probes": probes,
            "probe_methods": list(probe_methods), "probe_k": probe_k,
            "pca_components": pca_components,
            "features": overrides, "k": k, "random_control": random_control,
            "control_seed": control_seed}}
        if naive > 0:
            extra["fast_path"] = _fast_vs_naive(experiment, sae, result, grid, naive)
        out_dir = out if out is not None else Path(run_dir) / "steering" / Path(sae_dir).name
        result.save(out_dir, users=user_table, extra=extra)
    console = wide_console(140)
    meta = result.metadata
    console.print(f"{meta['run']['dataset']} ({meta['run']['split']} split), "
                  f"{meta['n_test_users']} test users; SAE d_sae={meta['sae']['d_sae']} at "
                  f"{meta['hook_name']}; {len(grid)} values in [{grid[0]:g}, {grid[-1]:g}]",
                  highlight=False)
    console.print("features: the best correlation on the SAE-training users, "
                  + ", ".join(f"{r.genre} -> {r.feature} ({r.correlation_select:.2f}; test "
                              f"{r.correlation_test:.2f})"
                              for r in result.features.itertuples(index=False)),
                  highlight=False)
    for table in summary_tables(result):
        console.print(table)
    console.print("replace: the last position becomes the edited SAE reconstruction (paper); "
                  "keep-error: the SAE error term is kept; add: value × unit-variance direction",
                  highlight=False)
    if "fast_path" in extra:
        fp = extra["fast_path"]
        console.print(f"fast path: {fp['fast_seconds_per_value'] * 1e3:.1f} ms per value vs "
                      f"naive {fp['naive_seconds_per_value'] * 1e3:.1f} ms "
                      f"(x{fp['speedup']:.1f}); largest logit difference "
                      f"{fp['max_abs_logit_diff']:.2e}; same top-{k}: {fp['same_top_k']}",
                      highlight=False)
    console.print(f"tables written to {out_dir}", highlight=False)


def _example_user_lists(experiment: Any, sae: Any, result: GenreSweep, n: int,
                        values: list[float], mode: str, k: int) -> pd.DataFrame:
    """Before/after lists of each genre's example users under its feature (one mode)."""
    import pandas as pd

    from mechrec.sweep import feature_target
    from mechrec_recsys.steering import example_users, user_recommendations

    frames = []
    for row in result.features.itertuples(index=False):
        target = feature_target(sae, int(row.feature), name=f"sae:{row.genre}",
                                keep_error=mode == "keep-error")
        chosen = example_users(experiment, row.column, k=k, n=n)
        frame = user_recommendations(experiment, target, chosen, values,
                                     genre_column=row.column, k=k)
        frame.insert(0, "genre", row.genre)
        frame.insert(1, "mode", mode)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _fast_vs_naive(experiment: Any, sae: Any, result: GenreSweep, grid: list[float],
                   n: int) -> dict[str, Any]:
    """Fast path against the naive path for the first genre's replace-mode feature."""
    from mechrec.sweep import feature_target
    from mechrec_recsys.steering import compare_fast_naive

    first = result.features.iloc[0]
    target = feature_target(sae, int(first["feature"]), name=f"sae:{first['genre']}")
    return compare_fast_naive(experiment, target, grid, naive_values=grid[:n])


@steer_app.command("user")
def user_command(
    run_dir: Path = typer.Argument(..., help="run folder written by 'mechrec train'"),
    sae_dir: Path = typer.Argument(..., help="SAE folder, or its name under RUN_DIR/saes"),
    user: str = typer.Option(..., "--user", help="raw user id (test users first)"),
    genre: str = typer.Option(..., "--genre", help="genre whose feature is steered"),
    values: Sequence[float] = typer.Option("0,2,5", "--values", **parsed(VALUE_GRID),
                                           help="comma list or start:stop:step; the paper "
                                           "steers within -10..10, and values far beyond the "
                                           "activations' scale (about |v| > 1e4) overflow the "
                                           "model: a value that makes any score NaN or "
                                           "infinite is an error"),
    feature: int | None = typer.Option(None, "--feature",
                                       help="SAE feature index instead of the genre's best"),
    mode: str = typer.Option("replace", "--mode", help="replace | keep-error"),
    k: int = typer.Option(10, "--k", help="length of the recommendation lists"),
    out: Path | None = typer.Option(None, "--out", help="also write the lists as CSV here"),
    data_dir: DataDirOption = None,
    download: DownloadOption = True,
    device: DeviceOption = "cpu",
    allow_other_model: AllowOtherModelOption = False,
    hook: SAEHookOption = None,
) -> None:
    """Print one user's top-k before and after setting a genre's SAE feature (Fig. 7)."""
    from mechrec.sweep import feature_target
    from mechrec_recsys.steering import (
        resolve_genres,
        select_genre_features,
        user_recommendations,
    )

    with _warnings_to_stderr():
        grid = list(values)
        if mode not in MODES:
            fail(f"unknown mode {mode!r}; choose replace or keep-error")
        if k < 1:
            fail(f"--k must be >= 1, got {k}")
        experiment, sae = _open(run_dir, sae_dir, data_dir, download, device, 256,
                                allow_other_model, hook)
        resolved = resolve_genres([genre], experiment.genre_names)
        overrides = {genre: feature} if feature is not None else None
        chosen = select_genre_features(experiment, sae, resolved, overrides=overrides)
        row = chosen.iloc[0]
        target = feature_target(sae, int(row["feature"]), name=f"sae:{genre}",
                                keep_error=mode == "keep-error")
        lists = user_recommendations(experiment, target, [user], grid,
                                     genre_column=row["column"], k=k)
        if out is not None:
            from mechrec_recsys.checkpoint import atomic_write_bytes

            atomic_write_bytes(out, lists.to_csv(index=False).encode())
    console = wide_console(140)
    first = lists.iloc[0]
    console.print(f"user {first['user_id']} ({first['part']} users): {row['column']} feature "
                  f"{int(row['feature'])} (correlation {row['correlation_select']:.2f} on the "
                  f"SAE-training users), {mode} mode; * = {row['column']}, + = not in the "
                  "list before", highlight=False)
    for setting, group in lists.groupby("setting", sort=False):
        label = "before (unsteered)" if setting == "before" else f"feature = {setting}"
        share = group["has_target_genre"].mean()
        console.print(f"{label}: {row['column']} share {share:.1f}", highlight=False)
        for item in group.itertuples(index=False):
            mark = ("*" if item.has_target_genre else " ") + \
                   ("+" if setting != "before" and not item.in_before else " ")
            console.print(f"  {item.rank:>2} {mark} {item.title}  [{item.genres}]",
                          highlight=False, markup=False)
    if out is not None:
        console.print(f"lists written to {out}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``steer`` command group to the ``mechrec`` application."""
    app.add_typer(steer_app, name="steer")
