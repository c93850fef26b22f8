"""Benchmark: the equalizer's cached slider update vs a naive steered forward pass per request.

One request is what ``mechrec serve`` answers when a slider moves: a user and random slider
values (1 to 3 genres moved to random non-zero grid values in ``[-MAX, MAX]``). For each of N
requests over M random users it times, interleaved:

- **cached** (a): ``EqualizerSession.recommend`` with the user's cache warm (unsteered scores
  and the prefix's keys/values kept; only the last position re-runs from the hook's block on).
  The time is the whole request: both top-K lists, titles, genre shares.
- **cached core**: the same session's cached re-run (its ``LastPositionSteerer``) and the
  steered top-K only, without building the answer.
- **naive** (b): what you would do without the equalizer: a full forward pass of the user's
  whole history (the model's last ``n_ctx`` items) under the same SAE edits, through
  ``mechrec.steering.steer`` (a TransformerLens hook at the last position), and the top-K.
- **plain** (c): the unsteered full forward pass and top-K, as a floor for (b).

Also reported: the first (cold) request of each user, which builds the cache (one full pass
plus the prefix pass); the cache's size per user; and a check that (a) and (b) give the same
steered top-K (and the largest score difference).

Memory: the peak of torch's CPU allocations during one request above the level at its start
(``torch.profiler`` memory events), and the Python-heap peak of the same request
(``tracemalloc``, which does not see torch tensors); the largest over ``--memory-requests``
requests, measured in a pass of their own so profiling does not touch the times.

The run: ``--run-dir`` and ``--sae`` (a folder, or a name under ``RUN_DIR/saes``) of an existing
run, e.g. one of ``mechrec train`` + ``mechrec sae train``. Without ``--run-dir`` the script
trains a quick run in a temporary folder: the paper's GPTRec size (3 layers, d_model 64,
n_ctx 200) on ml-100k's paper split for ``--quick-epochs`` epochs and a 2048-feature standard
SAE for 300 steps. Quality does not matter for the times; the size does. Data comes from
``$MECHREC_DATA`` or ``../shared/data``; nothing is downloaded.

Run:  OMP_NUM_THREADS=1 python benchmarks/bench_equalizer.py
          [--run-dir runs/ml100k --sae paper] [--users 30] [--requests 300] [--k 10]
          [--method sae] [--seed 0] [--memory-requests 10] [--quick-epochs 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _bench_common import data_root
from mechrec_recsys.data import load_dataset
from mechrec_recsys.data.splits import make_split
from mechrec_recsys.equalizer import EqualizerSession
from mechrec_recsys.experiment import FULL_HISTORY, Experiment, RunSpec
from mechrec_recsys.model import GPTRecConfig, last_position_scores
from mechrec_recsys.saes import train_run_sae
from mechrec_recsys.training import TrainConfig, train_and_evaluate
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

from mechrec.saes import SAETrainingConfig
from mechrec.steering import steer

MODES = ("cached", "cached core", "naive", "plain")
#: History-length groups of the second table (items the model reads, at most n_ctx).
BUCKETS = ((1, 50), (51, 150), (151, 10**9))


def train_quick_run(out: Path, data_dir: Path, epochs: int) -> str:
    """A paper-size GPTRec (few epochs) and a 2048-feature SAE in ``out``; the SAE's name."""
    spec = RunSpec(dataset="ml-100k", split="paper", seed=0)
    dataset = load_dataset(spec.dataset, data_dir, download=False)
    split = make_split(dataset, spec.split, seed=spec.seed, max_len=FULL_HISTORY)
    train_and_evaluate(split, model_config=GPTRecConfig(),
                       train_config=TrainConfig(epochs=epochs, progress=False),
                       out_dir=out, resume=False, log=lambda message: None)
    spec.save(out)
    experiment = Experiment.open(out, data_dir=data_dir, download=False)
    config = SAETrainingConfig(architecture="standard", d_sae=2048, l1_coefficient=0.1,
                               steps=300)
    train_run_sae(experiment, config, run_dir=out, name="bench")
    return "bench"


def random_requests(session: EqualizerSession, users: list[Any], n: int,
                    rng: np.random.Generator) -> list[tuple[Any, dict[str, float]]]:
    """``n`` requests ``(user, {genre: value})``: a random user, 1-3 sliders at random non-zero
    grid values."""
    genres = session.equalizer.genres
    top = session.equalizer.max_value
    grid = [v for v in np.round(np.arange(-top, top + top / 40, top / 20), 6) if v != 0.0]
    out = []
    for _ in range(n):
        moved = rng.choice(len(genres), size=min(len(genres), int(rng.integers(1, 4))),
                           replace=False)
        values = {genres[g]: float(rng.choice(grid)) for g in moved}
        out.append((users[int(rng.integers(len(users)))], values))
    return out


