"""Bring your own SAE: plain sae-lens SAEs and other libraries' checkpoints, wrapped."""

from __future__ import annotations

import pytest
import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata

from mechrec.normalization import Normalizer
from mechrec.saes import NormalizedSAE

HOOK = "blocks.0.hook_resid_post"
D_IN, D_SAE = 16, 40


def _random_sae(architecture: str, normalize: str, *, hook: str | None = HOOK,
                seed: int = 0) -> SAE:
    """A plain sae-lens SAE with random weights (non-zero biases)."""
    common = dict(d_in=D_IN, d_sae=D_SAE, normalize_activations=normalize,
                  metadata=SAEMetadata(hook_name=hook))
    if architecture == "standard":
        sae: SAE = StandardSAE(StandardSAEConfig(**common))
    else:
        sae = TopKSAE(TopKSAEConfig(k=6, rescale_acts_by_decoder_norm=True, **common))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in sae.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return sae.eval()


def _raw(seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(50, D_IN, generator=gen) * 3 + 1


@pytest.mark.parametrize("normalize", ["none", "constant_norm_rescale", "layer_norm",
                                       "expected_average_only_in"])
@pytest.mark.parametrize("architecture", ["standard", "topk"])
def test_plain_sae_lens_sae_wrapped_equals_sae_lens(tmp_path, architecture, normalize):
    sae = _random_sae(architecture, normalize)
    x = _raw()
    with torch.no_grad():
        feats = sae.encode(x)
        recon = sae.decode(sae.encode(x))
    sae.save_model(tmp_path / "plain")
    for nsae in (NormalizedSAE.from_sae_lens(tmp_path / "plain"),
                 NormalizedSAE.load(tmp_path / "plain"),
                 NormalizedSAE.from_sae_lens(_random_sae(architecture, normalize))):
        assert nsae.hook_name == HOOK and nsae.normalizer.mode == "none"
        assert nsae.architecture == architecture
        with torch.no_grad():
            ours = nsae.encode(x)
            torch.testing.assert_close(ours, feats, atol=1e-5, rtol=0)
            torch.testing.assert_close(nsae.decode(ours), recon, atol=1e-5, rtol=0)
            torch.testing.assert_close(nsae.reconstruct(x), recon, atol=1e-5, rtol=0)
    assert (feats != 0).any() and (feats == 0).any()
    if normalize in ("constant_norm_rescale", "layer_norm"):
        # those scale each row inside encode; decode alone cannot know the scale
        with pytest.raises(ValueError, match="normalises each input row itself"):
            nsae.decode(torch.zeros(3, D_SAE))
    # mechrec saves it back as an exact plain sae-lens SAE (identity normaliser, no fold)
    nsae.save(tmp_path / "resaved")
    again = SAE.load_from_disk(tmp_path / "resaved")
    with torch.no_grad():
        torch.testing.assert_close(again.encode(x), feats, atol=1e-5, rtol=0)
    torch.testing.assert_close(NormalizedSAE.load(tmp_path / "resaved").reconstruct(x), recon,
                               atol=1e-5, rtol=0)


def test_plain_sae_lens_errors(tmp_path):
    _random_sae("standard", "none", hook=None).save_model(tmp_path / "nohook")
    with pytest.raises(ValueError, match=r"no hook name .*pass hook_name=.*metadata"):
        NormalizedSAE.load(tmp_path / "nohook")
    nsae = NormalizedSAE.load(tmp_path / "nohook", hook_name="blocks.1.hook_resid_post")
    assert nsae.hook_name == "blocks.1.hook_resid_post"
    (tmp_path / "nohook" / "sae_weights.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"sae_weights\.safetensors is missing"):
        NormalizedSAE.from_sae_lens(tmp_path / "nohook")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cfg.json").write_text("{not json")
    (tmp_path / "bad" / "sae_weights.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot load the SAE"):
        NormalizedSAE.load(tmp_path / "bad")


def test_mechrec_folder_without_its_normaliser_is_still_refused(tmp_path):
    gen = torch.Generator().manual_seed(3)
    norm = Normalizer.fit(torch.randn(200, D_IN, generator=gen) * 2 + 1)
    NormalizedSAE(_random_sae("standard", "none"), norm).save(tmp_path / "sae")
    (tmp_path / "sae" / "normalizer.safetensors").unlink()
    with pytest.raises((FileNotFoundError, ValueError), match=r"normalizer\.safetensors"):
        NormalizedSAE.load(tmp_path / "sae")
