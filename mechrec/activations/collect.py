"""Collect activations at a hook of any HookedTransformer, in memory or sharded to disk."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer

from mechrec.activations.sets import ActivationSet
from mechrec.activations.store import (
    ActivationStore,
    ShardWriter,
    bytes_per_row,
    prepare_store_dir,
    write_manifest,
)
from mechrec.distributed import DistContext, all_gather_objects, barrier
from mechrec.hooks import check_per_position, stop_layer_for, validate_hook_name
from mechrec.normalization import RunningMoments, check_finite

#: Rows per shard when a store directory is given without a memory budget.
DEFAULT_SHARD_ROWS = 2**20

Batch = tuple[torch.Tensor, "torch.Tensor | None"]


def _check_batch(i: int, tokens: Any, mask: Any) -> None:
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2:
        raise ValueError(
            f"batch {i}: tokens must be a (batch, seq) integer tensor, got "
            f"{type(tokens).__name__} {getattr(tokens, 'shape', '')}"
        )
    if tokens.is_floating_point():
        raise ValueError(f"batch {i}: tokens must be integers, got {tokens.dtype}")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.shape != tokens.shape:
            raise ValueError(
                f"batch {i}: attention_mask must be a tensor shaped like tokens "
                f"{tuple(tokens.shape)}, got {getattr(mask, 'shape', type(mask).__name__)}"
            )
        if bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError(f"batch {i}: attention_mask must hold only 0 (padding) and 1")


@torch.no_grad()
def iter_batch_activations(
    model: HookedTransformer,
    batches: Iterable[Batch],
    hook_name: str,
    *,
    seq_offset: int = 0,
) -> Iterable[ActivationSet]:
    """For every input batch, the activations at ``hook_name`` of its non-padding positions.

    Only what the hook needs is computed: the cache is filtered to that one hook
    (``names_filter``) and the forward pass stops after the hook's block (``stop_at_layer``).
    Hooks with per-head activations (``hook_z``...) are flattened to ``n_heads * d_head``.

    Args:
        model: any ``HookedTransformer``.
        batches: ``(tokens, attention_mask)`` pairs.
        hook_name: TransformerLens hook name.
        seq_offset: ``sequence_index`` of the first sequence (the sequences of the batches
            before these, when a rank collects a slice of a longer stream).

    Yields:
        one :class:`ActivationSet` per batch, rows in (sequence, position) order, with
        ``sequence_index`` counted over the whole stream.
    """
    validate_hook_name(model, hook_name)
    check_per_position(hook_name)
    stop = stop_layer_for(model, hook_name)
    device = next(model.parameters()).device
    for i, batch in enumerate(batches):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(
                f"batch {i}: expected a (tokens, attention_mask) pair, got {type(batch).__name__}"
            )
        tokens, mask = batch
        _check_batch(i, tokens, mask)
        kwargs: dict[str, Any] = {"names_filter": [hook_name], "return_type": None}
        if stop is not None:
            kwargs["stop_at_layer"] = stop
        if mask is not None:
            kwargs["attention_mask"] = mask.to(device)
        _, cache = model.run_with_cache(tokens.to(device), return_cache_object=False, **kwargs)
        act = cache[hook_name]
        b, length = tokens.shape
        if act.shape[:2] != (b, length):
            raise ValueError(
                f"hook {hook_name!r} gave shape {tuple(act.shape)}, not (batch, seq, ...) = "
                f"({b}, {length}, ...): it does not hold one activation per position"
            )
        act = act.reshape(b, length, -1)
        keep = (
            mask.to(act.device).bool()
            if mask is not None
            else torch.ones(b, length, dtype=torch.bool, device=act.device)
        )
        position = keep.long().cumsum(1) - 1
        seq = torch.arange(b, device=act.device)[:, None].expand(b, length) + seq_offset
        rows = act[keep].float().cpu()
        check_finite(rows, f"activations at {hook_name!r} in batch {i}")
        seq_offset += b
        yield ActivationSet(
            hook_name,
            rows,
            seq[keep].cpu(),
            position[keep].cpu(),
            tokens.to(act.device)[keep].long().cpu(),
        )


def collect_activations(
    model: HookedTransformer,
    batches: Iterable[Batch],
    hook_name: str,
    *,
    memory_budget_mb: float | None = None,
    store_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    dist: DistContext | None = None,
) -> ActivationSet | ActivationStore:
    """Collect the activations at ``hook_name`` for every non-padding position.

    Args:
        model: any TransformerLens ``HookedTransformer`` (put it in eval mode first).
        batches: iterable of ``(tokens, attention_mask)`` pairs, ``(B, L)`` integer tensors;
            the mask is 1 on real positions (any padding side) and may be ``None``.
        hook_name: TransformerLens hook name, e.g. ``"blocks.0.hook_resid_post"``.
        memory_budget_mb: cap on the memory held by collected rows. ``None``: no cap, all
            rows are returned in memory. Otherwise rows go into one buffer of that size; if
            the buffer fills up they are written to ``store_dir`` in shards of that size, so
            peak memory is bounded by the budget (plus one forward pass), not by the number
            of rows.
        store_dir: directory for the shards; required when the budget is exceeded. When
            given, a store is always written there (even if it fits), in shards of the
            budget's size, or of ``DEFAULT_SHARD_ROWS`` rows without a budget.
        overwrite: replace an existing store in ``store_dir``.
        progress: called as ``progress(batches_done, rows_done)`` after every batch.
        dist: the process group under ``torchrun`` (:func:`mechrec.distributed.setup_distributed`).
            With more than one process, ``store_dir`` is required and must be shared by all
            ranks; rank ``r`` of ``W`` runs the ``r``-th contiguous ``1/W`` of the batches
            and writes its own shards (``shard-r{r:03d}-*``); after a barrier rank 0 merges
            the statistics and writes the manifest with the shards in rank order, so the
            store holds the same rows in the same order as a one-process collection (only the
            shard boundaries differ). Every rank returns the opened store.

    Returns:
        an :class:`ActivationSet` (in memory) or an :class:`ActivationStore` (on disk); both
        are activation sources that training, normalisation and metrics accept.
    """
    if dist is not None and dist.enabled:
        if store_dir is None:
            raise ValueError(
                "collecting under torchrun (world size > 1) needs store_dir=...: a directory "
                "every rank can write, where each rank puts its own shards"
            )
        return _collect_distributed(
            model, batches, hook_name, memory_budget_mb, Path(store_dir), overwrite, progress,
            dist,
        )
    moments = RunningMoments()
    writer: ShardWriter | None = None
    chunks: list[ActivationSet] = []
    root = prepare_store_dir(store_dir, overwrite) if store_dir is not None else None
    n_batches = 0
    for n_batches, chunk in enumerate(iter_batch_activations(model, batches, hook_name), 1):
        moments.update(chunk.activations)
        if memory_budget_mb is None and root is None:
            chunks.append(chunk)
        else:
            if writer is None:
                writer = ShardWriter(
                    hook_name, chunk.d, _shard_rows(memory_budget_mb, chunk.d), root
                )
            writer.add(chunk)
        if progress is not None:
            progress(n_batches, moments.count)
    if moments.count == 0:
        raise _nothing_collected(hook_name, n_batches)
    if writer is None:
        out = ActivationSet.concat(chunks)
        out._moments = moments
        return out
    if root is None:
        out = writer.in_memory()
        out._moments = moments
        return out
    return writer.finish(moments, {"n_batches": n_batches})


def _shard_rows(memory_budget_mb: float | None, d: int) -> int:
    if memory_budget_mb is None:
        return DEFAULT_SHARD_ROWS
    return int(memory_budget_mb * 2**20 // bytes_per_row(d))


def _nothing_collected(hook_name: str, n_batches: int) -> ValueError:
    return ValueError(
        f"no activations were collected at {hook_name!r}: "
        + (
            "the batch iterable was empty"
            if n_batches == 0
            else f"all {n_batches} batches were fully padded (attention mask all 0)"
        )
        + "; pass batches with at least one real position"
    )


def _collect_distributed(
    model: HookedTransformer,
    batches: Iterable[Batch],
    hook_name: str,
    memory_budget_mb: float | None,
    store_dir: Path,
    overwrite: bool,
    progress: Callable[[int, int], None] | None,
    dist: DistContext,
) -> ActivationStore:
    """:func:`collect_activations` on one rank of several (see its ``dist`` argument)."""
    every = batches if isinstance(batches, Sequence) else list(batches)
    n_all = len(every)
    start = n_all * dist.rank // dist.world_size
    end = n_all * (dist.rank + 1) // dist.world_size
    for i in range(start):
        _check_batch(i, *every[i])
    seq_offset = sum(int(every[i][0].shape[0]) for i in range(start))
    if dist.is_main:
        prepare_store_dir(store_dir, overwrite)
    barrier(dist)
    moments = RunningMoments()
    writer: ShardWriter | None = None
    n_done = 0
    mine = [every[i] for i in range(start, end)]
    for n_done, chunk in enumerate(
        iter_batch_activations(model, mine, hook_name, seq_offset=seq_offset), 1
    ):
        moments.update(chunk.activations)
        if writer is None:
            writer = ShardWriter(
                hook_name, chunk.d, _shard_rows(memory_budget_mb, chunk.d), store_dir,
                prefix=f"shard-r{dist.rank:03d}-",
            )
        writer.add(chunk)
        if progress is not None:
            progress(n_done, moments.count)
    if writer is not None:
        writer.flush()
    mine_summary = {
        "shards": writer.shards if writer is not None else [],
        "d": writer.d if writer is not None else None,
        "shard_rows": writer.shard_rows if writer is not None else None,
        "peak_rows": writer.peak_rows if writer is not None else 0,
        "moments": (moments.count, moments.mean, moments.m2),
    }
    summaries = all_gather_objects(mine_summary, dist)
    total = RunningMoments()
    for summary in summaries:
        count, mean, m2 = summary["moments"]
        total.merge(RunningMoments(d=summary["d"], count=count, mean=mean, m2=m2))
    if total.count == 0:
        raise _nothing_collected(hook_name, n_all)
    d = next(s["d"] for s in summaries if s["d"] is not None)
    if dist.is_main:
        write_manifest(
            store_dir,
            hook_name,
            d,
            [shard for s in summaries for shard in s["shards"]],
            total,
            {
                "shard_rows": max(s["shard_rows"] or 0 for s in summaries),
                "peak_rows_in_memory": max(s["peak_rows"] for s in summaries),
                "n_batches": n_all,
                "world_size": dist.world_size,
            },
        )
    barrier(dist)
    return ActivationStore.open(store_dir)
