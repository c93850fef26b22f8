"""The recommender glue of SAEs: train on a run, save/load, Table-1 evaluation in both modes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from mechrec_recsys.checkpoint import checkpoint_sha256
from mechrec_recsys.experiment import Experiment, RunSpec
from mechrec_recsys.saes import (
    PAPER_HOOK,
    check_sae_fits,
    default_sae_name,
    downstream,
    evaluate_sae,
    load_run_sae,
    model_weights_sha256,
    resolve_sae_directory,
    run_table1,
    sae_directory,
    sweep_directory,
    table1_points,
    train_run_sae,
)
from sae_asserts import assert_same_features

from mechrec.activations import ActivationSet
from mechrec.hooks import HookNameError
from mechrec.reconstruction import reconstruction_metrics
from mechrec.saes import (
    PAPER_DICT_SIZES,
    PAPER_L1_GRID,
    NormalizedSAE,
    SAETrainingConfig,
    train_sae,
)

TINY = SAETrainingConfig(architecture="standard", d_sae=64, l1_coefficient=0.1, steps=100,
                         batch_size=256, seed=0)


def test_replace_error_reproduces_the_original_model_exactly(paper_experiment: Experiment,
                                                             paper_sae: NormalizedSAE):
    rows = evaluate_sae(paper_experiment, paper_sae, k=10)
    assert [r["model"] for r in rows] == ["original", "replace", "replace + error"]
    original, replaced, with_error = rows
    # "replace + error": exactly the original recommendations, hence exactly its metrics
    assert with_error["identical_top_k"] is True
    for key in ("ndcg", "ndcg_se", "hit_rate", "hit_rate_se", "coverage", "coverage_se"):
        assert with_error[key] == original[key], key
    assert with_error["ndcg_delta"] == 0.0 and with_error["ndcg_delta_se"] == 0.0
    assert original == {"model": "original", "mode": "original",
                        **downstream(paper_experiment, k=10).row()}
    # the "replace" row is the paper's Table 1: reconstruction measured on the TEST users
    test_acts = paper_experiment.activations("test", PAPER_HOOK)
    expected = reconstruction_metrics(paper_sae, test_acts)
    assert replaced["rmse"] == pytest.approx(expected.rmse)
    assert replaced["l0"] == pytest.approx(expected.l0)
    assert replaced["n_rows"] == len(test_acts)
    assert 0.5 < replaced["explained_variance"] < 1.0 and replaced["rmse"] > 0
    # the reconstruction is imperfect, so the paired NDCG difference has a positive SE
    assert replaced["ndcg_delta_se"] > 0
    assert replaced["ndcg"] > 0 and replaced["ndcg_se"] > 0 and replaced["coverage_se"] > 0


def test_replace_mode_really_changes_the_hook_output(paper_experiment: Experiment):
    # An SAE that reconstructs almost nothing (huge L1) changes the recommendations in
    # "replace" mode, while "replace + error" still reproduces the original model.
    source = paper_experiment.activations("sae_train", PAPER_HOOK)
    crushed = train_sae(source, TINY.with_overrides(l1_coefficient=5.0)).sae
    original, replaced, with_error = evaluate_sae(paper_experiment, crushed)
    assert replaced["explained_variance"] < 0.3
    assert not replaced["identical_top_k"] and replaced["ndcg_delta_se"] > 0
    assert with_error["identical_top_k"] and with_error["ndcg"] == original["ndcg"]
    before = downstream(paper_experiment).top_k
    after = downstream(paper_experiment, crushed, mode="replace").top_k
    assert (before != after).any(axis=1).mean() > 0.5  # most users get another top-10 list


def test_train_run_sae_saves_under_the_run_and_reloads(paper_experiment: Experiment,
                                                       tmp_path: Path):
    trained = train_run_sae(paper_experiment, TINY, run_dir=tmp_path)
    name = default_sae_name(TINY, PAPER_HOOK)
    assert name == "blocks.0.hook_resid_post-standard-d64-l1=0.1-seed0"
    assert trained.directory == tmp_path / "saes" / name
    for file in ("cfg.json", "sae_weights.safetensors", "normalizer.safetensors", "mechrec.json"):
        assert (trained.directory / file).is_file(), file
    provenance = json.loads((trained.directory / "mechrec.json").read_text())
    assert provenance["run"]["dataset"] == "ml-100k"
    assert provenance["run"]["trained_on"] == "sae_train"
    assert provenance["training_config"]["d_sae"] == 64
    assert provenance["test_metrics"]["l0"] == pytest.approx(trained.test_metrics.l0)
    test_acts = paper_experiment.activations("test", PAPER_HOOK)
    assert trained.test_metrics.n_rows == len(test_acts)

    loaded = load_run_sae(paper_experiment, resolve_sae_directory(tmp_path, name))
    x = test_acts.activations[:500]
    # the saved weights have the normaliser folded in; unfolding them is exact up to rounding
    assert_same_features(loaded.encode(x), trained.sae.encode(x))
    assert loaded.hook_name == PAPER_HOOK

    with pytest.raises(FileExistsError, match="--overwrite"):
        train_run_sae(paper_experiment, TINY, run_dir=tmp_path)
    again = train_run_sae(paper_experiment, TINY.with_overrides(seed=1), run_dir=tmp_path,
                          name=name, overwrite=True)
    assert json.loads((again.directory / "mechrec.json").read_text())[
        "training_config"]["seed"] == 1


def test_sae_of_another_hook_or_width_is_rejected(paper_experiment: Experiment,
                                                  paper_sae: NormalizedSAE, tmp_path: Path):
    # another width: an SAE trained on 16-dimensional activations "at" the same hook
    narrow = ActivationSet.from_tensor(torch.randn(512, 16), PAPER_HOOK)
    narrow_sae = train_sae(narrow, TINY.with_overrides(steps=20, lr_warm_up_steps=0)).sae
    with pytest.raises(ValueError, match=r"width 16 .* width 32 there"):
        check_sae_fits(paper_experiment, narrow_sae)
    # a hook the 2-layer model does not have: reload a copy so the fixture stays untouched
    paper_sae.save(tmp_path / "copy")
    moved = NormalizedSAE.load(tmp_path / "copy", hook_name="blocks.5.hook_resid_post")
    with pytest.raises(ValueError, match=r"blocks\.5\.hook_resid_post.*cannot give"):
        evaluate_sae(paper_experiment, moved)
    with pytest.raises(HookNameError, match=r"did you mean 'blocks\.0\.hook_resid_post'"):
        train_run_sae(paper_experiment, TINY, hook="blocks.0.hook_resid_pos")


def test_opening_a_run_names_the_problem(paper_run_dir: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Experiment.open(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="not a mechrec run folder"):
        Experiment.open(tmp_path)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    RunSpec(dataset="ml-100k").save(unfinished)
    with pytest.raises(FileNotFoundError, match="no trained model yet"):
        Experiment.open(unfinished)
    with pytest.raises(ValueError, match="invalid SAE name"):
        sae_directory(paper_run_dir, "../escape")


def test_missing_normaliser_is_a_clear_error(paper_experiment: Experiment,
                                             paper_sae: NormalizedSAE, tmp_path: Path):
    paper_sae.save(tmp_path / "sae")
    (tmp_path / "sae" / "normalizer.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"normalizer\.safetensors is missing"):
        load_run_sae(paper_experiment, tmp_path / "sae")
    shutil.rmtree(tmp_path / "sae")


def test_table1_points_follow_the_paper_and_share_the_common_point():
    points = table1_points()
    assert points[:8] == [{"d_sae": 2048, "l1_coefficient": v} for v in PAPER_L1_GRID]
    sizes = [p["d_sae"] for p in points[8:]]
    assert sizes == [d for d in PAPER_DICT_SIZES if d != 2048]
    assert all(p["l1_coefficient"] == 0.1 for p in points[8:])
    assert len(points) == 15  # (2048, 0.1) is trained once for both sweeps
    assert np.unique([json.dumps(p, sort_keys=True) for p in points]).size == len(points)


# ------------------------------------------------------------------------------- Table 1 per model


def _retrained(experiment: Experiment) -> Experiment:
    """The run with another model (the same architecture, slightly moved weights), as after
    retraining GPTRec in the same run folder; activations are not shared."""
    import copy
    import dataclasses

    model = copy.deepcopy(experiment.model)
    with torch.no_grad():
        model.blocks[0].attn.W_Q.add_(0.05)
    return dataclasses.replace(experiment, model=model, _activations={})


SWEEP_BASE = SAETrainingConfig(architecture="standard", d_sae=16, l1_coefficient=0.1,
                               steps=40, batch_size=256, lr_warm_up_steps=0)


def _table1(experiment: Experiment, run_dir: Path):
    return run_table1(experiment, run_dir, l1_values=[0.1], d_sae_values=[], seeds=[0],
                      l1_d_sae=16, base=SWEEP_BASE)


def test_sweep_folder_depends_on_the_model_weights(paper_experiment: Experiment,
                                                   paper_run_dir: Path):
    on_disk = checkpoint_sha256(paper_run_dir / "model")
    assert model_weights_sha256(paper_experiment) == on_disk  # loaded model == checkpoint
    default = sweep_directory(paper_run_dir, PAPER_HOOK, SWEEP_BASE, 10)
    assert default == sweep_directory(paper_run_dir, PAPER_HOOK, SWEEP_BASE, 10,
                                      model_sha256=on_disk)
    assert f"model{on_disk[:8]}" in default.name
    other = model_weights_sha256(_retrained(paper_experiment))
    assert other != on_disk
    assert sweep_directory(paper_run_dir, PAPER_HOOK, SWEEP_BASE, 10,
                           model_sha256=other) != default
    with pytest.raises(FileNotFoundError, match="no trained GPTRec"):
        sweep_directory(paper_run_dir / "elsewhere", PAPER_HOOK, SWEEP_BASE, 10)


def test_retrained_model_never_reuses_cached_saes(paper_experiment: Experiment, tmp_path: Path):
    first = _table1(paper_experiment, tmp_path)
    weights = first.directory / "d_sae=16,l1_coefficient=0.1,seed=0" / "sae_weights.safetensors"
    stamp = weights.stat().st_mtime_ns
    spec = json.loads((first.directory / "sweep.json").read_text())
    assert spec["model_sha256"] == first.info["model_sha256"] == \
        model_weights_sha256(paper_experiment)
    # the same model: the cached SAE is reused
    again = _table1(paper_experiment, tmp_path)
    assert again.directory == first.directory and weights.stat().st_mtime_ns == stamp
    assert again.runs == first.runs

    # a retrained model: a new folder, a freshly trained SAE, the old folder left alone
    retrained = _retrained(paper_experiment)
    second = _table1(retrained, tmp_path)
    assert second.directory != first.directory
    assert second.directory.parent == first.directory.parent
    assert second.info["model_sha256"] == model_weights_sha256(retrained)
    assert (second.directory / "d_sae=16,l1_coefficient=0.1,seed=0" /
            "sae_weights.safetensors").is_file()
    assert weights.stat().st_mtime_ns == stamp
    assert second.runs[0]["rmse"] != first.runs[0]["rmse"]  # trained on other activations


def test_sweep_folder_recorded_for_another_model_is_refused(paper_experiment: Experiment,
                                                           tmp_path: Path):
    directory = sweep_directory(tmp_path, PAPER_HOOK, SWEEP_BASE, 10,
                                model_sha256=model_weights_sha256(paper_experiment))
    directory.mkdir(parents=True)
    for recorded in ({"format": "mechrec.table1_sweep/1", "model_sha256": "0" * 64},
                     {"format": "mechrec.table1_sweep/1"}):  # older sweeps recorded no model
        (directory / "sweep.json").write_text(json.dumps(recorded))
        with pytest.raises(ValueError, match=r"cached for another model.*delete that folder"):
            _table1(paper_experiment, tmp_path)


def test_table1_rows_carry_figure_3s_honest_and_in_sample_genre_correlation(
        paper_experiment: Experiment, tmp_path: Path):
    table = _table1(paper_experiment, tmp_path)
    row = table.runs[0]
    nsae = NormalizedSAE.load(table.directory / "d_sae=16,l1_coefficient=0.1,seed=0")
    # by hand: best feature per genre chosen on the SAE users, its correlation on the test users
    genres, names = paper_experiment.token_attributes()
    corr = {}
    for part in ("sae_train", "test"):
        acts = paper_experiment.activations(part, PAPER_HOOK)
        with torch.no_grad():
            feats = nsae.encode(acts.activations).numpy().astype(np.float64)
        y = genres[acts.token.numpy()].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            fc, yc = feats - feats.mean(0), y - y.mean(0)
            corr[part] = (fc.T @ yc) / np.outer(np.sqrt((fc ** 2).sum(0)),
                                                np.sqrt((yc ** 2).sum(0)))
    honest, in_sample = [], []
    for a in range(len(names)):
        if np.isnan(corr["test"][:, a]).all():
            continue  # a genre without positives ("unknown") is left out
        select = np.where(np.isnan(corr["sae_train"][:, a]), -np.inf, corr["sae_train"][:, a])
        honest.append(corr["test"][int(np.argmax(select)), a])
        in_sample.append(np.nanmax(corr["test"][:, a]))
    assert row["genre_corr_honest"] == pytest.approx(float(np.mean(honest)), abs=1e-5)
    assert row["genre_corr_in_sample"] == pytest.approx(float(np.mean(in_sample)), abs=1e-5)
    assert row["genre_corr_in_sample"] >= row["genre_corr_honest"]
    line = table.summary[0]
    assert line["genre_corr_honest_mean"] == pytest.approx(row["genre_corr_honest"])
    assert line["genre_corr_honest_std"] == 0.0  # one seed

    # a sweep cached before these numbers (and SAE manifests) existed gets them measured,
    # not a KeyError
    saved = table.directory / "d_sae=16,l1_coefficient=0.1,seed=0" / "mechrec.json"
    (saved.parent / "mechrec.sae.json").unlink()
    meta = json.loads(saved.read_text())
    for key in ("genre_corr_honest", "genre_corr_in_sample"):
        del meta["row"][key]
    saved.write_text(json.dumps(meta))
    again = _table1(paper_experiment, tmp_path)
    assert again.runs[0]["genre_corr_honest"] == pytest.approx(row["genre_corr_honest"])


def test_the_front_door_opens_a_run_and_its_saes(paper_run_dir: Path,
                                                 paper_experiment: Experiment,
                                                 paper_sae: NormalizedSAE):
    assert paper_experiment.run_dir == paper_run_dir
    paper_sae.save(paper_run_dir / "saes" / "front-door")
    by_name = paper_experiment.sae("front-door", allow_other_model=True)
    by_path = paper_experiment.sae(paper_run_dir / "saes" / "front-door",
                                   allow_other_model=True)
    x = paper_experiment.activations("test", by_name.hook_name).activations[:50]
    torch.testing.assert_close(by_name.encode(x), paper_sae.encode(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(by_path.encode(x), by_name.encode(x))
    with pytest.raises(FileNotFoundError, match=r"this run's SAEs: .*front-door"):
        paper_experiment.sae("nope")


def test_plain_sae_lens_folder_loads_for_the_run(paper_experiment: Experiment,
                                                 paper_sae: NormalizedSAE, tmp_path: Path):
    """A plain sae-lens folder (no normaliser, no hook in cfg.json) is used as it is once
    given its hook; it then computes what the mechrec folder it came from computes."""
    import sae_lens

    paper_sae.save(tmp_path / "mechrec")
    plain = sae_lens.SAE.load_from_disk(str(tmp_path / "mechrec"))
    plain.cfg.metadata.__dict__.pop("mechrec_normalizer_fold")
    plain.cfg.metadata.hook_name = None
    plain.save_model(tmp_path / "plain")
    with pytest.raises(ValueError, match="no hook name"):
        load_run_sae(paper_experiment, tmp_path / "plain")
    nsae = load_run_sae(paper_experiment, tmp_path / "plain", hook_name=PAPER_HOOK)
    assert nsae.hook_name == PAPER_HOOK and nsae.normalizer.mode == "none"
    x = paper_experiment.activations("test", PAPER_HOOK).activations[:200]
    torch.testing.assert_close(nsae.encode(x), paper_sae.encode(x), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(nsae.reconstruct(x), paper_sae.reconstruct(x), atol=1e-4,
                               rtol=1e-4)


def test_a_memory_budget_spills_activations_and_trains_the_same_sae(paper_experiment: Experiment,
                                                                    tmp_path: Path):
    """Under a memory budget the SAE and test users' activations go through sharded stores
    (removed afterwards); the SAE sees the same rows and ends at the same metrics."""
    in_memory = train_run_sae(paper_experiment, TINY, run_dir=tmp_path / "a")
    spilled = train_run_sae(paper_experiment, TINY, run_dir=tmp_path / "b",
                            memory_budget_mb=0.5)
    saes = tmp_path / "b" / "saes"
    assert not [p.name for p in saes.iterdir() if "activations" in p.name]  # stores gone
    assert spilled.directory.is_dir()
    assert spilled.test_metrics.n_rows == in_memory.test_metrics.n_rows
    for key, value in in_memory.test_metrics.as_dict().items():
        if isinstance(value, float):
            assert spilled.test_metrics.as_dict()[key] == pytest.approx(value, rel=0.05, abs=0.02)
    with pytest.raises(ValueError, match="needs a positive number of MB and a run folder"):
        train_run_sae(paper_experiment, TINY, memory_budget_mb=0.5)
