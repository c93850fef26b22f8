"""``mechrec reproduce --budget``: the plan's estimate, its cuts in order, what it never cuts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from mechrec_recsys.data import load_dataset
from mechrec_recsys.data.splits import make_split
from mechrec_recsys.experiment import FULL_HISTORY
from mechrec_recsys.report.budget import (
    CostModel,
    WorkSize,
    estimate_seconds,
    fit_budget,
    plan_budget,
    work_size,
)
from mechrec_recsys.report.settings import STEP_FIELDS, ReproduceSettings, step_digest

#: The paper split of ml-1m-ordered at seed 0 (max_len 200), as ``work_size`` counts it.
ML1M = WorkSize(train_tokens=288_659 + 47_564, sae_positions=221_049,
                test_positions=101_775, test_users=596)


def paper(**changes) -> ReproduceSettings:
    return replace(ReproduceSettings.paper("ml-1m-ordered"), **changes)


def total_minutes(settings: ReproduceSettings, size: WorkSize = ML1M) -> float:
    return sum(estimate_seconds(settings, size).values()) / 60


def test_estimate_adds_the_steps_costs_by_hand() -> None:
    cost = CostModel()
    s = paper()
    est = estimate_seconds(s, ML1M, cost)
    assert est["train"] == pytest.approx(200 * 336_223 * cost.gptrec_token_epoch)
    # 8 L1 weights at 2,048 + 8 sizes at λ 0.1, the (0.1, 2048) point once: 15 points x 2 seeds
    one_2048 = 2048 * (1500 * 256 * cost.sae_row_feature
                       + 322_824 * cost.sae_eval_position_feature)
    sizes = (64, 128, 256, 512, 1024, 4096, 8192)
    per_seed = 8 * one_2048 + sum(one_2048 * d / 2048 for d in sizes)
    assert est["table1"] == pytest.approx(2 * per_seed)
    # six genres x (2 edit modes + random control + probe + decoder) x 21 values x 596 users
    assert est["steer"] == pytest.approx(596 * 21 * 6 * 5 * cost.steer_user_value_curve)
    # ablations: 8 rows aligned (base, items, topk, jumprelu, no-norm, 2 other blocks, MLP
    # out) and 6 SAEs trained like the analysis SAE
    analysis = 2048 * (3000 * 1024 * cost.sae_row_feature
                       + 322_824 * cost.sae_eval_position_feature)
    assert est["sae"] == pytest.approx(analysis)
    assert est["ablations"] == pytest.approx(8 * est["align"] + 6 * analysis)
    assert estimate_seconds(paper(ablations=()), ML1M, cost)["ablations"] == 0
    assert set(est) == set(STEP_FIELDS)


def test_a_generous_budget_cuts_nothing_but_records_itself() -> None:
    plan = fit_budget(paper(), 100_000, ML1M)
    assert plan.cuts == ()
    assert plan.settings == paper(budget_minutes=100_000.0)
    # the budget is no step's setting: the same run folder resumes under any budget
    for step in STEP_FIELDS:
        assert step_digest(plan.settings, step) == step_digest(paper(), step)


def test_cuts_come_in_order_and_the_plan_fits() -> None:
    full = total_minutes(paper())
    plan = fit_budget(paper(), 150, ML1M)
    assert full > 150 >= plan.total_seconds / 60
    s = plan.settings
    assert s.budget_minutes == 150 and s.budget_cuts == plan.cuts
    assert plan.cuts[0].startswith("Table 1: seed 0 only")
    assert s.table1_seeds == (0,) and s.steer_modes == ("replace",)
    # the thinned grids keep their ends and the fixed point of the other sweep
    assert {0.001, 0.1, 1.0} <= set(s.table1_l1) and len(s.table1_l1) < 8
    assert {64, 2048, 8192} <= set(s.table1_d_sae)
    assert 0.0 in s.steer_values and -10.0 in s.steer_values and 10.0 in s.steer_values
    assert 10 <= s.epochs < 200
    assert s.ablations == ("items", "topk", "jumprelu")
    assert any(line.startswith("ablations: items, topk, jumprelu only") for line in plan.cuts)
    # a smaller budget never keeps more of anything
    small = fit_budget(paper(), 90, ML1M).settings
    assert small.epochs <= s.epochs and small.table1_steps <= s.table1_steps


def test_the_plan_is_deterministic() -> None:
    assert fit_budget(paper(), 150, ML1M) == fit_budget(paper(), 150, ML1M)


def test_fixed_settings_are_never_cut() -> None:
    plan = fit_budget(paper(epochs=120), 300, ML1M,
                      fixed={"epochs", "table1_seeds", "ablations"})
    assert plan.settings.epochs == 120
    assert plan.settings.table1_seeds == (0, 1)
    assert plan.settings.ablations == paper().ablations
    assert not any(line.startswith("GPTRec") for line in plan.cuts)


def test_a_budget_below_the_smallest_plan_is_refused_with_the_estimate() -> None:
    with pytest.raises(ValueError, match=r"budget of 5 min is too small.*estimate is [\d.]+ min"):
        fit_budget(paper(), 5, ML1M)
    with pytest.raises(ValueError, match="fixed: epochs"):
        fit_budget(paper(epochs=200), 60, ML1M, fixed={"epochs"})
    for bad in (0, -3, float("nan")):
        with pytest.raises(ValueError, match="positive number of minutes"):
            fit_budget(paper(), bad, ML1M)


def test_budget_settings_round_trip_through_json() -> None:
    planned = fit_budget(paper(), 120, ML1M).settings
    assert ReproduceSettings.from_json(planned.to_json()) == planned
    with pytest.raises(ValueError, match="budget_minutes must be positive"):
        paper(budget_minutes=0.0)


def test_work_size_counts_the_split_as_the_model_reads_it(data_dir: Path) -> None:
    dataset = load_dataset("ml-100k", data_dir / "ml-100k", download=False)
    split = make_split(dataset, "paper", seed=0, max_len=FULL_HISTORY)
    size = work_size(split, 50)

    def capped(part) -> int:
        return int(sum(min(len(seq), 50) for seq in part.sequences))

    assert size.train_tokens == capped(split.train) + capped(split.validation)
    assert size.sae_positions == capped(split.sae_train)
    assert size.test_positions == capped(split.test)
    assert size.test_users == len(split.test)
    assert size.sae_positions < int(np.sum(split.sae_train.lengths()))


def test_plan_budget_reads_the_named_split(data_dir: Path) -> None:
    settings = ReproduceSettings.paper("ml-100k")
    plan = plan_budget(settings, 60, data_dir=data_dir / "ml-100k", download=False)
    assert plan.total_seconds <= 3600
    assert plan.settings.budget_minutes == 60


def test_reproduce_cli_fits_the_budget_and_refuses_a_tiny_one(tmp_path, monkeypatch,
                                                               data_dir: Path) -> None:
    import mechrec_recsys.report as report_pkg
    from mechrec_recsys.cli.main import app
    from typer.testing import CliRunner

    seen = {}

    def fake_pipeline(settings, out, **kwargs):
        seen["settings"] = settings
        raise ValueError("stop here")

    monkeypatch.setattr(report_pkg, "run_pipeline", fake_pipeline)
    args = ["reproduce", "--out", str(tmp_path / "run"), "--dataset", "ml-100k",
            "--data-dir", str(data_dir / "ml-100k"), "--no-download"]
    result = CliRunner().invoke(app, [*args, "--budget", "40", "--epochs", "150"])
    assert result.exit_code == 2 and "stop here" in result.output
    settings = seen["settings"]
    assert settings.budget_minutes == 40 and settings.epochs == 150
    assert "budget 40 min:" in result.output and "Estimated" in result.output
    result = CliRunner().invoke(app, [*args, "--budget", "0.5"])
    assert result.exit_code == 2
    assert "too small" in result.output and "Traceback" not in result.output


def test_a_budgeted_reproduce_loads_the_dataset_once(tmp_path, monkeypatch,
                                                     data_dir: Path) -> None:
    """The plan's dataset and split go on to the pipeline, whose steps then load nothing."""
    import mechrec_recsys.data as data_pkg
    import mechrec_recsys.report as report_pkg
    import mechrec_recsys.report.pipeline as pipeline
    import mechrec_recsys.report.steps as steps
    from mechrec_recsys.cli.main import app
    from mechrec_recsys.report.budget import load_split
    from typer.testing import CliRunner

    settings = ReproduceSettings.paper("ml-100k")
    root = data_dir / "ml-100k"
    split = load_split(settings, root, download=False)[1]
    assert plan_budget(settings, 60, split=split) == plan_budget(settings, 60, data_dir=root,
                                                                  download=False)
    loads = []

    def counted(*args, **kwargs):
        loads.append(args)
        return load_dataset(*args, **kwargs)

    monkeypatch.setattr(data_pkg, "load_dataset", counted)
    monkeypatch.setattr(steps, "load_dataset", counted)
    seen = {}

    def fake_pipeline(settings, out, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(report_pkg, "run_pipeline", fake_pipeline)
    result = CliRunner().invoke(app, ["reproduce", "--out", str(tmp_path / "run"), "--dataset",
                                      "ml-100k", "--data-dir", str(root), "--no-download",
                                      "--budget", "60"])
    assert result.exit_code == 2 and "stop here" in result.output
    assert len(loads) == 1
    assert seen["split"].info == split.info and seen["dataset"].name == "ml-100k"
    # the pipeline's steps use what they are given (the data step reads both)
    monkeypatch.setattr(pipeline, "STEPS", tuple(s for s in steps.STEPS if s.name == "data"))
    loads.clear()
    pipeline.run_pipeline(settings, tmp_path / "run", dataset=seen["dataset"],
                          split=seen["split"])
    assert loads == []
    other = load_split(replace(settings, seed=1), root, download=False)[1]
    with pytest.raises(ValueError, match="split given is not the one the settings name"):
        pipeline.run_pipeline(settings, tmp_path / "other", split=other)
