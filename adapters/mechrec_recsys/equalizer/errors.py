"""Errors of the equalizer, each carrying the HTTP status the server answers with.

Both are :class:`ValueError` subclasses, so the CLI's usual bad-input handling applies to them
and Python callers can catch them like every other bad-input error of mechrec.
"""

from __future__ import annotations


class EqualizerInputError(ValueError):
    """A request the equalizer cannot serve (bad value, unknown genre, bad ``k``...): HTTP 400.

    The message names the problem and what to send instead.
    """

    status: int = 400


class UnknownUserError(EqualizerInputError):
    """No sequence of the run belongs to the requested user id: HTTP 404."""

    status: int = 404
