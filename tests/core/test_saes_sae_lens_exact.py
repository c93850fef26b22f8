"""A saved mechrec SAE is an exact sae-lens SAE: the normaliser is folded into its weights.

Plain ``sae_lens.SAE.load_from_disk`` on a folder written by ``NormalizedSAE.save`` must give,
on *raw* activations, the features and reconstructions mechrec gives (and the same logits
when spliced into a model with ``HookedSAETransformer.add_sae``), while ``NormalizedSAE.load``
still returns the normalised-space SAE and folders of the earlier format still load.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from sae_asserts import assert_same_features
from sae_lens import SAE, HookedSAETransformer
from tiny_model import make_token_batches

from mechrec.activations import collect_activations, fit_normalizer
from mechrec.normalization import NORMALIZER_FILENAME, Normalizer
from mechrec.reconstruction import reconstruction_hooks
from mechrec.saes import ARCHITECTURES, NormalizedSAE, SAETrainingConfig, train_sae
from mechrec.saes.folding import FOLD_METADATA_KEY, fold_normalizer, unfold_normalizer
from mechrec.saes.io import write_manifest

HOOK = "blocks.0.hook_resid_post"
#: float32 comparisons of one forward pass on raw activations.
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def acts(tiny_model):
    return collect_activations(tiny_model, make_token_batches(n_batches=12, seed=1), HOOK)


@pytest.fixture(scope="module")
def normalizer(acts) -> Normalizer:
    """A per-dimension normaliser far from the identity (means up to ~3, stds 0.3 to 4)."""
    fitted = fit_normalizer(acts)
    gen = torch.Generator().manual_seed(0)
    scale = torch.empty(fitted.d).uniform_(0.3, 4.0, generator=gen)
    shift = torch.empty(fitted.d).uniform_(-3.0, 3.0, generator=gen)
    return Normalizer("per_dim", fitted.mean + shift, fitted.std * scale, n_rows=fitted.n_rows)


def _train(acts, normalizer, architecture: str) -> NormalizedSAE:
    config = SAETrainingConfig(architecture=architecture, d_sae=48, k=6, target_l0=6, steps=80,
                               batch_size=64, lr_warm_up_steps=10, dead_feature_window=20,
                               resample_dead_every=40)
    return train_sae(acts, config, normalizer=normalizer, log_every=40).sae


@pytest.fixture(scope="module")
def trained(acts, normalizer) -> dict[str, NormalizedSAE]:
    return {arch: _train(acts, normalizer, arch) for arch in ARCHITECTURES}


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max())


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_plain_sae_lens_load_is_exact_on_raw_activations(acts, trained, tmp_path, architecture):
    nsae = trained[architecture]
    x = acts.activations
    feats, recon = nsae.encode(x), nsae.reconstruct(x)
    assert (feats > 0).any()
    directory = nsae.save(tmp_path / architecture)

    plain = SAE.load_from_disk(directory)
    cfg = json.loads((directory / "cfg.json").read_text())
    assert cfg["normalize_activations"] == "none"
    assert cfg["metadata"][FOLD_METADATA_KEY]["format"] == "mechrec.sae_lens_folded/1"
    got_feats = plain.encode(x)
    got_recon = plain.decode(got_feats)
    print(f"{architecture}: max |encode diff| {_max_abs(got_feats, feats):.2e}, "
          f"max |reconstruction diff| {_max_abs(got_recon, recon):.2e}, "
          f"reconstruction scale {float(recon.abs().max()):.2f}")
    # same active features, same values, same raw-space reconstruction
    assert_same_features(got_feats, feats)
    torch.testing.assert_close(got_recon, recon, **TOL)
    torch.testing.assert_close(plain(x), recon, **TOL)
    # the earlier format fed raw activations to normalised-space weights: clearly different
    assert _max_abs(nsae.sae.decode(nsae.sae.encode(x)), recon) > 0.1

    # mechrec gets its normalised-space SAE back, unchanged in behaviour and configuration
    again = NormalizedSAE.load(directory)
    assert FOLD_METADATA_KEY not in again.sae.cfg.metadata
    assert again.sae.cfg.to_dict() == nsae.sae.cfg.to_dict()
    torch.testing.assert_close(again.normalizer.mean, nsae.normalizer.mean, rtol=0, atol=0)
    for name, value in nsae.sae.state_dict().items():
        torch.testing.assert_close(again.sae.state_dict()[name], value, rtol=1e-6, atol=1e-6,
                                   msg=name)
    assert_same_features(again.encode(x), feats)
    torch.testing.assert_close(again.reconstruct(x), recon, **TOL)
    # saving again writes the same bytes (the fold is deterministic)
    resaved = again.save(tmp_path / f"{architecture}-again")
    assert (resaved / "cfg.json").read_text() == (directory / "cfg.json").read_text()


@pytest.mark.parametrize("architecture", ["standard", "jumprelu", "gated"])
def test_fold_matches_sae_lens_whitening_fold(trained, architecture):
    """Our diagonal fold is sae-lens' ``fold_activation_whitening`` with M = diag(1/std)."""
    nsae = trained[architecture]
    ours = fold_normalizer(nsae.sae, nsae.normalizer)
    theirs = fold_normalizer(nsae.sae, Normalizer.identity(nsae.d_in))  # a copy
    std, mean = nsae.normalizer.std.double(), nsae.normalizer.mean.double()
    theirs.fold_activation_whitening(mean, torch.diag(1 / std), torch.diag(std))
    for name, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], value, rtol=1e-6, atol=1e-6,
                                   msg=name)


