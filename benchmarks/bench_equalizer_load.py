"""Benchmark: the equalizer server under concurrent clients (latency and dropped connections).

The server (``mechrec_recsys.equalizer.make_server`` on ``127.0.0.1``, port 0) runs in a child
process of its own, so the clients' threads do not share its interpreter lock. For each
client count (default 20 and 50) that many threads start together (a barrier) and each sends
``--requests`` ``POST /api/recommend`` requests, every one on a **new connection** (connect,
request, read the answer, close): a burst of simultaneous connects is what fills a small
listen backlog. A request counts as an error when the connection is refused or reset, the
answer is cut or times out (``--timeout``), or the status is not 200. Every request is a
random user among ``--users`` test users (their caches are warmed first) with one to three
sliders at random values in ``[-MAX, MAX]``. A round stops early after ``--time-limit``
seconds; requests not sent then are reported as "not sent", not as errors.

Reported per client count: requests sent, p50 and p99 latency of the successful requests
(connect to last byte), the error rate, successful requests per second over the round and the
errors by kind.

Only loopback addresses are used. The run: ``--run-dir`` and ``--sae`` of an existing run;
without them a quick run is trained in a temporary folder (a small GPTRec on ml-100k's paper
split for one epoch and a 256-feature SAE for 200 steps: the server's behaviour under load,
not the model's quality, is measured). Data comes from ``$MECHREC_DATA`` or
``../shared/data``; nothing is downloaded.

Run:  OMP_NUM_THREADS=1 python benchmarks/bench_equalizer_load.py
          [--run-dir RUN --sae NAME] [--clients 20,50] [--requests 20] [--users 30]
          [--timeout 30] [--time-limit 120] [--seed 0]
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from _bench_common import data_root

LOOPBACK = "127.0.0.1"


def train_quick_run(out: Path, data_dir: Path) -> str:
    """A small GPTRec (one epoch) and a 256-feature SAE in ``out``; returns the SAE's name."""
    from mechrec_recsys.data import load_dataset
    from mechrec_recsys.data.splits import make_split
    from mechrec_recsys.experiment import FULL_HISTORY, Experiment, RunSpec
    from mechrec_recsys.model import GPTRecConfig
    from mechrec_recsys.saes import train_run_sae
    from mechrec_recsys.training import TrainConfig, train_and_evaluate

    from mechrec.saes import SAETrainingConfig

    spec = RunSpec(dataset="ml-100k", split="paper", seed=0)
    dataset = load_dataset(spec.dataset, data_dir / "ml-100k", download=False)
    split = make_split(dataset, spec.split, seed=spec.seed, max_len=FULL_HISTORY)
    model = GPTRecConfig(n_layers=2, n_heads=2, d_model=32, d_mlp=64, max_len=50, init_seed=0)
    train_and_evaluate(split, model_config=model,
                       train_config=TrainConfig(epochs=1, batch_size=64, progress=False),
                       out_dir=out, resume=False, log=lambda message: None)
    spec.save(out)
    experiment = Experiment.open(out, data_dir=data_dir / "ml-100k", download=False)
    config = SAETrainingConfig(architecture="standard", d_sae=256, l1_coefficient=0.1,
                               steps=200, batch_size=256)
    train_run_sae(experiment, config, run_dir=out, name="bench")
    return "bench"


def serve(run_dir: Path, sae: str, data_dir: Path) -> None:
    """Child process: open the session, bind loopback port 0, print the port, serve."""
    from mechrec_recsys.equalizer import EqualizerSession, make_server

    session = EqualizerSession.open(run_dir, sae, data_dir=data_dir, download=False,
                                    probes=False)
    server = make_server(session, LOOPBACK, 0)
    genres = session.equalizer.genres
    users = [str(u) for u in session.user_ids()]
    print(json.dumps({"port": server.server_address[1], "genres": list(genres),
                      "max_value": session.equalizer.max_value, "users": users}), flush=True)
    server.serve_forever()


