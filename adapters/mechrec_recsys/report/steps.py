"""The paper's steps, each a thin call of the library function that does the work.

=========  ==========================================================================
step       library call (and what it writes)
=========  ==========================================================================
data       :func:`mechrec_recsys.data.dataset_statistics` -> ``reproduce/`` CSV + split JSON
train      :func:`mechrec_recsys.training.train_and_evaluate` + ``RunSpec.save``
table1     :func:`mechrec_recsys.saes.run_table1` + ``Table1.save`` (``table1.json`` + CSV)
sae        :func:`mechrec_recsys.saes.train_run_sae` (+ its metrics in ``reproduce/sae.json``)
align      :func:`mechrec_recsys.alignment.align` + ``AlignmentRun.write`` (with bootstrap)
steer      :func:`mechrec_recsys.steering.run_genre_sweep` + ``GenreSweep.save``
ablations  :func:`mechrec_recsys.ablations.run_sae_ablations` (``AblationTable.save``)
=========  ==========================================================================

A :class:`StepContext` holds what several steps share (the dataset and split, the opened
experiment with its cached activations, the analysis SAE) and builds each lazily, so a run
whose steps are all done opens nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from mechrec.alignment.persist import RUN_FILE
from mechrec.saes import NormalizedSAE, SAETrainingConfig, log_run_summary
from mechrec.saes.tracking import child_run_name
from mechrec_recsys.checkpoint import atomic_write_bytes, atomic_write_json, load_checkpoint
from mechrec_recsys.data import Dataset, Split, dataset_statistics, load_dataset
from mechrec_recsys.data.splits import make_split
from mechrec_recsys.experiment import FULL_HISTORY, Experiment, RunSpec
from mechrec_recsys.report.layout import RunLayout
from mechrec_recsys.report.settings import ALIGN_CONFIDENCE, ReproduceSettings

#: Learning-rate warm-up of the SAEs, as ``mechrec sae``: at most 100 steps, a tenth of short runs.


@dataclass
class StepContext:
    """Shared, lazily built state of one pipeline invocation.

    Attributes:
        settings: what to run.
        layout: where outputs go.
        data_dir: folder holding the dataset (``None``: ``$MECHREC_DATA``, cache, download).
        download: allow downloading the dataset.
        device: torch device.
        log: receives one progress line at a time.
        tracking: ``SAETrainingConfig`` tracking fields for every SAE trained (``log_to``,
            ``wandb_project``, ``run_name`` as a prefix...); empty: nothing is tracked.
    """

    settings: ReproduceSettings
    layout: RunLayout
    data_dir: str | Path | None = None
    download: bool = True
    device: str = "cpu"
    log: Callable[[str], None] = lambda message: None
    tracking: Mapping[str, Any] = field(default_factory=dict)
    _dataset: Dataset | None = field(default=None, repr=False)
    _split: Split | None = field(default=None, repr=False)
    _experiment: Experiment | None = field(default=None, repr=False)
    _sae: NormalizedSAE | None = field(default=None, repr=False)

    @property
    def spec(self) -> RunSpec:
        """The run's :class:`RunSpec` (dataset, split, seed)."""
        s = self.settings
        return RunSpec(dataset=s.dataset, split=s.split, seed=s.seed)

    @property
    def dataset(self) -> Dataset:
        """The dataset, loaded once."""
        if self._dataset is None:
            self._dataset = load_dataset(self.settings.dataset, self.data_dir,
                                         download=self.download)
        return self._dataset

    @property
    def split(self) -> Split:
        """The split, made once exactly as :meth:`Experiment.open` remakes it."""
        if self._split is None:
            s = self.settings
            self._split = make_split(self.dataset, s.split, seed=s.seed, max_len=FULL_HISTORY)
        return self._split

    @property
    def experiment(self) -> Experiment:
        """The trained run (split + best model); activations are cached across steps."""
        if self._experiment is None:
            checkpoint = load_checkpoint(self.layout.run_dir / "model", device=self.device,
                                         expected_vocab=self.split.vocab)
            self._experiment = Experiment(spec=self.spec, dataset=self.dataset,
                                          split=self.split, model=checkpoint.model)
        return self._experiment

    @property
    def sae(self) -> NormalizedSAE:
        """The analysis SAE (trained by the ``sae`` step, or loaded from its folder)."""
        if self._sae is None:
            from mechrec_recsys.saes import load_run_sae

            self._sae = load_run_sae(self.experiment, self.layout.sae_dir, device=self.device)
        return self._sae

    def forget_model(self) -> None:
        """Drop the cached experiment and SAE (after the model or SAE was retrained)."""
        self._experiment = None
        self._sae = None


