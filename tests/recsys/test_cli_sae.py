"""``mechrec sae``: train every architecture, evaluate, Table 1 (resumable), bad input."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import sae_lens
import torch
from cli_checks import assert_one_line_error, run_cli
from mechrec_recsys.experiment import Experiment, RunSpec
from mechrec_recsys.saes import Table1
from sae_asserts import assert_same_features

from mechrec.activations import ActivationSet
from mechrec.saes import NormalizedSAE, SAETrainingConfig, train_sae

PAPER_HOOK = "blocks.0.hook_resid_post"
FAST = ["--steps", "100", "--batch-size", "256", "--no-progress"]
SPARSITY = {
    "standard": ["--l1", "0.1"],
    "topk": ["--k", "8"],
    "batchtopk": ["--k", "8"],
    "jumprelu": ["--target-l0", "8"],
    "gated": ["--l1", "0.1"],
}



@pytest.fixture(scope="module")
def data_args(data_dir: Path) -> list[str]:
    return ["--data-dir", str(data_dir / "ml-100k"), "--no-download"]



@pytest.mark.parametrize("architecture", list(SPARSITY))
def test_every_architecture_trains_from_the_cli_and_loads_in_plain_sae_lens(
    architecture: str, paper_run_dir: Path, paper_experiment: Experiment, data_args: list[str]
):
    name = f"cli-{architecture}"
    result = run_cli("sae", "train", paper_run_dir, "--hook", PAPER_HOOK, "--architecture",
                     architecture, "--d-sae", "64", *SPARSITY[architecture], "--seed", "0",
                     "--name", name, "--overwrite", *FAST, *data_args)
    assert result.exit_code == 0, result.output
    assert "explained variance" in result.output and "saved to" in result.output
    directory = paper_run_dir / "saes" / name
    provenance = json.loads((directory / "mechrec.json").read_text())
    assert provenance["training_config"]["architecture"] == architecture
    metrics = provenance["test_metrics"]
    assert metrics["explained_variance"] > 0.3 and metrics["l0"] > 0
    if architecture == "topk":
        assert metrics["l0"] <= 8

    # plain sae-lens loads it, hook name set, and gives our feature activations and
    # reconstructions on raw activations (the normaliser is folded into its weights)
    plain = sae_lens.SAE.load_from_disk(str(directory))
    assert plain.cfg.metadata.hook_name == PAPER_HOOK and plain.cfg.d_sae == 64
    assert plain.cfg.normalize_activations == "none"
    ours = NormalizedSAE.load(directory)
    x = paper_experiment.activations("test", PAPER_HOOK).activations[:1000]
    with torch.no_grad():
        expected = plain.encode(x)
        recon = plain.decode(expected)
    assert_same_features(ours.encode(x), expected)
    torch.testing.assert_close(ours.reconstruct(x), recon, rtol=1e-5, atol=1e-5)
    assert (expected != 0).any()


def test_eval_prints_original_replace_and_replace_error(paper_run_dir: Path,
                                                        data_args: list[str], tmp_path: Path):
    name = "cli-eval-standard"
    trained = run_cli("sae", "train", paper_run_dir, "--d-sae", "64", "--name", name,
                      "--overwrite", *FAST, *data_args)
    assert trained.exit_code == 0, trained.output
    out = tmp_path / "eval.json"
    result = run_cli("sae", "eval", paper_run_dir, name, "--out", out, *data_args)
    assert result.exit_code == 0, result.output
    for label in ("original", "replace", "replace + error", "NDCG@10", "HR@10", "Coverage@10",
                  "±"):
        assert label in result.output, label
    rows = {row["model"]: row for row in json.loads(out.read_text())["rows"]}
    original, with_error = rows["original"], rows["replace + error"]
    assert with_error["identical_top_k"] is True
    for key in ("ndcg", "hit_rate", "coverage", "ndcg_se", "hit_rate_se", "coverage_se"):
        assert with_error[key] == original[key], key
    assert rows["replace"]["rmse"] > 0 and rows["replace"]["n_rows"] > 0


SWEEP = ["--l1", "0.05,0.3", "--d-sae", "32,64", "--l1-d-sae", "64", "--seeds", "0,1",
         "--steps", "100", "--batch-size", "256", "--no-progress"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_table1_sweep_writes_csv_json_and_resumes(paper_run_dir: Path, data_args: list[str],
                                                  tmp_path: Path):
    out = tmp_path / "table1.csv"
    result = run_cli("sae", "table1", paper_run_dir, *SWEEP, "--out", out, *data_args)
    assert result.exit_code == 0, result.output
    assert "original" in result.output and "L1 weight" in result.output
    assert "gave the original top-10 lists for 8/8 SAEs" in " ".join(result.output.split())
    rows = read_csv(out)
    assert [(r["sweep"], r["l1_coefficient"], r["d_sae"]) for r in rows] == [
        ("original", "", ""), ("l1", "0.05", "64"), ("l1", "0.3", "64"),
        ("d_sae", "0.1", "32"), ("d_sae", "0.1", "64")]
    assert all(r["n_seeds"] == "2" for r in rows[1:])
    assert float(rows[0]["ndcg_se"]) > 0 and rows[0]["rmse_mean"] == ""
    # more L1 -> sparser and worse reconstruction; bigger dictionary -> better
    assert float(rows[2]["l0_mean"]) < float(rows[1]["l0_mean"])
    assert float(rows[2]["explained_variance_mean"]) < float(rows[1]["explained_variance_mean"])
    assert float(rows[4]["rmse_mean"]) < float(rows[3]["rmse_mean"])
    assert all(float(r["replace_error_identical"]) == 1.0 for r in rows[1:])
    # the splice-quality columns: printed and in the CSV for every SAE line
    for header in ("loss rec. (zero)", "loss rec. (mean)", "NDCG@10 rec. (zero)",
                   "NDCG@10 rec. (mean)", "KL"):
        assert header in result.output
    assert rows[0]["kl_mean"] == ""
    for r in rows[1:]:
        for key in ("loss_recovered_zero", "loss_recovered_mean", "ndcg_recovered_zero",
                    "ndcg_recovered_mean", "kl"):
            assert math.isfinite(float(r[f"{key}_mean"])), key
        assert float(r["kl_mean"]) >= 0

    # the JSON keeps every run; the CSV's mean/std are over the two seeds of each point
    data = json.loads(out.with_suffix(".json").read_text())
    runs = data["runs"]
    assert len(runs) == 8 and data["seeds"] == [0, 1]
    pair = [r for r in runs if r["d_sae"] == 64 and r["l1_coefficient"] == 0.05]
    assert sorted(r["seed"] for r in pair) == [0, 1]
    l0s = [r["l0"] for r in pair]
    assert float(rows[1]["l0_mean"]) == pytest.approx(sum(l0s) / 2)
    assert float(rows[1]["l0_std"]) == pytest.approx(abs(l0s[0] - l0s[1]) / 2 ** 0.5)
    assert all(r["replace_error_ndcg"] == float(rows[0]["ndcg_mean"]) for r in runs)
    # the JSON is the Table1 result: it loads with the grid the command ran
    table = Table1.load(out)
    assert table.grid == {"l1_values": [0.05, 0.3], "d_sae_values": [32, 64], "l1_d_sae": 64,
                          "d_sae_l1": 0.1}
    assert table.to_csv() == out.read_text() and table.runs == runs

    # resume: an interrupted sweep (one SAE never saved) retrains only what is missing
    sweep_dir = Path(data["sweep_directory"])
    # an SAE cached by a version without the splice-quality numbers gets them measured
    older = NormalizedSAE.load(sweep_dir / "d_sae=64,l1_coefficient=0.05,seed=0")
    for key in ("loss_recovered_zero", "loss_recovered_mean", "ndcg_recovered_zero",
                "ndcg_recovered_mean", "kl"):
        del older.provenance["row"][key]
    older.save(sweep_dir / "d_sae=64,l1_coefficient=0.05,seed=0")
    saved = {p.name: (p / "sae_weights.safetensors").stat().st_mtime_ns
             for p in sweep_dir.iterdir() if p.is_dir()}
    assert len(saved) == 8
    lost = "d_sae=32,l1_coefficient=0.1,seed=1"
    shutil.rmtree(sweep_dir / lost)
    again = run_cli("sae", "table1", paper_run_dir, *SWEEP, "--out", out, *data_args)
    assert again.exit_code == 0, again.output
    after = {p.name: (p / "sae_weights.safetensors").stat().st_mtime_ns
             for p in sweep_dir.iterdir() if p.is_dir()}
    assert set(after) == set(saved)
    assert {n for n in saved if after[n] != saved[n]} == {lost}
    for before_row, after_row in zip(rows, read_csv(out), strict=True):
        for key in ("l0_mean", "rmse_mean", "ndcg_mean", "coverage_mean", "kl_mean",
                    "loss_recovered_mean_mean", "ndcg_recovered_zero_mean"):
            if before_row[key]:
                assert float(after_row[key]) == pytest.approx(float(before_row[key]),
                                                              rel=1e-5), key


@pytest.fixture(scope="module")
def foreign_saes(tmp_path_factory: pytest.TempPathFactory, paper_sae: NormalizedSAE) -> Path:
    """SAE folders that do not fit the run: another width, another hook, no normaliser."""
    root = tmp_path_factory.mktemp("foreign_saes")
    narrow = ActivationSet.from_tensor(torch.randn(512, 16), PAPER_HOOK)
    config = SAETrainingConfig(d_sae=32, steps=20, batch_size=128, lr_warm_up_steps=0)
    train_sae(narrow, config).sae.save(root / "narrow")
    paper_sae.save(root / "no-normalizer")
    (root / "no-normalizer" / "normalizer.safetensors").unlink()
    paper_sae.save(root / "other-hook")
    NormalizedSAE.load(root / "other-hook", hook_name="blocks.5.hook_resid_post").save(
        root / "other-hook")
    return root


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "{run}", "--hook", "blocks.0.hook_resid_pos"],
         "did you mean 'blocks.0.hook_resid_post'"),
        (["table1", "{run}", "--hook", "blocks.0.hook_resid_pos"],
         "did you mean 'blocks.0.hook_resid_post'"),
        (["train", "{run}", "--architecture", "standard", "--k", "8"],
         "--k applies to topk/batchtopk, not standard; standard takes --l1"),
        (["train", "{run}", "--architecture", "sparse"], "unknown SAE architecture 'sparse'"),
        (["train", "{run}", "--d-sae", "0"], "d_sae must be > 0"),
        (["train", "{run}", "--name", "../escape"], "invalid SAE name"),
        (["table1", "{run}", "--l1", "0.1,abc"], "--l1 takes comma-separated numbers"),
        (["table1", "{run}", "--seeds", "0,1.5"], "--seeds takes comma-separated integers"),
        (["train", "{tmp}"], "not a mechrec run folder"),
        (["table1", "{tmp}/nowhere"], "does not exist"),
        (["train", "{unfinished}"], "no trained model yet"),
        (["eval", "{tmp}", "{saes}/narrow"], "not a mechrec run folder"),
        (["eval", "{run}", "{saes}/narrow"], "width 16 at 'blocks.0.hook_resid_post'"),
        (["eval", "{run}", "{saes}/other-hook"], "reads hook 'blocks.5.hook_resid_post'"),
        (["eval", "{run}", "{saes}/no-normalizer"], "normalizer.safetensors is missing"),
        (["eval", "{run}", "{saes}/absent"], "does not exist"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2(
    args: list[str], message: str, paper_run_dir: Path, foreign_saes: Path, tmp_path: Path,
    data_args: list[str],
):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    RunSpec(dataset="ml-100k").save(unfinished)
    places = {"run": paper_run_dir, "tmp": tmp_path, "saes": foreign_saes,
              "unfinished": unfinished}
    filled = [a.format(**places) for a in args]
    progress = [] if filled[0] == "eval" else ["--no-progress"]
    result = run_cli("sae", *filled, *progress, *data_args)
    assert_one_line_error(result, message)


def test_eval_runs_on_a_plain_sae_lens_folder(paper_run_dir: Path, paper_sae: NormalizedSAE,
                                              data_args: list[str], tmp_path: Path):
    """An SAE trained elsewhere (plain sae-lens folder: cfg.json + weights, no normaliser)
    is evaluated as it is; here the paper SAE's weights as plain sae-lens loads them, so its
    ranking metrics equal the mechrec folder's."""
    paper_sae.save(tmp_path / "mechrec")
    plain = sae_lens.SAE.load_from_disk(str(tmp_path / "mechrec"))
    plain.cfg.metadata.__dict__.pop("mechrec_normalizer_fold")
    plain.save_model(tmp_path / "plain")
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == [
        "cfg.json", "sae_weights.safetensors"]
    rows = {}
    for name in ("plain", "mechrec"):
        out = tmp_path / f"{name}.json"
        result = run_cli("sae", "eval", paper_run_dir, tmp_path / name, "--out", out,
                         *data_args)
        assert result.exit_code == 0, result.output
        rows[name] = {row["model"]: row for row in json.loads(out.read_text())["rows"]}
    for key in ("ndcg", "hit_rate", "coverage"):
        assert rows["plain"]["replace"][key] == pytest.approx(rows["mechrec"]["replace"][key],
                                                              abs=1e-4), key
    # no hook name in cfg.json: one line saying how to give one
    cfg = json.loads((tmp_path / "plain" / "cfg.json").read_text())
    cfg["metadata"]["hook_name"] = None
    (tmp_path / "plain" / "cfg.json").write_text(json.dumps(cfg))
    result = run_cli("sae", "eval", paper_run_dir, tmp_path / "plain", *data_args)
    assert_one_line_error(result, "no hook name")


