"""Reconstruction metrics and downstream evaluation with a hook replaced, on a tiny
non-recommender HookedTransformer: the generic proof that the core needs no adapter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_model import make_token_batches

from mechrec.activations import ActivationSet, collect_activations
from mechrec.hooks import HookNameError
from mechrec.normalization import Normalizer
from mechrec.reconstruction import (
    evaluate_with_reconstruction,
    reconstruction_hook,
    reconstruction_hooks,
    reconstruction_metrics,
)
from mechrec.saes import NormalizedSAE, SAETrainingConfig, train_sae

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def trained(tiny_model):
    """Activations of the tiny model and an SAE trained on them through the public API."""
    acts = collect_activations(tiny_model, make_token_batches(n_batches=12, seed=2), HOOK)
    cfg = SAETrainingConfig(
        d_sae=64,
        l1_coefficient=0.05,
        steps=300,
        batch_size=64,
        lr_warm_up_steps=10,
        dead_feature_window=30,
        resample_dead_every=60,
    )
    return acts, train_sae(acts, cfg).sae


def next_token_loss(batches):
    """A language-model-style evaluation callable: mean next-token cross-entropy."""

    @torch.no_grad()
    def evaluate(model):
        losses = []
        for tokens, mask in batches:
            logits = model(tokens, attention_mask=mask)
            keep = (mask[:, 1:] * mask[:, :-1]).bool()
            losses.append(F.cross_entropy(logits[:, :-1][keep], tokens[:, 1:][keep]))
        return torch.stack(losses).mean().item()

    return evaluate


def test_metrics_match_direct_computation(trained):
    acts, nsae = trained
    m = reconstruction_metrics(nsae, acts, batch_size=100)  # several batches, summed exactly
    x = nsae.normalizer.normalize(acts.activations)
    feats = nsae.sae.encode(x)
    err = x - nsae.sae.decode(feats)
    assert m.n_rows == len(acts) and m.space == "normalized"
    assert m.rmse == pytest.approx(err.pow(2).mean().sqrt().item(), rel=1e-5)
    total = (x - x.mean(0)).pow(2).sum().item()
    assert m.explained_variance == pytest.approx(1 - err.pow(2).sum().item() / total, rel=1e-4)
    assert m.l0 == pytest.approx((feats != 0).float().sum(-1).mean().item(), rel=1e-6)
    dead = int(((feats != 0).sum(0) == 0).sum())
    assert m.n_dead == dead and m.dead_fraction == dead / 64
    assert 0.5 < m.explained_variance <= 1.0
    raw = reconstruction_metrics(nsae, acts, space="raw")
    raw_err = acts.activations - nsae.reconstruct(acts.activations)
    assert raw.rmse == pytest.approx(raw_err.pow(2).mean().sqrt().item(), rel=1e-4)
    assert raw.l0 == pytest.approx(m.l0)


def test_metrics_on_a_store_equal_in_memory(trained, tiny_model, tmp_path):
    _, nsae = trained
    batches = make_token_batches(n_batches=5, seed=9)
    in_memory = collect_activations(tiny_model, batches, HOOK)
    store = collect_activations(
        tiny_model, batches, HOOK, memory_budget_mb=0.005, store_dir=tmp_path / "s"
    )
    assert store.n_chunks > 1
    a, b = reconstruction_metrics(nsae, in_memory), reconstruction_metrics(nsae, store)
    assert a.n_rows == b.n_rows and a.n_dead == b.n_dead
    assert a.rmse == pytest.approx(b.rmse, rel=1e-9)
    assert a.l0 == pytest.approx(b.l0, rel=1e-9)


def test_generic_proof_end_to_end(trained, tiny_model):
    """Train -> measure -> evaluate downstream on a model that is not a recommender."""
    _, nsae = trained
    batches = make_token_batches(n_batches=2, seed=11)
    evaluate = next_token_loss(batches)
    original = evaluate(tiny_model)
    replaced = evaluate_with_reconstruction(tiny_model, nsae, evaluate, mode="replace")
    with_error = evaluate_with_reconstruction(tiny_model, nsae, evaluate, mode="keep-error")
    assert with_error == original  # exactly the original model
    assert replaced != original and abs(replaced - original) < 1.0
    assert evaluate(tiny_model) == original  # hooks are gone afterwards


def test_keep_error_reproduces_logits_exactly(trained, tiny_model, token_batches):
    _, nsae = trained
    tokens, mask = token_batches[0]
    with torch.no_grad():
        base = tiny_model(tokens, attention_mask=mask)
        with reconstruction_hooks(tiny_model, nsae, "keep-error") as hooked:
            same = hooked(tokens, attention_mask=mask)
        with reconstruction_hooks(tiny_model, nsae, "replace") as hooked:
            replaced = hooked(tokens, attention_mask=mask)
    assert torch.equal(base, same)
    assert not torch.equal(base, replaced)


def test_replace_writes_the_denormalised_reconstruction(trained, tiny_model, token_batches):
    _, nsae = trained
    tokens, mask = token_batches[1]
    seen = {}

    def grab(act, hook):
        seen["act"] = act.clone()

    with torch.no_grad():
        _, cache = tiny_model.run_with_cache(tokens, attention_mask=mask, names_filter=[HOOK])
        with reconstruction_hooks(tiny_model, nsae, "replace"):
            tiny_model.run_with_hooks(
                tokens, attention_mask=mask, return_type=None, fwd_hooks=[(HOOK, grab)]
            )
    torch.testing.assert_close(seen["act"], nsae.reconstruct(cache[HOOK]))


def test_edit_only_adds_its_own_effect(trained):
    _, nsae = trained
    x = torch.randn(2, 3, 16)

    def edit(feats):
        out = feats.clone()
        out[..., 7] = 4.0
        return out

    with torch.no_grad():
        feats = nsae.encode(x)
        expected = x + nsae.decode(edit(feats)) - nsae.decode(feats)
        out = reconstruction_hook(nsae, "keep-error", {7: 4.0})(x)
        replaced = reconstruction_hook(nsae, "replace", {7: 4.0})(x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(replaced, nsae.decode(edit(feats)))


def test_per_head_hooks_are_flattened_and_restored(tiny_model):
    hook = "blocks.1.attn.hook_z"
    acts = collect_activations(tiny_model, make_token_batches(n_batches=4), hook)
    nsae = train_sae(
        acts, SAETrainingConfig(d_sae=32, steps=20, batch_size=32, lr_warm_up_steps=2)
    ).sae
    tokens, mask = make_token_batches(n_batches=1)[0]
    with torch.no_grad():
        base = tiny_model(tokens, attention_mask=mask)
        same = evaluate_with_reconstruction(
            tiny_model, nsae, lambda m: m(tokens, attention_mask=mask), mode="keep-error"
        )
    assert torch.equal(base, same)


def test_mismatches_are_clear_errors(trained, tiny_model, token_batches):
    _, nsae = trained
    tokens, mask = token_batches[0]
    wrong_hook = NormalizedSAE(nsae.sae, nsae.normalizer, hook_name="blocks.0.mlp.hook_post")
    with pytest.raises(ValueError, match="width 32 but the SAE's d_in is 16"):
        evaluate_with_reconstruction(
            tiny_model, wrong_hook, lambda m: m(tokens, attention_mask=mask)
        )
    assert tiny_model.hook_dict[HOOK].fwd_hooks == []  # cleaned up after the error
    nsae.sae.cfg.metadata.hook_name = HOOK
    missing = NormalizedSAE(nsae.sae, nsae.normalizer, hook_name="blocks.7.hook_resid_post")
    with pytest.raises(HookNameError, match="did you mean"):
        evaluate_with_reconstruction(tiny_model, missing, lambda m: None)
    nsae.sae.cfg.metadata.hook_name = HOOK
    with pytest.raises(ValueError, match="mode must be one of"):
        reconstruction_hook(nsae, "error")
    narrow = ActivationSet.from_tensor(torch.zeros(4, 8), HOOK)
    with pytest.raises(ValueError, match="width 8 but the SAE's d_in is 16"):
        reconstruction_metrics(nsae, narrow)
    with pytest.raises(ValueError, match="is empty"):
        reconstruction_metrics(nsae, ActivationSet.from_tensor(torch.zeros(0, 16), HOOK))
    bad = torch.randn(4, 16)
    bad[0, 0] = float("nan")
    source = ActivationSet(
        HOOK,
        bad,
        torch.arange(4),
        torch.zeros(4, dtype=torch.long),
        torch.zeros(4, dtype=torch.long),
    )
    with pytest.raises(ValueError, match="NaN"):
        reconstruction_metrics(nsae, source)
    with pytest.raises(ValueError, match="space must be"):
        reconstruction_metrics(nsae, narrow, space="weird")
    assert isinstance(Normalizer.identity(3), Normalizer)
