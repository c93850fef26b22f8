"""A GPTRec SAE saved by mechrec, loaded in plain sae-lens and spliced into the model with
``HookedSAETransformer.add_sae``, gives mechrec's features, reconstructions and logits on
ml-100k (the normaliser is folded into the saved weights)."""

from __future__ import annotations

from pathlib import Path

import torch
from mechrec_recsys.experiment import Experiment
from mechrec_recsys.model import to_hooked_sae_transformer
from mechrec_recsys.saes import PAPER_HOOK
from sae_asserts import assert_same_features
from sae_lens import SAE

from mechrec.reconstruction import reconstruction_hooks
from mechrec.saes import NormalizedSAE

TOL = dict(rtol=1e-5, atol=1e-5)


def test_plain_sae_lens_splice_equals_mechrec_on_gptrec(paper_experiment: Experiment,
                                                         paper_sae: NormalizedSAE,
                                                         tmp_path: Path):
    plain = SAE.load_from_disk(paper_sae.save(tmp_path / "sae"))
    assert plain.cfg.metadata.hook_name == PAPER_HOOK
    x = paper_experiment.activations("test", PAPER_HOOK).activations
    model = paper_experiment.model
    tokens, mask = next(paper_experiment.batches("test"))
    with torch.no_grad():
        feats, recon = paper_sae.encode(x), paper_sae.reconstruct(x)
        got_feats = plain.encode(x)
        assert_same_features(got_feats, feats)
        torch.testing.assert_close(plain.decode(got_feats), recon, **TOL)
        # what the earlier format gave a plain sae-lens user on raw activations
        unfolded = paper_sae.sae.decode(paper_sae.sae.encode(x))
        print(f"ml-100k standard: max |encode diff| {float((got_feats - feats).abs().max()):.2e}"
              f", max |reconstruction diff| "
              f"{float((plain.decode(got_feats) - recon).abs().max()):.2e}; earlier format off "
              f"by {float((unfolded - recon).abs().max()):.2f}")

        clean = model(tokens, attention_mask=mask)
        with reconstruction_hooks(model, paper_sae):
            ours = model(tokens, attention_mask=mask)
        spliced = to_hooked_sae_transformer(model)
        spliced.add_sae(plain)
        theirs = spliced(tokens, attention_mask=mask)
    print(f"GPTRec splice: max |logit diff| {float((theirs - ours).abs().max()):.2e}, "
          f"SAE effect {float((ours - clean).abs().max()):.2e}")
    assert float((ours - clean).abs().max()) > 1e-2
    torch.testing.assert_close(theirs, ours, **TOL)
