"""Activation collection and SAE training under ``torchrun``: 2 CPU processes on gloo.

The two-process result must equal the one-process one: the store holds the same rows in the
same order (exactly: each batch's forward pass is the same computation in either process),
and an SAE trained data-parallel on that store matches the one-process SAE up to float
rounding (the global-batch gradient is the mean of two half-batch means instead of one
mean; measured max |difference| 1.5e-6 after 60 Adam steps, asserted below 1e-5; the
TopK run resamples 126 dead features on the way, identically on both ranks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_model import make_tiny_model, make_token_batches

from mechrec.activations import ActivationStore, collect_activations
from mechrec.distributed import DistContext
from mechrec.saes import SAETrainingConfig, train_sae

HOOK = "blocks.0.hook_resid_post"
BUDGET_MB = 0.01  # about 119 rows of width 16 per shard: several shards per rank
#: (architecture, engine): both step engines take the averaged gradients.
CASES = (("standard", "fast"), ("topk", "fast"), ("standard", "sae-lens"))


def sae_config(architecture: str) -> SAETrainingConfig:
    """A tiny config with many dead TopK features, so resampling runs in the parallel loop."""
    return SAETrainingConfig(
        architecture=architecture, d_sae=128, k=2, steps=60, batch_size=64, l1_coefficient=3.0,
        lr_warm_up_steps=5, dead_feature_window=5, resample_dead_every=20,
    )


WORKER = textwrap.dedent(f"""
    import json, sys
    from pathlib import Path
    from safetensors.torch import save_file
    sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
    from test_distributed import BUDGET_MB, CASES, HOOK, sae_config
    from tiny_model import make_tiny_model, make_token_batches
    from mechrec.activations import ActivationStore, collect_activations
    from mechrec.distributed import setup_distributed, teardown_distributed
    from mechrec.saes import train_sae

    out = Path(sys.argv[1])
    ctx = setup_distributed("cpu")
    store = collect_activations(make_tiny_model(), make_token_batches(n_batches=7), HOOK,
                                memory_budget_mb=BUDGET_MB, store_dir=out / "store", dist=ctx)
    assert len(store) == len(ActivationStore.open(out / "store"))
    for arch, engine in CASES:
        result = train_sae(store, sae_config(arch), log_every=20, engine=engine, dist=ctx)
        state = {{k: v.contiguous() for k, v in result.sae.sae.state_dict().items()}}
        save_file(state, str(out / f"{{arch}}-{{engine}}-rank{{ctx.rank}}.safetensors"))
        (out / f"{{arch}}-{{engine}}-rank{{ctx.rank}}.json").write_text(json.dumps(
            {{"dead": result.dead_fraction_train, "resampled": result.n_resampled,
              "history": result.history}}))
    teardown_distributed(ctx)
""")


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the worker under ``torchrun --nproc_per_node 2`` (gloo) once for this module."""
    root = tmp_path_factory.mktemp("torchrun")
    worker = root / "worker.py"
    worker.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(worker), str(root / "out")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root / "out"


def test_two_process_store_equals_one_process_store(two_process_run: Path, tmp_path) -> None:
    store = ActivationStore.open(two_process_run / "store")
    assert store.manifest["world_size"] == 2
    files = [s["file"] for s in store.manifest["shards"]]
    assert any(f.startswith("shard-r000-") for f in files)
    assert any(f.startswith("shard-r001-") for f in files)
    assert files == sorted(files)  # rank 0's shards first: the one-process row order
    single = collect_activations(make_tiny_model(), make_token_batches(n_batches=7), HOOK,
                                 memory_budget_mb=BUDGET_MB, store_dir=tmp_path / "single")
    assert isinstance(single, ActivationStore)
    a, b = store.load(), single.load()
    assert len(a) == len(b) == len(store) == len(single)
    assert torch.equal(a.activations, b.activations)
    for key in ("sequence_index", "position", "token"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    torch.testing.assert_close(store.moments().mean, single.moments().mean,
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(store.moments().m2, single.moments().m2, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize(("architecture", "engine"), CASES)
def test_two_process_sae_equals_one_process_sae(
    two_process_run: Path, architecture: str, engine: str
) -> None:
    rank0 = load_file(two_process_run / f"{architecture}-{engine}-rank0.safetensors")
    rank1 = load_file(two_process_run / f"{architecture}-{engine}-rank1.safetensors")
    for name in rank0:  # replicas stay identical: same averaged gradients, same resampling
        assert torch.equal(rank0[name], rank1[name]), name
    store = ActivationStore.open(two_process_run / "store")
    result = train_sae(store, sae_config(architecture), log_every=20, engine=engine)
    single = result.sae.sae.state_dict()
    assert rank0.keys() == single.keys()
    for name, value in single.items():
        torch.testing.assert_close(rank0[name], value, rtol=0, atol=1e-5, msg=name)
    stats = json.loads((two_process_run / f"{architecture}-{engine}-rank0.json").read_text())
    assert stats["resampled"] == result.n_resampled
    assert stats["dead"] == pytest.approx(result.dead_fraction_train)
    assert len(stats["history"]) == len(result.history)
    for logged, expected in zip(stats["history"], result.history, strict=True):
        assert logged.keys() == expected.keys()  # losses and L0 of the global batch
        for key, value in expected.items():
            assert logged[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_parallel_training_refuses_what_it_cannot_split(tiny_model) -> None:
    data = collect_activations(tiny_model, make_token_batches(), HOOK)
    two = DistContext(rank=0, world_size=2)
    small = dict(d_sae=8, k=2, steps=1, lr_warm_up_steps=0)
    with pytest.raises(ValueError, match="does not divide"):
        train_sae(data, SAETrainingConfig(batch_size=7, **small), dist=two)
    with pytest.raises(ValueError, match="batchtopk"):
        train_sae(data, SAETrainingConfig(architecture="batchtopk", batch_size=8, **small),
                  dist=two)
    with pytest.raises(ValueError, match="store_dir"):
        collect_activations(tiny_model, make_token_batches(), HOOK, dist=two)
