"""Activation-collection benchmarks: throughput, and peak memory under a memory budget.

Setting: a GPTRec-sized HookedTransformer (3 layers, d_model 64, 2 heads, d_mlp 256, 1700
tokens, n_ctx 200, random weights), batches of 64 left-padded sequences of length 200 with
ragged real lengths (about 3/4 of positions are real).

``throughput``
    rows/s of ``collect_activations`` at an early hook (the forward pass stops after block 0)
    and at the last block, next to what a user would write by hand: ``run_with_cache`` on the
    full model, then picking the real positions with the mask.
``memory``
    peak resident memory added by collecting several times the memory budget into a sharded
    store, against collecting everything in memory. Every case runs in a fresh subprocess and
    reads the kernel's peak-RSS counter (VmHWM, reset after the model is built and warmed up).

Run:
    OMP_NUM_THREADS=1 python benchmarks/bench_activations.py throughput
    OMP_NUM_THREADS=1 python benchmarks/bench_activations.py memory
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from _bench_common import gptrec_sized_model, random_left_padded, run_with_cache_rows
from transformer_lens import HookedTransformer

from mechrec.activations import bytes_per_row, collect_activations


def build_model() -> HookedTransformer:
    """A GPTRec-sized HookedTransformer with random weights."""
    return gptrec_sized_model().eval()


def build_batches(
    n_batches: int, batch: int = 64, seq_len: int = 200, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Left-padded random batches; real lengths uniform in [seq_len/2, seq_len]."""
    gen = torch.Generator().manual_seed(seed)
    return [random_left_padded(gen, batch, seq_len) for _ in range(n_batches)]


def run_throughput(args: argparse.Namespace) -> None:
    """Rows/s of collect_activations vs run_with_cache by hand."""
    model = build_model()
    batches = build_batches(args.batches)
    collect_activations(model, batches[:1], "blocks.0.hook_resid_post")  # warm-up
    rows = []
    for hook in ("blocks.0.hook_resid_post", "blocks.2.hook_resid_post"):
        t0 = time.perf_counter()
        acts = collect_activations(model, batches, hook)
        ours = len(acts) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        n = len(run_with_cache_rows(model, batches, hook))
        theirs = n / (time.perf_counter() - t0)
        assert n == len(acts)
        rows.append((hook, len(acts), ours, theirs, ours / theirs))
    print(
        f"activation collection, {args.batches} batches x 64 sequences x 200 positions, "
        f"torch threads {torch.get_num_threads()}, cpu\n"
    )
    print("| hook | rows | collect_activations rows/s | run_with_cache by hand rows/s | ratio |")
    print("|---|---|---|---|---|")
    for hook, n, ours, theirs, ratio in rows:
        print(f"| {hook} | {n:,} | {ours:,.0f} | {theirs:,.0f} | {ratio:.2f} |")


def _peak_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(n_batches: int, budget_mb: float | None) -> None:
    """One memory case, in its own process; prints a JSON line."""
    model = build_model()
    batches = build_batches(n_batches)
    collect_activations(model, batches[:2], "blocks.0.hook_resid_post")  # warm-up allocator
    reset = _reset_peak()
    before = _peak_rss_kb()
    with tempfile.TemporaryDirectory() as tmp:
        out = collect_activations(
            model,
            batches,
            "blocks.0.hook_resid_post",
            memory_budget_mb=budget_mb,
            store_dir=Path(tmp) / "store" if budget_mb is not None else None,
        )
        peak = _peak_rss_kb()
        print(
            json.dumps(
                {
                    "rows": len(out),
                    "data_mb": len(out) * bytes_per_row(64) / 2**20,
                    "shards": out.n_chunks,
                    "peak_added_mb": (peak - before) / 1024,
                    "peak_reset": reset,
                }
            )
        )


def run_memory(args: argparse.Namespace) -> None:
    """Peak RSS added by collection, sharded under a budget vs all in memory."""
    cases: list[tuple[int, float | None]] = []
    for n in args.sizes:
        cases += [(n, None), (n, args.budget_mb)]
    results = []
    for n, budget in cases:
        cmd = [sys.executable, __file__, "child", str(n), "none" if budget is None else str(budget)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results.append((n, budget, json.loads(out.strip().splitlines()[-1])))
    print(
        "peak resident memory added while collecting blocks.0.hook_resid_post (d=64, "
        f"{bytes_per_row(64)} bytes per row with its indices)\n"
    )
    print("| batches | rows | data MB | budget MB | data / budget | shards | peak RSS added MB |")
    print("|---|---|---|---|---|---|---|")
    for n, budget, r in results:
        ratio = f"{r['data_mb'] / budget:.1f}" if budget else "-"
        print(
            f"| {n} | {r['rows']:,} | {r['data_mb']:.1f} | {budget or 'none (in memory)'} | "
            f"{ratio} | {r['shards']} | {r['peak_added_mb']:.1f} |"
        )
    if not all(r["peak_reset"] for _, _, r in results):
        print("\n(VmHWM could not be reset: peaks include model construction)")


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    tp = sub.add_parser("throughput")
    tp.add_argument("--batches", type=int, default=20)
    mem = sub.add_parser("memory")
    mem.add_argument("--budget-mb", type=float, default=8.0)
    mem.add_argument("--sizes", type=int, nargs="+", default=[20, 80, 320])
    ch = sub.add_parser("child")
    ch.add_argument("n_batches", type=int)
    ch.add_argument("budget")
    args = parser.parse_args(argv)
    if args.what == "throughput":
        run_throughput(args)
    elif args.what == "memory":
        run_memory(args)
    else:
        child(args.n_batches, None if args.budget == "none" else float(args.budget))


if __name__ == "__main__":
    main()
