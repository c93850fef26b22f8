"""An experiment: one dataset split plus the GPTRec model trained on it.

Every analysis of the paper (SAE training and Table 1, attribute alignment, steering sweeps)
starts from the same three things: the split's user sequences, the trained model, and the
item attributes aligned with model tokens. :class:`Experiment` holds them, rebuilds the split
exactly as it was at training time (the run's ``run.json`` records how), batches any part of
the split, collects activations at any hook, and scores any top-K lists on the test users.

It is a :class:`mechrec.study.Study`: row sets are split parts, a token's attributes are its
item's genres and decade (:meth:`Experiment.attribute_table`), and a bootstrap group is a user
(:meth:`Experiment.row_groups`), so the core's recipes (``mechrec.alignment.align``, ...) run
on it directly.

Run folder layout (written by ``mechrec train``)::

    run_dir/run.json        how the split and model were made (RunSpec)
    run_dir/model/          the best GPTRec checkpoint (safetensors + JSON)
    run_dir/metrics.json    GPTRec vs popularity on the test users
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformer_lens import HookedTransformer

from mechrec.activations import ActivationSet, collect_activations
from mechrec_recsys.checkpoint import RUN_STATE_JSON, atomic_write_json, load_checkpoint, read_json
from mechrec_recsys.data import Dataset, Split, load_dataset
from mechrec_recsys.data.splits import make_split
from mechrec_recsys.metrics import (
    attribute_share_at_k,
    coverage_at_k,
    diversity_at_k,
    hit_rate_at_k,
    mrr_at_k,
    ndcg_at_k,
    recommend_top_k,
    top_k_excluding,
)
from mechrec_recsys.sequences import SequenceSet, iter_batches
from mechrec_recsys.training import data_fingerprint

RUN_SPEC_FILE = "run.json"
MODEL_DIR = "model"
RUN_SPEC_FORMAT = "mechrec.run_spec/1"
#: Splits ask for whole histories; the model reads only the last ``n_ctx`` items of each.
FULL_HISTORY = 10**9
PARTS = ("train", "validation", "sae_train", "test")
#: Parts searched for a user id by :meth:`Experiment.find_user`, first match wins (test users,
#: the ones with held-out targets, first).
USER_PARTS: tuple[str, ...] = ("test", "validation", "sae_train", "train")


@dataclass(frozen=True)
class RunSpec:
    """How a run's split was made, so later analyses rebuild exactly the same users.

    Attributes:
        dataset: dataset name for :func:`mechrec_recsys.data.load_dataset` (e.g. ``ml-100k``).
        split: ``paper`` | ``loo`` | ``random``.
        seed: seed of the split (and of the model's initialisation and training).
    """

    dataset: str
    split: str = "paper"
    seed: int = 0

    def save(self, run_dir: str | Path) -> Path:
        """Write ``run_dir/run.json`` atomically."""
        path = Path(run_dir) / RUN_SPEC_FILE
        atomic_write_json(path, {"format": RUN_SPEC_FORMAT, **asdict(self)})
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> RunSpec:
        """Read ``run_dir/run.json``; a missing or malformed file is a clear error."""
        path = Path(run_dir) / RUN_SPEC_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {run_dir} is not a mechrec run folder; create one with "
                "'mechrec train DATASET --split paper --out RUN_DIR'"
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{path}: line {exc.lineno}, column {exc.colno}: invalid JSON ({exc.msg})"
            ) from None
        if not isinstance(data, dict) or data.get("format") != RUN_SPEC_FORMAT:
            raise ValueError(f"{path}: not a mechrec run spec (expected format {RUN_SPEC_FORMAT})")
        try:
            return cls(dataset=str(data["dataset"]), split=str(data["split"]),
                       seed=int(data["seed"]))
        except KeyError as exc:
            raise ValueError(f"{path}: missing key {exc.args[0]!r}") from None


def check_training_data(run_dir: str | Path, split: Split) -> None:
    """Refuse a rebuilt split whose training sequences differ from the run's training data.

    ``mechrec train`` saves the fingerprint of its training sequences with the training
    state (``train_state.json``, ``data_sha256``). Reopening a run compares it with the split
    rebuilt from today's data, so an edited, truncated or re-downloaded ratings file that
    keeps the same items is caught instead of pairing the model with other users' histories.
    Runs without a training state (or an older one without the fingerprint) are not checked.

    Raises:
        ValueError: the fingerprints differ; the message names the run and the fix.
    """
    path = Path(run_dir) / RUN_STATE_JSON
    if not path.is_file():
        return
    info = read_json(path)
    recorded = info.get("data_sha256") if isinstance(info, dict) else None
    if not isinstance(recorded, str):
        return
    current = data_fingerprint(split.vocab,
                               [np.asarray(s, dtype=np.int64) for s in split.train.sequences])
    if current != recorded:
        raise ValueError(
            f"the data no longer matches the run in {run_dir}: its training sequences differ "
            f"from those the model was trained on (fingerprint {current[:12]}..., recorded "
            f"{recorded[:12]}... in {path.name}), although the items are the same; use the "
            "dataset files the run was trained on (--data-dir), or train a new run on this data"
        )


def decade_label(year: float) -> str:
    """``1994 -> "decade=1990s"``."""
    return f"decade={int(year) // 10 * 10}s"


@dataclass
class Experiment:
    """A dataset split with the GPTRec model trained on it.

    Attributes:
        spec: how the split was made.
        dataset: the loaded dataset (interactions and catalog).
        split: the split's parts as :class:`SequenceSet` over ``split.vocab``.
        model: the trained GPTRec ``HookedTransformer`` (eval mode).
        batch_size: sequences per forward pass.
    """

    spec: RunSpec
    dataset: Dataset
    split: Split
    model: HookedTransformer
    batch_size: int = 256
    run_dir: Path | None = None
    _activations: dict[tuple[str, str], ActivationSet] = field(default_factory=dict, repr=False)
    _user_index: dict[str, tuple[str, int]] | None = field(default=None, repr=False)

    # ---------------------------------------------------------------------------- building
    @classmethod
    def open(
        cls,
        run_dir: str | Path,
        *,
        data_dir: str | Path | None = None,
        download: bool = True,
        device: str = "cpu",
        batch_size: int = 256,
    ) -> Experiment:
        """The one way to open a ``mechrec train`` run: rebuild its split exactly and load its
        best model (then :meth:`sae` opens its SAEs).

        Raises:
            FileNotFoundError: the folder does not exist, is not a run (no ``run.json``) or
                has no trained model yet (``model/`` is written when training ends).
            ValueError: the data now gives other training sequences than the model was
                trained on (see :func:`check_training_data`), or the vocabulary differs.
        """
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise FileNotFoundError(
                f"run folder {run_dir} does not exist: pass the --out folder of 'mechrec train'")
        spec = RunSpec.load(run_dir)
        if not (run_dir / MODEL_DIR).is_dir():
            raise FileNotFoundError(
                f"{run_dir} has no trained model yet ({run_dir / MODEL_DIR} is missing): let "
                "'mechrec train' finish (rerun the same command to resume it)")
        dataset = load_dataset(spec.dataset, data_dir, download=download)
        split = make_split(dataset, spec.split, seed=spec.seed, max_len=FULL_HISTORY)
        check_training_data(run_dir, split)
        checkpoint = load_checkpoint(run_dir / MODEL_DIR, device=device,
                                     expected_vocab=split.vocab)
        return cls(spec=spec, dataset=dataset, split=split, model=checkpoint.model,
                   batch_size=batch_size, run_dir=run_dir)

    def sample_users(self, max_users: int, *, parts: Sequence[str] = ("validation", "sae_train",
                                                                       "test"),
                     seed: int = 0) -> Experiment:
        """This run with each of ``parts`` cut to at most ``max_users`` users drawn at random
        (seeded; users keep their order), for analyses of data too large to hold whole.

        The model, the vocabulary and the other parts are shared; activations are collected
        afresh. ``split.info["sampled_users"]`` records ``{part: (kept, of)}``.

        Raises:
            ValueError: ``max_users`` below 1, or an unknown part.
        """
        if isinstance(max_users, bool) or not isinstance(max_users, int | np.integer) \
                or max_users < 1:
            raise ValueError(f"max_users must be a positive whole number, got {max_users!r}")
        rng = np.random.default_rng(seed)
        changes: dict[str, SequenceSet] = {}
        sampled: dict[str, tuple[int, int]] = {}
        for name in parts:
            if name not in PARTS:
                raise ValueError(f"unknown split part {name!r}; choose from {', '.join(PARTS)}")
            part = getattr(self.split, name)
            if part is None or len(part) <= max_users:
                continue
            keep = np.sort(rng.choice(len(part), size=int(max_users), replace=False))
            changes[name] = part.subset(keep)
            sampled[name] = (int(max_users), len(part))
        if not changes:
            return self
        info = {**self.split.info, "sampled_users": {**self.split.info.get("sampled_users", {}),
                                                     **sampled}}
        split = replace(self.split, **changes, info=info)
        return Experiment(spec=self.spec, dataset=self.dataset, split=split, model=self.model,
                          batch_size=self.batch_size, run_dir=self.run_dir)

    def sae(self, sae: str | Path, *, allow_other_model: bool = False,
            hook_name: str | None = None) -> Any:
        """An SAE of this run: a folder, or a name under ``RUN_DIR/saes/``; loaded on the
        model's device with its file hashes checked, and checked to fit the model (hook and
        width always, the recorded source model unless ``allow_other_model``).

        Plain sae-lens folders and other libraries' checkpoints (sparsify folders,
        dictionary_learning ``ae.pt``) are opened too (:meth:`NormalizedSAE.load`);
        ``hook_name`` names the hook of one that does not record it.

        Raises:
            FileNotFoundError: no such SAE (the message lists the run's SAEs).
            ValueError: the SAE does not fit this run's model.
        """
        from mechrec_recsys.saes import load_run_sae, resolve_sae_directory

        if self.run_dir is None and not Path(sae).exists():
            raise FileNotFoundError(
                f"SAE {str(sae)!r} not found: this experiment was not opened from a run folder, "
                "so give the SAE's folder")
        directory = (Path(sae) if self.run_dir is None
                     else resolve_sae_directory(self.run_dir, sae))
        device = str(next(self.model.parameters()).device)
        return load_run_sae(self, directory, device=device,
                            allow_other_model=allow_other_model, hook_name=hook_name)

    # ---------------------------------------------------------------------------- data
    @property
    def vocab(self):
        """The item vocabulary shared by the split and the model."""
        return self.split.vocab

    def part(self, name: str) -> SequenceSet:
        """One part of the split: ``train``, ``validation``, ``sae_train`` or ``test``."""
        if name not in PARTS:
            raise ValueError(f"unknown split part {name!r}; choose one of {', '.join(PARTS)}")
        value = getattr(self.split, name)
        if value is None:
            raise ValueError(
                f"the {self.spec.split!r} split has no {name!r} part"
                + ("; SAE users exist only in the paper and random splits"
                   if name == "sae_train" else "")
            )
        return value

    # ---------------------------------------------------------------------------- users
    @property
    def user_parts(self) -> list[str]:
        """The parts :meth:`find_user` searches, in order (those this split has)."""
        return [p for p in USER_PARTS if getattr(self.split, p) is not None]

    def user_index(self) -> Mapping[str, tuple[str, int]]:
        """Read-only ``{user key: (part, row)}`` of every user of the split (built once).

        Keys are :meth:`user_key` of the stored ids. A user in several parts maps to the first
        of :data:`USER_PARTS` (test users first); users keep their order within a part, and
        parts follow :data:`USER_PARTS`.
        """
        if self._user_index is None:
            index: dict[str, tuple[str, int]] = {}
            for part in self.user_parts:
                for row, user in enumerate(self.part(part).users.tolist()):
                    index.setdefault(self.user_key(user), (part, row))
            self._user_index = index
        return MappingProxyType(self._user_index)

    @staticmethod
    def user_key(user: Any) -> str:
        """The lookup key of a user id: its text, stripped; whole floats (``5.0``, numpy
        scalars included) count as the integer (``"5"``)."""
        if isinstance(user, np.generic):
            user = user.item()
        if isinstance(user, float) and user.is_integer():
            user = int(user)
        return str(user).strip()

    def find_user(self, user: Any) -> tuple[str, int]:
        """Where a raw user id's sequence is: ``(part, row)`` with ``part`` one of
        :data:`USER_PARTS` (test users are searched first) and ``row`` its index there.

        ``user`` may be the stored id or its text (``"42"`` finds user ``42``, and a text
        with leading zeros or a sign such as ``"042"`` finds it when no id is ``"042"``).
        Lookups use an index built on first use (:meth:`user_index`).

        Raises:
            ValueError: no sequence of the split belongs to ``user``; the message names the
                parts searched and some user ids.
        """
        index = self.user_index()
        key = self.user_key(user)
        found = index.get(key)
        if found is None and re.fullmatch(r"[+-]?\d+", key):
            found = index.get(str(int(key)))
        if found is not None:
            return found
        examples = ", ".join(list(index)[:5])
        raise ValueError(
            f"unknown user {user!r}: no sequence of this run belongs to that user id "
            f"(searched the {', '.join(self.user_parts)} users; user ids include {examples})"
        )

    def batches(self, name: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Left-padded ``(tokens, attention_mask)`` batches of a part, truncated to the model's
        context; for ``test`` and ``validation`` these are the inputs (targets held out)."""
        device = next(self.model.parameters()).device
        for tokens, mask in iter_batches(self.part(name).sequences, self.batch_size,
                                         self.model.cfg.n_ctx):
            yield tokens.to(device), mask.to(device)

    def n_batches(self, name: str) -> int:
        """How many batches :meth:`batches` yields for a part."""
        return -(-len(self.part(name)) // self.batch_size)

    def activations(self, name: str, hook_name: str, *,
                    progress: Callable[[int, int], None] | None = None) -> ActivationSet:
        """Activations at ``hook_name`` for every real position of a part (cached).

        ``progress(batches_done, batches_total)`` is called after every batch when they are
        collected (not when they come from the cache)."""
        key = (name, hook_name)
        if key not in self._activations:
            total = self.n_batches(name)
            report = (None if progress is None
                      else lambda done, _rows: progress(done, total))
            with torch.no_grad():
                collected = collect_activations(self.model, self.batches(name), hook_name,
                                                progress=report)
            if not isinstance(collected, ActivationSet):  # pragma: no cover - no budget given
                collected = collected.load()
            self._activations[key] = collected
        return self._activations[key]

    # ---------------------------------------------------------------------------- attributes
    @property
    def genre_names(self) -> list[str]:
        """Genres of the catalog, in catalog order."""
        return list(self.dataset.catalog.genre_names)

    def token_attributes(
        self, names: list[str] | None = None, *, decades: bool = False
    ) -> tuple[np.ndarray, list[str]]:
        """Attributes aligned with tokens: ``((vocab.size, A) float32, names)``.

        Args:
            names: catalog attribute names (default: every genre).
            decades: also add one-hot release decades (``decade=1990s``, ...) from the year.
        """
        names = self.genre_names if names is None else list(names)
        matrix = self.dataset.catalog.attribute_matrix(self.vocab, names)
        if not decades:
            return matrix, names
        years = self.dataset.catalog.items["year"].reindex(self.vocab.item_ids)
        known = years.notna().to_numpy()
        labels = np.array([decade_label(y) if ok else "" for y, ok in zip(years, known,
                                                                          strict=True)])
        decade_names = sorted(set(labels[known]))
        extra = np.zeros((self.vocab.size, len(decade_names)), dtype=np.float32)
        for column, label in enumerate(decade_names):
            extra[1:, column] = labels == label
        return np.concatenate([matrix, extra], axis=1), names + decade_names

    def attribute_table(
        self,
        names: Sequence[str] | None = None,
        *,
        decades: bool = True,
        predicates: Mapping[str, Any] | None = None,
    ) -> tuple[pd.DataFrame, pd.Series]:
        """The :class:`mechrec.study.Study` token attribute table: genres (or ``names``),
        release decades and custom item predicates per token, with each attribute's group.

        See :func:`mechrec_recsys.items.token_attribute_table`.
        """
        from mechrec_recsys.items import token_attribute_table

        return token_attribute_table(self, names=names, decades=decades, predicates=predicates)

    def row_groups(self, name: str) -> np.ndarray:
        """The :class:`mechrec.study.Study` row groups: the user of each sequence of a part
        (a bootstrap over rows resamples whole users)."""
        return np.asarray(self.part(name).users)

    # ---------------------------------------------------------------------------- evaluation
    def train_items(self) -> np.ndarray:
        """Distinct item tokens of the recommender-training sequences (for coverage)."""
        return np.unique(np.concatenate(self.part("train").sequences))

    def top_k_from_last_scores(
        self, scores: torch.Tensor, sequences: list[np.ndarray], k: int = 10,
        *, exclude_seen: bool = True,
    ) -> np.ndarray:
        """Top-``k`` tokens from last-position scores, masking padding and seen items
        (:func:`mechrec_recsys.metrics.top_k_excluding`)."""
        return top_k_excluding(scores.float(), sequences if exclude_seen else None, k)

    def recommend(self, name: str = "test", k: int = 10, *, exclude_seen: bool = True
                  ) -> np.ndarray:
        """Top-``k`` tokens for every sequence of a part, with the model as it is (hooks
        attached to it apply; :func:`mechrec_recsys.metrics.recommend_top_k`)."""
        return recommend_top_k(self.model, self.part(name).sequences, k,
                               exclude_seen=exclude_seen, batch_size=self.batch_size)

    def evaluate_top_k(
        self, top_k: np.ndarray, *, k: int = 10, attributes: tuple[np.ndarray, list[str]]
        | None = None,
    ) -> dict[str, Any]:
        """Ranking and beyond-accuracy metrics of top-K lists for the test users.

        Returns a flat dict: ``ndcg``, ``ndcg_se``, ``hit_rate``, ``hit_rate_se``, ``mrr``,
        ``coverage``, ``diversity`` and ``share:<attribute>`` for every attribute given
        (default: every genre).
        """
        targets = self.part("test").targets
        out: dict[str, Any] = {}
        for metric, values in (("ndcg", ndcg_at_k(top_k, targets, k)),
                               ("hit_rate", hit_rate_at_k(top_k, targets, k)),
                               ("mrr", mrr_at_k(top_k, targets, k))):
            out[metric] = float(values.mean())
            out[f"{metric}_se"] = (float(values.std(ddof=1) / np.sqrt(values.size))
                                   if values.size > 1 else float("nan"))
        out["coverage"] = coverage_at_k(top_k, self.train_items(), k)
        out["diversity"] = diversity_at_k(top_k, k)
        matrix, names = attributes if attributes is not None else self.token_attributes()
        shares = np.nanmean(attribute_share_at_k(top_k, matrix, k), axis=0)
        for name, share in zip(names, shares, strict=True):
            out[f"share:{name}"] = float(share)
        return out
