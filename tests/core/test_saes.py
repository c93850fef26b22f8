"""SAE config, training of all five architectures through sae-lens, save/load, sweeps."""

from __future__ import annotations

import json

import pytest
import torch
from sae_asserts import assert_same_features
from sae_lens import SAE, StandardSAE, StandardSAEConfig
from tiny_model import make_token_batches

from mechrec.activations import ActivationSet, collect_activations, fit_normalizer
from mechrec.normalization import NORMALIZER_FILENAME, Normalizer
from mechrec.saes import (
    ARCHITECTURES,
    NormalizedSAE,
    SAETrainingConfig,
    grid,
    norm_reconstruction_loss,
    summarize_sweep,
    sweep_saes,
    train_sae,
)
from mechrec.saes import sweeps as sweeps_module

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def acts(tiny_model):
    """~900 rows of d=16 activations from the tiny non-recommender model."""
    return collect_activations(tiny_model, make_token_batches(n_batches=12, seed=1), HOOK)


def tiny_config(**overrides) -> SAETrainingConfig:
    """A config that trains in well under a second."""
    base = dict(
        d_sae=48,
        k=6,
        target_l0=6,
        steps=120,
        batch_size=64,
        lr_warm_up_steps=10,
        dead_feature_window=20,
        resample_dead_every=40,
    )
    base.update(overrides)
    return SAETrainingConfig(**base)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_architecture_trains_saves_and_loads_in_sae_lens(acts, tmp_path, architecture):
    result = train_sae(acts, tiny_config(architecture=architecture), log_every=40)
    nsae = result.sae
    assert (nsae.hook_name, nsae.d_in, nsae.d_sae) == (HOOK, 16, 48)
    assert [r["step"] for r in result.history] == [40, 80, 120]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in result.history)
    assert 0.0 <= result.dead_fraction_train <= 1.0 and result.rows_per_second > 0
    # decoder rows have unit norm: features are in unit-decoder units
    torch.testing.assert_close(nsae.sae.W_dec.norm(dim=1), torch.ones(48), atol=1e-5, rtol=0)
    x = acts.activations[:200]
    feats = nsae.encode(x)
    assert feats.shape == (200, 48) and (feats >= 0).all()
    recon = nsae.reconstruct(x)
    assert recon.shape == x.shape

    directory = nsae.save(tmp_path / architecture)
    assert {p.name for p in directory.iterdir()} == {
        "cfg.json",
        "sae_weights.safetensors",
        NORMALIZER_FILENAME,
        "mechrec.json",
        "mechrec.sae.json",
    }
    cfg = json.loads((directory / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == HOOK
    # plain sae-lens loads it (the normaliser folded in) and gives the same feature
    # activations and reconstructions on raw activations (float rounding apart)
    plain = SAE.load_from_disk(directory)
    with torch.no_grad():
        assert_same_features(plain.encode(x), feats)
        torch.testing.assert_close(plain.decode(plain.encode(x)), recon, rtol=1e-5, atol=1e-5)
    # and our loader returns a ready SAE with its normaliser (the fold undone)
    again = NormalizedSAE.load(directory)
    assert_same_features(again.encode(x), feats)
    torch.testing.assert_close(again.reconstruct(x), recon)
    assert again.normalizer.mode == "per_dim"
    assert again.provenance["training_config"]["architecture"] == architecture


def test_training_reduces_error_and_is_seeded(acts):
    cfg = tiny_config(l1_coefficient=0.05, steps=200)
    a = train_sae(acts, cfg, log_every=20)
    b = train_sae(acts, cfg, log_every=20)
    assert a.history[-1]["mse_loss"] < 0.5 * a.history[0]["mse_loss"]
    assert torch.equal(a.sae.sae.W_enc, b.sae.sae.W_enc)
    c = train_sae(acts, cfg.with_overrides(seed=1), log_every=20)
    assert not torch.equal(a.sae.sae.W_enc, c.sae.sae.W_enc)


def test_l1_weight_controls_sparsity(acts):
    l0 = {}
    for l1 in (0.01, 1.0):
        nsae = train_sae(acts, tiny_config(l1_coefficient=l1, steps=200)).sae
        l0[l1] = (nsae.encode(acts.activations) != 0).float().sum(-1).mean().item()
    assert l0[1.0] < 0.5 * l0[0.01]


def test_norm_reconstruction_loss_is_the_error_norm():
    preds = torch.randn(5, 7, requires_grad=True)
    target = torch.randn(5, 7)
    loss = norm_reconstruction_loss(preds, target).sum(-1).mean()
    err = preds - target
    torch.testing.assert_close(loss, err.norm(dim=-1).mean())
    loss.backward()
    torch.testing.assert_close(preds.grad, (err / err.norm(dim=-1, keepdim=True)).detach() / 5)


def test_resampling_revives_dead_features(acts):
    # a huge L1 weight kills most features; resampling brings them back during training
    cfg = tiny_config(l1_coefficient=3.0, steps=160, resample_dead_every=40, resample_until=1.0)
    with_resampling = train_sae(acts, cfg)
    without = train_sae(acts, cfg.with_overrides(resample_dead_every=None))
    assert with_resampling.n_resampled > 0 and without.n_resampled == 0
    assert with_resampling.dead_fraction_train < without.dead_fraction_train


def test_config_validation():
    with pytest.raises(ValueError, match="unknown SAE architecture 'relu'"):
        SAETrainingConfig(architecture="relu")
    with pytest.raises(ValueError, match="k must be in"):
        SAETrainingConfig(architecture="topk", k=0, d_sae=8)
    with pytest.raises(ValueError, match="reconstruction_loss"):
        SAETrainingConfig(reconstruction_loss="mse")
    with pytest.raises(ValueError, match="exceed steps"):
        SAETrainingConfig(steps=10, lr_warm_up_steps=20)
    with pytest.raises(ValueError, match=r"unknown SAE config keys \['l1'\]"):
        SAETrainingConfig().with_overrides(l1=0.1)
    with pytest.raises(ValueError, match="resample_dead_every must be"):
        SAETrainingConfig(resample_dead_every="sometimes")
    cfg = SAETrainingConfig(architecture="jumprelu", target_l0=10)
    assert cfg.sparsity_parameter == ("target_l0", 10)
    # "auto" resamples TopK only (what the MovieLens measurements support)
    assert cfg.resample_interval is None
    assert SAETrainingConfig(architecture="topk").resample_interval == 500
    assert SAETrainingConfig(resample_dead_every=40).resample_interval == 40
    assert SAETrainingConfig.from_dict(cfg.to_dict()) == cfg


def test_bad_training_input(acts):
    empty = ActivationSet.from_tensor(torch.zeros(0, 16), HOOK)
    with pytest.raises(ValueError, match="is empty"):
        train_sae(empty, tiny_config())
    with pytest.raises(ValueError, match="normaliser has 8 dimensions"):
        train_sae(acts, tiny_config(), normalizer=Normalizer.identity(8))
    bad = torch.randn(50, 16)
    bad[7, 3] = float("inf")
    with pytest.raises(ValueError, match="infinite"):
        train_sae(
            ActivationSet(
                HOOK,
                bad,
                torch.arange(50),
                torch.zeros(50, dtype=torch.long),
                torch.zeros(50, dtype=torch.long),
            ),
            tiny_config(),
        )


def _plain_sae(d_in: int = 16, hook: str | None = HOOK) -> StandardSAE:
    cfg = StandardSAEConfig(d_in=d_in, d_sae=32)
    if hook:
        cfg.metadata.hook_name = hook
    return StandardSAE(cfg)


def test_normalized_sae_errors(tmp_path):
    with pytest.raises(ValueError, match="normaliser has 8 dimensions but the SAE's d_in is 16"):
        NormalizedSAE(_plain_sae(), Normalizer.identity(8))
    with pytest.raises(ValueError, match="no hook name"):
        NormalizedSAE(_plain_sae(hook=None), Normalizer.identity(16))
    nsae = NormalizedSAE(_plain_sae(), Normalizer.identity(16))
    with pytest.raises(ValueError, match="last dimension 12 but this SAE expects 16"):
        nsae.encode(torch.zeros(3, 12))
    # a plain sae-lens save has no normaliser: it reads raw activations as it is
    nsae.sae.save_model(tmp_path / "plain")
    assert NormalizedSAE.load(tmp_path / "plain").normalizer.mode == "none"
    # a mechrec folder that lost its normaliser: a clear error, and the way out
    NormalizedSAE(_plain_sae(), Normalizer.identity(16), provenance={"by": "mechrec"}).save(
        tmp_path / "lost")
    (tmp_path / "lost" / "normalizer.safetensors").unlink()
    (tmp_path / "lost" / "mechrec.sae.json").unlink()  # no hash record: the file check speaks
    with pytest.raises(FileNotFoundError, match=r"normalizer\.safetensors is missing") as err:
        NormalizedSAE.load(tmp_path / "lost")
    assert "Normalizer.identity(d_in)" in str(err.value)
    loaded = NormalizedSAE.load(
        tmp_path / "plain", normalizer=Normalizer.identity(16), hook_name="blocks.1.hook_resid_post"
    )
    assert loaded.hook_name == "blocks.1.hook_resid_post"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        NormalizedSAE.load(tmp_path / "nowhere")
    (tmp_path / "junk").mkdir()
    with pytest.raises(FileNotFoundError, match=r"cfg\.json is missing"):
        NormalizedSAE.load(tmp_path / "junk")


def test_save_replaces_atomically(tmp_path):
    nsae = NormalizedSAE(_plain_sae(), Normalizer.identity(16))
    nsae.save(tmp_path / "sae")
    (tmp_path / "sae" / "stale.txt").write_text("old")
    nsae.save(tmp_path / "sae")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae"]
    assert not (tmp_path / "sae" / "stale.txt").exists()


def test_decoder_directions_are_raw_space_effects():
    x = torch.randn(100, 16) * 3 + 1
    nsae = NormalizedSAE(_plain_sae(), Normalizer.fit(x))
    feats = torch.zeros(1, 32)
    bumped = feats.clone()
    bumped[0, 5] = 1.0
    delta = nsae.decode(bumped) - nsae.decode(feats)
    torch.testing.assert_close(delta[0], nsae.decoder_directions()[5], atol=1e-5, rtol=1e-5)


def test_sweep_over_values_and_seeds_resumes(acts, tmp_path, monkeypatch):
    base = tiny_config(steps=60)
    points = grid(l1_coefficient=[0.05, 0.5])
    seen = []
    rows = sweep_saes(
        acts,
        base,
        points,
        seeds=[0, 1],
        out_dir=tmp_path,
        evaluate=lambda nsae: {"d_sae_seen": nsae.d_sae},
        progress=seen.append,
    )
    assert len(rows) == len(seen) == 4
    assert [(r["l1_coefficient"], r["seed"]) for r in rows] == [
        (0.05, 0),
        (0.05, 1),
        (0.5, 0),
        (0.5, 1),
    ]
    assert all(r["d_sae_seen"] == 48 and 0 <= r["dead_fraction"] <= 1 for r in rows)
    assert (tmp_path / "l1_coefficient=0.5,seed=1" / "cfg.json").is_file()

    def fail(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(sweeps_module, "train_sae", fail)
    again = sweep_saes(acts, base, points, seeds=[0, 1], out_dir=tmp_path)
    assert again == rows

    summary = summarize_sweep(rows, by=["l1_coefficient"])
    assert [s["l1_coefficient"] for s in summary] == [0.05, 0.5]
    first = summary[0]
    l0s = [rows[0]["l0"], rows[1]["l0"]]
    assert first["n_seeds"] == 2
    assert first["l0_mean"] == pytest.approx(sum(l0s) / 2)
    assert first["l0_std"] == pytest.approx(abs(l0s[0] - l0s[1]) / 2**0.5)
    assert summary[1]["l0_mean"] < first["l0_mean"]
    with pytest.raises(ValueError, match="unknown SAE config keys"):
        sweep_saes(acts, base, [{"lambda": 1}])


def test_shared_normalizer_in_sweep(acts):
    norm = fit_normalizer(acts, "scalar")
    rows = sweep_saes(acts, tiny_config(steps=30), [{}], normalizer=norm)
    assert len(rows) == 1 and rows[0]["seed"] == 0


def test_rows_of_different_grids_line_up(acts):
    base = tiny_config(steps=20)
    points = grid(l1_coefficient=[0.1, 0.5]) + grid(d_sae=[16, 32], l1_coefficient=[0.1])
    rows = sweep_saes(acts, base, points)
    assert [(r["d_sae"], r["l1_coefficient"]) for r in rows] == [
        (48, 0.1),
        (48, 0.5),
        (16, 0.1),
        (32, 0.1),
    ]
    summary = summarize_sweep(rows, by=["d_sae", "l1_coefficient"])
    assert len(summary) == 4 and summary[0]["architecture"] == "standard"
    assert "d_sae_mean" not in summary[0] and "l0_mean" in summary[0]


def test_training_never_touches_wandb(acts, monkeypatch):
    import wandb

    def forbidden(*args, **kwargs):
        raise AssertionError("wandb was called")

    for name in ("init", "log", "Artifact"):
        monkeypatch.setattr(wandb, name, forbidden)
    for arch in ("standard", "topk"):
        train_sae(acts, tiny_config(architecture=arch, steps=50))


def test_non_finite_rows_are_caught_even_with_a_given_normalizer(acts):
    bad = acts.activations[:100].clone()
    bad[10, 2] = float("nan")
    source = ActivationSet.from_tensor(acts.activations[:100], HOOK)
    source.activations = bad  # e.g. a store whose rows were corrupted after collection
    with pytest.raises(ValueError, match=r"\(chunk 0\) contain 1 NaN"):
        train_sae(source, tiny_config(), normalizer=fit_normalizer(acts))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_fast_engine_reproduces_sae_lens_trainer_step(acts, architecture):
    config = tiny_config(
        architecture=architecture, dead_feature_window=5, sparsity_warm_up_steps=20,
        l1_coefficient=1.0, jumprelu_init_threshold=1.0, l0_coefficient=0.01, target_l0=None,
    )
    ref = train_sae(acts, config, log_every=1, engine="sae-lens")
    fast = train_sae(acts, config, log_every=1, engine="fast")
    for name in ref.history[0]:
        curve = torch.tensor([r[name] for r in fast.history], dtype=torch.float64)
        expected = torch.tensor([r[name] for r in ref.history], dtype=torch.float64)
        torch.testing.assert_close(curve, expected, rtol=1e-5, atol=1e-6, msg=name)
    assert fast.n_resampled == ref.n_resampled
    got, want = fast.sae.sae.state_dict(), ref.sae.sae.state_dict()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-4, msg=name)
    with pytest.raises(ValueError, match="engine must be one of"):
        train_sae(acts, config, engine="turbo")


def test_parallel_sweep_equals_the_sequential_one(acts, tmp_path):
    base = tiny_config(steps=40)
    points = grid(l1_coefficient=[0.05, 0.5], architecture=["standard", "topk"])
    serial = sweep_saes(acts, base, points, seeds=[0])
    seen = []
    parallel = sweep_saes(
        acts, base, points, seeds=[0], workers=2, out_dir=tmp_path, progress=seen.append
    )
    assert seen == parallel
    assert len(parallel) == len(serial) == 4
    for got, want in zip(parallel, serial, strict=True):
        assert got.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, float) and key != "seconds":
                assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
            elif key != "seconds":
                assert got[key] == value, key
    # what the workers trained was saved as sae-lens SAEs with their rows
    reloaded = NormalizedSAE.load(tmp_path / "l1_coefficient=0.5,architecture=topk,seed=0")
    assert reloaded.architecture == "topk" and reloaded.provenance["row"] == parallel[3]
    with pytest.raises(ValueError, match="workers"):
        sweep_saes(acts, base, points, workers=0)


def test_automatic_warm_up_fits_short_and_long_runs():
    assert SAETrainingConfig(steps=50).warm_up_steps == 5
    assert SAETrainingConfig(steps=3000).warm_up_steps == 100  # the paper's runs: unchanged
    assert SAETrainingConfig(steps=5).warm_up_steps == 0
    assert SAETrainingConfig(steps=50, lr_warm_up_steps=7).warm_up_steps == 7
    with pytest.raises(ValueError, match="'auto' or a whole number"):
        SAETrainingConfig(lr_warm_up_steps="soon")
    with pytest.raises(ValueError, match=r"exceed steps \(50\)"):
        SAETrainingConfig(steps=50, lr_warm_up_steps=60)


def test_config_dicts_round_trip_through_the_one_converter():
    from mechrec._config import config_from_dict, config_to_dict

    config = SAETrainingConfig(architecture="topk", k=8, d_sae=64, steps=50)
    assert SAETrainingConfig.from_dict(config.to_dict()) == config
    assert config_to_dict(config)["architecture_options"] == {}
    with pytest.raises(ValueError, match="must be a mapping"):
        config_from_dict(SAETrainingConfig, [1, 2], what="SAE config")
    kept = config_from_dict(SAETrainingConfig, {"d_sae": 8, "gone": 1}, what="SAE config",
                            ignore_unknown=True)
    assert kept.d_sae == 8
