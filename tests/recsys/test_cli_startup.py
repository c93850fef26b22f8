"""The ``mechrec`` command line answers ``--help``, ``data list`` and argument errors without
importing torch, TransformerLens or sae-lens (what the time is, ``benchmarks/bench_cli_startup.py``
measures; this test only checks which modules were loaded, so it cannot flake on a busy machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "transformer_lens", "sae_lens", "pandas")
ROOT = Path(__file__).resolve().parents[2]

#: Runs ``mechrec ARGS`` in-process in a fresh interpreter, then prints the exit code and the
#: heavy modules it loaded as one JSON line on stderr (after the command's own output).
_PROBE = """
import json, sys
from mechrec_recsys.cli.main import app
heavy = {heavy!r}
try:
    app(args={args!r}, prog_name="mechrec")
    code = 0
except SystemExit as exc:
    code = exc.code
print(json.dumps({{"code": code, "loaded": [m for m in heavy if m in sys.modules]}}),
      file=sys.stderr)
"""


def _run(args: list[str], tmp_path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "adapters")]),
               MECHREC_DATA=str(tmp_path / "data"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=HEAVY, args=args)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    report["output"] = done.stdout + done.stderr
    return report


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--help"], 0),
        (["sae", "train", "--help"], 0),
        (["steer", "sweep", "--help"], 0),
        (["data", "list"], 0),
        (["steer", "sweep", "run", "sae", "--values", "0,nan"], 2),
        (["sae", "table1", "run", "--seeds", "0,x"], 2),
        (["train", "ml-100k", "--split", "loo", "--out", "o", "--epochs", "many"], 2),
        (["align", "tables", "run"], 2),  # a missing argument
    ],
)
def test_help_data_list_and_argument_errors_load_no_heavy_module(
    args: list[str], code: int, tmp_path: Path
) -> None:
    report = _run(args, tmp_path)
    assert report["code"] == code, report["output"]
    assert report["loaded"] == [], report["output"]


def test_a_command_that_needs_torch_still_gets_it(tmp_path: Path) -> None:
    """The lazy imports load the heavy stack when a command runs: ``sae train`` on a folder
    that is not a run fails in one line after opening it (torch loaded, no traceback)."""
    (tmp_path / "not-a-run").mkdir()
    report = _run(["sae", "train", "not-a-run", "--no-progress"], tmp_path)
    assert report["code"] == 2, report["output"]
    assert "not a mechrec run folder" in report["output"], report["output"]
    assert "Traceback" not in report["output"]
    assert "torch" in report["loaded"]
