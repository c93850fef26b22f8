"""``mechrec sae train`` under ``torchrun --nproc_per_node 2`` (CPU, gloo).

The exact two-process = one-process equality of collection and training is tested in the
core (tests/core/test_distributed.py). Here the command itself runs on two ranks: the ranks
collect the SAE users' activations in slices into a shared store, train data-parallel, and
rank 0 alone saves the SAE and prints the table. The batch order differs from the
one-process command's (the store has one shard per rank, the in-memory set one chunk), so the
two SAEs are compared by their test metrics, not weight by weight.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_checks import run_cli

from mechrec.saes import NormalizedSAE

ARGS = ["--architecture", "standard", "--d-sae", "64", "--l1", "0.1", "--steps", "60",
        "--batch-size", "256", "--warm-up", "6", "--seed", "0", "--no-progress"]


def test_sae_train_runs_under_torchrun_and_matches_one_process(
    paper_run_dir: Path, data_args: list[str]
) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "mechrec_recsys.cli.main", "sae", "train", str(paper_run_dir), *ARGS,
         "--name", "ddp", "--overwrite", *data_args],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("explained variance") == 1  # rank 0 alone prints
    saes = paper_run_dir / "saes"
    assert not (saes / ".ddp.activations").exists()  # the shared store is removed
    parallel = NormalizedSAE.load(saes / "ddp")
    assert parallel.d_sae == 64
    single = run_cli("sae", "train", paper_run_dir, *ARGS, "--name", "one", "--overwrite",
                     *data_args)
    assert single.exit_code == 0, single.output

    def explained(output: str) -> float:
        row = [line for line in output.splitlines() if "│" in line][-1]
        return float(row.split("│")[2])

    assert explained(proc.stdout) == pytest.approx(explained(single.output), abs=0.05)


@pytest.fixture(scope="module")
def data_args(data_dir: Path) -> list[str]:
    return ["--data-dir", str(data_dir / "ml-100k"), "--no-download"]
