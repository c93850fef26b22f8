"""SAE training logged to wandb (offline) through sae-lens' own trainer logging: the run
receives sae-lens' train-step metrics, and the trained SAE is identical without tracking;
the tracking settings round-trip through the config dict and old configs still load."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
from tiny_model import make_token_batches
from wandb_offline import run_dirs, run_id_of, wandb_history, wandb_records

from mechrec.activations import collect_activations
from mechrec.saes import SAETrainingConfig, TrainingCheckpoint, train_sae

HOOK = "blocks.0.hook_resid_post"
#: What sae-lens' ``build_train_step_log_dict`` logs on every logging step.
TRAIN_STEP_KEYS = ("losses/overall_loss", "losses/mse_loss", "metrics/l0",
                   "metrics/explained_variance", "sparsity/dead_features",
                   "details/current_learning_rate", "details/n_training_samples")


def stop_at_step_20(record: dict[str, float]) -> None:
    """A ``progress`` callback that interrupts training at its step-20 record (as Ctrl-C)."""
    if record["step"] == 20:
        raise KeyboardInterrupt


@pytest.fixture(scope="module")
def acts(tiny_model):
    return collect_activations(tiny_model, make_token_batches(n_batches=6, seed=2), HOOK)


@pytest.mark.parametrize("architecture", ["standard", "topk"])
def test_wandb_gets_sae_lens_metrics_and_training_is_unchanged(acts, offline_wandb: Path,
                                                               architecture: str):
    config = SAETrainingConfig(architecture=architecture, d_sae=32, k=4, steps=40,
                               batch_size=32, dead_feature_window=10, seed=3)
    plain = train_sae(acts, config, log_every=10)
    tracked_config = config.with_overrides(log_to="wandb", wandb_project="mechrec-tests",
                                           run_name=f"tiny-{architecture}",
                                           wandb_log_frequency=5)
    tracked = train_sae(acts, tracked_config, log_every=10)

    for name, tensor in plain.sae.sae.state_dict().items():
        assert torch.equal(tensor, tracked.sae.sae.state_dict()[name]), name
    assert tracked.history == plain.history
    assert tracked.dead_fraction_train == plain.dead_fraction_train

    (run_dir,) = run_dirs(offline_wandb)
    rows = wandb_history(run_dir)
    train_rows = [row for row in rows if "losses/overall_loss" in row]
    for key in TRAIN_STEP_KEYS:
        assert all(key in row for row in train_rows), key
    # every 5th step in sae-lens' numbering (step n is logged as n - 1, as fit() does)
    assert [row["_step"] for row in train_rows] == [4, 9, 14, 19, 24, 29, 34, 39]
    assert train_rows[-1]["details/n_training_samples"] == 40 * 32
    assert train_rows[-1]["losses/overall_loss"] == pytest.approx(plain.history[-1]["loss"],
                                                                  rel=1e-5)
    assert train_rows[-1]["metrics/l0"] == pytest.approx(plain.history[-1]["l0"], rel=1e-5)
    # the feature-density log of every sparsity window (10 steps), the last one at the end
    sparsity = [row["_step"] for row in rows if "metrics/mean_log10_feature_sparsity" in row]
    assert sparsity == [10, 20, 30, 40]


def test_an_active_wandb_run_is_used_and_left_open(acts, offline_wandb: Path):
    import wandb

    config = SAETrainingConfig(d_sae=16, steps=20, batch_size=32, log_to="wandb",
                               wandb_log_frequency=10)
    run = wandb.init(project="mine")
    try:
        train_sae(acts, config)
        assert wandb.run is run
    finally:
        wandb.finish()
    (run_dir,) = run_dirs(offline_wandb)
    assert any("losses/overall_loss" in row for row in wandb_history(run_dir))


def test_tracking_fields_round_trip_and_old_configs_load():
    old = SAETrainingConfig(d_sae=64).to_dict()
    assert not {"log_to", "wandb_project", "run_name", "wandb_log_frequency"} & set(old)
    assert SAETrainingConfig.from_dict(old) == SAETrainingConfig(d_sae=64)
    tracked = SAETrainingConfig(d_sae=64, log_to="wandb", run_name="a")
    data = tracked.to_dict()
    assert data["log_to"] == "wandb" and data["run_name"] == "a"
    assert "wandb_project" not in data  # at its default
    assert SAETrainingConfig.from_dict(json.loads(json.dumps(data))) == tracked
    assert tracked.to_dict(tracking=False) == old
    with pytest.raises(ValueError, match="log_to must be None or one of wandb, mlflow"):
        SAETrainingConfig(log_to="tensorboard")
    with pytest.raises(ValueError, match="wandb_log_frequency must be"):
        SAETrainingConfig(wandb_log_frequency=0)


def test_a_checkpoint_resumes_with_tracking_turned_on_and_sae_lens_snapshots(acts, tmp_path: Path,
                                                      offline_wandb: Path):
    config = SAETrainingConfig(d_sae=16, steps=30, batch_size=32, lr_warm_up_steps=4,
                               n_checkpoints=2, checkpoint_path=str(tmp_path / "snapshots"))
    straight = train_sae(acts, config, log_every=10)
    shutil.rmtree(tmp_path / "snapshots")
    checkpoint = TrainingCheckpoint(tmp_path / "ckpt", every=10)

    with pytest.raises(KeyboardInterrupt):
        train_sae(acts, config, log_every=10, progress=stop_at_step_20, checkpoint=checkpoint)
    resumed = train_sae(acts, config.with_overrides(log_to="wandb"), log_every=10,
                        checkpoint=checkpoint)
    for name, tensor in straight.sae.sae.state_dict().items():
        assert torch.equal(tensor, resumed.sae.sae.state_dict()[name]), name
    # sae-lens' snapshots: the one before the interrupt kept, none repeated after resuming
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["352", "672"]


def test_sae_lens_checkpoints_are_saved_by_its_trainer_and_change_nothing(acts, tmp_path: Path):
    from sae_lens import TrainingSAE

    config = SAETrainingConfig(d_sae=16, steps=30, batch_size=32, seed=1)
    plain = train_sae(acts, config)
    folder = tmp_path / "sae-lens-checkpoints"
    saved = train_sae(acts, config.with_overrides(n_checkpoints=2,
                                                  checkpoint_path=str(folder)))
    for name, tensor in plain.sae.sae.state_dict().items():
        assert torch.equal(tensor, saved.sae.sae.state_dict()[name]), name
    # sae-lens spaces them evenly over the samples: after 10 and 20 of the 30 steps
    names = sorted((p.name for p in folder.iterdir()), key=int)
    assert names == [str(11 * 32), str(21 * 32)]
    for name in names:
        files = {p.name for p in (folder / name).iterdir()}
        assert {"cfg.json", "sae_weights.safetensors", "sparsity.safetensors",
                "trainer_state.pt"} <= files, files
    snapshot = TrainingSAE.load_from_disk(str(folder / names[-1]))
    assert snapshot.cfg.d_sae == 16


def test_checkpoints_need_a_folder_or_wandb():
    with pytest.raises(ValueError, match="n_checkpoints needs a checkpoint_path"):
        SAETrainingConfig(n_checkpoints=2)
    assert SAETrainingConfig(n_checkpoints=2, log_to="wandb").n_checkpoints == 2
    data = SAETrainingConfig(n_checkpoints=2, checkpoint_path="c").to_dict()
    assert data["n_checkpoints"] == 2 and data["checkpoint_path"] == "c"
    assert "n_checkpoints" not in SAETrainingConfig().to_dict()


def test_checkpoints_go_to_wandb_as_artifacts(acts, offline_wandb: Path):
    config = SAETrainingConfig(d_sae=16, steps=20, batch_size=32, log_to="wandb",
                               n_checkpoints=1)
    train_sae(acts, config)
    (run_dir,) = run_dirs(offline_wandb)
    wandb_history(run_dir)  # waits for the run to be written
    kinds = {record.WhichOneof("record_type")
             for record in wandb_records(next(run_dir.glob("*.wandb")))}
    assert "artifact" in kinds, kinds


class FakeRun:
    """An MLflow ``ActiveRun`` of :class:`FakeMlflow`: ``info.run_id``, and a context
    manager that ends the run."""

    def __init__(self, mlflow: FakeMlflow, run_id: str) -> None:
        self.mlflow, self.info = mlflow, types.SimpleNamespace(run_id=run_id)

    def __enter__(self) -> FakeRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.mlflow.end_run()


class FakeMlflow(types.ModuleType):
    """Stands in for the ``mlflow`` package (not a dependency): records every call; runs get
    the ids ``run-0``, ``run-1``... unless ``start_run(run_id=...)`` reopens one."""

    def __init__(self) -> None:
        super().__init__("mlflow")
        self.calls: list[tuple[str, tuple, dict]] = []
        self.run: FakeRun | None = None
        self.n_runs = 0
        self.calls_with_run: list[tuple[str, tuple, dict, str | None]] = []

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            if name == "start_run":
                run_id = kwargs.get("run_id") or f"run-{self.n_runs}"
                self.n_runs += "run_id" not in kwargs
                self.run = FakeRun(self, run_id)
            if name == "end_run":
                self.run = None
            self.calls_with_run.append((name, args, kwargs,
                                        None if self.run is None else self.run.info.run_id))
            return self.run if name in ("start_run", "active_run") else None
        return call

    def metrics_of(self) -> dict[str, list[dict]]:
        """The ``log_metrics`` calls by the run that was active then."""
        out: dict[str, list[dict]] = {}
        for name, args, _, run_id in self.calls_with_run:
            if name == "log_metrics":
                out.setdefault(run_id, []).append(args[0])
        return out


def test_mlflow_gets_the_log_records_and_training_is_unchanged(acts, monkeypatch):
    fake = FakeMlflow()
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    config = SAETrainingConfig(d_sae=16, steps=30, batch_size=32, seed=2)
    plain = train_sae(acts, config, log_every=10)
    tracked = train_sae(acts, config.with_overrides(log_to="mlflow", run_name="tiny",
                                                    mlflow_experiment="exp"), log_every=10)
    for name, tensor in plain.sae.sae.state_dict().items():
        assert torch.equal(tensor, tracked.sae.sae.state_dict()[name]), name
    names = [name for name, _, _ in fake.calls]
    assert names[:4] == ["active_run", "set_experiment", "start_run", "log_params"]
    assert names[-1] == "end_run"
    assert fake.calls[1][1] == ("exp",) and fake.calls[2][2] == {"run_name": "tiny"}
    params = fake.calls[3][1][0]
    assert params["d_sae"] == 16 and params["log_to"] == "mlflow"
    metrics = [(kwargs["step"], args[0]) for name, args, kwargs in fake.calls
               if name == "log_metrics"]
    assert [step for step, _ in metrics] == [10, 20, 30]
    for (_, logged), record in zip(metrics, plain.history, strict=True):
        assert logged == {k: v for k, v in record.items() if k != "step"}


def test_mlflow_missing_is_an_error_saying_how_to_install_it(acts, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow fails
    config = SAETrainingConfig(d_sae=16, steps=10, batch_size=32, log_to="mlflow")
    with pytest.raises(ModuleNotFoundError, match="pip install mlflow"):
        train_sae(acts, config)


def test_a_resumed_training_logs_into_the_run_it_started(acts, tmp_path: Path,
                                                          offline_wandb: Path):
    config = SAETrainingConfig(d_sae=16, steps=30, batch_size=32, log_to="wandb",
                               wandb_log_frequency=5, run_name="resumable")
    checkpoint = TrainingCheckpoint(tmp_path / "ckpt", every=10)

    with pytest.raises(KeyboardInterrupt):
        train_sae(acts, config, log_every=10, progress=stop_at_step_20, checkpoint=checkpoint)
    first = checkpoint.tracked_run()
    assert first is not None and first.tracker == "wandb" and first.owned
    resumed = train_sae(acts, config, log_every=10, checkpoint=checkpoint)
    assert resumed.tracked_run == first
    # offline wandb writes one folder per session, both named by the same run id
    folders = run_dirs(offline_wandb)
    assert len(folders) == 2
    assert {run_id_of(folder) for folder in folders} == {first.run_id}
    steps = [row["_step"] for row in wandb_history(folders[1]) if "losses/overall_loss" in row]
    # the last save was after step 10 (the stop at step 20 came before that step's save):
    # the resumed session logs from step 11 on (sae-lens numbers step n as n - 1)
    assert steps == [14, 19, 24, 29]


def test_a_resumed_mlflow_training_reopens_its_run(acts, tmp_path: Path, monkeypatch):
    fake = FakeMlflow()
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    config = SAETrainingConfig(d_sae=16, steps=30, batch_size=32, log_to="mlflow")
    checkpoint = TrainingCheckpoint(tmp_path / "ckpt", every=10)

    with pytest.raises(KeyboardInterrupt):
        train_sae(acts, config, log_every=10, progress=stop_at_step_20, checkpoint=checkpoint)
    resumed = train_sae(acts, config, log_every=10, checkpoint=checkpoint)
    assert resumed.tracked_run.run_id == "run-0" and fake.n_runs == 1
    starts = [kwargs for name, _, kwargs in fake.calls if name == "start_run"]
    assert starts[1] == {"run_id": "run-0"}
    # the resumed session logs no parameters again (they are the run's already)
    assert [name for name, _, _ in fake.calls].count("log_params") == 1


def test_a_tracked_sweep_logs_each_sae_with_its_evaluation(acts, monkeypatch):
    from mechrec.saes import sweep_saes

    fake = FakeMlflow()
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    base = SAETrainingConfig(d_sae=16, steps=20, batch_size=32, log_to="mlflow",
                             run_name="grid")
    rows = sweep_saes(acts, base, [{"l1_coefficient": 0.1}, {"l1_coefficient": 1.0}],
                      seeds=[0], evaluate=lambda nsae: {"score": float(nsae.sae.cfg.d_sae),
                                                       "label": "text", "missing": None})
    names = [kwargs.get("run_name") for name, _, kwargs in fake.calls
             if name == "start_run" and "run_id" not in kwargs]
    assert names == ["grid/l1_coefficient=0.1,seed=0", "grid/l1_coefficient=1.0,seed=0"]
    logged = fake.metrics_of()
    for run_id, row in zip(["run-0", "run-1"], rows, strict=True):
        summary = logged[run_id][-1]  # after the training's log records
        assert summary["score"] == 16.0 and summary["l1_coefficient"] == row["l1_coefficient"]
        assert summary["explained_variance"] == pytest.approx(row["explained_variance"])
        assert "label" not in summary and "missing" not in summary


def test_log_run_summary_reopens_the_wandb_run(acts, offline_wandb: Path):
    from mechrec.saes import log_run_summary

    config = SAETrainingConfig(d_sae=16, steps=10, batch_size=32, log_to="wandb",
                               run_name="summarised")
    result = train_sae(acts, config)
    sent = log_run_summary(result.tracked_run, config,
                           {"genre_corr": 0.25, "name": "x", "nan": float("nan")})
    assert sent == {"genre_corr": 0.25}
    folders = run_dirs(offline_wandb)
    assert {run_id_of(folder) for folder in folders} == {result.tracked_run.run_id}
    wandb_history(folders[-1])  # waits for the session to be written
    summary = {item.key: json.loads(item.value_json)
               for record in wandb_records(next(folders[-1].glob("*.wandb")))
               if record.WhichOneof("record_type") == "summary"
               for item in record.summary.update}
    assert summary["genre_corr"] == 0.25


def test_log_run_summary_prefixes_keys_in_a_shared_run(acts, offline_wandb: Path):
    import wandb

    from mechrec.saes import log_run_summary

    config = SAETrainingConfig(d_sae=16, steps=10, batch_size=32, log_to="wandb",
                               run_name="inner")
    wandb.init(project="mine")
    try:
        result = train_sae(acts, config)
        assert not result.tracked_run.owned
        assert log_run_summary(result.tracked_run, config, {"ev": 0.5}) == {"inner/ev": 0.5}
        assert wandb.run.summary["inner/ev"] == 0.5
    finally:
        wandb.finish()
