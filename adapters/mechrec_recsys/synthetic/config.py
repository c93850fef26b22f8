"""The generator's configuration, the named sizes and the sequence-length distribution.

Sequence lengths follow MovieLens: a log-normal **truncated** to ``[min_len, max_len]``
(MovieLens keeps only users with 20 or more ratings, which is a truncation of a wider
distribution). :func:`fit_length_distribution` fits it by maximum likelihood; on the 6,040
users of ml-1m (``ml-1m-ordered``, lengths 20..2,314, mean 165.6, median 96) it gives
``mu = 4.26, sigma = 1.27`` on the log scale (Kolmogorov-Smirnov distance 0.024 between the
fitted and the real lengths). A preset keeps ``sigma`` and solves ``mu`` so that the expected
length (with both truncations) equals the release's mean length
(:func:`solve_length_mu`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import optimize, special, stats

from mechrec._config import config_from_dict, config_to_dict

#: Log-scale sigma of the truncated log-normal fitted to ml-1m's sequence lengths.
ML1M_LENGTH_SIGMA = 1.27
#: Log-scale mu of the same fit (ml-1m's own mean length under its truncation).
ML1M_LENGTH_MU = 4.26


@dataclass(frozen=True)
class SizePreset:
    """A named world size, copied from a MovieLens release.

    Attributes:
        users: number of users.
        mean_length: mean events per user (the release's ratings / users).
        max_len: the longest sequence allowed (the release's longest user, for realism).
        items: catalog items used (the release's rated items); ``None``: the whole catalog.
    """

    users: int
    mean_length: float
    max_len: int
    items: int | None


#: Sizes by name: users x mean length as in the MovieLens releases, and one past them.
PRESETS: dict[str, SizePreset] = {
    "ml-100k": SizePreset(users=943, mean_length=106.04, max_len=737, items=1682),
    "ml-1m": SizePreset(users=6040, mean_length=165.60, max_len=2314, items=3706),
    "ml-10m": SizePreset(users=69878, mean_length=143.11, max_len=7359, items=10677),
    "ml-20m": SizePreset(users=138493, mean_length=144.41, max_len=9254, items=26744),
    "ml-25m": SizePreset(users=162541, mean_length=153.81, max_len=9254, items=None),
    "100m": SizePreset(users=700000, mean_length=143.0, max_len=9254, items=None),
}


@dataclass(frozen=True)
class SynthConfig:
    """Everything that decides a synthetic world (with the catalog and :attr:`seed`).

    The same config, catalog and seed always give the same parquet contents (``world.json``
    differs only in its run time).

    Attributes:
        seed: seed of every random draw (independent streams per purpose and per chunk).
        users: number of users (ids ``1..users``).
        mean_length: wanted mean sequence length; sets the log-normal's ``mu``.
        min_len: shortest sequence (MovieLens: 20).
        max_len: longest sequence; at most half the world's items.
        length_sigma: log-scale sigma of the truncated log-normal of lengths (ml-1m fit).
        items: how many catalog items the world uses (the most popular under the drawn
            popularity); ``None``: every item with a planted genre.
        exclude_genres: catalog genre labels that are not tastes (``"IMAX"`` is a screen
            format; ``"(no genres listed)"`` is no genre). Items left without a planted genre
            are not used.
        era_edges: first years of the eras after the first: ``(1960, 1980)`` makes eras
            ``<1960``, ``1960-1979`` and ``>=1980``. Items without a year form an era of their own.
        genre_concentration: total Dirichlet concentration of a user's genre taste, spread over
            genres in proportion to their share of items. Small: few dominant genres.
        era_concentration: the same for a user's era taste.
        drift: how far taste moves along the sequence: the taste at the last event is
            ``(1 - drift) * start + drift * other`` (``other`` a fresh draw), and events in
            between mix start and end linearly with position. 0: no drift.
        popularity_exponent: item popularity is ``rank ** -exponent`` over a random ranking
            of the items (Zipf); it weights items inside a genre x era cell and the
            popularity events.
        franchise_boost: how much likelier a whole series is than a single film to rank high
            in the random popularity ranking (series rank as one unit, parts in order). With
            ``items`` set, it decides how many series the world keeps.
        popular_share: share of events that ignore taste: the item is drawn by popularity
            alone (kind ``popular``, no latent genre).
        continue_prob: after an item of a franchise whose next part exists and is not yet
            seen, the next event is that next part with this probability (kind
            ``franchise``).
        repeat_rounds: rounds of redrawing an event whose item the user already has (no user
            sees an item twice, as in MovieLens); events still repeating after them get an
            item by popularity among the user's unseen items (counted in ``world.json``).
        start_time: earliest timestamp (seconds since the epoch; default 2000-01-01).
        end_time: latest timestamp (default 2015-03-31, the end of ml-20m).
        session_gap: mean seconds between two events of a session (exponential, at least 1 s,
            so a user's timestamps never tie).
        break_prob: probability that a gap is a break between sessions.
        break_gap: mean seconds of a break (exponential).
        chunk_users: users generated and written together (one parquet row group per chunk);
            bounds the memory. Part of the config: chunks draw from their own streams.
    """

    seed: int = 0
    users: int = 6040
    mean_length: float = 165.60
    min_len: int = 20
    max_len: int = 2314
    length_sigma: float = ML1M_LENGTH_SIGMA
    items: int | None = None
    exclude_genres: tuple[str, ...] = ("IMAX", "(no genres listed)")
    era_edges: tuple[int, ...] = (1960, 1980, 1990, 2000, 2010)
    genre_concentration: float = 2.0
    era_concentration: float = 2.0
    drift: float = 0.3
    popularity_exponent: float = 1.0
    franchise_boost: float = 4.0
    popular_share: float = 0.1
    continue_prob: float = 0.6
    repeat_rounds: int = 30
    start_time: int = 946_684_800
    end_time: int = 1_427_760_000
    session_gap: float = 60.0
    break_prob: float = 0.05
    break_gap: float = 14 * 86_400.0
    chunk_users: int = 2048

    @classmethod
    def preset(cls, name: str, **overrides) -> SynthConfig:
        """The config of a named size (``ml-100k``, ``ml-1m``, ``ml-10m``, ``ml-20m``,
        ``ml-25m``, ``100m``), with any field overridden (e.g. ``users=500, seed=1``)."""
        if name not in PRESETS:
            raise ValueError(f"unknown size {name!r}; choose one of {', '.join(PRESETS)}")
        size = PRESETS[name]
        base = cls(users=size.users, mean_length=size.mean_length, max_len=size.max_len,
                   items=size.items)
        return replace(base, **overrides)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field out of range."""
        checks = [
            (self.users >= 1, "users must be at least 1"),
            (self.min_len >= 2, "min_len must be at least 2 (a split needs 2 events)"),
            (self.max_len >= self.min_len, "max_len must be at least min_len"),
            (self.min_len < self.mean_length < self.max_len,
             "mean_length must lie strictly between min_len and max_len"),
            (self.length_sigma > 0, "length_sigma must be positive"),
            (self.items is None or self.items >= 2, "items must be at least 2"),
            (self.genre_concentration > 0, "genre_concentration must be positive"),
            (self.era_concentration > 0, "era_concentration must be positive"),
            (0.0 <= self.drift <= 1.0, "drift must be in [0, 1]"),
            (self.popularity_exponent >= 0, "popularity_exponent must be >= 0"),
            (self.franchise_boost > 0, "franchise_boost must be positive"),
            (0.0 <= self.popular_share < 1.0, "popular_share must be in [0, 1)"),
            (0.0 <= self.continue_prob <= 1.0, "continue_prob must be in [0, 1]"),
            (self.repeat_rounds >= 1, "repeat_rounds must be at least 1"),
            (self.end_time - self.start_time >= self.max_len,
             "end_time must be at least max_len seconds after start_time"),
            (self.session_gap > 0 and self.break_gap > 0, "gaps must be positive"),
            (0.0 <= self.break_prob <= 1.0, "break_prob must be in [0, 1]"),
            (self.chunk_users >= 1, "chunk_users must be at least 1"),
            (list(self.era_edges) == sorted(set(self.era_edges)),
             "era_edges must be strictly increasing years"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"synthetic config: {message}")

    def to_dict(self) -> dict:
        """A JSON-ready dict of every field (tuples as lists)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, values: dict) -> SynthConfig:
        """The config written by :meth:`to_dict` (unknown keys are an error)."""
        return config_from_dict(cls, values, what="synthetic config")


def _log_bounds(min_len: int, max_len: int) -> tuple[float, float]:
    """Log-scale truncation points: lengths are rounded, so ``L`` covers ``[L-0.5, L+0.5)``."""
    return math.log(min_len - 0.5), math.log(max_len + 0.5)


def truncated_mean(mu: float, sigma: float, min_len: int, max_len: int) -> float:
    """Mean of ``exp(Y)``, ``Y ~ Normal(mu, sigma)`` truncated to the log bounds of
    ``[min_len, max_len]`` (the mean length before rounding)."""
    a, b = _log_bounds(min_len, max_len)
    alpha, beta = (a - mu) / sigma, (b - mu) / sigma
    mass = special.ndtr(beta) - special.ndtr(alpha)
    upper = special.ndtr(beta - sigma) - special.ndtr(alpha - sigma)
    return float(math.exp(mu + sigma * sigma / 2) * upper / mass)


def solve_length_mu(mean_length: float, sigma: float, min_len: int, max_len: int) -> float:
    """The log-scale ``mu`` whose truncated log-normal has mean ``mean_length``."""
    if not min_len < mean_length < max_len:
        raise ValueError("mean_length must lie strictly between min_len and max_len")
    return float(optimize.brentq(
        lambda mu: truncated_mean(mu, sigma, min_len, max_len) - mean_length,
        math.log(min_len) - 5 * sigma, math.log(max_len) + 5 * sigma, xtol=1e-10))


def draw_lengths(rng: np.random.Generator, n: int, mu: float, sigma: float, min_len: int,
                 max_len: int) -> np.ndarray:
    """``n`` sequence lengths from the truncated log-normal (inverse CDF, no rejection)."""
    a, b = _log_bounds(min_len, max_len)
    lo, hi = special.ndtr((a - mu) / sigma), special.ndtr((b - mu) / sigma)
    u = lo + (hi - lo) * rng.random(n)
    lengths = np.floor(np.exp(mu + sigma * special.ndtri(u)) + 0.5).astype(np.int64)
    return np.clip(lengths, min_len, max_len)


def fit_length_distribution(lengths: Sequence[int] | np.ndarray, min_len: int | None = None,
                            max_len: int | None = None) -> tuple[float, float]:
    """Maximum-likelihood ``(mu, sigma)`` of a log-normal truncated to ``[min_len, max_len]``
    (default: the smallest and largest length seen) from observed sequence lengths.

    This is how :data:`ML1M_LENGTH_MU` and :data:`ML1M_LENGTH_SIGMA` were obtained (ml-1m's
    6,040 lengths, truncation 20..2,314).
    """
    values = np.asarray(lengths, dtype=np.float64)
    if len(values) < 2:
        raise ValueError("need at least 2 lengths to fit")
    min_len = int(values.min()) if min_len is None else int(min_len)
    max_len = int(values.max()) if max_len is None else int(max_len)
    a, b = _log_bounds(min_len, max_len)
    logs = np.log(values)

    def nll(params: np.ndarray) -> float:
        mu, log_sigma = params
        sigma = math.exp(log_sigma)
        mass = special.ndtr((b - mu) / sigma) - special.ndtr((a - mu) / sigma)
        return float(-(stats.norm.logpdf(logs, mu, sigma).sum() - len(logs) * math.log(mass)))

    start = np.array([logs.mean(), math.log(max(logs.std(), 1e-3))])
    result = optimize.minimize(nll, start, method="Nelder-Mead",
                               options={"xatol": 1e-6, "fatol": 1e-6, "maxiter": 2000})
    return float(result.x[0]), float(math.exp(result.x[1]))
