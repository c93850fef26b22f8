"""SAE benchmarks: training throughput, the paper's L1 grid, dead features per architecture.

Three tables, each printed as Markdown:

``throughput``
    SAE training throughput (activation rows/s) of every architecture at d_in 64, dictionary
    2048 on CPU: a plain-PyTorch loop written for that architecture (same initial weights,
    batches, loss, Adam and clipping; see :func:`plain_pytorch_loop`), ``train_sae`` with
    sae-lens' ``SAETrainer.step`` (``engine="sae-lens"``, the path before the fast step) and
    with mechrec's fast step (the default), interleaved and repeated; ratios to the plain
    loop, the last loss of each (equal: same math), and the ratio to the earlier one-size
    ReLU + L1 baseline loop.
``sweep``
    Wall time of a sweep of several SAEs trained one after the other in one process vs in
    parallel worker processes (one thread each), and the speed-up per core.
``l1-grid``
    The paper's L1 weights {0.001 .. 1} at dictionary 2048 on *realistic* activations:
    ``blocks.0.hook_resid_post`` of a GPTRec-sized next-item transformer (3 layers,
    d_model 64, 2 heads) trained here for a few minutes on MovieLens-100k, normalised per
    dimension. Reports L0, RMSE, explained variance and the dead fraction on held-out users.
``dead``
    Every architecture on the same realistic activations at a comparable sparsity (k or
    target L0 32, L1 0.1), plus L1 at 0.5, each with and without resampling where it
    matters, with the fraction of features that never fire on held-out users.

The stand-in recommender is cached (``--cache-dir``) so reruns skip its training. It lives
here, not in the core: the core never knows about recommendations.

Run (2 CPU cores are plenty; numbers depend on the machine):
    OMP_NUM_THREADS=1 python benchmarks/bench_saes.py throughput
    OMP_NUM_THREADS=1 python benchmarks/bench_saes.py sweep --workers 2
    OMP_NUM_THREADS=1 python benchmarks/bench_saes.py l1-grid --steps 3000
    OMP_NUM_THREADS=1 python benchmarks/bench_saes.py dead --steps 2000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from _bench_common import gptrec_sized_model, markdown, plain_pytorch_loop
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer

from mechrec.activations import ActivationSet, collect_activations, fit_normalizer
from mechrec.reconstruction import reconstruction_metrics
from mechrec.saes import (
    ARCHITECTURES,
    PAPER_L1_GRID,
    SAETrainingConfig,
    grid,
    summarize_sweep,
    sweep_saes,
    train_sae,
)

HOOK = "blocks.0.hook_resid_post"
MAX_LEN = 200


# --------------------------------------------------------------------------------------
# throughput


def relu_l1_rows_per_second(
    x: torch.Tensor, d_sae: int, batch_size: int, steps: int, l1: float
) -> float:
    """The benchmark's earlier baseline, kept for comparison: ReLU encoder, linear decoder,
    squared error + plain L1, Adam, no clipping, random batches (one loop for every
    architecture, whatever its math)."""
    torch.manual_seed(0)
    d_in = x.shape[1]
    enc = torch.nn.Linear(d_in, d_sae)
    dec = torch.nn.Linear(d_sae, d_in)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(steps):
        batch = x[torch.randint(0, x.shape[0], (batch_size,), generator=gen)]
        feats = torch.relu(enc(batch - dec.bias))
        recon = dec(feats)
        loss = (recon - batch).pow(2).sum(-1).mean() + l1 * feats.sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch_size / (time.perf_counter() - start)


def run_throughput(args: argparse.Namespace) -> None:
    """Rows/s per architecture: the plain loop, mechrec's fast step, sae-lens' step."""
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    acts = ActivationSet.from_tensor(torch.randn(50_000, args.d_in, generator=gen), HOOK)
    normalizer = fit_normalizer(acts)
    archs = args.architectures.split(",") if args.architectures else list(ARCHITECTURES)
    runs: dict[str, dict[str, list[float]]] = {a: {} for a in archs}
    relu_l1: list[float] = []
    for repeat in range(args.repeats):
        relu_l1.append(
            relu_l1_rows_per_second(acts.activations, args.d_sae, args.batch_size, args.steps, 0.1)
        )
        print(f"  repeat {repeat + 1}: ReLU+L1 baseline {relu_l1[-1]:,.0f} rows/s", file=sys.stderr)
        for arch in archs:
            cfg = SAETrainingConfig(
                architecture=arch,
                d_sae=args.d_sae,
                k=32,
                l0_coefficient=1e-3,
                steps=args.steps,
                batch_size=args.batch_size,
                lr_warm_up_steps=0,
            )
            # interleaved, so that load drift on a shared machine affects all sides alike
            plain, plain_loss = plain_pytorch_loop(cfg, acts, normalizer)
            fast = train_sae(acts, cfg, normalizer=normalizer, log_every=args.steps)
            ref = train_sae(
                acts, cfg, normalizer=normalizer, log_every=args.steps, engine="sae-lens"
            )
            r = runs[arch]
            for key, value in (
                ("plain", plain),
                ("fast", fast.rows_per_second),
                ("sae-lens", ref.rows_per_second),
                ("fast ratio", fast.rows_per_second / plain),
                ("sae-lens ratio", ref.rows_per_second / plain),
                ("relu-l1 ratio", fast.rows_per_second / relu_l1[-1]),
                ("plain loss", plain_loss),
                ("fast loss", fast.history[-1]["loss"]),
                ("sae-lens loss", ref.history[-1]["loss"]),
            ):
                r.setdefault(key, []).append(value)
            print(f"  repeat {repeat + 1} {arch}: {({k: v[-1] for k, v in r.items()})}",
                  file=sys.stderr)
    rows = [
        {"architecture": arch, **{k: statistics.median(v) for k, v in r.items()}}
        for arch, r in runs.items()
    ]
    print(
        f"SAE training throughput, d_in {args.d_in}, dictionary {args.d_sae}, batch "
        f"{args.batch_size}, {args.steps} steps, torch threads {torch.get_num_threads()}, "
        f"device cpu; medians of {args.repeats} interleaved repeats; the earlier ReLU+L1 "
        f"baseline loop ran at {statistics.median(relu_l1):,.0f} rows/s\n"
    )
    columns = {
        "architecture": "architecture",
        "plain": "plain PyTorch rows/s",
        "sae-lens": "SAETrainer.step rows/s",
        "sae-lens ratio": "ratio",
        "fast": "mechrec rows/s",
        "fast ratio": "ratio ",
        "relu-l1 ratio": "mechrec / ReLU+L1",
        "plain loss": "last loss: plain",
        "sae-lens loss": "SAETrainer.step",
        "fast loss": "mechrec",
    }
    renamed = [{columns[k]: v for k, v in row.items()} for row in rows]
    fmt = {
        "plain PyTorch rows/s": ",.0f",
        "SAETrainer.step rows/s": ",.0f",
        "mechrec rows/s": ",.0f",
        "ratio": ".2f",
        "ratio ": ".2f",
        "mechrec / ReLU+L1": ".2f",
        "last loss: plain": ".5f",
        "SAETrainer.step": ".5f",
        "mechrec": ".5f",
    }
    print(markdown(renamed, list(columns.values()), fmt))


def run_sweep(args: argparse.Namespace) -> None:
    """Wall time of one sweep: in this process, one SAE after the other, vs ``--workers``."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    acts = ActivationSet.from_tensor(torch.randn(50_000, args.d_in, generator=gen), HOOK)
    base = SAETrainingConfig(
        d_sae=args.d_sae, steps=args.steps, batch_size=args.batch_size, lr_warm_up_steps=0
    )
    points = grid(l1_coefficient=PAPER_L1_GRID[: args.n_saes])
    timings = {}
    load = [os.getloadavg()[0]]
    for workers in (1, args.workers):
        start = time.perf_counter()
        rows = sweep_saes(acts, base, points, workers=workers)
        timings[workers] = time.perf_counter() - start
        load.append(os.getloadavg()[0])
        print(f"  {workers} worker(s): {timings[workers]:.1f} s; "
              f"SAE seconds {[round(r['seconds'], 1) for r in rows]}", file=sys.stderr)
    speedup = timings[1] / timings[args.workers]
    print(
        f"Sweep of {len(points)} standard SAEs (d_in {args.d_in}, dictionary {args.d_sae}, "
        f"{args.steps} steps x batch {args.batch_size}), 1 torch thread per process, "
        f"{os.cpu_count()} CPU cores; 1-minute load average {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} (before / after each sweep)\n"
    )
    print(
        markdown(
            [
                {"processes": 1, "wall s": timings[1], "speed-up": 1.0, "per core": 1.0},
                {
                    "processes": args.workers,
                    "wall s": timings[args.workers],
                    "speed-up": speedup,
                    "per core": speedup / args.workers,
                },
            ],
            ["processes", "wall s", "speed-up", "per core"],
            {"wall s": ".1f", "speed-up": ".2f", "per core": ".2f"},
        )
    )


