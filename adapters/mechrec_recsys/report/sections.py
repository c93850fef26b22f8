"""The report's sections, one function each, built only from a run folder's saved outputs.

Each function takes :class:`~mechrec_recsys.report.outputs.RunOutputs` and returns a
:class:`Section`. An output that is missing or unreadable becomes a note naming the file and
the commands that produce it; it never stops the report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from mechrec.plots import CURVE_LABELS as CORE_CURVE_LABELS
from mechrec.plots import (
    binned_activation_histogram,
    comparison_bars,
    metric_lines,
    profile_heatmap,
    steering_curves,
)
from mechrec_recsys.durations import format_duration
from mechrec_recsys.report.markup import (
    details,
    esc,
    figure,
    fmt,
    missing_note,
    num_cell,
    number,
    paragraph,
    table,
    text_cell,
)
from mechrec_recsys.report.outputs import MissingOutput, RunOutputs
from mechrec_recsys.report.settings import ReproduceSettings
from mechrec_recsys.report.steps import STEP_NAMES, STEPS, step_command

if TYPE_CHECKING:  # pragma: no cover - the result objects' modules (torch) load when read
    from mechrec.alignment import AlignmentRun
    from mechrec_recsys.steering import GenreSweep


@dataclass(frozen=True)
class Section:
    """One part of the report.

    Attributes:
        ident: HTML id (anchor of the table of contents).
        title: heading.
        body: ready HTML.
    """

    ident: str
    title: str
    body: str


# ------------------------------------------------------------------------------ helpers
def reproduce_command(out: RunOutputs) -> str:
    """The ``mechrec reproduce`` command that (re)makes this run folder."""
    try:
        s = out.settings
        head = (f"mechrec reproduce --dataset {s.get('dataset')} --split {s.get('split')} "
                f"--seed {s.get('seed')}")
        quick = " --quick" if s.get("quick") else ""
    except MissingOutput:
        head, quick = "mechrec reproduce --dataset DATASET --split paper --seed 0", ""
    return f"{head}{quick} --out {out.run_dir}"


def known_settings(out: RunOutputs) -> ReproduceSettings | None:
    """The run's settings, or ``None`` when the folder has none (or unreadable ones)."""
    try:
        return ReproduceSettings.from_json(out.settings)
    except (MissingOutput, ValueError, TypeError):
        return None


def _missing(out: RunOutputs, what: str, exc: MissingOutput) -> str:
    commands = [reproduce_command(out)]
    if exc.step in STEP_NAMES:
        single = step_command(exc.step, known_settings(out), out.run_dir)
        if not single.startswith("mechrec reproduce"):
            commands.append(f"{single}   (this step alone)")
    return missing_note(what, exc.path, exc.reason, commands)


def _guard(out: RunOutputs, what: str, build: Callable[[], str]) -> str:
    """``build()``, or the missing-output note when a file it reads is not available."""
    try:
        return build()
    except MissingOutput as exc:
        return _missing(out, what, exc)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return paragraph(f"{what} could not be read from the run's files "
                         f"({type(exc).__name__}: {exc}); rerun the step that writes it.",
                         cls="missing")


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    clean = frame.astype(object).where(frame.notna(), None)
    return clean.to_dict(orient="records")


# ------------------------------------------------------------------------------ overview
def overview_section(out: RunOutputs) -> Section:
    """What the run is (dataset, split, seed, preset) and which steps are done."""

    def build() -> str:
        s = out.settings
        parts = [paragraph(f"Run folder {out.run_dir}: {s['dataset']}, {s['split']} split, "
                           f"seed {s['seed']}; {'quick' if s.get('quick') else 'paper'} "
                           "preset.")]
        if s.get("quick"):
            parts.append(paragraph(
                "Quick preset: every step ran at toy size (small model, few epochs, tiny "
                "SAEs). The numbers show that the pipeline works, not what the paper found; "
                "run without --quick for the paper's settings.", cls="warning"))
        if s.get("budget_minutes") is not None:
            cuts = list(s.get("budget_cuts") or [])
            parts.append(paragraph(
                f"Budget: these settings were cut to fit about {s['budget_minutes']:g} minutes "
                "of wall time (--budget). "
                + ("Cut: " + "; ".join(cuts) + "." if cuts else "Nothing had to be cut.")
                + " Numbers from fewer seeds, grid points or epochs than the paper's are "
                "noisier; the wall time of each step is in the table below.",
                cls="warning" if cuts else None))
        records = out.steps
        rows = []
        for step in STEPS:
            record = records.get(step.name)
            seconds = record.get("seconds") if record else None
            rows.append([text_cell(step.name, header=True), text_cell(step.title),
                         text_cell("done" if record else "not done",
                                   key=f"overview/{step.name}/status"),
                         text_cell(format_duration(seconds) if seconds is not None else "",
                                   key=f"overview/{step.name}/seconds")])
        parts.append(table(["step", "produces", "status", "wall time"], rows))
        return "".join(parts)

    return Section("overview", "Overview", _guard(out, "The run's settings", build))


# ------------------------------------------------------------------------------ dataset
SPLIT_COUNTS: tuple[tuple[str, str], ...] = (
    ("users_total", "users in the dataset"),
    ("users_dropped_short", "users dropped (too short)"),
    ("train_users", "recommender-training users"),
    ("validation_users", "validation users"),
    ("sae_users", "SAE-training users"),
    ("test_users_selected", "test users selected"),
    ("test_targets_unseen_dropped", "test users dropped (target item unseen in training)"),
    ("test_users", "test users scored"),
    ("items_in_train", "items in recommender training"),
    ("vocab_size", "vocabulary (items + padding)"),
    ("truncated_sequences", "truncated sequences"),
)


def dataset_section(out: RunOutputs) -> Section:
    """Split bookkeeping and :func:`~mechrec_recsys.data.dataset_statistics`."""

    def split_counts() -> str:
        info = out.split_info["info"]
        rows = [[text_cell(label, header=True), num_cell(info[key], key=f"split/{key}",
                                                         count=True)]
                for key, label in SPLIT_COUNTS if key in info]
        return table(["split bookkeeping", "count"], rows,
                     caption=f"{info.get('kind', '')} split of {info.get('dataset', '')}, "
                             f"seed {info.get('seed', '')}")

    def statistics() -> str:
        stats = out.dataset_statistics
        columns = list(stats.columns)

        def rows_of(names: Sequence[str], count: bool) -> list[list[str]]:
            return [[text_cell(name, header=True),
                     *(num_cell(stats.at[name, c], key=f"stats/{name}/{c}", count=count,
                                digits=3) for c in columns)] for name in names]

        plain = [n for n in stats.index if not str(n).startswith("genre ")]
        genres = [n for n in stats.index if str(n).startswith("genre ")]
        body = table(["statistic", *columns], rows_of(plain, True),
                     caption="users, items, interactions and sequence lengths per part "
                             "(all = the whole dataset before the split)")
        if genres:
            body += details("genre shares of the interactions, per part",
                            table(["statistic", *columns], rows_of(genres, False)))
        return body

    body = (_guard(out, "The split's bookkeeping", split_counts)
            + _guard(out, "The dataset statistics", statistics))
    return Section("dataset", "Dataset and split", body)


