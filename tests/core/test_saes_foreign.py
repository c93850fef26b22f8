"""Bring your own SAE: plain sae-lens SAEs and other libraries' checkpoints, wrapped."""

from __future__ import annotations

import json

import pytest
import sae_lens
import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata
from safetensors.torch import load_file as sae_lens_load
from safetensors.torch import save_file

from mechrec.activations import ActivationSet
from mechrec.normalization import Normalizer
from mechrec.saes import (
    MissingHookNameError,
    NormalizedSAE,
    SAETrainingConfig,
    detect_format,
    load_foreign_sae,
    train_sae,
)

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


@pytest.mark.filterwarnings("ignore:the SAE in .* has no activation_scaler.json")
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


def test_plain_sae_lens_folder_says_how_it_was_read(tmp_path):
    _random_sae("standard", "none").save_model(tmp_path / "plain")
    nsae = NormalizedSAE.load(tmp_path / "plain")
    note = nsae.provenance["converted_from"]
    assert note["format"] == "sae_lens" and "identity normaliser" in note["note"]
    # a mechrec folder given to from_sae_lens keeps its normaliser (and its hash check)
    gen = torch.Generator().manual_seed(3)
    norm = Normalizer.fit(torch.randn(200, D_IN, generator=gen) * 2 + 1)
    NormalizedSAE(_random_sae("standard", "none"), norm).save(tmp_path / "ours")
    ours = NormalizedSAE.from_sae_lens(tmp_path / "ours")
    assert ours.normalizer.mode == norm.mode != "none"
    torch.testing.assert_close(ours.normalizer.std, norm.std)


def test_mechrec_folder_without_its_normaliser_is_still_refused(tmp_path):
    gen = torch.Generator().manual_seed(3)
    norm = Normalizer.fit(torch.randn(200, D_IN, generator=gen) * 2 + 1)
    NormalizedSAE(_random_sae("standard", "none"), norm).save(tmp_path / "sae")
    (tmp_path / "sae" / "normalizer.safetensors").unlink()
    with pytest.raises((FileNotFoundError, ValueError), match=r"normalizer\.safetensors"):
        NormalizedSAE.load(tmp_path / "sae")


# ------------------------------------------------------------ other libraries' checkpoints
def _linear_state(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"encoder.weight": torch.randn(D_SAE, D_IN, generator=gen) * 0.3,
            "encoder.bias": torch.randn(D_SAE, generator=gen) * 0.3,
            "decoder.weight": torch.randn(D_IN, D_SAE, generator=gen) * 0.3,
            "b": torch.randn(D_IN, generator=gen)}


def _topk(pre: torch.Tensor, k: int) -> torch.Tensor:
    post = pre.relu()
    top = post.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(post).scatter_(-1, top.indices, top.values)


def _write_dictionary_learning(directory, dict_class: str, *, k: int = 6,
                               threshold: float = 0.4, config: bool = True):
    """A checkpoint laid out as dictionary_learning saves one, and its forward in torch."""
    s = _linear_state(5)
    enc_w, enc_b, dec_w, b = s["encoder.weight"], s["encoder.bias"], s["decoder.weight"], s["b"]
    if dict_class in ("JumpReluAutoEncoder", "MatryoshkaBatchTopKSAE"):
        # nn.Parameter W_enc (d_in, d_sae) / W_dec (d_sae, d_in), no nn.Linear
        state = {"W_enc": enc_w.T.contiguous(), "b_enc": enc_b,
                 "W_dec": dec_w.T.contiguous(), "b_dec": b}
    else:
        state = {"encoder.weight": enc_w, "encoder.bias": enc_b, "decoder.weight": dec_w}
    if dict_class == "AutoEncoder":
        state["bias"] = b

        def encode(x):
            return torch.relu((x - b) @ enc_w.T + enc_b)
    elif dict_class == "JumpReluAutoEncoder":
        gen = torch.Generator().manual_seed(9)
        thresholds = torch.rand(D_SAE, generator=gen) * 0.6 - 0.1  # some below 0
        state["threshold"] = thresholds

        def encode(x):  # no b_dec subtracted from the input
            pre = x @ enc_w.T + enc_b
            return torch.relu(pre * (pre > thresholds))
    else:
        state.update(b_dec=b, k=torch.tensor(k, dtype=torch.int),
                     threshold=torch.tensor(threshold))
        if dict_class == "MatryoshkaBatchTopKSAE":
            state["group_sizes"] = torch.tensor([8, 12, D_SAE - 20])

        def encode(x):
            post = torch.relu((x - b) @ enc_w.T + enc_b)
            if dict_class in ("BatchTopKSAE", "MatryoshkaBatchTopKSAE"):
                return post * (post > threshold)  # inference: the learnt threshold
            return _topk(post, k)
    directory.mkdir(parents=True)
    torch.save(state, directory / "ae.pt")
    if config:
        (directory / "config.json").write_text(json.dumps(
            {"trainer": {"dict_class": dict_class, "activation_dim": D_IN, "dict_size": D_SAE,
                         "layer": 0, "submodule_name": "resid_post_layer_0"}}))
    return encode, lambda f: f @ dec_w.T + b


