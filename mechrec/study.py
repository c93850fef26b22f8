"""The seam the core recipes are written against: a model plus named sets of token rows.

A :class:`Study` is what alignment (:func:`mechrec.alignment.align`) and attribute steering
(:func:`mechrec.steering.attribute_sweep`) need, and nothing about any application:

- ``model``: a TransformerLens ``HookedTransformer``;
- ``batches(rows)``: the ``(tokens, attention_mask)`` batches of a named row set (e.g. the rows
  that choose features and the rows that score them), in a fixed order; the ``i``-th sequence
  of that stream has row id ``i``;
- ``activations(rows, hook_name)``: the activations at a hook for every real position of those
  rows (an :class:`~mechrec.activations.ActivationSet`, whose ``sequence_index`` is the row id);
- ``attribute_table()``: a ``(d_vocab, A)`` 0/1 table of token attributes (one row per token
  id, one column per attribute) and the group of each attribute;
- ``row_groups(rows)``: one group label per sequence of a row set (the unit a bootstrap
  resamples: a user, a document, ...).

A recommender's ``Experiment`` implements it (rows: split parts, groups: users). For any other
model, :class:`TokenStudy` wraps a model, token tensors per row set and a token attribute table
in one line::

    study = TokenStudy(model, {"fit": fit_tokens, "eval": eval_tokens}, attributes)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from transformer_lens import HookedTransformer

    from mechrec.activations import ActivationSet

__all__ = ["RowAttributes", "Study", "TokenStudy", "check_attribute_table", "check_study"]

Batch = tuple["torch.Tensor", "torch.Tensor | None"]
"""``(tokens, attention_mask)``: ``(B, T)`` integer tensors; the mask is 1 on real positions."""


@runtime_checkable
class Study(Protocol):
    """A model and named row sets over its tokens (see the module docstring)."""

    model: HookedTransformer

    def batches(self, rows: str) -> Iterable[Batch]:
        """``(tokens, attention_mask)`` batches of row set ``rows``, in a fixed order."""
        ...

    def activations(self, rows: str, hook_name: str) -> ActivationSet:
        """Activations at ``hook_name`` for every real position of ``rows``."""
        ...

    def attribute_table(self) -> tuple[pd.DataFrame, pd.Series]:
        """``(table, groups)``: ``(d_vocab, A)`` float32 0/1 token attributes indexed by token
        id, and attribute -> group name."""
        ...

    def row_groups(self, rows: str) -> np.ndarray:
        """One group label per sequence of ``rows`` (what a bootstrap resamples)."""
        ...


def check_study(study: Any) -> Study:
    """Return ``study`` if it offers everything :class:`Study` names; otherwise raise a
    ``TypeError`` that lists what is missing."""
    missing = [name for name in ("model", "batches", "activations", "attribute_table",
                                 "row_groups") if not hasattr(study, name)]
    if missing:
        raise TypeError(
            f"{type(study).__name__} is not a Study: it lacks {', '.join(missing)}. Wrap a "
            "HookedTransformer and its token batches with mechrec.study.TokenStudy(model, "
            "{'select': tokens_a, 'score': tokens_b}, attribute_table)")
    return study


def check_attribute_table(table: Any, groups: Any, d_vocab: int) -> tuple[pd.DataFrame,
                                                                           pd.Series]:
    """Validate a token attribute table and its groups; return them as float32 / str.

    Args:
        table: ``(d_vocab, A)`` table, one row per token id (a DataFrame, or an array with
            attribute names given by ``groups``' index).
        groups: attribute -> group (a Series, a mapping, or ``None``: every attribute in group
            ``"attribute"``).
        d_vocab: the model's vocabulary size.

    Raises:
        ValueError: wrong shape, non-0/1 values, unnamed or duplicate attributes, groups that
            do not cover the attributes.
    """
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"the attribute table must be a pandas DataFrame with one row per "
                         f"token id and one column per attribute, got {type(table).__name__}")
    if table.shape[0] != d_vocab:
        raise ValueError(f"the attribute table has {table.shape[0]} rows but the model has "
                         f"d_vocab={d_vocab} tokens: give one row per token id 0..{d_vocab - 1}")
    if table.shape[1] == 0:
        raise ValueError("the attribute table has no columns: give at least one attribute")
    names = [str(c) for c in table.columns]
    if len(set(names)) != len(names):
        repeated = sorted(n for n in set(names) if names.count(n) > 1)
        raise ValueError(f"attribute names repeat: {repeated}; give each attribute one column")
    values = table.to_numpy(dtype=np.float32, na_value=np.nan)
    if np.isnan(values).any() or not np.isin(values, (0.0, 1.0)).all():
        raise ValueError("the attribute table must hold only 0/1 (or booleans); convert "
                         "graded attributes to thresholds first")
    out = pd.DataFrame(values, columns=names, index=pd.RangeIndex(d_vocab, name="token"))
    if groups is None:
        series = pd.Series("attribute", index=names)
    else:
        series = pd.Series(groups if isinstance(groups, Mapping) else groups.to_dict()
                           if isinstance(groups, pd.Series) else groups)
        series.index = series.index.map(str)
        missing = [n for n in names if n not in series.index]
        if missing:
            raise ValueError(f"the attribute groups name no group for {missing}: give every "
                             "attribute a group")
        series = series.reindex(names).astype(str)
    series.index.name = "attribute"
    series.name = "group"
    return out, series


@dataclass(frozen=True)
class RowAttributes:
    """Attributes of activation *rows* instead of tokens: labels a token table cannot give.

    A token attribute table labels every occurrence of a token alike. Some truths belong to
    the event, not the token: the latent topic a writer chose for this very word, the taste a
    user followed for this very item (a synthetic world's planted genre). ``RowAttributes``
    carries a function that labels the activation rows of a row set; pass it as
    ``attributes=`` to :meth:`mechrec.alignment.FeatureAlignment.fit` (or
    :func:`mechrec.alignment.align`) and every source is chosen and scored against these
    labels, rows chosen on one set and scored on another as always.

    Args:
        label: ``label(rows, acts) -> DataFrame``: one row per activation row of ``acts``
            (row set ``rows``), one 0/1 (or boolean) column per attribute, the same columns
            for every row set.
        groups: attribute -> group name (``None``: every attribute in group ``"attribute"``).
        name: what the labels are, for messages (e.g. ``"planted genre"``).
    """

    label: Callable[[str, ActivationSet], pd.DataFrame]
    groups: Mapping[str, str] | pd.Series | None = None
    name: str = "row attributes"

    def table(self, rows: str, acts: ActivationSet,
              columns: list[str] | None = None) -> pd.DataFrame:
        """The checked ``(R, A)`` float32 0/1 labels of the activation rows ``acts``.

        Args:
            rows, acts: the row set and its activations.
            columns: the attributes an earlier row set was labelled with, if any.

        Raises:
            ValueError: not a DataFrame, a row count other than ``acts``', values other than
                0/1, repeated names, or columns other than ``columns``.
        """
        table = self.label(rows, acts)
        n = int(acts.activations.shape[0])
        if not isinstance(table, pd.DataFrame):
            raise ValueError(f"{self.name}: label({rows!r}, acts) must return a pandas "
                             f"DataFrame, got {type(table).__name__}")
        if table.shape[0] != n:
            raise ValueError(f"{self.name}: label({rows!r}, acts) gave {table.shape[0]} rows "
                             f"for {n} activation rows: give one row per activation row, in "
                             "the order of acts")
        names = [str(c) for c in table.columns]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"{self.name}: the labels need at least one column and unique "
                             f"names, got {names}")
        if columns is not None and names != list(columns):
            raise ValueError(f"{self.name}: row set {rows!r} is labelled with columns {names} "
                             f"but an earlier row set with {list(columns)}: label every row "
                             "set with the same attributes in the same order")
        values = table.to_numpy(dtype=np.float32, na_value=np.nan)
        if np.isnan(values).any() or not np.isin(values, (0.0, 1.0)).all():
            raise ValueError(f"{self.name}: labels must be 0/1 or booleans")
        return pd.DataFrame(values, columns=names)

    def attribute_groups(self, names: list[str]) -> pd.Series:
        """attribute -> group for ``names`` (the label columns), checked like a token
        table's groups."""
        dummy = pd.DataFrame(np.zeros((1, len(names)), dtype=np.float32), columns=names)
        return check_attribute_table(dummy, self.groups, 1)[1]


class TokenStudy:
    """A :class:`Study` over any HookedTransformer: token tensors per row set plus a table of
    token attributes.

    Args:
        model: the model (put in eval mode here).
        rows: row-set name -> ``(N, T)`` integer token tensor, or ``(tokens, mask)`` with a 0/1
            mask of real positions (any padding side).
        attributes: ``(d_vocab, A)`` 0/1 DataFrame of token attributes, one row per token id.
        groups: attribute -> group name (default: all in group ``"attribute"``).
        row_groups: row-set name -> one group label per sequence (default: each sequence its
            own group, so a bootstrap resamples whole sequences).
        batch_size: sequences per forward pass.

    Activations are collected on first use and cached per (row set, hook).
    """

    def __init__(
        self,
        model: HookedTransformer,
        rows: Mapping[str, Any],
        attributes: pd.DataFrame,
        groups: pd.Series | Mapping[str, str] | None = None,
        *,
        row_groups: Mapping[str, Any] | None = None,
        batch_size: int = 64,
    ) -> None:
        import torch

        if not hasattr(model, "run_with_cache") or not hasattr(model, "cfg"):
            raise ValueError(f"model must be a TransformerLens HookedTransformer, got "
                             f"{type(model).__name__}")
        if not rows:
            raise ValueError("give at least one row set, e.g. {'select': tokens, 'score': "
                             "other_tokens}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model = model.eval()
        self.batch_size = batch_size
        self._rows: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for name, value in rows.items():
            tokens, mask = value if isinstance(value, tuple) else (value, None)
            tokens = torch.as_tensor(tokens)
            if tokens.ndim != 2 or tokens.is_floating_point() or tokens.shape[0] == 0:
                raise ValueError(f"row set {name!r} must be a non-empty (N, T) integer token "
                                 f"tensor, got shape {tuple(tokens.shape)} ({tokens.dtype})")
            if int(tokens.min()) < 0 or int(tokens.max()) >= model.cfg.d_vocab:
                raise ValueError(f"row set {name!r} holds token ids outside 0.."
                                 f"{model.cfg.d_vocab - 1} (the model's d_vocab)")
            if mask is not None:
                mask = torch.as_tensor(mask)
                if mask.shape != tokens.shape:
                    raise ValueError(f"row set {name!r}: the mask has shape {tuple(mask.shape)}"
                                     f" but the tokens {tuple(tokens.shape)}")
            self._rows[str(name)] = (tokens, mask)
        self._table, self._groups = check_attribute_table(attributes, groups,
                                                          int(model.cfg.d_vocab))
        self._row_groups: dict[str, np.ndarray] = {}
        for name, labels in (row_groups or {}).items():
            n = self.n_rows(name)
            labels = np.asarray(labels)
            if labels.shape != (n,):
                raise ValueError(f"row_groups[{name!r}] has shape {labels.shape} but row set "
                                 f"{name!r} has {n} sequences: give one group per sequence")
            self._row_groups[name] = labels
        self._cache: dict[tuple[str, str], ActivationSet] = {}

    @property
    def row_sets(self) -> list[str]:
        """Names of the row sets."""
        return list(self._rows)

    def _check_rows(self, rows: str) -> None:
        if rows not in self._rows:
            raise ValueError(f"unknown row set {rows!r}; this study has "
                             f"{', '.join(repr(r) for r in self._rows)}")

    def n_rows(self, rows: str) -> int:
        """Number of sequences in row set ``rows``."""
        self._check_rows(rows)
        return int(self._rows[rows][0].shape[0])

    def batches(self, rows: str) -> Iterator[Batch]:
        """``(tokens, mask)`` batches of ``rows`` on the model's device, in order."""
        self._check_rows(rows)
        tokens, mask = self._rows[rows]
        device = next(self.model.parameters()).device
        for start in range(0, tokens.shape[0], self.batch_size):
            stop = start + self.batch_size
            yield (tokens[start:stop].to(device),
                   None if mask is None else mask[start:stop].to(device))

    def activations(self, rows: str, hook_name: str) -> ActivationSet:
        """Activations at ``hook_name`` for every real position of ``rows`` (cached)."""
        import torch

        from mechrec.activations import collect_activations
        from mechrec.hooks import resolve_hook

        self._check_rows(rows)
        key = (rows, hook_name)
        if key not in self._cache:
            resolve_hook(self.model, hook_name)
            with torch.no_grad():
                self._cache[key] = collect_activations(self.model, self.batches(rows),
                                                       hook_name)
        return self._cache[key]

    def attribute_table(self) -> tuple[pd.DataFrame, pd.Series]:
        """The token attribute table and each attribute's group."""
        return self._table, self._groups

    def row_groups(self, rows: str) -> np.ndarray:
        """One group per sequence of ``rows`` (default: the sequence's own index)."""
        self._check_rows(rows)
        if rows in self._row_groups:
            return self._row_groups[rows]
        return np.arange(self.n_rows(rows))

    def __repr__(self) -> str:
        sets = ", ".join(f"{name}: {tok.shape[0]}x{tok.shape[1]}"
                         for name, (tok, _) in self._rows.items())
        return (f"TokenStudy({sets}; {self._table.shape[1]} attributes in "
                f"{self._groups.nunique()} groups)")


def row_values(study: Study, rows: str, acts: ActivationSet,
               per_sequence: Callable[[str], np.ndarray] | None = None) -> np.ndarray:
    """``row_groups(rows)`` (or ``per_sequence(rows)``) expanded to one value per activation
    row, through the rows' ``sequence_index``."""
    labels = np.asarray((per_sequence or study.row_groups)(rows))
    index = acts.sequence_index.cpu().numpy()
    if index.size and int(index.max()) >= labels.shape[0]:
        raise ValueError(f"row_groups({rows!r}) gives {labels.shape[0]} labels but the "
                         f"activations index sequence {int(index.max())}: give one label per "
                         "sequence of the row set, in batch order")
    return labels[index]
