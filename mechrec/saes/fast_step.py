"""One SAE training step with sae-lens' math and few passes over the (rows x features) tensors.

On a CPU, sae-lens' ``SAETrainer.step`` spends most of its time on the ``(batch, d_sae)``
tensors rather than in the matrix products: every elementwise operation on them (the
decoder-norm rescaling, the L1 norm and its ``sgn`` backward, the JumpReLU straight-through
estimators, the ``bool().float()`` firing statistics, autograd's gradient accumulation)
writes a fresh tensor (32 MiB at 4096 rows x 2048 features), and first touching fresh pages
costs more than the arithmetic. :func:`fast_train_step` computes the same losses and
gradients as ``SAETrainer.step`` on the same sae-lens ``TrainingSAE``, with the trainer's
own Adam, learning-rate and coefficient schedulers, gradient clipping and dead-feature
bookkeeping, but

- does the ``(batch, d_sae)`` part of each architecture in one autograd function whose
  forward and backward work in place in buffers kept across steps (:class:`Workspace`);
- folds the decoder-norm weighted L1 penalty into the decoder product (one extra column
  holding the decoder norms), so it and its gradient cost no pass of their own;
- decodes TopK activations sparsely (``embedding_bag``), computes the gated SAE's gate
  pre-activation once instead of twice, and folds TopK's decoder-norm rescaling into the
  (small) encoder weights;
- finds BatchTopK's batch-wide k-th largest activation among the candidates above a bound
  taken from a subset of the rows, instead of a top-k over all ``batch x d_sae`` values;
- counts firing features from the masks the activation already computed.

The reconstruction loss (``sae.mse_loss_fn``), auxiliary losses on dead features and the
sparsity penalties are the same expressions, on small tensors. Results equal sae-lens' step
up to float rounding (sums and products associate differently); the tests compare loss
curves and weights of every architecture with ``SAETrainer.step``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from sae_lens import (
    BatchTopKTrainingSAE,
    GatedTrainingSAE,
    JumpReLUTrainingSAE,
    SAETrainer,
    StandardTrainingSAE,
    TopKTrainingSAE,
    TrainingSAE,
)
from sae_lens.saes.sae import TrainStepOutput

Losses = dict[str, torch.Tensor]
#: what each architecture's forward returns: reconstruction, feature activations, per-feature
#: count of rows it fired on, and the losses by sae-lens' names (summed in this order)
Step = tuple[torch.Tensor, torch.Tensor, torch.Tensor, Losses]


class Workspace:
    """Buffers reused by every step of one training run, one per name (resized on demand).

    The feature activations a step returns live in these buffers until the next step.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}
        #: the last forward's feature activations (dense) and their float mask (f != 0)
        self.feature_acts = torch.empty(0)
        self.mask = torch.empty(0)
        #: the smallest kept activation of the last BatchTopK forward (None: none kept)
        self.smallest: torch.Tensor | None = None

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """The buffer ``name`` of ``shape`` with the dtype/device of ``like`` (stale data)."""
        buf = self._buffers.get(name)
        kind = (shape, like.dtype, like.device)
        if buf is None or (buf.shape, buf.dtype, buf.device) != kind:
            buf = torch.empty(shape, dtype=like.dtype, device=like.device)
            self._buffers[name] = buf
        return buf


def _dead_columns(hidden: torch.Tensor, dead_idx: torch.Tensor) -> torch.Tensor:
    """Pre-activations of the dead features (a copy), ``(rows, n_dead)``."""
    return hidden.index_select(1, dead_idx)


