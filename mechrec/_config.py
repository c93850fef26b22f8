"""Configuration dataclasses to and from plain dicts: the one converter every config uses.

:func:`config_to_dict` gives a JSON-ready dict (tuples become lists); :func:`config_from_dict`
rebuilds the dataclass, refusing unknown keys with a message that names the valid ones (or
ignoring them, for formats that dropped a field), and turning lists back into tuples where
the field's default is a tuple. Light: no numpy or torch, so light config modules can use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["config_from_dict", "config_to_dict"]

C = TypeVar("C")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_to_dict(config: Any) -> dict[str, Any]:
    """Every field of the dataclass ``config`` as a JSON-ready dict (tuples as lists)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a dataclass instance, got {type(config).__name__}")
    return _plain(dataclasses.asdict(config))


def _is_tuple_field(field: dataclasses.Field[Any]) -> bool:
    if isinstance(field.default, tuple):
        return True
    factory = field.default_factory
    return factory is not dataclasses.MISSING and isinstance(factory(), tuple)


def config_from_dict(cls: type[C], data: Mapping[str, Any], *, what: str,
                     ignore_unknown: bool = False) -> C:
    """``cls(**data)`` with checks: ``data`` is a mapping, its keys are fields of ``cls``
    (unknown keys are an error naming the valid ones, unless ``ignore_unknown``), and lists
    become tuples for tuple-valued fields.

    Args:
        cls: the config dataclass.
        data: the dict (e.g. read from JSON).
        what: how errors name the config (``"SAE config"``).
        ignore_unknown: drop unknown keys instead of refusing them.

    Raises:
        ValueError: not a mapping, or unknown keys.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"a {what} must be a mapping of field names to values, got "
                         f"{type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown and not ignore_unknown:
        raise ValueError(f"unknown {what} keys {unknown}; valid keys: {sorted(known)}")
    values = {}
    for key, value in data.items():
        if key not in known:
            continue
        if isinstance(value, list) and _is_tuple_field(known[key]):
            value = tuple(value)
        values[key] = value
    return cls(**values)