# ------------------------------------------------------------------------------ GPTRec
METRIC_LABELS: dict[str, str] = {"ndcg": "NDCG", "hit_rate": "HR", "mrr": "MRR",
                                 "coverage": "Coverage", "diversity": "Diversity"}


def gptrec_section(out: RunOutputs) -> Section:
    """GPTRec vs popularity with standard errors, and the training curve."""

    def build() -> str:
        m = out.metrics
        comparison = m["comparison"]
        k = comparison["k"]
        reports = comparison["reports"]
        keys = [key for key in METRIC_LABELS
                if all(key in rep["metrics"] for rep in reports.values())]
        rows = []
        for name, rep in reports.items():
            rows.append([text_cell(name, header=True), *(
                num_cell(rep["metrics"][key]["mean"], spread=rep["metrics"][key]["se"],
                         key=f"gptrec/{name}/{key}") for key in keys)])
        paired = comparison.get("paired_difference", {})
        model = next(iter(reports))
        rows.append([text_cell(f"{model} − popularity (paired)", header=True), *(
            num_cell(paired[key]["mean"], spread=paired[key]["se"], key=f"gptrec/paired/{key}")
            if key in paired else text_cell("") for key in keys)])
        info = comparison.get("info", {})
        seen = "excluded" if info.get("exclude_seen") else "included"
        parts = [table(["model", *(f"{METRIC_LABELS[key]}@{k}" for key in keys)], rows,
                       caption=f"test users: {info.get('test_users', '–')}; mean ± standard "
                               "error over test users (coverage and diversity: bootstrap); "
                               f"seen items {seen}")]
        parts.append(paragraph(
            f"Best epoch {m.get('best_epoch')} (validation NDCG@{k} "
            f"{fmt(m.get('best_val_ndcg'))}); "
            f"{'stopped early' if m.get('stopped_early') else 'ran every epoch'}."))
        history = m.get("history") or []
        if len(history) > 1:
            parts.append('<div class="charts">' + figure(metric_lines(
                history, "epoch", {"validation NDCG": "val_ndcg"},
                title=f"validation NDCG@{k} per epoch", y_title=f"NDCG@{k}"),
                "early stopping watches this curve") + figure(metric_lines(
                    history, "epoch", {"training loss": "loss"},
                    title="training loss per epoch", y_title="loss"),
                    "next-item cross-entropy") + "</div>")
            parts.append(details("validation NDCG and training loss per epoch", table(
                ["epoch", f"validation NDCG@{k}", "training loss"],
                [[num_cell(h.get("epoch"), key=f"gptrec/history/{i}/epoch", count=True),
                  num_cell(h.get("val_ndcg"), key=f"gptrec/history/{i}/val_ndcg"),
                  num_cell(h.get("loss"), key=f"gptrec/history/{i}/loss")]
                 for i, h in enumerate(history)])))
        return "".join(parts)

    return Section("gptrec", "GPTRec vs popularity (paper §5)",
                   _guard(out, "GPTRec's test metrics", build))


# ------------------------------------------------------------------------------ Table 1
def _figure3(rows_data: list[dict]) -> str:
    """Figure 3: the mean best-genre correlation of each Table-1 point (honest and in-sample),
    as a table and, for each sweep with several points, a chart; empty for a table1.json
    written before these numbers existed."""
    points = [r for r in rows_data if r["sweep"] != "original"
              and number(r.get("genre_corr_honest_mean")) is not None]
    if not points:
        return ""
    several = any((number(r.get("n_seeds")) or 0) > 1 for r in points)
    rows = [[num_cell(r["l1_coefficient"], key=f"figure3/{i}/l1_coefficient", digits=3),
             num_cell(r["d_sae"], key=f"figure3/{i}/d_sae", count=True),
             *(num_cell(r[f"{m}_mean"], spread=r[f"{m}_std"] if several else None,
                        spread_kind="std", key=f"figure3/{i}/{m}", digits=3)
               for m in ("genre_corr_honest", "genre_corr_in_sample"))]
            for i, r in enumerate(points)]
    parts = ["<h3>Figure 3: interpretability vs L1 weight and dictionary size</h3>",
             table(["L1 weight", "dict size", "mean best-genre correlation (honest)",
                    "(in-sample)"], rows,
                   caption="mean over genres of the best SAE feature's correlation with the "
                           "genre on the test users' positions; honest: each feature chosen "
                           "on the SAE users, in-sample: chosen on the test users (the "
                           "paper's procedure, which flatters wide dictionaries); ± std over "
                           "seeds when there are several")]
    charts = []
    for sweep, x_key, x_label in (("l1", "l1_coefficient", "L1 weight"),
                                  ("d_sae", "d_sae", "dictionary size")):
        line = [r for r in points if r["sweep"] == sweep]
        if len(line) < 2:
            continue
        charts.append(figure(metric_lines(
            line, x_key, {"honest": "genre_corr_honest_mean",
                          "in-sample": "genre_corr_in_sample_mean"},
            err={"honest": "genre_corr_honest_std", "in-sample": "genre_corr_in_sample_std"},
            title=f"mean best-genre correlation vs {x_label}", x_title=x_label,
            y_title="mean correlation", log_x=True, dashed=("in-sample",)),
            "Figure 3 (± std over seeds)"))
    if charts:
        parts.append('<div class="charts">' + "".join(charts) + "</div>")
    return "".join(parts)


#: The splice-quality columns of Table 1 and their headers (``{k}``: the list length).
QUALITY_HEADERS: dict[str, str] = {
    "loss_recovered_zero": "loss recovered (zero abl.)",
    "loss_recovered_mean": "loss recovered (mean abl.)",
    "ndcg_recovered_zero": "NDCG@{k} recovered (zero abl.)",
    "ndcg_recovered_mean": "NDCG@{k} recovered (mean abl.)",
    "kl": "KL (nats)",
}


