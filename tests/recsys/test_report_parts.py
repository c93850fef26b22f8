"""The report's building blocks without a run: SVG charts, cells, settings and step records."""

from __future__ import annotations

import math
from html.parser import HTMLParser

import pytest
from mechrec_recsys.report.markup import num_cell, text_cell
from mechrec_recsys.report.pipeline import settings_conflicts
from mechrec_recsys.report.sections import bootstrap_conclusion, difference_verdict
from mechrec_recsys.report.settings import ReproduceSettings, step_digest, step_settings
from mechrec_recsys.report.svg import Series, bar_chart, line_chart, nice_ticks


def texts(svg: str) -> list[str]:
    found: list[str] = []

    class Collect(HTMLParser):
        def handle_data(self, data: str) -> None:
            found.append(data)

    Collect().feed(svg)
    return found


def test_line_chart_escapes_labels_and_skips_missing_points():
    svg = line_chart([Series("<b>a&b</b>", [0, 1, 2], [0.1, None, math.nan]),
                      Series("probe", [0, 1, 2], [0.2, 0.3, 0.25], err=[0.01, None, 0.02],
                             dashed=True)],
                     title="t <script>", x_label="value", y_label="share",
                     references={"unsteered": 0.22, "none": None})
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "&lt;b&gt;" in svg
    assert svg.count("<circle") == 1 + 3  # NaN and None points are not drawn
    assert "stroke-dasharray" in svg and "unsteered" in texts(svg)
    assert "http" not in svg


def test_charts_without_data_say_so():
    assert "no data" in texts(line_chart([Series("a", [1.0], [None])], title="t",
                                         x_label="x", y_label="y"))
    assert "no data" in texts(bar_chart(["A"], {"g": [math.nan]}, title="t", y_label="y"))


def test_bar_chart_draws_one_bar_per_value_and_checks_lengths():
    svg = bar_chart(["Action", "Sci-Fi"], {"SAE": [0.3, -0.1], "neurons": [0.2, None]},
                    title="t", y_label="corr")
    assert svg.count("<rect") == 1 + 3  # background + three finite bars
    assert "Sci-Fi, SAE: -0.1" in svg
    with pytest.raises(ValueError, match="2 categories"):
        bar_chart(["A", "B"], {"g": [1.0]}, title="t", y_label="y")


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (-10.0, 10.0), (0.0213, 0.0297),
                                           (5.0, 5.0), (3.0, -2.0)])
def test_nice_ticks_cover_the_range(low: float, high: float):
    ticks = nice_ticks(low, high)
    assert ticks[0] <= min(low, high) and ticks[-1] >= max(low, high)
    assert 2 <= len(ticks) <= 12


@pytest.mark.parametrize(("low", "high"), [(1.0, 3.0), (1.0, 2.0), (1.0, 72.0), (5.0, 5.0)])
def test_integer_ticks_are_whole_numbers(low: float, high: float):
    ticks = nice_ticks(low, high, 6, integer=True)
    assert ticks[0] <= low and ticks[-1] >= high
    assert all(t == int(t) for t in ticks)
    series = [Series("loss", [1, 2, 3], [30.0, 20.0, 10.0])]
    fractional = line_chart(series, title="t", x_label="epoch", y_label="loss")
    assert ">1.5<" in fractional  # the default ticks of 3 points
    svg = line_chart(series, title="t", x_label="epoch", y_label="loss", integer_x=True)
    assert ">1.5<" not in svg and ">2.5<" not in svg and ">2<" in svg


def test_numeric_cells_keep_exact_values():
    cell = num_cell(0.123456789, key="k/<x>", spread=0.01, digits=3)
    assert 'data-value="0.123456789"' in cell and 'data-se="0.01"' in cell
    assert ">0.123 ± 0.010<" in cell and 'data-key="k/&lt;x&gt;"' in cell
    assert "data-value" not in num_cell(None) and ">–<" in num_cell(float("nan"))
    assert ">7<" in num_cell(7.0, count=True)
    assert "&lt;i&gt;" in text_cell("<i>")


