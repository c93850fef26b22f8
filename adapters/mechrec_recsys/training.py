"""Next-item training of GPTRec: full or sampled cross-entropy, early stopping, resume, DDP.

Every real (non-padding) position of a training sequence predicts the item after it. The loss
is cross-entropy over the whole catalog or, for large catalogs, over the target plus
``num_negatives`` uniformly sampled items shared by the batch (accidental hits are masked).
Scores are computed only at real positions.

After every epoch the validation NDCG@k (seen items excluded) decides early stopping, and the
run state (current and best weights, optimiser, RNG states, history) is written atomically to
``out_dir``; an interrupted run resumes from its last completed epoch and continues exactly as
if it had not stopped. Under ``torchrun`` the same call trains with DistributedDataParallel:
each process takes every ``world_size``-th batch and validation is sharded and summed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from transformer_lens import HookedTransformer

from mechrec.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    setup_distributed,
    teardown_distributed,
)
from mechrec_recsys.checkpoint import (
    atomic_write_json,
    load_run_state,
    save_checkpoint,
    save_run_state,
)
from mechrec_recsys.configs import TrainConfig
from mechrec_recsys.durations import format_duration
from mechrec_recsys.metrics import (
    Comparison,
    compare_with_popularity,
    ndcg_all_positions,
    ndcg_at_k,
    recommend_top_k,
)
from mechrec_recsys.model import GPTRecConfig, build_gptrec, final_hidden
from mechrec_recsys.sequences import SequenceSet
from mechrec_recsys.vocab import PAD_TOKEN, ItemVocab

__all__ = [
    "SplitRun",
    "TrainConfig",
    "TrainResult",
    "data_fingerprint",
    "make_training_batches",
    "next_item_loss",
    "train_and_evaluate",
    "train_gptrec",
    "validation_ndcg",
]

METRICS_FILE = "metrics.json"
BEST_DIR = "model"


# Fields that may change when a run is resumed (everything else must match).
_RESUMABLE_CHANGES = {"epochs", "progress", "patience", "eval_batch_size"}


@dataclass
class TrainResult:
    """Outcome of :func:`train_gptrec`.

    Attributes:
        model: the best model (highest validation NDCG; the last one without validation), in
            eval mode.
        vocab: the item vocabulary.
        history: one dict per evaluated epoch (``epoch``, ``loss``, ``val_ndcg``, ``seconds``).
        best_epoch: epoch of the returned weights.
        best_val_ndcg: its validation NDCG (NaN without validation).
        stopped_early: whether patience ran out before ``epochs``.
    """

    model: HookedTransformer
    vocab: ItemVocab
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_ndcg: float = math.nan
    stopped_early: bool = False


# --------------------------------------------------------------------------------------------
# Batches and loss
# --------------------------------------------------------------------------------------------


def _check_sequences(sequences: list[np.ndarray], vocab_size: int, what: str) -> None:
    if len(sequences) == 0:
        raise ValueError(f"the {what} set is empty; it needs at least one sequence")
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
    if flat.size == 0:
        raise ValueError(f"every {what} sequence is empty")
    if flat.min() < 1 or flat.max() >= vocab_size:
        bad = int(flat.min()) if flat.min() < 1 else int(flat.max())
        raise ValueError(
            f"{what} token {bad} is outside the item range 1..{vocab_size - 1}; the sequences "
            "were built with a different item vocabulary (0 is padding)"
        )


def make_training_batches(
    sequences: list[np.ndarray],
    batch_size: int,
    max_len: int,
    rng: np.random.Generator,
    *,
    window: str = "random",
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One epoch of left-padded ``(inputs, attention_mask, targets)`` batches.

    Sequences shorter than 2 items are skipped. A longer sequence contributes ``max_len + 1``
    items (its last ones, or a random window). Sequences are shuffled, grouped by similar
    length (less padding) and the batch order is shuffled again.
    """
    usable = [np.asarray(s, dtype=np.int64) for s in sequences if len(s) >= 2]
    if not usable:
        raise ValueError("no training sequence has 2 or more items; nothing to learn from")
    order = rng.permutation(len(usable))
    windows = []
    for i in order.tolist():
        seq = usable[i]
        extra = len(seq) - (max_len + 1)
        start = int(rng.integers(0, extra + 1)) if (extra > 0 and window == "random") else max(
            extra, 0)
        windows.append(seq[start:start + max_len + 1])
    # Sort by length inside chunks of 50 batches, then shuffle the batches.
    chunk = 50 * batch_size
    grouped: list[np.ndarray] = []
    for c in range(0, len(windows), chunk):
        part = windows[c:c + chunk]
        grouped.extend(sorted(part, key=len))
    batches = []
    for b in range(0, len(grouped), batch_size):
        rows = grouped[b:b + batch_size]
        width = max(len(r) for r in rows) - 1
        inputs = np.zeros((len(rows), width), dtype=np.int64)
        targets = np.zeros((len(rows), width), dtype=np.int64)
        for j, r in enumerate(rows):
            n = len(r) - 1
            inputs[j, width - n:] = r[:-1]
            targets[j, width - n:] = r[1:]
        inputs_t = torch.from_numpy(inputs)
        batches.append((inputs_t, (inputs_t != PAD_TOKEN).long(), torch.from_numpy(targets)))
    return [batches[i] for i in rng.permutation(len(batches)).tolist()]


