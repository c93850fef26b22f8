"""sae-lens transcoders (input hook != output hook) on a GPTRec trained on ml-100k: saved with
sae-lens' own ``save_model``, loaded by mechrec, and checked against plain sae-lens with
TransformerLens hooks: features, the spliced forward pass, reconstruction metrics, steering,
splice quality; and the errors for bad inputs.

Each transcoder reads ``blocks.0.ln2.hook_normalized`` (the MLP's input) and predicts
``blocks.0.hook_mlp_out``. Its encoder is random; its decoder (and skip connection) is the
(ridge) least-squares fit of the MLP output on the test users' activations, so that it is a real,
if crude, transcoder of this model's MLP.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mechrec_recsys.experiment import Experiment
from mechrec_recsys.model import to_hooked_sae_transformer
from mechrec_recsys.sae_quality import splice_quality
from mechrec_recsys.saes import load_run_sae, reconstruction_on_test
from sae_lens import SAE
from sae_lens.saes.sae import SAEMetadata
from sae_lens.saes.transcoder import (
    JumpReLUSkipTranscoder,
    JumpReLUSkipTranscoderConfig,
    JumpReLUTranscoder,
    JumpReLUTranscoderConfig,
    SkipTranscoder,
    SkipTranscoderConfig,
    Transcoder,
    TranscoderConfig,
)

from mechrec.hooks import check_sae_fits
from mechrec.reconstruction import reconstruction_hooks, reconstruction_metrics
from mechrec.saes import MissingHookNameError, NormalizedSAE, SAETrainingConfig
from mechrec.steering import FeatureEdit, steer, steered_last_logits

TOL = dict(rtol=1e-5, atol=1e-5)
HOOK_IN = "blocks.0.ln2.hook_normalized"
HOOK_OUT = "blocks.0.hook_mlp_out"
D_SAE = 96
CLASSES = {
    "transcoder": (Transcoder, TranscoderConfig),
    "skip_transcoder": (SkipTranscoder, SkipTranscoderConfig),
    "jumprelu_transcoder": (JumpReLUTranscoder, JumpReLUTranscoderConfig),
    "jumprelu_skip_transcoder": (JumpReLUSkipTranscoder, JumpReLUSkipTranscoderConfig),
}


def make_transcoder(experiment: Experiment, architecture: str, *, hook_out: str = HOOK_OUT,
                    seed: int = 0) -> Transcoder:
    """A sae-lens transcoder of the MLP of block 0: random encoder, ridge-fitted decoder."""
    cls, cfg_cls = CLASSES[architecture]
    x = experiment.activations("test", HOOK_IN).activations
    y = experiment.activations("test", HOOK_OUT).activations
    cfg = cfg_cls(d_in=x.shape[1], d_sae=D_SAE, d_out=y.shape[1], apply_b_dec_to_input=False,
                  metadata=SAEMetadata(hook_name=HOOK_IN, hook_name_out=hook_out))
    tc = cls(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        tc.W_enc.copy_(torch.randn(tc.W_enc.shape, generator=gen) / x.shape[1] ** 0.5)
        tc.b_enc.copy_(torch.randn(tc.b_enc.shape, generator=gen) * 0.1)
        if hasattr(tc, "threshold"):
            tc.threshold.copy_(torch.rand(tc.threshold.shape, generator=gen) * 0.2)
        feats = tc.encode(x)
        design = [feats, torch.ones(len(x), 1)]
        if isinstance(tc, SkipTranscoder):
            design.append(x)
        a = torch.cat(design, dim=1).double()  # ridge: LayerNorm outputs are collinear
        solution = torch.linalg.solve(a.T @ a + 1e-2 * torch.eye(a.shape[1], dtype=a.dtype),
                                      a.T @ y.double())
        tc.W_dec.copy_(solution[:D_SAE].float())
        tc.b_dec.copy_(solution[D_SAE].float())
        if isinstance(tc, SkipTranscoder):
            tc.W_skip.copy_(solution[D_SAE + 1:].T.float())
    return tc.eval()


def spliced_by_hand(model, plain: Transcoder, tokens, mask) -> torch.Tensor:
    """The splice with plain TransformerLens hooks: the output hook's activation becomes
    sae-lens' ``forward`` (skip term included) of the input hook's activation."""
    seen: dict[str, torch.Tensor] = {}

    def keep(act, hook):
        seen["x"] = act

    def replace(act, hook):
        return plain(seen["x"]).to(act.dtype)

    with torch.no_grad(), model.hooks(fwd_hooks=[(HOOK_IN, keep), (HOOK_OUT, replace)]):
        return model(tokens, attention_mask=mask)


@pytest.mark.parametrize("architecture", list(CLASSES))
def test_sae_lens_transcoder_loads_encodes_splices_and_measures_as_sae_lens(
        paper_experiment: Experiment, tmp_path: Path, architecture: str):
    plain = make_transcoder(paper_experiment, architecture)
    plain.save_model(tmp_path / "tc")
    nsae = load_run_sae(paper_experiment, tmp_path / "tc")  # the run's loader: hooks checked
    reloaded = SAE.load_from_disk(tmp_path / "tc")
    assert type(reloaded) is type(plain)
    assert nsae.is_transcoder and nsae.architecture == architecture
    assert (nsae.hook_name, nsae.hook_name_out, nsae.d_in, nsae.d_out) == (HOOK_IN, HOOK_OUT,
                                                                           32, 32)
    assert nsae.has_skip == ("skip" in architecture)
    assert "hook_name_out='blocks.0.hook_mlp_out'" in repr(nsae)

    source = paper_experiment.activations("test", HOOK_IN)
    target = paper_experiment.activations("test", HOOK_OUT)
    x, y = source.activations, target.activations
    with torch.no_grad():
        feats, want_feats = nsae.encode(x), plain.encode(x)
        want = plain(x)  # sae-lens' forward: decoder plus skip term
    torch.testing.assert_close(feats, want_feats, **TOL)
    assert 0 < float((feats != 0).float().sum(1).mean()) < D_SAE
    torch.testing.assert_close(nsae.reconstruct(x), want, **TOL)
    again = NormalizedSAE.load(nsae.save(tmp_path / "mechrec"))  # mechrec's own folder
    assert (again.hook_name, again.hook_name_out) == (HOOK_IN, HOOK_OUT)
    torch.testing.assert_close(again.reconstruct(x), want, **TOL)

    # reconstruction metrics: the prediction against the output hook's activations
    got = reconstruction_metrics(nsae, source, target=target, space="raw", batch_size=1000)
    err = (y.double() - want.double())
    ev = 1 - float(err.pow(2).sum()) / float((y.double() - y.double().mean(0)).pow(2).sum())
    assert got.n_rows == len(x)
    assert got.rmse == pytest.approx(float(err.pow(2).mean().sqrt()), rel=1e-5)
    assert got.explained_variance == pytest.approx(ev, rel=1e-5, abs=1e-6)
    assert got.l0 == pytest.approx(float((want_feats != 0).float().sum(1).mean()), rel=1e-6)
    assert reconstruction_on_test(paper_experiment, nsae).as_dict() == \
        reconstruction_metrics(nsae, source, target=target).as_dict()

    # the spliced forward pass: one pass, hooks at both points
    model = paper_experiment.model
    tokens, mask = next(paper_experiment.batches("test"))
    with torch.no_grad():
        clean = model(tokens, attention_mask=mask)
        with reconstruction_hooks(model, nsae):
            ours = model(tokens, attention_mask=mask)
        with reconstruction_hooks(model, nsae, "keep-error"):
            kept = model(tokens, attention_mask=mask)
    theirs = spliced_by_hand(model, plain, tokens, mask)
    torch.testing.assert_close(ours, theirs, **TOL)
    torch.testing.assert_close(kept, clean, **TOL)
    assert float((ours - clean).abs().max()) > 1e-3
    spliced = to_hooked_sae_transformer(model)  # sae-lens' own splice
    spliced.add_sae(reloaded)
    with torch.no_grad():
        theirs_lens = spliced(tokens, attention_mask=mask)
    if nsae.has_skip:  # HookedSAETransformer decodes without the skip connection's term
        assert float((theirs_lens - ours).abs().max()) > 1e-3
    else:
        torch.testing.assert_close(theirs_lens, ours, **TOL)
    print(f"{architecture}: explained variance {got.explained_variance:.4f}, rmse "
          f"{got.rmse:.4f}, L0 {got.l0:.1f}; splice max |logit diff| vs hand "
          f"{float((ours - theirs).abs().max()):.2e}, splice effect "
          f"{float((ours - clean).abs().max()):.3f}")


def test_transcoder_steering_and_splice_quality(paper_experiment: Experiment, tmp_path: Path):
    plain = make_transcoder(paper_experiment, "jumprelu_skip_transcoder")
    plain.save_model(tmp_path / "tc")
    nsae = NormalizedSAE.load(tmp_path / "tc")
    model = paper_experiment.model
    tokens, mask = next(paper_experiment.batches("test"))
    feature = int((nsae.encode(paper_experiment.activations("test", HOOK_IN).activations) > 0)
                  .float().mean(0).argmax())

    # adding to a feature with the error kept adds its decoder direction at the output hook
    def add_direction(act, hook):
        out = act.clone()
        out[:, -1] += 3.0 * plain.W_dec[feature]
        return out

    with torch.no_grad():
        with model.hooks(fwd_hooks=[(HOOK_OUT, add_direction)]):
            want = model(tokens, attention_mask=mask)
        with steer(model, HOOK_OUT, FeatureEdit(nsae, {feature: 3.0}, mode="add",
                                                keep_error=True), attention_mask=mask):
            got = model(tokens, attention_mask=mask)
    torch.testing.assert_close(got, want, **TOL)

    # setting a feature (replace): encoded at the input hook, written at the output hook;
    # the fast last-position path and a full forward pass agree with a hand computation
    def set_feature(store):
        def hook(act, hook):
            if hook.name == HOOK_IN:
                store["x"] = act
                return act
            f = plain.encode(store["x"][:, -1])
            f[:, feature] = 5.0
            out = act.clone()
            out[:, -1] = plain.decode(f) + store["x"][:, -1] @ plain.W_skip.T
            return out
        return hook

    hand = set_feature({})
    with torch.no_grad(), model.hooks(fwd_hooks=[(HOOK_IN, hand), (HOOK_OUT, hand)]):
        want_last = model(tokens, attention_mask=mask)[:, -1]
    edits = [None, FeatureEdit(nsae, {feature: 5.0})]
    fast = steered_last_logits(model, tokens, mask, HOOK_OUT, edits, method="fast")
    naive = steered_last_logits(model, tokens, mask, HOOK_OUT, edits, method="naive")
    torch.testing.assert_close(naive[1], want_last, **TOL)
    torch.testing.assert_close(fast, naive, **TOL)

    quality = splice_quality(paper_experiment, nsae)
    for key in ("loss_recovered_zero", "ndcg_recovered_zero", "kl"):
        assert quality[key] == quality[key]  # not NaN
    assert quality["kl"] >= 0
    print("jumprelu_skip_transcoder splice quality on ml-100k test users: " + ", ".join(
        f"{key} {quality[key]:.4f}" for key in ("loss_original", "loss_sae", "loss_zero",
                                                 "loss_recovered_zero", "ndcg_recovered_zero",
                                                 "loss_recovered_mean", "kl")))


def test_transcoder_bad_inputs(paper_experiment: Experiment, tmp_path: Path):
    model = paper_experiment.model
    plain = make_transcoder(paper_experiment, "transcoder", hook_out="blocks.0.hook_mlp_outt")
    plain.save_model(tmp_path / "typo")
    with pytest.raises(ValueError, match=r"writing hook 'blocks\.0\.hook_mlp_outt'.*"
                                         r"did you mean 'blocks\.0\.hook_mlp_out'.*"
                                         r"hook_name_out=") as info:
        load_run_sae(paper_experiment, tmp_path / "typo")
    print(info.value)
    # the fix the message names
    fixed = NormalizedSAE.load(tmp_path / "typo", hook_name_out=HOOK_OUT)
    check_sae_fits(model, fixed)

    wrong_width = NormalizedSAE.load(tmp_path / "typo", hook_name_out="blocks.0.mlp.hook_post")
    with pytest.raises(ValueError, match=r"width 32 at 'blocks\.0\.mlp\.hook_post'.*width 64"):
        check_sae_fits(model, wrong_width)

    plain.cfg.metadata.hook_name_out = None
    with pytest.raises(MissingHookNameError, match="hook_name_out="):
        NormalizedSAE.from_sae_lens(plain)
    with pytest.raises(ValueError, match="only transcoders have an output hook"):
        NormalizedSAE.from_sae_lens(plain_sae(), hook_name_out=HOOK_OUT)

    source = paper_experiment.activations("test", HOOK_IN)
    with pytest.raises(ValueError, match=r"pass target= the activations at 'blocks\.0\."
                                         r"hook_mlp_out'"):
        reconstruction_metrics(fixed, source)
    with pytest.raises(ValueError, match="has 10 rows but source has"):
        reconstruction_metrics(fixed, source,
                               target=paper_experiment.activations("test", HOOK_OUT).select(
                                   torch.arange(10)))
    with pytest.raises(ValueError, match="its splice needs a hook at both"):
        from mechrec.reconstruction import reconstruction_hook
        reconstruction_hook(fixed)
    with pytest.raises(ValueError, match="needs the rows at its input hook"):
        FeatureEdit(fixed, {0: 1.0}).apply(torch.zeros(3, 32))
    with pytest.raises(ValueError, match="transcoders are load-and-analyse only"):
        SAETrainingConfig(architecture="transcoder")


def plain_sae() -> SAE:
    from sae_lens import StandardSAE, StandardSAEConfig

    return StandardSAE(StandardSAEConfig(d_in=32, d_sae=8,
                                         metadata=SAEMetadata(hook_name=HOOK_IN)))


def test_transcoder_analysis_recipes_read_the_input_hook(paper_experiment: Experiment,
                                                         tmp_path: Path):
    """Alignment, top activations, feature pages and Table-1 rows of a transcoder: features
    come from the input hook, what it writes goes to the output hook."""
    from mechrec_recsys.alignment import align, feature_examples
    from mechrec_recsys.feature_pages import feature_dashboard
    from mechrec_recsys.saes import evaluate_sae

    from mechrec.output_effects import direct_effects

    plain = make_transcoder(paper_experiment, "jumprelu_transcoder")
    plain.save_model(tmp_path / "tc")
    nsae = NormalizedSAE.load(tmp_path / "tc")
    model = paper_experiment.model
    x = paper_experiment.activations("test", HOOK_IN).activations
    with torch.no_grad():
        feats = plain.encode(x)
    feature = int((feats > 0).float().mean(0).argmax())

    examples = feature_examples(paper_experiment, nsae, feature, part="test")
    assert float(examples["activation"].max()) == pytest.approx(float(feats[:, feature].max()),
                                                                rel=1e-5)
    page = feature_dashboard(paper_experiment, nsae, feature, part="test", k=3)
    assert page["hook_name"] == HOOK_IN
    assert page["frac_nonzero"] == pytest.approx(float((feats[:, feature] > 0).float().mean()),
                                                 rel=1e-6)
    with torch.no_grad():
        want = (plain.W_dec[feature] @ model.W_U).double().numpy()
    assert direct_effects(model, nsae, feature) == pytest.approx(want, rel=1e-5, abs=1e-6)

    run = align(paper_experiment, nsae, decades=False)
    rate = run.stats["SAE"]["score"].feature_active_rate
    assert rate == pytest.approx((feats > 0).double().mean(0).numpy(), abs=1e-9)

    rows = evaluate_sae(paper_experiment, nsae, modes=("replace", "keep-error"))
    recon = reconstruction_metrics(nsae, paper_experiment.activations("test", HOOK_IN),
                                   target=paper_experiment.activations("test", HOOK_OUT))
    assert rows[1]["explained_variance"] == recon.explained_variance
    assert rows[2]["identical_top_k"]  # keep-error without edits is the original model
    print(f"jumprelu_transcoder Table-1 rows: original NDCG {rows[0]['ndcg']:.4f}, replace "
          f"NDCG {rows[1]['ndcg']:.4f} (explained variance {recon.explained_variance:.4f})")


def test_transcoder_on_the_command_line(paper_run_dir: Path, paper_experiment: Experiment,
                                        data_dir: Path, tmp_path: Path):
    """``mechrec sae eval`` / ``sae quality`` take a sae-lens transcoder folder; training one
    and a transcoder writing a hook the model lacks are one-line errors."""
    import json

    from cli_checks import assert_one_line_error, run_cli

    data = ["--data-dir", str(data_dir / "ml-100k"), "--no-download"]
    make_transcoder(paper_experiment, "skip_transcoder").save_model(tmp_path / "tc")
    nsae = NormalizedSAE.load(tmp_path / "tc")
    result = run_cli("sae", "eval", paper_run_dir, tmp_path / "tc", "--out",
                     tmp_path / "eval.json", *data)
    assert result.exit_code == 0, result.output
    assert f"{HOOK_IN} -> {HOOK_OUT}" in " ".join(result.output.split())
    rows = json.loads((tmp_path / "eval.json").read_text())["rows"]
    assert rows[1]["explained_variance"] == pytest.approx(
        reconstruction_on_test(paper_experiment, nsae).explained_variance, rel=1e-9)
    result = run_cli("sae", "quality", paper_run_dir, tmp_path / "tc", "--out",
                     tmp_path / "quality", *data)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "quality" / "quality.json").read_text())["kl"] >= 0

    make_transcoder(paper_experiment, "transcoder",
                    hook_out="blocks.0.hook_mlp_outt").save_model(tmp_path / "typo")
    assert_one_line_error(run_cli("sae", "eval", paper_run_dir, tmp_path / "typo", *data),
                          "hook_name_out=")
    assert_one_line_error(run_cli("sae", "train", paper_run_dir, "--architecture",
                                  "transcoder", "--steps", "10", "--no-progress", *data),
                          "load-and-analyse only")


def test_transcoder_with_input_and_output_normalisers(paper_experiment: Experiment,
                                                      tmp_path: Path):
    """With per-dimension normalisers, a transcoder computes exactly sae-lens' forward seen
    through them; metrics in normalised space use the output normaliser; it is not saved."""
    from mechrec.normalization import Normalizer

    plain = make_transcoder(paper_experiment, "jumprelu_skip_transcoder")
    source = paper_experiment.activations("test", HOOK_IN)
    target = paper_experiment.activations("test", HOOK_OUT)
    x, y = source.activations, target.activations
    norm_in, norm_out = Normalizer.fit(x), Normalizer.fit(y)
    nsae = NormalizedSAE(plain, norm_in, output_normalizer=norm_out)
    with torch.no_grad():
        z = (x - norm_in.mean) / norm_in.std
        want = plain(z) * norm_out.std + norm_out.mean
        torch.testing.assert_close(nsae.encode(x), plain.encode(z), **TOL)
        torch.testing.assert_close(nsae.reconstruct(x), want, **TOL)
        torch.testing.assert_close(nsae.decoder_directions(), plain.W_dec * norm_out.std,
                                   **TOL)
        err = ((y - norm_out.mean) / norm_out.std - plain(z)).double()
    got = reconstruction_metrics(nsae, source, target=target)
    assert got.rmse == pytest.approx(float(err.pow(2).mean().sqrt()), rel=1e-5)
    with pytest.raises(ValueError, match="identity normalisers"):
        nsae.save(tmp_path / "tc")
    with pytest.raises(ValueError, match="output normaliser has 64 dimensions"):
        NormalizedSAE(plain, norm_in, output_normalizer=Normalizer.identity(64))


def test_equalizer_steers_a_transcoder_at_its_output_hook(paper_experiment: Experiment,
                                                          tmp_path: Path):
    """The equalizer's sliders on a transcoder: features chosen from the input hook, the
    feature's decoder direction added at the output hook (the session's cached fast path
    equals the core's naive forward pass with the same edit)."""
    from mechrec_recsys.equalizer import EqualizerSession

    make_transcoder(paper_experiment, "transcoder").save_model(tmp_path / "tc")
    nsae = NormalizedSAE.load(tmp_path / "tc")
    session = EqualizerSession(paper_experiment, nsae, genres=["Comedy", "Horror"])
    assert session.equalizer.hook_name == HOOK_OUT
    controls = session.equalizer.controls
    values = {"Comedy": 4.0, "Horror": -2.0}
    user = paper_experiment.part("test").users[3].item()
    history = paper_experiment.part("test").sequences[3]
    window = torch.as_tensor(history[-paper_experiment.model.cfg.n_ctx:])[None, :]
    for method in ("sae", "probe"):
        edits = session.equalizer.edits(values, method)
        want = steered_last_logits(paper_experiment.model, window, None, HOOK_OUT, [edits],
                                   method="naive")[0]
        _, steered = session.scores(user, values, method=method)
        torch.testing.assert_close(steered.reshape(want.shape), want, **TOL)
    direction = sum(v * nsae.sae.W_dec[controls[g].feature] for g, v in values.items())

    def add(act, hook):
        out = act.clone()
        out[:, -1] += direction
        return out

    with torch.no_grad(), paper_experiment.model.hooks(fwd_hooks=[(HOOK_OUT, add)]):
        hand = paper_experiment.model(window)[:, -1]
    _, steered = session.scores(user, values, method="sae")
    torch.testing.assert_close(steered.reshape(hand.shape), hand, **TOL)
