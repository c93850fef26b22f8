"""Steering directions in raw activation space, scaled to unit variance.

Definition (our reading of paper section 8.2.3, "Both SAE and probing vectors are normalized to
have unit variance"). For a raw direction ``w`` and activations ``X`` (one row per real position
at the hook), let ``u = w / ||w||`` and ``sigma = std(X @ u)`` (population standard deviation of
the activations' coordinate along ``u``). The *unit-variance direction* is ``v = sigma * u``.

Adding ``k * v`` to an activation therefore moves it by exactly ``k`` standard deviations of the
activation distribution along ``u``: in the standardised coordinate
``z(x) = (x @ u - mean(X @ u)) / sigma``, which has unit variance over ``X``, the edit adds
exactly ``k``. This makes steering factors comparable between directions of different norms
(an SAE decoder row and a probe's weight vector) and between hooks with different scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mechrec.hooks import output_hook
from mechrec.steering.protocols import SAELike, check_sae, sae_dtype_device
from mechrec.steering.validation import check_feature_index, check_vector


@dataclass(frozen=True)
class Direction:
    """A steering direction in raw activation space.

    Attributes:
        vector: ``(d_in,)`` the vector added per unit of steering value (for a unit-variance
            direction its norm is ``sigma``).
        name: a label used in sweep tables (e.g. ``"probe:Sci-Fi"``).
        hook_name: the hook whose activations it lives in, or ``None`` if unknown; steering at a
            different hook is refused when set.
        sigma: standard deviation of the activations along ``vector``'s unit direction, when the
            direction was scaled with :func:`unit_variance_direction`; ``None`` otherwise.
    """

    vector: torch.Tensor
    name: str = ""
    hook_name: str | None = None
    sigma: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "vector", check_vector(self.vector, f"direction {self.name!r}"))

    @property
    def d_in(self) -> int:
        """Width of the activations the direction applies to."""
        return int(self.vector.shape[0])

    def unit(self) -> torch.Tensor:
        """The direction with unit L2 norm."""
        return self.vector / self.vector.norm()


def unit_variance_direction(
    direction: torch.Tensor | Direction,
    activations: torch.Tensor,
    *,
    name: str | None = None,
    hook_name: str | None = None,
) -> Direction:
    """Scale ``direction`` so that one unit of steering is one standard deviation along it.

    Args:
        direction: ``(d_in,)`` raw-space direction (any norm; only its orientation is used).
        activations: ``(R, d_in)`` activations at the hook (real positions only), e.g. the SAE
            training activations.
        name: label; defaults to the name of ``direction`` if it is a :class:`Direction`.
        hook_name: hook the activations come from; defaults to ``direction.hook_name``.

    Returns:
        A :class:`Direction` with ``vector = sigma * u`` as defined in the module docstring.
    """
    if isinstance(direction, Direction):
        name = direction.name if name is None else name
        hook_name = direction.hook_name if hook_name is None else hook_name
        raw = direction.vector
    else:
        raw = check_vector(direction, "direction")
    acts = torch.as_tensor(activations)
    if acts.ndim != 2:
        raise ValueError(f"activations must be (rows, d), got shape {tuple(acts.shape)}")
    if acts.shape[1] != raw.shape[0]:
        raise ValueError(
            f"the direction has length {raw.shape[0]} but the activations have width "
            f"{acts.shape[1]}: use activations collected at the direction's hook"
        )
    if acts.shape[0] < 2:
        raise ValueError("need at least 2 activation rows to measure a standard deviation")
    if not torch.isfinite(acts).all():
        raise ValueError("activations contain NaN or infinite values; drop those rows first")
    unit = raw.double() / raw.double().norm()
    acts_float = acts if acts.is_floating_point() else acts.double()
    coord = (acts_float @ unit.to(device=acts.device, dtype=acts_float.dtype)).double()
    sigma = float(coord.std(unbiased=False))
    if sigma == 0.0:
        raise ValueError(
            f"the activations do not vary along direction {name or ''!r} (std 0), so it cannot be "
            "scaled to unit variance; choose another direction or hook"
        )
    vector = (sigma * unit).to(raw.dtype if raw.is_floating_point() else torch.float32)
    return Direction(vector=vector, name=name or "", hook_name=hook_name, sigma=sigma)


def sae_feature_direction(sae: SAELike, feature: int) -> Direction:
    """The raw-space direction that feature ``feature`` writes: ``decode(e_j) - decode(0)``
    (at the hook the SAE writes: a transcoder's output hook).

    For an SAE with a linear decoder and an affine normaliser this is the decoder row times the
    normaliser's standard deviation, i.e. the change of the raw activation per unit of the
    feature. Scale it with :func:`unit_variance_direction` before comparing with probes.
    """
    sae = check_sae(sae)
    check_feature_index(sae, feature)
    dtype, device = sae_dtype_device(sae)
    basis = torch.zeros(2, sae.d_sae, dtype=dtype, device=device)
    basis[1, feature] = 1.0
    with torch.no_grad():
        out = sae.decode(basis).reshape(2, -1)
    return Direction(
        vector=(out[1] - out[0]).detach(), name=f"feature:{feature}", hook_name=output_hook(sae)
    )
