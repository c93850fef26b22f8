"""Activation collection on a tiny non-recommender HookedTransformer: rows, indices, shards."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_model import make_tiny_model, make_token_batches

from mechrec.activations import (
    ActivationSet,
    ActivationStore,
    bytes_per_row,
    collect_activations,
    fit_normalizer,
    iter_batches,
)
from mechrec.hooks import HookNameError
from mechrec.normalization import Normalizer

HOOK = "blocks.0.hook_resid_post"


def _expected_rows(model, batches, hook):
    """Reference: run_with_cache on the full model, then pick real positions by hand."""
    acts, seqs, positions, tokens = [], [], [], []
    offset = 0
    for tok, mask in batches:
        _, cache = model.run_with_cache(tok, attention_mask=mask)
        full = cache[hook].reshape(tok.shape[0], tok.shape[1], -1)
        for b in range(tok.shape[0]):
            pos = 0
            for t in range(tok.shape[1]):
                if mask[b, t]:
                    acts.append(full[b, t])
                    seqs.append(offset + b)
                    positions.append(pos)
                    tokens.append(int(tok[b, t]))
                    pos += 1
        offset += tok.shape[0]
    return torch.stack(acts), torch.tensor(seqs), torch.tensor(positions), torch.tensor(tokens)


@pytest.mark.parametrize("hook", [HOOK, "blocks.1.attn.hook_z", "blocks.1.mlp.hook_post"])
def test_one_row_per_real_position_with_indices(tiny_model, token_batches, hook):
    acts = collect_activations(tiny_model, token_batches, hook)
    expected, seqs, positions, tokens = _expected_rows(tiny_model, token_batches, hook)
    n_real = sum(int(mask.sum()) for _, mask in token_batches)
    assert isinstance(acts, ActivationSet) and len(acts) == n_real
    torch.testing.assert_close(acts.activations, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(acts.sequence_index, seqs)
    assert torch.equal(acts.position, positions)
    assert torch.equal(acts.token, tokens)
    assert (acts.token != 0).all()  # never a padding token
    assert acts.hook_name == hook


def test_mask_none_keeps_every_position(tiny_model):
    tokens = torch.randint(1, 24, (3, 5), generator=torch.Generator().manual_seed(1))
    acts = collect_activations(tiny_model, [(tokens, None)], HOOK)
    assert len(acts) == 15
    assert acts.position.tolist() == [0, 1, 2, 3, 4] * 3
    assert torch.equal(acts.token, tokens.flatten())


def test_computes_only_up_to_the_hook(token_batches):
    model = make_tiny_model()
    calls = []
    model.blocks[1].register_forward_hook(lambda *a: calls.append(1))
    model.unembed.register_forward_hook(lambda *a: calls.append(2))
    collect_activations(model, token_batches, HOOK)
    assert calls == []  # block 1 and the unembedding never ran
    collect_activations(model, token_batches, "blocks.1.hook_resid_post")
    assert 1 in calls and 2 not in calls  # full stack, but no logits


def test_sharded_store_equals_in_memory_and_bounds_rows_held(tiny_model, tmp_path):
    batches = make_token_batches(n_batches=12, batch_size=8, seed=3)
    in_memory = collect_activations(tiny_model, batches, HOOK)
    budget_mb = 100 * bytes_per_row(16) / 2**20  # room for 100 rows
    store = collect_activations(
        tiny_model, batches, HOOK, memory_budget_mb=budget_mb, store_dir=tmp_path / "s"
    )
    assert isinstance(store, ActivationStore)
    assert len(store) == len(in_memory) > 5 * 100
    assert store.n_chunks == -(-len(in_memory) // 100)
    manifest = json.loads((tmp_path / "s" / "store.json").read_text())
    # the collector never held more rows than the budget allows
    assert manifest["peak_rows_in_memory"] == 100
    assert manifest["peak_rows_in_memory"] * bytes_per_row(16) <= budget_mb * 2**20
    loaded = store.load()
    for name in ("activations", "sequence_index", "position", "token"):
        assert torch.equal(getattr(loaded, name), getattr(in_memory, name))
    reopened = ActivationStore.open(tmp_path / "s")
    assert len(reopened) == len(in_memory) and reopened.hook_name == HOOK
    # streamed statistics equal those of the whole tensor
    a, b = fit_normalizer(reopened), Normalizer.fit(in_memory.activations)
    torch.testing.assert_close(a.mean, b.mean)
    torch.testing.assert_close(a.std, b.std)


def test_budget_that_fits_stays_in_memory(tiny_model, token_batches):
    acts = collect_activations(tiny_model, token_batches, HOOK, memory_budget_mb=1.0)
    assert isinstance(acts, ActivationSet)
    assert len(acts) == sum(int(m.sum()) for _, m in token_batches)


def test_budget_exceeded_without_store_dir(tiny_model, token_batches):
    with pytest.raises(ValueError, match="pass store_dir"):
        collect_activations(tiny_model, token_batches, HOOK, memory_budget_mb=0.001)


def test_progress_and_overwrite(tiny_model, token_batches, tmp_path):
    seen = []
    collect_activations(
        tiny_model,
        token_batches,
        HOOK,
        store_dir=tmp_path / "s",
        progress=lambda b, r: seen.append((b, r)),
    )
    assert [b for b, _ in seen] == [1, 2, 3]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        collect_activations(tiny_model, token_batches, HOOK, store_dir=tmp_path / "s")
    store = collect_activations(
        tiny_model, token_batches[:1], HOOK, store_dir=tmp_path / "s", overwrite=True
    )
    assert len(store) == int(token_batches[0][1].sum())
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing to delete"):
        collect_activations(
            tiny_model, token_batches, HOOK, store_dir=tmp_path / "notes", overwrite=True
        )


@pytest.mark.parametrize("shuffle", [True, False])
def test_iter_batches_visits_every_row_once_per_pass(tiny_model, tmp_path, shuffle):
    batches = make_token_batches(n_batches=4, seed=5)
    store = collect_activations(
        tiny_model, batches, HOOK, memory_budget_mb=0.01, store_dir=tmp_path / "s"
    )
    acts = store.load()
    for source in (acts, store):
        out = list(iter_batches(source, 32, shuffle=shuffle, repeat=False))
        assert all(len(b) == 32 for b in out[:-1])
        rows = torch.cat(out)
        key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
        assert key(rows) == key(acts.activations)
    endless = iter_batches(acts, 1000, seed=1)  # larger than the set: rows recycle
    assert next(endless).shape == (1000, 16)


def test_normalised_batches():
    x = torch.randn(64, 4) * 5 + 2
    acts = ActivationSet.from_tensor(x, "h")
    norm = Normalizer.fit(x)
    batch = next(iter_batches(acts, 64, shuffle=False, normalizer=norm))
    torch.testing.assert_close(batch, norm.normalize(x))


def test_bad_hook_and_batches(tiny_model, token_batches):
    with pytest.raises(HookNameError, match=r"did you mean .*'blocks\.0\.hook_resid_post'"):
        collect_activations(tiny_model, token_batches, "blocks.0.hook_resid")
    with pytest.raises(HookNameError, match="attention patterns"):
        collect_activations(tiny_model, token_batches, "blocks.0.attn.hook_pattern")
    tokens, mask = token_batches[0]
    with pytest.raises(ValueError, match="must be integers"):
        collect_activations(tiny_model, [(tokens.float(), mask)], HOOK)
    with pytest.raises(ValueError, match="shaped like tokens"):
        collect_activations(tiny_model, [(tokens, mask[:, :3])], HOOK)
    with pytest.raises(ValueError, match="only 0"):
        collect_activations(tiny_model, [(tokens, mask * 2)], HOOK)
    with pytest.raises(ValueError, match="pair"):
        collect_activations(tiny_model, [tokens], HOOK)


def test_empty_inputs_are_clear_errors(tiny_model, token_batches, tmp_path):
    with pytest.raises(ValueError, match="batch iterable was empty"):
        collect_activations(tiny_model, [], HOOK)
    tokens, mask = token_batches[0]
    with pytest.raises(ValueError, match="fully padded"):
        collect_activations(tiny_model, [(tokens * 0, mask * 0)], HOOK)
    empty = ActivationSet.from_tensor(torch.zeros(0, 4), HOOK)
    with pytest.raises(ValueError, match="is empty"):
        fit_normalizer(empty)
    with pytest.raises(ValueError, match="is empty"):
        next(iter_batches(empty, 8))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ActivationStore.open(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match="interrupted collection"):
        ActivationStore.open(tmp_path / "half")


def test_non_finite_activations_are_named(token_batches):
    model = make_tiny_model()
    with torch.no_grad():
        model.W_E[5] = float("nan")
    tokens, mask = token_batches[0]
    tokens = tokens.clone()
    tokens[mask.bool()] = 5
    with pytest.raises(ValueError, match=r"activations at 'blocks\.0\.hook_resid_post' in batch 0"):
        collect_activations(model, [(tokens, mask)], HOOK)


_RSS_SCRIPT = """
import sys, tempfile
from pathlib import Path
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from mechrec.activations import collect_activations

