"""SAE training stopped part-way (Ctrl-C) resumes from its checkpoint exactly: the finished SAE
and its log equal those of a run that was never interrupted."""

from __future__ import annotations

import pytest
import torch
from tiny_model import make_token_batches

from mechrec.activations import collect_activations
from mechrec.saes import SAETrainingConfig, TrainingCheckpoint, train_sae

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def acts(tiny_model):
    return collect_activations(tiny_model, make_token_batches(n_batches=12, seed=1), HOOK)


def _interrupt_at(step: int):
    def progress(record: dict[str, float]) -> None:
        if record["step"] == step:
            raise KeyboardInterrupt
    return progress


@pytest.mark.parametrize("architecture", ["standard", "topk", "jumprelu"])
def test_interrupted_training_resumes_exactly(acts, tmp_path, architecture):
    config = SAETrainingConfig(architecture=architecture, d_sae=48, k=6, target_l0=6,
                               steps=120, batch_size=64, lr_warm_up_steps=10,
                               dead_feature_window=20, resample_dead_every=40)
    straight = train_sae(acts, config, log_every=20)
    checkpoint = TrainingCheckpoint(tmp_path / "ckpt", every=30, identity={"rows": len(acts)})
    with pytest.raises(KeyboardInterrupt):
        train_sae(acts, config, log_every=20, progress=_interrupt_at(80), checkpoint=checkpoint)
    assert checkpoint.saved_step() == 60  # the last save before the interrupt
    seen: list[int] = []
    resumed = train_sae(acts, config, log_every=20, checkpoint=checkpoint,
                        progress=lambda r: seen.append(int(r["step"])))
    assert seen == [80, 100, 120]  # steps 61.. ran again, nothing before
    for name, tensor in straight.sae.sae.state_dict().items():
        assert torch.equal(tensor, resumed.sae.sae.state_dict()[name]), name
    assert resumed.history == straight.history
    assert resumed.n_resampled == straight.n_resampled
    assert resumed.dead_fraction_train == straight.dead_fraction_train


def test_a_checkpoint_of_other_settings_is_refused(acts, tmp_path):
    config = SAETrainingConfig(d_sae=48, steps=60, batch_size=64, lr_warm_up_steps=10)
    checkpoint = TrainingCheckpoint(tmp_path / "ckpt", every=20)
    with pytest.raises(KeyboardInterrupt):
        train_sae(acts, config, log_every=20, progress=_interrupt_at(40),
                  checkpoint=checkpoint)
    other = TrainingCheckpoint(tmp_path / "ckpt", every=20)
    with pytest.raises(ValueError, match=r"other settings \(config: .*d_sae"):
        train_sae(acts, config.with_overrides(d_sae=32), checkpoint=other)
    checkpoint.clear()
    assert not (tmp_path / "ckpt").exists()
