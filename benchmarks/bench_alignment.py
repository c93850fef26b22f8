"""Alignment benchmark: ``alignment_stats`` against a loop over scipy / scikit-learn.

Setting (defaults): N = 1,000,000 rows, F = 2048 SAE-like features, A = 20 binary attributes.
Features are sparse like SAE activations (about 5% non-zero, exponential values, each feature
firing more often on one attribute) and stored as a CSC sparse matrix; attribute prevalences run
from 1% to 45%. All five metrics are computed (correlation, exact ROC AUC, sensitivity, precision,
mean activation given the attribute).

Cases:
``sparse``   ``alignment_stats`` on the CSC matrix, with 1 thread and with ``--jobs`` threads.
``neurons``  dense ``(N, 64)`` float32 "neurons" (no zeros), 1 thread.
``lazy``     a random-projection control of width F over ``(N, 64)`` inputs, computed lazily
             (the dense ``N x F`` matrix, 8 GB in float32, never exists), ``--jobs`` threads.

The reference is the obvious loop: for each feature and attribute, ``scipy.stats.pearsonr``,
``sklearn.metrics.roc_auc_score`` and numpy for the three rates, on the dense float64 column.
It is far too slow to run in full, so it runs on ``--baseline-features`` features and the time
is extrapolated linearly to all F (the output says so). Speed-ups are reported against the
single-threaded loop and, for the threaded runs, against an ideal 2-way parallel loop
(loop time / jobs). The benchmark also checks that both give the same numbers on the subset.

Memory: peak of traced Python/numpy allocations during each call (``tracemalloc``; the inputs,
allocated before, are not counted) and the process's peak RSS (``resource.getrusage``).

Run (2 cores):
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_alignment.py
    python benchmarks/bench_alignment.py --rows 100000 --features 256   # a quick look
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc
import warnings
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from scipy.stats import pearsonr
from sklearn.metrics import roc_auc_score

from mechrec.alignment import METRICS, alignment_stats, random_projection_control


def make_attributes(rng: np.random.Generator, n: int, a: int) -> np.ndarray:
    """(n, a) uint8 attributes with prevalences from 1% to 45%."""
    prevalence = np.linspace(0.01, 0.45, a)
    return (rng.random((n, a)) < prevalence).astype(np.uint8)


def make_sae_features(
    rng: np.random.Generator, y: np.ndarray, n_features: int, density: float
) -> sp.csc_matrix:
    """Sparse SAE-like features: each fires with rate ~density, 4x more often on one attribute."""
    n, a = y.shape
    owner = rng.integers(0, a, n_features)
    indptr = [0]
    indices, data = [], []
    pos_rows = [np.flatnonzero(y[:, j]) for j in range(a)]
    neg_rows = [np.flatnonzero(y[:, j] == 0) for j in range(a)]
    for f in range(n_features):
        pos, neg = pos_rows[owner[f]], neg_rows[owner[f]]
        # rates p_neg and 4 * p_neg chosen so the overall rate is `density`
        p_neg = density / (1 + 3 * len(pos) / n)
        k_pos = rng.binomial(len(pos), min(1.0, 4 * p_neg))
        k_neg = rng.binomial(len(neg), p_neg)
        rows = np.union1d(
            pos[rng.integers(0, len(pos), k_pos)] if len(pos) else np.empty(0, np.int64),
            neg[rng.integers(0, len(neg), k_neg)],
        )
        indices.append(rows.astype(np.int32))
        data.append(rng.exponential(size=rows.size).astype(np.float32) + 1e-3)
        indptr.append(indptr[-1] + rows.size)
    return sp.csc_matrix(
        (np.concatenate(data), np.concatenate(indices), np.array(indptr, dtype=np.int64)),
        shape=(n, n_features),
    )


def loop_reference(column: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """What a user would write: scipy / sklearn / numpy per attribute for one feature."""
    out = {m: np.empty(y.shape[1]) for m in METRICS}
    active = column > 0
    n_active = active.sum()
    for j in range(y.shape[1]):
        t = y[:, j]
        pos = t == 1
        out["correlation"][j] = pearsonr(column, t).statistic
        out["roc_auc"][j] = roc_auc_score(t, column)
        out["sensitivity"][j] = active[pos].mean()
        out["precision"][j] = pos[active].sum() / n_active if n_active else np.nan
        out["mean_given_attribute"][j] = column[pos].mean()
    return out


def measure(fn: Callable[[], object]) -> tuple[object, float, int]:
    """(result, seconds, peak traced bytes) of one call."""
    tracemalloc.start()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, seconds, peak


def rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_loop(columns: Callable[[int], np.ndarray], y: np.ndarray, features: list[int]):
    """Run the reference loop on some features: (seconds per feature, results)."""
    results = {}
    t0 = time.perf_counter()
    for f in features:
        results[f] = loop_reference(columns(f), y)
    return (time.perf_counter() - t0) / len(features), results


def max_diff(stats, results: dict[int, dict[str, np.ndarray]]) -> float:
    worst = 0.0
    for f, ref in results.items():
        for m in METRICS:
            got, exp = stats.values[m][f], ref[m]
            both = ~(np.isnan(got) & np.isnan(exp))
            worst = max(worst, float(np.nanmax(np.abs(got[both] - exp[both]), initial=0.0)))
    return worst


def report(name: str, seconds: float, peak: int, loop_total: float, jobs: int) -> None:
    line = (
        f"  {name:<28} {seconds:8.1f} s   traced peak {peak / 2**20:7.0f} MiB   "
        f"speed-up vs loop: {loop_total / seconds:7.0f}x"
    )
    if jobs > 1:
        line += f"   vs ideal {jobs}-way parallel loop: {loop_total / jobs / seconds:6.0f}x"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=2048)
    parser.add_argument("--attributes", type=int, default=20)
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--baseline-features", type=int, default=4)
    parser.add_argument("--cases", nargs="+", default=["sparse", "neurons", "lazy"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(args.seed)
    n, f, a = args.rows, args.features, args.attributes

    print(f"alignment benchmark: N={n:,} rows, F={f} features, A={a} attributes, all metrics")
    t0 = time.perf_counter()
    y = make_attributes(rng, n, a)
    x = make_sae_features(rng, y, f, args.density)
    print(
        f"data: CSC features with {x.nnz:,} non-zeros ({x.nnz / (n * f):.1%}), "
        f"{(x.data.nbytes + x.indices.nbytes) / 2**20:.0f} MiB; built in "
        f"{time.perf_counter() - t0:.1f} s",
        flush=True,
    )

    if "sparse" in args.cases:
        subset = list(range(min(args.baseline_features, f)))
        per_feature, ref = time_loop(
            lambda j: x[:, j].toarray().ravel().astype(np.float64), y, subset
        )
        loop_total = per_feature * f
        print(
            f"reference loop (scipy.stats.pearsonr + sklearn roc_auc_score + numpy rates): "
            f"{per_feature:.2f} s per feature x {a} attributes, timed on {len(subset)} features "
            f"and EXTRAPOLATED to {f} features: {loop_total:.0f} s ({loop_total / 3600:.2f} h)",
            flush=True,
        )
        print("sparse SAE-like features (CSC):")
        for jobs in sorted({1, args.jobs}):
            stats, seconds, peak = measure(lambda j=jobs: alignment_stats(x, y, n_jobs=j))
            report(f"alignment_stats n_jobs={jobs}", seconds, peak, loop_total, jobs)
        print(f"  max |difference| from the loop on the timed features: {max_diff(stats, ref):.2e}")
        del stats

    if "neurons" in args.cases:
        d = args.d_model
        dense = rng.normal(size=(n, d)).astype(np.float32)
        dense += (y[:, rng.integers(0, a, d)] * 0.5).astype(np.float32)
        subset = list(range(min(args.baseline_features, d)))
        per_feature, ref = time_loop(lambda j: dense[:, j].astype(np.float64), y, subset)
        loop_total = per_feature * d
        print(
            f"dense neurons ({n:,} x {d}, no zeros): reference loop {per_feature:.2f} s per "
            f"feature, timed on {len(subset)} and EXTRAPOLATED to {d}: {loop_total:.0f} s"
        )
        stats, seconds, peak = measure(lambda: alignment_stats(dense, y))
        report("alignment_stats n_jobs=1", seconds, peak, loop_total, 1)
        print(f"  max |difference| from the loop on the timed features: {max_diff(stats, ref):.2e}")
        del stats, dense

    if "lazy" in args.cases:
        d = args.d_model
        inputs = rng.normal(size=(n, d)).astype(np.float32)
        inputs += (y[:, rng.integers(0, a, d)] * 0.5).astype(np.float32)
        print(
            f"random-projection control: width {f} over ({n:,} x {d}) inputs, firing rate "
            f"{args.density:.0%}, computed lazily (dense N x F would be "
            f"{n * f * 4 / 2**30:.1f} GiB in float32):"
        )
        t0 = time.perf_counter()
        control = random_projection_control(
            inputs, f, seed=args.seed, active_fraction=args.density, chunk_rows=16384
        )
        print(f"  fit (mean, directions, biases)  {time.perf_counter() - t0:8.1f} s")
        stats, seconds, peak = measure(lambda: alignment_stats(control, y, n_jobs=args.jobs))
        print(
            f"  alignment_stats n_jobs={args.jobs}     {seconds:8.1f} s   traced peak "
            f"{peak / 2**20:7.0f} MiB   mean active rate {stats.feature_active_rate.mean():.3f}"
        )
    print(f"process peak RSS: {rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
