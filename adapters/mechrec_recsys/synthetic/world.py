"""The synthetic world: a catalog prepared for sampling, and the chunked generator.

How one user's sequence is made (every draw seeded; see :class:`SynthConfig` for the knobs):

1. **Length** ``L`` from the truncated log-normal fitted to MovieLens
   (:mod:`mechrec_recsys.synthetic.config`).
2. **Tastes**: a genre taste at the start and one at the end (``end = (1 - drift) * start +
   drift * fresh``), each a Dirichlet draw with concentration ``genre_concentration`` spread
   over genres by their share of items; an era taste (Dirichlet, ``era_concentration``).
   Event ``t`` of ``L`` uses the taste ``(1 - w) * start + w * end`` with ``w = t / (L - 1)``
   (drift along the sequence).
3. **Each event** is, with probability ``popular_share``, a *popular* event (item by
   popularity alone, no latent genre); otherwise a *taste* event: a latent genre ``g`` from the
   current taste, a latent era ``e`` with probability proportional to ``era_taste[e]`` times
   the popularity mass of the genre's items in that era, and an item of genre ``g`` and era
   ``e`` with probability proportional to its popularity. Thus ``P(item | g)`` is
   ``popularity x era taste`` over the genre's items.
4. **No repeats** (a user never sees an item twice, as in MovieLens): an event whose item the
   user already has is drawn again, every latent choice included (kind, genre, era, item), at
   most ``repeat_rounds`` times; this rejection sampling gives the user's distribution
   restricted to unseen items, and the recorded latents are those of the accepted draw.
   Events still repeating after that (heavy users who have seen most of what they like) get
   an item by popularity among the items they have not seen (kind *popular*; counted).
5. **Franchises**: after an item whose series has a next part the user has not seen, the next
   event is replaced, with probability ``continue_prob``, by that next part (a *franchise*
   event); chains continue (part 2, then 3, ...).
6. **Timestamps**: the user starts at a uniform time such that the whole sequence fits before
   ``end_time``; gaps between events are within a session (exponential, mean
   ``session_gap``, at least 1 s) or, with probability ``break_prob``, breaks (mean
   ``break_gap``). Timestamps strictly increase along each user's sequence (no ties), and an
   explicit ``order`` column is written as well.

Simplifications, stated: tastes do not depend on calendar time and users can see a film
before its release year; popularity is a random Zipf ranking, unrelated to genre and year
(series rank as a unit, boosted by ``franchise_boost``, parts in order).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mechrec_recsys.data.catalog import ItemCatalog
from mechrec_recsys.synthetic.config import SynthConfig, draw_lengths, solve_length_mu
from mechrec_recsys.synthetic.franchises import find_franchises

#: Event kinds in the truth file's ``kind`` column.
KIND_TASTE, KIND_FRANCHISE, KIND_POPULAR = 0, 1, 2
KIND_NAMES = ("taste", "franchise", "popular")

#: Random streams under the seed: the catalog's popularity, then one stream per chunk.
_CATALOG_STREAM = 11
_CHUNK_STREAM = 12
#: Uniform draws are kept below 1 by this margin so ``cell + u`` never rounds up to the next
#: cell.
_BELOW_ONE = 1.0 - 1e-9


def _stream(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, keys)]))


def era_names(edges: tuple[int, ...]) -> list[str]:
    """Readable names of the eras cut by ``edges``: ``<1960``, ``1960-1979``, ..., ``>=2010``."""
    if not edges:
        return ["all"]
    names = [f"<{edges[0]}"]
    names += [f"{a}-{b - 1}" for a, b in itertools.pairwise(edges)]
    return [*names, f">={edges[-1]}"]


@dataclass
class WorldCatalog:
    """The items a world draws from, in ascending item id (world index ``0..N-1``).

    Attributes:
        item_ids: raw item ids, ascending, shape ``(N,)``.
        genre_names: the planted genres (catalog labels minus the excluded ones).
        genres: bool ``(N, K)``: the item carries planted genre ``k``.
        era_names: the eras (from ``era_edges``; plus ``"unknown"`` for items without a year).
        era: ``(N,)`` era index of each item.
        popularity: ``(N,)`` popularity weights, summing to 1.
        franchise: ``(N,)`` series number, or -1 for items in no series.
        part: ``(N,)`` 0-based part within the series, or -1.
        next_item: ``(N,)`` world index of the series' next part, or -1.
        table: the items file: ``item_id``, ``title``, ``year``, ``genres`` (the catalog's own
            labels, ``|``-separated), ``era``, ``popularity``, ``franchise``, ``part`` and
            ``franchise_stem``.
        catalog_items: items in the input catalog.
        no_genre_items: catalog items left out because they carry no planted genre.
        franchise_stems: the series' names, by series number.
    """

    item_ids: np.ndarray
    genre_names: list[str]
    genres: np.ndarray
    era_names: list[str]
    era: np.ndarray
    popularity: np.ndarray
    franchise: np.ndarray
    part: np.ndarray
    next_item: np.ndarray
    table: pd.DataFrame
    catalog_items: int
    no_genre_items: int
    franchise_stems: list[str]

    def __len__(self) -> int:
        return len(self.item_ids)


def prepare_catalog(catalog: ItemCatalog, config: SynthConfig) -> WorldCatalog:
    """Choose the world's items and genres, draw popularity, cut eras and find franchises.

    Raises:
        ValueError: the catalog has no usable genre, too few items for ``config.max_len``, ...
    """
    excluded = set(config.exclude_genres)
    planted = [g for g in catalog.genre_names if g not in excluded]
    if not planted:
        raise ValueError("the catalog has no genre to plant tastes on (genres: "
                         f"{catalog.genre_names or 'none'}); use a catalog with a genre column")
    item_ids = catalog.items.index.to_numpy(dtype=np.int64)
    genres = catalog.genres[planted].to_numpy(dtype=bool)
    has_genre = genres.any(axis=1)
    no_genre = int((~has_genre).sum())
    candidates = np.flatnonzero(has_genre)
    candidates = candidates[np.argsort(item_ids[candidates], kind="stable")]  # by item id
    items = catalog.items.iloc[candidates]
    found = find_franchises(items["title"], items["year"])
    rank = _popularity_rank(_stream(config.seed, _CATALOG_STREAM), items.index, found,
                            config.franchise_boost)
    keep = np.sort(np.argsort(rank, kind="stable")[:config.items])  # most popular, by id
    if len(keep) <= config.max_len:
        raise ValueError(f"the world has {len(keep)} items with a planted genre, too few for "
                         f"sequences of up to max_len={config.max_len} items without repeats; "
                         f"use a larger catalog or items, or max_len < {len(keep)}")
    rank = rank[keep]
    keep = candidates[keep]
    genres = genres[keep]
    used = genres.any(axis=0)
    planted = [g for g, u in zip(planted, used, strict=True) if u]
    genres = genres[:, used]
    popularity = (rank - rank.min() + 1.0) ** (-config.popularity_exponent)
    popularity /= popularity.sum()
    items = catalog.items.iloc[keep]
    years = items["year"]
    names = era_names(tuple(config.era_edges))
    known = years.notna().to_numpy()
    era = np.full(len(keep), len(names), dtype=np.int64)
    era[known] = np.searchsorted(np.asarray(config.era_edges, dtype=np.int64),
                                 years[known].to_numpy(dtype=np.int64), side="right")
    if not known.all():
        names = [*names, "unknown"]
    found = _renumber(found[found.index.isin(items.index)])
    position = pd.Series(np.arange(len(keep)), index=items.index)
    franchise = np.full(len(keep), -1, dtype=np.int64)
    part = np.full(len(keep), -1, dtype=np.int64)
    next_item = np.full(len(keep), -1, dtype=np.int64)
    stems = found.groupby("franchise")["stem"].first().tolist() if len(found) else []
    if len(found):
        where = position.loc[found.index].to_numpy()
        franchise[where] = found["franchise"].to_numpy()
        part[where] = found["part"].to_numpy()
        follows = (found["franchise"].to_numpy()[1:] == found["franchise"].to_numpy()[:-1])
        next_item[where[:-1][follows]] = where[1:][follows]
    labels = catalog.genres.iloc[keep]
    label_names = np.asarray(catalog.genre_names, dtype=object)
    table = pd.DataFrame({
        "item_id": items.index.to_numpy(dtype=np.int64),
        "title": items["title"].astype("string").to_numpy(),
        "year": items["year"].astype("Int64").to_numpy(),
        "genres": ["|".join(label_names[row]) for row in labels.to_numpy(dtype=bool)],
        "era": era,
        "popularity": popularity,
        "franchise": franchise,
        "part": part,
        "franchise_stem": [stems[f] if f >= 0 else None for f in franchise.tolist()],
    })
    return WorldCatalog(item_ids=items.index.to_numpy(dtype=np.int64), genre_names=planted,
                        genres=genres, era_names=names, era=era, popularity=popularity,
                        franchise=franchise, part=part, next_item=next_item, table=table,
                        catalog_items=len(item_ids), no_genre_items=no_genre,
                        franchise_stems=stems)


def _popularity_rank(rng: np.random.Generator, item_ids: pd.Index, found: pd.DataFrame,
                     boost: float) -> np.ndarray:
    """A random popularity ranking (1 = most popular) of ``item_ids``.

    Films and whole series are ranked as units by a weighted random permutation (a series
    weighs ``boost``, a film 1: the unit's key is ``Exponential(1) / weight``), and the parts
    of a series take consecutive ranks in part order (a sequel is a little less popular than
    the part before it).
    """
    n_series = int(found["franchise"].max()) + 1 if len(found) else 0
    unit = n_series + np.arange(len(item_ids), dtype=np.int64)  # a film alone: its own unit
    part = np.zeros(len(item_ids), dtype=np.int64)
    if len(found):
        where = item_ids.get_indexer(found.index)
        unit[where] = found["franchise"].to_numpy()
        part[where] = found["part"].to_numpy()
    units, inverse = np.unique(unit, return_inverse=True)
    weights = np.where(units < n_series, boost, 1.0)
    keys = rng.exponential(1.0, len(units)) / weights
    order = np.lexsort((part, keys[inverse]))
    rank = np.empty(len(item_ids), dtype=np.float64)
    rank[order] = np.arange(1, len(item_ids) + 1)
    return rank


def _renumber(found: pd.DataFrame) -> pd.DataFrame:
    """Series that kept at least two parts, numbered 0.. and with parts renumbered 0.."""
    sizes = found.groupby("franchise")["part"].transform("size")
    found = found[sizes >= 2].sort_values(["franchise", "part"]).copy()
    found["franchise"] = pd.factorize(found["franchise"], sort=True)[0].astype(np.int64)
    found["part"] = found.groupby("franchise").cumcount().astype(np.int64)
    return found


class _Sampler:
    """Cumulative tables for drawing items by genre x era cell and by popularity."""

    def __init__(self, world: WorldCatalog) -> None:
        n_genres, n_eras = world.genres.shape[1], len(world.era_names)
        self.n_eras = n_eras
        self.mass = np.zeros((n_genres, n_eras))
        members, cumulative = [], []
        for g in range(n_genres):
            for e in range(n_eras):
                cell = np.flatnonzero(world.genres[:, g] & (world.era == e))
                if len(cell) == 0:
                    continue
                weights = world.popularity[cell]
                self.mass[g, e] = weights.sum()
                fractions = np.cumsum(weights) / weights.sum()
                fractions[-1] = 1.0
                members.append(cell)
                cumulative.append(g * n_eras + e + fractions)
        self.cell_items = np.concatenate(members)
        self.cell_cum = np.concatenate(cumulative)
        self.pop_cum = np.cumsum(world.popularity)
        self.pop_cum[-1] = 1.0
        counts = world.genres.sum(axis=0).astype(np.float64)
        self.genre_share = counts / counts.sum()
        era_counts = np.bincount(world.era, minlength=n_eras).astype(np.float64)
        self.era_share = era_counts / era_counts.sum()

    def in_cell(self, rng: np.random.Generator, genre: np.ndarray, era: np.ndarray
                ) -> np.ndarray:
        """One item per event of the given genre and era, by popularity."""
        u = np.minimum(rng.random(len(genre)), _BELOW_ONE)
        index = np.searchsorted(self.cell_cum, genre * self.n_eras + era + u, side="right")
        return self.cell_items[index]

    def popular(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` items by popularity alone."""
        u = np.minimum(rng.random(n), _BELOW_ONE)
        return np.searchsorted(self.pop_cum, u, side="right")


def _dirichlet(rng: np.random.Generator, alpha: np.ndarray, n: int) -> np.ndarray:
    """``n`` Dirichlet draws through gamma variables (stable for tiny concentrations)."""
    draws = rng.standard_gamma(np.broadcast_to(alpha, (n, len(alpha))))
    draws = np.maximum(draws, 1e-300)
    return draws / draws.sum(axis=1, keepdims=True)


def _categorical_rows(rng: np.random.Generator, probabilities: np.ndarray,
                      rows: np.ndarray) -> np.ndarray:
    """For each entry of ``rows``, a category drawn from ``probabilities[row]``."""
    n_rows, k = probabilities.shape
    cumulative = np.cumsum(probabilities, axis=1)
    cumulative /= cumulative[:, -1:]
    flat = (cumulative + np.arange(n_rows)[:, None]).ravel()
    u = np.minimum(rng.random(len(rows)), _BELOW_ONE)
    index = np.searchsorted(flat, rows + u, side="right")
    return np.minimum(index - rows * k, k - 1)


class _EventDraw:
    """Draws the latent choices and the item of events (taste or popular)."""

    def __init__(self, rng: np.random.Generator, sampler: _Sampler, config: SynthConfig,
                 taste_start: np.ndarray, taste_end: np.ndarray, era_taste: np.ndarray) -> None:
        self.rng, self.sampler, self.config = rng, sampler, config
        self.tastes = np.empty((2 * len(taste_start), taste_start.shape[1]))
        self.tastes[0::2], self.tastes[1::2] = taste_start, taste_end
        self.era_taste = era_taste

    def __call__(self, user: np.ndarray, weight_end: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(kind, genre, era, item)`` of events of ``user`` whose taste mixes start and end
        with ``weight_end`` (the taste is a mixture: the end taste with that probability)."""
        rng, sampler = self.rng, self.sampler
        total = len(user)
        use_end = rng.random(total) < weight_end
        genre = _categorical_rows(rng, self.tastes, 2 * user + use_end)
        era = _categorical_rows(rng, self.era_taste[user] * sampler.mass[genre],
                                np.arange(total))
        kind = np.where(rng.random(total) < self.config.popular_share, KIND_POPULAR,
                        KIND_TASTE)
        popular = kind == KIND_POPULAR
        item = np.empty(total, dtype=np.int64)
        item[~popular] = sampler.in_cell(rng, genre[~popular], era[~popular])
        item[popular] = sampler.popular(rng, int(popular.sum()))
        genre[popular], era[popular] = -1, -1
        return kind, genre, era, item


def _fill_by_popularity(rng: np.random.Generator, world: WorldCatalog, user: np.ndarray,
                        item: np.ndarray, again: np.ndarray, starts: np.ndarray,
                        lengths: np.ndarray) -> int:
    """Give each event in ``again`` an item by popularity among the items its user does not
    have (exact, without replacement; in place). Returns the number of such events."""
    for u in np.unique(user[again]).tolist():
        rows = np.arange(starts[u], starts[u] + lengths[u])
        redo = rows[again[rows]]
        unseen = np.ones(len(world), dtype=bool)
        unseen[item[rows[~again[rows]]]] = False
        weights = world.popularity * unseen
        item[redo] = rng.choice(len(world), size=len(redo), replace=False,
                                p=weights / weights.sum())
    return int(again.sum())


def _repeats(user: np.ndarray, item: np.ndarray, n_items: int) -> np.ndarray:
    """Events whose item the same user already had earlier in the sequence."""
    keys = user * n_items + item
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    out = np.zeros(len(keys), dtype=bool)
    out[order[1:][sorted_keys[1:] == sorted_keys[:-1]]] = True
    return out


@dataclass
class Chunk:
    """The events and users of one chunk of users (arrays, before writing).

    Attributes:
        users: per user: ``user_id``, ``length``, tastes (see :func:`generate_chunk`).
        events: per event, in user then sequence order: ``user_id``, ``item_id``,
            ``timestamp``, ``order``, ``kind``, ``genre``, ``era``, ``franchise``,
            ``continued``.
        counts: ``repeats_filled_by_popularity`` (events still repeating after
            ``repeat_rounds`` redraws, drawn by popularity among the user's unseen items).
    """

    users: dict[str, np.ndarray]
    events: dict[str, np.ndarray]
    counts: dict[str, int]


def generate_chunk(world: WorldCatalog, sampler: _Sampler, config: SynthConfig,
                   chunk_index: int, length_mu: float) -> Chunk:
    """Generate users ``chunk_index * chunk_users + 1 ...`` (at most ``chunk_users``)."""
    first = chunk_index * config.chunk_users
    n = min(config.chunk_users, config.users - first)
    rng = _stream(config.seed, _CHUNK_STREAM, chunk_index)
    n_items = len(world)
    lengths = draw_lengths(rng, n, length_mu, config.length_sigma, config.min_len,
                           config.max_len)
    alpha_genre = config.genre_concentration * sampler.genre_share
    taste_start = _dirichlet(rng, alpha_genre, n)
    taste_end = ((1.0 - config.drift) * taste_start
                 + config.drift * _dirichlet(rng, alpha_genre, n))
    era_taste = _dirichlet(rng, config.era_concentration * sampler.era_share, n)

    total = int(lengths.sum())
    user = np.repeat(np.arange(n, dtype=np.int64), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    position = np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)
    draw = _EventDraw(rng, sampler, config, taste_start, taste_end, era_taste)
    kind, genre, era, item = draw(user, position / (lengths[user] - 1))
    again = _repeats(user, item, n_items)
    for _ in range(config.repeat_rounds):
        if not again.any():
            break
        redo = np.flatnonzero(again)
        kind[redo], genre[redo], era[redo], item[redo] = draw(
            user[redo], position[redo] / (lengths[user[redo]] - 1))
        affected = np.isin(user, np.unique(user[redo]))
        again = np.zeros(total, dtype=bool)
        again[affected] = _repeats(user[affected], item[affected], n_items)
    filled = _fill_by_popularity(rng, world, user, item, again, starts, lengths)
    kind[again], genre[again], era[again] = KIND_POPULAR, -1, -1

    continued = _continue_franchises(rng, world, config, user, item, kind, genre, era,
                                     position, lengths)
    timestamps = _timestamps(rng, config, user, position, lengths)
    user_ids = first + 1 + np.arange(n, dtype=np.int64)
    events = {
        "user_id": user_ids[user], "item_id": world.item_ids[item], "timestamp": timestamps,
        "order": position, "kind": kind.astype(np.int8), "genre": genre.astype(np.int16),
        "era": era.astype(np.int8), "franchise": world.franchise[item].astype(np.int32),
        "continued": continued,
    }
    ends = np.cumsum(lengths) - 1
    users = {
        "user_id": user_ids, "length": lengths,
        "first_timestamp": timestamps[starts], "last_timestamp": timestamps[ends],
        "taste_start": taste_start.astype(np.float32), "taste_end": taste_end.astype(np.float32),
        "era_taste": era_taste.astype(np.float32),
    }
    return Chunk(users=users, events=events, counts={"repeats_filled_by_popularity": filled})


def _continue_franchises(rng: np.random.Generator, world: WorldCatalog, config: SynthConfig,
                         user: np.ndarray, item: np.ndarray, kind: np.ndarray,
                         genre: np.ndarray, era: np.ndarray, position: np.ndarray,
                         lengths: np.ndarray) -> np.ndarray:
    """Replace events by the next part of a series just seen (in place); returns the mask of
    replaced (``continued``) events."""
    total = len(item)
    coin = rng.random(total) < config.continue_prob
    has_next_event = position < lengths[user] - 1
    continued = np.zeros(total, dtype=bool)
    candidates = np.flatnonzero((world.next_item[item] >= 0) & coin & has_next_event)
    if len(candidates) == 0:
        return continued
    n_items = len(world)
    next_item = world.next_item.tolist()
    items = item.tolist()
    users = user.tolist()
    coins = (coin & has_next_event).tolist()
    seen = set((user * n_items + item).tolist())
    done = -1
    for start in candidates.tolist():
        if start <= done:
            continue
        j = start
        while coins[j]:
            nxt = next_item[items[j]]
            key = users[j] * n_items + nxt
            if nxt < 0 or key in seen:
                break
            seen.discard(users[j] * n_items + items[j + 1])
            seen.add(key)
            items[j + 1] = nxt
            continued[j + 1] = True
            j += 1
            done = j
    item[:] = items
    kind[continued], genre[continued], era[continued] = KIND_FRANCHISE, -1, -1
    return continued


def _timestamps(rng: np.random.Generator, config: SynthConfig, user: np.ndarray,
                position: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Strictly increasing timestamps along each user's sequence, inside the time window."""
    total = len(user)
    window = config.end_time - config.start_time
    is_break = rng.random(total) < config.break_prob
    gaps = np.where(is_break, rng.exponential(config.break_gap, total),
                    rng.exponential(config.session_gap, total))
    gaps = np.maximum(1, np.rint(gaps)).astype(np.int64)
    gaps[position == 0] = 0
    span = np.bincount(user, weights=gaps, minlength=len(lengths)).astype(np.int64)
    steps = np.maximum(lengths - 1, 0)
    too_long = span > window
    if too_long.any():  # squeeze the gaps above 1 s so the user fits the window
        factor = np.ones(len(lengths))
        factor[too_long] = (window - steps[too_long]) / (span[too_long] - steps[too_long])
        squeezed = 1 + np.floor((gaps - 1) * factor[user]).astype(np.int64)
        gaps = np.where(position == 0, 0, squeezed)
        span = np.bincount(user, weights=gaps, minlength=len(lengths)).astype(np.int64)
    offsets = np.cumsum(gaps)
    offsets -= np.repeat(offsets[np.concatenate([[0], np.cumsum(lengths)[:-1]])], lengths)
    start = config.start_time + np.floor(
        rng.random(len(lengths)) * (window - span + 1)).astype(np.int64)
    return start[user] + offsets


def chunk_count(config: SynthConfig) -> int:
    """Number of chunks the config's users are generated in."""
    return math.ceil(config.users / config.chunk_users)


def length_mu(config: SynthConfig) -> float:
    """The log-scale ``mu`` of the config's length distribution."""
    return solve_length_mu(config.mean_length, config.length_sigma, config.min_len,
                           config.max_len)


ProgressFn = Callable[[int, int, int], None]