def _splice_quality(rows_data: list[dict], k: int) -> str:
    """The splice-quality columns of each Table-1 point as a table; empty for a table1.json
    written before these numbers existed."""
    points = [r for r in rows_data if r["sweep"] != "original"
              and any(number(r.get(f"{m}_mean")) is not None for m in QUALITY_HEADERS)]
    if not points:
        return ""
    several = any((number(r.get("n_seeds")) or 0) > 1 for r in points)
    rows = [[num_cell(r["l1_coefficient"], key=f"quality/{i}/l1_coefficient", digits=3),
             num_cell(r["d_sae"], key=f"quality/{i}/d_sae", count=True),
             *(num_cell(r.get(f"{m}_mean"), spread=r.get(f"{m}_std") if several else None,
                        spread_kind="std", key=f"quality/{i}/{m}", digits=4 if m == "kl" else 3)
               for m in QUALITY_HEADERS)]
            for i, r in enumerate(points)]
    return ("<h3>What the model keeps with the SAE spliced in</h3>"
            + table(["L1 weight", "dict size",
                     *(header.format(k=k) for header in QUALITY_HEADERS.values())], rows,
                    caption=f"test users' next item: share of the next-item loss and of "
                            f"NDCG@{k} that the SAE (replace) recovers against the hook zeroed "
                            "or set to the SAE users' mean activation (1 = as trained, 0 = as "
                            "ablated; above 1: better than as trained), and the KL divergence "
                            "of the next-item distribution, original || SAE ('mechrec sae "
                            "quality'); ± std over seeds when there are several"))


def _table1_grid(t: Any) -> str:
    """Table1.plot() (:func:`mechrec.plots.table1_figure`): the whole grid, each seed."""
    try:
        fig = t.plot()
    except ValueError as exc:  # no sweep line to draw
        return paragraph(f"The grid figure could not be drawn ({exc}).", cls="missing")
    return figure(fig, "Table 1's grid: mean ± std over seeds, each seed as a faint marker; "
                       "NDCG with the original model dotted")


def table1_section(out: RunOutputs) -> Section:
    """Table 1: reconstruction, sparsity and downstream metrics per L1 weight / size."""

    def build() -> str:
        t = out.table1
        k = t.k
        rows_data = t.rows()
        rows = []
        for i, row in enumerate(rows_data):
            key = f"table1/{i}"
            if row["sweep"] == "original":
                head = [text_cell("original", header=True), text_cell("–"),
                        *(text_cell("–") for _ in range(4))]
                ranking = [num_cell(row[f"{m}_mean"], spread=row[f"{m}_se"],
                                    key=f"{key}/{m}") for m in ("ndcg", "hit_rate", "coverage")]
                rows.append([*head, *ranking, text_cell("–")])
                continue
            spread = "std" if (number(row.get("n_seeds")) or 0) > 1 else None
            head = [num_cell(row["l1_coefficient"], key=f"{key}/l1_coefficient", digits=3),
                    num_cell(row["d_sae"], key=f"{key}/d_sae", count=True)]
            recon = [num_cell(row[f"{m}_mean"], spread=row[f"{m}_std"] if spread else None,
                              spread_kind="std", key=f"{key}/{m}",
                              digits=1 if m == "l0" else 3)
                     for m in ("rmse", "explained_variance", "l0", "dead_fraction")]
            ranking = [num_cell(row[f"{m}_mean"], spread=row[f"{m}_std"] if spread else None,
                                spread_kind="std", key=f"{key}/{m}")
                       for m in ("ndcg", "hit_rate", "coverage")]
            delta = num_cell(row["ndcg_delta_mean"], spread=row["ndcg_delta_se"],
                             key=f"{key}/ndcg_delta")
            rows.append([*head, *recon, *ranking, delta])
        config = t.base_config
        info = t.info
        seeds = t.seeds
        caption = (f"standard (L1) SAEs at {t.hook}: {config.get('steps')} steps of "
                   f"{config.get('batch_size')} rows, {len(seeds)} seed(s) {seeds}; metrics on "
                   f"{info.get('test_users', '–')} test users ({info.get('test_rows', '–')} "
                   "activations). SAE rows: mean (± std over seeds when there are several); "
                   "original: ± standard error over test users.")
        parts = [table(["L1 weight", "dict size", "RMSE", "expl. var.", "L0", "dead",
                        f"NDCG@{k}", f"HR@{k}", f"Coverage@{k}", "ΔNDCG (paired)"], rows,
                       caption=caption)]
        identical = [r.get("replace_error_identical") for r in rows_data[1:]]
        if identical and all(number(v) is not None for v in identical):
            share = sum(float(v) for v in identical) / len(identical)
            parts.append(paragraph(
                f"With the SAE's error term added back (\"replace + error\"), "
                f"{share:.0%} of the SAE points gave exactly the original top-{k} lists."))
        l1_rows = [r for r in rows_data if r["sweep"] == "l1"]
        original = rows_data[0] if rows_data and rows_data[0]["sweep"] == "original" else {}
        charts = []
        if len(l1_rows) > 1:
            charts.append(figure(metric_lines(
                l1_rows, "l1_coefficient", {"explained variance": "explained_variance_mean"},
                err={"explained variance": "explained_variance_std"},
                title=f"explained variance vs L1 (dictionary {l1_rows[0]['d_sae']})",
                x_title="L1 weight", y_title="explained variance", log_x=True),
                "reconstruction quality"))
            charts.append(figure(metric_lines(
                l1_rows, "l1_coefficient", {f"NDCG@{k} (replace)": "ndcg_mean"},
                err={f"NDCG@{k} (replace)": "ndcg_std"},
                title=f"NDCG@{k} vs L1 (dictionary {l1_rows[0]['d_sae']})",
                x_title="L1 weight", y_title=f"NDCG@{k}", log_x=True,
                references={"original": original.get("ndcg_mean")}),
                "the model with the hook replaced by the reconstruction"))
        size_rows = [r for r in rows_data if r["sweep"] == "d_sae"]
        if len(size_rows) > 1:
            charts.append(figure(metric_lines(
                size_rows, "d_sae", {"RMSE": "rmse_mean"}, err={"RMSE": "rmse_std"},
                title=f"RMSE vs dictionary size (L1 {size_rows[0]['l1_coefficient']:g})",
                x_title="dictionary size", y_title="RMSE", log_x=True), "normalised space"))
        if charts:
            parts.append('<div class="charts">' + "".join(charts) + "</div>")
        parts.append(_table1_grid(t))
        parts.append(_splice_quality(rows_data, k))
        parts.append(_figure3(rows_data))
        return "".join(parts)

    return Section("table1", "Table 1: reconstruction vs sparsity (paper §6)",
                   _guard(out, "Table 1", build))