def test_fold_without_b_dec_on_input(trained, acts):
    """The encoder-bias shift used when ``apply_b_dec_to_input`` is off (gated: b_mag too)."""
    x = acts.activations
    for architecture in ARCHITECTURES:
        nsae = trained[architecture]
        sae = fold_normalizer(nsae.sae, Normalizer.identity(nsae.d_in))
        del sae.cfg.metadata.__dict__[FOLD_METADATA_KEY]
        sae.cfg.apply_b_dec_to_input = False
        sae.cfg.rescale_acts_by_decoder_norm = getattr(nsae.sae.cfg,
                                                       "rescale_acts_by_decoder_norm", None)
        other = NormalizedSAE(sae, nsae.normalizer)
        folded = fold_normalizer(sae, nsae.normalizer)
        torch.testing.assert_close(folded.encode(x), other.encode(x), **TOL)
        torch.testing.assert_close(folded.decode(folded.encode(x)), other.reconstruct(x), **TOL)
        unfold_normalizer(folded, nsae.normalizer)
        torch.testing.assert_close(folded.encode(other.normalizer.normalize(x)),
                                   other.sae.encode(other.normalizer.normalize(x)), **TOL)


def test_add_sae_splice_equals_mechrec_reconstruction(tiny_model, trained, tmp_path):
    nsae = trained["jumprelu"]
    directory = nsae.save(tmp_path / "sae")
    model = HookedSAETransformer(tiny_model.cfg)
    model.load_state_dict(tiny_model.state_dict())
    model.eval()
    tokens = make_token_batches(n_batches=1, seed=7)[0][0]
    with torch.no_grad():
        clean = model(tokens)
        with reconstruction_hooks(tiny_model, nsae):
            ours = tiny_model(tokens)
        model.add_sae(SAE.load_from_disk(directory))
        theirs = model(tokens)
    print(f"splice: max |logit diff| {_max_abs(theirs, ours):.2e}, "
          f"SAE effect {_max_abs(ours, clean):.2e}")
    assert _max_abs(ours, clean) > 1e-2  # the splice does change the logits
    torch.testing.assert_close(theirs, ours, **TOL)