def _encoder_grads(
    gh: torch.Tensor, xc: torch.Tensor, w: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``h = xc @ w + b`` wrt ``xc``, ``w`` and ``b`` from ``gh``."""
    return gh @ w.T, xc.T @ gh, gh.sum(0)


# --------------------------------------------------------------------------------------
# standard and gated: f = relu(xc @ w + b) [* gate]; z = f @ wd


class _ReLUCode(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        xc: torch.Tensor,
        w: torch.Tensor,
        b: torch.Tensor,
        wd: torch.Tensor,
        ws: Workspace,
        slot: str,
        gate: torch.Tensor | None,
    ) -> torch.Tensor:
        shape = (xc.shape[0], w.shape[1])
        # mm, then the bias, as sae-lens does (addmm rounds differently)
        f = torch.mm(xc, w, out=ws.get(slot, shape, xc)).add_(b).clamp_min_(0.0)
        if gate is not None:
            f.mul_(gate)
        mask = torch.gt(f, 0.0, out=ws.get(slot + ".mask", shape, xc))
        ctx.save_for_backward(xc, w, wd)
        ctx.f, ctx.mask, ctx.ws = f, mask, ws
        ws.feature_acts, ws.mask = f, mask
        return f @ wd

    @staticmethod
    def backward(ctx: Any, gz: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        xc, w, wd = ctx.saved_tensors
        gh = torch.mm(gz, wd.T, out=ctx.ws.get("grad", ctx.f.shape, gz)).mul_(ctx.mask)
        gxc, gw, gb = _encoder_grads(gh, xc, w)
        return gxc, gw, gb, ctx.f.T @ gz, None, None, None


def _with_norm_column(sae: TrainingSAE) -> torch.Tensor:
    """``[W_dec | ||W_dec rows||]``: one product decodes and gives the weighted L1 per row."""
    return torch.cat([sae.W_dec, sae.W_dec.norm(dim=1)[:, None]], dim=1)


def _standard(
    sae: StandardTrainingSAE, x: torch.Tensor, coef: dict[str, float], dead: torch.Tensor,
    ws: Workspace,
) -> Step:
    d = x.shape[1]
    z = _ReLUCode.apply(x - sae.b_dec, sae.W_enc, sae.b_enc, _with_norm_column(sae), ws, "f", None)
    out = z[:, :d] + sae.b_dec
    losses = {
        "mse_loss": sae.mse_loss_fn(out, x).sum(dim=-1).mean(),
        # sae-lens: (l1 * (f * ||W_dec||).norm(p=1, dim=-1)).mean(), and f >= 0
        "l1_loss": (coef["l1"] * z[:, d]).mean(),
    }
    return out, ws.feature_acts, ws.mask.sum(0), losses


def _gated(
    sae: GatedTrainingSAE, x: torch.Tensor, coef: dict[str, float], dead: torch.Tensor,
    ws: Workspace,
) -> Step:
    d = x.shape[1]
    xc = x - sae.b_dec
    # gate path relu(xc @ W_enc + b_gate): sae-lens computes it twice (gate and L1/aux)
    zg = _ReLUCode.apply(xc, sae.W_enc, sae.b_gate, _with_norm_column(sae), ws, "gate", None)
    active = ws.mask  # (pi_gate > 0) == (relu(pi_gate) > 0)
    w_mag = sae.W_enc * sae.r_mag.exp()
    zf = _ReLUCode.apply(xc, w_mag, sae.b_mag, sae.W_dec, ws, "f", active)
    out = zf + sae.b_dec
    losses = {
        "mse_loss": sae.mse_loss_fn(out, x).sum(dim=-1).mean(),
        "l1_loss": coef["l1"] * zg[:, d].mean(),
        "auxiliary_reconstruction_loss": (zg[:, :d] + sae.b_dec - x).pow(2).sum(dim=-1).mean(),
    }
    return out, ws.feature_acts, ws.mask.sum(0), losses


# --------------------------------------------------------------------------------------
# TopK / BatchTopK: h = (xc @ W_enc + b_enc) * ||W_dec||, decoded with W_dec / ||W_dec||


def _rescaled(sae: TopKTrainingSAE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encoder weight and bias with the decoder norms folded in, and the unit-norm decoder."""
    norms = sae.W_dec.norm(dim=-1)
    return sae.W_enc * norms, sae.b_enc * norms, sae.W_dec * (1 / norms)[:, None]


class _TopKEncode(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        xc: torch.Tensor,
        w: torch.Tensor,
        b: torch.Tensor,
        k: int,
        dead_idx: torch.Tensor,
        ws: Workspace,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = torch.addmm(b, xc, w, out=ws.get("h", (xc.shape[0], w.shape[1]), xc))
        values, idx = h.topk(k, dim=-1, sorted=False)
        ctx.save_for_backward(xc, w, values, idx, dead_idx)
        ctx.ws, ctx.shape = ws, h.shape
        ctx.mark_non_differentiable(idx)
        return values.relu(), idx, _dead_columns(h, dead_idx)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, g_acts: torch.Tensor, _g_idx: Any, g_dead: torch.Tensor | None
    ) -> tuple[Any, ...]:
        xc, w, values, idx, dead_idx = ctx.saved_tensors
        gh = ctx.ws.get("grad", ctx.shape, xc).zero_()
        gh.scatter_(1, idx, g_acts * (values > 0))
        if g_dead is not None and dead_idx.numel():
            gh.index_add_(1, dead_idx, g_dead)
        return (*_encoder_grads(gh, xc, w), None, None, None)


class _BatchTopKCode(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        xc: torch.Tensor,
        w: torch.Tensor,
        b: torch.Tensor,
        wd: torch.Tensor,
        n_keep: int,
        dead_idx: torch.Tensor,
        ws: Workspace,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (xc.shape[0], w.shape[1])
        h = torch.addmm(b, xc, w, out=ws.get("f", shape, xc))
        h_dead = _dead_columns(h, dead_idx)
        mask, ws.smallest = _batch_topk_mask(h, n_keep, ws.get("f.mask", shape, xc))
        f = h.mul_(mask)
        ctx.save_for_backward(xc, w, wd, dead_idx)
        ctx.f, ctx.mask, ctx.ws = f, mask, ws
        ws.feature_acts, ws.mask = f, mask
        return f @ wd, h_dead

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, gz: torch.Tensor, g_dead: torch.Tensor | None
    ) -> tuple[Any, ...]:
        xc, w, wd, dead_idx = ctx.saved_tensors
        gh = torch.mm(gz, wd.T, out=ctx.ws.get("grad", ctx.f.shape, gz)).mul_(ctx.mask)
        if g_dead is not None and dead_idx.numel():
            gh.index_add_(1, dead_idx, g_dead)
        return (*_encoder_grads(gh, xc, w), ctx.f.T @ gz, None, None, None)


def _kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th largest entry of the 1-D ``values``."""
    return values.topk(k, sorted=False).values.min()


def _batch_topk_mask(
    h: torch.Tensor, n_keep: int, out: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Float mask of the ``n_keep`` largest entries of ``relu(h)`` that are positive, and the
    smallest of them (``None`` if no entry is positive).

    sae-lens takes ``topk(relu(h).flatten(), n_keep)``. The n_keep-th largest value of any
    subset of at least n_keep entries is a lower bound of the batch's, so the exact value is
    found among the (few) entries above the bound of a subset of rows; the mask then keeps
    the entries at or above it. Ties at that value (which ``topk`` would break arbitrarily)
    fall back to the full top-k.
    """
    rows, width = h.shape
    stride = max(1, int((rows * width / n_keep) ** 0.5))
    while stride > 1 and (rows + stride - 1) // stride * width < n_keep:
        stride //= 2
    flat = h.reshape(-1)
    bound = _kth_largest(h[::stride].reshape(-1), n_keep) if stride > 1 else None
    candidates = flat[flat >= bound] if bound is not None and bound > 0 else flat.clamp(min=0)
    kth = _kth_largest(candidates, n_keep)
    if kth > 0:
        if int((candidates >= kth).sum()) == n_keep:
            return torch.ge(h, kth, out=out), kth
        keep = flat.relu().topk(n_keep, sorted=False).indices
        out.zero_().view(-1)[keep] = 1.0
        return out, kth
    # fewer positive entries than n_keep: all of them
    positive = flat[flat > 0]
    return torch.gt(h, 0.0, out=out), positive.min() if positive.numel() else None


def _topk_aux_loss(
    sae: TopKTrainingSAE,
    x: torch.Tensor,
    out: torch.Tensor,
    h_dead: torch.Tensor,
    dead_idx: torch.Tensor,
    unit_decoder: torch.Tensor,
) -> torch.Tensor:
    """sae-lens' aux-k loss (``calculate_topk_aux_loss``) on the dead features' columns."""
    n_dead = dead_idx.numel()
    if n_dead == 0:
        return out.new_tensor(0.0)
    residual = (x - out).detach()
    k_aux = x.shape[-1] // 2
    scale = min(n_dead / k_aux, 1.0)
    values, j = h_dead.topk(min(k_aux, n_dead), dim=-1, sorted=False)
    recons = F.embedding_bag(dead_idx[j], unit_decoder, per_sample_weights=values, mode="sum")
    return sae.cfg.aux_loss_coefficient * scale * (recons - residual).pow(2).sum(dim=-1).mean()


def _topk(
    sae: TopKTrainingSAE, x: torch.Tensor, coef: dict[str, float], dead: torch.Tensor,
    ws: Workspace,
) -> Step:
    w, b, unit_decoder = _rescaled(sae)
    dead_idx = dead.nonzero().squeeze(1)
    acts, idx, h_dead = _TopKEncode.apply(x - sae.b_dec, w, b, sae.cfg.k, dead_idx, ws)
    out = F.embedding_bag(idx, unit_decoder, per_sample_weights=acts, mode="sum") + sae.b_dec
    with torch.no_grad():
        fired = torch.bincount(idx[acts > 0], minlength=sae.cfg.d_sae).to(x.dtype)
        rows = torch.arange(x.shape[0], device=x.device).repeat_interleave(idx.shape[1])
        feature_acts = torch.sparse_coo_tensor(
            torch.stack([rows, idx.reshape(-1)]), acts.detach().reshape(-1),
            (x.shape[0], sae.cfg.d_sae),
            check_invariants=False,
        )
    losses = {
        "mse_loss": sae.mse_loss_fn(out, x).sum(dim=-1).mean(),
        "auxiliary_reconstruction_loss": _topk_aux_loss(
            sae, x, out, h_dead, dead_idx, unit_decoder
        ),
    }
    return out, feature_acts, fired, losses


def _batchtopk(
    sae: BatchTopKTrainingSAE, x: torch.Tensor, coef: dict[str, float], dead: torch.Tensor,
    ws: Workspace,
) -> Step:
    w, b, unit_decoder = _rescaled(sae)
    dead_idx = dead.nonzero().squeeze(1)
    n_keep = int(sae.cfg.k * x.shape[0])
    z, h_dead = _BatchTopKCode.apply(x - sae.b_dec, w, b, unit_decoder, n_keep, dead_idx, ws)
    out = z + sae.b_dec
    if ws.smallest is not None:
        # sae-lens' update_topk_threshold: EMA of the smallest positive kept activation
        lr = sae.cfg.topk_threshold_lr
        smallest = ws.smallest.to(sae.topk_threshold.dtype)
        sae.topk_threshold = (1 - lr) * sae.topk_threshold + lr * smallest
    losses = {
        "mse_loss": sae.mse_loss_fn(out, x).sum(dim=-1).mean(),
        "auxiliary_reconstruction_loss": _topk_aux_loss(
            sae, x, out, h_dead, dead_idx, unit_decoder
        ),
    }
    return out, ws.feature_acts, ws.mask.sum(0), losses


# --------------------------------------------------------------------------------------
# JumpReLU: f = h * (h > threshold); L0 = sum(h > threshold), both with sae-lens'
# rectangle straight-through estimators towards the threshold


class _JumpReLUCode(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        xc: torch.Tensor,
        w: torch.Tensor,
        b: torch.Tensor,
        threshold: torch.Tensor,
        wd: torch.Tensor,
        bandwidth: float,
        dead_idx: torch.Tensor,
        ws: Workspace,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        shape = (xc.shape[0], w.shape[1])
        h = torch.mm(xc, w, out=ws.get("f", shape, xc)).add_(b)
        h_dead = _dead_columns(h, dead_idx)
        mask = torch.gt(h, threshold, out=ws.get("f.mask", shape, xc))
        # rectangle((h - threshold) / bandwidth) == |(h - threshold) / bandwidth| < 0.5
        rect = torch.sub(h, threshold, out=ws.get("rect", shape, xc)).div_(bandwidth).abs_()
        torch.lt(rect, 0.5, out=rect)
        f = h.mul_(mask)
        ctx.save_for_backward(xc, w, wd, threshold, dead_idx)
        ctx.f, ctx.mask, ctx.rect, ctx.ws, ctx.bandwidth = f, mask, rect, ws, bandwidth
        ws.feature_acts, ws.mask = f, mask
        return f @ wd, mask.sum(-1), h_dead

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, gz: torch.Tensor, g_l0: torch.Tensor | None, g_dead: torch.Tensor | None
    ) -> tuple[Any, ...]:
        xc, w, wd, threshold, dead_idx = ctx.saved_tensors
        rect, bw = ctx.rect, ctx.bandwidth
        gf = torch.mm(gz, wd.T, out=ctx.ws.get("grad", ctx.f.shape, gz))
        # Step (L0): d/dthreshold = -sum_rows rect * g_l0 / bandwidth
        g_threshold = -(rect.T @ g_l0) / bw if g_l0 is not None else torch.zeros_like(threshold)
        # JumpReLU: d/dthreshold = -sum_rows (threshold / bandwidth) * rect * gf
        g_threshold = g_threshold - threshold / bw * rect.mul_(gf).sum(0)
        gh = gf.mul_(ctx.mask)
        if g_dead is not None and dead_idx.numel():
            gh.index_add_(1, dead_idx, g_dead)
        gxc, gw, gb = _encoder_grads(gh, xc, w)
        return gxc, gw, gb, g_threshold, ctx.f.T @ gz, None, None, None


def _jumprelu(
    sae: JumpReLUTrainingSAE, x: torch.Tensor, coef: dict[str, float], dead: torch.Tensor,
    ws: Workspace,
) -> Step:
    cfg = sae.cfg
    with torch.no_grad():  # sae-lens projects the threshold before every step
        sae.threshold.data.clamp_(min=0.0)
    threshold = sae.threshold.to(x.dtype)
    dead_idx = dead.nonzero().squeeze(1)
    z, l0, h_dead = _JumpReLUCode.apply(
        x - sae.b_dec, sae.W_enc, sae.b_enc, threshold, sae.W_dec, sae.bandwidth, dead_idx, ws
    )
    out = z + sae.b_dec
    if cfg.jumprelu_sparsity_loss_mode == "quadratic":
        per_row = 2 / cfg.target_l0 * (l0 - cfg.target_l0) ** 2
    else:
        per_row = l0
    losses = {
        "mse_loss": sae.mse_loss_fn(out, x).sum(dim=-1).mean(),
        "l0_loss": (coef["l0"] * per_row).mean(),
    }
    if cfg.pre_act_loss_coefficient is not None:
        if dead_idx.numel():
            norms = sae.W_dec.norm(dim=1)[dead_idx]
            per_row_pre = ((threshold[dead_idx] - h_dead).relu() * norms).sum(dim=-1)
            losses["pre_act_loss"] = cfg.pre_act_loss_coefficient * per_row_pre.mean()
        else:
            losses["pre_act_loss"] = out.new_tensor(0.0)
    return out, ws.feature_acts, ws.mask.sum(0), losses


_FORWARDS: tuple[tuple[type[TrainingSAE], Callable[..., Step]], ...] = (
    (BatchTopKTrainingSAE, _batchtopk),  # before TopK: a subclass of it
    (TopKTrainingSAE, _topk),
    (StandardTrainingSAE, _standard),
    (GatedTrainingSAE, _gated),
    (JumpReLUTrainingSAE, _jumprelu),
)


def _forward_for(sae: TrainingSAE) -> Callable[..., Step]:
    cfg = sae.cfg
    if (
        cfg.normalize_activations != "none"
        or not cfg.apply_b_dec_to_input
        or cfg.reshape_activations != "none"
        or getattr(cfg, "use_sparse_activations", False)
        or getattr(cfg, "rescale_acts_by_decoder_norm", True) is not True
        or getattr(cfg, "jumprelu_ste_to_input", False)
        or getattr(cfg, "jumprelu_sparsity_loss_mode", "step") not in ("step", "quadratic")
    ):
        raise ValueError(f"fast_train_step does not support this sae-lens configuration: {cfg}")
    for cls, forward in _FORWARDS:
        if type(sae) is cls:  # exactly: a subclass (e.g. Matryoshka) has other losses
            return forward
    raise ValueError(f"fast_train_step has no step for {type(sae).__name__}")


def supports_fast_step(sae: TrainingSAE) -> bool:
    """Whether :func:`fast_train_step` can run ``sae`` (mechrec's five architectures in the
    configurations mechrec builds); otherwise use sae-lens' ``SAETrainer.step``."""
    try:
        _forward_for(sae)
    except ValueError:
        return False
    return True


def fast_train_step(trainer: SAETrainer, batch: torch.Tensor, ws: Workspace) -> TrainStepOutput:
    """One training step of ``trainer.sae``, equivalent to ``trainer.step(batch)``.

    Updates the same trainer state as sae-lens' step (``n_training_samples``, the firing
    statistics behind ``dead_neurons``, the optimiser, learning-rate and coefficient
    schedulers) and, like it, leaves ``n_training_steps`` to the caller.

    Args:
        trainer: sae-lens trainer of a standard, TopK, BatchTopK, JumpReLU or gated SAE
            built by :func:`mechrec.saes.build_training_sae`.
        batch: ``(rows, d_in)`` activations.
        ws: buffers of this training run (one :class:`Workspace` for all its steps).

    Returns:
        sae-lens' ``TrainStepOutput``; its ``feature_acts`` (dense, in ``ws``, or a sparse
        COO tensor for TopK) stay valid until the next step; the pre-activations are not
        kept, so ``hidden_pre`` holds the feature activations too.
    """
    sae = trainer.sae
    forward = _forward_for(sae)
    batch = batch.to(sae.device)
    trainer.n_training_samples += batch.shape[0]
    x = trainer.activation_scaler(batch).to(sae.dtype)
    sae.train()
    dead = trainer.dead_neurons
    out, feature_acts, fired, losses = forward(sae, x, trainer.get_coefficients(), dead, ws)
    with torch.no_grad():
        trainer.n_forward_passes_since_fired += 1
        trainer.n_forward_passes_since_fired[fired > 0] = 0
        trainer.act_freq_scores += fired
        trainer.n_frac_active_samples += trainer.cfg.train_batch_size_samples
    names = list(losses)
    loss = losses[names[0]]
    for name in names[1:]:
        loss = loss + losses[name]
    loss.backward()
    torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    trainer.lr_scheduler.step()
    for scheduler in trainer.coefficient_schedulers.values():
        scheduler.step()
    return TrainStepOutput(
        sae_in=x,
        sae_out=out,
        feature_acts=feature_acts,
        hidden_pre=feature_acts,
        loss=loss,
        losses=losses,
    )