# ------------------------------------------------------------------------------ SAE
def sae_section(out: RunOutputs) -> Section:
    """The SAE used for the alignment and steering sections."""

    def build() -> str:
        s = out.sae_metrics
        config = s["config"]
        metrics = s["test_metrics"]
        rows = [[text_cell(label, header=True), num_cell(value, key=f"sae/{name}", digits=4)]
                for name, label, value in (
                    ("d_sae", "dictionary size", config.get("d_sae")),
                    ("l1_coefficient", "L1 weight", config.get("l1_coefficient")),
                    ("steps", "training steps", config.get("steps")),
                    ("batch_size", "rows per step", config.get("batch_size")),
                    ("rmse", "RMSE (test)", metrics.get("rmse")),
                    ("explained_variance", "explained variance (test)",
                     metrics.get("explained_variance")),
                    ("l0", "L0 (test)", metrics.get("l0")),
                    ("dead_fraction", "dead fraction (test)", metrics.get("dead_fraction")),
                    ("n_rows", "test activations", metrics.get("n_rows")),
                    ("dead_fraction_train", "dead fraction (end of training)",
                     s.get("dead_fraction_train")),
                    ("training_seconds", "training seconds", s.get("training_seconds")))]
        quality = s.get("quality") or {}
        rows += [[text_cell(label, header=True),
                  num_cell(quality.get(name), key=f"sae/{name}", digits=4)]
                 for name, label in (
                     ("loss_original", "next-item loss, model (test)"),
                     ("loss_sae", "next-item loss, SAE spliced in"),
                     ("loss_recovered_zero", "loss recovered vs zero ablation"),
                     ("loss_recovered_mean", "loss recovered vs mean ablation"),
                     ("ndcg_recovered_zero", "NDCG@10 recovered vs zero ablation"),
                     ("ndcg_recovered_mean", "NDCG@10 recovered vs mean ablation"),
                     ("kl", "KL(model || spliced), nats"))
                 if name in quality]
        note = (" Recovered = (ablated − spliced) / (ablated − model): 1 is as good as the "
                "model, 0 as bad as setting the hook to zero (or to the SAE users' mean); above "
                "1 the spliced model does better." if quality else "")
        return table(["", "value"], rows,
                     caption=f"{config.get('architecture')} SAE at {s.get('hook')}, trained "
                             "on the SAE users' activations, measured on the test users'."
                             + note)

    return Section("sae", "The SAE used for analysis", _guard(out, "The analysis SAE", build))


# ------------------------------------------------------------------------------ bootstrap
#: Feature sets of the alignment comparison, in report order, with their display names.
SOURCE_LABELS: dict[str, str] = {"SAE": "SAE features", "neurons": "neurons",
                                 "random": "random control"}
#: The row of the bootstrap tables holding the mean over a group's attributes.
BOOTSTRAP_MEAN_ROW = "(mean)"
GROUP_NOUNS: dict[str, str] = {"genre": "genres", "decade": "release decades",
                               "custom": "custom attributes", "all": "attributes"}
GROUP_TITLES: dict[str, str] = {"decade": "release decades", "custom": "custom attributes",
                                "all": "every attribute together"}


def _main_source(run: AlignmentRun) -> str:
    """The feature set of Table 2 and Figure 2 (as in the run's written tables): the SAE's."""
    return "SAE" if "SAE" in run.stats else run.sources[0]


def _widths(run: AlignmentRun) -> dict[str, int]:
    """Each feature set's number of features."""
    return {source: run.stats[source]["score"].n_features for source in run.sources}


def _source_label(source: str, widths: dict[str, Any]) -> str:
    label = SOURCE_LABELS.get(source, source)
    width = widths.get(source)
    return f"{label} ({width})" if number(width) is not None else label


def contains_zero(lower: Any, upper: Any) -> bool | None:
    """Whether the interval ``[lower, upper]`` contains 0 (``None`` without an interval)."""
    lo, hi = number(lower), number(upper)
    if lo is None or hi is None:
        return None
    return lo <= 0.0 <= hi


def difference_verdict(features: str, versus: str, lower: Any, upper: Any,
                       share_positive: Any, confidence: float) -> str:
    """One sentence saying whether the interval of ``features - versus`` contains 0, built only
    from the numbers."""
    pct = f"{100 * confidence:g}%"
    first, second = (SOURCE_LABELS.get(features, features), SOURCE_LABELS.get(versus, versus))
    name = f"{first} − {second}"
    inside = contains_zero(lower, upper)
    if inside is None:
        return f"{name}: no {pct} interval (no resample gave a defined value)."
    span = f"{pct} interval {number(lower):+.3f} to {number(upper):+.3f}"
    share = number(share_positive)
    shown = "" if share is None else f" ({share:.0%} of resamples > 0)"
    if inside:
        return f"{name}: the {span} contains 0{shown}, so the two cannot be told apart."
    if number(lower) > 0.0:
        return f"{name}: the {span} lies above 0{shown}: {first} score higher than {second}."
    return f"{name}: the {span} lies below 0{shown}: {first} score lower than {second}."


def bootstrap_conclusion(intervals: Sequence[tuple[Any, Any]], noun: str) -> str:
    """How many of the difference intervals ``(lower, upper)`` contain 0."""
    verdicts = [v for v in (contains_zero(lo, hi) for lo, hi in intervals) if v is not None]
    zero = sum(verdicts)
    if not verdicts:
        return "No difference has an interval."
    if zero == len(verdicts):
        return (f"Every difference interval contains 0: by the mean over the {noun}, the "
                "feature sets cannot be told apart on these test users.")
    if zero == 0:
        return (f"No difference interval contains 0: the mean over the {noun} separates "
                "every pair.")
    rest = len(verdicts) - zero
    verb = "contains" if zero == 1 else "contain"
    others = ("the other one separates its pair" if rest == 1
              else f"the other {rest} separate their pairs")
    return f"{zero} of {len(verdicts)} difference intervals {verb} 0; {others}."


