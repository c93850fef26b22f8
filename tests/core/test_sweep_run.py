"""Sweeps over steering values: tidy results, fast == naive, serialisation, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from steering_doubles import ToySAE, activations_at

from mechrec.steering import Direction, FeatureEdit
from mechrec.sweep import (
    SteeringTarget,
    SweepResult,
    direction_target,
    feature_direction_target,
    feature_target,
    run_sweep,
    value_grid,
)

VOCAB = 24


def _top3(logits, tokens, mask, rows):
    return logits.topk(3, dim=-1).indices


def _share_of_5(top):
    return {"share_5": float((top == 5).float().mean()), "n_rows": float(len(top))}


def _mean_logits(logits):
    return {f"logit_{j}": float(logits[:, j].mean()) for j in (0, 5, 11)}


@pytest.fixture(scope="module")
def sae(tiny_model, token_batches):
    tokens, mask = token_batches[0]
    acts = activations_at(tiny_model, tokens, mask, "blocks.0.hook_resid_post")[mask.bool()]
    return ToySAE(16, 32, "blocks.0.hook_resid_post", mean=acts.mean(0), std=acts.std(0))


@pytest.fixture(scope="module")
def targets(sae):
    e5 = torch.zeros(VOCAB)
    e5[5] = 1.0
    random_dir = torch.randn(16, generator=torch.Generator().manual_seed(0))
    return [
        direction_target(Direction(e5, name="boost-5", hook_name="unembed.hook_out")),
        feature_target(sae, 3, name="feature-3"),
        feature_target(sae, 3, name="feature-3+err", keep_error=True),
        direction_target(random_dir, name="random", hook_name="blocks.1.hook_mlp_out"),
    ]


def test_sweep_table_and_monotone_target(tiny_model, token_batches, targets):
    values = value_grid(-10, 10, 5)
    result = run_sweep(
        tiny_model, token_batches, targets, values, _share_of_5, collect=_top3, progress=False
    )
    frame = result.frame
    assert list(frame.columns) == ["target", "kind", "hook_name", "value", "share_5", "n_rows"]
    assert len(frame) == 1 + len(targets) * len(values)
    base = frame[frame.target == "unsteered"].iloc[0]
    assert np.isnan(base["value"]) and base["n_rows"] == 24
    boost = frame[frame.target == "boost-5"].sort_values("value")["share_5"].to_numpy()
    assert np.all(np.diff(boost) >= 0) and boost[-1] == pytest.approx(1 / 3)
    assert boost[0] == 0.0
    assert set(frame.kind) == {"none", "direction", "sae_feature", "sae_feature+error"}
    assert {t["method"] for t in result.metadata["targets"]} == {"fast"}


def test_fast_and_naive_sweeps_agree(tiny_model, token_batches, targets):
    values = [-3.0, 0.0, 4.0]
    kw = dict(evaluate=_mean_logits, progress=False)
    fast = run_sweep(tiny_model, token_batches, targets, values, method="fast", **kw)
    naive = run_sweep(tiny_model, token_batches, targets, values, method="naive", **kw)
    metric_cols = ["logit_0", "logit_5", "logit_11"]
    assert np.allclose(fast.frame[metric_cols], naive.frame[metric_cols], atol=1e-5)
    assert (fast.frame["value"].isna() == naive.frame["value"].isna()).all()
    assert {t["method"] for t in naive.metadata["targets"]} == {"naive"}
    plain = torch.cat(
        [tiny_model(t, attention_mask=m)[:, -1] for t, m in token_batches], dim=0
    ).detach()
    base = fast.frame.iloc[0]
    assert base["logit_5"] == pytest.approx(float(plain[:, 5].mean()), abs=1e-5)


def test_keep_error_at_the_features_own_value_is_the_baseline(tiny_model, token_batches, sae):
    """With the error term kept, adding 0 to a feature reproduces the unsteered model."""

    def add(value):
        return FeatureEdit(sae, {3: value}, mode="add", keep_error=True)

    target = SteeringTarget("add-0", sae.hook_name, add)
    result = run_sweep(tiny_model, token_batches, [target], [0.0], _mean_logits, progress=False)
    cols = ["logit_0", "logit_5", "logit_11"]
    assert np.allclose(
        result.frame.iloc[0][cols].astype(float),
        result.frame.iloc[1][cols].astype(float),
        atol=1e-5,
    )


def test_other_positions_use_the_naive_path(tiny_model, token_batches):
    v = torch.linspace(-1, 1, 16)
    targets = [
        direction_target(v, name="last", hook_name="blocks.0.hook_resid_post"),
        direction_target(v, name="all", hook_name="blocks.0.hook_resid_post", positions="all"),
    ]
    result = run_sweep(tiny_model, token_batches, targets, [2.0], _mean_logits, progress=True)
    methods = {t["name"]: t["method"] for t in result.metadata["targets"]}
    assert methods == {"last": "fast", "all": "naive"}
    rows = result.frame.set_index("target")
    assert rows.loc["last", "logit_5"] != pytest.approx(rows.loc["all", "logit_5"], abs=1e-4)


def test_serialisation_roundtrip(tmp_path, tiny_model, token_batches, targets):
    result = run_sweep(
        tiny_model, token_batches[:1], targets[:2], [-1.0, 1.0], _mean_logits, progress=False
    )
    loaded = SweepResult.from_json(result.to_json(tmp_path / "sweep.json"))
    pd.testing.assert_frame_equal(loaded.frame, result.frame, check_dtype=False)
    assert loaded.metadata == json.loads(json.dumps(result.metadata))
    csv = pd.read_csv(result.to_csv(tmp_path / "out" / "sweep.csv"))
    assert np.allclose(csv["logit_5"], result.frame["logit_5"])
    assert (tmp_path / "out" / "sweep.csv.meta.json").is_file()
    long = result.long()
    assert list(long.columns) == ["target", "kind", "hook_name", "value", "metric", "score"]
    assert len(long) == len(result.frame) * 3


def test_feature_direction_target_is_the_unit_variance_decoder_row(tiny_model, token_batches, sae):
    tokens, mask = token_batches[0]
    acts = activations_at(tiny_model, tokens, mask, sae.hook_name)[mask.bool()]
    target = feature_direction_target(sae, 3, acts, name="f3-dir")
    assert (target.kind, target.hook_name) == ("sae_direction", sae.hook_name)
    edit = target.make_edit(1.0)
    row = sae.W_dec[3] * sae.std
    unit = row / row.norm()
    sigma = float((acts @ unit).std(unbiased=False))
    assert torch.allclose(edit.direction.vector, sigma * unit, atol=1e-5)
    result = run_sweep(
        tiny_model, token_batches, [target], [-2.0, 2.0], _mean_logits, progress=False
    )
    assert list(result.frame.target) == ["unsteered", "f3-dir", "f3-dir"]


def test_value_grid():
    assert value_grid() == [float(v) for v in range(-10, 11)]
    assert value_grid(0, 1, 0.25) == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError, match="step > 0"):
        value_grid(0, 1, 0)


def test_bad_input(tiny_model, token_batches, targets, sae):
    args = (tiny_model, token_batches[:1])
    with pytest.raises(ValueError, match="finite"):
        run_sweep(*args, targets, [0.0, float("nan")], _mean_logits, progress=False)
    with pytest.raises(ValueError, match="no steering targets"):
        run_sweep(*args, [], [0.0], _mean_logits, progress=False)
    with pytest.raises(ValueError, match="unique"):
        run_sweep(*args, [targets[0], targets[0]], [0.0], _mean_logits, progress=False)
    with pytest.raises(ValueError, match="batches is empty"):
        run_sweep(tiny_model, [], targets, [0.0], _mean_logits, progress=False)
    with pytest.raises(TypeError, match="mapping"):
        run_sweep(*args, targets[:1], [0.0], lambda x: 1.0, progress=False)
    with pytest.raises(TypeError, match="not a number"):
        run_sweep(*args, targets[:1], [0.0], lambda x: {"m": "high"}, progress=False)
    with pytest.raises(ValueError, match="no hook_name"):
        direction_target(torch.ones(16))
    with pytest.raises(ValueError, match="out of range"):
        feature_target(sae, 99)
    bad_hook = direction_target(torch.ones(16), name="typo", hook_name="blocks.0.hook_resid_pots")
    with pytest.raises(ValueError, match=r"did you mean 'blocks\.0\.hook_resid_post'"):
        run_sweep(*args, [bad_hook], [0.0], _mean_logits, progress=False)