# ------------------------------------------------------------------------------ steps
def run_data(ctx: StepContext, fresh_upstream: bool) -> dict[str, Any]:
    """Dataset and split statistics (the split's bookkeeping as JSON)."""
    del fresh_upstream
    table = dataset_statistics(ctx.dataset, ctx.split)
    atomic_write_bytes(ctx.layout.dataset_statistics, table.to_csv().encode())
    report = getattr(ctx.dataset, "report", None)
    atomic_write_json(ctx.layout.split_info, _json_ready({
        "dataset": ctx.settings.dataset,
        "split": ctx.settings.split,
        "info": dict(ctx.split.info),
        "load_report": _load_report(report),
    }))
    return {"users": int(table.loc["users", "all"])}


def run_train(ctx: StepContext, fresh_upstream: bool) -> dict[str, Any]:
    """GPTRec vs popularity (resumes an interrupted training run in the same folder)."""
    del fresh_upstream
    from mechrec_recsys.model import GPTRecConfig
    from mechrec_recsys.training import TrainConfig, train_and_evaluate

    s = ctx.settings
    model_config = GPTRecConfig(n_layers=s.n_layers, n_heads=s.n_heads, d_model=s.d_model,
                                d_mlp=s.d_mlp, max_len=s.max_len, dropout=s.dropout,
                                init_seed=s.seed)
    train_config = TrainConfig(epochs=s.epochs, patience=s.patience, batch_size=s.batch_size,
                               lr=s.lr, seed=s.seed, eval_k=s.k, progress=False)
    ctx.layout.run_dir.mkdir(parents=True, exist_ok=True)
    ctx.spec.save(ctx.layout.run_dir)
    run = train_and_evaluate(ctx.split, model_config=model_config, train_config=train_config,
                             out_dir=ctx.layout.run_dir, resume=True, device=ctx.device, k=s.k,
                             log=lambda message: ctx.log(f"  {message}"))
    ctx.forget_model()
    return {"best_epoch": run.result.best_epoch}


def table1_base(settings: ReproduceSettings, device: str = "cpu") -> SAETrainingConfig:
    """The training configuration shared by every Table-1 SAE (as ``mechrec sae table1``)."""
    return SAETrainingConfig(architecture="standard", d_sae=settings.table1_l1_d_sae,
                             l1_coefficient=settings.table1_d_sae_l1,
                             steps=settings.table1_steps, batch_size=settings.table1_batch_size,
                             lr=1e-3, device=device)


def tracked(config: SAETrainingConfig, tracking: Mapping[str, Any],
            name: str) -> SAETrainingConfig:
    """``config`` with the pipeline's tracking fields, its run named ``<run_name>/<name>``
    (or ``name``); ``config`` itself when nothing is tracked. Tracking never changes what is
    trained, so the steps' digests ignore it."""
    if tracking.get("log_to") is None:
        return config
    return config.with_overrides(
        **{**tracking, "run_name": child_run_name(tracking.get("run_name"), name)})


def run_table1_step(ctx: StepContext, fresh_upstream: bool) -> dict[str, Any]:
    """Table 1; SAEs cached for the same model weights are reused.

    The sweep folder is tied to the hash of the model's weights
    (:func:`mechrec_recsys.saes.sweep_directory`), so after the model was retrained the sweep
    trains fresh SAEs instead of reusing stale ones.
    """
    del fresh_upstream
    from mechrec_recsys.saes import run_table1

    s = ctx.settings
    base = tracked(table1_base(s, ctx.device), ctx.tracking, "table1")

    def progress(done: int, total: int, row: dict[str, Any]) -> None:
        ctx.log(f"  [{done}/{total}] d_sae={row['d_sae']} l1={row['l1_coefficient']:g} "
                f"seed={row['seed']}")

    table = run_table1(ctx.experiment, ctx.layout.run_dir, hook=s.hook,
                       l1_values=list(s.table1_l1), d_sae_values=list(s.table1_d_sae),
                       seeds=list(s.table1_seeds), l1_d_sae=s.table1_l1_d_sae,
                       d_sae_l1=s.table1_d_sae_l1, base=base, k=s.k, progress=progress)
    table.save(ctx.layout.table1_csv)  # table1.csv and table1.json, read by Table1.load
    return {"saes": len(table.runs)}


def sae_config(settings: ReproduceSettings, device: str = "cpu") -> SAETrainingConfig:
    """The analysis SAE's configuration (as ``mechrec sae train``)."""
    return SAETrainingConfig(architecture="standard", d_sae=settings.sae_d_sae,
                             l1_coefficient=settings.sae_l1, steps=settings.sae_steps,
                             batch_size=settings.sae_batch_size, lr=1e-3,
                             seed=settings.seed, device=device)