def bootstrap_block(out: RunOutputs, group: str, *, tables_only: bool = False) -> str:
    """Mean ``metric`` per feature set with its interval, the paired differences with theirs,
    and a sentence per difference saying whether its interval contains 0 (for one group of
    attributes: ``genre``, ``decade``, ``custom`` or ``all``)."""
    run = out.alignment
    saved = out.alignment_bootstrap
    meta = saved.meta
    metric = run.metric
    pct = f"{100 * saved.confidence:g}%"
    intervals, diffs = saved.intervals, saved.differences
    widths = _widths(run)
    rows_of = (intervals["group"] == group) & (intervals["metric"] == metric)
    means = intervals[rows_of & (intervals["attribute"] == BOOTSTRAP_MEAN_ROW)]
    if means.empty:
        return ""
    members = intervals["group"] != "all" if group == "all" else intervals["group"] == group
    per = intervals[members & (intervals["metric"] == metric) & intervals["estimate"].notna()
                    & (intervals["attribute"] != BOOTSTRAP_MEAN_ROW)]
    n_attr = per["attribute"].nunique()
    noun = GROUP_NOUNS.get(group, group)
    label = f"mean best-{group} {metric}" if group == "genre" else f"mean {metric}"
    order = {source: i for i, source in enumerate(SOURCE_LABELS)}
    rows = []
    for r in sorted(_records(means), key=lambda r: order.get(r["features"], len(order))):
        key = f"bootstrap/{group}/{r['features']}"
        rows.append([text_cell(_source_label(r["features"], widths), header=True),
                     *(num_cell(r[c], key=f"{key}/{c}", digits=3)
                       for c in ("estimate", "lower", "upper", "std_error")),
                     num_cell(r["n_valid"], key=f"{key}/n_valid", count=True)])
    caption = (f"{label} over {n_attr} {noun} with {pct} percentile intervals: "
               f"{meta['n_resamples']} resamples of the {meta['n_units']} "
               f"{meta['resampled_unit']}s; {meta['method']}")
    body = table(["features", f"{label}", f"{pct} lower", f"{pct} upper", "std. error",
                  "valid resamples"], rows, caption=caption)
    dmeans = diffs[(diffs["group"] == group) & (diffs["attribute"] == BOOTSTRAP_MEAN_ROW)
                   & (diffs["metric"] == metric)]
    drows, verdicts = [], []
    for r in _records(dmeans):
        key = f"bootstrap/{group}/{r['features']}-{r['versus']}"
        name = (f"{SOURCE_LABELS.get(r['features'], r['features'])} − "
                f"{SOURCE_LABELS.get(r['versus'], r['versus'])}")
        drows.append([text_cell(name, header=True),
                      *(num_cell(r[c], key=f"{key}/{c}", digits=3)
                        for c in ("estimate", "lower", "upper")),
                      num_cell(r["share_positive"], key=f"{key}/share_positive", digits=2),
                      text_cell({True: "yes", False: "no", None: None}[
                          contains_zero(r["lower"], r["upper"])], key=f"{key}/contains_zero")])
        verdicts.append((r["features"], r["versus"], r["lower"], r["upper"],
                         r["share_positive"]))
    if drows:
        body += table(["paired difference", f"difference in {label}", f"{pct} lower",
                       f"{pct} upper", "share of resamples > 0", "interval contains 0"],
                      drows, caption="differences computed on the same resamples (paired)")
        sentences = [] if tables_only else [difference_verdict(*v, saved.confidence)
                                            for v in verdicts]
        sentences.append(bootstrap_conclusion([(v[2], v[3]) for v in verdicts], noun))
        body += paragraph(" ".join(sentences), cls="verdict")
    return body


def _bootstrap_missing(out: RunOutputs, exc: MissingOutput) -> str:
    """The note for a run folder without the alignment's bootstrap files."""
    settings = known_settings(out)
    disabled = settings is not None and settings.align_bootstrap < 1
    if disabled:
        settings = settings.with_overrides(
            align_bootstrap=ReproduceSettings().align_bootstrap)
    commands = [f"{step_command('align', settings, out.run_dir)}   (the align step alone; "
                "saves the run with its bootstrap)"]
    if not disabled:
        commands.append(f"{reproduce_command(out)}   (reruns the align step of a run folder "
                        "made before the bootstrap existed)")
    note = missing_note("The bootstrap of the alignment comparison", exc.path, exc.reason,
                        commands)
    if disabled:
        note += paragraph("This run's settings turn the bootstrap off (align_bootstrap 0).",
                          cls="missing")
    return note


# ------------------------------------------------------------------------------ Table 2
def _has_positives(row: Mapping[str, Any]) -> bool:
    """Whether an alignment row's attribute occurs among the scored positions (its share is
    positive), i.e. whether it can have a score."""
    share = row.get("share")
    return share is not None and math.isfinite(float(share)) and float(share) > 0


