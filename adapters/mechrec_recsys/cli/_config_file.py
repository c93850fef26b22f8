"""Config files of the ``mechrec`` commands: ``--config FILE.toml`` gives option values,
flags on the command line override them, ``--write-config FILE.toml`` writes the settings a
command would run with and stops.

A config file is a TOML table whose keys are the command's option names, with hyphens or
underscores (``d_sae = 2048``, ``d-sae = 2048``, ``l1 = 0.1``, ``architecture = "topk"``,
``progress = false``); list options take TOML lists (``table1_seeds = [0, 1, 2]``) or their
command-line text (``values = "-10:10:1"``), and ``mechrec sae train``'s repeatable
``--option NAME=VALUE`` a table::

    [option]
    matryoshka_widths = [256, 1024]

A flag given on the command line wins over the file (click's parameter source tells an
explicit flag from a default). An unknown key, a value of the wrong type or a file that is not
TOML ends the command with one line ``error: ...`` (exit code 2) naming the file and the key.
Relative paths in the file are read from the working folder, as on the command line.

A command opts in with :func:`with_config_file` and the :data:`ConfigOption` /
:data:`WriteConfigOption` parameters; :func:`effective_settings` then gives what it runs with
(the file and every option's value), which the command records next to its results.

This module imports nothing heavy (TOML, difflib, json): bad files are reported without
loading torch.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args, get_origin

import typer

from mechrec_recsys.cli._common import fail

try:  # Python 3.11+
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 with tomli installed
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ModuleNotFoundError:
        _toml = None  # type: ignore[assignment]

__all__ = [
    "CONFIG_PARAMS",
    "ConfigOption",
    "WriteConfigOption",
    "effective_settings",
    "read_config_file",
    "toml_text",
    "with_config_file",
]

#: ``--config FILE``: option values from a TOML file; flags given on the command line win.
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML file of option values (keys: the option names, e.g. "
                 "d_sae = 2048); flags given on the command line override it"),
]
#: ``--write-config FILE``: write the settings the command would run with as TOML, and stop.
WriteConfigOption = Annotated[
    Path | None,
    typer.Option("--write-config", help="write the settings this command would run with "
                 "(config file, flags and defaults) to this TOML file and stop, without "
                 "running"),
]
#: The parameters of the mechanism itself: never keys of a config file nor recorded settings.
CONFIG_PARAMS = ("config", "write_config")
#: Where :func:`with_config_file` leaves :func:`effective_settings` in the click context.
_META_KEY = "mechrec.effective_settings"
#: Sources of a value (click's ``ParameterSource`` names) that a config file does not override.
_EXPLICIT = ("COMMANDLINE", "ENVIRONMENT", "PROMPT")

F = TypeVar("F", bound=Callable[..., Any])


def _options(ctx: typer.Context) -> dict[str, Any]:
    """The command's options that a config file may set, by parameter name."""
    return {param.name: param for param in ctx.command.params
            if param.name not in CONFIG_PARAMS and param.param_type_name == "option"
            and param.name}


def _aliases(options: Mapping[str, Any]) -> dict[str, str]:
    """Config keys (with underscores) -> parameter names: each name and each flag
    (``--d-sae`` -> ``d_sae``)."""
    aliases = {}
    for name, param in options.items():
        aliases[name] = name
        for flag in param.opts:
            if flag.startswith("--"):
                aliases.setdefault(flag[2:].replace("-", "_"), name)
    return aliases


def _command_name(ctx: typer.Context) -> str:
    return ctx.command_path or "mechrec"


def _load_toml(path: Path) -> dict[str, Any]:
    if _toml is None:  # pragma: no cover - Python 3.10 without tomli
        fail(f"reading the config file {path} needs Python 3.11+ or the tomli package "
             "(pip install tomli)")
    if not path.is_file():
        fail(f"config file {path} does not exist" + (" (it is a folder)" if path.is_dir()
                                                      else ""))
    try:
        return _toml.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        fail(f"config file {path} is not UTF-8 text ({exc.reason})")
    except _toml.TOMLDecodeError as exc:
        fail(f"config file {path} is not valid TOML: {exc}")
    except OSError as exc:
        fail(f"cannot read the config file {path}: {exc.strerror or exc}")


def _type_name(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _scalar_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (bool, dict, list)) else str(value)


def _check_type(key: str, path: Path, param: Any, value: Any) -> Any:
    """``value`` of the file in the form the parameter's own conversion takes, after checking
    its TOML type against the option's (a one-line error naming key and expected type)."""
    annotation = param.type_descriptor.annotation
    parser = getattr(param.type_descriptor.parameter_info, "parser", None)

    def wrong(expected: str) -> None:
        fail(f"{key} in {path} must be {expected}, got {_type_name(value)} ({value!r})")

    if param.multiple:
        if isinstance(value, Mapping):  # [option] table: NAME = VALUE -> "NAME=<json>"
            return [f"{name}={json.dumps(item)}" for name, item in value.items()]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            wrong("a table of NAME = VALUE or a list of 'NAME=VALUE' strings")
        return value
    if parser is not None or get_origin(annotation) in (list, tuple, Sequence):
        element = next(iter(get_args(annotation)), str)
        if isinstance(value, str):
            return value
        if isinstance(value, list) and value and all(
                isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in value):
            if element in (int, float) and any(isinstance(v, str) for v in value):
                wrong(f"a list of {'integers' if element is int else 'numbers'}")
            return ",".join(_scalar_text(v) for v in value)
        wrong(f"a non-empty list (or its command-line text, e.g. {param.metavar!r})"
              if param.metavar else "a non-empty list")
    if annotation is bool:
        if not isinstance(value, bool):
            wrong("true or false")
    elif annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            wrong("an integer")
    elif annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            wrong("a number")
    elif annotation in (str, Path) and not isinstance(value, str):
        wrong("a path (a string)" if annotation is Path else "a string")
    return value


