"""The core steering entry points validate token batches once, with clear errors (issue 12,
item 11), and refuse edits that make the scores non-finite (item 2)."""

from __future__ import annotations

import pytest
import torch
from steering_doubles import left_padded, make_model
from tiny_model import TINY_VOCAB

from mechrec.steering import (
    DirectionEdit,
    LastPositionSteerer,
    steered_last_logits,
    steered_logits,
)
from mechrec.steering.validation import check_finite_scores
from mechrec.sweep import SteeringTarget, direction_target, run_sweep

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def model():
    return make_model()


def _edit(model) -> DirectionEdit:
    return DirectionEdit(torch.ones(model.cfg.d_model), 1.0)


def _entry_points(model, tokens, mask):
    """Each public entry point taking a token batch, as a zero-argument call."""
    return {
        "steered_logits": lambda: steered_logits(model, tokens, mask, HOOK, _edit(model)),
        "steered_last_logits naive": lambda: steered_last_logits(
            model, tokens, mask, HOOK, [_edit(model)], method="naive"),
        "steered_last_logits fast": lambda: steered_last_logits(
            model, tokens, mask, HOOK, [_edit(model)], method="fast"),
        "LastPositionSteerer": lambda: LastPositionSteerer(model, tokens, mask, HOOK),
    }


def _bad_batches() -> dict[str, tuple[torch.Tensor, torch.Tensor | None, str]]:
    tokens, mask = left_padded(batch=3, seq_len=6)
    negative = tokens.clone()
    negative[0, -1] = -1
    too_big = tokens.clone()
    too_big[1, -1] = TINY_VOCAB
    empty_row = mask.clone()
    empty_row[2] = 0
    not_binary = mask.clone()
    not_binary[0, -1] = 2
    return {
        "negative id": (negative, mask, "token id -1 is out of range"),
        "id past the vocabulary": (too_big, mask, f"token id {TINY_VOCAB} is out of range"),
        "empty history": (torch.zeros(1, 0, dtype=torch.long), None, "at least one token"),
        "empty batch": (torch.zeros(0, 6, dtype=torch.long), None, "at least one sequence"),
        "all-padding row": (tokens, empty_row, "rows [2] of the batch have no real position"),
        "mask not 0/1": (tokens, not_binary, "only 0 (padding) and 1"),
        "mask shape": (tokens, mask[:, 1:], "does not match tokens shape"),
        "float tokens": (tokens.float(), mask, "integer token ids"),
    }


@pytest.mark.parametrize("case", list(_bad_batches()))
def test_bad_token_batch_is_a_clear_value_error_at_every_entry_point(model, case):
    tokens, mask, message = _bad_batches()[case]
    for name, call in _entry_points(model, tokens, mask).items():
        with pytest.raises(ValueError) as error:
            call()
        assert message in str(error.value), (name, str(error.value))


def test_good_batch_still_steers(model):
    tokens, mask = left_padded(batch=3, seq_len=6)
    fast = steered_last_logits(model, tokens, mask, HOOK, [_edit(model)], method="fast")
    naive = steered_last_logits(model, tokens, mask, HOOK, [_edit(model)], method="naive")
    assert torch.allclose(fast, naive, atol=1e-4)


def test_non_finite_scores_name_the_value(model):
    scores = torch.tensor([0.0, float("nan")])
    with pytest.raises(ValueError, match="steering value 1e\\+30 makes the model's scores NaN"):
        check_finite_scores(scores, 1e30)
    assert check_finite_scores(torch.zeros(2), 1.0) is not None


def test_sweep_refuses_a_value_that_overflows_the_model(model):
    tokens, mask = left_padded(batch=3, seq_len=6)
    direction = torch.arange(model.cfg.d_model, dtype=torch.float32) - 7.5
    target: SteeringTarget = direction_target(direction, name="d",
                                              hook_name=HOOK)
    with pytest.raises(ValueError, match=r"1e\+38 makes the model's scores NaN or infinite"):
        run_sweep(model, [(tokens, mask)], [target], [0.0, 1e38],
                  evaluate=lambda logits: {"mean": float(logits.float().mean())},
                  progress=False)
