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


def test_transcoder_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The transcoder snippet on a tiny model: features, metrics and the splice are sae-lens'
    own computation with plain TransformerLens hooks."""
    from sae_lens.saes.transcoder import SkipTranscoder, SkipTranscoderConfig
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from mechrec.activations.sets import ActivationSet
    from mechrec.saes import NormalizedSAE

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = HookedTransformer(HookedTransformerConfig(
        n_layers=1, d_model=8, d_mlp=16, n_heads=2, d_head=4, n_ctx=6, d_vocab=12,
        act_fn="relu", normalization_type="LN"))
    hook_in, hook_out = "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"
    tc = SkipTranscoder(SkipTranscoderConfig(
        d_in=8, d_sae=24, d_out=8, apply_b_dec_to_input=False,
        metadata=SAEMetadata(hook_name=hook_in, hook_name_out=hook_out)))
    with torch.no_grad():
        tc.W_skip.normal_(0, 0.1)
        tc.b_enc.normal_(0, 0.1)
    tc.save_model("my_transcoder")
    tokens = torch.randint(0, 12, (4, 6), generator=torch.Generator().manual_seed(1))
    _, cache = model.run_with_cache(tokens, names_filter=[hook_in, hook_out])
    x, y = cache[hook_in].reshape(-1, 8), cache[hook_out].reshape(-1, 8)
    namespace: dict[str, object] = {
        "NormalizedSAE": NormalizedSAE, "model": model, "tokens": tokens, "mlp_in": x,
        "mlp_in_set": ActivationSet.from_tensor(x, hook_in),
        "mlp_out_set": ActivationSet.from_tensor(y, hook_out)}
    exec(compile(_snippet("byo-transcoder"), "byo-transcoder", "exec"), namespace)
    with torch.no_grad():
        torch.testing.assert_close(namespace["features"], tc.encode(x), atol=1e-5, rtol=0)
        err = float((y - tc(x)).pow(2).mean().sqrt())
        seen: dict[str, torch.Tensor] = {}
        hooks = [(hook_in, lambda act, hook: seen.update(x=act)),
                 (hook_out, lambda act, hook: tc(seen["x"]))]
        with model.hooks(fwd_hooks=hooks):
            want = model(tokens)
    assert namespace["quality"].n_rows == 24
    assert namespace["quality"].rmse == pytest.approx(err, rel=1e-5)
    torch.testing.assert_close(namespace["spliced"], want, atol=1e-5, rtol=1e-5)
