"""``mechrec reproduce --quick`` end to end on real ml-100k, and the HTML report it writes.

One quick run (module scope) feeds every test: the report must parse, hold every section,
show exactly the numbers of the run's JSON/CSV outputs, reference nothing outside itself, and
a rerun must skip finished steps (a deleted output reruns only its step). Tests that change the
run folder work on a copy.
"""

from __future__ import annotations

import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from browser_checks import headless_chromium
from cli_checks import assert_one_line_error, run_cli
from mechrec_recsys.report.render import plotly_js

SECTION_IDS = ("overview", "dataset", "gptrec", "table1", "sae", "alignment", "steering",
               "ablations", "provenance")
STEP_NAMES = ("data", "train", "table1", "sae", "align", "steer", "ablations")
VOID = {"meta", "br", "hr", "img", "input", "link", "wbr", "col", "area", "base", "source"}




class ReportParser(HTMLParser):
    """Checks that tags nest properly; collects section ids and numeric cells."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.sections: list[str] = []
        self.cells: dict[str, dict[str, str]] = {}
        self.plots = 0
        self.scripts = 0
        self._cell: dict[str, str] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "section":
            self.sections.append(values.get("id", ""))
        if tag == "div" and "plotly-graph-div" in values.get("class", "").split():
            self.plots += 1
        if tag == "script":
            self.scripts += 1
        if tag in ("td", "th") and "data-key" in values:
            self._cell, self._text = values, []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in VOID, f"self-closing <{tag}/>"

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-3:]}"
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None:
            self._cell["text"] = "".join(self._text)
            self.cells[self._cell["data-key"]] = self._cell
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._text.append(data)


def feature_pages(run_dir: Path) -> dict[str, dict]:
    folder = run_dir / "steering" / "paper" / "features"
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def expected_charts(run_dir: Path) -> int:
    """Charts the report of ``run_dir`` draws: training curves, Table 1's and Figure 3's
    curves (one per sweep with several points), Table 1's grid (Table1.plot()), Figures 2 and
    4, four per steered genre, Figure 9 and Figure 5 (the feature pages' histograms, one
    chart)."""
    rows = json.loads((run_dir / "table1.json").read_text())["rows"]
    l1 = sum(r["sweep"] == "l1" for r in rows) > 1
    size = sum(r["sweep"] == "d_sae" for r in rows) > 1
    genres = pd.read_csv(run_dir / "steering" / "paper" / "target_share.csv")["genre"].nunique()
    figure5 = any(page.get("histogram", {}).get("edges")
                  for page in feature_pages(run_dir).values())
    return 2 + (2 * l1 + size) + (l1 + size) + 1 + 2 + 4 * genres + 1 + figure5


def parse(text: str) -> ReportParser:
    parser = ReportParser()
    parser.feed(text)
    parser.close()
    assert parser.stack == [], f"unclosed tags {parser.stack}"
    return parser


@pytest.fixture(scope="module")
def data_args(data_dir: Path) -> list[str]:
    return ["--data-dir", str(data_dir / "ml-100k"), "--no-download"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory, data_args: list[str]):
    run_dir = tmp_path_factory.mktemp("reproduce") / "run"
    result = run_cli("reproduce", "--quick", "--dataset", "ml-100k", "--split", "paper",
                     "--seed", "0", "--out", run_dir, "--no-progress", *data_args)
    assert result.exit_code == 0, result.output
    return result, run_dir


@pytest.fixture(scope="module")
def report(quick_run) -> ReportParser:
    _, run_dir = quick_run
    return parse((run_dir / "report.html").read_text(encoding="utf-8"))


def cell(report: ReportParser, key: str) -> dict[str, str]:
    assert key in report.cells, f"no cell {key!r}; e.g. {sorted(report.cells)[:5]}"
    return report.cells[key]


def value(report: ReportParser, key: str) -> float:
    return float(cell(report, key)["data-value"])


def copy_run(quick_run, tmp_path: Path) -> Path:
    _, run_dir = quick_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


def step_mtimes(run_dir: Path) -> dict[str, int]:
    """mtime of every file a step wrote (not the report, settings or provenance)."""
    skip = {"report.html", "settings.json", "provenance.json", "steps.json"}
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns
            for p in run_dir.rglob("*") if p.is_file() and p.name not in skip}


def tokens(run_dir: Path) -> dict[str, str]:
    steps = json.loads((run_dir / "reproduce" / "steps.json").read_text())["steps"]
    return {name: record["token"] for name, record in steps.items()}


def invocation(run_dir: Path) -> dict[str, str]:
    data = json.loads((run_dir / "reproduce" / "provenance.json").read_text())
    return {item["name"]: item["status"] for item in data["invocation"]}


# ------------------------------------------------------------------------------ the run
def test_reproduce_writes_the_report_and_prints_its_path(quick_run):
    result, run_dir = quick_run
    path = run_dir / "report.html"
    assert path.is_file()
    assert result.stdout.strip().splitlines()[-1] == str(path)
    assert invocation(run_dir) == dict.fromkeys(STEP_NAMES, "ran")


def test_report_parses_and_has_every_section(report: ReportParser, quick_run):
    assert tuple(report.sections) == SECTION_IDS
    text = (quick_run[1] / "report.html").read_text(encoding="utf-8")
    for heading in ("Dataset and split", "GPTRec vs popularity", "Table 1", "Table 2",
                    "Figure 4", "Steering genres", "Provenance"):
        assert heading in text
    assert report.plots == expected_charts(quick_run[1])
    assert report.scripts == 1 + report.plots  # plotly.js once, then one call per chart
    assert 'class="missing"' not in text


def test_report_is_self_contained(quick_run):
    text = (quick_run[1] / "report.html").read_text(encoding="utf-8")
    bundle = plotly_js()
    assert text.count(bundle) == 1  # plotly.js inline, once
    rest = text.replace(bundle, "").lower()
    for forbidden in ("http://", "https://", "src=", "<link", "@import", "url(", "<img",
                      "<iframe"):
        assert forbidden not in rest, forbidden


def test_gptrec_numbers_come_from_metrics_json(report: ReportParser, quick_run):
    metrics = json.loads((quick_run[1] / "metrics.json").read_text())["comparison"]
    for model, rep in metrics["reports"].items():
        for key in ("ndcg", "hit_rate", "coverage"):
            got = cell(report, f"gptrec/{model}/{key}")
            want = rep["metrics"][key]
            assert float(got["data-value"]) == want["mean"]
            assert float(got["data-se"]) == want["se"]
            assert got["text"] == f"{want['mean']:.4f} ± {want['se']:.4f}"
    assert value(report, "gptrec/paired/ndcg") == metrics["paired_difference"]["ndcg"]["mean"]


def test_table1_numbers_come_from_table1_json(report: ReportParser, quick_run):
    rows = json.loads((quick_run[1] / "table1.json").read_text())["rows"]
    assert rows[0]["sweep"] == "original" and len(rows) > 2
    assert value(report, "table1/0/ndcg") == rows[0]["ndcg_mean"]
    for i, row in enumerate(rows[1:], start=1):
        for key in ("rmse", "explained_variance", "l0", "dead_fraction", "ndcg", "hit_rate",
                    "coverage"):
            assert value(report, f"table1/{i}/{key}") == row[f"{key}_mean"]
        assert value(report, f"table1/{i}/l1_coefficient") == row["l1_coefficient"]
        assert value(report, f"table1/{i}/d_sae") == row["d_sae"]
        # the splice-quality columns (the quality table's rows are the SAE points)
        for key in ("loss_recovered_zero", "loss_recovered_mean", "ndcg_recovered_zero",
                    "ndcg_recovered_mean", "kl"):
            assert value(report, f"quality/{i - 1}/{key}") == row[f"{key}_mean"]


def test_report_shows_the_table1_grid_and_figure5(report: ReportParser, quick_run):
    run_dir = quick_run[1]
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    # Table1.plot() in the Table 1 section, Figure 5 in the steering section
    table1_part = text[text.index('id="table1"'):text.index('id="sae"')]
    assert "Table 1: SAE quality vs L1 weight and dictionary size" in table1_part
    assert "What the model keeps with the SAE spliced in" in table1_part
    steering_part = text[text.index('id="steering"'):text.index('id="provenance"')]
    assert "Figure 5: activation histograms" in steering_part
    assert "Figure 5: each steered feature" in steering_part
    pages = feature_pages(run_dir)
    assert set(pages) == {"Action", "Sci-Fi"}
    for genre, page in pages.items():
        assert page["histogram"]["edges"], genre  # the quick run's features fire
        assert f"{genre} (feature #{page['index']})" in steering_part


def test_table2_and_figure4_numbers_come_from_the_alignment_tables(report, quick_run):
    folder = quick_run[1] / "saes" / "paper" / "alignment"
    per_genre = pd.read_csv(folder / "per_genre.csv")
    genres = per_genre[(per_genre["group"] == "genre") & per_genre["correlation"].notna()]
    assert len(genres) >= 10
    for row in genres.itertuples(index=False):
        for key in ("correlation", "roc_auc", "sensitivity", "share"):
            assert value(report, f"table2/{row.attribute}/{key}") == getattr(row, key)
        assert value(report, f"table2/{row.attribute}/feature") == row.feature
    # ml-100k's "unknown" genre has no scored position: no row, named under the table
    empty = per_genre[per_genre["share"] == 0]["attribute"].tolist()
    assert "unknown" in empty
    assert all(f"table2/{a}/feature" not in report.cells for a in empty)
    assert "left out, no scored position has them: unknown" in \
        (quick_run[1] / "report.html").read_text(encoding="utf-8")
    summary = pd.read_csv(folder / "summary.csv")
    sae = summary[(summary["group"] == "genre") & (summary["features"] == "SAE")
                  & (summary["selection"] == "honest")].iloc[0]
    assert value(report, "table2/mean/correlation") == sae["correlation_mean"]
    neurons = summary[(summary["group"] == "genre") & (summary["features"] == "neurons")
                      & (summary["selection"] == "honest")].iloc[0]
    assert value(report, "summary/genre/neurons/honest/correlation_mean") == \
        neurons["correlation_mean"]
    text = (quick_run[1] / "report.html").read_text(encoding="utf-8")
    comparison = pd.read_csv(folder / "comparison.csv")
    best = comparison[comparison["group"] == "genre"].dropna(subset=["SAE_correlation"])
    intervals = pd.read_csv(folder / "bootstrap_intervals.csv")
    for row in best.itertuples(index=False):
        for source in ("SAE", "neurons", "random"):
            want = getattr(row, f"{source}_correlation")
            assert value(report, f"figure4/{row.attribute}/{source}/correlation") == want
            assert repr(want) in text  # the bar's hover text
            bound = intervals[(intervals["group"] == "genre")
                              & (intervals["features"] == source)
                              & (intervals["attribute"] == row.attribute)
                              & (intervals["metric"] == "correlation")].iloc[0]
            assert value(report, f"figure4/{row.attribute}/{source}/lower") == bound["lower"]
            assert value(report, f"figure4/{row.attribute}/{source}/upper") == bound["upper"]
    # Figure 2: each genre's feature against every genre, from profiles.csv
    profiles = pd.read_csv(folder / "profiles.csv").set_index("selected_for")
    for genre in ("Action", "Comedy"):
        assert value(report, f"figure2/{genre}/{genre}") == profiles.at[genre, genre]


BOOTSTRAP_FILES = ("bootstrap_intervals.csv", "bootstrap_intervals.parquet",
                   "bootstrap_differences.csv", "bootstrap_differences.parquet",
                   "bootstrap.json")


def test_bootstrap_numbers_come_from_the_bootstrap_files(report, quick_run):
    folder = quick_run[1] / "saes" / "paper" / "alignment"
    meta = json.loads((folder / "bootstrap.json").read_text())
    assert meta["n_resamples"] == 50 and meta["confidence"] == 0.95  # the quick preset's
    metric = meta["metric"]
    intervals = pd.read_csv(folder / "bootstrap_intervals.csv")
    diffs = pd.read_csv(folder / "bootstrap_differences.csv")
    means = intervals[(intervals["group"] == "genre") & (intervals["attribute"] == "(mean)")
                      & (intervals["metric"] == metric)]
    assert set(means["features"]) == {"SAE", "neurons", "random"}
    headline = meta["headline"]["genre"]
    for row in means.itertuples(index=False):
        key = f"bootstrap/genre/{row.features}"
        for column in ("estimate", "lower", "upper", "std_error"):
            assert value(report, f"{key}/{column}") == getattr(row, column)
        for column in ("estimate", "lower", "upper"):
            assert value(report, f"{key}/{column}") == headline["mean"][row.features][column]
        assert value(report, f"{key}/n_valid") == row.n_valid
    summary = pd.read_csv(folder / "summary.csv")
    sae = summary[(summary["group"] == "genre") & (summary["features"] == "SAE")
                  & (summary["selection"] == "honest")].iloc[0]
    assert value(report, "bootstrap/genre/SAE/estimate") == pytest.approx(
        sae["correlation_mean"], abs=1e-12)
    dmeans = diffs[(diffs["group"] == "genre") & (diffs["attribute"] == "(mean)")
                   & (diffs["metric"] == metric)]
    assert len(dmeans) == 3
    text = (quick_run[1] / "report.html").read_text(encoding="utf-8")
    inside = 0
    for row in dmeans.itertuples(index=False):
        key = f"bootstrap/genre/{row.features}-{row.versus}"
        for column in ("estimate", "lower", "upper", "share_positive"):
            assert value(report, f"{key}/{column}") == getattr(row, column)
            assert value(report, f"{key}/{column}") == \
                headline["difference"][f"{row.features} - {row.versus}"][column]
        contains = row.lower <= 0.0 <= row.upper
        inside += contains
        assert cell(report, f"{key}/contains_zero")["text"] == ("yes" if contains else "no")
        span = f"95% interval {row.lower:+.3f} to {row.upper:+.3f}"
        verdict = "contains 0" if contains else \
            "lies above 0" if row.lower > 0 else "lies below 0"
        assert f"{span} {verdict} ({row.share_positive:.0%} of resamples &gt; 0)" in text
    if inside == 3:
        assert "Every difference interval contains 0" in text
    elif inside == 0:
        assert "No difference interval contains 0" in text
    else:
        assert f"{inside} of 3 difference intervals contain" in text


def test_a_run_saved_without_a_bootstrap_gets_a_note(quick_run, tmp_path: Path):
    """The report reads the bootstrap from the saved AlignmentRun: a run saved without one
    (as the align step saves it with align_bootstrap 0) gets a note naming the commands."""
    from mechrec.alignment import AlignmentRun

    run_dir = copy_run(quick_run, tmp_path)
    folder = run_dir / "saes" / "paper" / "alignment"
    AlignmentRun.load(folder).save(folder, bootstrap=0)
    for name in BOOTSTRAP_FILES:
        (folder / name).unlink()
    result = run_cli("report", run_dir)
    assert result.exit_code == 0, result.output
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    page = parse(text)
    assert tuple(page.sections) == SECTION_IDS
    assert text.count('class="missing"') == 1
    assert "The bootstrap of the alignment comparison is not available" in text
    assert "run.npz</code> is saved without a bootstrap" in text
    assert f"mechrec align tables {run_dir} paper --seed 0" in text and "--bootstrap 50" in text
    assert f"mechrec reproduce --dataset ml-100k --split paper --seed 0 --quick --out " \
           f"{run_dir}" in text
    assert not any(key.startswith("bootstrap/") for key in page.cells)
    assert "table2/mean/correlation" in page.cells  # the rest of the section still shows
    # a run whose settings turned the bootstrap off says so and names a command that makes it
    settings = json.loads((run_dir / "reproduce" / "settings.json").read_text())
    (run_dir / "reproduce" / "settings.json").write_text(json.dumps(
        {**settings, "align_bootstrap": 0}))
    assert run_cli("report", run_dir).exit_code == 0
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "turn the bootstrap off (align_bootstrap 0)" in text and "--bootstrap 200" in text


def test_an_align_step_made_before_the_bootstrap_reruns_alone(quick_run, tmp_path: Path,
                                                             data_args):
    """A folder whose align record predates ``align_bootstrap`` (and has no bootstrap files)
    is not refused: only the align step reruns and writes them."""
    import hashlib

    run_dir = copy_run(quick_run, tmp_path)
    folder = run_dir / "saes" / "paper" / "alignment"
    for name in BOOTSTRAP_FILES:
        (folder / name).unlink()
    path = run_dir / "reproduce" / "steps.json"
    data = json.loads(path.read_text())
    record = data["steps"]["align"]
    old = {k: v for k, v in record["settings"].items() if k != "align_bootstrap"}
    record["settings"] = old
    record["digest"] = hashlib.sha256(json.dumps(old, sort_keys=True).encode()
                                      ).hexdigest()[:16]
    path.write_text(json.dumps(data))
    before = tokens(run_dir)
    result = run_cli("reproduce", "--quick", "--out", run_dir, *data_args)
    assert result.exit_code == 0, result.output
    assert "made without the newer setting(s) align_bootstrap" in result.stderr
    assert invocation(run_dir) == {name: "ran" if name == "align" else "skipped"
                                   for name in STEP_NAMES}
    after = tokens(run_dir)
    assert after["align"] != before["align"]
    assert {n: t for n, t in after.items() if n != "align"} == \
        {n: t for n, t in before.items() if n != "align"}
    assert all((folder / name).is_file() for name in BOOTSTRAP_FILES)
    record = json.loads(path.read_text())["steps"]["align"]
    assert record["settings"]["align_bootstrap"] == 50
    assert 'class="missing"' not in (run_dir / "report.html").read_text(encoding="utf-8")
    # a deleted bootstrap file reruns the align step too
    (folder / "bootstrap.json").unlink()
    assert run_cli("reproduce", "--quick", "--out", run_dir, *data_args).exit_code == 0
    assert invocation(run_dir)["align"] == "ran" and (folder / "bootstrap.json").is_file()


def test_the_sections_are_built_from_the_saved_result_objects(quick_run, tmp_path: Path):
    """Round trip: an AlignmentRun and a GenreSweep saved into a run folder that holds nothing
    else of theirs (none of the loose tables the report once read) give the alignment and
    steering sections, with exactly the objects' numbers."""
    from mechrec_recsys.report.outputs import RunOutputs
    from mechrec_recsys.report.sections import alignment_section, steering_section
    from mechrec_recsys.steering import GenreSweep

    from mechrec.alignment import AlignmentRun

    source = quick_run[1]
    run = AlignmentRun.load(source / "saes" / "paper" / "alignment")
    sweep = GenreSweep.load(source / "steering" / "paper")
    run_dir = copy_run(quick_run, tmp_path)
    align_dir, steer_dir = run_dir / "saes" / "paper" / "alignment", run_dir / "steering" / "paper"
    shutil.rmtree(align_dir)
    for path in steer_dir.iterdir():
        if path.is_file():
            path.unlink()
    run.save(align_dir)  # keeps the bootstrap it was loaded with
    sweep.save(steer_dir)
    for path in [*align_dir.iterdir(), *steer_dir.iterdir()]:
        if path.is_file() and path.name not in ("run.npz", "sweep.json", "features.csv",
                                                "probes.csv"):
            path.unlink()
    out = RunOutputs(run_dir)
    align = alignment_section(out).body
    steer = steering_section(out).body
    assert 'class="missing"' not in align + steer
    page = parse(align + steer)

    table2 = run.per_attribute_table("SAE")
    genres = table2[(table2["group"] == "genre") & (table2["share"] > 0)]
    assert len(genres) >= 10
    for attribute, row in genres.iterrows():
        for key in ("correlation", "roc_auc", "sensitivity", "share", "correlation_on_select",
                    "correlation_in_sample"):
            assert value(page, f"table2/{attribute}/{key}") == row[key]
        assert value(page, f"table2/{attribute}/feature") == row["feature"]
    summary = run.summary()
    for row in summary.itertuples(index=False):
        key = f"summary/{row.group}/{row.features}/{row.selection}"
        assert value(page, f"{key}/correlation_mean") == row.correlation_mean
    boot = run.saved_bootstrap
    assert boot is not None and boot.n_resamples == 50
    intervals = run.interval_table(boot, run.saved_confidence)
    means = intervals[(intervals["group"] == "genre") & (intervals["attribute"] == "(mean)")
                      & (intervals["metric"] == "correlation")]
    assert set(means["features"]) == {"SAE", "neurons", "random"}
    for row in means.itertuples(index=False):
        for column in ("estimate", "lower", "upper", "std_error"):
            assert value(page, f"bootstrap/genre/{row.features}/{column}") == \
                getattr(row, column)
    diffs = run.difference_table(boot, run.saved_confidence)
    for row in diffs[(diffs["group"] == "genre") & (diffs["attribute"] == "(mean)")
                     & (diffs["metric"] == "correlation")].itertuples(index=False):
        key = f"bootstrap/genre/{row.features}-{row.versus}"
        assert value(page, f"{key}/share_positive") == row.share_positive
    profiles = run.profiles("SAE")
    for genre in ("Action", "Comedy"):
        assert value(page, f"figure2/{genre}/{genre}") == profiles.at[genre, genre]

    for row in sweep.target_share_table().itertuples(index=False):
        for metric in ("target_share", "ndcg", "coverage", "diversity"):
            key = f"steer/{row.genre}/{row.curve}/{row.value:g}/{metric}"
            assert value(page, key) == getattr(row, metric)
    for row in sweep.features.itertuples(index=False):
        assert value(page, f"steer/features/{row.genre}/feature") == row.feature
        assert value(page, f"steer/features/{row.genre}/correlation_test") == \
            row.correlation_test
    for row in sweep.monotonicity().itertuples(index=False):
        assert value(page, f"steer/mono/{row.curve}/spearman") == row.spearman
    unsteered = sweep.reference("unsteered")
    assert value(page, "steer/reference/unsteered/ndcg") == unsteered["ndcg"]


