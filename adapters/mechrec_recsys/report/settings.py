"""What ``mechrec reproduce`` runs: one frozen settings object, the paper's and a quick preset.

The paper preset is the set of commands in ``docs/reproducing-the-paper.md`` (GPTRec with 3
layers, 2 heads, hidden 64; Table 1 over the paper's L1 weights and dictionary sizes with 2
seeds of 1,500 steps of 256 rows; an L1 SAE with 2,048 features at λ 0.1 trained for 3,000
steps of 1,024 rows; alignment with release decades and two custom predicates and 200 bootstrap
resamples of the test users; steering of six genres over -10..10 in both edit modes with
probes; the ablation rows of docs/reproducing-the-paper.md). The quick preset runs every step at toy
size, in seconds, for tests and a first look (50 bootstrap resamples).

Each pipeline step depends on a subset of the fields (:data:`STEP_FIELDS`); a step's outputs
are reused only when those fields are unchanged (:func:`step_digest`). A field added to a step
after a run folder's step ran (absent from its record, e.g. ``align_bootstrap`` in folders made
before the alignment had a bootstrap) makes that step rerun rather than conflict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from mechrec._io import json_sha256
from mechrec.saes import PAPER_DICT_SIZES, PAPER_L1_GRID
from mechrec_recsys.configs import ABLATIONS
from mechrec_recsys.model import GPTRecConfig
from mechrec_recsys.steering import DEFAULT_GENRES
from mechrec_recsys.training import TrainConfig

#: Splits that have the paper's SAE users (the ``sae_train`` part).
SPLITS_WITH_SAE_USERS: tuple[str, ...] = ("paper", "random")
SETTINGS_FORMAT = "mechrec.reproduce_settings/1"
#: Coverage of the alignment's bootstrap intervals (as ``mechrec align tables``' default).
ALIGN_CONFIDENCE = 0.95


@dataclass(frozen=True)
class ReproduceSettings:
    """Every setting of the end-to-end pipeline (sizes, seeds, grids).

    Runtime choices that do not change results (device, data folder, progress) are not here.

    Attributes:
        dataset: MovieLens name for :func:`mechrec_recsys.data.load_dataset`.
        split: ``paper`` or ``random`` (both have SAE users).
        seed: seed of the split, GPTRec, the SAEs' default seed and the random control.
        quick: whether the toy-size preset was the base.
        n_layers, n_heads, d_model, d_mlp, max_len, dropout: GPTRec's architecture.
        epochs, patience, batch_size, lr: GPTRec's training (early stopping on validation).
        k: length of every recommendation list (NDCG@k, HR@k, Coverage@k).
        table1_l1: L1 weights swept at dictionary ``table1_l1_d_sae``.
        table1_d_sae: dictionary sizes swept at L1 weight ``table1_d_sae_l1``.
        table1_l1_d_sae, table1_d_sae_l1: the fixed value of each Table-1 sweep.
        table1_seeds: seeds per Table-1 point.
        table1_steps, table1_batch_size: training length of each Table-1 SAE.
        hook: the TransformerLens hook every SAE reads.
        sae_name: folder of the analysis SAE under ``RUN_DIR/saes``.
        sae_d_sae, sae_l1, sae_steps, sae_batch_size: the analysis SAE.
        align_decades: also align features with release decades.
        align_title_contains: custom attributes "title contains TEXT".
        align_years: custom attributes "release year in FIRST-LAST".
        align_top_k: top features per attribute in ``top_features.csv``.
        align_bootstrap: resamples of the test users for the confidence intervals of the
            alignment comparison (``bootstrap_intervals``, ``bootstrap_differences``,
            ``bootstrap.json``; 0 disables them), at :data:`ALIGN_CONFIDENCE`.
        steer_genres: genres whose best feature (and probe) is steered.
        steer_values: feature values (and direction multiples) of the sweep.
        steer_modes: SAE edit modes (``replace`` = the paper's, ``keep-error``).
        steer_probes: also steer with probe and SAE decoder directions (Fig. 9).
        ablations: ablation rows of the analysis SAE (:data:`mechrec_recsys.configs.ABLATIONS`;
            the unit, architectures at matched L0, normalisation, other layers), each with
            ``align_bootstrap`` paired resamples; empty: no ablation step.
        budget_minutes: the wall-time budget these settings were cut to fit (``None``: no
            budget; :func:`mechrec_recsys.report.budget.fit_budget`).
        budget_cuts: what the budget cut, one line each (shown in the report).
    """

    dataset: str = "ml-100k"
    split: str = "paper"
    seed: int = 0
    quick: bool = False
    n_layers: int = GPTRecConfig.n_layers
    n_heads: int = GPTRecConfig.n_heads
    d_model: int = GPTRecConfig.d_model
    d_mlp: int = GPTRecConfig.d_mlp
    max_len: int = GPTRecConfig.max_len
    dropout: float = GPTRecConfig.dropout
    epochs: int = TrainConfig.epochs
    patience: int = TrainConfig.patience
    batch_size: int = TrainConfig.batch_size
    lr: float = TrainConfig.lr
    k: int = 10
    table1_l1: tuple[float, ...] = PAPER_L1_GRID
    table1_d_sae: tuple[int, ...] = PAPER_DICT_SIZES
    table1_l1_d_sae: int = 2048
    table1_d_sae_l1: float = 0.1
    table1_seeds: tuple[int, ...] = (0, 1)
    table1_steps: int = 1500
    table1_batch_size: int = 256
    hook: str = "blocks.0.hook_resid_post"
    sae_name: str = "paper"
    sae_d_sae: int = 2048
    sae_l1: float = 0.1
    sae_steps: int = 3000
    sae_batch_size: int = 1024
    align_decades: bool = True
    align_title_contains: tuple[str, ...] = ("Star Wars",)
    align_years: tuple[str, ...] = ("1980-1989",)
    align_top_k: int = 5
    align_bootstrap: int = 200
    steer_genres: tuple[str, ...] = DEFAULT_GENRES
    steer_values: tuple[float, ...] = tuple(float(v) for v in range(-10, 11))
    steer_modes: tuple[str, ...] = ("replace", "keep-error")
    steer_probes: bool = True
    ablations: tuple[str, ...] = ABLATIONS
    budget_minutes: float | None = None
    budget_cuts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.split not in SPLITS_WITH_SAE_USERS:
            raise ValueError(
                f"split {self.split!r} has no SAE users; the paper's pipeline needs one of "
                f"{', '.join(SPLITS_WITH_SAE_USERS)}"
            )
        positive = ("n_layers", "n_heads", "d_model", "d_mlp", "max_len", "epochs",
                    "batch_size", "k", "table1_l1_d_sae", "table1_steps", "table1_batch_size",
                    "sae_d_sae", "sae_steps", "sae_batch_size", "align_top_k")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("patience", "align_bootstrap"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("table1_seeds", "steer_genres", "steer_values", "steer_modes"):
            if not getattr(self, name):
                raise ValueError(f"{name} needs at least one value")
        if self.budget_minutes is not None and not self.budget_minutes > 0:
            raise ValueError(f"budget_minutes must be positive, got {self.budget_minutes}")
        unknown = [kind for kind in self.ablations if kind not in ABLATIONS]
        if unknown:
            raise ValueError(f"unknown ablation {unknown[0]!r}; choose from "
                             f"{', '.join(ABLATIONS)}")
        if not (self.table1_l1 or self.table1_d_sae):
            raise ValueError("Table 1 needs at least one L1 weight or dictionary size")

    # ------------------------------------------------------------------ presets
    @classmethod
    def paper(cls, dataset: str = "ml-100k", split: str = "paper", seed: int = 0
              ) -> ReproduceSettings:
        """The settings of ``docs/reproducing-the-paper.md`` (hours on a 2-core CPU)."""
        return cls(dataset=dataset, split=split, seed=seed)

    @classmethod
    def quick_preset(cls, dataset: str = "ml-100k", split: str = "paper", seed: int = 0
                     ) -> ReproduceSettings:
        """Every step at toy size: a small GPTRec trained 3 epochs, 3 tiny Table-1 SAEs, a
        256-feature analysis SAE, 50 bootstrap resamples of the alignment, two steered genres
        over three values, two ablation rows (items, TopK at matched L0)."""
        return cls(
            dataset=dataset, split=split, seed=seed, quick=True,
            n_layers=2, n_heads=2, d_model=32, d_mlp=64, max_len=50, epochs=3, patience=3,
            lr=3e-3,
            table1_l1=(0.05, 0.5), table1_d_sae=(64,), table1_l1_d_sae=128,
            table1_seeds=(0,), table1_steps=100, table1_batch_size=256,
            sae_d_sae=256, sae_steps=300, sae_batch_size=256, align_bootstrap=50,
            steer_genres=("Action", "Sci-Fi"), steer_values=(-5.0, 0.0, 5.0),
            steer_modes=("replace",), ablations=("items", "topk"),
        )

    def with_overrides(self, **overrides: Any) -> ReproduceSettings:
        """A copy with the given fields changed (``None`` values are ignored)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown settings {unknown}; valid: {sorted(known)}")
        changes = {key: _coerce(getattr(self, key), value)
                   for key, value in overrides.items() if value is not None}
        return replace(self, **changes)

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        """Every field, JSON-ready (tuples become lists), with a format tag."""
        data = {key: list(value) if isinstance(value, tuple) else value
                for key, value in asdict(self).items()}
        return {"format": SETTINGS_FORMAT, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReproduceSettings:
        """Rebuild from :meth:`to_json` output; unknown keys are an error."""
        if not isinstance(data, dict) or data.get("format") != SETTINGS_FORMAT:
            raise ValueError(f"not reproduce settings (expected format {SETTINGS_FORMAT})")
        values = {key: value for key, value in data.items() if key != "format"}
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown settings {unknown}")
        default = cls()
        return replace(default, **{key: _coerce(getattr(default, key), value)
                                   for key, value in values.items()})


#: The settings each step's outputs depend on, beyond its upstream steps' outputs.
STEP_FIELDS: dict[str, tuple[str, ...]] = {
    "data": ("dataset", "split", "seed"),
    "train": ("dataset", "split", "seed", "n_layers", "n_heads", "d_model", "d_mlp", "max_len",
              "dropout", "epochs", "patience", "batch_size", "lr", "k"),
    "table1": ("hook", "k", "table1_l1", "table1_d_sae", "table1_l1_d_sae", "table1_d_sae_l1",
               "table1_seeds", "table1_steps", "table1_batch_size"),
    "sae": ("hook", "seed", "sae_name", "sae_d_sae", "sae_l1", "sae_steps", "sae_batch_size"),
    "align": ("seed", "align_decades", "align_title_contains", "align_years", "align_top_k",
              "align_bootstrap"),
    "steer": ("k", "steer_genres", "steer_values", "steer_modes", "steer_probes"),
    "ablations": ("seed", "ablations", "align_bootstrap"),
}


def step_settings(settings: ReproduceSettings, step: str) -> dict[str, Any]:
    """The fields ``step`` depends on, JSON-ready."""
    data = settings.to_json()
    return {key: data[key] for key in STEP_FIELDS[step]}


def step_digest(settings: ReproduceSettings, step: str) -> str:
    """A short hash of :func:`step_settings` (equal digests = the outputs can be reused)."""
    return json_sha256(step_settings(settings, step))[:16]


def _coerce(default: Any, value: Any) -> Any:
    """Give ``value`` the type of the field's default (lists -> tuples, ints -> floats)."""
    if isinstance(default, tuple):
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        kind = type(default[0]) if default else None
        return tuple(kind(item) if kind in (int, float, str) else item for item in items)
    if isinstance(default, bool):
        return bool(value)
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    return value
