"""GPTRec: a GPT-style next-item recommender built as a TransformerLens ``HookedTransformer``.

The model is a stock ``HookedTransformer`` (pre-LayerNorm blocks, learned absolute positions,
causal attention) over the item vocabulary: token 0 is padding, items are tokens ``1..N``.
Three things are added on top, all without changing a hook name or a parameter name:

* **Tied output scores.** ``unembed`` is replaced by :class:`TiedUnembed`, whose ``W_U`` is a
  *view* of ``embed.W_E`` (shared storage, one gradient). It keeps ``unembed.hook_in`` /
  ``unembed.hook_out`` and a learned per-item bias ``b_U``. The padding column of every score
  tensor is set to the dtype's most negative finite value, so padding is never recommended and
  softmax / log-softmax stay finite.
* **Dropout in training only.** Plain ``torch`` forward hooks on ``embed``, every ``attn`` and
  every ``mlp`` module apply dropout when the module is in training mode; they are not
  TransformerLens hook points, so ``reset_hooks`` and sae-lens' SAE splicing never remove them,
  and ``run_with_cache`` in eval mode sees the deterministic model.
* **A fused fast path.** Blocks, attention and LayerNorm modules get subclasses (methods only,
  same parameters and hook points) that, whenever none of the hook points *inside* them carries
  a hook, normalise the block input once instead of three times (queries, keys, values), project
  queries/keys/values with one matmul, and use ``F.scaled_dot_product_attention`` and
  ``F.layer_norm``. As soon as a hook observes those internals (``run_with_cache`` hooks every
  point) the stock TransformerLens computation runs, so every cached or patched activation is
  the TransformerLens one. Block-level hook points (``hook_resid_*``, ``hook_attn_out``,
  ``hook_mlp_out``, MLP hooks) fire on both paths. ``set_fast_path(model, False)`` turns it off.

Batches are left-padded with an attention mask. TransformerLens counts absolute positions from
each row's first real item when a mask is given, so the scores at position -1 do not depend on
how much padding precedes a sequence.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.components import Attention, LayerNorm, TransformerBlock
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

from mechrec_recsys.configs import GPTRecConfig
from mechrec_recsys.vocab import PAD_TOKEN

__all__ = [
    "FastAttention",
    "FastLayerNorm",
    "FastTransformerBlock",
    "GPTRecConfig",
    "TiedUnembed",
    "build_gptrec",
    "final_hidden",
    "item_scores",
    "last_position_scores",
    "set_fast_path",
    "to_hooked_sae_transformer",
    "validate_batch",
]


def _has_hooks(hook_point: nn.Module) -> bool:
    """Whether a hook point is observed: it carries a forward/backward hook, or it has been
    replaced by another module (e.g. an SAE spliced in by sae-lens' ``HookedSAETransformer``)."""
    return type(hook_point) is not HookPoint or bool(
        hook_point._forward_hooks
        or hook_point._forward_pre_hooks
        or hook_point._backward_hooks
        or hook_point._backward_pre_hooks
    )


class FastLayerNorm(LayerNorm):
    """TransformerLens ``LayerNorm`` that uses ``F.layer_norm`` when its hooks are unobserved."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` over its last dimension (same result as the TransformerLens code)."""
        if (
            getattr(self, "fast_path", False)
            and x.dtype in (torch.float32, torch.float64)
            and not _has_hooks(self.hook_scale)
            and not _has_hooks(self.hook_normalized)
        ):
            return F.layer_norm(x, (self.length,), self.w, self.b, self.eps)
        return super().forward(x)


_ATTENTION_HOOKS = ("hook_q", "hook_k", "hook_v", "hook_attn_scores", "hook_pattern", "hook_z")


class FastAttention(Attention):
    """TransformerLens ``Attention`` with a fused ``scaled_dot_product_attention`` path.

    The fused path runs only when no hook is attached to ``hook_q/k/v``, ``hook_attn_scores``,
    ``hook_pattern`` or ``hook_z``, no KV cache is used and ``use_attn_result`` is off; otherwise
    the TransformerLens computation runs unchanged. Query rows without any visible key (left
    padding) get a zero mix of values, exactly as TransformerLens produces.
    """

    def _fast_path_ok(self, past_kv_cache_entry: Any) -> bool:
        if not getattr(self, "fast_path", False) or past_kv_cache_entry is not None:
            return False
        if self.cfg.use_attn_result or self.cfg.positional_embedding_type != "standard":
            return False
        direction = getattr(self, "_attention_dir_override", None) or self.cfg.attention_dir
        if direction != "causal" or self.attn_type != "global":
            return False
        return not any(_has_hooks(getattr(self, name)) for name in _ATTENTION_HOOKS)

    def forward(  # type: ignore[override]
        self,
        query_input: torch.Tensor,
        key_input: torch.Tensor,
        value_input: torch.Tensor,
        past_kv_cache_entry: Any = None,
        additive_attention_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Causal self-attention; see the class docstring for when the fused kernel is used."""
        if (
            additive_attention_mask is not None
            or position_bias is not None
            or query_input.dim() != 3
            or not self._fast_path_ok(past_kv_cache_entry)
        ):
            return super().forward(
                query_input,
                key_input,
                value_input,
                past_kv_cache_entry=past_kv_cache_entry,
                additive_attention_mask=additive_attention_mask,
                attention_mask=attention_mask,
                position_bias=position_bias,
            )
        if query_input is key_input and key_input is value_input:
            q, k, v = self._fused_qkv(query_input)
        else:
            q, k, v = self.calculate_qkv_matrices(query_input, key_input, value_input)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [batch, head, pos, d_head]
        scale = 1.0 / float(self.attn_scale)
        if attention_mask is None:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        else:
            length = q.shape[-2]
            causal = torch.ones(length, length, dtype=torch.bool, device=q.device).tril_()
            keys = attention_mask.bool()[:, None, None, :]  # [batch, 1, 1, key]
            # Padding queries see no key in TransformerLens (zero output); give them their own
            # position so the kernel stays finite, then zero them below.
            visible = (causal & keys) | torch.eye(length, dtype=torch.bool, device=q.device)
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=visible, scale=scale)
            z = z * attention_mask[:, None, :, None].to(z.dtype)
        batch, _, length, _ = z.shape
        z = z.transpose(1, 2).reshape(batch, length, self.cfg.n_heads * self.cfg.d_head)
        w_o = self.W_O.reshape(self.cfg.n_heads * self.cfg.d_head, self.cfg.d_model)
        return torch.addmm(self.b_O, z.reshape(-1, z.shape[-1]), w_o).view(
            batch, length, self.cfg.d_model
        )


    def _fused_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of one input with a single matmul: each ``[b, p, h, d]``."""
        n_heads, d_head = self.cfg.n_heads, self.cfg.d_head
        weight = torch.cat([self.W_Q, self.W_K, self.W_V])  # [3 * head, d_model, d_head]
        weight = weight.permute(1, 0, 2).reshape(self.cfg.d_model, 3 * n_heads * d_head)
        bias = torch.cat([self.b_Q, self.b_K, self.b_V]).reshape(-1)
        qkv = torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight)
        qkv = qkv.view(x.shape[0], x.shape[1], 3, n_heads, d_head)
        return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]