def test_folders_without_the_saved_objects_name_the_step_to_rerun(quick_run, tmp_path: Path):
    """A folder with the loose tables but not the result objects' files (written before the
    report read the objects) says which step to rerun instead of guessing from the tables."""
    run_dir = copy_run(quick_run, tmp_path)
    (run_dir / "saes" / "paper" / "alignment" / "run.npz").unlink()
    (run_dir / "steering" / "paper" / "sweep.json").unlink()
    assert run_cli("report", run_dir).exit_code == 0
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    assert tuple(parse(text).sections) == SECTION_IDS
    assert "run.npz</code> is missing (the tables beside it were written before the run was " \
           "saved whole: rerun the align step)" in text
    assert "sweep.json</code> is missing (the tables beside it were written before the sweep " \
           "was saved whole: rerun the steer step)" in text
    assert "mechrec align tables" in text and "mechrec steer sweep" in text


def test_steering_and_sae_numbers_come_from_their_files(report, quick_run):
    run_dir = quick_run[1]
    shares = pd.read_csv(run_dir / "steering" / "paper" / "target_share.csv")
    assert set(shares["genre"]) == {"Action", "Sci-Fi"}
    for row in shares.itertuples(index=False):
        for metric in ("target_share", "ndcg", "coverage", "diversity"):
            key = f"steer/{row.genre}/{row.curve}/{row.value:g}/{metric}"
            assert value(report, key) == getattr(row, metric)
    features = pd.read_csv(run_dir / "steering" / "paper" / "features.csv")
    for row in features.itertuples(index=False):
        assert value(report, f"steer/features/{row.genre}/feature") == row.feature
        page = json.loads((run_dir / "steering" / "paper" / "features" / f"{row.genre}.json")
                          .read_text())
        assert page["index"] == row.feature
        for i, top in enumerate(page["activations"]):
            assert value(report, f"page/{row.genre}/top/{i}") == top["maxValue"]
    sae = json.loads((run_dir / "reproduce" / "sae.json").read_text())
    for key in ("rmse", "explained_variance", "l0", "dead_fraction"):
        assert value(report, f"sae/{key}") == sae["test_metrics"][key]
    for key in ("loss_recovered_zero", "loss_recovered_mean", "ndcg_recovered_zero", "kl"):
        assert value(report, f"sae/{key}") == sae["quality"][key]
    stats = pd.read_csv(run_dir / "reproduce" / "dataset_statistics.csv", index_col=0)
    assert value(report, "stats/users/all") == stats.at["users", "all"]
    assert value(report, "stats/users/test") == stats.at["users", "test"]
    steps = json.loads((run_dir / "reproduce" / "steps.json").read_text())["steps"]
    for name in STEP_NAMES:
        assert value(report, f"timing/{name}") == steps[name]["seconds"]
    provenance = json.loads((run_dir / "reproduce" / "provenance.json").read_text())
    for package in ("torch", "transformer-lens", "sae-lens", "mechrec"):
        assert provenance["versions"][package]
        assert cell(report, f"versions/{package}")["text"] == provenance["versions"][package]