def next_item_loss(
    model: HookedTransformer,
    tokens: torch.Tensor,
    attention_mask: torch.Tensor,
    targets: torch.Tensor,
    *,
    num_negatives: int = 0,
) -> torch.Tensor:
    """Mean next-item cross-entropy over the real positions of a batch.

    Args:
        model: a GPTRec model.
        tokens, attention_mask: left-padded ``(B, L)`` inputs.
        targets: ``(B, L)`` next item at each position (ignored where the mask is 0).
        num_negatives: 0 for the full-catalog softmax; otherwise the number of uniformly
            sampled negatives shared by the batch (sampled softmax).
    """
    if targets.shape != tokens.shape:
        raise ValueError(f"targets shape {tuple(targets.shape)} != tokens {tuple(tokens.shape)}")
    hidden = final_hidden(model, tokens, attention_mask)
    real = attention_mask.bool()
    y = targets[real]
    vocab = model.cfg.d_vocab
    if y.numel() == 0:
        raise ValueError("the batch has no real positions to train on")
    if int(y.min()) < 1 or int(y.max()) >= vocab:
        raise ValueError(f"a target token is outside the item range 1..{vocab - 1}")
    h = model.ln_final(hidden[real])
    if num_negatives <= 0:
        return F.cross_entropy(model.unembed(h), y)
    negatives = torch.randint(1, vocab, (num_negatives,), device=h.device)
    w_e, b_u = model.embed.W_E, model.unembed.b_U
    positive = (h * w_e[y]).sum(-1, keepdim=True) + b_u[y].unsqueeze(-1)
    negative = torch.addmm(b_u[negatives], h, w_e[negatives].T)
    negative = negative.masked_fill(negatives[None, :] == y[:, None], torch.finfo(h.dtype).min)
    logits = torch.cat([positive, negative], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(y))


