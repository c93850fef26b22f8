"""The "Bring your own SAE" snippets of docs/concepts.md run, on checkpoints of each format
built here (plain sae-lens, sparsify, dictionary_learning), and compute what they claim."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata
from safetensors.torch import save_file

PAGE = Path(__file__).resolve().parents[1] / "docs" / "concepts.md"
HOOK = "blocks.0.hook_resid_post"
D_IN, D_SAE, K = 8, 24, 5


def _snippet(marker: str) -> str:
    match = re.search(rf"<!-- {marker} -->\n```python\n(.*?)```",
                      PAGE.read_text(encoding="utf-8"), re.S)
    assert match, f"concepts.md has no snippet after <!-- {marker} -->"
    code = match.group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 5
    return code


def _checkpoints(root: Path) -> dict[str, torch.Tensor]:
    """Write the three checkpoints the snippet opens; return the sparsify weights."""
    gen = torch.Generator().manual_seed(0)
    weights = {"encoder.weight": torch.randn(D_SAE, D_IN, generator=gen),
               "encoder.bias": torch.randn(D_SAE, generator=gen) * 0.1,
               "W_dec": torch.randn(D_SAE, D_IN, generator=gen),
               "b_dec": torch.randn(D_IN, generator=gen)}
    sparsify = root / "sparsify" / "layers.0"
    sparsify.mkdir(parents=True)
    save_file(weights, str(sparsify / "sae.safetensors"))
    (sparsify / "cfg.json").write_text(json.dumps({
        "activation": "topk", "expansion_factor": 3, "normalize_decoder": True,
        "num_latents": D_SAE, "k": K, "multi_topk": False, "skip_connection": False,
        "transcode": False, "d_in": D_IN}))
    (root / "dictionary").mkdir()
    torch.save({"encoder.weight": weights["encoder.weight"],
                "encoder.bias": weights["encoder.bias"],
                "decoder.weight": weights["W_dec"].T.contiguous(), "bias": weights["b_dec"]},
               root / "dictionary" / "ae.pt")
    StandardSAE(StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=SAEMetadata(
        hook_name=HOOK))).save_model(root / "plain_sae")
    return weights


def test_bring_your_own_sae_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    w = _checkpoints(tmp_path)
    raw = torch.randn(30, D_IN, generator=torch.Generator().manual_seed(1)) * 2
    namespace: dict[str, object] = {"raw_activations": raw}
    exec(compile(_snippet("byo-in"), "byo-in", "exec"), namespace)
    # sparsify's forward: top k of relu(encoder(x - b_dec))
    pre = torch.relu((raw - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"])
    top = pre.topk(K, dim=-1)
    expected = torch.zeros_like(pre).scatter_(-1, top.indices, top.values)
    torch.testing.assert_close(namespace["features"], expected, atol=1e-5, rtol=0)
    assert namespace["dl"].architecture == "standard"
    assert namespace["plain"].hook_name == HOOK
    exec(compile(_snippet("byo-out"), "byo-out", "exec"), namespace)
    torch.testing.assert_close(namespace["same"].detach(), expected, atol=1e-5, rtol=0)
    assert namespace["hook"] == HOOK