class FastTransformerBlock(TransformerBlock):
    """TransformerLens block that normalises its input once for queries, keys and values.

    TransformerLens applies ``ln1`` separately to the query, key and value inputs (so that each
    can be hooked). When nothing observes ``ln1`` and the attention fast path applies, this
    block computes ``ln1`` once and lets attention project it with one fused matmul; every hook
    point of the block (``hook_resid_pre``, ``hook_attn_out``, ``hook_resid_mid``,
    ``hook_mlp_out``, ``hook_resid_post``, the MLP's) still fires with the same values.
    """

    def _fast_path_ok(self, shortformer_pos_embed: Any, past_kv_cache_entry: Any) -> bool:
        cfg = self.cfg
        return (
            getattr(self, "fast_path", False)
            and shortformer_pos_embed is None
            and past_kv_cache_entry is None
            and not (cfg.use_attn_in or cfg.use_split_qkv_input or cfg.use_hook_mlp_in)
            and not (cfg.attn_only or cfg.parallel_attn_mlp)
            and not cfg.use_normalization_before_and_after
            and cfg.original_architecture not in POST_NORM_ARCHITECTURES
            and isinstance(self.attn, FastAttention)
            and self.attn._fast_path_ok(None)
            and not _has_hooks(self.ln1.hook_scale)
            and not _has_hooks(self.ln1.hook_normalized)
        )

    def forward(  # type: ignore[override]
        self,
        resid_pre: torch.Tensor,
        shortformer_pos_embed: torch.Tensor | None = None,
        past_kv_cache_entry: Any = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One pre-LayerNorm block; see the class docstring for the fast path."""
        if not self._fast_path_ok(shortformer_pos_embed, past_kv_cache_entry):
            return super().forward(resid_pre, shortformer_pos_embed=shortformer_pos_embed,
                                   past_kv_cache_entry=past_kv_cache_entry,
                                   attention_mask=attention_mask)
        resid_pre = self.hook_resid_pre(resid_pre)
        normalized = self.ln1(resid_pre)
        attn_out = self.hook_attn_out(
            self.attn(normalized, normalized, normalized, attention_mask=attention_mask))
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_out = self.apply_mlp(self.ln2(resid_mid))
        return self.hook_resid_post(resid_mid + mlp_out)


class TiedUnembed(nn.Module):
    """Output layer whose weight is the transposed item embedding (shared storage).

    ``W_U`` is a property returning ``embed.W_E.T`` (a view), so the two can never drift apart and
    the optimiser sees one parameter. ``b_U`` is a learned per-item bias. Hook points ``hook_in``
    and ``hook_out`` are those of TransformerLens' ``Unembed``.
    """

    def __init__(self, cfg: HookedTransformerConfig, embed: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        # Plain attribute (not a registered submodule): the embedding's weight must appear once
        # in the state dict, under ``embed.W_E``.
        object.__setattr__(self, "_embed", embed)
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab_out, dtype=cfg.dtype))
        self.hook_in = HookPoint()
        self.hook_out = HookPoint()

    @property
    def W_U(self) -> torch.Tensor:
        """``[d_model, d_vocab]`` view of the item embedding."""
        return self._embed.W_E.T

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        """Scores ``residual @ W_E.T + b_U`` with the padding column at the lowest finite value."""
        residual = self.hook_in(residual)
        scores = F.linear(residual, self._embed.W_E, self.b_U)
        scores[..., PAD_TOKEN] = torch.finfo(scores.dtype).min
        return self.hook_out(scores)


def _dropout_hook(module: nn.Module, args: Any, output: torch.Tensor, *, p: float) -> torch.Tensor:
    """Forward hook: dropout on a module's output while that module is training."""
    return F.dropout(output, p, module.training)


def _install_gptrec_parts(model: HookedTransformer, config: GPTRecConfig) -> None:
    """Tie the output layer, add training-only dropout and the fast path to a fresh model."""
    # The subclasses add methods only (no state), so swapping the class of the freshly built
    # TransformerLens components keeps their parameters, buffers and hook points.
    for block in model.blocks:
        block.__class__ = FastTransformerBlock
        block.attn.__class__ = FastAttention
        block.ln1.__class__ = FastLayerNorm
        block.ln2.__class__ = FastLayerNorm
    model.ln_final.__class__ = FastLayerNorm
    set_fast_path(model, config.fast_path)
    model.unembed = TiedUnembed(model.cfg, model.embed)
    if config.dropout > 0:
        hook = functools.partial(_dropout_hook, p=config.dropout)
        model.embed.register_forward_hook(hook)
        for block in model.blocks:
            block.attn.register_forward_hook(hook)
            block.mlp.register_forward_hook(hook)
    model.gptrec_config = config
    model.setup()


def set_fast_path(model: HookedTransformer, enabled: bool) -> None:
    """Switch the fused attention / LayerNorm kernels on or off (off: pure TransformerLens)."""
    for module in model.modules():
        if isinstance(module, (FastTransformerBlock, FastAttention, FastLayerNorm)):
            module.fast_path = bool(enabled)


def _tl_config(vocab_size: int, config: GPTRecConfig, device: str) -> HookedTransformerConfig:
    return HookedTransformerConfig(
        model_name="gptrec",
        n_layers=config.n_layers,
        d_model=config.d_model,
        n_heads=config.n_heads,
        d_head=config.d_model // config.n_heads,
        d_mlp=config.d_mlp,
        d_vocab=vocab_size,
        d_vocab_out=vocab_size,
        n_ctx=config.max_len,
        act_fn=config.act_fn,
        normalization_type="LN",
        positional_embedding_type="standard",
        attention_dir="causal",
        default_prepend_bos=False,
        device=device,
        seed=None,
    )


def build_gptrec(
    vocab_size: int, config: GPTRecConfig | None = None, *, device: str = "cpu"
) -> HookedTransformer:
    """Build a GPTRec ``HookedTransformer`` over ``vocab_size`` tokens (items + padding 0).

    Args:
        vocab_size: ``ItemVocab.size`` (number of items + 1).
        config: architecture; defaults to :class:`GPTRecConfig` ().
        device: torch device of the parameters.

    Returns:
        The model in eval mode, with ``model.gptrec_config`` set.
    """
    config = config or GPTRecConfig()
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2 (padding + one item), got {vocab_size}")
    return _make_model(HookedTransformer, vocab_size, config, device)


def _make_model(
    cls: type[HookedTransformer], vocab_size: int, config: GPTRecConfig, device: str
) -> HookedTransformer:
    cfg = _tl_config(vocab_size, config, device)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # TransformerLens 3.x flags HookedTransformer as deprecated in favour of its bridge to
        # Hugging Face models; a model built from a config has no such counterpart.
        warnings.filterwarnings("ignore", message="HookedTransformer is deprecated",
                                category=DeprecationWarning)
        if config.init_seed is not None:
            torch.manual_seed(config.init_seed)
        model = cls(cfg, move_to_device=False)
    model.to(device, print_details=False)
    _install_gptrec_parts(model, config)
    model.eval()
    return model


def to_hooked_sae_transformer(model: HookedTransformer) -> HookedTransformer:
    """Copy a GPTRec model into sae-lens' ``HookedSAETransformer`` (same weights and outputs).

    The copy has the same config, tied output layer, dropout and fast path; SAEs can then be
    attached with ``add_sae`` / ``run_with_saes``.
    """
    from sae_lens import HookedSAETransformer

    config: GPTRecConfig = _gptrec_config_of(model)
    device = str(next(model.parameters()).device)
    sae_model = _make_model(HookedSAETransformer, model.cfg.d_vocab, config, device)
    sae_model.load_state_dict(model.state_dict(), strict=True)
    sae_model.train(model.training)
    return sae_model


def _gptrec_config_of(model: HookedTransformer) -> GPTRecConfig:
    config = getattr(model, "gptrec_config", None)
    if not isinstance(config, GPTRecConfig):
        raise ValueError("not a GPTRec model: build it with mechrec_recsys.model.build_gptrec")
    return config


def validate_batch(
    model: HookedTransformer, tokens: torch.Tensor, attention_mask: torch.Tensor | None
) -> None:
    """Raise ``ValueError`` unless ``(tokens, attention_mask)`` is a valid left-padded batch.

    Checks: 2-D int tensors of equal shape, at least one row, no row that is all padding, the last
    position real in every row, tokens within the vocabulary, length within ``n_ctx``.
    """
    if tokens.dim() != 2:
        raise ValueError(
            f"tokens must be a (batch, length) tensor, got shape {tuple(tokens.shape)}"
        )
    if tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise ValueError("empty batch: tokens has shape "
                         f"{tuple(tokens.shape)}; pass at least one non-empty sequence")
    if tokens.dtype.is_floating_point:
        raise ValueError(f"tokens must be integers, got {tokens.dtype}")
    if tokens.shape[1] > model.cfg.n_ctx:
        raise ValueError(
            f"sequence length {tokens.shape[1]} exceeds the model's max_len {model.cfg.n_ctx}; "
            "truncate to the most recent items (left_pad(..., max_len=...))"
        )
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= model.cfg.d_vocab:
        bad = low if low < 0 else high
        raise ValueError(
            f"token {bad} is outside the model vocabulary 0..{model.cfg.d_vocab - 1}; "
            "the data and the model use different item vocabularies"
        )
    if attention_mask is None:
        if (tokens == PAD_TOKEN).any():
            raise ValueError("tokens contain padding (0) but no attention_mask was given")
        return
    if attention_mask.shape != tokens.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} != tokens shape "
            f"{tuple(tokens.shape)}"
        )
    real = attention_mask.bool()
    if not real.any(dim=1).all():
        row = int((~real.any(dim=1)).nonzero()[0])
        raise ValueError(f"sequence {row} of the batch is all padding; drop empty sequences")
    if not real[:, -1].all():
        row = int((~real[:, -1]).nonzero()[0])
        raise ValueError(
            f"sequence {row} is not left-padded (its last position is padding); "
            "build batches with mechrec_recsys.sequences.left_pad"
        )
    if (tokens[real] == PAD_TOKEN).any():
        raise ValueError("token 0 (padding) occurs at a position the attention_mask marks real")


def final_hidden(
    model: HookedTransformer, tokens: torch.Tensor, attention_mask: torch.Tensor | None
) -> torch.Tensor:
    """Residual stream after the last block, before ``ln_final``: ``(batch, length, d_model)``."""
    validate_batch(model, tokens, attention_mask)
    return model(tokens, attention_mask=attention_mask, stop_at_layer=model.cfg.n_layers)


def item_scores(model: HookedTransformer, hidden: torch.Tensor) -> torch.Tensor:
    """Scores over the vocabulary for selected final residuals ``(..., d_model) -> (..., V)``.

    Applies ``ln_final`` and the tied output layer; use it on the rows that need scores only.
    """
    return model.unembed(model.ln_final(hidden))


def last_position_scores(
    model: HookedTransformer, tokens: torch.Tensor, attention_mask: torch.Tensor | None
) -> torch.Tensor:
    """Next-item scores after each sequence's last real item: ``(batch, vocab_size)``."""
    hidden = final_hidden(model, tokens, attention_mask)
    return item_scores(model, hidden[:, -1:, :])[:, 0, :]