def test_train_without_normalisation(paper_run_dir: Path, data_args: list[str]):
    result = run_cli("sae", "train", paper_run_dir, "--d-sae", "32", "--name", "cli-raw",
                     "--normalization", "none", "--overwrite", *FAST, *data_args)
    assert result.exit_code == 0, result.output
    saved = json.loads((paper_run_dir / "saes" / "cli-raw" / "mechrec.json").read_text())
    assert saved["normalization"] == "none"
    bad = run_cli("sae", "train", paper_run_dir, "--normalization", "zscore", *FAST, *data_args)
    assert bad.exit_code == 2 and "normalization must be" in bad.output


def test_train_a_sae_lens_registry_architecture_with_options(paper_run_dir: Path,
                                                             data_args: list[str]):
    result = run_cli("sae", "train", paper_run_dir, "--architecture", "matryoshka_batchtopk",
                     "--d-sae", "32", "--k", "4", "--option", "matryoshka_widths=8,32",
                     "--name", "cli-matryoshka", "--overwrite", *FAST, *data_args)
    assert result.exit_code == 0, result.output
    loaded = sae_lens.SAE.load_from_disk(str(paper_run_dir / "saes" / "cli-matryoshka"))
    assert loaded.cfg.d_sae == 32
    unknown = run_cli("sae", "train", paper_run_dir, "--architecture", "matryoshka_batchtopk",
                      "--option", "widths=8", *FAST, *data_args)
    assert unknown.exit_code == 2 and "widths" in unknown.output
    bad = run_cli("sae", "train", paper_run_dir, "--architecture", "nonesuch", *FAST,
                  *data_args)
    assert bad.exit_code == 2 and "matryoshka_batchtopk" in bad.output