def test_ablation_rows_come_from_their_file_and_use_honest_selection(report, quick_run):
    from mechrec.ablations import AblationTable

    run_dir = quick_run[1]
    table = AblationTable.load(run_dir / "saes" / "paper" / "ablations")
    assert [row["name"] for row in table.rows] == ["base", "items", "topk"]
    assert table.meta["select"] == "sae_train" and table.meta["score"] == "test"
    assert table.meta["group"] == "genre" and table.meta["bootstrap"] == 50
    for row in table.rows:
        for column, key in (("SAE", "sae"), ("neurons", "neurons"), ("random", "random"),
                            ("l0", "l0")):
            assert value(report, f"{row['name']}.{key}") == row[column]
        assert row["SAE - random lower"] <= row["SAE - random"] <= row["SAE - random upper"]
    base = table.rows[0]
    # the base row is the alignment step's comparison: same SAE, users, seed and resamples
    boot = json.loads((run_dir / "saes" / "paper" / "alignment" / "bootstrap.json")
                      .read_text())["headline"]["genre"]
    assert base["SAE"] == pytest.approx(boot["mean"]["SAE"]["estimate"], abs=1e-12)
    assert base["SAE - random lower"] == pytest.approx(
        boot["difference"]["SAE - random"]["lower"], abs=1e-12)
    topk = table.rows[2]
    assert topk["architecture"] == "topk" and topk["changes"].startswith("architecture=topk")
    assert (run_dir / "saes" / "paper" / "ablations" / "topk" / "sae" / "cfg.json").is_file()
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "Ablations: what drives the SAE" in text and "topk: SAE features − random" in text


