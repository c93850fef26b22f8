"""The equalizer's model side: one run, one SAE, the sliders, and top-K lists per request.

:class:`EqualizerSession` holds the run (:class:`~mechrec_recsys.experiment.Experiment`), the
SAE, the sliders (:class:`~mechrec_recsys.equalizer.controls.Equalizer`) and a small cache per
user. :meth:`EqualizerSession.recommend` answers one request: a user's unsteered top-K and the
top-K with the sliders applied at the last position, with titles, genres, genre shares and the
items that entered or left the list.

Speed: for each user the session keeps (least recently used first out) the unsteered scores of
one full forward pass and a :class:`~mechrec.steering.LastPositionSteerer` holding the prefix's
keys and values, so moving a slider re-runs only the user's last position from the hook's
block on (the core's fast path). All sliders at 0 apply no edit at all and return the unsteered
scores themselves: exactly the model's own top-K.

Threads: the model, the steerers and the cache are used under one lock; input checks run
outside it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mechrec.saes import NormalizedSAE
from mechrec.steering import LastPositionSteerer
from mechrec.steering.fast import tensor_nbytes
from mechrec_recsys.equalizer.controls import (
    DEFAULT_MAX_VALUE,
    DEFAULT_PROBE_ROWS,
    METHODS,
    Equalizer,
    build_controls,
)
from mechrec_recsys.equalizer.errors import EqualizerInputError, UnknownUserError
from mechrec_recsys.equalizer.items import ItemTable, plain
from mechrec_recsys.experiment import Experiment
from mechrec_recsys.model import last_position_scores
from mechrec_recsys.saes import check_sae_fits

#: Default and largest list lengths a request may ask for.
DEFAULT_K = 10
MAX_K = 100
#: User ids offered by ``/api/meta`` for the picker.
N_EXAMPLE_USERS = 50
#: How many of the user's last items a response shows.
N_RECENT = 5
#: Longest user id (as text) a request may name; longer ones are malformed (HTTP 400).
MAX_USER_ID_CHARS = 64


@dataclass
class _UserState:
    """What the session keeps per user: history, unsteered scores and the prefix cache."""

    user_id: Any
    part: str
    history: np.ndarray
    original_scores: torch.Tensor  # (1, vocab)
    steerer: LastPositionSteerer


class EqualizerSession:
    """A run, an SAE and the genre sliders, ready to answer recommendation requests.

    Args:
        experiment: the run (model, split, catalog).
        sae: an SAE trained at one of the model's hooks.
        genres: slider genres (default: every genre of the catalog but ``unknown`` /
            ``(no genres listed)``).
        probes: fit logistic probes so the ``"probe"`` method is available.
        probe_rows: fit each probe on at most this many SAE-training rows drawn at random
            (``None``: every row).
        max_value: sliders accept values in ``[-max_value, max_value]`` (paper: 10).
        k: default list length.
        cache_users: how many users' prefix caches to keep.

    Raises:
        ValueError: the SAE does not fit the model, an unknown genre, or bad settings.
    """

    def __init__(
        self,
        experiment: Experiment,
        sae: NormalizedSAE,
        *,
        genres: Sequence[str] | None = None,
        probes: bool = True,
        probe_rows: int | None = DEFAULT_PROBE_ROWS,
        max_value: float = DEFAULT_MAX_VALUE,
        k: int = DEFAULT_K,
        cache_users: int = 256,
    ) -> None:
        _check_k(k, MAX_K, "k")
        if int(cache_users) < 1:
            raise ValueError(f"cache_users must be >= 1, got {cache_users}")
        check_sae_fits(experiment, sae)
        self.experiment = experiment
        self.sae = sae
        controls, self.notes = build_controls(experiment, sae, genres, probes=probes,
                                              probe_rows=probe_rows)
        self.equalizer = Equalizer(sae, controls, max_value)
        self.items = ItemTable(experiment)
        self.max_k = min(MAX_K, self.items.size - 1)
        self.k = _check_k(k, self.max_k, "k")
        self._users = experiment.user_index()
        self._cache: OrderedDict[tuple[str, int], _UserState] = OrderedDict()
        self._cache_size = int(cache_users)
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        run_dir: str | os.PathLike,
        sae: str | os.PathLike,
        *,
        data_dir: str | os.PathLike | None = None,
        download: bool = True,
        device: str = "cpu",
        allow_other_model: bool = False,
        sae_hook: str | None = None,
        **options: Any,
    ) -> EqualizerSession:
        """Open a ``mechrec train`` run folder and an SAE (a folder, or a name under
        ``RUN_DIR/saes``); ``options`` go to the constructor. An SAE recording another model
        as its source is refused unless ``allow_other_model``; ``sae_hook`` names the hook of
        an SAE that records none (plain sae-lens, sparsify, dictionary_learning).

        Raises:
            FileNotFoundError: no such run folder, model or SAE folder.
            ValueError: the SAE does not fit the run's model, or bad options.
        """
        experiment = Experiment.open(run_dir, data_dir=data_dir, download=download,
                                     device=device)
        nsae = experiment.sae(sae, allow_other_model=allow_other_model, hook_name=sae_hook)
        return cls(experiment, nsae, **options)

    # ------------------------------------------------------------------------------ metadata
    def meta(self) -> dict[str, Any]:
        """What the page needs to draw itself: sliders, range, methods, example users."""
        spec = self.experiment.spec
        test_users = [u for u, (part, _) in self._users.items() if part == "test"]
        examples = (test_users or list(self._users))[:N_EXAMPLE_USERS]
        max_value = self.equalizer.max_value
        return {
            "run": {"dataset": spec.dataset, "split": spec.split, "seed": spec.seed},
            "hook_name": self.equalizer.hook_name,
            "sae": {"d_in": int(self.sae.d_in), "d_sae": int(self.sae.d_sae),
                    "architecture": getattr(self.sae, "architecture", None)},
            "genres": self.equalizer.describe(),
            "range": {"min": -max_value, "max": max_value, "step": max_value / 20},
            "methods": list(METHODS),
            "probes": self.equalizer.probes_available,
            "k": self.k,
            "max_k": self.max_k,
            "users": {"count": len(self._users),
                      "examples": [self._plain_id(u) for u in examples],
                      **self._dropped_users()},
            "notes": list(self.notes),
        }

    def _dropped_users(self) -> dict[str, Any]:
        """``total`` (the dataset's users) and ``dropped_note`` (how many of them the split
        dropped, and why), from the split's bookkeeping; empty when it has none."""
        info = self.experiment.split.info
        total = info.get("users_total")
        if total is None:
            return {}
        dropped = int(total) - len(self._users)
        reasons = [f"{info[key]:,} {label}" for key, label in (
            ("users_dropped_short", f"with fewer than {info.get('min_interactions', 2)} "
                                    "interactions"),
            ("test_targets_unseen_dropped", "test users whose held-out item is never seen in "
                                            "training"),
            ("validation_targets_unseen_dropped", "validation users whose held-out item is "
                                                  "never seen in training"))
            if info.get(key)]
        note = (f"{dropped:,} of the dataset's {int(total):,} users were dropped by the split"
                + (f" ({'; '.join(reasons)})" if reasons else "")) if dropped > 0 else ""
        return {"total": int(total), "dropped": max(dropped, 0), "dropped_note": note}

    # ------------------------------------------------------------------------------ requests
    def recommend(
        self,
        user: Any,
        values: Mapping[str, Any] | None = None,
        *,
        k: int | None = None,
        method: str = "sae",
    ) -> dict[str, Any]:
        """One user's unsteered and steered top-``k`` under the slider ``values``.

        Args:
            user: a raw user id (number or string; test users are searched first).
            values: ``{genre: value}``; genres left out are at 0.
            k: list length (default: the session's).
            method: ``"sae"`` (shift SAE features) or ``"probe"`` (add probe directions).

        Returns:
            A JSON-ready dict: ``user, part, history_length, recent, method, k, values``
            (the non-zero sliders), ``edits``, ``original`` and ``steered`` (items with
            ``rank, item_id, title, year, genres``, plus ``left`` / ``new`` flags),
            ``shares`` (``original`` and ``steered``: share of each slider genre),
            ``entered`` and ``left`` (item ids), ``changed``.

        Raises:
            UnknownUserError: no sequence of the run belongs to ``user``.
            EqualizerInputError: a bad value, genre, ``k`` or method.
        """
        k = self.k if k is None else _check_k(k, self.max_k, "k", error=EqualizerInputError)
        if not isinstance(method, str) or method not in METHODS:
            raise EqualizerInputError(
                f"unknown method {method!r}; choose {' or '.join(repr(m) for m in METHODS)}"
            )
        active = self.equalizer.parse_values(values)
        state, _, steered_scores = self._scores(user, active, method)
        top = self.experiment.top_k_from_last_scores
        original = top(state.original_scores, [state.history], k)[0]
        steered = top(steered_scores, [state.history], k)[0]
        return self._response(state, method, k, active, original, steered)

    def scores(
        self, user: Any, values: Mapping[str, Any] | None = None, *, method: str = "sae"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One user's unsteered and steered next-item scores under the slider ``values``.

        The numbers :meth:`recommend` ranks (before excluding the history), from the same cache:
        ``(original, steered)``, each ``(1, vocab)``. With every slider at 0 both are the
        unsteered scores. Treat them as read-only: the unsteered ones are the cached tensor.

        Raises:
            UnknownUserError: no sequence of the run belongs to ``user``.
            EqualizerInputError: a bad value, genre or method.
        """
        if not isinstance(method, str) or method not in METHODS:
            raise EqualizerInputError(
                f"unknown method {method!r}; choose {' or '.join(repr(m) for m in METHODS)}"
            )
        _, original, steered = self._scores(user, self.equalizer.parse_values(values), method)
        return original, steered

    def cache_nbytes(self, user: Any) -> int:
        """Bytes of tensor storage the session's cache holds for ``user`` (unsteered scores,
        the prefix's keys/values, mask and last-position residual), each storage counted once;
        0 if the user is not cached.

        Raises:
            UnknownUserError: no sequence of the run belongs to ``user``.
            EqualizerInputError: ``user`` is not a user id.
        """
        location = self._locate(user)
        with self._lock:
            state = self._cache.get(location)
            if state is None:
                return 0
            return tensor_nbytes([state.original_scores]) + state.steerer.nbytes()

    def user_ids(self) -> list[Any]:
        """Every user id of the run (as the run stores it: numbers for integer ids), in the
        run's order (test users first)."""
        return [self._plain_id(key) for key in self._users]

    def _scores(self, user: Any, active: dict[str, float],
                method: str) -> tuple[_UserState, torch.Tensor, torch.Tensor]:
        """The user's cached state, unsteered and steered scores for parsed slider values."""
        edits = self.equalizer.edits(active, method)
        location = self._locate(user)
        with self._lock:
            state = self._state(location)
            steered_scores = state.steerer.run([edits])[0] if edits else state.original_scores
        if not bool(torch.isfinite(steered_scores).all()):
            raise EqualizerInputError(
                f"the slider values {dict(active)} make the model's scores NaN or infinite: "
                "use smaller values (restart the server with a smaller --max-value)"
            )
        return state, state.original_scores, steered_scores

    def _response(self, state: _UserState, method: str, k: int, active: dict[str, float],
                  original: np.ndarray, steered: np.ndarray) -> dict[str, Any]:
        items = self.items
        before = [int(t) for t in original if int(t) != 0]
        after = [int(t) for t in steered if int(t) != 0]
        before_set, after_set = set(before), set(after)
        entered = [t for t in after if t not in before_set]
        left = [t for t in before if t not in after_set]
        original_items = items.describe(before)
        for item, token in zip(original_items, before, strict=True):
            item["left"] = token in left
        steered_items = items.describe(after)
        for item, token in zip(steered_items, after, strict=True):
            item["new"] = token in entered
        genres = self.equalizer.genres
        edits = []
        for genre, value in active.items():
            feature = self.equalizer.controls[genre].feature
            edits.append({"genre": genre, "value": value,
                          "steers": f"feature:{feature}" if method == "sae" else f"probe:{genre}"})
        recent = [int(t) for t in state.history[-N_RECENT:][::-1]]
        return {
            "user": state.user_id,
            "part": state.part,
            "history_length": len(state.history),
            "recent": items.describe(recent),
            "method": method,
            "k": k,
            "values": dict(active),
            "edits": edits,
            "original": original_items,
            "steered": steered_items,
            "shares": {"original": items.shares(before, genres),
                       "steered": items.shares(after, genres)},
            "entered": [items.item_id(t) for t in entered],
            "left": [items.item_id(t) for t in left],
            "changed": before != after,
        }

    # ------------------------------------------------------------------------------ users
    def _locate(self, user: Any) -> tuple[str, int]:
        """``(part, row)`` of a requested user id (:meth:`Experiment.find_user`), or a
        404-style error."""
        if isinstance(user, bool) or user is None or not isinstance(user, int | str | float):
            raise EqualizerInputError(
                f"'user' must be a user id (a number or a string), got {user!r}"
            )
        if isinstance(user, float):
            if not user.is_integer():
                raise UnknownUserError(f"unknown user {user!r}: user ids are whole numbers")
            user = int(user)
        text = str(user) if not isinstance(user, int) or user.bit_length() < 256 else None
        if text is None or len(text.strip()) > MAX_USER_ID_CHARS:
            raise EqualizerInputError(
                f"'user' is too long to be a user id (at most {MAX_USER_ID_CHARS} characters): "
                "send the raw id of a user of the run, e.g. 1"
            )
        try:
            return self.experiment.find_user(user)
        except ValueError as exc:
            raise UnknownUserError(str(exc)) from None

    def _plain_id(self, key: str) -> Any:
        """A user id as the run stores it (a number for integer ids), for JSON."""
        part, row = self._users[key]
        return plain(self.experiment.part(part).users[row])

    def _state(self, location: tuple[str, int]) -> _UserState:
        """The cached state of the user at ``(part, row)``, built on first use (call with the
        lock held)."""
        state = self._cache.get(location)
        if state is not None:
            self._cache.move_to_end(location)
            return state
        part, index = location
        sequences = self.experiment.part(part)
        history = np.asarray(sequences.sequences[index], dtype=np.int64)
        model = self.experiment.model
        device = next(model.parameters()).device
        window = history[-model.cfg.n_ctx:]
        tokens = torch.as_tensor(window, dtype=torch.long, device=device)[None, :]
        with torch.no_grad():
            scores = last_position_scores(model, tokens, None).detach()
        steerer = LastPositionSteerer(model, tokens, None, self.equalizer.hook_name)
        state = _UserState(user_id=plain(sequences.users[index]), part=part, history=history,
                           original_scores=scores, steerer=steerer)
        self._cache[location] = state
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return state


def _check_k(k: Any, largest: int, what: str,
             error: type[ValueError] = ValueError) -> int:
    """``k`` as an int in ``1..largest``."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise error(f"{what} must be a whole number, got {k!r}")
    if not 1 <= int(k) <= largest:
        raise error(f"{what} must be between 1 and {largest}, got {k}")
    return int(k)
