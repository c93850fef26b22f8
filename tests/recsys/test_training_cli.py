"""``mechrec train``: trains on real ml-100k, beats popularity, reports errors in one line."""

from __future__ import annotations

import json

import pytest
from cli_checks import run_cli
from mechrec_recsys.checkpoint import load_checkpoint

# Small and quick, yet sound enough to beat popularity on ml-100k within a few epochs.
QUICK = ["--epochs", "6", "--n-layers", "2", "--max-len", "50", "--dropout", "0.1",
         "--lr", "3e-3", "--batch-size", "64", "--no-progress"]



def test_train_beats_popularity_on_ml100k_leave_one_out(tmp_path, data_dir) -> None:
    out = tmp_path / "run"
    result = run_cli("train", "ml-100k", "--split", "loo", "--out", str(out),
                     "--data-dir", str(data_dir), "--no-download", *QUICK)
    assert result.exit_code == 0, result.output
    assert "GPTRec" in result.output and "Popularity" in result.output
    assert "NDCG@10" in result.output and "±" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    reports = metrics["comparison"]["reports"]
    gptrec, popularity = reports["GPTRec"]["metrics"], reports["Popularity"]["metrics"]
    assert gptrec["ndcg"]["mean"] > popularity["ndcg"]["mean"]
    assert gptrec["coverage"]["mean"] > popularity["coverage"]["mean"]
    assert gptrec["ndcg"]["se"] > 0 and metrics["split"]["kind"] == "loo"
    checkpoint = load_checkpoint(out / "model")
    assert checkpoint.vocab.num_items == 1682 and checkpoint.config.max_len == 50

    # Running the same command again resumes the finished run instead of retraining.
    again = run_cli("train", "ml-100k", "--split", "loo", "--out", str(out),
                    "--data-dir", str(data_dir), "--no-download", *QUICK)
    assert again.exit_code == 0, again.output
    assert json.loads((out / "metrics.json").read_text())["comparison"] == metrics["comparison"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ml-100k", "--split", "random"], "unknown split 'random'"),
        (["no-such-data", "--split", "loo"], "no-such-data"),
        (["ml-100k", "--split", "loo", "--dropout", "1.5"], "dropout"),
        (["ml-100k", "--split", "loo", "--loss", "bpr"], "loss must be"),
        (["ml-100k", "--split", "loo", "--eval-last", "5"], "not training users"),
        (["ml-100k", "--split", "paper", "--eval-last", "0"], "--eval-last must be"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2(tmp_path, data_dir, args, message) -> None:
    result = run_cli("train", *args, "--out", str(tmp_path / "o"), "--data-dir", str(data_dir),
                     "--no-download", "--no-progress")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.output


def test_resuming_with_other_data_is_refused(tmp_path, data_dir) -> None:
    out = tmp_path / "run"
    first = run_cli("train", "ml-100k", "--split", "loo", "--out", str(out), "--data-dir",
                    str(data_dir), "--no-download", "--epochs", "1", "--n-layers", "1",
                    "--d-model", "16", "--max-len", "20", "--no-progress")
    assert first.exit_code == 0, first.output
    second = run_cli("train", "ml-100k", "--split", "paper", "--out", str(out), "--data-dir",
                     str(data_dir), "--no-download", "--epochs", "1", "--n-layers", "1",
                     "--d-model", "16", "--max-len", "20", "--no-progress")
    assert second.exit_code == 2
    assert second.output.startswith("error: ") and "holds a run of" in second.output
    assert json.loads((out / "run.json").read_text())["split"] == "loo"  # left untouched
