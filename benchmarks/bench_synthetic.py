"""Synthetic-world benchmark: time and peak memory of ``generate_world`` per size.

Each size runs in a fresh Python process, so every peak RSS (``resource.getrusage``, the
process's high-water mark) is that size's alone. The table shows the peak after imports and
reading the catalog (``base``) and at the end (``peak``): the difference is what generating
costs, which must not grow with the number of users (the world is written chunk by chunk).

Run (2 cores; ml-20m size takes a minute or two and writes 165 MB):
    OMP_NUM_THREADS=1 python benchmarks/bench_synthetic.py                 # ml-100k, ml-1m
    OMP_NUM_THREADS=1 python benchmarks/bench_synthetic.py ml-100k ml-1m ml-20m --out /tmp/w
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import json, resource, sys, time
from mechrec_recsys.synthetic import (SynthConfig, default_catalog_path, generate_world,
                                      read_catalog)
size, out, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
began = time.perf_counter()
catalog = read_catalog(default_catalog_path())
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
summary = generate_world(SynthConfig.preset(size, seed=seed), catalog, out, overwrite=True)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"size": size, "users": summary.info["counts"]["users"],
                  "events": summary.events, "generate_s": summary.info["seconds"],
                  "wall_s": time.perf_counter() - began, "base_kib": base, "peak_kib": peak}))
"""


def run_size(size: str, out: Path, seed: int) -> dict:
    """Generate one world in a child process; returns its measurements."""
    result = subprocess.run([sys.executable, "-c", _CHILD, size, str(out / size), str(seed)],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", default=["ml-100k", "ml-1m"])
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the worlds (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out if args.out is not None else Path(tmp)
        print("| size | users | events | generate (s) | wall incl. catalog (s) | base RSS | "
              "peak RSS | peak - base |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for size in args.sizes:
            row = run_size(size, out, args.seed)
            base, peak = row["base_kib"] / 1024, row["peak_kib"] / 1024
            print(f"| {size} | {row['users']:,} | {row['events']:,} | {row['generate_s']:.1f} "
                  f"| {row['wall_s']:.1f} | {base:.0f} MiB | {peak:.0f} MiB | "
                  f"{peak - base:.0f} MiB |", flush=True)


if __name__ == "__main__":
    main()