def alignment_section(out: RunOutputs) -> Section:
    """Table 2 (best feature per genre), SAE vs neurons vs random with bootstrap intervals of
    the means and their paired differences, and Figure 4's bars."""

    def table2() -> str:
        run = out.alignment
        frame = run.per_attribute_table(_main_source(run)).reset_index()
        # An attribute no scored position has (ml-100k's "unknown") has no score at all:
        # left out, as the equalizer leaves it out, and named under the table.
        records = [r for r in _records(frame) if _has_positives(r)]
        empty = [r["attribute"] for r in _records(frame) if not _has_positives(r)]
        genre_rows = [r for r in records if r["group"] == "genre"]
        rows = []
        for r in genre_rows:
            a = r["attribute"]
            rows.append([text_cell(a, header=True),
                         num_cell(r["feature"], key=f"table2/{a}/feature", count=True),
                         *(num_cell(r[m], key=f"table2/{a}/{m}", digits=3)
                           for m in ("correlation", "roc_auc", "sensitivity", "share",
                                     "correlation_on_select")),
                         num_cell(r["feature_in_sample"], key=f"table2/{a}/feature_in_sample",
                                  count=True),
                         num_cell(r["correlation_in_sample"],
                                  key=f"table2/{a}/correlation_in_sample", digits=3)])
        summary = run.summary()
        mean = summary[(summary["group"] == "genre") & (summary["features"] == "SAE")
                       & (summary["selection"] == "honest")]
        if len(mean):
            m = _records(mean)[0]
            rows.append([text_cell(f"mean over {m['attributes']} genres", header=True),
                         text_cell(""),
                         num_cell(m["correlation_mean"], key="table2/mean/correlation",
                                  digits=3),
                         num_cell(m["roc_auc_mean"], key="table2/mean/roc_auc", digits=3),
                         num_cell(m["sensitivity_mean"], key="table2/mean/sensitivity",
                                  digits=3),
                         text_cell(""), text_cell(""), text_cell(""), text_cell("")])
        first = run.stats[run.sources[0]]
        caption = (f"best SAE feature per genre by correlation, chosen on "
                   f"{first['select'].n_rows} positions of the {run.select_part} "
                   f"users and scored on {first['score'].n_rows} positions of the "
                   f"{run.score_part} users; genre popularity = share of scored "
                   "positions with the genre; in-sample = chosen and scored on the same rows"
                   + (f"; left out, no scored position has them: {', '.join(empty)}"
                      if empty else ""))
        body = table(["genre", "feature", "correlation", "ROC AUC", "sensitivity",
                      "genre popularity", "corr. on select", "in-sample feature",
                      "in-sample corr."], rows, caption=caption, table_id="table2")
        others = [r for r in records if r["group"] != "genre"]
        if others:
            body += details("other attributes: release decades and custom predicates", table(
                ["attribute", "group", "feature", "correlation", "ROC AUC", "sensitivity",
                 "share"],
                [[text_cell(r["attribute"], header=True), text_cell(r["group"]),
                  num_cell(r["feature"], key=f"table2/{r['attribute']}/feature", count=True),
                  *(num_cell(r[m], key=f"table2/{r['attribute']}/{m}", digits=3)
                    for m in ("correlation", "roc_auc", "sensitivity", "share"))]
                 for r in others]))
        notes = run.notes
        if notes:
            body += details(f"{len(notes)} note(s) from the alignment",
                            "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
        return body

    def summary_table() -> str:
        frame = out.alignment.summary()
        rows = []
        for r in _records(frame):
            key = f"summary/{r['group']}/{r['features']}/{r['selection']}"
            rows.append([text_cell(r["group"], header=True), text_cell(r["features"]),
                         text_cell(r["selection"]),
                         num_cell(r["n_features"], key=f"{key}/n_features", count=True),
                         num_cell(r["attributes"], key=f"{key}/attributes", count=True),
                         *(num_cell(r[c], key=f"{key}/{c}", digits=3)
                           for c in ("correlation_min", "correlation_mean", "correlation_max",
                                     "roc_auc_mean", "sensitivity_mean"))])
        return table(["group", "features", "selection", "width", "attributes", "corr. min",
                      "corr. mean", "corr. max", "AUC mean", "sensitivity mean"], rows,
                     caption="SAE features vs the raw neurons at the same hook vs a random "
                             "projection as wide and as sparse as the SAE (paper §7.1.3)")

    def figure2() -> str:
        run = out.alignment
        genres = [str(a) for a, g in run.groups.items() if g == "genre"]
        frame = run.profiles(_main_source(run))
        genres = [g for g in genres if g in frame.index and g in frame.columns
                  and pd.notna(frame.at[g, "feature"]) and frame[g].notna().any()]
        if not genres:
            return paragraph("No genre has a chosen feature to profile.")
        chart = figure(profile_heatmap(frame, attributes=genres,
                                       title="correlation of each genre's SAE feature with "
                                             "every genre (test users)"),
                       "Figure 2 style: row = the SAE feature chosen for a genre on the SAE "
                       "users, column = the genre it is scored against on the test users; a "
                       "monosemantic feature lights up on its own genre only")
        rows = [[text_cell(f"{g} (#{fmt(frame.at[g, 'feature'])})", header=True),
                 *(num_cell(frame.at[g, c], key=f"figure2/{g}/{c}", digits=3)
                   for c in genres)] for g in genres]
        return chart + details("Figure 2's correlations", table(["feature chosen for",
                                                                  *genres], rows))

    def figure4() -> str:
        frame = out.alignment.comparison("honest").reset_index()
        genres = frame[frame["group"] == "genre"]
        genres = genres[genres["SAE_correlation"].notna()].sort_values("share",
                                                                      ascending=False)
        sources = [c[: -len("_correlation")] for c in genres.columns
                   if c.endswith("_correlation")]
        try:
            intervals = out.alignment_bootstrap.intervals
        except MissingOutput:
            intervals = None
        chart = figure(comparison_bars(genres, sources=sources, group="genre",
                                       intervals=intervals,
                                       title="best correlation per genre (honest selection)"),
                       "Figure 4 style: for each genre (most popular first), the "
                       "correlation of the best SAE feature, the best neuron and the best "
                       "random-control direction, each chosen on the SAE users and scored "
                       "on the test users"
                       + ("; bars: percentile bootstrap intervals over test users"
                          if intervals is not None else ""))
        bounds = {}
        if intervals is not None:
            sel = intervals[(intervals["group"] == "genre")
                            & (intervals["metric"] == "correlation")]
            bounds = {(r["features"], r["attribute"]): r for r in _records(sel)}
        rows = []
        for r in _records(genres):
            a = r["attribute"]
            cells = [text_cell(a, header=True)]
            for source in sources:
                b = bounds.get((source, a), {})
                cells += [num_cell(r[f"{source}_correlation"],
                                   key=f"figure4/{a}/{source}/correlation", digits=3),
                          num_cell(b.get("lower"), key=f"figure4/{a}/{source}/lower",
                                   digits=3),
                          num_cell(b.get("upper"), key=f"figure4/{a}/{source}/upper",
                                   digits=3)]
            rows.append(cells)
        heads = [h for s in sources for h in (f"{SOURCE_LABELS.get(s, s)}", "lower", "upper")]
        return chart + details("Figure 4's correlations and intervals",
                               table(["genre", *heads], rows))

    def uncertainty() -> str:
        try:
            body = bootstrap_block(out, "genre")
            others = "".join(
                f"<h4>{esc(GROUP_TITLES[group])}</h4>{block}"
                for group in ("decade", "custom", "all")
                if (block := bootstrap_block(out, group, tables_only=True)))
        except MissingOutput as exc:
            return _bootstrap_missing(out, exc)
        if others:
            body += details("bootstrap of the release decades, custom attributes and all "
                            "attributes", others)
        return body

    body = ("<h3>Table 2: the best SAE feature per genre</h3>" + _guard(out, "Table 2", table2)
            + "<h3>SAE features vs neurons vs a random control</h3>"
            + _guard(out, "The SAE vs neurons summary", summary_table)
            + "<h3>Uncertainty: bootstrap intervals of the comparison</h3>"
            + _guard(out, "The bootstrap intervals", uncertainty)
            + "<h3>Figure 2: each genre feature against every genre</h3>"
            + _guard(out, "Figure 2", figure2)
            + "<h3>Figure 4: best correlation per genre</h3>" + _guard(out, "Figure 4", figure4))
    return Section("alignment", "Table 2 and Figure 4: genre features (paper §7)", body)


# ------------------------------------------------------------------------------ steering
CURVE_LABELS: dict[tuple[str, str], str] = CORE_CURVE_LABELS


def _curve_label(method: str, mode: str) -> str:
    return CURVE_LABELS.get((method, mode), f"{method} ({mode})")


def _figure5(pages: Mapping[str, Mapping[str, Any]]) -> str:
    """Figure 5 from the feature pages' histograms (computed when the pages were written):
    one panel per steered genre's feature, its activations on the positions of its top genre
    vs the other positions; empty when no page has a histogram."""
    histograms = {genre: page["histogram"] for genre, page in pages.items()
                  if page.get("histogram") and page["histogram"].get("edges")}
    if not histograms:
        return ""
    fig = binned_activation_histogram(
        histograms, feature={genre: pages[genre]["index"] for genre in histograms},
        attribute={genre: h["attribute"] for genre, h in histograms.items()},
        title="Figure 5: each steered feature's activations, positions with / without its "
              "top genre")
    part = next(iter(pages.values())).get("part", "sae_train")
    return ("<h4>Figure 5: activation histograms</h4>" + figure(
        fig, f"positions of the {part.replace('_', ' ')} users where the feature fires, "
             "split by the feature's top genre (p_top100); each group as shares of its own "
             "positions"))


def _references(sweep: GenreSweep) -> dict[str, dict[str, Any]]:
    """The sweep's reference rows (``unsteered``, ``sae_reconstruction``) by method."""
    return {r["method"]: r for r in _records(sweep.table[sweep.table["value"].isna()])}


def steering_section(out: RunOutputs) -> Section:
    """Steering curves per genre: genre share, NDCG, coverage, diversity vs value."""

    def features() -> str:
        sweep = out.steering
        frame = sweep.features
        rows = [[text_cell(r["genre"], header=True), text_cell(r["column"]),
                 num_cell(r["feature"], key=f"steer/features/{r['genre']}/feature", count=True),
                 num_cell(r["correlation_select"],
                          key=f"steer/features/{r['genre']}/correlation_select", digits=3),
                 num_cell(r["correlation_test"],
                          key=f"steer/features/{r['genre']}/correlation_test", digits=3)]
                for r in _records(frame)]
        body = table(["genre", "column", "SAE feature", "corr. (SAE users)",
                      "corr. (test users)"], rows,
                     caption="the steered feature of each genre: best correlation on the SAE "
                             "users")
        refs = _references(sweep)
        meta = sweep.metadata
        k = meta.get("k", "")
        ref_rows = [[text_cell(name, header=True),
                     num_cell(r.get("ndcg"), spread=r.get("ndcg_se"),
                              key=f"steer/reference/{name}/ndcg"),
                     num_cell(r.get("coverage"), key=f"steer/reference/{name}/coverage"),
                     num_cell(r.get("diversity"), key=f"steer/reference/{name}/diversity")]
                    for name, r in refs.items()]
        body += table(["reference", f"NDCG@{k}", f"Coverage@{k}", f"Diversity@{k}"], ref_rows,
                      caption=f"{meta.get('n_test_users', '–')} test users; replace-mode curves "
                              "compare with sae_reconstruction (the unedited reconstruction), "
                              "the others with unsteered")
        return body

    def curves() -> str:
        sweep = out.steering
        frame = sweep.target_share_table()
        refs = _references(sweep)
        k = sweep.metadata.get("k", "")
        reference_rows = pd.DataFrame(list(refs.values()))
        metrics = [(m, title, axis, caption) for m, title, axis, caption in (
            ("target_share", f"share in the top-{k}", "share of the genre",
             f"share of the genre's items in the test users' top-{k} (± SE)"),
            ("ndcg", f"NDCG@{k}", f"NDCG@{k}", "ranking quality under steering (± SE)"),
            ("coverage", f"Coverage@{k}", f"Coverage@{k}",
             "share of training items recommended to anyone"),
            ("diversity", f"Diversity@{k}", "inter-list diversity",
             "mean pairwise cosine distance between users' lists"),
        ) if m in frame.columns]
        parts = []
        for genre, group in frame.groupby("genre", sort=False):
            values = sorted(group["value"].unique())
            table_rows = []
            for curve, rows in group.groupby("curve", sort=False):
                label = _curve_label(rows["method"].iloc[0], rows["mode"].iloc[0])
                by_value = rows.set_index("value")
                for metric, title, _, _ in metrics:
                    table_rows.append([text_cell(label, header=True), text_cell(title), *(
                        num_cell(by_value.at[v, metric] if v in by_value.index else None,
                                 key=f"steer/{genre}/{curve}/{v:g}/{metric}", digits=4)
                        for v in values)])
            charts = [figure(steering_curves(group, metric, label="genre",
                                             reference_rows=reference_rows, y_title=axis,
                                             title=f"{genre}: {title}"), caption)
                      for metric, title, axis, caption in metrics]
            parts.append(f'<h3 id="steer-{esc(genre)}">{esc(genre)}</h3>'
                         f'<div class="charts">{"".join(charts)}</div>')
            parts.append(details(f"{genre}: every curve's values per steering value", table(
                ["curve", "metric", *(f"{v:g}" for v in values)], table_rows)))
        directions = frame[frame["method"].isin(["sae_direction", "probe_direction"])]
        if directions["method"].nunique() == 2:
            parts.append("<h3>Figure 9: SAE direction vs probe direction</h3>" + figure(
                steering_curves(directions, label="genre", reference_rows=reference_rows,
                                y_title="share of the genre",
                                title=f"target genre's share in the top-{k}: SAE decoder "
                                      "direction vs probe direction"),
                "both directions scaled to unit variance of the SAE users' activations and "
                "added with the same values (± SE)"))
        return "".join(parts)

    def monotonicity() -> str:
        frame = out.steering.monotonicity()
        rows = [[text_cell(r["genre"], header=True),
                 text_cell(_curve_label(r["method"], r["mode"])),
                 num_cell(r["decreases"], key=f"steer/mono/{r['curve']}/decreases", count=True),
                 num_cell(r["n_steps"], key=f"steer/mono/{r['curve']}/n_steps", count=True),
                 num_cell(r["spearman"], key=f"steer/mono/{r['curve']}/spearman", digits=2),
                 num_cell(r["share_at_min_value"], key=f"steer/mono/{r['curve']}/min",
                          digits=3),
                 num_cell(r["share_at_max_value"], key=f"steer/mono/{r['curve']}/max",
                          digits=3)]
                for r in _records(frame)]
        return table(["genre", "curve", "steps down", "steps", "Spearman", "share at lowest",
                      "share at highest"], rows,
                     caption="does the genre's share rise with the value? (Spearman 1 = "
                             "monotonic rise)")

    def probes() -> str:
        frame = out.steering.probe_metrics
        if frame is None:
            return ""
        rows = [[text_cell(r["attribute"], header=True),
                 num_cell(r.get("test_roc_auc"), key=f"steer/probe/{r['attribute']}/auc",
                          digits=3),
                 num_cell(r.get("test_balanced_accuracy"),
                          key=f"steer/probe/{r['attribute']}/balanced_accuracy", digits=3)]
                for r in _records(frame)]
        return table(["genre", "test ROC AUC", "test balanced accuracy"], rows,
                     caption="linear probes (logistic regression on the SAE users' "
                             "activations), whose unit-variance directions are the dashed "
                             "curves")

    def pages() -> str:
        folder = out.layout.steering_dir / "features"
        if not folder.is_dir():
            return ""
        parts = ["<h3>Feature pages: where each steered feature fires and what it pushes</h3>"]
        loaded = {path.stem: json.loads(path.read_text())
                  for path in sorted(folder.glob("*.json"))}
        parts.append(_figure5(loaded))
        for genre, page in loaded.items():
            shown = [[num_cell(a["maxValue"], key=f"page/{genre}/top/{i}", digits=3),
                      text_cell(" → ".join(f"{t} ({v:.2f})" for t, v in
                                           zip(a["tokens"], a["values"], strict=True)))]
                     for i, a in enumerate(page["activations"])]
            effects = [[text_cell(side, header=True),
                        text_cell("; ".join(f"{t} ({v:+.2f})" for t, v in
                                            zip(page[f"{tag}_str"], page[f"{tag}_values"],
                                                strict=True)))]
                       for side, tag in (("promotes", "pos"), ("demotes", "neg"),
                                         ("promotes (direct)", "direct_pos"),
                                         ("demotes (direct)", "direct_neg"))]
            tops = ", ".join(f"{g['genre']} {g['p_top_100']:.2f}" for g in page["top_genres"])
            body = (table(["activation", "the position and the items before it (activation "
                           "at each)"], shown,
                          caption=f"top positions of the SAE users; fires on "
                                  f"{page['frac_nonzero']:.1%} of positions; p_top100: {tops}")
                    + table(["", "items (score change)"], effects,
                            caption=f"measured: mean change of the test users' next-item "
                                    f"scores with the feature set to "
                                    f"{page['steering_value']:g}; direct: its decoder direction "
                                    "through the tied output layer"))
            parts.append(details(f"{genre}: feature {page['index']}", body))
        return "".join(parts)

    body = (_guard(out, "The steered features", features) + _guard(out, "The steering curves",
                                                                   curves)
            + _guard(out, "The monotonicity table", monotonicity)
            + _guard(out, "The probe table", probes)
            + _guard(out, "The feature pages", pages))
    return Section("steering", "Steering genres: SAE features vs probes (paper §8)", body)


# ------------------------------------------------------------------------------ provenance
def provenance_section(out: RunOutputs) -> Section:
    """Settings, package versions, per-step wall times and the single-step commands."""

    def settings() -> str:
        s = out.settings
        rows = []
        for key, value in s.items():
            if key == "format":
                continue
            shown = ", ".join(str(v) for v in value) if isinstance(value, list) else value
            rows.append([text_cell(key, header=True), text_cell(shown,
                                                                key=f"settings/{key}")])
        return details("settings", table(["setting", "value"], rows))

    def versions() -> str:
        p = out.provenance
        rows = [[text_cell(name, header=True),
                 text_cell(version if version else "not installed", key=f"versions/{name}")]
                for name, version in p.get("versions", {}).items()]
        rows += [[text_cell(label, header=True), text_cell(p.get(key), key=f"platform/{key}")]
                 for key, label in (("python", "python"), ("platform", "platform"),
                                    ("cpu_count", "CPU cores"),
                                    ("torch_threads", "torch threads"), ("device", "device"))]
        return table(["package / platform", "version"], rows,
                     caption="recorded by the last 'mechrec reproduce' run")

    def timings() -> str:
        records = out.steps
        invocation = {item["name"]: item["status"]
                      for item in out.provenance.get("invocation", [])} \
            if out.layout.provenance.is_file() else {}
        settings = known_settings(out)
        rows = []
        for step in STEPS:
            record = records.get(step.name)
            command = text_cell(step_command(step.name, settings, out.run_dir))
            if record is None:
                rows.append([text_cell(step.name, header=True), text_cell("not done"),
                             text_cell(""), text_cell(invocation.get(step.name, "")), command])
                continue
            rows.append([text_cell(step.name, header=True),
                         num_cell(record.get("seconds"), key=f"timing/{step.name}", digits=1),
                         text_cell(record.get("finished")),
                         text_cell(invocation.get(step.name, "")), command])
        total = sum(float(r.get("seconds") or 0.0) for r in records.values())
        rows.append([text_cell("total", header=True),
                     num_cell(total, key="timing/total", digits=1), text_cell(""),
                     text_cell(""), text_cell(reproduce_command(out))])
        return table(["step", "wall seconds", "finished (UTC)", "last invocation",
                      "command"], rows,
                     caption="wall time of the run that produced each step's outputs; a "
                             "skipped step keeps the time of the run that made it")

    body = (_guard(out, "The step records", timings) + _guard(out, "The versions", versions)
            + _guard(out, "The settings", settings))
    return Section("provenance", "Provenance", body)


#: Sections in report order.
# ------------------------------------------------------------------------------ ablations
def _interval_text(estimate: Any, lower: Any, upper: Any) -> str:
    if number(lower) is None or number(upper) is None:
        return fmt(estimate, 3)
    return f"{fmt(estimate, 3)} [{fmt(lower, 3)}, {fmt(upper, 3)}]"


def ablations_section(out: RunOutputs) -> Section:
    """What drives the SAE's edge: one row per changed setting, SAE vs neurons vs the random
    control with paired intervals (honest selection on the SAE users)."""

    def build() -> str:
        settings = known_settings(out)
        if settings is not None and not settings.ablations:
            return paragraph("No ablation rows were asked for (ablations = none).")
        abl = out.ablations
        meta = abl.meta
        pct = f"{100 * float(meta.get('confidence', 0.95)):g}%"
        rows = []
        for row in abl.rows:
            rows.append([
                text_cell(row["name"], header=True),
                text_cell(f"{row.get('description')} ({row['changes']})" if row.get("changes")
                          else row.get("description")),
                text_cell(row.get("hook")),
                num_cell(row.get("l0"), key=f"{row['name']}.l0", digits=0),
                num_cell(row.get("explained_variance"), key=f"{row['name']}.ev", digits=3),
                num_cell(row.get("SAE"), key=f"{row['name']}.sae", digits=3),
                num_cell(row.get("neurons"), key=f"{row['name']}.neurons", digits=3),
                num_cell(row.get("random"), key=f"{row['name']}.random", digits=3),
                text_cell(_interval_text(row.get("SAE - random"), row.get("SAE - random lower"),
                                         row.get("SAE - random upper")),
                          key=f"{row['name']}.sae_minus_random"),
                text_cell(_interval_text(row.get("SAE - neurons"),
                                         row.get("SAE - neurons lower"),
                                         row.get("SAE - neurons upper")),
                          key=f"{row['name']}.sae_minus_neurons"),
                num_cell(row.get("SAE_in_sample"), key=f"{row['name']}.in_sample", digits=3),
            ])
        headers = ["row", "what changed", "hook", "L0", "EV", "SAE", "neurons", "random",
                   f"SAE − random [{pct}]", f"SAE − neurons [{pct}]", "SAE in-sample"]
        verdicts = [f"{row['name']}: " + difference_verdict(
            "SAE", "random", row.get("SAE - random lower"), row.get("SAE - random upper"), None,
            float(meta.get("confidence", 0.95))) for row in abl.rows]
        intro = paragraph(
            f"Each row reruns the comparison of the alignment section with one thing changed: "
            f"mean best-{meta.get('group')} {meta.get('metric')}, features chosen on the "
            f"{meta.get('select')} users and scored on the {meta.get('score')} users; "
            f"intervals: {pct} paired percentile bootstrap over "
            f"{meta.get('bootstrap')} resamples of the {meta.get('score')} users. TopK and "
            "JumpReLU take the base SAE's L0 on the SAE users (never the test users); every "
            "retrained SAE uses the base SAE's training settings otherwise. EV and L0 on the "
            "test users; 'SAE in-sample' chooses and scores on the test users.")
        return intro + table(headers, rows, table_id="ablations") + "".join(
            paragraph(v) for v in verdicts)

    return Section("ablations", "Ablations: what drives the SAE's edge",
                   _guard(out, "The ablation rows", build))


SECTIONS: tuple[Callable[[RunOutputs], Section], ...] = (
    overview_section, dataset_section, gptrec_section, table1_section, sae_section,
    alignment_section, steering_section, ablations_section, provenance_section,
)