class Paths:
    """The four ways to answer one request, on one session."""

    def __init__(self, session: EqualizerSession, method: str, k: int) -> None:
        self.session, self.method, self.k = session, method, k
        self.model = session.experiment.model
        self.hook = session.equalizer.hook_name
        self.top = session.experiment.top_k_from_last_scores
        self.tokens: dict[str, tuple[torch.Tensor, np.ndarray]] = {}

    def _tokens(self, user: Any) -> tuple[torch.Tensor, np.ndarray]:
        """The user's model input (last ``n_ctx`` items) and full history, built once."""
        key = str(user)
        if key not in self.tokens:
            part, row = self.session.experiment.find_user(user)
            history = np.asarray(self.session.experiment.part(part).sequences[row],
                                 dtype=np.int64)
            window = history[-self.model.cfg.n_ctx:]
            self.tokens[key] = (torch.as_tensor(window, dtype=torch.long)[None, :], history)
        return self.tokens[key]

    def cached(self, user: Any, values: dict[str, float]) -> Any:
        """(a) the equalizer's whole request."""
        return self.session.recommend(user, values, k=self.k, method=self.method)

    def cached_core(self, user: Any, values: dict[str, float]) -> Any:
        """(a) without the answer: the cached last-position re-run and the steered top-K."""
        _, scores = self.session.scores(user, values, method=self.method)
        return scores, self.top(scores, [self._tokens(user)[1]], self.k)[0]

    def naive(self, user: Any, values: dict[str, float]) -> Any:
        """(b) a full steered forward pass of the history with the same edits."""
        edits = self.session.equalizer.edits(self.session.equalizer.parse_values(values),
                                             self.method)
        tokens, history = self._tokens(user)
        with torch.no_grad(), steer(self.model, self.hook, edits, positions="last"):
            scores = last_position_scores(self.model, tokens, None)
        return scores, self.top(scores, [history], self.k)[0]

    def plain(self, user: Any, values: dict[str, float]) -> Any:
        """(c) the unsteered full forward pass (``values`` ignored)."""
        tokens, history = self._tokens(user)
        with torch.no_grad():
            scores = last_position_scores(self.model, tokens, None)
        return scores, self.top(scores, [history], self.k)[0]


def torch_peak(fn: Callable[[], Any]) -> int:
    """Peak torch CPU allocation during ``fn()`` above the level at its start, in bytes."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events: list[tuple[int, int, int]] = []

    def walk(node: Any) -> None:
        if node.tag == _EventType.Allocation:
            fields = node.extra_fields
            events.append((node.start_time_ns, int(fields.alloc_size),
                           int(fields.total_allocated)))
        for child in node.children:
            walk(child)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root)
    if not events:
        return 0
    events.sort()
    start = events[0][2] - events[0][1]
    return max(0, max(total for _, _, total in events) - start)


def python_peak(fn: Callable[[], Any]) -> int:
    """Peak of the Python heap (``tracemalloc``) during ``fn()`` above its start, in bytes."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return max(0, peak - before)


