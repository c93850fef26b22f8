"""Every script in ``examples/`` runs to completion and prints something.

Each example runs in a fresh Python process, from an empty temporary working directory, with
``MECHREC_DATA`` pointing at the test data, a private cache folder (so nothing is downloaded
or written into the user's cache) and ``MECHREC_EXAMPLE_QUICK=1`` (see examples/README.md).
New examples are picked up automatically.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.py"))
TIMEOUT_S = 300


def test_examples_are_found_and_documented():
    assert EXAMPLES, f"no example scripts in {EXAMPLES_DIR}"
    readme = (EXAMPLES_DIR / "README.md").read_text()
    assert "MECHREC_EXAMPLE_QUICK" in readme
    for path in EXAMPLES:
        assert path.name in readme, f"examples/README.md does not list {path.name}"


@pytest.mark.parametrize("script", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs(script: Path, data_dir: Path, tmp_path: Path):
    env = dict(os.environ)
    env.update({
        "MECHREC_DATA": str(data_dir),
        "MECHREC_EXAMPLE_QUICK": "1",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    })
    workdir = tmp_path / "work"
    workdir.mkdir()
    try:
        result = subprocess.run(
            [sys.executable, str(script)], cwd=workdir, env=env, capture_output=True,
            text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{script.name} did not finish within {TIMEOUT_S} s (quick mode)")
    assert result.returncode == 0, (
        f"{script.name} exited with code {result.returncode}\n"
        f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}")
    assert result.stdout.strip(), f"{script.name} printed nothing on stdout"
