"""Configurations and named choices of the recommender adapter, free of heavy imports.

The command line builds every ``--help`` page and checks every argument from these names and
defaults before it loads torch, TransformerLens or sae-lens; the modules that use them
(:mod:`~mechrec_recsys.model`, :mod:`~mechrec_recsys.training`, :mod:`~mechrec_recsys.saes`,
:mod:`~mechrec_recsys.alignment`, :mod:`~mechrec_recsys.steering`,
:mod:`~mechrec_recsys.data.splits`) import them from here and re-export them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from mechrec._config import config_from_dict, config_to_dict

__all__ = [
    "ABLATIONS",
    "DEFAULT_GENRES",
    "MODES",
    "PAPER_HOOK",
    "SPLIT_KINDS",
    "UNITS",
    "GPTRecConfig",
    "TrainConfig",
    "parse_year_range",
]

#: Kinds of train/validation/test split (see :func:`mechrec_recsys.data.splits.make_split`).
SPLIT_KINDS: tuple[str, ...] = ("paper", "loo", "random")
#: The paper's hook: the output of the first transformer block.
PAPER_HOOK = "blocks.0.hook_resid_post"
#: What one data point of the alignment statistics is (see
#: :func:`mechrec_recsys.alignment.align`).
UNITS: tuple[str, ...] = ("positions", "items")
#: The genres steered by default (``steer sweep``, ``reproduce``): the paper's five of section
#: 8.2 plus Horror, as in ``docs/reproducing-the-paper.md``.
DEFAULT_GENRES: tuple[str, ...] = ("Action", "Children", "Fantasy", "Sci-Fi", "Western",
                                   "Horror")
#: Modes of SAE feature edits: replace the activation with the edited reconstruction (paper),
#: or keep the SAE's error term so only the feature's change reaches the model.
MODES: tuple[str, ...] = ("replace", "keep-error")
#: Ablation rows of a recommender run, in row order (:mod:`~mechrec_recsys.ablations`):
#: ``items`` is the core's ``tokens`` row (the alignment's unit is the distinct item).
ABLATIONS: tuple[str, ...] = ("items", "topk", "jumprelu", "no-norm", "layers", "mlp-out")


@dataclass(frozen=True)
class GPTRecConfig:
    """Architecture of a GPTRec model (the paper: 3 layers, 2 heads, hidden size 64).

    Attributes:
        n_layers: number of transformer blocks.
        n_heads: attention heads per block.
        d_model: width of the residual stream (and of the item embedding).
        d_mlp: hidden width of each block's MLP.
        max_len: longest input sequence (number of learned positions); longer histories keep
            their most recent ``max_len`` items.
        dropout: dropout probability on the item embedding and on every attention and MLP output,
            active only in training mode.
        act_fn: MLP activation, any TransformerLens ``act_fn`` (``"gelu"``, ``"relu"``, ...).
        fast_path: use fused attention / LayerNorm kernels when no hook observes their internals
            (results agree with the TransformerLens path to float rounding).
        init_seed: seed of the weight initialisation (``None``: the global torch RNG).
    """

    n_layers: int = 3
    n_heads: int = 2
    d_model: int = 64
    d_mlp: int = 256
    max_len: int = 200
    dropout: float = 0.2
    act_fn: str = "gelu"
    fast_path: bool = True
    init_seed: int | None = 0

    def __post_init__(self) -> None:
        for name in ("n_layers", "n_heads", "d_model", "d_mlp", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTRecConfig.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        return config_to_dict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GPTRecConfig:
        """Rebuild a config from :meth:`to_json` output; unknown keys are an error."""
        return config_from_dict(cls, data, what="GPTRec config")



@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of a training run.

    Attributes:
        epochs: maximum number of passes over the training sequences.
        batch_size: sequences per optimiser step (per process under DDP).
        lr: Adam learning rate.
        weight_decay: Adam (L2) weight decay.
        beta2: Adam's second-moment decay (``beta1`` is 0.9).
        loss: ``"full"`` (softmax over the catalog) or ``"sampled"`` (target + negatives).
        num_negatives: negatives per batch for ``loss="sampled"``.
        patience: stop once more than this many consecutive evaluations bring no better
            validation NDCG (the best weights are kept).
        eval_every: evaluate (and checkpoint) every this many epochs.
        eval_k: cut-off of the validation NDCG.
        exclude_seen: mask a user's seen items when validating.
        validation: what the validation NDCG averages over: ``"last"`` - each validation
            user's held-out target; ``"all"`` - every next-item prediction along each
            validation user's sequence (input + target; see
            :func:`~mechrec_recsys.metrics.ndcg_all_positions`), far less noisy when there are
            few validation users, but sound only when they are not training users; ``"auto"``
            - ``"all"`` when no validation user is a training user, else ``"last"``.
        window: which ``max_len + 1`` items of a longer sequence an epoch trains on:
            ``"last"`` or a ``"random"`` contiguous window (augmentation).
        grad_clip: clip the gradient norm to this value (``None``: no clipping).
        seed: seed of shuffling, dropout and negative sampling.
        eval_batch_size: sequences per validation batch.
        progress: show a progress bar and per-epoch lines on stderr (rank 0 only).
    """

    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    beta2: float = 0.98
    loss: Literal["full", "sampled"] = "full"
    num_negatives: int = 1024
    patience: int = 15
    eval_every: int = 1
    eval_k: int = 10
    exclude_seen: bool = True
    validation: Literal["auto", "last", "all"] = "auto"
    window: Literal["last", "random"] = "random"
    grad_clip: float | None = 5.0
    seed: int = 0
    eval_batch_size: int = 512
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_every", "eval_k", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.patience < 0:
            raise ValueError(f"TrainConfig.patience must be >= 0, got {self.patience}")
        if self.loss not in ("full", "sampled"):
            raise ValueError(f"loss must be 'full' or 'sampled', got {self.loss!r}")
        if self.loss == "sampled" and self.num_negatives < 1:
            raise ValueError("loss='sampled' needs num_negatives >= 1")
        if self.validation not in ("auto", "last", "all"):
            raise ValueError(
                f"validation must be 'auto', 'last' or 'all', got {self.validation!r}")
        if self.window not in ("last", "random"):
            raise ValueError(f"window must be 'last' or 'random', got {self.window!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        return config_to_dict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_json` output (keys of older formats are ignored)."""
        return config_from_dict(cls, data, what="training config", ignore_unknown=True)


_YEARS_RE = re.compile(r"^\s*(\d{3,4})\s*(?:-|\.\.|:)\s*(\d{3,4})\s*$")


def parse_year_range(text: str) -> tuple[int, int]:
    """Read a year range as :class:`~mechrec_recsys.report.ReproduceSettings` stores it (and
    ``--years`` takes it): ``"1980-1989"`` (or ``1980..1989``, ``1980:1989``, a single year
    ``1995``) -> ``(first, last)``."""
    single = text.strip()
    if single.isdigit():
        return int(single), int(single)
    match = _YEARS_RE.match(text)
    if not match:
        raise ValueError(f"cannot read the year range {text!r}: expected FIRST-LAST, e.g. "
                         "1980-1989, or a single year")
    first, last = int(match.group(1)), int(match.group(2))
    if first > last:
        raise ValueError(f"year range {text!r} is empty: the first year must be <= the last")
    return first, last