def run_sae(ctx: StepContext, fresh_upstream: bool) -> dict[str, Any]:
    """Train the analysis SAE (replacing an unfinished or stale one) and save its metrics,
    with what the model keeps when it is spliced in (loss and NDCG recovered, KL)."""
    del fresh_upstream
    from mechrec._io import json_safe
    from mechrec_recsys.sae_quality import splice_quality
    from mechrec_recsys.saes import train_run_sae

    s = ctx.settings
    config = tracked(sae_config(s, ctx.device), ctx.tracking, s.sae_name)
    trained = train_run_sae(ctx.experiment, config, hook=s.hook, run_dir=ctx.layout.run_dir,
                            name=s.sae_name, overwrite=True)
    # later steps read the SAE as saved (folding its normaliser rounds the weights by ~1e-8),
    # so a resumed run computes exactly what an uninterrupted one does
    ctx._sae = None
    quality = splice_quality(ctx.experiment, ctx.sae)
    if trained.training.tracked_run is not None:
        log_run_summary(trained.training.tracked_run, config,
                        {**trained.test_metrics.as_dict(), **quality})
    atomic_write_json(ctx.layout.sae_metrics, json_safe({
        "format": "mechrec.reproduce_sae/1",
        "directory": str(trained.directory),
        "hook": s.hook,
        "config": config.to_dict(),
        "test_metrics": trained.test_metrics.as_dict(),
        "dead_fraction_train": trained.training.dead_fraction_train,
        "n_resampled": trained.training.n_resampled,
        "training_seconds": trained.training.seconds,
        "quality": quality,
    }))
    return {"l0": float(trained.test_metrics.l0)}


def run_align(ctx: StepContext, fresh_upstream: bool) -> dict[str, Any]:
    """Table 2 / Figure 4: best feature per attribute, SAE vs neurons vs random control, with
    bootstrap intervals of the honest scores and their paired differences
    (``align_bootstrap`` resamples of the test users; when 0, bootstrap files left in the
    folder by an earlier run are removed, so the report never shows stale intervals)."""
    del fresh_upstream
    from mechrec_recsys.ablations import alignment_identity
    from mechrec_recsys.alignment import align, parse_year_range, title_contains, year_between

    s = ctx.settings
    predicates = {f"title: {text}": title_contains(text) for text in s.align_title_contains}
    for text in s.align_years:
        first, last = parse_year_range(text)
        predicates[f"years {first}-{last}"] = year_between(first, last)
    run = align(ctx.experiment, ctx.sae, metric="correlation", decades=s.align_decades,
                predicates=predicates, seed=s.seed)
    run.save(ctx.layout.alignment_dir, top_k=s.align_top_k, provenance={
        "run_dir": str(ctx.layout.run_dir), "sae_dir": str(ctx.layout.sae_dir),
        "command": "mechrec reproduce", "attributes": "catalog",
        **alignment_identity(ctx.experiment, ctx.sae)}, bootstrap=s.align_bootstrap,
        confidence=ALIGN_CONFIDENCE)
    if not s.align_bootstrap:
        for name in BOOTSTRAP_FILES:
            for path in (ctx.layout.alignment_dir / name,
                         (ctx.layout.alignment_dir / name).with_suffix(".parquet")):
                path.unlink(missing_ok=True)
    return {"attributes": len(run.attribute_names), "bootstrap": s.align_bootstrap}


#: Sub-folder of the steering folder holding one feature page (JSON) per steered genre.
FEATURE_PAGES_DIR = "features"
#: The users whose positions the feature pages show (feature_dashboard's default).
PAGES_PART = "sae_train"