def read_config_file(ctx: typer.Context, path: Path) -> dict[str, Any]:
    """The option values of the TOML file ``path`` for the command of ``ctx``, converted by
    each option's own type, by parameter name; errors end the command with one line."""
    options = _options(ctx)
    aliases = _aliases(options)
    data = _load_toml(path)
    values: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for raw_key, raw in data.items():
        key = raw_key.replace("-", "_")
        name = aliases.get(key)
        if name is None:
            valid = sorted(options)
            close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
            hint = (f"did you mean {' or '.join(close)}?" if close
                    else f"valid keys: {', '.join(valid)}")
            fail(f"unknown key {raw_key!r} in config file {path} for "
                 f"'{_command_name(ctx)}'; {hint}")
        if name in given_as:
            fail(f"config file {path} sets {name} twice ({given_as[name]!r} and {raw_key!r})")
        given_as[name] = raw_key
        param = options[name]
        value = _check_type(raw_key, path, param, raw)
        try:
            values[name] = param.get_runtime_param().coerce(value, param=param, ctx=ctx)
        except typer.BadParameter as exc:
            fail(f"{raw_key} in {path} {exc.message}" if exc.message[:1].islower()
                 else f"{raw_key} in {path}: {exc.message}")
    return values


def _plain(value: Any) -> Any:
    """A JSON/TOML-able form of an option's value (paths as text, tuples as lists,
    ``NAME=VALUE`` pairs as a table)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, tuple) and len(v) == 2 and hasattr(v, "_fields")
                         for v in value):
            return {str(k): _plain(v) for k, v in value}
        return [_plain(v) for v in value]
    return value


def effective_settings(ctx: typer.Context) -> dict[str, Any]:
    """What the running command runs with: ``{"config_file": absolute path or None,
    "options": {name: value}}`` (options left unset, ``None`` or empty, are omitted), as
    :func:`with_config_file` recorded it in the command's context ``ctx``; empty outside
    such a command."""
    return dict(ctx.meta.get(_META_KEY, {}))


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) to TOML")


def toml_text(settings: Mapping[str, Any], header: str = "") -> str:
    """``settings`` (scalars, lists and one level of tables) as TOML text: scalars first, then
    one ``[table]`` per mapping; ``header`` becomes comment lines."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    tables = {k: v for k, v in settings.items() if isinstance(v, Mapping)}
    for key, value in settings.items():
        if key not in tables and value is not None:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, table in tables.items():
        lines += ["", f"[{_toml_key(key)}]"]
        lines += [f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def with_config_file(command: F) -> F:
    """Give a command ``--config`` and ``--write-config`` (it declares a ``typer.Context``
    parameter, ``config: ConfigOption = None`` and ``write_config: WriteConfigOption =
    None``): options not given
    on the command line take the file's values, :func:`effective_settings` records what the
    command runs with, and ``--write-config FILE`` writes it as TOML and ends the command."""

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        ctx = next(v for v in kwargs.values()  # the command's typer.Context (a click one)
                   if hasattr(v, "get_parameter_source") and hasattr(v, "meta"))
        config, write_to = kwargs.get("config"), kwargs.get("write_config")
        from_file: dict[str, Any] = {}
        if config is not None:
            from_file = read_config_file(ctx, config)
            for name, value in from_file.items():
                source = ctx.get_parameter_source(name)
                if source is None or source.name not in _EXPLICIT:
                    kwargs[name] = value
        options = {name: _plain(kwargs[name]) for name in _options(ctx)
                   if name in kwargs and kwargs[name] not in (None, [], ())}
        ctx.meta[_META_KEY] = {
            "config_file": str(config.resolve()) if config is not None else None,
            "options": options,
        }
        if write_to is not None:
            header = (f"settings of '{_command_name(ctx)}' "
                      + (f"(from {config} and the command line)" if config is not None
                         else "(from the command line and the defaults)")
                      + f"\nrun with: {_command_name(ctx)} ... --config {write_to}")
            try:
                write_to.parent.mkdir(parents=True, exist_ok=True)
                write_to.write_text(toml_text(options, header), encoding="utf-8")
            except OSError as exc:
                fail(f"cannot write the config file {write_to}: {exc.strerror or exc}")
            typer.echo(f"wrote {write_to}")
            raise typer.Exit(code=0)
        return command(**kwargs)

    return wrapper  # type: ignore[return-value]