def _write_sparsify(directory, *, k: int = 6, **cfg_overrides):
    s = _linear_state(7)
    enc_w, enc_b, b_dec = s["encoder.weight"], s["encoder.bias"], s["b"]
    w_dec = s["decoder.weight"].T.contiguous()
    directory.mkdir(parents=True)
    save_file({"encoder.weight": enc_w, "encoder.bias": enc_b, "W_dec": w_dec, "b_dec": b_dec},
              str(directory / "sae.safetensors"))
    cfg = {"activation": "topk", "expansion_factor": 32, "normalize_decoder": True,
           "num_latents": D_SAE, "k": k, "multi_topk": False, "skip_connection": False,
           "transcode": False, "d_in": D_IN, **cfg_overrides}
    (directory / "cfg.json").write_text(json.dumps(cfg))

    def encode(x):  # relu(linear) -> top k -> sum of the chosen decoder rows
        return _topk(torch.relu((x - b_dec) @ enc_w.T + enc_b), k)
    return encode, lambda f: f @ w_dec + b_dec


def _max_differences(nsae: NormalizedSAE, encode, decode) -> tuple[float, float]:
    x = _raw(11)
    with torch.no_grad():
        feats = nsae.encode(x)
        ref = encode(x)
        assert (ref != 0).any() and (ref == 0).any()
        return (float((feats - ref).abs().max()),
                float((nsae.reconstruct(x) - decode(ref)).abs().max()))


@pytest.mark.parametrize(("dict_class", "threshold", "architecture"), [
    ("AutoEncoder", 0.4, "standard"), ("AutoEncoderTopK", 0.4, "topk"),
    ("BatchTopKSAE", 0.4, "jumprelu"), ("MatryoshkaBatchTopKSAE", 0.4, "jumprelu"),
    ("MatryoshkaBatchTopKSAE", -1.0, "jumprelu"),  # the untrained threshold buffer
    ("JumpReluAutoEncoder", 0.0, "jumprelu")])
def test_dictionary_learning_checkpoint_equals_its_forward(tmp_path, dict_class, threshold,
                                                           architecture):
    encode, decode = _write_dictionary_learning(tmp_path / "dl", dict_class,
                                                threshold=threshold)
    for path in (tmp_path / "dl", tmp_path / "dl" / "ae.pt"):
        assert detect_format(path) == "dictionary_learning"
        nsae = load_foreign_sae(path, hook_name=HOOK)
        assert nsae.architecture == architecture
        assert nsae.hook_name == HOOK and (nsae.d_in, nsae.d_sae) == (D_IN, D_SAE)
        assert nsae.provenance["converted_from"]["class"] == dict_class
        features, recon = _max_differences(nsae, encode, decode)
        assert features < 1e-5 and recon < 1e-5, (features, recon)
    # NormalizedSAE.load opens it too (folder or ae.pt), and guesses the class from the keys
    # where they say it unambiguously
    (tmp_path / "dl" / "config.json").rename(tmp_path / "config.json.away")
    if dict_class in ("AutoEncoderTopK", "BatchTopKSAE"):
        with pytest.raises(ValueError, match=r"put the config\.json"):
            NormalizedSAE.load(tmp_path / "dl", hook_name=HOOK)
    else:
        for path in (tmp_path / "dl", tmp_path / "dl" / "ae.pt"):
            loaded = NormalizedSAE.load(path, hook_name=HOOK)
            assert loaded.provenance["converted_from"]["class"] == dict_class
            assert max(_max_differences(loaded, encode, decode)) < 1e-5
    # saved by mechrec, it is a plain sae-lens SAE computing the same function
    nsae.save(tmp_path / "saved")
    again = SAE.load_from_disk(tmp_path / "saved")
    x = _raw(12)
    with torch.no_grad():
        torch.testing.assert_close(again.encode(x), encode(x), atol=1e-5, rtol=0)


