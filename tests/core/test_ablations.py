"""Ablation rows (``mechrec.ablations``) on a non-recommender HookedTransformer.

Each row must equal the honest alignment recipe run by hand on the variant (the same SAE for
the unit row, an SAE trained with the one changed setting for the others), the matched L0
must come from the select rows, and a rerun must reuse saved rows rather than retrain.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from tiny_model import parity_range_study

from mechrec.ablations import (
    ABLATION_KINDS,
    Ablation,
    AblationTable,
    base_run_mismatch,
    run_ablations,
    standard_ablations,
)
from mechrec.alignment import AlignmentRun, align
from mechrec.reconstruction import reconstruction_metrics
from mechrec.saes import SAETrainingConfig, train_sae
from mechrec.study import TokenStudy

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def study() -> TokenStudy:
    return parity_range_study(n=40, length=10, batch_size=20)


@pytest.fixture(scope="module")
def config() -> SAETrainingConfig:
    return SAETrainingConfig(architecture="standard", d_sae=32, l1_coefficient=0.05, steps=40,
                             batch_size=64, lr_warm_up_steps=0, seed=0)


@pytest.fixture(scope="module")
def sae(study: TokenStudy, config: SAETrainingConfig):
    return train_sae(study.activations("fit", HOOK), config).sae


def test_standard_ablations_name_every_kind(study: TokenStudy) -> None:
    rows = standard_ablations(study.model, HOOK)
    assert [a.name for a in rows] == ["tokens", "topk", "jumprelu", "no-norm",
                                      "resid-post-1", "mlp-out-0"]
    assert not rows[0].retrains and rows[0].unit == "tokens"
    assert rows[1].match_l0 == "k" and rows[2].match_l0 == "target_l0"
    assert rows[4].hook == "blocks.1.hook_resid_post"
    assert set(ABLATION_KINDS) == {"tokens", "topk", "jumprelu", "no-norm", "layers",
                                   "mlp-out"}
    with pytest.raises(ValueError, match="unknown ablation 'depth'"):
        standard_ablations(study.model, HOOK, ["depth"])
    with pytest.raises(ValueError, match="not a block's hook"):
        standard_ablations(study.model, "hook_embed", ["layers"])
    with pytest.raises(ValueError, match="plain folder name"):
        Ablation("a/b", "bad")


def test_rows_equal_the_recipe_run_by_hand(study, sae, config, tmp_path) -> None:
    ablations = standard_ablations(study.model, HOOK, ["tokens", "topk", "no-norm"])
    lines: list[str] = []
    table = run_ablations(study, sae, config, ablations, select="fit", score="eval",
                          bootstrap=20, seed=3, out_dir=tmp_path, progress=lines.append)
    frame = table.frame()
    assert list(frame.index) == ["base", "tokens", "topk", "no-norm"]
    assert len(lines) == 4 and lines[0].startswith("base: SAE ")

    # the base row: the honest recipe on the base SAE, first group ("parity")
    by_hand = align(study, sae, select="fit", score="eval", seed=3).summary()
    honest = by_hand[(by_hand["group"] == "parity") & (by_hand["selection"] == "honest")]
    for source in ("SAE", "neurons", "random"):
        expected = honest[honest["features"] == source]["correlation_mean"].iloc[0]
        assert frame.loc["base", source] == pytest.approx(expected, abs=1e-12)
    assert frame.loc["base", "group"] == "parity"
    base = frame.loc["base"]
    assert base["SAE - random"] == pytest.approx(base["SAE"] - base["random"])
    assert base["SAE - random lower"] <= base["SAE - random upper"]

    # the unit row reuses the SAE with distinct tokens as the unit
    tokens = align(study, sae, select="fit", score="eval", seed=3, unit="tokens").summary()
    sel = tokens[(tokens["group"] == "parity") & (tokens["selection"] == "honest")
                & (tokens["features"] == "SAE")]
    assert frame.loc["tokens", "SAE"] == pytest.approx(sel["correlation_mean"].iloc[0])
    assert frame.loc["tokens", "train_seconds"] == 0.0

    # TopK: k = the base SAE's L0 on the select rows, trained with the same config otherwise
    l0 = reconstruction_metrics(sae, study.activations("fit", HOOK)).l0
    k = max(1, round(l0))
    assert frame.loc["topk", "architecture"] == "topk"
    assert f"k={k}" in frame.loc["topk", "changes"]
    topk = train_sae(study.activations("fit", HOOK),
                     config.with_overrides(architecture="topk", k=k)).sae
    scored = reconstruction_metrics(topk, study.activations("eval", HOOK))
    assert frame.loc["topk", "l0"] == pytest.approx(scored.l0)
    assert "normalization=none" in frame.loc["no-norm", "changes"]
    assert (tmp_path / "topk" / "sae" / "cfg.json").is_file()

    loaded = AblationTable.load(tmp_path)
    pd.testing.assert_frame_equal(loaded.frame(), frame, check_dtype=False)
    assert loaded.meta["group"] == "parity" and loaded.meta["bootstrap"] == 20


def test_rerun_reuses_saved_rows_and_redoes_changed_ones(study, sae, config, tmp_path) -> None:
    ablations = standard_ablations(study.model, HOOK, ["tokens"])
    first = run_ablations(study, sae, config, ablations, select="fit", score="eval",
                          bootstrap=0, out_dir=tmp_path)
    lines: list[str] = []
    again = run_ablations(study, sae, config, ablations, select="fit", score="eval",
                          bootstrap=0, out_dir=tmp_path, progress=lines.append)
    assert lines == ["base: done before, reused", "tokens: done before, reused"]
    pd.testing.assert_frame_equal(again.frame(), first.frame())
    assert np.isnan(first.frame().loc["base", "SAE - random lower"])
    lines.clear()
    run_ablations(study, sae, config, ablations, select="fit", score="eval", bootstrap=0,
                  seed=1, out_dir=tmp_path, progress=lines.append)
    assert not any("reused" in line for line in lines)


def test_the_concepts_page_snippet_runs(study, sae, config, tmp_path, monkeypatch) -> None:
    page = Path(__file__).resolve().parents[2] / "docs" / "concepts.md"
    match = re.search(r"<!-- ablations -->\n```python\n(.*?)```", page.read_text(), re.S)
    assert match, "docs/concepts.md has no snippet after <!-- ablations -->"
    monkeypatch.chdir(tmp_path)
    scope = {"study": study, "sae": sae, "config": config}
    exec(compile(match.group(1), "concepts.md", "exec"), scope)
    frame = scope["table"].frame()
    assert list(frame.index) == ["base", "tokens", "topk", "resid-post-1"]
    assert (tmp_path / "abl" / "ablations.json").is_file()


def test_bad_inputs_are_refused(study, sae, config, tmp_path) -> None:
    with pytest.raises(ValueError, match="select and score are both 'fit'"):
        run_ablations(study, sae, config, [], select="fit", score="fit")
    with pytest.raises(ValueError, match="unique"):
        run_ablations(study, sae, config, [Ablation("base", "x")], select="fit", score="eval")
    with pytest.raises(ValueError, match="the base is a transcoder"):
        run_ablations(study, SimpleNamespace(is_transcoder=True), config, [], select="fit",
                      score="eval")
    with pytest.raises(FileNotFoundError, match="mechrec align ablations"):
        AblationTable.load(tmp_path)


def test_a_saved_alignment_stands_for_the_base_row(study, sae, config, tmp_path) -> None:
    fresh = run_ablations(study, sae, config, [], select="fit", score="eval", bootstrap=30,
                          seed=2).frame()
    saved = align(study, sae, select="fit", score="eval", seed=2)
    saved.save(tmp_path / "alignment", bootstrap=30)
    loaded = AlignmentRun.load(tmp_path / "alignment")
    lines: list[str] = []
    reused = run_ablations(study, sae, config, [], select="fit", score="eval", bootstrap=30,
                           seed=2, base_run=loaded, progress=lines.append).frame()
    assert "not aligned again" in lines[0]
    numbers = [c for c in fresh.columns if c not in ("seconds", "train_seconds")
               and pd.api.types.is_float_dtype(fresh[c])]
    assert "SAE - random lower" in numbers
    np.testing.assert_allclose(reused.loc["base", numbers].astype(float),
                               fresh.loc["base", numbers].astype(float), atol=1e-12)

    # without a saved bootstrap of the same size it resamples the kept score rows
    other = run_ablations(study, sae, config, [], select="fit", score="eval", bootstrap=20,
                          seed=2, base_run=loaded).frame()
    by_hand = run_ablations(study, sae, config, [], select="fit", score="eval", bootstrap=20,
                            seed=2).frame()
    assert other.loc["base", "SAE - random upper"] == pytest.approx(
        by_hand.loc["base", "SAE - random upper"], abs=1e-12)


def test_a_base_run_made_otherwise_is_refused(study, sae, tmp_path) -> None:
    run = align(study, sae, select="fit", score="eval", seed=2)
    assert base_run_mismatch(run, sae, select="fit", score="eval", seed=2, bootstrap=5) is None
    assert "seed 2 (expected 0)" in base_run_mismatch(run, sae, select="fit", score="eval")
    swapped = base_run_mismatch(run, sae, select="eval", score="fit", seed=2)
    assert "select rows 'fit' (expected 'eval')" in swapped
    tokens = align(study, sae, select="fit", score="eval", seed=2, unit="tokens")
    assert "unit 'tokens'" in base_run_mismatch(tokens, sae, select="fit", score="eval", seed=2)
    assert "no attribute group 'genre'" in base_run_mismatch(run, sae, select="fit",
                                                             score="eval", seed=2, group="genre")
    run.save(tmp_path / "a", keep_rows=False)
    bare = AlignmentRun.load(tmp_path / "a")
    assert "nor the score rows" in base_run_mismatch(bare, sae, select="fit", score="eval",
                                                     seed=2, bootstrap=10)
    with pytest.raises(ValueError, match=r"base_run cannot stand for the base row: .*seed"):
        run_ablations(study, sae, SAETrainingConfig(), [], select="fit", score="eval",
                      base_run=run)


def test_the_sae_hash_follows_weights_and_normaliser(study, sae, tmp_path) -> None:
    from mechrec.normalization import Normalizer
    from mechrec.saes import NormalizedSAE

    digest = sae.weights_sha256()
    assert sae.weights_sha256() == digest
    saved = sae.save(tmp_path / "sae")
    loaded = NormalizedSAE.load(saved).weights_sha256()
    assert NormalizedSAE.load(saved).weights_sha256() == loaded
    shifted = NormalizedSAE(sae.sae, Normalizer(sae.normalizer.mode, sae.normalizer.mean + 1,
                                                sae.normalizer.std), sae.hook_name)
    assert shifted.weights_sha256() != digest