def _raw_weights(paper_sae: NormalizedSAE, tmp_path: Path) -> dict[str, torch.Tensor]:
    """The paper SAE's weights as plain sae-lens loads them (normaliser folded in: they read
    raw activations), with ``b_dec`` subtracted from the input as the other libraries do."""
    plain = sae_lens.SAE.load_from_disk(str(paper_sae.save(tmp_path / "mechrec")))
    w_enc, b_enc, w_dec, b_dec = (getattr(plain, n).detach().double()
                                  for n in ("W_enc", "b_enc", "W_dec", "b_dec"))
    if not plain.cfg.apply_b_dec_to_input:  # relu(x W + b) == relu((x - b_dec) W + b')
        b_enc = b_enc + b_dec @ w_enc
    return {n: t.float().contiguous() for n, t in
            (("W_enc", w_enc), ("b_enc", b_enc), ("W_dec", w_dec), ("b_dec", b_dec))}


def test_eval_and_align_take_sparsify_and_dictionary_learning_checkpoints(
    paper_run_dir: Path, paper_experiment: Experiment, paper_sae: NormalizedSAE,
    data_args: list[str], tmp_path: Path,
):
    """Other libraries' checkpoints of the paper SAE (a sparsify TopK folder with k = every
    latent, a dictionary_learning AutoEncoder ae.pt) compute the same features, so the CLI
    gives the mechrec SAE's rows; they name no hook, so --hook is needed and said so."""
    from safetensors.torch import save_file

    w = _raw_weights(paper_sae, tmp_path)
    d_sae, d_in = w["W_dec"].shape
    sparsify = tmp_path / "sparsify" / "layers.0"
    sparsify.mkdir(parents=True)
    save_file({"encoder.weight": w["W_enc"].T.contiguous(), "encoder.bias": w["b_enc"],
               "W_dec": w["W_dec"], "b_dec": w["b_dec"]}, str(sparsify / "sae.safetensors"))
    (sparsify / "cfg.json").write_text(json.dumps({
        "activation": "topk", "expansion_factor": 8, "normalize_decoder": True,
        "num_latents": d_sae, "k": d_sae, "multi_topk": False, "skip_connection": False,
        "transcode": False, "d_in": d_in}))
    ae_pt = tmp_path / "dictionary_learning" / "ae.pt"
    ae_pt.parent.mkdir()
    torch.save({"encoder.weight": w["W_enc"].T.contiguous(), "encoder.bias": w["b_enc"],
                "decoder.weight": w["W_dec"].T.contiguous(), "bias": w["b_dec"]}, ae_pt)

    rows = {}
    for name, path, hook in (("mechrec", tmp_path / "mechrec", []),
                             ("sparsify", sparsify, ["--hook", PAPER_HOOK])):
        out = tmp_path / f"{name}.json"
        result = run_cli("sae", "eval", paper_run_dir, path, "--out", out, *hook, *data_args)
        assert result.exit_code == 0, result.output
        rows[name] = {row["model"]: row for row in json.loads(out.read_text())["rows"]}
    for model in ("replace", "replace + error"):
        # (rmse and explained variance are in each SAE's normalised space: raw for these)
        for key in ("ndcg", "hit_rate", "coverage", "l0"):
            if rows["mechrec"][model].get(key) is not None:
                assert rows["sparsify"][model][key] == pytest.approx(
                    rows["mechrec"][model][key], rel=1e-4, abs=1e-5), (model, key)
    assert_one_line_error(run_cli("sae", "eval", paper_run_dir, sparsify, *data_args),
                          "--hook HOOK")

    # align tables on the ae.pt file itself: tables beside it, features as the mechrec SAE's
    result = run_cli("align", "tables", paper_run_dir, ae_pt, "--hook", PAPER_HOOK,
                     "--bootstrap", "0", "--no-decades", *data_args)
    assert result.exit_code == 0, result.output
    per_genre = json.loads((ae_pt.parent / "alignment" / "alignment.json").read_text())
    assert per_genre["hook_name"] == PAPER_HOOK
    x = paper_experiment.activations("test", PAPER_HOOK).activations[:200]
    theirs = paper_experiment.sae(ae_pt, hook_name=PAPER_HOOK)
    assert theirs.provenance["converted_from"]["format"] == "dictionary_learning"
    with torch.no_grad():
        assert float((theirs.encode(x) - paper_sae.encode(x)).abs().max()) < 1e-4