def test_sparsify_checkpoint_equals_its_forward(tmp_path):
    encode, decode = _write_sparsify(tmp_path / "layers.0")
    assert detect_format(tmp_path / "layers.0") == "sparsify"
    for nsae in (load_foreign_sae(tmp_path / "layers.0", hook_name=HOOK),
                 NormalizedSAE.load(tmp_path / "layers.0", hook_name=HOOK)):
        assert nsae.architecture == "topk" and nsae.normalizer.mode == "none"
        features, recon = _max_differences(nsae, encode, decode)
        assert features < 1e-5 and recon < 1e-5, (features, recon)
    with pytest.raises(ValueError, match="without a normalizer"):
        NormalizedSAE.load(tmp_path / "layers.0", hook_name=HOOK,
                           normalizer=Normalizer.identity(D_IN))
    # sparsify writes bfloat16 weights too: read as float32
    bf16 = tmp_path / "elsewhere" / "bf16"
    bf16.mkdir(parents=True)
    (bf16 / "cfg.json").write_text((tmp_path / "layers.0" / "cfg.json").read_text())
    weights = sae_lens_load(tmp_path / "layers.0" / "sae.safetensors")
    save_file({k: v.to(torch.bfloat16) for k, v in weights.items()}, str(bf16 / "sae.safetensors"))
    assert load_foreign_sae(bf16, hook_name=HOOK).sae.W_enc.dtype == torch.float32
    # the run folder holding one folder per hook: the error says which to pass
    with pytest.raises(ValueError, match=r"holds SAE folders \(layers\.0\)"):
        load_foreign_sae(tmp_path, hook_name=HOOK)


def test_foreign_checkpoint_errors(tmp_path):
    _write_sparsify(tmp_path / "sp")
    with pytest.raises(MissingHookNameError, match="does not name a TransformerLens hook"):
        load_foreign_sae(tmp_path / "sp")
    with pytest.raises(MissingHookNameError):
        NormalizedSAE.load(tmp_path / "sp")
    _write_sparsify(tmp_path / "run" / "layers.3")
    with pytest.raises(MissingHookNameError, match=r"hook_name='blocks\.3\.hook_resid_post'"):
        NormalizedSAE.load(tmp_path / "run" / "layers.3")
    _write_dictionary_learning(tmp_path / "dl", "AutoEncoder")
    with pytest.raises(MissingHookNameError, match=r"says layer 0, resid_post_layer_0"):
        NormalizedSAE.load(tmp_path / "dl" / "ae.pt")
    # broken folders: what is missing, what was found, what else mechrec reads
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "cfg.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"sae_weights\.safetensors is missing.*found: "
                       r"cfg\.json.*sparsify"):
        NormalizedSAE.load(tmp_path / "half")
    with pytest.raises(FileNotFoundError, match="is a file, not an SAE folder"):
        NormalizedSAE.load(tmp_path / "half" / "cfg.json")
    _write_sparsify(tmp_path / "tc", transcode=True)
    with pytest.raises(ValueError, match=r"'transcode': True.*plain TopK"):
        load_foreign_sae(tmp_path / "tc", hook_name=HOOK)
    _write_dictionary_learning(tmp_path / "topk", "AutoEncoderTopK", config=False)
    with pytest.raises(ValueError, match=r"put the config\.json"):
        load_foreign_sae(tmp_path / "topk", hook_name=HOOK)
    (tmp_path / "odd").mkdir()
    torch.save({"encoder.weight": torch.zeros(4, 3), "W": torch.zeros(3)},
               tmp_path / "odd" / "ae.pt")
    with pytest.raises(ValueError, match=r"has tensors \['W', 'encoder.weight'\].*expected"):
        load_foreign_sae(tmp_path / "odd", hook_name=HOOK)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"found: nothing.*expected one of"):
        load_foreign_sae(tmp_path / "empty", hook_name=HOOK)
    with pytest.raises(ValueError, match="unknown SAE checkpoint format"):
        load_foreign_sae(tmp_path / "sp", format="saelens")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_foreign_sae(tmp_path / "nowhere")
    # a plain sae-lens folder goes through too
    _random_sae("topk", "none").save_model(tmp_path / "lens")
    assert load_foreign_sae(tmp_path / "lens").architecture == "topk"