def peak_kb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

n_batches, budget = int(sys.argv[1]), float(sys.argv[2])
cfg = HookedTransformerConfig(n_layers=1, d_model=64, n_heads=2, d_head=32, d_mlp=128,
                              d_vocab=500, n_ctx=200, act_fn="gelu", seed=0, device="cpu")
model = HookedTransformer(cfg).eval()
gen = torch.Generator().manual_seed(0)
batches = [(torch.randint(1, 500, (64, 200), generator=gen), None) for _ in range(n_batches)]
collect_activations(model, batches[:2], "blocks.0.hook_resid_post")
Path("/proc/self/clear_refs").write_text("5")
before = peak_kb()
with tempfile.TemporaryDirectory() as tmp:
    out = collect_activations(model, batches, "blocks.0.hook_resid_post",
                              memory_budget_mb=budget, store_dir=Path(tmp) / "s")
    print(len(out), (peak_kb() - before) / 1024)
"""


@pytest.mark.slow
def test_peak_memory_is_bounded_by_the_budget_not_the_rows():
    """Resident memory (kernel peak RSS, fresh processes) while collecting ~2x and ~27x the
    budget into a sharded store: the larger collection adds no more than the budget."""
    import subprocess
    import sys

    budget_mb = 4.0
    peaks = {}
    for n_batches in (2, 32):
        out = subprocess.run(
            [sys.executable, "-c", _RSS_SCRIPT, str(n_batches), str(budget_mb)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        rows, peaks[n_batches] = int(out[0]), float(out[1])
        assert rows == n_batches * 64 * 200
    data_mb = 32 * 64 * 200 * bytes_per_row(64) / 2**20  # ~109 MB, 27x the budget
    assert data_mb > 25 * budget_mb
    assert peaks[32] - peaks[2] < 2 * budget_mb + 16, peaks


def test_atomic_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    from mechrec._io import atomic_write_json

    path = atomic_write_json(tmp_path / "x.json", {"a": float("nan")})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert path.read_text() == '{\n  "a": null\n}\n'
