"""Parameter types of the ``mechrec`` command line: the text of grids, lists, maps and year
ranges becomes typed values while the arguments are parsed, before any command runs.

Each type is a ``parser`` for ``typer.Option`` (typer's form of a click parameter type): it
takes the option's text (or a default that is already typed) and returns the value, or raises
:class:`OptionValueError`, which the application's error funnel prints as one line
``error: --OPTION ...`` with exit code 2. Library functions receive numbers, tuples and dicts,
never command-line text. This module imports nothing heavy, so a bad value is reported without
loading torch.

Example::

    values: Sequence[float] = typer.Option("-10:10:1", "--values", **parsed(VALUE_GRID),
                                           help="...")
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

import typer

from mechrec.grids import value_grid
from mechrec_recsys.configs import parse_year_range

__all__ = [
    "FEATURE_MAP",
    "FLOAT_LIST",
    "INT_LIST",
    "NAME_LIST",
    "OPTION_SETTING",
    "VALUE_GRID",
    "YEAR_RANGE",
    "FeatureMap",
    "NameList",
    "NumberList",
    "OptionValueError",
    "ValueGrid",
    "YearRange",
    "YearSpan",
]

N = TypeVar("N", int, float)


class OptionValueError(typer.BadParameter):
    """A value an option cannot take; the message continues the option's name, e.g.
    ``--seeds`` + ``"takes comma-separated integers; '1.5' is not one"``."""

    def format_message(self) -> str:
        """The option's name followed by the message, as one line."""
        name = (self.param.opts[0] if self.param is not None and self.param.opts
                else "the value")
        return f"{name} {self.message}"


class NumberList(Generic[N]):
    """Comma-separated numbers, e.g. ``"0.1,0.2"`` -> ``(0.1, 0.2)`` or ``"0,1,2"`` ->
    ``(0, 1, 2)``; at least one."""

    def __init__(self, kind: Callable[[str], N], metavar: str) -> None:
        self.kind, self.metavar = kind, metavar

    def __call__(self, text: str | Sequence[N]) -> tuple[N, ...]:
        """Read ``text``; a default that is already a sequence passes through."""
        if not isinstance(text, str):
            return tuple(text)
        items = [item.strip() for item in text.split(",") if item.strip()]
        noun = "integers" if self.kind is int else "numbers"
        if not items:
            raise OptionValueError(f"needs comma-separated {noun}, got {text!r}")
        values = []
        for item in items:
            try:
                values.append(self.kind(item))
            except ValueError:
                raise OptionValueError(f"takes comma-separated {noun}; {item!r} is not one "
                                       f"(got {text!r})") from None
        return tuple(values)


class NameList:
    """Comma-separated names, e.g. ``"Action, Sci-Fi"`` -> ``("Action", "Sci-Fi")``; at least
    one."""

    metavar = "NAME,..."

    def __call__(self, text: str | Sequence[str]) -> tuple[str, ...]:
        """Read ``text``; a default that is already a sequence passes through."""
        if not isinstance(text, str):
            return tuple(text)
        names = tuple(name.strip() for name in text.split(",") if name.strip())
        if not names:
            raise OptionValueError(f"is empty ({text!r}): give comma-separated names such as "
                                   "'Action,Sci-Fi'")
        return names


class ValueGrid:
    """Steering values: ``"START:STOP:STEP"`` (inclusive; ``"START:STOP"`` steps by 1) or a
    comma list such as ``"0,2,5"``; every value finite."""

    metavar = "START:STOP:STEP|V,..."

    def __call__(self, text: str | Sequence[float]) -> tuple[float, ...]:
        """Read ``text``; a default that is already a sequence is checked and passes."""
        if not isinstance(text, str):
            return self._finite(tuple(float(v) for v in text), repr(text))
        spec = text.strip()
        if not spec:
            raise OptionValueError("is empty: give e.g. '-10:10:1' or '0,2,5'")
        try:
            numbers = [float(p) for p in (spec.split(":") if ":" in spec else
                                          (p for p in spec.split(",") if p.strip()))]
        except ValueError:
            raise OptionValueError(f"cannot read steering values {text!r}: use "
                                   "START:STOP:STEP (e.g. '-10:10:1') or a comma list (e.g. "
                                   "'0,2,5')") from None
        self._finite(tuple(numbers), repr(text))
        if ":" not in spec:
            return tuple(numbers)
        if len(numbers) not in (2, 3):
            raise OptionValueError(f"cannot read {text!r}: START:STOP:STEP takes two or three "
                                   "numbers, e.g. '-10:10:1'")
        start, stop, step = numbers[0], numbers[1], numbers[2] if len(numbers) == 3 else 1.0
        if step <= 0 or stop < start:
            raise OptionValueError(f"{text!r} needs start <= stop and step > 0, e.g. "
                                   "'-10:10:1'")
        return tuple(value_grid(start, stop, step))

    @staticmethod
    def _finite(values: tuple[float, ...], shown: str) -> tuple[float, ...]:
        bad = [v for v in values if not math.isfinite(v)]
        if bad:
            raise OptionValueError(f"holds {bad[0]} in {shown}, but steering values must be "
                                   "finite numbers (replace NaN/inf with e.g. 0)")
        return values