def test_resumed_ablations_read_the_saved_alignment(quick_run, tmp_path: Path, data_args):
    from mechrec.ablations import AblationTable

    run_dir = copy_run(quick_run, tmp_path)
    before = AblationTable.load(run_dir / "saes" / "paper" / "ablations")
    shutil.rmtree(run_dir / "saes" / "paper" / "ablations")
    result = run_cli("reproduce", "--quick", "--out", run_dir, *data_args)
    assert result.exit_code == 0, result.output
    assert invocation(run_dir)["ablations"] != "skipped"
    assert "the base row reads the saved alignment" in result.stderr
    after = AblationTable.load(run_dir / "saes" / "paper" / "ablations")
    for key in ("SAE", "neurons", "random", "SAE - random lower", "l0"):
        assert after.rows[0][key] == pytest.approx(before.rows[0][key], abs=1e-12)


# ------------------------------------------------------------------------------ resuming
def test_rerun_skips_every_finished_step(quick_run, tmp_path: Path, data_args):
    run_dir = copy_run(quick_run, tmp_path)
    before, before_tokens = step_mtimes(run_dir), tokens(run_dir)
    result = run_cli("reproduce", "--quick", "--out", run_dir, *data_args)
    assert result.exit_code == 0, result.output
    assert invocation(run_dir) == dict.fromkeys(STEP_NAMES, "skipped")
    assert "done before, skipped" in result.stderr
    assert step_mtimes(run_dir) == before
    assert tokens(run_dir) == before_tokens