def main() -> None:
    """Open (or train) a run, time the four paths on random requests and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, help="an existing run (default: train one)")
    parser.add_argument("--sae", help="SAE folder or name under RUN_DIR/saes")
    parser.add_argument("--users", type=int, default=30, help="M: random users")
    parser.add_argument("--requests", type=int, default=300, help="N: timed requests")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--method", choices=["sae", "probe"], default="sae")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-requests", type=int, default=10)
    parser.add_argument("--quick-epochs", type=int, default=2)
    args = parser.parse_args()
    if args.run_dir is not None and args.sae is None:
        parser.error("--run-dir needs --sae")
    if args.run_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            start = time.perf_counter()
            sae = train_quick_run(out, data_root(), args.quick_epochs)
            print(f"trained a quick run in {time.perf_counter() - start:.0f} s")
            bench(out, sae, args)
    else:
        bench(args.run_dir, args.sae, args)


def bench(run_dir: Path, sae: str, args: argparse.Namespace) -> None:
    """The measurements and the table."""
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    session = EqualizerSession.open(run_dir, sae, data_dir=data_root(), download=False,
                                    probes=args.method == "probe", k=args.k,
                                    cache_users=max(256, args.users))
    opened = time.perf_counter() - start
    experiment = session.experiment
    ids = session.user_ids()
    chosen = rng.choice(len(ids), size=min(args.users, len(ids)), replace=False)
    users = [ids[i] for i in chosen]
    requests = random_requests(session, users, args.requests, rng)
    paths = Paths(session, args.method, args.k)
    model = experiment.model
    lengths = [min(len(paths._tokens(u)[1]), model.cfg.n_ctx) for u in users]
    length_of = {str(u): n for u, n in zip(users, lengths, strict=True)}

    # cold: each user's first request builds its cache
    cold = []
    for user in users:
        values = random_requests(session, [user], 1, rng)[0][1]
        begin = time.perf_counter()
        paths.cached(user, values)
        cold.append(time.perf_counter() - begin)
    per_user = [session.cache_nbytes(u) for u in users]

    # warm-up, then the timed requests, the four paths interleaved
    functions = {"cached": paths.cached, "cached core": paths.cached_core,
                 "naive": paths.naive, "plain": paths.plain}
    for user, values in requests[:5]:
        for fn in functions.values():
            fn(user, values)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    same, max_diff = 0, 0.0
    for i, (user, values) in enumerate(requests):
        order = MODES[i % 4:] + MODES[:i % 4]
        results = {}
        for mode in order:
            begin = time.perf_counter()
            results[mode] = functions[mode](user, values)
            times[mode].append(time.perf_counter() - begin)
        answer = results["cached"]
        naive_scores, naive_top = results["naive"]
        core_scores, _ = results["cached core"]
        naive_ids = [session.items.item_id(t) for t in naive_top if int(t) != 0]
        same += [item["item_id"] for item in answer["steered"]] == naive_ids
        max_diff = max(max_diff, float((core_scores - naive_scores).abs().max()))

    # memory, in a pass of its own
    torch_mem = {mode: 0 for mode in MODES}
    py_mem = {mode: 0 for mode in MODES}
    for user, values in requests[:args.memory_requests]:
        for mode in MODES:
            def call(fn=functions[mode], u=user, v=values) -> Any:
                return fn(u, v)
            torch_mem[mode] = max(torch_mem[mode], torch_peak(call))
            py_mem[mode] = max(py_mem[mode], python_peak(call))

    cfg = model.cfg
    print(
        f"run {run_dir} (sae {sae}): {cfg.n_layers} layers x d_model {cfg.d_model}, "
        f"{cfg.n_heads} heads, n_ctx {cfg.n_ctx}, vocab {cfg.d_vocab}; SAE d_sae "
        f"{session.sae.d_sae} at {session.equalizer.hook_name}; opened in {opened:.1f} s"
    )
    print(
        f"{len(users)} users (history used: median {np.median(lengths):.0f}, max "
        f"{max(lengths)} items), {len(requests)} requests, {len(session.equalizer.genres)} "
        f"sliders, 1-3 moved per request, method {args.method}, k {args.k}; "
        f"threads {torch.get_num_threads()}"
    )
    naive_med = float(np.median(times["naive"]))
    naive_p90 = float(np.percentile(times["naive"], 90))
    header = (f"{'path':34s} {'median ms':>10s} {'p90 ms':>8s} {'naive/this':>11s} "
              f"{'p90 ratio':>10s} {'torch peak KiB':>15s} {'py peak KiB':>12s}")
    print(header)
    print("-" * len(header))
    labels = {"cached": "(a) equalizer recommend, cached",
              "cached core": "(a) cached re-run + top-K only",
              "naive": "(b) naive steered full forward",
              "plain": "(c) plain unsteered forward"}
    for mode in MODES:
        med = float(np.median(times[mode]))
        p90 = float(np.percentile(times[mode], 90))
        print(f"{labels[mode]:34s} {med * 1e3:10.2f} {p90 * 1e3:8.2f} {naive_med / med:10.1f}x "
              f"{naive_p90 / p90:9.1f}x {torch_mem[mode] / 1024:15.1f} "
              f"{py_mem[mode] / 1024:12.1f}")
    print(f"{'first request of a user (cold)':34s} {np.median(cold) * 1e3:10.2f} "
          f"{np.percentile(cold, 90) * 1e3:8.2f}   ({len(cold)} requests: builds the cache)")
    print(f"cache per user: median {np.median(per_user) / 1024:.1f} KiB, max "
          f"{max(per_user) / 1024:.1f} KiB (unsteered scores, prefix keys/values, tensor storage)")
    print()
    print("by history length (items the model reads), median ms:")
    sub = (f"{'history':>10s} {'requests':>9s} {'(a) recommend':>14s} {'(a) core':>9s} "
           f"{'(b) naive':>10s} {'(c) plain':>10s} {'naive/(a)':>10s} {'naive/core':>11s}")
    print(sub)
    print("-" * len(sub))
    request_lengths = np.array([length_of[str(u)] for u, _ in requests])
    for low, high in BUCKETS:
        high = min(high, cfg.n_ctx)
        rows = np.flatnonzero((request_lengths >= low) & (request_lengths <= high))
        if len(rows) == 0:
            continue
        med = {mode: float(np.median(np.asarray(times[mode])[rows])) for mode in MODES}
        print(f"{f'{low}-{high}':>10s} {len(rows):9d} {med['cached'] * 1e3:14.2f} "
              f"{med['cached core'] * 1e3:9.2f} {med['naive'] * 1e3:10.2f} "
              f"{med['plain'] * 1e3:10.2f} {med['naive'] / med['cached']:9.1f}x "
              f"{med['naive'] / med['cached core']:10.1f}x")
    print()
    print(f"(a) vs (b): identical top-{args.k} in {same}/{len(requests)} requests; "
          f"max |score difference| {max_diff:.2e}")


if __name__ == "__main__":
    main()
