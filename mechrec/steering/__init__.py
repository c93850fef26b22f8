"""Steering: interventions at a hook of any HookedTransformer.

- :class:`FeatureEdit` (SAE feature set/add, optionally keeping the SAE error term) and
  :class:`DirectionEdit` (add ``value * direction``); several edits apply in order.
- :func:`steer` (context manager), :class:`SteeringHook` / :func:`make_steering_hook`
  (TransformerLens hook functions); positions ``"last"`` (default), ``"all"`` or explicit.
- :class:`Direction`, :func:`unit_variance_direction`, :func:`sae_feature_direction`.
- Fast last-position path: :func:`steered_last_logits`, :class:`LastPositionSteerer`.
"""

from mechrec.steering.directions import Direction, sae_feature_direction, unit_variance_direction
from mechrec.steering.edits import DirectionEdit, Edit, EditSpec, FeatureEdit, apply_edits
from mechrec.steering.fast import (
    LastPositionSteerer,
    fast_path_problem,
    hook_start_layer,
    last_real_logits,
    steered_last_logits,
    steered_logits,
)
from mechrec.steering.interventions import InputCapture, SteeringHook, make_steering_hook, steer
from mechrec.steering.positions import PositionSpec, resolve_positions
from mechrec.steering.protocols import SAELike
from mechrec.steering.validation import check_hook_name

__all__ = [
    "Direction",
    "DirectionEdit",
    "Edit",
    "EditSpec",
    "FeatureEdit",
    "InputCapture",
    "LastPositionSteerer",
    "PositionSpec",
    "SAELike",
    "SteeringHook",
    "apply_edits",
    "check_hook_name",
    "fast_path_problem",
    "hook_start_layer",
    "last_real_logits",
    "make_steering_hook",
    "resolve_positions",
    "sae_feature_direction",
    "steer",
    "steered_last_logits",
    "steered_logits",
    "unit_variance_direction",
]