def test_a_config_file_gives_the_same_run_and_is_recorded(quick_run, tmp_path: Path,
                                                          data_dir: Path):
    run_dir = copy_run(quick_run, tmp_path)
    config = tmp_path / "reproduce.toml"
    config.write_text(f'out = "{run_dir}"\nquick = true\ndataset = "ml-100k"\n'
                      f'split = "paper"\nseed = 0\nprogress = true\n'
                      f'data-dir = "{data_dir / "ml-100k"}"\ndownload = false\n',
                      encoding="utf-8")
    result = run_cli("reproduce", "--config", config, "--no-progress")
    assert result.exit_code == 0, result.output
    assert invocation(run_dir) == dict.fromkeys(STEP_NAMES, "skipped")  # the same settings
    assert result.stderr == ""  # --no-progress on the command line beat progress = true
    command = json.loads((run_dir / "reproduce" / "provenance.json").read_text())["command"]
    assert command["config_file"] == str(config.resolve())
    assert command["options"]["quick"] is True and command["options"]["out"] == str(run_dir)
    assert command["options"]["progress"] is False


@pytest.mark.parametrize(("step", "output"), [
    ("steer", "steering/paper/target_share.csv"),
    ("table1", "table1.json"),
    ("ablations", "saes/paper/ablations/ablations.json"),
])
def test_a_deleted_output_reruns_only_its_step(quick_run, tmp_path: Path, data_args,
                                               step: str, output: str):
    run_dir = copy_run(quick_run, tmp_path)
    before, before_tokens = step_mtimes(run_dir), tokens(run_dir)
    (run_dir / output).unlink()
    result = run_cli("reproduce", "--quick", "--out", run_dir, "--no-progress", *data_args)
    assert result.exit_code == 0, result.output
    assert invocation(run_dir) == {name: "ran" if name == step else "skipped"
                                   for name in STEP_NAMES}
    assert (run_dir / output).is_file()
    after, after_tokens = step_mtimes(run_dir), tokens(run_dir)
    assert after_tokens[step] != before_tokens[step]
    assert {n: t for n, t in after_tokens.items() if n != step} == \
        {n: t for n, t in before_tokens.items() if n != step}
    for name in ("metrics.json", "model/model.safetensors", "saes/paper/sae_weights.safetensors",
                 "saes/paper/alignment/per_genre.csv"):
        assert after[name] == before[name], name


