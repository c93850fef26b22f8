"""Nothing lost, nothing silently wrong (issue 12, items 1-5, 9 and 10), on real files.

The session's ml-100k run and an SAE trained for it with :func:`train_run_sae` (so it records
its source model), damaged the ways a careless or hostile user would damage them.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from cli_checks import assert_one_line_error, run_cli
from mechrec_recsys.checkpoint import load_checkpoint, save_checkpoint
from mechrec_recsys.data import DataFormatError, load_movielens
from mechrec_recsys.equalizer import EqualizerSession
from mechrec_recsys.experiment import MODEL_DIR, Experiment
from mechrec_recsys.saes import load_run_sae, train_run_sae

from mechrec._io import exclusive_claim
from mechrec.saes import NormalizedSAE, SAETrainingConfig
from mechrec.saes.io import MANIFEST_FILENAME

TINY = SAETrainingConfig(architecture="standard", d_sae=64, l1_coefficient=0.1, steps=60,
                         batch_size=256, lr_warm_up_steps=6, seed=0)


@pytest.fixture(scope="module")
def data_args(data_dir: Path) -> list[str]:
    return ["--data-dir", str(data_dir / "ml-100k"), "--no-download"]


@pytest.fixture(scope="module")
def sae_home(paper_experiment: Experiment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``saes/good``: an SAE trained for the session's run."""
    home = tmp_path_factory.mktemp("integrity")
    train_run_sae(paper_experiment, TINY, run_dir=home, name="good")
    return home


@pytest.fixture
def sae_copy(sae_home: Path, tmp_path: Path) -> Path:
    """A fresh copy of the good SAE, to damage."""
    return Path(shutil.copytree(sae_home / "saes" / "good", tmp_path / "sae"))


@pytest.fixture(scope="module")
def user(paper_experiment: Experiment) -> str:
    return str(paper_experiment.part("test").users[0])


# ------------------------------------------------------------------ 1: lost work
def test_second_training_of_a_claimed_name_stops_with_a_clear_error(
        paper_run_dir: Path, data_args: list[str]) -> None:
    name = "claimed-by-another-run"
    lock = paper_run_dir / "saes" / f".{name}.lock"
    with exclusive_claim(lock, "another run"):  # what an overlapping 'sae train' holds
        result = run_cli("sae", "train", paper_run_dir, "--d-sae", "32", "--steps", "20",
                         "--batch-size", "256", "--no-progress", "--name", name, *data_args)
    assert_one_line_error(result, "is being written by another process")
    assert not (paper_run_dir / "saes" / name).exists()


def test_save_refuses_a_folder_that_appeared_while_training(
        paper_experiment: Experiment, tmp_path: Path) -> None:
    target = tmp_path / "saes" / "race"
    seen: list[int] = []

    def other_run_saves_meanwhile(record: dict[str, float]) -> None:
        if not seen:
            target.mkdir(parents=True)
            (target / "theirs.txt").write_text("the other run's SAE")
        seen.append(1)

    with pytest.raises(FileExistsError, match="already exists"):
        train_run_sae(paper_experiment, TINY, run_dir=tmp_path, name="race",
                      progress=other_run_saves_meanwhile)
    assert (target / "theirs.txt").read_text() == "the other run's SAE"
    # --overwrite still replaces on purpose, and the claim was released
    train_run_sae(paper_experiment, TINY, run_dir=tmp_path, name="race", overwrite=True)
    assert not (target / "theirs.txt").exists() and (target / MANIFEST_FILENAME).is_file()


# ------------------------------------------------------------------ 2: absurd values
def test_steering_value_that_overflows_the_model_is_an_error_naming_it(
        paper_run_dir: Path, sae_home: Path, user: str, data_args: list[str]) -> None:
    result = run_cli("steer", "user", paper_run_dir, sae_home / "saes" / "good", "--user",
                     user, "--genre", "Action", "--values", "0,1e30", *data_args)
    assert_one_line_error(result, "1e+30 makes the model's scores NaN or infinite")
    result = run_cli("steer", "user", "--help")
    assert "-10..10" in " ".join(result.output.split())