# --------------------------------------------------------------------------------------
# realistic activations: a GPTRec-sized next-item model trained on MovieLens-100k


def load_ml100k_sequences(data_dir: Path) -> list[np.ndarray]:
    """Per-user item sequences of ml-100k, ordered by (timestamp, item id); items are 1..1682."""
    raw = np.loadtxt(data_dir / "ml-100k" / "u.data", dtype=np.int64)
    users, items, stamps = raw[:, 0], raw[:, 1], raw[:, 3]
    order = np.lexsort((items, stamps, users))
    users, items = users[order], items[order]
    bounds = np.flatnonzero(np.diff(users)) + 1
    return [s[-MAX_LEN:] for s in np.split(items, bounds)]


def left_pad(seqs: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``(tokens, mask)`` for a list of sequences."""
    width = max(len(s) for s in seqs)
    tokens = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, width - len(s) :] = torch.from_numpy(s)
    return tokens, (tokens != 0).long()


def batches_of(seqs: Sequence[np.ndarray], size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Left-padded batches of ``size`` sequences, in order."""
    return [left_pad(seqs[i : i + size]) for i in range(0, len(seqs), size)]


def train_recommender(seqs: Sequence[np.ndarray], epochs: int) -> HookedTransformer:
    """Next-item training of a GPTRec-sized HookedTransformer (full softmax, Adam 1e-3)."""
    model = gptrec_sized_model(d_vocab=1683, n_ctx=MAX_LEN)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        perm = torch.randperm(len(seqs), generator=gen).tolist()
        total = 0.0
        batches = batches_of([seqs[i] for i in perm], 32)
        for tokens, mask in batches:
            logits = model(tokens, attention_mask=mask)
            target_mask = (mask[:, 1:] * mask[:, :-1]).bool()
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1][target_mask], tokens[:, 1:][target_mask]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        print(
            f"  recommender epoch {epoch + 1}/{epochs}: loss {total / len(batches):.3f}",
            file=sys.stderr,
        )
    return model.eval()