def test_table1_never_reuses_saes_cached_for_another_model(quick_run, tmp_path: Path,
                                                          data_args):
    """The model in the run folder changed (as after retraining it): the Table-1 sweep trains
    fresh SAEs in a folder of its own instead of reusing those cached for the old weights."""
    import torch
    from mechrec_recsys.checkpoint import checkpoint_sha256, load_checkpoint, save_checkpoint

    run_dir = copy_run(quick_run, tmp_path)
    old = json.loads((run_dir / "table1.json").read_text())
    old_dir = Path(old["sweep_directory"].replace(str(quick_run[1]), str(run_dir)))
    assert old_dir.is_dir()
    old_saes = {p: p.stat().st_mtime_ns for p in old_dir.rglob("sae_weights.safetensors")}
    assert old_saes
    assert old["info"]["model_sha256"] == checkpoint_sha256(run_dir / "model")
    checkpoint = load_checkpoint(run_dir / "model")
    with torch.no_grad():
        checkpoint.model.blocks[0].attn.W_Q.add_(0.05)
    save_checkpoint(run_dir / "model", checkpoint.model, checkpoint.vocab,
                    metadata=checkpoint.metadata)
    (run_dir / "table1.json").unlink()
    result = run_cli("reproduce", "--quick", "--out", run_dir, "--no-progress", *data_args)
    assert result.exit_code == 0, result.output
    assert invocation(run_dir)["table1"] == "ran"
    new = json.loads((run_dir / "table1.json").read_text())
    new_dir = Path(new["sweep_directory"])
    assert new["info"]["model_sha256"] == checkpoint_sha256(run_dir / "model")
    assert new["info"]["model_sha256"] != old["info"]["model_sha256"]
    assert new_dir != old_dir and new_dir.parent == old_dir.parent
    assert len(list(new_dir.rglob("sae_weights.safetensors"))) == len(old_saes)
    assert {p: p.stat().st_mtime_ns for p in old_dir.rglob("sae_weights.safetensors")} == \
        old_saes  # the old model's SAEs were neither reused nor touched
    assert [r["l0"] for r in new["runs"]] != [r["l0"] for r in old["runs"]]