def run_steer(ctx: StepContext, fresh_upstream: bool) -> dict[str, Any]:
    """Steering curves per genre (SAE feature edits, SAE and probe directions), and each
    steered feature's page (top sequences, the items it promotes and demotes)."""
    del fresh_upstream
    from mechrec_recsys.alignment import encode_sparse
    from mechrec_recsys.feature_pages import feature_dashboard
    from mechrec_recsys.steering import run_genre_sweep

    s = ctx.settings
    result = run_genre_sweep(ctx.experiment, ctx.sae, genres=list(s.steer_genres),
                             values=list(s.steer_values), modes=list(s.steer_modes),
                             probes=s.steer_probes, k=s.k)
    result.save(ctx.layout.steering_dir, extra={"command": {
        "run_dir": str(ctx.layout.run_dir), "sae_dir": str(ctx.layout.sae_dir),
        "genres": list(s.steer_genres), "values": list(s.steer_values),
        "modes": list(s.steer_modes), "probes": s.steer_probes, "k": s.k,
        "by": "mechrec reproduce"}})
    pages = ctx.layout.steering_dir / FEATURE_PAGES_DIR
    encoded = None  # every page reads the same SAE features of the same users: encode once
    for row in result.features.itertuples(index=False):
        if encoded is None:
            encoded = encode_sparse(ctx.sae, ctx.experiment.activations(
                PAGES_PART, ctx.sae.hook_name).activations).tocsc()
        page = feature_dashboard(ctx.experiment, ctx.sae, int(row.feature), k=5, context=4,
                                 value=max(abs(v) for v in s.steer_values), part=PAGES_PART,
                                 encoded=encoded)
        atomic_write_json(pages / f"{row.genre}.json", page, sort_keys=False)
    return {"curves": int(result.curves["curve"].nunique())}


def run_ablations_step(ctx: StepContext, fresh_upstream: bool) -> dict[str, Any]:
    """Ablation rows of the analysis SAE: the alignment comparison with one setting changed
    per row (variants trained like the analysis SAE on the SAE users, scored on the test
    users). Rows saved by an interrupted run with the same model and SAE are reused, and the
    base row reads the ``align`` step's saved alignment when it was made with this model and
    SAE (the same numbers, without aligning again)."""
    del fresh_upstream
    from mechrec_recsys.ablations import run_sae_ablations, saved_base_alignment

    s = ctx.settings
    if not s.ablations:
        return {"rows": 0}
    base_run, reason = saved_base_alignment(ctx.layout.alignment_dir, ctx.experiment, ctx.sae,
                                            bootstrap=s.align_bootstrap, seed=s.seed)
    ctx.log(f"  {reason}")
    table = run_sae_ablations(ctx.experiment, ctx.sae, sae_config(s, ctx.device), s.ablations,
                              bootstrap=s.align_bootstrap, confidence=ALIGN_CONFIDENCE,
                              seed=s.seed, out_dir=ctx.layout.ablations_dir,
                              progress=lambda line: ctx.log(f"  {line}"), base_run=base_run)
    return {"rows": len(table.rows)}


def preflight(ctx: StepContext) -> None:
    """Check what can be checked before hours of work: the steered genres exist.

    Raises:
        ValueError: a genre that is neither in the dataset nor a MovieLens genre.
    """
    from mechrec_recsys.steering import resolve_genres

    resolve_genres(list(ctx.settings.steer_genres), list(ctx.dataset.catalog.genre_names),
                   warn=False)


# ------------------------------------------------------------------------------ registry
#: Files of the alignment's bootstrap (written when ``align_bootstrap`` > 0).
BOOTSTRAP_FILES: tuple[str, ...] = ("bootstrap_intervals.csv", "bootstrap_differences.csv",
                                    "bootstrap.json")


@dataclass(frozen=True)
class Step:
    """One pipeline step.

    Attributes:
        name: short name (``train``, ``table1``, ...), also the key of its record.
        title: what it produces, for logs and the report.
        after: upstream steps whose outputs it reads.
        outputs: ``outputs(layout, settings)``: the files that must exist for the step to
            count as done.
        run: ``run(context, fresh_upstream)`` does the work; ``fresh_upstream`` is true when
            an upstream step was redone since this step last finished.
        command: the single CLI command that produces the same outputs.
    """

    name: str
    title: str
    after: tuple[str, ...]
    outputs: Callable[[RunLayout, ReproduceSettings], list[Path]]
    run: Callable[[StepContext, bool], dict[str, Any]]
    command: str