def test_earlier_format_still_loads(acts, trained, tmp_path):
    """A folder saved before the fold (normalised-space weights) loads as it did."""
    x = acts.activations
    for architecture in ARCHITECTURES:
        nsae = trained[architecture]
        old = tmp_path / architecture
        nsae.sae.save_model(old)
        nsae.normalizer.save(old / NORMALIZER_FILENAME)
        write_manifest(old)
        loaded = NormalizedSAE.load(old)
        assert torch.equal(loaded.encode(x), nsae.encode(x))
        assert torch.equal(loaded.reconstruct(x), nsae.reconstruct(x))


def test_resaving_a_plain_sae_lens_load_wraps_it_as_given(acts, trained, tmp_path):
    """A folded SAE loaded in plain sae-lens reads raw activations; wrapped with the identity
    normaliser and saved again it stays the same SAE, for sae-lens and for mechrec."""
    x = acts.activations
    nsae = trained["topk"]
    plain = SAE.load_from_disk(nsae.save(tmp_path / "first"))
    directory = NormalizedSAE(plain, Normalizer.identity(nsae.d_in)).save(tmp_path / "second")
    again = NormalizedSAE.load(directory)
    assert FOLD_METADATA_KEY not in again.sae.cfg.metadata
    assert again.sae.cfg.rescale_acts_by_decoder_norm is False  # as plain sae-lens gave it
    with torch.no_grad():
        for sae in (SAE.load_from_disk(directory), again):
            torch.testing.assert_close(sae.encode(x), nsae.encode(x), **TOL)


def test_identity_mode_folds_to_the_identity(trained):
    """Mode "none" maps x to x whatever statistics it holds; the fold must agree."""
    nsae = trained["gated"]
    odd = Normalizer("none", torch.full((nsae.d_in,), 5.0), torch.full((nsae.d_in,), 3.0))
    folded = fold_normalizer(nsae.sae, odd)
    for name, value in nsae.sae.state_dict().items():
        assert torch.equal(folded.state_dict()[name], value), name


def test_fold_refuses_what_it_cannot_fold(trained, tmp_path):
    nsae = trained["standard"]
    with pytest.raises(ValueError, match="8 dimensions but the SAE's d_in is 16"):
        fold_normalizer(nsae.sae, Normalizer.identity(8))
    with pytest.raises(ValueError, match="not a record of format"):
        unfold_normalizer(nsae.sae, nsae.normalizer)
    odd = dataclasses.replace(nsae.sae.cfg, normalize_activations="layer_norm")
    sae = SAE.from_dict(odd.to_dict())
    with pytest.raises(ValueError, match="normalises its input itself"):
        fold_normalizer(sae, nsae.normalizer)
    # saving such an SAE: refused behind a real normaliser, written as is behind the identity
    with pytest.raises(ValueError, match="cannot save this 'standard' SAE with its 'per_dim'"):
        NormalizedSAE(sae, nsae.normalizer).save(tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    directory = NormalizedSAE(sae, Normalizer.identity(nsae.d_in)).save(tmp_path / "as-is")
    assert SAE.load_from_disk(directory).cfg.normalize_activations == "layer_norm"
    assert NormalizedSAE.load(directory).sae.cfg.normalize_activations == "layer_norm"


def test_docs_snippet_is_exact(tiny_model, acts, trained, tmp_path):
    """The 'load a mechrec SAE in plain sae-lens' snippet of docs/concepts.md, run as is."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "concepts.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S)
              if "SAE.load_from_disk(directory)" in b]
    assert len(blocks) == 1
    assert len(blocks[0].strip().splitlines()) == 5
    nsae = trained["gated"]
    namespace = {"directory": nsae.save(tmp_path / "sae"), "raw_activations": acts.activations,
                 "model": tiny_model}
    with torch.no_grad():
        exec(blocks[0], namespace)
        torch.testing.assert_close(namespace["features"], nsae.encode(acts.activations), **TOL)
        tokens = make_token_batches(n_batches=1, seed=3)[0][0]
        with reconstruction_hooks(tiny_model, nsae):
            ours = tiny_model(tokens)
        torch.testing.assert_close(namespace["spliced"](tokens), ours, **TOL)
