"""The report's building blocks without a run: charts, cells, settings and step records."""

from __future__ import annotations

import math

import pytest
from mechrec_recsys.report.markup import figure, num_cell, text_cell
from mechrec_recsys.report.pipeline import settings_conflicts
from mechrec_recsys.report.render import plotly_js, render_sections
from mechrec_recsys.report.sections import Section, bootstrap_conclusion, difference_verdict
from mechrec_recsys.report.settings import ReproduceSettings, step_digest, step_settings

from mechrec.plots import metric_lines


def test_a_figure_is_a_plotly_div_with_a_stable_id_and_an_escaped_caption():
    fig = metric_lines([{"x": 1, "y": 0.1}, {"x": 2, "y": 0.30000000000000004}], "x",
                       {"<b>a&b</b>": "y"}, title="t </script><script>")
    html = figure(fig, "caption <i>")
    assert html == figure(fig, "caption <i>")  # same figure, same page
    assert html != figure(fig, "another caption")
    assert html.count('class="plotly-graph-div"') == 1 and "Plotly.newPlot" in html
    assert "caption &lt;i&gt;" in html
    assert html.count("<script") == html.count("</script>") == 1  # the title's tags escaped
    assert "t \\u003c\\u002fscript\\u003e" in html
    assert "0.30000000000000004" in html  # hover text carries the exact value
    assert "get_plotlyjs" not in html and len(html) < 20_000  # plotly.js is not repeated


def test_the_page_embeds_plotly_js_once_and_only_with_charts():
    fig = metric_lines([{"x": 1, "y": 0.1}], "x", {"y": "y"})
    charts = [Section("a", "A", figure(fig, "one")), Section("b", "B", figure(fig, "two"))]
    page = render_sections(charts, "title", "sub")
    bundle = plotly_js()
    assert len(bundle) > 1_000_000 and "</script" not in bundle
    assert page.count(bundle) == 1 and page.index(bundle) < page.index("<body>")
    assert page.count("<script") == 1 + 2
    plain = render_sections([Section("a", "A", "<p>no chart</p>")], "title", "sub")
    assert "<script" not in plain and len(plain) < 10_000


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


def reproduce_settings(tmp_path, monkeypatch, *flags: str) -> ReproduceSettings:
    """The settings ``mechrec reproduce --quick FLAGS`` hands to the pipeline (which is
    replaced by one that records them and stops with an error)."""
    import mechrec_recsys.report as report_pkg
    from mechrec_recsys.cli.main import app
    from typer.testing import CliRunner

    seen = {}

    def fake_pipeline(settings, out, **kwargs):
        seen["settings"] = settings
        raise ValueError("stop here")

    monkeypatch.setattr(report_pkg, "run_pipeline", fake_pipeline)
    result = CliRunner().invoke(app, ["reproduce", "--out", str(tmp_path / "run"), "--quick",
                                      *flags])
    assert result.exit_code == 2 and "stop here" in result.output
    return seen["settings"]


def test_reproduce_cli_passes_align_bootstrap_to_the_settings(tmp_path, monkeypatch) -> None:
    """``--align-bootstrap`` reaches the pipeline's settings."""
    settings = reproduce_settings(tmp_path, monkeypatch, "--align-bootstrap", "7")
    assert settings.align_bootstrap == 7


@pytest.mark.parametrize(("flag", "expected"), [("items,topk", ("items", "topk")),
                                                ("none", ())])
def test_reproduce_cli_passes_ablations_to_the_settings(tmp_path, monkeypatch, flag,
                                                        expected) -> None:
    """``--ablations`` reaches the settings; ``none`` turns the rows off; the step's command
    follows the settings."""
    from mechrec_recsys.cli.main import app
    from mechrec_recsys.report.steps import step_command
    from typer.testing import CliRunner

    settings = reproduce_settings(tmp_path, monkeypatch, "--ablations", flag)
    assert settings.ablations == expected
    command = step_command("ablations", settings, "RUN")
    if expected:
        assert command.startswith("mechrec align ablations RUN paper --kinds items,topk ")
    else:
        assert command.startswith("(none")
    bad = CliRunner().invoke(app, ["reproduce", "--out", str(tmp_path / "run"), "--quick",
                                   "--ablations", "depth"])
    assert bad.exit_code == 2 and "--ablations 'depth': choose from items" in bad.output