STEPS: tuple[Step, ...] = (
    Step("data", "dataset and split statistics", (),
         lambda lay, s: [lay.dataset_statistics, lay.split_info], run_data,
         "mechrec reproduce --out RUN_DIR"),
    Step("train", "GPTRec vs popularity", (),
         lambda lay, s: [lay.run_spec, lay.model_config, lay.metrics], run_train,
         "mechrec train DATASET --split paper --out RUN_DIR"),
    Step("table1", "Table 1: SAE reconstruction vs sparsity", ("train",),
         lambda lay, s: [lay.table1_csv, lay.table1_json], run_table1_step,
         "mechrec sae table1 RUN_DIR"),
    Step("sae", "the SAE used for analysis", ("train",),
         lambda lay, s: [lay.sae_dir / "cfg.json", lay.sae_metrics], run_sae,
         "mechrec sae train RUN_DIR --architecture standard --d-sae 2048 --l1 0.1 "
         "--name paper"),
    Step("align", "Table 2 and Figure 4: genre alignment", ("train", "sae"),
         lambda lay, s: [lay.alignment_dir / name for name in
                         (RUN_FILE, "per_genre.csv", "summary.csv", "comparison.csv",
                          "alignment.json", *(BOOTSTRAP_FILES if s.align_bootstrap else ()))],
         run_align, "mechrec align tables RUN_DIR paper --bootstrap 200"),
    Step("steer", "steering curves per genre", ("train", "sae"),
         lambda lay, s: [lay.steering_dir / name for name in
                      ("sweep.json", "target_share.csv", "summary.json", "features.csv")],
         run_steer, "mechrec steer sweep RUN_DIR paper --probes"),
    Step("ablations", "what drives the SAE's edge (ablation rows)", ("train", "sae"),
         lambda lay, s: [lay.ablations_dir / name for name in
                         (("ablations.json", "ablations.csv") if s.ablations else ())],
         run_ablations_step, "mechrec align ablations RUN_DIR paper --bootstrap 200"),
)
STEP_NAMES: tuple[str, ...] = tuple(step.name for step in STEPS)


def _join(values: Any) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def step_command(name: str, settings: ReproduceSettings | None, run_dir: str | Path) -> str:
    """The single command that makes the same outputs as step ``name`` with ``settings``
    (a generic template when the settings are unknown)."""
    step = get_step(name)
    if settings is None:
        return step.command.replace("RUN_DIR", str(run_dir))
    s, run = settings, str(run_dir)
    if name == "data":
        return (f"mechrec reproduce --dataset {s.dataset} --split {s.split} --seed {s.seed}"
                f"{' --quick' if s.quick else ''} --out {run}")
    if name == "train":
        return (f"mechrec train {s.dataset} --split {s.split} --seed {s.seed} --out {run} "
                f"--n-layers {s.n_layers} --n-heads {s.n_heads} --d-model {s.d_model} "
                f"--d-mlp {s.d_mlp} --max-len {s.max_len} --dropout {s.dropout:g} "
                f"--epochs {s.epochs} --patience {s.patience} --batch-size {s.batch_size} "
                f"--lr {s.lr:g} --k {s.k}")
    if name == "table1":
        return (f"mechrec sae table1 {run} --hook {s.hook} --l1 {_join(s.table1_l1)} "
                f"--d-sae {_join(s.table1_d_sae)} --l1-d-sae {s.table1_l1_d_sae} "
                f"--d-sae-l1 {s.table1_d_sae_l1:g} --seeds {_join(s.table1_seeds)} "
                f"--steps {s.table1_steps} --batch-size {s.table1_batch_size} --k {s.k}")
    if name == "sae":
        return (f"mechrec sae train {run} --hook {s.hook} --architecture standard "
                f"--d-sae {s.sae_d_sae} --l1 {s.sae_l1:g} --steps {s.sae_steps} "
                f"--batch-size {s.sae_batch_size} --seed {s.seed} --name {s.sae_name}")
    if name == "align":
        extra = "".join(f' --title-contains "{t}"' for t in s.align_title_contains)
        extra += "".join(f" --years {y}" for y in s.align_years)
        return (f"mechrec align tables {run} {s.sae_name} --seed {s.seed} --top-k "
                f"{s.align_top_k}{'' if s.align_decades else ' --no-decades'}{extra} "
                f"--bootstrap {s.align_bootstrap}")
    if name == "ablations":
        if not s.ablations:
            return "(none: no ablation rows were asked for)"
        return (f"mechrec align ablations {run} {s.sae_name} --kinds {_join(s.ablations)} "
                f"--seed {s.seed} --bootstrap {s.align_bootstrap}")
    mode = "both" if set(s.steer_modes) == {"replace", "keep-error"} else s.steer_modes[0]
    return (f"mechrec steer sweep {run} {s.sae_name} --genres {_join(s.steer_genres)} "
            f"--values {_join(s.steer_values)} --mode {mode} "
            f"{'--probes' if s.steer_probes else '--no-probes'} --k {s.k} --example-users 0")


def get_step(name: str) -> Step:
    """The step called ``name``."""
    for step in STEPS:
        if step.name == name:
            return step
    raise ValueError(f"unknown step {name!r}; steps: {', '.join(STEP_NAMES)}")


# ------------------------------------------------------------------------------ helpers
def _load_report(report: Any) -> Any:
    if report is None:
        return None
    if is_dataclass(report) and not isinstance(report, type):
        return asdict(report)
    return str(report)


def _json_ready(value: Any) -> Any:
    from mechrec._io import json_safe

    value = json_safe(value)
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_ready(item) for item in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
