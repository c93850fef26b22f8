"""Table 1 as a typed result: save / load round trip (and files of the earlier format), the
CSV users read, its plotly grid figure, and the report's section built from the loaded object.

One small sweep on the session's ml-100k GPTRec (module scope): two L1 weights at dictionary
16 and one dictionary size at L1 0.1, two seeds each, 40 training steps per SAE.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mechrec_recsys.experiment import Experiment
from mechrec_recsys.report.outputs import RunOutputs
from mechrec_recsys.report.sections import table1_section
from mechrec_recsys.sae_quality import splice_baselines, splice_quality
from mechrec_recsys.saes import (
    QUALITY_COLUMN_KEYS,
    TABLE1_COLUMNS,
    TABLE1_FORMAT,
    Table1,
    run_table1,
    table1_paths,
    write_table1,
)

from mechrec.saes import NormalizedSAE, SAETrainingConfig, run_name

BASE = SAETrainingConfig(architecture="standard", d_sae=16, l1_coefficient=0.1, steps=40,
                         batch_size=256, lr_warm_up_steps=0)


@pytest.fixture(scope="module")
def table(paper_experiment: Experiment, tmp_path_factory: pytest.TempPathFactory) -> Table1:
    return run_table1(paper_experiment, tmp_path_factory.mktemp("table1_run"),
                      l1_values=[0.05, 0.5], d_sae_values=[32], seeds=[0, 1], l1_d_sae=16,
                      d_sae_l1=0.1, base=BASE)


def _as_format_1(json_path: Path) -> None:
    """Rewrite a saved table1.json as the earlier version wrote it (no grid, no original)."""
    payload = json.loads(json_path.read_text())
    for key in ("grid", "original"):
        del payload[key]
    payload["format"] = "mechrec.table1/1"
    json_path.write_text(json.dumps(payload, indent=2, sort_keys=True))


def test_table1_records_its_grid_and_seeds(table: Table1):
    assert table.grid == {"l1_values": [0.05, 0.5], "d_sae_values": [32], "l1_d_sae": 16,
                          "d_sae_l1": 0.1}
    assert table.seeds == [0, 1] and len(table.runs) == 6
    frame = table.frame()
    assert list(frame.columns) == list(TABLE1_COLUMNS)
    assert list(frame["sweep"]) == ["original", "l1", "l1", "d_sae"]
    assert list(frame["n_seeds"].iloc[1:]) == [2, 2, 2]
    assert len(table.runs_frame()) == 6


def test_save_load_round_trip_is_exact(table: Table1, tmp_path: Path):
    csv_path, json_path = table.save(tmp_path)
    assert (csv_path, json_path) == (tmp_path / "table1.csv", tmp_path / "table1.json")
    assert json.loads(json_path.read_text())["format"] == TABLE1_FORMAT
    for where in (tmp_path, json_path, csv_path):
        loaded = Table1.load(where)
        assert loaded == table
        assert loaded.rows() == table.rows() and loaded.to_csv() == table.to_csv()
    # saving the loaded object writes the same bytes
    again = tmp_path / "again"
    Table1.load(tmp_path).save(again)
    for name in ("table1.csv", "table1.json"):
        assert (again / name).read_bytes() == (tmp_path / name).read_bytes()
    # a CSV path names both files; write_table1 is save
    named = write_table1(table, tmp_path / "named" / "mine.csv")
    assert named == table1_paths(tmp_path / "named" / "mine.json")
    assert Table1.load(named[0]) == table


def test_csv_is_still_written_from_the_same_object(table: Table1, tmp_path: Path):
    csv_path, _ = table.save(tmp_path)
    read = pd.read_csv(csv_path)
    assert list(read.columns) == list(TABLE1_COLUMNS)
    frame = table.frame()
    for column in ("l1_coefficient", "d_sae", "rmse_mean", "explained_variance_std", "l0_mean",
                   "ndcg_mean", "ndcg_se", "coverage_mean", "ndcg_delta_mean"):
        np.testing.assert_array_equal(read[column].to_numpy(dtype=float),
                                      pd.to_numeric(frame[column]).to_numpy(dtype=float))


def test_files_of_the_earlier_format_still_load(table: Table1, tmp_path: Path):
    _, json_path = table.save(tmp_path)
    _as_format_1(json_path)
    assert Table1.load(tmp_path) == table  # grid and original row rebuilt from the rows


def _as_format_2(json_path: Path) -> None:
    """Rewrite a saved table1.json as format 2 wrote it (no splice-quality columns)."""
    payload = json.loads(json_path.read_text())
    quality = {f"{key}_{stat}" for key in QUALITY_COLUMN_KEYS for stat in ("mean", "std")}
    payload["rows"] = [{c: v for c, v in row.items() if c not in quality}
                       for row in payload["rows"]]
    payload["runs"] = [{c: v for c, v in run.items() if c not in QUALITY_COLUMN_KEYS}
                       for run in payload["runs"]]
    payload["format"] = "mechrec.table1/2"
    json_path.write_text(json.dumps(payload, indent=2))


def test_splice_quality_columns_are_splice_quality_of_each_sae(
        table: Table1, paper_experiment: Experiment):
    assert TABLE1_FORMAT == "mechrec.table1/3"
    for run in table.runs:
        assert all(np.isfinite(run[key]) for key in QUALITY_COLUMN_KEYS)
        assert run["kl"] >= 0
    # one SAE of the sweep: its columns are a direct call of splice_quality (no shared
    # baselines); the sweep measured the SAE before saving it, this one is read back from
    # disk (float32 rounding of the saved normaliser and weights: same to ~1e-5)
    run = table.runs[0]
    point = {"d_sae": run["d_sae"], "l1_coefficient": run["l1_coefficient"]}
    nsae = NormalizedSAE.load(table.directory / run_name(point, run["seed"]))
    direct = splice_quality(paper_experiment, nsae, k=table.k)
    for key in QUALITY_COLUMN_KEYS:
        assert run[key] == pytest.approx(direct[key], rel=1e-4, abs=1e-7), key
    # and the shared baselines give exactly what a direct call computes
    shared = splice_quality(paper_experiment, nsae, k=table.k,
                            baselines=splice_baselines(paper_experiment, table.hook))
    assert shared == direct
    # the table's lines: mean and std over seeds of the runs' values
    for line in table.summary:
        members = [r for r in table.runs if r["d_sae"] == line["d_sae"]
                   and r["l1_coefficient"] == line["l1_coefficient"]]
        for key in QUALITY_COLUMN_KEYS:
            values = [r[key] for r in members]
            assert line[f"{key}_mean"] == pytest.approx(np.mean(values))
            assert line[f"{key}_std"] == pytest.approx(np.std(values, ddof=1))
    assert {f"{key}_mean" for key in QUALITY_COLUMN_KEYS} <= set(table.frame().columns)


def test_splice_quality_columns_round_trip_and_format_2_loads(table: Table1, tmp_path: Path):
    _, json_path = table.save(tmp_path)
    loaded = Table1.load(tmp_path)
    assert loaded == table
    for got, want in zip(loaded.summary, table.summary, strict=True):
        for key in QUALITY_COLUMN_KEYS:
            assert got[f"{key}_mean"] == want[f"{key}_mean"] is not None
    read = pd.read_csv(tmp_path / "table1.csv")
    np.testing.assert_array_equal(read["kl_mean"].to_numpy(dtype=float)[1:],
                                  [line["kl_mean"] for line in table.summary])
    # a file of format 2 (before these columns): loads, the columns are None
    _as_format_2(json_path)
    old = Table1.load(tmp_path)
    assert list(old.frame().columns) == list(TABLE1_COLUMNS)
    for line in old.summary:
        assert all(line[f"{key}_{stat}"] is None for key in QUALITY_COLUMN_KEYS
                   for stat in ("mean", "std"))
        assert line["ndcg_mean"] is not None
    assert all(key not in run for run in old.runs for key in QUALITY_COLUMN_KEYS)
    old.save(tmp_path / "resaved")  # and saves again, in the current format
    assert Table1.load(tmp_path / "resaved") == old


def test_unusable_files_name_the_fix(table: Table1, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"table1\.json is missing.*mechrec sae table1"):
        Table1.load(tmp_path)
    csv_path, json_path = table.save(tmp_path)
    json_path.unlink()
    with pytest.raises(FileNotFoundError,
                       match=r"table1\.csv alone holds only the table's numbers.*re-run"):
        Table1.load(csv_path)
    json_path.write_text('{"format": "mechrec.table1/9", "rows": []}')
    with pytest.raises(ValueError, match=r"format 'mechrec.table1/9'.*re-run"):
        Table1.load(tmp_path)
    json_path.write_text(json.dumps({"format": TABLE1_FORMAT, "rows": []}))
    with pytest.raises(ValueError, match=r"not a complete Table 1.*re-run"):
        Table1.load(tmp_path)
    json_path.write_text("{not json")
    with pytest.raises(ValueError, match=r"not a readable Table 1.*re-run"):
        Table1.load(tmp_path)


def test_plot_draws_the_grid_with_each_seed(table: Table1):
    fig = table.plot()
    metrics = ("explained_variance", "l0", "ndcg")
    kinds = [(t.meta["metric"], t.meta["sweep"], t.meta["kind"]) for t in fig.data]
    assert kinds == [(m, s, kind) for m in metrics for s in ("l1", "d_sae")
                     for kind in ("mean", "seeds")]
    rows = table.frame()
    for trace in fig.data:
        m, sweep = trace.meta["metric"], trace.meta["sweep"]
        x = "l1_coefficient" if sweep == "l1" else "d_sae"
        if trace.meta["kind"] == "mean":
            line = rows[rows["sweep"] == sweep].sort_values(x)
            np.testing.assert_array_equal(trace.x, line[x].to_numpy(dtype=float))
            np.testing.assert_array_equal(trace.y, line[f"{m}_mean"].to_numpy(dtype=float))
            np.testing.assert_array_equal(trace.error_y.array,
                                          line[f"{m}_std"].to_numpy(dtype=float))
        else:
            points = 2 if sweep == "l1" else 1
            assert len(trace.y) == 2 * points  # every seed of every point
            assert sorted(trace.y) == sorted(
                r[m] for r in table.runs
                if (r["d_sae"] == 16 and r["l1_coefficient"] in (0.05, 0.5)) == (sweep == "l1"))
    # the original model's NDCG as a dotted line in both NDCG panels
    lines = [s for s in fig.layout.shapes if s.line.dash == "dot"]
    assert len(lines) == 2 and {s.y0 for s in lines} == {table.original["ndcg"]}
    # one metric, one seed: no per-seed markers
    single = Table1(**{**table.__dict__, "runs": [r for r in table.runs if r["seed"] == 0]})
    assert [t.meta["kind"] for t in single.plot(metrics=["rmse"]).data] == ["mean", "mean"]
    with pytest.raises(ValueError, match="unknown metric"):
        table.plot(metrics=["nonsense"])


def _cells(body: str) -> dict[str, str]:
    return dict(re.findall(r'data-key="([^"]+)" data-value="([^"]+)"', body))


def test_report_section_is_built_from_the_loaded_object(table: Table1, tmp_path: Path):
    run_dir = tmp_path / "run"
    table.save(run_dir)
    out = RunOutputs(run_dir)
    assert out.table1 == table
    body = table1_section(out).body
    cells = _cells(body)
    rows = table.rows()
    assert float(cells["table1/0/ndcg"]) == rows[0]["ndcg_mean"]
    for i, row in enumerate(rows[1:], start=1):
        for key in ("rmse", "explained_variance", "l0", "dead_fraction", "ndcg", "hit_rate",
                    "coverage", "ndcg_delta"):
            assert float(cells[f"table1/{i}/{key}"]) == row[f"{key}_mean"]
        assert float(cells[f"table1/{i}/d_sae"]) == row["d_sae"]
    assert "2 seed(s) [0, 1]" in body and f"at {table.hook}:" in body
    # the splice-quality columns, one row per point, and Table1.plot() as a chart
    assert "What the model keeps with the SAE spliced in" in body
    for i, row in enumerate(rows[1:]):
        for key in QUALITY_COLUMN_KEYS:
            assert float(cells[f"quality/{i}/{key}"]) == row[f"{key}_mean"]
    # EV and NDCG vs L1, the grid figure, Figure 3 vs L1 (one size: no size charts)
    assert body.count('class="plotly-graph-div"') == 4
    assert "Table 1: SAE quality vs L1 weight and dictionary size" in body

    # a run folder written by the earlier version renders the same section
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    _as_format_1(old / "table1.json")
    assert table1_section(RunOutputs(old)).body == body

    # format 2 (before the splice-quality columns): the section without that table
    older = tmp_path / "older"
    shutil.copytree(run_dir, older)
    _as_format_2(older / "table1.json")
    older_body = table1_section(RunOutputs(older)).body
    assert "What the model keeps" not in older_body and "quality/" not in older_body
    assert _cells(older_body)["table1/1/ndcg"] == cells["table1/1/ndcg"]

    # a folder with the CSV only: a note naming the file and the step, no crash
    (old / "table1.json").unlink()
    note = table1_section(RunOutputs(old)).body
    assert "table1.json" in note and "re-run" in note and "mechrec sae table1" in note
