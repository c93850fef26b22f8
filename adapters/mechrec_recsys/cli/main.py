"""Entry point of the ``mechrec`` command line."""

from __future__ import annotations

import importlib
import pkgutil

import typer

import mechrec_recsys.cli as cli_package
from mechrec_recsys.cli._common import ConventionalGroup

app = typer.Typer(
    name="mechrec",
    help="Mechanistic interpretability for sequential recommenders: data, GPTRec, SAEs, "
    "alignment, steering.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=ConventionalGroup,
)


def _register_commands(application: typer.Typer) -> None:
    """Import every sibling module that exposes ``register(app)`` and let it add commands."""
    for module_info in sorted(pkgutil.iter_modules(cli_package.__path__), key=lambda m: m.name):
        if module_info.name in {"main"} or module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{cli_package.__name__}.{module_info.name}")
        register = getattr(module, "register", None)
        if callable(register):
            register(application)


_register_commands(app)

if __name__ == "__main__":  # pragma: no cover
    app()
