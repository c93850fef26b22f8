"""The report's building blocks without a run: SVG charts, cells, settings and step records."""

from __future__ import annotations

import math
from html.parser import HTMLParser

import pytest
from mechrec_recsys.report.markup import num_cell, text_cell
from mechrec_recsys.report.pipeline import settings_conflicts
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
