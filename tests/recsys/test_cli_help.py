"""Every ``mechrec`` command documents each of its options in one line, with the usual
metavars: no ``<bool>`` on flags, positional arguments in upper case, ``--k`` an integer."""

from __future__ import annotations

import typer
from cli_checks import run_cli
from mechrec_recsys.cli.main import app


def _commands() -> list[tuple[str, typer.core.TyperCommand]]:
    """Every leaf command of the application with its full name (``sae train``)."""
    found = []

    def walk(prefix: str, command) -> None:
        subs = getattr(command, "commands", None)
        if subs is None:
            found.append((prefix, command))
            return
        for name, sub in sorted(subs.items()):
            walk(f"{prefix} {name}".strip(), sub)

    walk("", typer.main.get_command(app))
    return found


def test_every_option_of_every_command_has_a_one_line_description():
    commands = _commands()
    assert len(commands) >= 14
    missing = [f"{name} {param.opts[0]}" for name, command in commands
               for param in command.params if not (param.help or "").strip()]
    assert missing == []
    undescribed = [name for name, command in commands if not (command.help or "").strip()]
    assert undescribed == []


def test_help_pages_use_conventional_metavars():
    for name, _ in _commands():
        result = run_cli(*name.split(), "--help")
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output, name
        assert "{" not in result.output.split("Usage:")[1].splitlines()[0], name
    usage = run_cli("sae", "train", "--help").output
    assert "Usage: mechrec sae train [OPTIONS] RUN_DIR" in " ".join(usage.split())
    k_option = next(p for n, c in _commands() if n == "sae train" for p in c.params
                    if p.name == "k")
    assert k_option.metavar == "INTEGER"
    assert "<bool>" not in run_cli("--help").output