def test_settings_round_trip_and_digests():
    quick = ReproduceSettings.quick_preset(seed=3)
    assert ReproduceSettings.from_json(quick.to_json()) == quick
    other = quick.with_overrides(sae_steps=400, epochs=None)
    assert other.epochs == quick.epochs and other.sae_steps == 400
    assert step_digest(other, "sae") != step_digest(quick, "sae")
    assert step_digest(other, "train") == step_digest(quick, "train")
    records = {"sae": {"digest": step_digest(quick, "sae"),
                       "settings": step_settings(quick, "sae")}}
    assert settings_conflicts(quick, records) == []
    assert settings_conflicts(other, records) == ["sae (sae_steps 300 -> 400)"]
    with pytest.raises(ValueError, match="SAE users"):
        ReproduceSettings(split="loo")
    with pytest.raises(ValueError, match="unknown settings"):
        quick.with_overrides(colour="red")
    paper = ReproduceSettings.paper()
    assert (paper.n_layers, paper.n_heads, paper.d_model) == (3, 2, 64)
    assert (paper.sae_d_sae, paper.sae_l1, paper.sae_steps) == (2048, 0.1, 3000)
    assert paper.steer_values[0] == -10.0 and paper.steer_values[-1] == 10.0


def test_bootstrap_setting_belongs_to_the_align_step_only():
    quick = ReproduceSettings.quick_preset()
    assert quick.align_bootstrap == 50 and ReproduceSettings.paper().align_bootstrap == 200
    other = quick.with_overrides(align_bootstrap=10)
    changed = [step for step in ("data", "train", "table1", "sae", "align", "steer")
               if step_digest(other, step) != step_digest(quick, step)]
    assert changed == ["align"]
    records = {"align": {"digest": step_digest(quick, "align"),
                         "settings": step_settings(quick, "align")}}
    assert settings_conflicts(other, records) == ["align (align_bootstrap 50 -> 10)"]
    # a record made before the setting existed is no conflict (the step reruns instead)
    old = {key: value for key, value in step_settings(quick, "align").items()
           if key != "align_bootstrap"}
    assert settings_conflicts(other, {"align": {"digest": "old", "settings": old}}) == []
    changed_seed = {**old, "align_top_k": 9}
    assert settings_conflicts(other, {"align": {"digest": "old", "settings": changed_seed}}) \
        == ["align (align_top_k 9 -> 5, align_bootstrap None -> 10)"]
    with pytest.raises(ValueError, match="align_bootstrap must be >= 0"):
        quick.with_overrides(align_bootstrap=-1)


def test_bootstrap_sentences_follow_the_numbers():
    assert "contains 0 (48% of resamples > 0)" in difference_verdict(
        "SAE", "neurons", -0.009, 0.009, 0.48, 0.95)
    above = difference_verdict("SAE", "random", 0.001, 0.02, 0.99, 0.9)
    assert "90% interval +0.001 to +0.020 lies above 0" in above
    assert "SAE features score higher than random control" in above
    below = difference_verdict("neurons", "random", -0.02, -0.001, 0.0, 0.95)
    assert "lies below 0" in below and "neurons score lower than random control" in below
    assert "no 95% interval" in difference_verdict("SAE", "neurons", math.nan, None, None, 0.95)
    assert bootstrap_conclusion([(-1, 1), (-0.5, 0.0)], "genres").startswith(
        "Every difference interval contains 0")
    assert bootstrap_conclusion([(0.1, 1), (-2, -1)], "genres").startswith(
        "No difference interval contains 0")
    assert bootstrap_conclusion([(-1, 1), (0.1, 1), (None, 1)], "genres") == \
        "1 of 2 difference intervals contains 0; the other one separates its pair."
    assert bootstrap_conclusion([], "genres") == "No difference has an interval."


def test_reproduce_cli_passes_align_bootstrap_to_the_settings(tmp_path, monkeypatch) -> None:
    """``--align-bootstrap`` reaches the pipeline's settings (the pipeline itself is replaced)."""
    import mechrec_recsys.report as report_pkg
    from mechrec_recsys.cli.main import app
    from typer.testing import CliRunner

    seen = {}

    def fake_pipeline(settings, out, **kwargs):
        seen["settings"] = settings
        raise ValueError("stop here")

    monkeypatch.setattr(report_pkg, "run_pipeline", fake_pipeline)
    result = CliRunner().invoke(app, ["reproduce", "--out", str(tmp_path / "run"), "--quick",
                                      "--align-bootstrap", "7"])
    assert seen["settings"].align_bootstrap == 7
    assert result.exit_code == 2 and "stop here" in result.output