class FeatureMap:
    """Chosen SAE features per genre: ``"Sci-Fi=12,Action=40"`` -> ``{"Sci-Fi": 12,
    "Action": 40}``."""

    metavar = "GENRE=INDEX,..."

    def __call__(self, text: str | Mapping[str, int]) -> dict[str, int]:
        """Read ``text``; a default that is already a mapping passes through."""
        if not isinstance(text, str):
            return dict(text)
        out: dict[str, int] = {}
        for part in (p for p in text.split(",") if p.strip()):
            genre, sep, index = part.rpartition("=")
            if not sep or not genre.strip():
                raise OptionValueError(f"cannot read {part!r}: use GENRE=INDEX, e.g. "
                                       "Sci-Fi=12")
            try:
                out[genre.strip()] = int(index)
            except ValueError:
                raise OptionValueError(f"gives {genre.strip()!r} the feature index {index!r}, "
                                       "which is not an integer") from None
        if not out:
            raise OptionValueError(f"is empty ({text!r}): use GENRE=INDEX,..., e.g. Sci-Fi=12")
        return out


class OptionPair(NamedTuple):
    """One ``NAME=VALUE`` architecture option."""

    name: str
    value: Any


class OptionSetting:
    """One architecture option: ``"matryoshka_widths=256,1024"`` -> ``("matryoshka_widths",
    [256, 1024])``; the value is a JSON value when it reads as one (``true``, ``0.5``,
    ``[1, 2]``), a list of numbers when it is comma-separated numbers, text otherwise."""

    metavar = "NAME=VALUE"

    def __call__(self, text: str | tuple[str, Any]) -> OptionPair:
        """Read ``text``; a default that is already a pair passes through."""
        if not isinstance(text, str):
            return OptionPair(*text)
        name, sep, raw = text.partition("=")
        if not sep or not name.strip() or not raw.strip():
            raise OptionValueError(f"cannot read {text!r}: use NAME=VALUE, e.g. "
                                   "matryoshka_widths=256,1024")
        raw = raw.strip()
        try:
            return OptionPair(name.strip(), json.loads(raw))
        except ValueError:
            pass
        parts = [p.strip() for p in raw.split(",")]
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            return OptionPair(name.strip(), raw)
        return OptionPair(name.strip(), [int(n) if n.is_integer() and "." not in p else n
                                         for n, p in zip(numbers, parts, strict=True)])


class YearSpan(NamedTuple):
    """A range of release years, both ends included."""

    first: int
    last: int


class YearRange:
    """A year range ``"1980-1989"`` (or ``1980..1989``, ``1980:1989``, one year ``1995``) ->
    :class:`YearSpan`."""

    metavar = "FIRST-LAST"

    def __call__(self, text: str | Sequence[int]) -> YearSpan:
        """Read ``text``; a default that is already a pair passes through."""
        if not isinstance(text, str):
            return YearSpan(*text)
        try:
            return YearSpan(*parse_year_range(text))
        except ValueError as exc:
            raise OptionValueError(f"is not a year range ({exc})") from None


#: ``--seeds 0,1,2``, ``--d-sae 64,128``: comma-separated integers.
INT_LIST: NumberList[int] = NumberList(int, "N,...")
#: ``--l1 0.1,0.2``: comma-separated numbers.
FLOAT_LIST: NumberList[float] = NumberList(float, "X,...")
#: ``--genres Action,Sci-Fi``: comma-separated names.
NAME_LIST = NameList()
#: ``--values -10:10:1`` or ``--values 0,2,5``: a grid of steering values.
VALUE_GRID = ValueGrid()
#: ``--features Sci-Fi=12,Action=40``: a genre -> SAE feature map.
FEATURE_MAP = FeatureMap()
#: ``--option matryoshka_widths=256,1024``: one architecture option.
OPTION_SETTING = OptionSetting()
#: ``--years 1980-1989``: a year range.
YEAR_RANGE = YearRange()


def parsed(parser: Any) -> dict[str, Any]:
    """``typer.Option`` keyword arguments for ``parser``: ``parser=`` and its ``metavar=``."""
    return {"parser": parser, "metavar": parser.metavar}
