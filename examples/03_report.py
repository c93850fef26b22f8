"""The whole paper in one call, then one self-contained HTML report.

Usage::

    python examples/03_report.py                  # ml-100k from $MECHREC_DATA, cache or download
    python examples/03_report.py /data/ml         # or from a folder holding ml-100k/
    python examples/03_report.py --out runs/paper # keep the run folder (rerun to resume)

It does in Python what ``mechrec reproduce --dataset ml-100k --split paper --out DIR`` does:
``run_pipeline`` runs every step (dataset statistics, GPTRec vs popularity, Table 1, the
analysis SAE, Table 2 / Figure 4, steering curves), skipping steps whose outputs are already
in the folder, and ``write_report`` turns the saved outputs into ``DIR/report.html`` (inline
CSS and plotly charts with plotly.js embedded once: it opens offline). The script prints what
each step did, a few headline numbers read back from the run's files, and where the report
is.

The paper's settings take hours on a 2-core CPU; with ``MECHREC_EXAMPLE_QUICK=1`` every step
runs at toy size (seconds).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from pathlib import Path

from mechrec_recsys.report import ReproduceSettings, run_pipeline, write_report

QUICK = os.environ.get("MECHREC_EXAMPLE_QUICK") == "1"


def main(out: Path, data_dir: str | None) -> None:
    """Run every step into ``out``, write the report and print a summary."""
    preset = ReproduceSettings.quick_preset if QUICK else ReproduceSettings.paper
    settings = preset(dataset="ml-100k", split="paper", seed=0)
    result = run_pipeline(settings, out, data_dir=data_dir,
                          log=lambda message: print(message, file=sys.stderr))
    for status in result.statuses:
        took = f" in {status.seconds:.1f} s" if status.seconds is not None else ""
        print(f"{status.name:>7}: {status.status}{took}")

    comparison = json.loads((out / "metrics.json").read_text())["comparison"]
    for name, report in comparison["reports"].items():
        ndcg = report["metrics"]["ndcg"]
        print(f"{name:>10}: NDCG@{comparison['k']} {ndcg['mean']:.4f} ± {ndcg['se']:.4f}")
    with (result.layout.steering_dir / "features.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            print(f"{row['genre']:>10}: steered with SAE feature {row['feature']} (correlation "
                  f"{float(row['correlation_test']):.3f} on the test users)")

    path = write_report(out)
    print(f"report: {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", help="folder holding ml-100k/ (optional)")
    parser.add_argument("--out", type=Path, help="run folder to keep (default: temporary)")
    args = parser.parse_args()
    try:
        if args.out is not None:
            main(args.out, args.data_dir)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                main(Path(tmp) / "run", args.data_dir)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
