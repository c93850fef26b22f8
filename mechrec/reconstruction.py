"""How well an SAE reconstructs activations, and what the model does with the reconstruction.

Two kinds of measurement:

- :func:`reconstruction_metrics`: RMSE, explained variance, L0 and dead-feature fraction
  over an activation source (streamed chunk by chunk);
- :func:`evaluate_with_reconstruction`: run any evaluation callable while the model's
  activation at the SAE's hook is replaced by the de-normalised reconstruction, in one of
  two modes, the same two that steering uses (:class:`mechrec.steering.FeatureEdit`):

  ``"replace"``
      the hook output becomes ``decode(encode(x))`` (with any feature ``values`` set first):
      the model sees only what the SAE keeps (the paper's Table 1);
  ``"keep-error"``
      the SAE's error term ``x - decode(encode(x))`` is kept: without feature values the
      output is exactly ``x``, so the model's outputs are exactly the original ones; with
      values only their effect reaches the model.

The splice is one mechanism: every position's activation goes through a
:class:`~mechrec.steering.FeatureEdit`, exactly as a steering edit does.

Transcoders (``nsae.hook_name_out`` differs from ``nsae.hook_name``) go through the same
mechanism: features are encoded from the activation at the input hook, and what the
transcoder writes is compared with, or replaces, the activation at the output hook.
:func:`reconstruction_metrics` then needs the output hook's activations of the same rows
(``target``); the splice attaches an :class:`~mechrec.steering.interventions.InputCapture`
at the input hook and the replacing hook at the output hook, in one forward pass
(``"replace"``: ``decode(encode(x_in)) + skip(x_in)``; ``"keep-error"``: the output
activation plus the effect of the feature values).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

import torch
from transformer_lens import HookedTransformer

from mechrec.activations.sets import ActivationSource, check_not_empty, iter_chunks
from mechrec.hooks import validate_hook_name
from mechrec.normalization import check_finite

if TYPE_CHECKING:
    from mechrec.saes.normalized import NormalizedSAE
    from mechrec.steering.interventions import InputCapture

__all__ = [
    "REPLACE_MODES",
    "ReconstructionMetrics",
    "ReplaceMode",
    "evaluate_with_reconstruction",
    "reconstruction_fwd_hooks",
    "reconstruction_hook",
    "reconstruction_hooks",
    "reconstruction_metrics",
]

ReplaceMode = Literal["replace", "keep-error"]
REPLACE_MODES: tuple[str, ...] = ("replace", "keep-error")
"""How the reconstruction is spliced in: the steering vocabulary (``mechrec.steering``)."""
T = TypeVar("T")


@dataclass(frozen=True)
class ReconstructionMetrics:
    """Reconstruction quality of an SAE over a set of activations.

    Attributes:
        rmse: ``sqrt(mean over rows and dimensions of (x - x_hat)^2)``.
        explained_variance: ``1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``.
        l0: mean number of non-zero features per row.
        dead_fraction: fraction of features that never fire on these rows.
        n_dead: number of such features.
        n_rows: number of rows measured.
        space: ``"normalized"`` (what the SAE sees; the paper's Table 1) or ``"raw"``.

    For a transcoder ``x`` is the activation at its output hook and ``x_hat`` its
    prediction from the input hook (in the output normaliser's space for ``"normalized"``).
    """

    rmse: float
    explained_variance: float
    l0: float
    dead_fraction: float
    n_dead: int
    n_rows: int
    space: str

    def as_dict(self) -> dict[str, float | int | str]:
        """The metrics as a plain dict (for tables and JSON)."""
        return asdict(self)


@torch.no_grad()
def reconstruction_metrics(
    nsae: NormalizedSAE,
    source: ActivationSource,
    *,
    space: Literal["normalized", "raw"] = "normalized",
    batch_size: int = 8192,
    target: ActivationSource | None = None,
) -> ReconstructionMetrics:
    """RMSE, explained variance, L0 and dead fraction of ``nsae`` over ``source``.

    Args:
        nsae: the SAE with its normaliser.
        source: raw activations at the SAE's hook (an ``ActivationSet`` or ``ActivationStore``);
            a transcoder's input hook.
        space: measure errors in normalised space (default, comparable across layers and with
            the paper) or in the model's raw activation space.
        batch_size: rows encoded at once.
        target: what the reconstruction is compared with: the raw activations of the same
            rows at ``nsae.hook_name_out`` (required for a transcoder; ``source`` itself for
            an SAE).
    """
    check_not_empty(source)
    if space not in ("normalized", "raw"):
        raise ValueError(f"space must be 'normalized' or 'raw', got {space!r}")
    if source.d != nsae.d_in:
        raise ValueError(
            f"the activations have width {source.d} but the SAE's d_in is {nsae.d_in}: "
            f"measure it on activations from its hook {nsae.hook_name!r}"
        )
    target = _check_target(nsae, source, target)
    device = nsae.device
    d = nsae.d_out
    sse = 0.0
    sum_x = torch.zeros(d, dtype=torch.float64)
    sum_sq = 0.0
    n = 0
    active = 0.0
    fired = torch.zeros(nsae.d_sae, dtype=torch.bool, device=device)
    for x_raw, y_raw in _paired_rows(source, target, batch_size):
        x_raw, y_raw = x_raw.to(device), y_raw.to(device)
        check_finite(x_raw, f"activations at {source.hook_name!r}")
        if target is not source:
            check_finite(y_raw, f"activations at {target.hook_name!r}")
        feats, x_hat = nsae.forward_normalized(x_raw)
        if space == "raw":
            x, x_hat = y_raw, nsae.output_normalizer.denormalize(x_hat)
        else:
            x = nsae.output_normalizer.normalize(y_raw)
        x64 = x.double()
        sse += float((x64 - x_hat.double()).pow(2).sum())
        sum_x += x64.sum(0).cpu()
        sum_sq += float(x64.pow(2).sum())
        nz = feats != 0
        active += float(nz.sum())
        fired |= nz.any(0)
        n += x.shape[0]
    total_var = sum_sq - float(sum_x.pow(2).sum()) / n
    n_dead = int((~fired).sum())
    return ReconstructionMetrics(
        rmse=math.sqrt(sse / (n * d)),
        explained_variance=1.0 - sse / total_var if total_var > 0 else float("nan"),
        l0=active / n,
        dead_fraction=n_dead / nsae.d_sae,
        n_dead=n_dead,
        n_rows=n,
        space=space,
    )


def _check_target(nsae: NormalizedSAE, source: ActivationSource,
                  target: ActivationSource | None) -> ActivationSource:
    """The activations the reconstruction is compared with (``source`` for an SAE)."""
    if not nsae.is_transcoder:
        if target is not None and target is not source:
            raise ValueError(f"an SAE reconstructs the activations it reads at "
                             f"{nsae.hook_name!r}: drop target=")
        return source
    if target is None:
        raise ValueError(
            f"this transcoder predicts {nsae.hook_name_out!r} from {nsae.hook_name!r}: pass "
            f"target= the activations at {nsae.hook_name_out!r} of the same rows as source")
    if target.d != nsae.d_out:
        raise ValueError(
            f"the target activations have width {target.d} but the transcoder's d_out is "
            f"{nsae.d_out}: pass the activations at its output hook {nsae.hook_name_out!r}")
    if len(target) != len(source):
        raise ValueError(f"target has {len(target)} rows but source has {len(source)}: they "
                         "must be the same rows (collected from the same batches)")
    return target


def _paired_rows(source: ActivationSource, target: ActivationSource, batch_size: int
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Row blocks of ``source`` and the same rows of ``target`` (whose chunks may be cut
    elsewhere), at most ``batch_size`` rows at a time; ``target is source`` reads once."""
    if target is source:
        for chunk in iter_chunks(source):
            for start in range(0, len(chunk), batch_size):
                rows = chunk.activations[start : start + batch_size]
                yield rows, rows
        return
    pending: list[torch.Tensor] = []
    have = 0
    targets = iter_chunks(target)
    for chunk in iter_chunks(source):
        for start in range(0, len(chunk), batch_size):
            rows = chunk.activations[start : start + batch_size]
            while have < len(rows):
                more = next(targets).activations
                pending.append(more)
                have += len(more)
            joined = torch.cat(pending) if len(pending) > 1 else pending[0]
            yield rows, joined[: len(rows)]
            rest = joined[len(rows):]
            pending, have = ([rest] if len(rest) else []), len(rest)


def _check_mode(mode: str) -> None:
    if mode not in REPLACE_MODES:
        hint = " ('replace_error' is now called 'keep-error')" if mode == "replace_error" else ""
        raise ValueError(f"mode must be one of {REPLACE_MODES}, got {mode!r}{hint}")


def reconstruction_hook(
    nsae: NormalizedSAE,
    mode: ReplaceMode = "replace",
    values: Mapping[int, float] | None = None,
    capture: InputCapture | None = None,
) -> Callable[..., torch.Tensor]:
    """A TransformerLens forward hook that swaps the activation for the SAE reconstruction.

    Args:
        nsae: the SAE (its ``hook_name_out`` says where to attach the hook).
        mode: ``"replace"`` or ``"keep-error"`` (see the module docstring).
        values: ``{feature: value}`` set before decoding at every position (none: a plain
            reconstruction).
        capture: for a transcoder, the :class:`~mechrec.steering.interventions.InputCapture`
            attached at its input hook in the same forward pass (what
            :func:`reconstruction_fwd_hooks` builds).
    """
    from mechrec.steering.edits import FeatureEdit

    _check_mode(mode)
    edit = FeatureEdit(nsae, dict(values or {}), keep_error=mode == "keep-error")
    if nsae.is_transcoder and capture is None:
        raise ValueError(
            f"a transcoder reads {nsae.hook_name!r} and writes {nsae.hook_name_out!r}: its "
            "splice needs a hook at both (use reconstruction_hooks or reconstruction_fwd_hooks)")
    width = "d_out" if nsae.is_transcoder else "d_in"

    def hook(act: torch.Tensor, hook: object = None) -> torch.Tensor:
        shape = act.shape
        x = act.reshape(*shape[:2], -1) if act.ndim > 3 else act
        if x.shape[-1] != edit.d_in:
            raise ValueError(
                f"the activation at {nsae.hook_name_out!r} has width {x.shape[-1]} but the "
                f"SAE's {width} is {edit.d_in}: this SAE was trained on another hook or model"
            )
        inputs = None
        if capture is not None:
            inputs = capture.take(tuple(x.shape[:-1]), nsae.hook_name_out)
            inputs = inputs.reshape(-1, inputs.shape[-1])
        out = edit.apply(x.reshape(-1, x.shape[-1]), inputs)
        return out.to(act.dtype).reshape(shape)

    return hook


def reconstruction_fwd_hooks(
    nsae: NormalizedSAE,
    mode: ReplaceMode = "replace",
    values: Mapping[int, float] | None = None,
) -> list[tuple[str, Callable[..., torch.Tensor]]]:
    """The ``(hook name, hook)`` pairs that splice ``nsae`` in (for ``model.hooks``): the
    :func:`reconstruction_hook` at ``nsae.hook_name_out``, preceded for a transcoder by the
    :class:`~mechrec.steering.interventions.InputCapture` at its input hook."""
    from mechrec.steering.interventions import InputCapture

    if not nsae.is_transcoder:
        return [(nsae.hook_name, reconstruction_hook(nsae, mode, values))]
    capture = InputCapture(nsae.hook_name)
    return [(nsae.hook_name, capture),
            (nsae.hook_name_out, reconstruction_hook(nsae, mode, values, capture))]


@contextmanager
def reconstruction_hooks(
    model: HookedTransformer,
    nsae: NormalizedSAE,
    mode: ReplaceMode = "replace",
    values: Mapping[int, float] | None = None,
) -> Iterator[HookedTransformer]:
    """Context manager: inside it, ``model`` runs with its hook replaced (see
    :func:`reconstruction_hook`; a transcoder's output hook, from its input hook in the same
    pass); the hooks are removed on exit, even after an error."""
    fwd_hooks = reconstruction_fwd_hooks(nsae, mode, values)
    for name, _ in fwd_hooks:
        validate_hook_name(model, name)
    with model.hooks(fwd_hooks=fwd_hooks):
        yield model


def evaluate_with_reconstruction(
    model: HookedTransformer,
    nsae: NormalizedSAE,
    evaluate: Callable[[HookedTransformer], T],
    mode: ReplaceMode = "replace",
    values: Mapping[int, float] | None = None,
) -> T:
    """``evaluate(model)`` with the SAE's hook output replaced by its reconstruction.

    ``evaluate`` is any callable that runs the model and returns what it measured (ranking
    metrics, a loss, logits...). Its return value is passed through.
    """
    with reconstruction_hooks(model, nsae, mode, values) as hooked:
        return evaluate(hooked)