# ------------------------------------------------------------ sae-lens' architecture registry
def test_registry_architectures_and_their_options():
    from mechrec.saes.registry import registered_architectures

    assert {"standard", "topk", "batchtopk", "jumprelu", "gated"} <= set(
        registered_architectures())
    with pytest.raises(ValueError, match=r"unknown SAE architecture 'relu'.*sae-lens registers"):
        SAETrainingConfig(architecture="relu")
    with pytest.raises(ValueError, match=r"unknown architecture_options \['widths'\].*valid "
                                         r"options: .*aux_loss_coefficient"):
        SAETrainingConfig(architecture="topk", architecture_options={"widths": [4]})
    with pytest.raises(ValueError, match=r"\['d_in'\] are set by mechrec"):
        SAETrainingConfig(architecture="topk", architecture_options={"d_in": 4})
    # mechrec's own names keep their defaults and their identity (no new key in to_dict)
    assert "architecture_options" not in SAETrainingConfig().to_dict()
    topk = SAETrainingConfig(architecture="topk",
                             architecture_options={"aux_loss_coefficient": 0.5})
    assert SAETrainingConfig.from_dict(topk.to_dict()) == topk


@pytest.mark.skipif(not hasattr(sae_lens, "MatryoshkaBatchTopKTrainingSAE"),
                    reason="this sae-lens has no Matryoshka BatchTopK SAE")
