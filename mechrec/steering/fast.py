"""Steering the last position without recomputing the prefix.

In a causal model an edit at the last position changes nothing before it. So
:class:`LastPositionSteerer` runs the batch once (the *prefix pass*) and keeps

- the keys and values of every attention layer for positions ``0..T-2``
  (TransformerLens' ``TransformerLensKeyValueCache``, truncated and frozen), and
- the residual stream entering the hook's block at the last position (``blocks.L.hook_resid_pre``;
  for hooks after the last block, the final ``hook_resid_post``).

Each steering value then re-runs only the last position from the start of the hook's block
(``start_at_layer=L``) with the edit applied at the hook. Starting at the *block* rather than at
the hook makes mid-block hooks exact for free: ``hook_resid_mid``, ``hook_mlp_out``,
``attn.hook_z``, ``attn.hook_k`` and friends all fire on the single re-run position with the
same inputs the full pass gives them, and a key/value edited at the last position is appended to
the cached keys/values exactly as in the full pass. Hooks before the first block
(``hook_embed``, ``hook_pos_embed``) re-run the last token from the embedding with the cache.
The full attention mask is passed, so left padding stays masked and absolute, shortformer and
rotary positions are those of the full pass.

Hooks already on the model fire in both passes; those at or after the hook's block see only
the last position during re-runs.

Values run one at a time by default. ``values_per_pass > 1`` stacks several values along the
batch (the cache is repeated and the hook applies value ``g``'s edit to rows ``g*B..(g+1)*B``);
on a CPU the repeated cache costs more than the per-pass overhead it saves, so 1 is the
default; on a GPU a few values per pass can help.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry
from transformer_lens.hook_points import HookPoint

from mechrec.steering.edits import (
    Edit,
    EditSpec,
    apply_edits,
    as_edit_list,
    check_edits_for_hook,
)
from mechrec.steering.interventions import SteeringHook, capture_hooks
from mechrec.steering.positions import PositionSpec, normalize_positions
from mechrec.steering.validation import check_attention_mask, check_hook_name, check_tokens

_BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.")
_POST_BLOCK_PREFIXES = ("ln_final.", "unembed.")


def hook_start_layer(model: HookedTransformer, hook_name: str) -> int | None:
    """The block a last-position re-run must start at for ``hook_name``.

    Returns ``L`` for ``blocks.L.*``, ``n_layers`` for ``ln_final.*`` / ``unembed.*``, and
    ``None`` for hooks before the first block (the re-run starts at the embedding).
    """
    match = _BLOCK_HOOK.match(hook_name)
    if match:
        return int(match.group(1))
    if hook_name.startswith(_POST_BLOCK_PREFIXES):
        return model.cfg.n_layers
    return None


def input_hooks_problem(model: HookedTransformer, hook_name: str,
                        edit_lists: Sequence[Sequence[Edit]]) -> str | None:
    """Why the last-position re-run cannot give some edit its input hook (a transcoder's
    input hook in a block before the one the re-run starts at), or ``None``."""
    start = hook_start_layer(model, hook_name)
    for edits in edit_lists:
        for edit in edits:
            name = edit.input_hook_name
            if name is None:
                continue
            check_hook_name(model, name)
            layer = hook_start_layer(model, name)
            if start is not None and (layer is None or layer < start):
                return (f"the transcoder reads {name!r}, before the block the re-run of "
                        f"{hook_name!r} starts at")
    return None


def fast_path_problem(
    model: HookedTransformer, tokens: torch.Tensor, attention_mask: torch.Tensor | None
) -> str | None:
    """Why the fast path cannot run this batch, or ``None`` if it can."""
    if model.cfg.attention_dir != "causal":
        return "the model's attention is not causal, so the prefix depends on the last position"
    if getattr(model.cfg, "positional_embedding_type", "standard") == "alibi":
        return "ALiBi position biases are not supported by the cached re-run"
    if attention_mask is not None:
        last = attention_mask[:, -1]
        if not bool((last != 0).all()):
            rows = torch.nonzero(last == 0).flatten().tolist()[:5]
            return (
                f"the last column is padding in rows {rows}: the fast path needs left-padded "
                "batches (pad on the left, e.g. mechrec_recsys.sequences.left_pad)"
            )
    return None


class LastPositionSteerer:
    """Run a batch's prefix once, then steer its last position for many edits cheaply.

    Args:
        model: a causal HookedTransformer.
        tokens: ``(B, T)`` token ids, left-padded.
        attention_mask: ``(B, T)`` with 1 on real positions, or ``None`` if there is no padding.
        hook_name: where the edits apply.
        values_per_pass: how many values share one re-run (see the module docstring).
    """

    def __init__(
        self,
        model: HookedTransformer,
        tokens: torch.Tensor,
        attention_mask: torch.Tensor | None,
        hook_name: str,
        *,
        values_per_pass: int = 1,
    ) -> None:
        self.model = model
        self.hook_name = check_hook_name(model, hook_name)
        device = model.cfg.device
        self.tokens = check_tokens(model, tokens).to(device)
        if attention_mask is None:
            attention_mask = torch.ones_like(self.tokens)
        check_attention_mask(attention_mask, self.tokens)
        self.attention_mask = attention_mask.to(device=self.tokens.device, dtype=torch.long)
        problem = fast_path_problem(model, self.tokens, self.attention_mask)
        if problem:
            raise ValueError(
                f"cannot use the fast last-position path: {problem}; use method='naive' instead"
            )
        self.start = hook_start_layer(model, hook_name)
        if int(values_per_pass) < 1:
            raise ValueError(f"values_per_pass must be >= 1, got {values_per_pass}")
        self.values_per_pass = int(values_per_pass)
        self._prefix_pass()

    @property
    def batch_size(self) -> int:
        """Rows in the batch."""
        return int(self.tokens.shape[0])

    def _prefix_pass(self) -> None:
        model, cfg = self.model, self.model.cfg
        batch = self.batch_size
        cache = TransformerLensKeyValueCache.init_cache(cfg, cfg.device, batch)
        captured: dict[str, torch.Tensor] = {}

        def capture(act: torch.Tensor, hook: HookPoint) -> None:
            captured[hook.name] = act[:, -1:].detach().clone()

        names = []
        if self.start is not None:
            if self.start < cfg.n_layers:
                names.append(f"blocks.{self.start}.hook_resid_pre")
            else:
                names.append(f"blocks.{cfg.n_layers - 1}.hook_resid_post")
            if cfg.positional_embedding_type == "shortformer":
                names.append("hook_pos_embed")
        with torch.no_grad():
            model.run_with_hooks(
                self.tokens,
                attention_mask=self.attention_mask,
                past_kv_cache=cache,
                return_type=None,
                fwd_hooks=[(n, capture) for n in names],
            )
        # Keep each layer's prefix keys/values once, with nothing left referencing the full-size
        # storage of the prefix pass: re-run layers go straight into slotted buffers (the
        # one-value cache re-runs use), the others are cloned trimmed.
        first = self.start or 0
        entries: list[TransformerLensKeyValueCacheEntry] = []
        for i, entry in enumerate(cache.entries):
            keys, values = entry.past_keys[:, :-1], entry.past_values[:, :-1]
            if i < first:  # blocks before the hook's block are not re-run
                entries.append(
                    TransformerLensKeyValueCacheEntry(
                        past_keys=keys.clone(), past_values=values.clone(), frozen=True
                    )
                )
            else:
                entries.append(_LastSlotEntry.from_prefix(keys, values))
        self._cache = TransformerLensKeyValueCache(
            entries=entries,
            previous_attention_mask=cache.previous_attention_mask[:, :-1].clone(),
            frozen=True,
        )
        del cache
        self._caches: dict[int, TransformerLensKeyValueCache] = {1: self._cache}
        self._resid = captured[names[0]] if names else None
        self._shortformer = captured.get("hook_pos_embed")

    def run(self, edits_per_value: Sequence[EditSpec]) -> torch.Tensor:
        """Last-position logits for each edit: ``(n_values, B, d_vocab)``.

        ``edits_per_value[i]`` is an edit, a list of edits or ``None`` (unsteered).
        """
        lists = [as_edit_list(e) for e in edits_per_value]
        for edits in lists:
            check_edits_for_hook(edits, self.hook_name)
        problem = input_hooks_problem(self.model, self.hook_name, lists)
        if problem:
            raise ValueError(f"cannot use the fast last-position path: {problem}; use "
                             "method='naive' instead")
        if not lists:
            return torch.empty(0, self.batch_size, self.model.cfg.d_vocab_out)
        chunk = self.values_per_pass
        outs = [self._run_chunk(lists[i : i + chunk]) for i in range(0, len(lists), chunk)]
        return torch.cat(outs, dim=0)

    def _run_chunk(self, chunk: list[list[Edit]]) -> torch.Tensor:
        model, groups, batch = self.model, len(chunk), self.batch_size
        cache = self._cache_for(groups)
        hook = _GroupedLastHook(chunk, batch)
        mask = self.attention_mask.repeat(groups, 1)
        fwd_hooks = [*hook.captures.items(), (self.hook_name, hook)]
        with torch.no_grad(), model.hooks(fwd_hooks=fwd_hooks):
            if self.start is None:
                logits = model(
                    self.tokens[:, -1:].repeat(groups, 1),
                    attention_mask=self.attention_mask[:, -1:].repeat(groups, 1),
                    past_kv_cache=cache,
                )
            else:
                short = self._shortformer
                logits = model(
                    self._resid.repeat(groups, 1, 1),
                    start_at_layer=self.start,
                    attention_mask=mask,
                    past_kv_cache=cache,
                    shortformer_pos_embed=None if short is None else short.repeat(groups, 1, 1),
                )
        if hook.calls == 0:
            raise RuntimeError(
                f"hook {self.hook_name!r} never fired, so nothing was steered; this hook point is "
                "disabled in the model config (e.g. hook_result needs cfg.use_attn_result=True)"
            )
        return logits[:, -1].reshape(groups, batch, -1)

    def nbytes(self) -> int:
        """Bytes of the tensors this steerer keeps (prefix keys/values with their slots, the
        mask, the residual at the last position, and the repeated caches built for
        ``values_per_pass > 1``), each storage counted once."""
        return tensor_nbytes(self._held_tensors())

    def _held_tensors(self) -> list[torch.Tensor]:
        tensors = [self.tokens, self.attention_mask]
        for extra in (self._resid, self._shortformer):
            if extra is not None:
                tensors.append(extra)
        for cache in [self._cache, *self._caches.values()]:
            tensors.append(cache.previous_attention_mask)
            for entry in cache.entries:
                tensors += [entry.past_keys, entry.past_values]
        return tensors

    def _cache_for(self, groups: int) -> TransformerLensKeyValueCache:
        """A frozen cache of the prefix repeated ``groups`` times, with a slot for the last item.

        Built once per group size and reused by every run: each run overwrites the slot. The
        one-group cache is the prefix cache itself, built by the prefix pass.
        """
        if groups in self._caches:
            return self._caches[groups]
        first = self.start or 0
        entries: list[TransformerLensKeyValueCacheEntry] = []
        for i, entry in enumerate(self._cache.entries):
            if i < first:  # blocks before the hook's block are not re-run
                entries.append(entry)
                continue
            keys, values = entry.past_keys, entry.past_values
            if groups > 1:
                keys, values = keys.repeat(groups, 1, 1, 1), values.repeat(groups, 1, 1, 1)
            entries.append(_LastSlotEntry.from_prefix(keys, values))
        cache = TransformerLensKeyValueCache(
            entries=entries,
            previous_attention_mask=self._cache.previous_attention_mask.repeat(groups, 1),
            frozen=True,
        )
        self._caches[groups] = cache
        return cache


class _LastSlotEntry(TransformerLensKeyValueCacheEntry):
    """A frozen key/value cache entry with one preallocated slot for the re-run position.

    TransformerLens' entry concatenates the cached prefix with the new key/value on every call,
    copying the whole prefix. This one writes the new key/value into the slot in place and
    returns views of buffers laid out as attention consumes them (keys as
    ``(batch, head, d_head, pos)``, values as ``(batch, head, pos, d_head)``), so a re-run copies
    nothing of size ``T``. Runs are sequential, so overwriting the slot is safe.
    """

    keys: torch.Tensor
    values: torch.Tensor

    @classmethod
    def from_prefix(cls, keys: torch.Tensor, values: torch.Tensor) -> _LastSlotEntry:
        """Copy ``(batch, T-1, head, d_head)`` prefix keys/values into slotted buffers."""
        batch, prefix, heads, d_head = keys.shape
        key_buf = keys.new_empty(batch, heads, d_head, prefix + 1).permute(0, 3, 1, 2)
        value_buf = values.new_empty(batch, heads, prefix + 1, d_head).permute(0, 2, 1, 3)
        key_buf[:, :prefix] = keys
        value_buf[:, :prefix] = values
        entry = cls(past_keys=key_buf[:, :prefix], past_values=value_buf[:, :prefix], frozen=True)
        entry.keys, entry.values = key_buf, value_buf
        return entry

    def append(
        self, new_keys: torch.Tensor, new_values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the last position's key/value into the slot; return the full keys/values."""
        if new_keys.shape[1] != 1:
            raise RuntimeError("the last-position cache accepts exactly one new position")
        self.keys[:, -1:] = new_keys
        self.values[:, -1:] = new_values
        return self.keys, self.values


