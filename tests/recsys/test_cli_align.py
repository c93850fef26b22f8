"""``mechrec align``: writes loadable tables, prints Table 2 and the summary, shows titles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from cli_checks import assert_one_line_error, run_cli
from mechrec_recsys.alignment import feature_examples
from mechrec_recsys.experiment import Experiment

from mechrec.saes import NormalizedSAE

STEMS = ("sae", "neurons", "control", "per_genre", "summary", "comparison", "profiles",
         "monosemanticity", "top_features")



@pytest.fixture(scope="module")
def sae_dir(paper_sae: NormalizedSAE, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return paper_sae.save(tmp_path_factory.mktemp("align_cli") / "sae")


def test_tables_writes_every_table_and_prints_table_2_and_the_summary(
    paper_run_dir: Path, sae_dir: Path, data_dir: Path, paper_experiment: Experiment
) -> None:
    result = run_cli("align", "tables", paper_run_dir, sae_dir, "--data-dir",
                     data_dir / "ml-100k", "--no-download", "--top-k", "2",
                     "--title-contains", "Star Wars", "--years", "1980-1989")
    assert result.exit_code == 0, result.output
    out = sae_dir / "alignment"  # the default --out
    assert "paper Table 2" in result.output and "SAE vs neurons vs random control" in result.output
    assert "in-sample" in result.output and "honest" in result.output
    for name in ("Horror", "Documentary", "decade=1990s", "title: Star Wars", "years 1980-1989",
                 "mean (genre, n=18)"):
        assert name in result.output
    for stem in STEMS:
        csv = pd.read_csv(out / f"{stem}.csv")
        parquet = pd.read_parquet(out / f"{stem}.parquet")
        assert len(csv) == len(parquet) > 0 and list(csv.columns) == list(parquet.columns)
    per_genre = pd.read_parquet(out / "per_genre.parquet").set_index("attribute")
    genres = paper_experiment.genre_names
    assert set(genres) <= set(per_genre.index)
    assert per_genre.loc["unknown", ["correlation", "roc_auc", "sensitivity"]].isna().all()
    assert per_genre.loc["Horror", "correlation"] > 0
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["features"]) == {"SAE", "neurons", "random"}
    assert set(summary["selection"]) == {"honest", "in-sample"}
    assert set(summary["group"]) == {"genre", "decade", "custom", "all"}
    top = pd.read_csv(out / "top_features.csv")
    assert len(top) == 2 * len(per_genre)
    meta = json.loads((out / "alignment.json").read_text())
    assert meta["provenance"]["sae_dir"] == str(sae_dir)
    assert meta["rows"]["score"] == len(paper_experiment.activations("test", meta["hook_name"]))


def test_tables_without_decades_into_another_folder(
    paper_run_dir: Path, sae_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tables"
    result = run_cli("align", "tables", paper_run_dir, sae_dir, "--out", out, "--no-decades",
                     "--metric", "roc_auc", "--data-dir", data_dir / "ml-100k", "--no-download")
    assert result.exit_code == 0, result.output
    per_genre = pd.read_csv(out / "per_genre.csv")
    assert set(per_genre["group"]) == {"genre"}
    assert not per_genre["attribute"].str.startswith("decade=").any()
    # the selecting metric comes first and the table is sorted by it
    assert list(per_genre.columns[:5]) == ["attribute", "group", "share", "feature", "roc_auc"]
    assert per_genre["roc_auc"].dropna().is_monotonic_decreasing
    assert set(pd.read_csv(out / "summary.csv")["group"]) == {"genre"}


def test_tables_per_distinct_item(
    paper_run_dir: Path, sae_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "items"
    result = run_cli("align", "tables", paper_run_dir, sae_dir, "--out", out, "--unit",
                     "items", "--bootstrap", "10", "--data-dir", data_dir / "ml-100k",
                     "--no-download")
    assert result.exit_code == 0, result.output
    assert "distinct items" in " ".join(result.output.split())
    meta = json.loads((out / "alignment.json").read_text())
    assert meta["unit"] == "items" and meta["rows"]["score"] < meta["rows"]["select"]
    bad = run_cli("align", "tables", paper_run_dir, sae_dir, "--unit", "users", "--data-dir",
                  data_dir / "ml-100k", "--no-download")
    assert bad.exit_code == 2 and "unknown --unit 'users'" in bad.output


def test_examples_show_real_titles_with_context(
    paper_run_dir: Path, sae_dir: Path, data_dir: Path, paper_experiment: Experiment,
    paper_sae: NormalizedSAE, tmp_path: Path
) -> None:
    feature = 3
    expected = feature_examples(paper_experiment, paper_sae, feature, k=4)
    assert len(expected) == 4
    page = tmp_path / "feature.json"
    result = run_cli("align", "examples", paper_run_dir, sae_dir, feature, "--k", "4",
                     "--title-contains", "Star Wars", "--export", page,
                     "--data-dir", data_dir / "ml-100k", "--no-download")
    assert result.exit_code == 0, result.output
    assert f"feature {feature}: top 4 positions" in result.output
    for title in expected["title"]:  # full titles, even long ones
        assert title in result.output
    assert f"{expected['activation'].iloc[0]:.3f}" in result.output
    assert "p_top100" in result.output and "title: Star Wars" in result.output
    assert "promotes (decoder direction" in result.output and "demotes (mean change" in \
        result.output
    exported = json.loads(page.read_text())
    assert exported["index"] == feature and len(exported["activations"]) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tables", "{run}", "{sae}", "--metric", "f1"], "unknown metric 'f1'"),
        (["tables", "{run}", "{missing}"], "not found"),
        (["tables", "{run}", "absent-sae"], "saes/absent-sae and absent-sae do not exist"),
        (["tables", "{missing}", "{sae}"], "run folder"),
        (["tables", "{untrained}", "{sae}"], "no trained model yet"),
        (["tables", "{untrained}", "paper"], "no trained model yet"),
        (["tables", "{run}", "{sae}", "--years", "eighties"], "expected FIRST-LAST"),
        (["tables", "{run}", "{wrong_hook}"], "cannot give"),
        (["examples", "{run}", "{sae}", "100000"], "out of range"),
        (["examples", "{run}", "{sae}", "1", "--part", "holdout"], "unknown --part"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2(
    paper_run_dir: Path, sae_dir: Path, data_dir: Path, tmp_path: Path, args: list[str],
    message: str
) -> None:
    wrong_hook = tmp_path / "wrong_hook"
    if "{wrong_hook}" in args:
        NormalizedSAE.load(sae_dir, hook_name="blocks.9.hook_resid_post").save(wrong_hook)
    untrained = tmp_path / "untrained"
    if "{untrained}" in args:
        untrained.mkdir()
        shutil.copy(paper_run_dir / "run.json", untrained / "run.json")
    paths = {"{run}": paper_run_dir, "{sae}": sae_dir, "{missing}": tmp_path / "missing",
             "{wrong_hook}": wrong_hook, "{untrained}": untrained}
    filled = [paths.get(a, a) for a in args]
    result = run_cli("align", *filled, "--data-dir", data_dir / "ml-100k", "--no-download")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.output


def test_ablations_train_the_variants_like_the_sae_and_resume(
    paper_run_dir: Path, data_dir: Path, sae_dir: Path, tmp_path: Path
) -> None:
    from mechrec.ablations import AblationTable

    data = ("--data-dir", data_dir / "ml-100k", "--no-download")
    run = tmp_path / "run"
    shutil.copytree(paper_run_dir, run)
    trained = run_cli("sae", "train", run, "--d-sae", "64", "--l1", "0.1", "--steps", "100",
                      "--batch-size", "256", "--name", "small", "--no-progress", *data)
    assert trained.exit_code == 0, trained.output
    result = run_cli("align", "ablations", run, "small", "--kinds", "items,topk,layers",
                     "--bootstrap", "10", *data)
    assert result.exit_code == 0, result.output
    out = run / "saes" / "small" / "ablations"
    table = AblationTable.load(out)
    assert [row["name"] for row in table.rows] == ["base", "items", "topk", "resid-post-1"]
    assert table.meta["config"]["d_sae"] == 64 and table.meta["config"]["steps"] == 100
    for row in table.rows:
        assert row["name"] in result.stdout
    assert table.rows[3]["hook"] == "blocks.1.hook_resid_post"
    assert table.rows[3]["d_sae"] == 64
    assert "Ablations: mean best-genre correlation" in result.stdout
    # a rerun reuses every saved row
    again = run_cli("align", "ablations", run, "small", "--kinds", "items,topk,layers",
                    "--bootstrap", "10", *data)
    assert again.exit_code == 0, again.output
    assert again.stderr.count("done before, reused") == 4
    assert "no saved alignment" in result.stderr

    # once 'align tables' has aligned this SAE, the base row reads its tables (same numbers)
    tables = run_cli("align", "tables", run, "small", "--bootstrap", "10", *data)
    assert tables.exit_code == 0, tables.output
    reused = run_cli("align", "ablations", run, "small", "--kinds", "items", "--bootstrap",
                     "10", "--out", tmp_path / "reused", *data)
    assert reused.exit_code == 0, reused.output
    assert "the base row reads the saved alignment" in reused.stderr
    base, again_base = table.rows[0], AblationTable.load(tmp_path / "reused").rows[0]
    for key in ("SAE", "neurons", "random", "SAE - random lower", "SAE - neurons upper"):
        assert again_base[key] == pytest.approx(base[key], abs=1e-12)
    # ... but not tables of a sample of the users, nor of another seed
    sample = run_cli("align", "tables", run, "small", "--bootstrap", "10", "--max-users", "50",
                     *data)
    assert sample.exit_code == 0, sample.output
    fresh = run_cli("align", "ablations", run, "small", "--kinds", "items", "--bootstrap",
                    "10", "--out", tmp_path / "fresh", *data)
    assert "a sample of users" in fresh.stderr, fresh.stderr


def test_ablations_errors(paper_run_dir: Path, data_dir: Path, sae_dir: Path,
                         tmp_path: Path) -> None:
    from mechrec_recsys.ablations import sae_training_config

    data = ("--data-dir", data_dir / "ml-100k", "--no-download")
    assert_one_line_error(run_cli("align", "ablations", paper_run_dir, sae_dir, "--kinds",
                                  "depth", *data), "--kinds 'depth': choose from items")
    assert_one_line_error(run_cli("align", "ablations", paper_run_dir, sae_dir, "--bootstrap",
                                  "-1", *data), "--bootstrap must be >= 0")
    assert sae_training_config(sae_dir).d_sae == 256  # a train_sae result records its config
    with pytest.raises(ValueError, match="records no training configuration"):
        sae_training_config(tmp_path)  # e.g. a plain sae-lens folder
