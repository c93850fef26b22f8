"""``mechrec steer``: genre sweeps and user lists from the CLI, one-line errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from cli_checks import assert_one_line_error, run_cli
from mechrec_recsys.experiment import Experiment

from mechrec.activations import ActivationSet
from mechrec.saes import NormalizedSAE, SAETrainingConfig, train_sae

PAPER_HOOK = "blocks.0.hook_resid_post"




@pytest.fixture(scope="module")
def data_args(data_dir: Path) -> list[str]:
    return ["--data-dir", str(data_dir / "ml-100k"), "--no-download"]


@pytest.fixture(scope="module")
def saes(tmp_path_factory: pytest.TempPathFactory, paper_sae: NormalizedSAE) -> Path:
    """The session SAE on disk, plus SAEs that do not fit the run (other hook, other width)."""
    root = tmp_path_factory.mktemp("steer_saes")
    paper_sae.save(root / "paper")
    paper_sae.save(root / "other-hook")
    NormalizedSAE.load(root / "other-hook", hook_name="blocks.5.hook_resid_post").save(
        root / "other-hook")
    narrow = ActivationSet.from_tensor(torch.randn(512, 16), PAPER_HOOK)
    config = SAETrainingConfig(d_sae=32, steps=20, batch_size=128, lr_warm_up_steps=0)
    train_sae(narrow, config).sae.save(root / "narrow")
    return root


@pytest.fixture(scope="module")
def sweep_run(paper_run_dir: Path, saes: Path, data_args: list[str],
              tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("steer_out")
    result = run_cli("steer", "sweep", paper_run_dir, saes / "paper", "--genres",
                     "Horror,Children,IMAX", "--values", "-10,-2,0,2,10", "--example-users", "1",
                     "--user-values", "-2,5", "--compare-naive", "1", "--out", out,
                     "--no-progress", *data_args)
    return result, out


def test_sweep_writes_tables_and_prints_the_summary(sweep_run, paper_experiment: Experiment):
    result, out = sweep_run
    assert result.exit_code == 0, result.output
    text = result.output
    assert "warning: genres ['IMAX'] are not in this dataset" in text
    assert "share of the target genre in the top-10" in text and "NDCG@10" in text
    for token in ("Horror", "Children", "sae_feature", "probe_direction", "sae_direction",
                  "keep-error", "replace", "-10", "+10", "unsteered", "spearman"):
        assert token in text, token
    sweep = pd.read_csv(out / "sweep.csv")
    curves = sweep[sweep["value"].notna()]
    # genres x (replace, keep-error, SAE dir., probe, random control) x values
    assert len(curves) == 2 * 5 * 5
    assert set(curves["column"]) == {"Horror", "Children's"}
    assert {"probe_direction", "sae_direction", "sae_feature"} <= set(curves["method"])
    assert set(sweep["method"]) >= {"unsteered", "sae_reconstruction"}
    assert f"share:{paper_experiment.genre_names[1]}" in sweep.columns
    for name in ("target_share.csv", "monotonicity.csv", "features.csv", "probes.csv",
                 "sweep.json", "sweep_long.csv"):
        assert (out / name).is_file(), name
    users = pd.read_csv(out / "users.csv")
    # per genre: the user with the most and the one with the fewest items of it; before, -2, +5
    assert len(users) == 2 * 2 * 3 * 10
    assert set(users["setting"]) == {"before", "-2", "+5"} and users["title"].notna().all()
    summary = json.loads((out / "summary.json").read_text())
    fast = summary["fast_path"]
    assert fast["max_abs_logit_diff"] < 1e-5 and fast["same_top_k"]
    assert summary["metadata"]["genres"] == {"Horror": "Horror", "Children": "Children's"}
    assert "fast path:" in text and "tables written to" in text


def test_sweep_steers_by_k_sparse_and_pca_probes(paper_run_dir: Path, saes: Path,
                                                 data_args: list[str], tmp_path: Path):
    result = run_cli("steer", "sweep", paper_run_dir, saes / "paper", "--genres", "Horror",
                     "--values", "0,3", "--mode", "replace", "--no-random-control",
                     "--example-users", "0", "--probe-methods", "k_sparse,pca,logistic",
                     "--probe-k", "4", "--pca-components", "8", "--out", tmp_path,
                     "--no-progress", *data_args)
    assert result.exit_code == 0, result.output
    sweep = pd.read_csv(tmp_path / "sweep.csv")
    curves = sweep[sweep["value"].notna()]
    assert set(curves["method"]) == {"sae_feature", "sae_direction", "probe_direction",
                                     "k_sparse_direction", "pca_direction"}
    assert {"k-sparse:Horror", "pca:Horror", "probe:Horror"} <= set(curves["curve"])
    probes = pd.read_csv(tmp_path / "probes.csv")
    assert set(probes["method"]) == {"k_sparse", "pca", "logistic"}
    assert (probes["status"] == "ok").all()
    summary = json.loads((tmp_path / "summary.json").read_text())
    settings = summary["metadata"]["probes"]
    assert settings["k_sparse"]["k"] == 4 and settings["pca"]["n_components"] == 8
    assert len(settings["k_sparse"]["neurons"]["Horror"]) == 4
    assert summary["command"]["probe_methods"] == ["k_sparse", "pca", "logistic"]


def test_user_lists_before_and_after(paper_run_dir: Path, saes: Path, data_args: list[str],
                                     paper_experiment: Experiment, tmp_path: Path):
    user = paper_experiment.part("test").users[0]
    csv_path = tmp_path / "lists.csv"
    result = run_cli("steer", "user", paper_run_dir, saes / "paper", "--user", user, "--genre",
                     "Horror", "--values", "0,5", "--out", csv_path, *data_args)
    assert result.exit_code == 0, result.output
    lists = pd.read_csv(csv_path)
    assert lists["setting"].tolist() == ["before"] * 10 + ["+0"] * 10 + ["+5"] * 10
    for title in lists["title"]:
        assert title in result.output
    assert f"user {user} (test users)" in result.output
    assert "before (unsteered)" in result.output and "feature = +5" in result.output
    assert "replace mode" in result.output


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("sweep", ["--genres", "Horrorr"], "unknown genre 'Horrorr'"),
        ("sweep", ["--genres", "Horror", "--features", "Horror=100000"],
         "feature index 100000 is out of range"),
        ("sweep", ["--values", "0,nan"], "steering values must be finite"),
        ("sweep", ["--values", "-10:10:0"], "step > 0"),
        ("sweep", ["--mode", "subtract"], "unknown mode 'subtract'"),
        ("sweep", ["--sae", "other-hook"], "reads hook 'blocks.5.hook_resid_post'"),
        ("sweep", ["--sae", "narrow"], "width 16"),
        ("sweep", ["--sae", "absent"], "absent"),
        ("sweep", ["--probe-methods", "logistic,ica"],
         "unknown --probe-methods ['ica']; choose from logistic, mean_difference, k_sparse, pca"),
        ("sweep", ["--probe-k", "0"], "--probe-k must be >= 1, got 0"),
        ("sweep", ["--genres", "Horror", "--probe-methods", "k_sparse", "--probe-k", "33"],
         "probe_k=33 is larger than the activation width d=32: pass probe_k <= 32"),
        ("sweep", ["--genres", "Horror", "--probe-methods", "pca", "--pca-components", "40"],
         "pca_components=40 is larger than the activation width d=32"),
        ("user", ["--user", "1000000", "--genre", "Horror"], "unknown user '1000000'"),
        ("user", ["--user", "{user}", "--genre", "Sci-Fi", "--values", "1,inf"],
         "steering values must be finite"),
        ("user", ["--user", "{user}", "--genre", "Horror", "--feature", "-1"],
         "feature index -1 is out of range"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2(
    command: str, args: list[str], message: str, paper_run_dir: Path, saes: Path,
    data_args: list[str], paper_experiment: Experiment,
) -> None:
    sae = saes / "paper"
    if args[:1] == ["--sae"]:
        sae, args = saes / args[1], args[2:]
    user = str(paper_experiment.part("test").users[0])
    args = [a.replace("{user}", user) for a in args]
    extra = ["--no-progress"] if command == "sweep" else []
    result = run_cli("steer", command, paper_run_dir, sae, *args, *extra, *data_args)
    assert_one_line_error(result, message)
