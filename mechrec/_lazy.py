"""Lazy package exports: a package ``__init__`` names what it offers without importing it.

Importing a package whose ``__init__`` pulls in torch, TransformerLens or sae-lens costs
seconds; a light sibling module (a config, a list of names) would pay that cost too. A package
that lists its exports with :func:`lazy_exports` imports each submodule only when one of its
names is first used, so ``from package import Name`` keeps working and
``import package.light_module`` stays light.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module ``__getattr__`` and ``__dir__`` for ``package`` that import on first use.

    Args:
        package: the package's ``__name__``.
        exports: public name -> the submodule (relative to ``package``) defining it.

    Returns:
        ``(__getattr__, __dir__)`` to assign at the package's top level.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        names = set(importlib.import_module(package).__dict__) | set(exports)
        return sorted(names)

    return __getattr__, __dir__
