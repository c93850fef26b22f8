"""One command for the whole paper: run every step into a run folder, render one HTML report.

- :mod:`~mechrec_recsys.report.settings`: :class:`ReproduceSettings` (paper and quick presets);
- :mod:`~mechrec_recsys.report.layout`: where each output lives in a run folder;
- :mod:`~mechrec_recsys.report.steps`: the steps, each a call of the library function;
- :mod:`~mechrec_recsys.report.pipeline`: :func:`run_pipeline`, resumable, with step records;
- :mod:`~mechrec_recsys.report.outputs`: reading a run folder's saved outputs;
- :mod:`~mechrec_recsys.report.sections`: one HTML section per part of the paper;
- :mod:`~mechrec_recsys.report.render`: :func:`render_report` / :func:`write_report` (one
  self-contained page; its charts are :mod:`mechrec.plots` figures).
"""

from mechrec_recsys.report.layout import RunLayout
from mechrec_recsys.report.pipeline import PipelineResult, StepStatus, run_pipeline
from mechrec_recsys.report.render import render_report, write_report
from mechrec_recsys.report.settings import ReproduceSettings

__all__ = [
    "PipelineResult",
    "ReproduceSettings",
    "RunLayout",
    "StepStatus",
    "render_report",
    "run_pipeline",
    "write_report",
]