class _LossModule(nn.Module):
    """Wraps the loss so DistributedDataParallel sees one forward per step."""

    def __init__(self, model: HookedTransformer, num_negatives: int) -> None:
        super().__init__()
        self.model = model
        self.num_negatives = num_negatives

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor):
        return next_item_loss(self.model, tokens, mask, targets,
                              num_negatives=self.num_negatives)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def validation_ndcg(
    model: HookedTransformer,
    validation: SequenceSet,
    *,
    k: int = 10,
    exclude_seen: bool = True,
    batch_size: int = 512,
    positions: str = "last",
    ctx: DistContext | None = None,
) -> float:
    """Mean NDCG@k on a held-out-target set (sharded over processes under DDP).

    ``positions="last"`` scores each user's target; ``"all"`` every next-item prediction along
    input + target (:func:`~mechrec_recsys.metrics.ndcg_all_positions`).
    """
    ctx = ctx or DistContext()
    if validation.targets is None:
        raise ValueError("the validation set has no targets")
    if positions not in ("last", "all"):
        raise ValueError(f"positions must be 'last' or 'all', got {positions!r}")
    index = np.arange(ctx.rank, len(validation), ctx.world_size)
    total = torch.zeros(2, dtype=torch.float64)
    if index.size:
        part = validation.subset(index)
        if positions == "all":
            values = ndcg_all_positions(model, part, k, exclude_seen=exclude_seen,
                                        batch_size=max(1, batch_size // 16))
        else:
            top = recommend_top_k(model, part, k, exclude_seen=exclude_seen,
                                  batch_size=batch_size)
            values = ndcg_at_k(top, part.targets)
        total += torch.tensor([values.sum(), values.size], dtype=torch.float64)
    device = next(model.parameters()).device
    total = all_reduce_sum(total.to(device), ctx).cpu()
    return float(total[0] / max(total[1], 1.0))


# --------------------------------------------------------------------------------------------
# Run state (resume)
# --------------------------------------------------------------------------------------------


def data_fingerprint(vocab: ItemVocab, sequences: list[np.ndarray]) -> str:
    """SHA-256 of a training set: the vocabulary's items and every sequence's tokens.

    Saved with the training state (``data_sha256``); resuming and reopening a run
    (:meth:`~mechrec_recsys.experiment.Experiment.open`) compare it with the data at hand.
    """
    digest = hashlib.sha256(vocab.item_ids.tobytes())
    digest.update(np.asarray([len(s) for s in sequences], dtype=np.int64).tobytes())
    for s in sequences:
        digest.update(np.asarray(s, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _describe_mismatch(saved: dict, current: dict) -> str:
    diffs = [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}"
             for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    return "; ".join(diffs[:4])


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def _default_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train_gptrec(
    train: SequenceSet,
    vocab: ItemVocab,
    *,
    validation: SequenceSet | None = None,
    model_config: GPTRecConfig | None = None,
    train_config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    resume: bool = True,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train GPTRec on next-item prediction.

    Args:
        train: training sequences (token arrays over ``vocab``).
        vocab: the item vocabulary (its size fixes the model's vocabulary).
        validation: sequences with held-out targets for early stopping (optional).
        model_config: architecture (default :class:`GPTRecConfig` ()).
        train_config: hyperparameters (default :class:`TrainConfig` ()).
        out_dir: where run state and the best model (``out_dir/model``) are written; ``None``
            keeps everything in memory (no resume).
        resume: continue the run found in ``out_dir`` (its settings must match).
        device: ``"cpu"`` or ``"cuda"``; under ``torchrun`` CUDA processes use their local rank.
        log: receives one line per epoch (default: stderr when ``progress`` is on, on rank 0).

    Returns:
        A :class:`TrainResult` holding the best model in eval mode.
    """
    model_config = model_config or GPTRecConfig()
    cfg = train_config or TrainConfig()
    sequences = [np.asarray(s, dtype=np.int64) for s in train.sequences]
    _check_sequences(sequences, vocab.size, "training")
    if validation is not None:
        if validation.targets is None:
            raise ValueError("the validation set has no targets; pass a set with held-out items")
        _check_sequences(list(validation.sequences), vocab.size, "validation")
        _check_sequences([np.asarray(validation.targets)], vocab.size, "validation target")

    ctx = setup_distributed(device)
    try:
        if ctx.enabled and str(device).startswith("cuda"):
            device = f"cuda:{ctx.local_rank}"
        positions = cfg.validation
        if positions == "auto" and validation is not None:
            shared = np.intersect1d(np.asarray(validation.users), np.asarray(train.users))
            positions = "last" if shared.size else "all"
        return _train(sequences, vocab, validation, positions, model_config, cfg,
                      Path(out_dir) if out_dir is not None else None, resume, device, ctx, log)
    finally:
        teardown_distributed(ctx)


def _train(sequences: list[np.ndarray], vocab: ItemVocab, validation: SequenceSet | None,
           positions: str, model_config: GPTRecConfig, cfg: TrainConfig, out_dir: Path | None,
           resume: bool, device: str, ctx: DistContext,
           log: Callable[[str], None] | None) -> TrainResult:
    if log is None:
        log = _default_log if (cfg.progress and ctx.is_main) else (lambda _m: None)
    elif not ctx.is_main:
        log = lambda _m: None  # noqa: E731
    model = build_gptrec(vocab.size, model_config, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, cfg.beta2),
                                 weight_decay=cfg.weight_decay)
    identity = {
        "model_config": model_config.to_json(),
        "train_config": {k: v for k, v in cfg.to_json().items() if k not in _RESUMABLE_CHANGES},
        "data_sha256": data_fingerprint(vocab, sequences),
        "world_size": ctx.world_size,
    }
    history: list[dict[str, float]] = []
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    best_metric, best_epoch, bad_evals, start_epoch, finished = -math.inf, 0, 0, 0, False

    saved_state = load_run_state(out_dir) if out_dir is not None and resume else None
    if saved_state is not None:
        saved = saved_state.info
        mismatch = _describe_mismatch(
            {k: saved.get(k) for k in identity}, json.loads(json.dumps(identity)))
        if mismatch:
            raise ValueError(
                f"{out_dir} holds a run with different settings or data ({mismatch}); "
                "use a new output directory or disable resuming"
            )
        model.load_state_dict(saved_state.model)
        best_state = saved_state.best
        saved_state.restore_optimizer(optimizer)
        history = [{k: (math.nan if v is None else v) for k, v in h.items()}
                   for h in saved["history"]]
        best_metric = saved["best_metric"] if saved["best_metric"] is not None else -math.inf
        best_epoch, bad_evals = saved["best_epoch"], saved["bad_evals"]
        start_epoch, finished = saved["epoch"], saved["stopped_early"]
        log(f"resuming {out_dir} after epoch {start_epoch}")

    loss_module: nn.Module = _LossModule(model, cfg.num_negatives if cfg.loss == "sampled" else 0)
    if ctx.enabled:
        loss_module = DistributedDataParallel(loss_module, broadcast_buffers=False)

    stopped_early = finished
    epoch = start_epoch
    if not finished and epoch < cfg.epochs:
        n_batches = math.ceil(sum(len(s) >= 2 for s in sequences) / cfg.batch_size)
        log(f"training GPTRec on {len(sequences):,} users ({n_batches} batches of "
            f"{cfg.batch_size}), {vocab.size - 1:,} items: up to {cfg.epochs} epochs, stopping "
            f"early once more than {cfg.patience} evaluations in a row bring no better "
            f"validation NDCG@{cfg.eval_k}")
    session_start, session_epochs = time.perf_counter(), 0
    while not stopped_early and epoch < cfg.epochs:
        epoch += 1
        started = time.perf_counter()
        # Every epoch has its own seeds, so a resumed run replays exactly, on any rank.
        rng = np.random.default_rng([cfg.seed, epoch])
        torch.manual_seed(cfg.seed * 1_000_003 + epoch * 7_919 + ctx.rank)
        batches = make_training_batches(sequences, cfg.batch_size, model_config.max_len, rng,
                                        window=cfg.window)
        per_rank = math.ceil(len(batches) / ctx.world_size)
        batches = (batches * ctx.world_size)[: per_rank * ctx.world_size]
        mine = batches[ctx.rank::ctx.world_size]
        model.train()
        loss_sum, loss_count = 0.0, 0
        with _progress(cfg.progress and ctx.is_main, f"epoch {epoch}", len(mine)) as advance:
            for tokens, mask, targets in mine:
                loss = loss_module(tokens.to(device), mask.to(device), targets.to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                loss_sum += float(loss.detach())
                loss_count += 1
                advance(float(loss.detach()))
        model.eval()
        mean_loss = _mean_over_ranks(loss_sum, loss_count, device, ctx)
        if epoch % cfg.eval_every and epoch != cfg.epochs:
            continue
        val = math.nan
        if validation is not None:
            val = validation_ndcg(model, validation, k=cfg.eval_k, exclude_seen=cfg.exclude_seen,
                                  batch_size=cfg.eval_batch_size, positions=positions, ctx=ctx)
        improved = validation is None or val > best_metric
        if improved:
            best_metric, best_epoch, bad_evals = (val if validation is not None else -math.inf,
                                                  epoch, 0)
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_evals += 1
            stopped_early = bad_evals > cfg.patience
        seconds = time.perf_counter() - started
        session_epochs += 1
        history.append({"epoch": epoch, "loss": mean_loss, "val_ndcg": val, "seconds": seconds})
        left = _time_left(cfg, epoch, best_epoch, stopped_early, validation,
                          (time.perf_counter() - session_start) / session_epochs)
        log(f"epoch {epoch}/{cfg.epochs}: loss {mean_loss:.4f}  val NDCG@{cfg.eval_k} "
            f"({positions}) {val:.4f}{'  *' if improved and validation is not None else ''}  "
            f"({seconds:.1f}s){left}")
        if out_dir is not None and ctx.is_main:
            save_run_state(out_dir, model_state=model.state_dict(), best_state=best_state,
                           optimizer=optimizer, info={
                **identity,
                "epoch": epoch,
                "history": [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                             for k, v in h.items()} for h in history],
                "best_metric": None if best_metric == -math.inf else best_metric,
                "best_epoch": best_epoch,
                "bad_evals": bad_evals,
                "stopped_early": stopped_early,
            })
        barrier(ctx)

    model.load_state_dict(best_state)
    model.eval()
    if out_dir is not None and ctx.is_main:
        save_checkpoint(out_dir / BEST_DIR, model, vocab, metadata={
            "train_config": cfg.to_json(),
            "best_epoch": best_epoch,
            "best_val_ndcg": None if best_metric == -math.inf else best_metric,
        })
    barrier(ctx)
    return TrainResult(
        model=model, vocab=vocab, history=history, best_epoch=best_epoch,
        best_val_ndcg=math.nan if best_metric == -math.inf else best_metric,
        stopped_early=stopped_early,
    )


def _time_left(cfg: TrainConfig, epoch: int, best_epoch: int, stopped: bool,
               validation: SequenceSet | None, per_epoch: float) -> str:
    """``; ~2 min 10 s left ...``: the estimate shown after an epoch, at the session's mean
    epoch time, until early stopping would end the run if validation stops improving (and
    until the last epoch otherwise)."""
    if stopped or epoch >= cfg.epochs:
        return ""
    last = cfg.epochs
    if validation is not None:
        last = min(last, best_epoch + (cfg.patience + 1) * cfg.eval_every)
    text = f"; ~{format_duration(per_epoch * (last - epoch))} left"
    if last < cfg.epochs:
        text += (f" if no better epoch comes (at most "
                 f"{format_duration(per_epoch * (cfg.epochs - epoch))})")
    return text


def _mean_over_ranks(total: float, count: int, device: str, ctx: DistContext) -> float:
    summed = all_reduce_sum(torch.tensor([total, count], dtype=torch.float64, device=device), ctx)
    return float(summed[0] / max(float(summed[1]), 1.0))


class _progress:
    """A rich progress bar over one epoch's batches (a no-op when disabled)."""

    def __init__(self, enabled: bool, description: str, total: int) -> None:
        self.enabled, self.description, self.total = enabled, description, total
        self._bar: Any = None

    def __enter__(self) -> Callable[[float], None]:
        if not self.enabled:
            return lambda _loss: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        console = Console(stderr=True)
        self._bar = Progress("[progress.description]{task.description}", BarColumn(),
                             MofNCompleteColumn(), "loss {task.fields[loss]:.4f}",
                             TimeRemainingColumn(), transient=True, console=console,
                             disable=not console.is_terminal)
        self._bar.start()
        task = self._bar.add_task(self.description, total=self.total, loss=float("nan"))
        return lambda loss: self._bar.update(task, advance=1, loss=loss)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


@dataclass
class SplitRun:
    """A model trained on a split's training part and compared with popularity on its test part.

    Attributes:
        result: the training outcome (best model, history).
        comparison: GPTRec vs popularity on the test users, with standard errors.
        split_info: the split's ``info`` counts.
    """

    result: TrainResult
    comparison: Comparison
    split_info: dict

    def to_json(self) -> dict:
        """JSON summary (metrics, split counts, best epoch, history)."""
        return {
            "comparison": self.comparison.to_json(),
            "split": self.split_info,
            "best_epoch": self.result.best_epoch,
            "best_val_ndcg": None if math.isnan(self.result.best_val_ndcg)
            else self.result.best_val_ndcg,
            "stopped_early": self.result.stopped_early,
            "history": [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                         for k, v in h.items()} for h in self.result.history],
        }


def train_and_evaluate(
    split: Any,
    *,
    model_config: GPTRecConfig | None = None,
    train_config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    resume: bool = True,
    device: str = "cpu",
    k: int = 10,
    exclude_seen: bool = True,
    targets_per_user: int = 1,
    log: Callable[[str], None] | None = None,
) -> SplitRun:
    """Train GPTRec on ``split.train`` (early stopping on ``split.validation``) and compare it
    with the popularity baseline on ``split.test``.

    ``split`` is a :class:`mechrec_recsys.data.Split` (anything with ``vocab``, ``train``,
    ``validation``, ``test`` and ``info``). With ``out_dir`` the summary is also written to
    ``out_dir/metrics.json``. ``targets_per_user > 1`` scores each test user's last that many
    items (:func:`~mechrec_recsys.metrics.expand_last_targets`) instead of one; it needs test
    users that are not training users (the paper split), since under leave-one-out their earlier
    items are training data.
    """
    if targets_per_user > 1 and np.intersect1d(np.asarray(split.test.users),
                                               np.asarray(split.train.users)).size:
        raise ValueError(
            "scoring several items per test user needs test users who are not training users "
            "(the paper split); under leave-one-out their earlier items are training data"
        )
    result = train_gptrec(split.train, split.vocab, validation=split.validation,
                          model_config=model_config, train_config=train_config, out_dir=out_dir,
                          resume=resume, device=device, log=log)
    comparison = compare_with_popularity(result.model, split.train, split.test, k=k,
                                         exclude_seen=exclude_seen,
                                         targets_per_user=targets_per_user)
    run = SplitRun(result=result, comparison=comparison, split_info=dict(split.info))
    if out_dir is not None and _rank_from_env() == 0:
        atomic_write_json(Path(out_dir) / METRICS_FILE, run.to_json())
    return run


def _rank_from_env() -> int:
    return int(os.environ.get("RANK", "0"))