def test_matryoshka_batchtopk_trains_saves_and_loads_in_plain_sae_lens(tmp_path):
    gen = torch.Generator().manual_seed(0)
    acts = ActivationSet.from_tensor(torch.randn(1000, D_IN, generator=gen) * 2 + 1, HOOK)
    config = SAETrainingConfig(architecture="matryoshka_batchtopk", d_sae=48, k=6, steps=60,
                               batch_size=64,
                               architecture_options={"matryoshka_widths": [12, 24, 48]})
    assert config.sparsity_parameter == ("k", 6)
    assert config.to_dict()["architecture_options"] == {"matryoshka_widths": [12, 24, 48]}
    result = train_sae(acts, config, log_every=20)
    last = result.history[-1]
    assert "inner_mse_loss_12" in last and "inner_mse_loss_24" in last  # sae-lens' own step
    assert last["l0"] == pytest.approx(6.0)
    nsae = result.sae
    assert nsae.architecture == "jumprelu" and nsae.normalizer.mode == "per_dim"
    nsae.save(tmp_path / "m")  # normaliser folded: a plain sae-lens JumpReLU on raw inputs
    plain = SAE.load_from_disk(tmp_path / "m")
    x = _raw(21)
    with torch.no_grad():
        torch.testing.assert_close(plain.encode(x), nsae.encode(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(plain.decode(plain.encode(x)), nsae.reconstruct(x),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(NormalizedSAE.load(tmp_path / "m").encode(x),
                                   nsae.encode(x), atol=1e-5, rtol=0)
    # a required option missing: sae-lens' refusal, with the valid options
    with pytest.raises(ValueError, match=r"refuses these settings.*matryoshka_widths"):
        train_sae(acts, config.with_overrides(architecture_options={}))


def test_registry_sae_that_cannot_take_a_folded_normaliser_warns_before_training(tmp_path):
    acts = ActivationSet.from_tensor(torch.randn(300, D_IN), HOOK)
    config = SAETrainingConfig(architecture="abstopk", d_sae=32, k=4, steps=5, batch_size=32,
                               lr_warm_up_steps=0)
    with pytest.warns(UserWarning, match="save\\(\\) will refuse it"):
        nsae = train_sae(acts, config).sae
    with pytest.raises(ValueError, match="normalization='none'"):
        nsae.save(tmp_path / "a")
    raw = train_sae(acts, config.with_overrides(normalization="none")).sae
    raw.save(tmp_path / "b")
    assert NormalizedSAE.load(tmp_path / "b").architecture == "abstopk"


#: Options some registry architectures require; the rest train with mechrec's shared fields.
_REQUIRED_OPTIONS = {"matryoshka_batchtopk": {"matryoshka_widths": [8, 32]}}
#: Inference architectures a non-identity normaliser cannot be folded into.
_RAW_ONLY = {"abstopk", "matching_pursuit"}


def _registry() -> list[str]:
    from mechrec.saes.registry import registered_architectures

    return list(registered_architectures())


@pytest.mark.parametrize("architecture", _registry())
def test_every_registry_architecture_trains_saves_and_loads_in_plain_sae_lens(
        tmp_path, architecture):
    gen = torch.Generator().manual_seed(4)
    acts = ActivationSet.from_tensor(torch.randn(600, D_IN, generator=gen) * 2 + 0.5, HOOK)
    config = SAETrainingConfig(
        architecture=architecture, d_sae=32, steps=20, batch_size=64, lr_warm_up_steps=0,
        normalization="none" if architecture in _RAW_ONLY else "per_dim",
        architecture_options=_REQUIRED_OPTIONS.get(architecture, {}))
    nsae = train_sae(acts, config).sae
    nsae.save(tmp_path / "s")
    plain = SAE.load_from_disk(tmp_path / "s")
    x = _raw(22)
    with torch.no_grad():
        torch.testing.assert_close(plain.encode(x), nsae.encode(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(NormalizedSAE.load(tmp_path / "s").reconstruct(x),
                                   nsae.reconstruct(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("normalize", ["expected_average_only_in", "covariance_whitening"])
def test_sae_lens_training_checkpoint_scaling_is_folded_in(tmp_path, normalize):
    """sae-lens' trainer scales (or whitens) the activations outside the SAE and keeps the
    statistics in activation_scaler.json until it folds them in at the end; a checkpoint
    folder read by mechrec gets them folded in, so it reads raw activations."""
    from sae_lens.training.activation_scaler import ActivationScaler, ActivationWhitening

    sae = _random_sae("standard", normalize)
    x = _raw(30)
    gen = torch.Generator().manual_seed(8)
    if normalize == "expected_average_only_in":
        scaler = ActivationScaler(scaling_factor=0.37)
    else:
        q, _ = torch.linalg.qr(torch.randn(D_IN, D_IN, generator=gen))
        scales = torch.rand(D_IN, generator=gen) + 0.5
        matrix = q * scales
        scaler = ActivationScaler(whitening=ActivationWhitening(
            mean=torch.randn(D_IN, generator=gen), matrix=matrix,
            inverse_matrix=torch.linalg.inv(matrix)))
    with torch.no_grad():
        feats = sae.encode(scaler.scale(x))
        recon = scaler.unscale(sae.decode(feats))
    sae.save_model(tmp_path / "ckpt")
    with pytest.warns(UserWarning, match="has no activation_scaler.json"):
        as_given = NormalizedSAE.load(tmp_path / "ckpt")
    with torch.no_grad():
        torch.testing.assert_close(as_given.encode(x), sae.encode(x), atol=1e-5, rtol=0)
    scaler.save(str(tmp_path / "ckpt" / "activation_scaler.json"))
    nsae = NormalizedSAE.load(tmp_path / "ckpt")
    assert nsae.provenance["converted_from"]["activation_scaler"].startswith("folded")
    with torch.no_grad():
        torch.testing.assert_close(nsae.encode(x), feats, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(nsae.reconstruct(x), recon, atol=1e-4, rtol=1e-4)
    # saved by mechrec: a plain sae-lens SAE on raw activations
    nsae.save(tmp_path / "resaved")
    with torch.no_grad():
        torch.testing.assert_close(SAE.load_from_disk(tmp_path / "resaved").encode(x), feats,
                                   atol=1e-4, rtol=1e-4)
