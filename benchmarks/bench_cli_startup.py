"""Wall time of the ``mechrec`` command line's quick answers, against importing the heavy stack.

Each case runs in a fresh interpreter ``--runs`` times (default 5); the table gives the median
and the fastest run in seconds. Cases:

* ``mechrec --help``, ``mechrec sae train --help``, ``mechrec data list`` and an argument error
  (``mechrec steer sweep RUN SAE --values 0,nan``): what a user waits for;
* ``python -c "import torch"`` and the eager import of the adapter's heavy modules (what every
  command paid before the CLI imported them lazily): the reference;
* ``python -c "pass"``: the interpreter alone.

``--root DIR`` times another checkout (e.g. the main branch before the change) with the same
cases, so before and after are measured on the same machine under the same load::

    python benchmarks/bench_cli_startup.py --runs 5
    python benchmarks/bench_cli_startup.py --runs 5 --root ../main   # another checkout

Not a pytest benchmark: startup depends on the disk cache and the machine's load, so the
numbers are reported (docs/performance.md), not asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The adapter's heavy modules, all imported by every command before the lazy CLI.
EAGER = ("import mechrec_recsys.training, mechrec_recsys.saes, mechrec_recsys.alignment, "
         "mechrec_recsys.steering, mechrec_recsys.equalizer, mechrec_recsys.report")


def cases() -> list[tuple[str, list[str]]]:
    """``(label, argv)`` of every timed case."""
    cli = [sys.executable, "-m", "mechrec_recsys.cli.main"]
    return [
        ("python -c pass", [sys.executable, "-c", "pass"]),
        ("mechrec --help", [*cli, "--help"]),
        ("mechrec sae train --help", [*cli, "sae", "train", "--help"]),
        ("mechrec data list", [*cli, "data", "list"]),
        ("mechrec steer sweep R S --values 0,nan (exit 2)",
         [*cli, "steer", "sweep", "R", "S", "--values", "0,nan"]),
        ('python -c "import torch"', [sys.executable, "-c", "import torch"]),
        ("eager import of the adapter", [sys.executable, "-c", EAGER]),
    ]


def time_once(argv: list[str], env: dict[str, str], cwd: str) -> float:
    """Seconds of wall time of one run of ``argv`` (its output discarded)."""
    started = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def main() -> None:
    """Time every case and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per case (median reported)")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="checkout to time (default: this one)")
    args = parser.parse_args()
    root = args.root.resolve()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), str(root / "adapters")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"checkout {root}; {args.runs} runs per case; load average {load:.1f}; "
          f"{os.cpu_count()} CPUs; {sys.version.split()[0]}")
    print()
    print("| case | median (s) | fastest (s) |")
    print("|---|---:|---:|")
    with tempfile.TemporaryDirectory() as cwd:
        for label, argv in cases():
            time_once(argv, env, cwd)  # warm the disk cache
            times = [time_once(argv, env, cwd) for _ in range(args.runs)]
            print(f"| {label} | {statistics.median(times):.2f} | {min(times):.2f} |", flush=True)


if __name__ == "__main__":
    main()
