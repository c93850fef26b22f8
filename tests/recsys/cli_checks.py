"""Helpers shared by the ``mechrec`` CLI tests: invoke the app, check one-line errors.

Imported by name (``from cli_checks import ...``); a unique module name, so it cannot clash
with helper modules of other test folders.
"""

from __future__ import annotations

from click.testing import Result
from mechrec_recsys.cli.main import app
from typer.testing import CliRunner


def run_cli(*args: object) -> Result:
    """Invoke ``mechrec`` in-process with ``args`` (converted to strings)."""
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result: Result, message: str) -> None:
    """The command failed with exit code 2 and printed exactly one ``error: ...`` line
    containing ``message``, and no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.output
