"""``--config FILE.toml`` and ``--write-config FILE.toml`` of ``mechrec sae train`` and
``mechrec reproduce``: the file's values, flags that override them, one-line errors for
unknown keys and wrong types, and the effective settings recorded with the results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import tomllib
from cli_checks import assert_one_line_error, run_cli
from wandb_offline import run_dirs, run_id_of, wandb_history


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def effective(tmp_path: Path, *args: object) -> dict:
    """The settings a command would run with, through ``--write-config``."""
    out = tmp_path / "effective.toml"
    result = run_cli(*args, "--write-config", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    return tomllib.loads(out.read_text(encoding="utf-8"))


def test_sae_train_takes_the_file_and_flags_given_explicitly_win(tmp_path: Path):
    config = write(tmp_path / "sae.toml", 'd-sae = 256\nl1 = 0.2\narchitecture = "gated"\n'
                   "steps = 50\nprogress = false\n[option]\nfoo = [1, 2]\n")
    settings = effective(tmp_path, "sae", "train", tmp_path, "--config", config,
                         "--steps", "70", "--d-sae", "2048")
    assert settings["d_sae"] == 2048  # explicit, even though it equals the default
    assert settings["steps"] == 70
    assert settings["l1"] == 0.2 and settings["architecture"] == "gated"
    assert settings["progress"] is False
    assert settings["option"] == {"foo": [1, 2]}
    assert settings["seed"] == 0  # the default, from neither
    assert "name" not in settings and "config" not in settings


def test_written_settings_read_back_as_the_same_settings(tmp_path: Path):
    args = ("reproduce", "--quick", "--out", tmp_path / "run", "--table1-seeds", "0,1",
            "--values", "0,2,5", "--genres", "Action,Sci-Fi", "--no-progress")
    first = effective(tmp_path, *args)
    assert first["table1_seeds"] == [0, 1] and first["values"] == [0.0, 2.0, 5.0]
    assert first["genres"] == ["Action", "Sci-Fi"] and first["quick"] is True
    file = write(tmp_path / "reproduce.toml", (tmp_path / "effective.toml").read_text())
    assert effective(tmp_path, "reproduce", "--config", file) == first
    # list options also take their command-line text
    text = write(tmp_path / "text.toml", f'out = "{tmp_path / "run"}"\nvalues = "0:4:2"\n')
    assert effective(tmp_path, "reproduce", "--config", text)["values"] == [0.0, 2.0, 4.0]


def test_reproduce_needs_out_from_the_command_line_or_the_file(tmp_path: Path):
    assert_one_line_error(run_cli("reproduce", "--quick"), "--out is required")
    file = write(tmp_path / "r.toml", f'out = "{tmp_path / "run"}"\n')
    assert effective(tmp_path, "reproduce", "--config", file)["out"] == str(tmp_path / "run")


@pytest.mark.parametrize(("text", "message"), [
    ("d_sea = 64\n", "unknown key 'd_sea' in config file {file} for 'mechrec sae train'; "
                     "did you mean d_sae?"),
    ("zzz = 1\n", "valid keys: architecture, batch_size, checkpoint_path, d_sae,"),
    ("config = 'other.toml'\n", "unknown key 'config'"),
    ('d_sae = "64"\n', "d_sae in {file} must be an integer, got a string ('64')"),
    ("l1 = true\n", "l1 in {file} must be a number, got a boolean (True)"),
    ("progress = 1\n", "progress in {file} must be true or false, got an integer (1)"),
    ("hook = 3\n", "hook in {file} must be a string"),
    ("option = 3\n", "option in {file} must be a table of NAME = VALUE"),
    ("d_sae = \n", "config file {file} is not valid TOML"),
    ("d-sae = 1\nd_sae = 2\n", "config file {file} sets d_sae twice"),
])
def test_bad_config_files_are_one_line_errors(tmp_path: Path, text: str, message: str):
    file = write(tmp_path / "sae.toml", text)
    result = run_cli("sae", "train", tmp_path, "--config", file)
    assert_one_line_error(result, message.format(file=file))


def test_list_values_of_the_wrong_kind_name_the_key(tmp_path: Path):
    out = tmp_path / "run"
    for text, message in ((f'out = "{out}"\ntable1_seeds = [0.5]\n',
                           "table1_seeds in {file} takes comma-separated integers"),
                          (f'out = "{out}"\nvalues = [1, "a"]\n',
                           "values in {file} must be a list of numbers"),
                          (f'out = "{out}"\ngenres = []\n',
                           "genres in {file} must be a non-empty list")):
        file = write(tmp_path / "r.toml", text)
        assert_one_line_error(run_cli("reproduce", "--config", file),
                              message.format(file=file))


def test_a_missing_config_file_is_a_one_line_error(tmp_path: Path):
    missing = tmp_path / "nope.toml"
    assert_one_line_error(run_cli("sae", "train", tmp_path, "--config", missing),
                          f"config file {missing} does not exist")


def test_sae_train_records_the_config_file_and_the_settings(paper_run_dir: Path,
                                                            data_dir: Path, tmp_path: Path):
    config = write(tmp_path / "sae.toml",
                   f'd_sae = 64\nl1 = 0.2\nsteps = 300\nbatch_size = 256\nprogress = false\n'
                   f'name = "from-config"\noverwrite = true\n'
                   f'data_dir = "{data_dir / "ml-100k"}"\ndownload = false\n')
    result = run_cli("sae", "train", paper_run_dir, "--config", config, "--steps", "40")
    assert result.exit_code == 0, result.output
    provenance = json.loads((paper_run_dir / "saes" / "from-config" / "mechrec.json")
                            .read_text())
    assert provenance["training_config"]["d_sae"] == 64
    assert provenance["training_config"]["l1_coefficient"] == 0.2
    assert provenance["training_config"]["steps"] == 40
    command = provenance["command"]
    assert command["config_file"] == str(config.resolve())
    assert command["options"]["steps"] == 40 and command["options"]["d_sae"] == 64
    assert command["options"]["name"] == "from-config"


def test_sae_train_logs_to_wandb_from_the_command_line_or_the_file(
        paper_run_dir: Path, data_dir: Path, tmp_path: Path, offline_wandb: Path):
    config = write(tmp_path / "sae.toml",
                   'd_sae = 32\nsteps = 30\nbatch_size = 256\nprogress = false\n'
                   'log_to = "wandb"\nwandb_project = "from-file"\nwandb_log_frequency = 10\n'
                   f'data_dir = "{data_dir / "ml-100k"}"\ndownload = false\n')
    result = run_cli("sae", "train", paper_run_dir, "--config", config, "--name", "tracked",
                     "--overwrite", "--wandb-project", "mechrec-cli")
    assert result.exit_code == 0, result.output
    (run,) = run_dirs(offline_wandb)
    steps = [row["_step"] for row in wandb_history(run) if "losses/overall_loss" in row]
    assert steps == [9, 19, 29]
    provenance = json.loads((paper_run_dir / "saes" / "tracked" / "mechrec.json").read_text())
    training = provenance["training_config"]
    assert training["log_to"] == "wandb" and training["wandb_project"] == "mechrec-cli"
    assert training["run_name"] == "tracked"  # the SAE's folder name by default
    assert provenance["command"]["options"]["log_to"] == "wandb"


def test_an_unknown_tracker_is_a_one_line_error(paper_run_dir: Path, tmp_path: Path):
    result = run_cli("sae", "train", paper_run_dir, "--log-to", "tensorboard", "--steps", "5")
    assert_one_line_error(result, "log_to must be None or one of wandb, mlflow, got 'tensorboard'")


def test_sae_train_saves_sae_lens_snapshots_in_the_run_folder(paper_run_dir: Path,
                                                              data_dir: Path):
    result = run_cli("sae", "train", paper_run_dir, "--d-sae", "32", "--steps", "20",
                     "--batch-size", "256", "--n-checkpoints", "1", "--name", "snapshots",
                     "--overwrite", "--no-progress", "--data-dir", data_dir / "ml-100k",
                     "--no-download")
    assert result.exit_code == 0, result.output
    folder = paper_run_dir / "sae-lens-checkpoints" / "snapshots"
    assert [p.name for p in folder.iterdir()] == [str(11 * 256)]
    assert (folder / str(11 * 256) / "trainer_state.pt").is_file()
    provenance = json.loads((paper_run_dir / "saes" / "snapshots" / "mechrec.json").read_text())
    assert provenance["training_config"]["checkpoint_path"] == str(folder)


def test_log_to_mlflow_without_mlflow_is_a_one_line_error(paper_run_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    result = run_cli("sae", "train", paper_run_dir, "--log-to", "mlflow", "--steps", "5")
    assert_one_line_error(result, "--log-to mlflow needs the mlflow package, which is not "
                                  "installed: pip install mlflow")


def test_sae_table1_logs_each_sae_with_its_row_as_the_summary(
        paper_run_dir: Path, data_dir: Path, tmp_path: Path, offline_wandb: Path):
    from wandb_offline import wandb_records

    result = run_cli("sae", "table1", paper_run_dir, "--l1", "0.1", "--d-sae", "32",
                     "--l1-d-sae", "32", "--d-sae-l1", "0.1", "--seeds", "0", "--steps", "21",
                     "--batch-size", "256", "--no-progress", "--out", tmp_path / "t1.csv",
                     "--log-to", "wandb", "--run-name", "grid", "--wandb-log-frequency", "5",
                     "--data-dir", data_dir / "ml-100k", "--no-download")
    assert result.exit_code == 0, result.output
    runs = run_dirs(offline_wandb)
    # the training session, then the session that added the row to the same run
    assert len(runs) == 2 and len({run_id_of(run) for run in runs}) == 1
    wandb_history(runs[-1])
    records = wandb_records(next(runs[0].glob("*.wandb")))
    (name,) = {r.run.display_name for r in records if r.WhichOneof("record_type") == "run"}
    assert name == "grid/d_sae=32,l1_coefficient=0.1,seed=0"
    summary = {item.key: json.loads(item.value_json)
               for record in wandb_records(next(runs[-1].glob("*.wandb")))
               if record.WhichOneof("record_type") == "summary"
               for item in record.summary.update}
    (row,) = json.loads((tmp_path / "t1.json").read_text())["runs"]
    for key in ("genre_corr_honest", "explained_variance", "ndcg", "l0"):
        assert summary[key] == pytest.approx(row[key]), key


def test_reproduce_log_to_mlflow_without_mlflow_is_a_one_line_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    result = run_cli("reproduce", "--quick", "--out", tmp_path / "run", "--log-to", "mlflow")
    assert_one_line_error(result, "--log-to mlflow needs the mlflow package")
    assert not (tmp_path / "run").exists()
