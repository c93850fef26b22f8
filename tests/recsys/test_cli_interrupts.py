"""Ctrl-C on a long command: one line saying what was kept and the command that resumes it,
exit code 130, and the rerun continues from what was kept (``train``, ``sae train``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mechrec_recsys.training as training
import pytest
from cli_checks import run_cli
from mechrec_recsys.cli._common import StepProgress

SAE_ARGS = ["--d-sae", "64", "--steps", "300", "--batch-size", "64", "--name", "cut"]


def _interrupted_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("interrupted: ")]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def test_train_says_what_it_kept_and_resumes(tmp_path: Path, data_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch):
    args = ["train", "ml-100k", "--split", "paper", "--out", str(tmp_path / "run"),
            "--epochs", "3", "--patience", "3", "--d-model", "16", "--d-mlp", "32",
            "--n-layers", "1", "--max-len", "50", "--data-dir", str(data_dir / "ml-100k"),
            "--no-download"]
    monkeypatch.setattr(sys, "argv", ["mechrec", *args])

    def log(message: str) -> None:  # Ctrl-C while epoch 2 is being reported
        if message.startswith("epoch 2/"):
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "_default_log", log)
    result = run_cli(*args)
    assert result.exit_code == 130, result.output
    line = _interrupted_line(result.output)
    assert line.startswith(f"interrupted: kept the run state after epoch 1 of at most 3 (best "
                           f"so far: epoch 1) in {tmp_path / 'run'}; resume with: mechrec train "
                           "ml-100k --split paper --out ")
    messages: list[str] = []
    monkeypatch.setattr(training, "_default_log", messages.append)
    resumed = run_cli(*args)
    assert resumed.exit_code == 0, resumed.output
    assert messages[0] == f"resuming {tmp_path / 'run'} after epoch 1"
    assert messages[1].startswith("training GPTRec on 458 users (")
    assert [m.split(":")[0] for m in messages[2:]] == ["epoch 2/3", "epoch 3/3"]


def test_train_interrupted_before_its_first_epoch_kept_nothing(
        tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    args = ["train", "ml-100k", "--split", "paper", "--out", str(tmp_path / "run"),
            "--epochs", "2", "--d-model", "16", "--n-layers", "1", "--no-resume",
            "--data-dir", str(data_dir / "ml-100k"), "--no-download"]
    monkeypatch.setattr(sys, "argv", ["mechrec", *args])

    def log(message: str) -> None:
        if message.startswith("training GPTRec"):
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "_default_log", log)
    result = run_cli(*args)
    assert result.exit_code == 130
    line = _interrupted_line(result.output)
    assert line.startswith("interrupted: nothing kept yet (interrupted before the first epoch "
                           "ended); rerun with: mechrec train ml-100k")
    assert "--no-resume" not in line


def test_sae_train_checkpoints_and_resumes(paper_run_dir: Path, tmp_path: Path,
                                           data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    run = tmp_path / "run"
    shutil.copytree(paper_run_dir, run)
    args = ["sae", "train", str(run), *SAE_ARGS, "--data-dir", str(data_dir / "ml-100k"),
            "--no-download"]
    monkeypatch.setattr(sys, "argv", ["mechrec", *args])
    update = StepProgress.update

    def interrupt_at_step_200(self: StepProgress, done: int, text: str = "") -> None:
        if self.unit == "steps" and done == 200:
            raise KeyboardInterrupt
        update(self, done, text)

    monkeypatch.setattr(StepProgress, "update", interrupt_at_step_200)
    result = run_cli(*args)
    assert result.exit_code == 130, result.output
    line = _interrupted_line(result.output)
    partial = run / "saes" / ".cut.partial"
    assert line == (f"interrupted: kept the SAE training state after step 100 of 300 in "
                    f"{partial}; resume with: mechrec {' '.join(args)}")
    assert (partial / "training_state.pt").is_file() and not (run / "saes" / "cut").exists()
    # the activations and the first lines of progress came before the interrupt
    assert "collecting activations at blocks.0.hook_resid_post (SAE users): done" in \
        result.output
    monkeypatch.setattr(StepProgress, "update", update)
    resumed = run_cli(*args)
    assert resumed.exit_code == 0, resumed.output
    assert "resuming the interrupted training after step 100" in resumed.output
    assert "training the standard SAE (64 features): 200/300 steps, loss" in resumed.output
    assert "100/300 steps, loss" not in resumed.output
    assert (run / "saes" / "cut" / "cfg.json").is_file() and not partial.exists()


def test_ctrl_c_stops_sae_train_with_exit_code_130(paper_run_dir: Path, tmp_path: Path,
                                                   data_dir: Path):
    """The real signal: SIGINT to the command once its first checkpoint exists."""
    run = tmp_path / "run"
    shutil.copytree(paper_run_dir, run)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "mechrec_recsys.cli.main", "sae", "train", str(run),
               "--d-sae", "64", "--steps", "1000000", "--batch-size", "64", "--name", "cut",
               "--no-progress", "--data-dir", str(data_dir / "ml-100k"), "--no-download"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    state = run / "saes" / ".cut.partial" / "training_state.pt"
    try:
        while not state.exists() and process.poll() is None:
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert stderr.strip().startswith("interrupted: kept the SAE training state after step ")
    assert "resume with: mechrec sae train" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("command", [["align", "tables"], ["steer", "sweep"]])
def test_align_and_steer_say_nothing_was_kept_and_how_to_rerun(
        command: list[str], paper_run_dir: Path, data_dir: Path,
        monkeypatch: pytest.MonkeyPatch):
    # the commands import their library functions when they run: patch them where they live
    import mechrec_recsys.alignment as alignment
    import mechrec_recsys.steering as steering

    name = f"tiny-{command[0]}"
    args = ["sae", "train", str(paper_run_dir), *SAE_ARGS[:-2], "--steps", "20", "--name",
            name, "--overwrite", "--no-progress", "--data-dir", str(data_dir / "ml-100k"),
            "--no-download"]
    assert run_cli(*args).exit_code == 0
    request_cleanup = paper_run_dir / "saes" / name  # the run folder is shared: leave it clean

    def stop(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(alignment, "align", stop)
    monkeypatch.setattr(steering, "run_genre_sweep", stop)
    argv = [*command, str(paper_run_dir), name, "--data-dir", str(data_dir / "ml-100k"),
            "--no-download"]
    monkeypatch.setattr(sys, "argv", ["mechrec", *argv])
    try:
        result = run_cli(*argv)
    finally:
        shutil.rmtree(request_cleanup, ignore_errors=True)
        for lock in (paper_run_dir / "saes").glob(f".{name}*"):
            lock.unlink()
    assert result.exit_code == 130, result.output
    line = _interrupted_line(result.output)
    assert line.startswith("interrupted: nothing kept yet (the tables are written only when "
                           f"the run finishes); rerun with: mechrec {' '.join(command)}")