def test_redone_training_with_the_same_weights_reuses_the_table1_saes(quick_run,
                                                                     tmp_path: Path,
                                                                     data_args):
    """Training redone (its output deleted) resumes to the same weights: every later step
    reruns, and Table 1 reuses the SAEs cached for exactly those weights."""
    from mechrec_recsys.checkpoint import checkpoint_sha256

    run_dir = copy_run(quick_run, tmp_path)
    weights = checkpoint_sha256(run_dir / "model")
    old = json.loads((run_dir / "table1.json").read_text())
    sweep_dir = Path(old["sweep_directory"].replace(str(quick_run[1]), str(run_dir)))
    saes = {p: p.stat().st_mtime_ns for p in sweep_dir.rglob("sae_weights.safetensors")}
    (run_dir / "metrics.json").unlink()
    result = run_cli("reproduce", "--quick", "--out", run_dir, "--no-progress", *data_args)
    assert result.exit_code == 0, result.output
    assert invocation(run_dir) == {name: "skipped" if name == "data" else "ran"
                                   for name in STEP_NAMES}
    assert checkpoint_sha256(run_dir / "model") == weights
    new = json.loads((run_dir / "table1.json").read_text())
    assert Path(new["sweep_directory"]) == sweep_dir
    assert {p: p.stat().st_mtime_ns for p in sweep_dir.rglob("sae_weights.safetensors")} == saes
    assert [r["l0"] for r in new["runs"]] == [r["l0"] for r in old["runs"]]


def test_other_settings_in_the_same_folder_are_refused(quick_run, data_args):
    _, run_dir = quick_run
    before = tokens(run_dir)
    result = run_cli("reproduce", "--quick", "--epochs", "5", "--out", run_dir, *data_args)
    assert_one_line_error(result, "other settings")
    assert "epochs 3 -> 5" in result.output
    assert tokens(run_dir) == before


def test_another_bootstrap_setting_in_the_same_folder_is_refused(quick_run, data_args):
    from mechrec_recsys.report import ReproduceSettings, run_pipeline

    _, run_dir = quick_run
    before = tokens(run_dir)
    settings = ReproduceSettings.quick_preset().with_overrides(align_bootstrap=10)
    with pytest.raises(ValueError, match=r"align \(align_bootstrap 50 -> 10\)"):
        run_pipeline(settings, run_dir, data_dir=data_args[1], download=False)
    assert tokens(run_dir) == before


