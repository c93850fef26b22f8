"""A synthetic world is a dataset like any other (``mechrec train WORLD``, ``Experiment.open``)
and its planted truth labels activation rows for the core's honest alignment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_checks import assert_one_line_error, run_cli
from mechrec_recsys.experiment import Experiment
from mechrec_recsys.synthetic import SynthConfig, generate_world, read_catalog, read_truth
from mechrec_recsys.synthetic.planted import PlantedTruth, planted_attributes

from mechrec.alignment import align
from mechrec.saes import SAETrainingConfig, train_sae

HOOK = "blocks.0.hook_resid_post"
QUICK = ["--epochs", "1", "--n-layers", "1", "--d-model", "16", "--d-mlp", "32", "--max-len",
         "30", "--batch-size", "64", "--no-progress"]


def _world(data_dir: Path, folder: Path, seed: int) -> Path:
    catalog = read_catalog(data_dir / "ml-20m-catalog" / "movies.csv")
    config = SynthConfig.preset("ml-100k", seed=seed, users=300, items=1500)
    generate_world(config, catalog, folder)
    return folder


@pytest.fixture(scope="module")
def world(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _world(data_dir, tmp_path_factory.mktemp("world"), seed=0)


@pytest.fixture(scope="module")
def run_dir(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    result = run_cli("train", str(world), "--split", "paper", "--out", str(out), *QUICK)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def experiment(run_dir: Path) -> Experiment:
    return Experiment.open(run_dir)


def test_a_world_trains_and_reopens_from_its_absolute_folder(world, run_dir, experiment,
                                                             monkeypatch, tmp_path):
    spec = json.loads((run_dir / "run.json").read_text())
    assert Path(spec["dataset"]) == world.resolve()
    monkeypatch.chdir(tmp_path)  # the run reopens from anywhere
    again = Experiment.open(run_dir)
    assert len(again.part("test")) == len(experiment.part("test")) > 0
    assert again.dataset.name == world.name


def test_a_folder_that_is_not_a_world_is_named(tmp_path):
    (tmp_path / "half").mkdir()
    result = run_cli("train", str(tmp_path / "half"), "--split", "paper", "--out",
                     str(tmp_path / "o"), "--no-progress")
    assert_one_line_error(result, "no world.json")


def test_planted_labels_are_the_events_of_the_rows(world, experiment):
    truth = read_truth(world)
    planted = PlantedTruth(experiment)
    acts = experiment.activations("test", HOOK)
    rows = planted.event_rows("test", acts)
    items = pd.read_parquet(world / "interactions.parquet")["item_id"].to_numpy()
    tokens = acts.token.numpy()
    assert (items[rows] == np.asarray(experiment.vocab.item_ids)[tokens - 1]).all()
    events = truth.events.iloc[rows]
    users = np.asarray(experiment.part("test").users)[acts.sequence_index.numpy()]
    assert (events["user_id"].to_numpy() == users).all()
    # a test input is its user's sequence but the held-out last item, cut to the context
    last = events.groupby("user_id")["order"].max()
    lengths = truth.users.set_index("user_id")["length"]
    assert (last == lengths.reindex(last.index) - 2).all()
    labels = planted.labels("test", acts, ("genre",))
    assert list(labels.columns) == truth.genres
    genre = events["genre"].to_numpy()
    assert (labels.to_numpy().sum(axis=1) == (genre >= 0)).all()
    taste = genre >= 0
    assert (labels.to_numpy()[taste].argmax(axis=1) == genre[taste]).all()


def test_alignment_against_the_planted_truth(experiment):
    acts = experiment.activations("sae_train", HOOK)
    sae = train_sae(acts, SAETrainingConfig(d_sae=64, l1_coefficient=0.05, steps=40,
                                            batch_size=256, seed=0)).sae
    attributes = planted_attributes(experiment, factors=("genre", "era"))
    run = align(experiment, sae, select="sae_train", score="test", attributes=attributes)
    groups = run.groups.to_dict()
    assert set(groups.values()) == {"planted genre", "planted era"}
    assert "Horror" in groups and any(name.startswith("era ") for name in groups)
    table = run.comparison()
    assert {"SAE_correlation", "neurons_correlation", "random_correlation"} <= set(table.columns)
    assert run.select_part == "sae_train" and run.score_part == "test"
    with pytest.raises(ValueError, match="unknown planted factors"):
        planted_attributes(experiment, factors=("mood",))


def test_a_run_on_another_world_is_refused(data_dir, experiment, tmp_path):
    other = _world(data_dir, tmp_path / "other", seed=1)
    acts = experiment.activations("test", HOOK)
    with pytest.raises(ValueError, match="do not hold the item of their event"):
        PlantedTruth(experiment, other).event_rows("test", acts)
    with pytest.raises(ValueError, match="not a synthetic world folder"):
        PlantedTruth(experiment, tmp_path)


@pytest.fixture(scope="module")
def cli_sae(run_dir: Path) -> str:
    """An SAE trained through the command line, saved under the run as ``s``."""
    trained = run_cli("sae", "train", str(run_dir), "--hook", HOOK, "--d-sae", "64", "--l1",
                      "0.05", "--steps", "40", "--batch-size", "256", "--name", "s",
                      "--no-progress")
    assert trained.exit_code == 0, trained.output
    return "s"


def test_align_tables_planted_on_the_command_line(run_dir, cli_sae, tmp_path):
    out = tmp_path / "planted"
    result = run_cli("align", "tables", str(run_dir), "s", "--planted", "genre,era",
                     "--bootstrap", "20", "--out", str(out))
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "per_genre.csv")
    assert set(table["group"]) == {"planted genre", "planted era"}
    assert (out / "bootstrap_differences.csv").is_file()
    with_baselines = run_cli("align", "tables", str(run_dir), "s", "--planted", "genre",
                             "--baselines", "probes,sae_k_sparse_probes", "--bootstrap", "0",
                             "--out", str(tmp_path / "baselines"))
    assert with_baselines.exit_code == 0, with_baselines.output
    summary = pd.read_csv(tmp_path / "baselines" / "summary.csv")
    assert {"SAE", "neurons", "random", "probes", "sae_k_sparse_probes"} <= set(
        summary["features"])
    assert_one_line_error(run_cli("align", "tables", str(run_dir), "s", "--baselines",
                                  "neurons"), "--baselines 'neurons': choose from")
    assert_one_line_error(run_cli("align", "tables", str(run_dir), "s", "--planted", "mood"),
                          "choose from genre, era")
    assert_one_line_error(run_cli("align", "tables", str(run_dir), "s", "--planted", "genre",
                                  "--unit", "items"), "cannot be used with --unit items")


def test_a_sample_of_users_for_large_worlds(run_dir, cli_sae, experiment):
    small = experiment.sample_users(20, seed=3)
    assert len(small.part("test")) == 20 and len(small.part("sae_train")) == 20
    assert len(small.part("train")) == len(experiment.part("train"))  # not sampled
    test_users = list(experiment.part("test").users)
    kept = list(small.part("test").users)
    assert kept == [u for u in test_users if u in set(kept)]  # users keep their order
    assert kept == list(experiment.sample_users(20, seed=3).part("test").users)
    assert small.split.info["sampled_users"]["test"] == (20, len(test_users))
    assert small.model is experiment.model
    rows = PlantedTruth(small).event_rows("test", small.activations("test", HOOK))
    assert len(rows) == len(small.activations("test", HOOK))
    with pytest.raises(ValueError, match="max_users must be a positive whole number"):
        experiment.sample_users(0)
    assert experiment.sample_users(10**6) is experiment

    out = run_dir.parent / "sampled-alignment"
    result = run_cli("align", "tables", str(run_dir), "s", "--planted", "genre",
                     "--max-users", "25", "--bootstrap", "0", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "25 of the" in result.output and "--max-users" in result.output
    assert json.loads((out / "alignment.json").read_text())["provenance"]["sampled_users"][
        "test"][0] == 25
    assert_one_line_error(run_cli("align", "tables", str(run_dir), "s", "--max-users", "0"),
                          "--max-users must be a positive number of users")


def test_steer_sweep_on_a_sample_of_test_users(run_dir, cli_sae, tmp_path):
    out = tmp_path / "sweep"
    result = run_cli("steer", "sweep", str(run_dir), "s", "--genres", "Drama", "--values=0,2",
                     "--mode", "replace", "--max-users", "15", "--no-progress", "--out",
                     str(out))
    assert result.exit_code == 0, result.output
    reference = pd.read_csv(next(out.glob("*.csv")))
    assert len(reference) > 0
    assert_one_line_error(run_cli("steer", "sweep", str(run_dir), "s", "--genres", "Drama",
                                  "--max-users", "-1"), "--max-users must be a positive")