# ------------------------------------------------------------------ 3: corrupted files
def _flip(path: Path, n: int = 1000) -> None:
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")  # after the safetensors header
    for i in range(n):
        data[start + (i * 7919) % (len(data) - start)] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["sae_weights.safetensors", "normalizer.safetensors"])
def test_flipped_bytes_are_caught_by_the_recorded_hash(
        paper_experiment: Experiment, sae_copy: Path, name: str) -> None:
    _flip(sae_copy / name, 1000 if name.startswith("sae") else 20)
    with pytest.raises(ValueError, match=f"{name} does not match the hash recorded"):
        load_run_sae(paper_experiment, sae_copy)


def test_good_sae_loads_and_records_its_model(paper_experiment: Experiment,
                                              sae_home: Path) -> None:
    nsae = load_run_sae(paper_experiment, sae_home / "saes" / "good")
    assert nsae.source is not None and len(nsae.source["model_sha256"]) == 64
    assert nsae.source["hook_name"] == nsae.hook_name
    import sae_lens

    assert sae_lens.SAE.load_from_disk(str(sae_home / "saes" / "good")).cfg.d_sae == 64


# ------------------------------------------------------------------ 4: another model's SAE
@pytest.fixture(scope="module")
def other_run(paper_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run folder with another model of the same width (perturbed weights)."""
    other = tmp_path_factory.mktemp("other") / "run"
    shutil.copytree(paper_run_dir, other, ignore=shutil.ignore_patterns("saes"))
    checkpoint = load_checkpoint(other / MODEL_DIR)
    with torch.no_grad():
        for parameter in checkpoint.model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    save_checkpoint(other / MODEL_DIR, checkpoint.model, checkpoint.vocab,
                    metadata=checkpoint.metadata)
    return other


def test_sae_of_another_model_is_refused_unless_allowed(
        other_run: Path, sae_home: Path, user: str, data_args: list[str],
        data_dir: Path) -> None:
    sae = sae_home / "saes" / "good"
    common = ["--user", user, "--genre", "Action", "--values", "2", *data_args]
    result = run_cli("steer", "user", other_run, sae, *common)
    assert_one_line_error(result, "was trained on another model")
    assert "--allow-other-model" in result.output
    result = run_cli("steer", "user", other_run, sae, *common, "--allow-other-model")
    assert result.exit_code == 0, result.output
    with pytest.raises(ValueError, match="was trained on another model"):
        EqualizerSession.open(other_run, sae, data_dir=data_dir / "ml-100k", download=False,
                              probes=False)
    session = EqualizerSession.open(other_run, sae, data_dir=data_dir / "ml-100k",
                                    download=False, probes=False, allow_other_model=True)
    assert session.recommend(user)["original"]


def test_sae_moved_to_another_hook_is_refused(paper_experiment: Experiment, sae_copy: Path,
                                              tmp_path: Path) -> None:
    moved = NormalizedSAE.load(sae_copy, hook_name="blocks.1.hook_resid_post")
    moved.save(tmp_path / "moved")
    with pytest.raises(ValueError, match=r"trained at hook 'blocks\.0\.hook_resid_post'"):
        load_run_sae(paper_experiment, tmp_path / "moved")
    assert load_run_sae(paper_experiment, tmp_path / "moved", allow_other_model=True)


# ------------------------------------------------------------------ 5: damaged files
class _Payload:
    """Unpickling this would create the marker file: proof that nothing is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled!"))


def _damage(sae: Path, how: str, marker: Path) -> None:
    weights = sae / "sae_weights.safetensors"
    if how == "pickled weights":
        weights.write_bytes(pickle.dumps({"W_dec": _Payload(marker)}))
    elif how == "pickled normaliser":
        (sae / "normalizer.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    elif how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "wrong d_sae":
        cfg = sae / "cfg.json"
        cfg.write_text(cfg.read_text().replace('"d_sae": 64', '"d_sae": 65'))
    elif how == "cfg not json":
        (sae / "cfg.json").write_text("{not json")


DAMAGES = ["pickled weights", "pickled normaliser", "truncated weights", "wrong d_sae",
           "cfg not json"]


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "no-manifest"])
@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_sae_is_a_one_line_error_and_nothing_is_unpickled(
        paper_run_dir: Path, sae_copy: Path, tmp_path: Path, data_args: list[str], how: str,
        manifest: bool) -> None:
    marker = tmp_path / "marker.txt"
    _damage(sae_copy, how, marker)
    if not manifest:
        (sae_copy / MANIFEST_FILENAME).unlink()
    with pytest.raises(ValueError):
        NormalizedSAE.load(sae_copy)
    result = run_cli("sae", "eval", paper_run_dir, sae_copy, *data_args)
    assert_one_line_error(result, str(sae_copy))
    assert not marker.exists()