# ------------------------------------------------------------------------------ mechrec report
def test_report_command_rerenders_the_same_page(quick_run, tmp_path: Path):
    _, run_dir = quick_run
    out = tmp_path / "sub" / "again.html"
    result = run_cli("report", run_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    assert out.read_text(encoding="utf-8") == (run_dir / "report.html").read_text(
        encoding="utf-8")


def test_missing_outputs_become_notes_naming_their_command(quick_run, tmp_path: Path):
    run_dir = copy_run(quick_run, tmp_path)
    shutil.rmtree(run_dir / "steering")
    (run_dir / "table1.json").unlink()
    (run_dir / "reproduce" / "sae.json").write_text("{not json")
    result = run_cli("report", run_dir)
    assert result.exit_code == 0, result.output
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    page = parse(text)
    assert tuple(page.sections) == SECTION_IDS
    assert text.count('class="missing"') >= 3
    assert "mechrec sae table1" in text and "mechrec steer sweep" in text
    assert "invalid JSON" in text
    assert "gptrec/GPTRec/ndcg" in page.cells  # the sections that have their files still show


def test_report_of_a_bare_run_folder_lists_everything_missing(paper_run_dir: Path,
                                                              tmp_path: Path):
    out = tmp_path / "bare.html"
    result = run_cli("report", paper_run_dir, "--out", out)
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert tuple(parse(text).sections) == SECTION_IDS
    assert "mechrec reproduce" in text


# ------------------------------------------------------------------------------ bad input
def test_report_errors(tmp_path: Path, quick_run):
    assert_one_line_error(run_cli("report", tmp_path / "nope"), "does not exist")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_cli("report", tmp_path / "empty"), "not a mechrec run folder")
    assert_one_line_error(run_cli("report", quick_run[1], "--out", tmp_path), "is a folder")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert_one_line_error(run_cli("report", quick_run[1], "--out", blocker / "r.html"),
                          "not a folder")


def test_reproduce_errors(tmp_path: Path, data_args):
    out = tmp_path / "run"
    assert_one_line_error(run_cli("reproduce", "--quick", "--dataset", "ml-5k", "--out", out),
                          "unknown dataset 'ml-5k'")
    assert_one_line_error(run_cli("reproduce", "--quick", "--split", "loo", "--out", out),
                          "needs SAE users")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert_one_line_error(run_cli("reproduce", "--quick", "--out", blocker, *data_args),
                          "not a folder")
    assert_one_line_error(run_cli("reproduce", "--quick", "--out", blocker / "run",
                                  *data_args), "cannot write to run folder")
    assert_one_line_error(run_cli("reproduce", "--quick", "--values", "1:x", "--out", out),
                          "steering values")
    assert_one_line_error(run_cli("reproduce", "--quick", "--table1-seeds", "a", "--out", out),
                          "--table1-seeds")
    assert_one_line_error(run_cli("reproduce", "--quick", "--genres", "Sci-Fi,Polka",
                                  "--out", out, "--no-progress", *data_args),
                          "unknown genre 'Polka'")


def test_overview_states_the_budget_cuts_and_each_steps_wall_time(quick_run, tmp_path: Path):
    run_dir = copy_run(quick_run, tmp_path)
    settings_path = run_dir / "reproduce" / "settings.json"
    settings = json.loads(settings_path.read_text())
    assert settings["budget_minutes"] is None
    assert "Budget:" not in (run_dir / "report.html").read_text(encoding="utf-8")
    settings.update(budget_minutes=45.0, budget_cuts=["Table 1: seed 0 only (of 2)"])
    settings_path.write_text(json.dumps(settings))
    result = run_cli("report", run_dir)
    assert result.exit_code == 0, result.output
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "cut to fit about 45 minutes" in text and "Table 1: seed 0 only (of 2)" in text
    report = parse(text)
    steps = json.loads((run_dir / "reproduce" / "steps.json").read_text())["steps"]
    for name in ("train", "steer"):
        shown = cell(report, f"overview/{name}/seconds")["text"]
        assert shown.endswith(" s") and shown[0].isdigit(), shown
        assert steps[name]["seconds"] > 0


# ------------------------------------------------------------------------------ in a browser
def test_report_renders_every_chart_offline_in_headless_chromium(quick_run, report):
    """The page, opened from disk with networking off, draws one plotly chart per chart div
    with no console error; ``MECHREC_REPORT_SCREENSHOTS=DIR`` keeps a screenshot of each
    section."""
    path = quick_run[1] / "report.html"
    with headless_chromium() as browser:
        browser.get(path.resolve().as_uri())
        drawn = browser.execute_script(
            "return Array.from(document.querySelectorAll('.plotly-graph-div')).map(d => ["
            "d.classList.contains('js-plotly-plot'), d.querySelectorAll('.main-svg').length,"
            "d.getBoundingClientRect().width, d.parentElement.parentElement"
            ".getBoundingClientRect().width])")
        assert len(drawn) == report.plots == expected_charts(quick_run[1])
        for plotted, svgs, width, figure_width in drawn:
            assert plotted and svgs >= 1
            assert 300 < width <= figure_width + 1  # drawn inside its figure, no overflow
        assert browser.execute_script("return typeof Plotly") == "object"
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        folder = os.environ.get("MECHREC_REPORT_SCREENSHOTS")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            for section in SECTION_IDS:
                element = browser.find_element("id", section)
                browser.execute_script("arguments[0].scrollIntoView()", element)
                element.screenshot(str(Path(folder) / f"report-{section}.png"))