def realistic_activations(args: argparse.Namespace) -> tuple[ActivationSet, ActivationSet]:
    """(SAE-train, held-out) activations at blocks.0.hook_resid_post, cached on disk.

    Users are split 60/40 (seed 0) like the paper: the recommender learns on 60%, the SAE
    data comes from the other 40%, of which a fifth is held out for measurement.
    """
    cache = Path(args.cache_dir) / f"ml100k-gptrec-e{args.epochs}.safetensors"
    if cache.is_file():
        t = load_file(str(cache))
    else:
        seqs = load_ml100k_sequences(Path(args.data_dir))
        rng = np.random.default_rng(0)
        perm = rng.permutation(len(seqs))
        n_rec = int(0.6 * len(seqs))
        rec = [seqs[i] for i in perm[:n_rec]]
        sae_users = [seqs[i] for i in perm[n_rec:]]
        n_test = len(sae_users) // 5
        t0 = time.perf_counter()
        model = train_recommender(rec, args.epochs)
        print(f"  recommender trained in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        train = collect_activations(model, batches_of(sae_users[n_test:], 32), HOOK)
        test = collect_activations(model, batches_of(sae_users[:n_test], 32), HOOK)
        t = {"train": train.activations.contiguous(), "test": test.activations.contiguous()}
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file(t, str(cache))
    return ActivationSet.from_tensor(t["train"], HOOK), ActivationSet.from_tensor(t["test"], HOOK)


def base_config(args: argparse.Namespace) -> SAETrainingConfig:
    """The sweep's base config from the command line."""
    return SAETrainingConfig(
        d_sae=2048,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=1e-3,
        lr_warm_up_steps=min(100, args.steps // 10),
    )


def run_l1_grid(args: argparse.Namespace) -> None:
    """The paper's L1 grid at dictionary 2048 on realistic activations."""
    train, test = realistic_activations(args)
    print(f"activations: {len(train)} train rows, {len(test)} held-out rows, d={train.d}\n")
    base = base_config(args).with_overrides(reconstruction_loss=args.reconstruction_loss)
    lambdas = [float(v) for v in args.l1.split(",")] if args.l1 else list(PAPER_L1_GRID)
    rows = sweep_saes(
        train,
        base,
        grid(l1_coefficient=lambdas),
        seeds=range(args.seeds),
        eval_source=test,
        out_dir=args.out_dir,
        progress=lambda r: print(
            f"  λ={r['l1_coefficient']} seed={r['seed']}: L0 "
            f"{r['l0']:.1f}, EV {r['explained_variance']:.3f}",
            file=sys.stderr,
        ),
    )
    summary = summarize_sweep(rows, by=["l1_coefficient"])
    print(
        f"standard SAE, dictionary 2048, reconstruction_loss={args.reconstruction_loss!r}, "
        f"{args.steps} steps x batch {args.batch_size}, lr 1e-3, {args.seeds} seed(s); metrics "
        "on held-out users, normalised space\n"
    )
    print(
        markdown(
            summary,
            [
                "l1_coefficient",
                "l0_mean",
                "rmse_mean",
                "explained_variance_mean",
                "dead_fraction_mean",
                "n_seeds",
            ],
            {
                "l0_mean": ".1f",
                "rmse_mean": ".3f",
                "explained_variance_mean": ".3f",
                "dead_fraction_mean": ".3f",
            },
        )
    )


def run_dead(args: argparse.Namespace) -> None:
    """Dead-feature fraction of every architecture on realistic activations."""
    train, test = realistic_activations(args)
    normalizer = fit_normalizer(train)
    base = base_config(args)
    never = {"resample_dead_every": None}
    every500 = {"resample_dead_every": 500}
    topk = {"architecture": "topk", "k": 32}
    batchtopk = {"architecture": "batchtopk", "k": 32}
    variants = [
        ("standard λ=0.1", {"l1_coefficient": 0.1}),
        ("standard λ=0.5", {"l1_coefficient": 0.5}),
        ("standard λ=0.5 + resampling", {"l1_coefficient": 0.5, **every500}),
        ("topk (aux-k + resampling)", topk),
        ("topk (aux-k only)", {**topk, **never}),
        ("batchtopk (aux-k only)", batchtopk),
        ("batchtopk + resampling", {**batchtopk, **every500}),
        (
            "jumprelu (target L0, pre-act loss)",
            {"architecture": "jumprelu", "target_l0": 32, "l0_coefficient": 1.0},
        ),
        ("gated λ=0.1", {"architecture": "gated", "l1_coefficient": 0.1}),
    ]
    rows = []
    for name, overrides in variants:
        result = train_sae(train, base.with_overrides(**overrides), normalizer=normalizer)
        m = reconstruction_metrics(result.sae, test)
        rows.append(
            {
                "variant": name,
                "L0": m.l0,
                "explained variance": m.explained_variance,
                "dead fraction": m.dead_fraction,
                "resampled": result.n_resampled,
                "rows/s": result.rows_per_second,
            }
        )
        print(f"  {name}: {rows[-1]}", file=sys.stderr)
    print(
        f"dictionary 2048, {args.steps} steps x batch {args.batch_size}; metrics on held-out "
        "users (dead = never fires there)\n"
    )
    print(
        markdown(
            rows,
            ["variant", "L0", "explained variance", "dead fraction", "resampled", "rows/s"],
            {"L0": ".1f", "explained variance": ".3f", "dead fraction": ".3f", "rows/s": ",.0f"},
        )
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    tp = sub.add_parser("throughput", help="rows/s per architecture vs plain PyTorch")
    tp.add_argument("--d-in", type=int, default=64)
    tp.add_argument("--d-sae", type=int, default=2048)
    tp.add_argument("--batch-size", type=int, default=4096)
    tp.add_argument("--steps", type=int, default=30)
    tp.add_argument("--repeats", type=int, default=3)
    tp.add_argument("--threads", type=int, default=1, help="torch threads")
    tp.add_argument("--architectures", default="", help="comma-separated (default: all)")
    sw = sub.add_parser("sweep", help="a sweep in one process vs parallel workers")
    sw.add_argument("--workers", type=int, default=2)
    sw.add_argument("--n-saes", type=int, default=4)
    sw.add_argument("--d-in", type=int, default=64)
    sw.add_argument("--d-sae", type=int, default=2048)
    sw.add_argument("--batch-size", type=int, default=1024)
    sw.add_argument("--steps", type=int, default=300)
    default_data = os.environ.get(
        "MECHREC_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    for name in ("l1-grid", "dead"):
        p = sub.add_parser(name)
        p.add_argument("--data-dir", default=default_data)
        p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "mechrec-bench"))
        p.add_argument("--epochs", type=int, default=30, help="recommender training epochs")
        p.add_argument("--steps", type=int, default=3000)
        p.add_argument("--batch-size", type=int, default=1024)
        if name == "l1-grid":
            p.add_argument("--seeds", type=int, default=1)
            p.add_argument("--l1", default="", help="comma-separated L1 weights (default: paper)")
            p.add_argument("--reconstruction-loss", default="norm", choices=["norm", "squared"])
            p.add_argument("--out-dir", default=None, help="save SAEs here (resumable)")
    args = parser.parse_args(argv)
    commands = {
        "throughput": run_throughput,
        "sweep": run_sweep,
        "l1-grid": run_l1_grid,
        "dead": run_dead,
    }
    commands[args.what](args)


if __name__ == "__main__":
    main()