class _GroupedLastHook:
    """Apply edit list ``g`` to rows ``g*B..(g+1)*B`` at the last position."""

    def __init__(self, chunk: list[list[Edit]], batch: int) -> None:
        self.chunk, self.batch, self.calls = chunk, batch, 0
        self.captures = capture_hooks([edit for edits in chunk for edit in edits])

    def __call__(self, activation: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        self.calls += 1
        if activation.ndim < 3 or not activation.is_floating_point():
            raise ValueError(
                f"cannot steer {hook.name!r}: activation of shape {tuple(activation.shape)} and "
                f"dtype {activation.dtype} is not a (batch, pos, ...) float tensor"
            )
        flat = activation.reshape(activation.shape[0], activation.shape[1], -1)
        last = flat[:, -1]
        inputs = {key: capture.take(tuple(flat.shape[:2]), hook.name)[:, -1]
                  for key, capture in self.captures.items()}
        pieces = []
        for g, edits in enumerate(self.chunk):
            part = slice(g * self.batch, (g + 1) * self.batch)
            rows = last[part]
            picked = {key: value[part] for key, value in inputs.items()}
            pieces.append(apply_edits(rows, edits, picked) if edits else rows)
        out = flat.clone()
        out[:, -1] = torch.cat(pieces, dim=0)
        return out.reshape(activation.shape)


def steered_logits(
    model: HookedTransformer,
    tokens: torch.Tensor,
    attention_mask: torch.Tensor | None,
    hook_name: str,
    edits: EditSpec,
    positions: PositionSpec = "last",
) -> torch.Tensor:
    """One full (naive) forward pass with ``edits`` at ``positions``: logits ``(B, T, d_vocab)``."""
    check_hook_name(model, hook_name)
    tokens = check_tokens(model, tokens).to(model.cfg.device)
    if attention_mask is not None:
        check_attention_mask(attention_mask, tokens)
        attention_mask = attention_mask.to(tokens.device)
    hook = SteeringHook(edits, positions, attention_mask, hook_name=hook_name)
    with torch.no_grad(), model.hooks(fwd_hooks=hook.fwd_hooks()):
        logits = model(tokens, attention_mask=attention_mask)
    if hook.calls == 0 and hook.edits:
        raise RuntimeError(
            f"hook {hook_name!r} never fired, so nothing was steered; enable it in the model "
            "config (e.g. hook_result needs cfg.use_attn_result=True)"
        )
    return logits


def last_real_logits(logits: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Logits at each row's last real position: ``(B, T, V) -> (B, V)``."""
    if attention_mask is None:
        return logits[:, -1]
    cols = torch.arange(logits.shape[1], device=logits.device)
    last = torch.where(attention_mask.to(logits.device).bool(), cols, 0).max(dim=1).values
    return logits[torch.arange(logits.shape[0], device=logits.device), last]


def steered_last_logits(
    model: HookedTransformer,
    tokens: torch.Tensor,
    attention_mask: torch.Tensor | None,
    hook_name: str,
    edits_per_value: Sequence[EditSpec],
    *,
    positions: PositionSpec = "last",
    method: str = "auto",
    values_per_pass: int = 1,
) -> torch.Tensor:
    """Last-real-position logits under each edit: ``(n_values, B, d_vocab)``.

    Args:
        model: any HookedTransformer.
        tokens: ``(B, T)`` token ids (left-padded for the fast path).
        attention_mask: ``(B, T)``, 1 on real positions, or ``None``.
        hook_name: hook where the edits apply.
        edits_per_value: one entry per steering value: an edit, a list of edits, or ``None``.
        positions: where the edits apply; only ``"last"`` can use the fast path.
        method: ``"fast"`` (prefix once, re-run the last position; errors if impossible),
            ``"naive"`` (a full forward per value) or ``"auto"`` (fast when possible).
        values_per_pass: see :class:`LastPositionSteerer`.
    """
    if method not in ("auto", "fast", "naive"):
        raise ValueError(f"method must be 'auto', 'fast' or 'naive', got {method!r}")
    spec = normalize_positions(positions)
    check_hook_name(model, hook_name)
    tokens = check_tokens(model, tokens)
    if attention_mask is not None:
        check_attention_mask(attention_mask, tokens)
    last_only = isinstance(spec, str) and spec == "last"
    problem = (fast_path_problem(model, tokens, attention_mask)
               or input_hooks_problem(model, hook_name,
                                      [as_edit_list(e) for e in edits_per_value]))
    use_fast = method == "fast" or (method == "auto" and last_only and problem is None)
    if use_fast:
        if not last_only:
            raise ValueError(
                f"the fast path steers only the last position, got positions={positions!r}; "
                "use method='naive'"
            )
        steerer = LastPositionSteerer(
            model, tokens, attention_mask, hook_name, values_per_pass=values_per_pass
        )
        return steerer.run(edits_per_value)
    outs = []
    for edits in edits_per_value:
        logits = steered_logits(model, tokens, attention_mask, hook_name, edits, spec)
        outs.append(last_real_logits(logits, attention_mask))
    if not outs:
        return torch.empty(0, tokens.shape[0], model.cfg.d_vocab_out)
    return torch.stack(outs)


def tensor_nbytes(tensors: Sequence[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views of one storage count once)."""
    storages: dict[tuple[str, int], int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        storages[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())