def one_request(port: int, body: bytes, timeout: float) -> tuple[float | None, str | None]:
    """``(seconds, None)`` for a 200 answer on a fresh connection, else ``(None, error)``."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("POST", "/api/recommend", body,
                     {"Content-Type": "application/json", "Connection": "close"})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            return None, f"HTTP {response.status}"
        return time.perf_counter() - start, None
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        return None, type(exc).__name__
    finally:
        conn.close()


def make_bodies(info: dict[str, Any], users: int, n: int, rng: np.random.Generator
                ) -> list[bytes]:
    """``n`` request bodies: a random user among the first ``users``, 1-3 random sliders."""
    genres, top = info["genres"], float(info["max_value"])
    pool = info["users"][:users]
    bodies = []
    for _ in range(n):
        moved = rng.choice(len(genres), size=min(len(genres), int(rng.integers(1, 4))),
                           replace=False)
        values = {genres[g]: round(float(rng.uniform(-top, top)), 3) for g in moved}
        user = pool[int(rng.integers(len(pool)))]
        bodies.append(json.dumps({"user": user, "values": values}).encode())
    return bodies


def round_of(port: int, clients: int, bodies: list[list[bytes]], timeout: float,
             time_limit: float) -> dict[str, Any]:
    """``clients`` threads, each sending its bodies one connection at a time."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    sent = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(clients)
    deadline = [0.0]

    def client(mine: list[bytes]) -> None:
        barrier.wait()
        for body in mine:
            if time.perf_counter() > deadline[0]:
                return
            seconds, error = one_request(port, body, timeout)
            with lock:
                sent[0] += 1
                if error is None:
                    latencies.append(seconds)  # type: ignore[arg-type]
                else:
                    errors[error] += 1

    started = time.perf_counter()
    deadline[0] = started + time_limit
    threads = [threading.Thread(target=client, args=(bodies[i],)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    total = sum(len(b) for b in bodies)
    return {"clients": clients, "sent": sent[0], "not_sent": total - sent[0], "wall_s": wall,
            "ok_per_s": len(latencies) / wall,
            "ok": len(latencies), "errors": dict(errors),
            "error_rate": sum(errors.values()) / max(sent[0], 1),
            "p50_ms": 1000 * float(np.percentile(latencies, 50)) if latencies else float("nan"),
            "p99_ms": 1000 * float(np.percentile(latencies, 99)) if latencies else float("nan")}


def bench(run_dir: Path, sae: str, args: argparse.Namespace) -> None:
    """Start the server process, warm the users' caches, run one round per client count."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--run-dir", str(run_dir), "--sae", sae],
        stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline() if child.stdout else ""
        if not line:
            raise SystemExit("the server process did not start (see its stderr above)")
        info = json.loads(line)
        port = int(info["port"])
        rng = np.random.default_rng(args.seed)
        for user in info["users"][:args.users]:  # warm every user's cache
            one_request(port, json.dumps({"user": user}).encode(), args.timeout)
        print(f"server on {LOOPBACK}:{port}; {args.requests} requests per client, a new "
              f"connection each; users {min(args.users, len(info['users']))}")
        print(f"{'clients':>8} {'sent':>6} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
              f"{'rate':>7} {'ok/s':>7}  kinds")
        for clients in args.clients:
            bodies = [make_bodies(info, args.users, args.requests, rng) for _ in range(clients)]
            row = round_of(port, clients, bodies, args.timeout, args.time_limit)
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(row["errors"].items())) or "-"
            late = f" ({row['not_sent']} not sent: time limit)" if row["not_sent"] else ""
            print(f"{clients:>8} {row['sent']:>6} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} "
                  f"{sum(row['errors'].values()):>7} {100 * row['error_rate']:>6.2f}% "
                  f"{row['ok_per_s']:>7.1f}  {kinds}{late}", flush=True)
    finally:
        child.terminate()
        child.wait(timeout=30)


def main() -> None:
    """Parse the options; train a quick run if none is given; run the rounds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, help="an existing run (default: train one)")
    parser.add_argument("--sae", help="SAE folder or name under RUN_DIR/saes")
    parser.add_argument("--clients", default="20,50", help="comma-separated client counts")
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    parser.add_argument("--users", type=int, default=30, help="distinct users requested")
    parser.add_argument("--timeout", type=float, default=30.0, help="client timeout (s)")
    parser.add_argument("--time-limit", type=float, default=120.0,
                        help="stop sending new requests after this many seconds per round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_dir is not None and args.sae is None:
        parser.error("--run-dir needs --sae")
    if args.serve:
        serve(args.run_dir, args.sae, data_root() / "ml-100k")
        return
    args.clients = [int(c) for c in str(args.clients).split(",") if c.strip()]
    if not args.clients or min(args.clients) < 1 or args.requests < 1 or args.users < 1:
        parser.error("--clients, --requests and --users must be positive")
    if args.run_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            start = time.perf_counter()
            sae = train_quick_run(out, data_root())
            print(f"trained a quick run in {time.perf_counter() - start:.0f} s")
            bench(out, sae, args)
    else:
        bench(args.run_dir, args.sae, args)


if __name__ == "__main__":
    main()