# ------------------------------------------------------------------ 9: changed data
def _copy_ml100k(data_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "ml-100k"
    shutil.copytree(data_dir / "ml-100k", folder)
    return folder


def test_reopening_a_run_on_changed_data_with_the_same_items_is_refused(
        paper_run_dir: Path, sae_home: Path, data_dir: Path, tmp_path: Path) -> None:
    folder = _copy_ml100k(data_dir, tmp_path)
    lines = (folder / "u.data").read_text().splitlines()
    reversed_time = []
    for line in lines:  # every history in reverse order; same users, items and ratings
        user, item, rating, stamp = line.split("\t")
        reversed_time.append(f"{user}\t{item}\t{rating}\t{2_000_000_000 - int(stamp)}")
    (folder / "u.data").write_text("\n".join(reversed_time) + "\n")
    with pytest.raises(ValueError, match="the data no longer matches the run"):
        Experiment.open(paper_run_dir, data_dir=folder, download=False)
    result = run_cli("sae", "eval", paper_run_dir, sae_home / "saes" / "good", "--data-dir",
                     folder, "--no-download")
    assert_one_line_error(result, "train a new run on this data")


# ------------------------------------------------------------------ 10: truncated u.data
def test_truncated_last_line_is_reported_with_file_and_line(data_dir: Path,
                                                            tmp_path: Path) -> None:
    folder = _copy_ml100k(data_dir, tmp_path)
    path = folder / "u.data"
    text = path.read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[1]
    user, item, rating, stamp = last.split("\t")
    cut = text[: len(text) - 1 - len(stamp) + 2]  # keep two digits of the last timestamp
    assert cut.endswith(f"{user}\t{item}\t{rating}\t{stamp[:2]}")
    path.write_text(cut)
    with pytest.raises(DataFormatError) as info:
        load_movielens(folder, "ml-100k")
    message = str(info.value)
    assert "u.data, line 100000" in message and "truncated" in message
    dataset = load_movielens(folder, "ml-100k", on_bad_rows="drop")
    assert dataset.num_interactions == 99_999
    assert dataset.report.dropped == {"malformed_row": 1}
    result = run_cli("data", "stats", "ml-100k", "--data-dir", folder, "--no-download")
    assert_one_line_error(result, "u.data, line 100000")
    # the untouched official file still loads whole (it ends with a line break)
    assert load_movielens(data_dir / "ml-100k", "ml-100k").num_interactions == 100_000


@pytest.mark.parametrize("text", ["[1, 2]", "{not json", '{"format": "other"}'])
def test_damaged_manifest_is_a_clear_error(sae_copy: Path, text: str) -> None:
    (sae_copy / MANIFEST_FILENAME).write_text(text)
    with pytest.raises(ValueError, match=MANIFEST_FILENAME.replace(".", r"\.")):
        NormalizedSAE.load(sae_copy)
