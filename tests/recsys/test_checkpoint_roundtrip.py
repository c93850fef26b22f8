"""GPTRec checkpoints: identical scores after a round trip, clear errors on bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from mechrec_recsys.checkpoint import (
    atomic_write_json,
    check_vocab_matches,
    load_checkpoint,
    load_run_state,
    save_checkpoint,
    save_run_state,
    write_tensors,
)
from mechrec_recsys.model import GPTRecConfig, build_gptrec, last_position_scores
from mechrec_recsys.sequences import left_pad
from mechrec_recsys.vocab import ItemVocab

CFG = GPTRecConfig(n_layers=2, n_heads=2, d_model=16, d_mlp=32, max_len=12, dropout=0.1)
VOCAB = ItemVocab(np.array([3, 10, 11, 42, 57, 90, 91, 200, 201, 999]))


@pytest.fixture
def trained_model():
    model = build_gptrec(VOCAB.size, CFG)
    with torch.no_grad():  # perturb every parameter so the round trip has something to keep
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def batch():
    rng = np.random.default_rng(0)
    return left_pad([rng.integers(1, VOCAB.size, n) for n in (3, 12, 7)])


def test_round_trip_gives_identical_scores(tmp_path, trained_model) -> None:
    save_checkpoint(tmp_path / "ckpt", trained_model, VOCAB, metadata={"note": "x"})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json", "model.safetensors"]  # no temp files left behind
    loaded = load_checkpoint(tmp_path / "ckpt", expected_vocab=VOCAB)
    tokens, mask = batch()
    assert torch.equal(last_position_scores(loaded.model, tokens, mask),
                       last_position_scores(trained_model, tokens, mask))
    assert loaded.config == CFG and loaded.metadata == {"note": "x"}
    assert (loaded.vocab.item_ids == VOCAB.item_ids).all()
    assert loaded.model.W_U.data_ptr() == loaded.model.W_E.data_ptr()
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["vocab"]["item_ids"] == VOCAB.item_ids.tolist()


def test_vocabulary_mismatch_is_refused(tmp_path, trained_model) -> None:
    save_checkpoint(tmp_path / "ckpt", trained_model, VOCAB)
    other = ItemVocab(np.array([3, 10, 11, 42, 57, 90, 91, 200, 201, 1000]))
    with pytest.raises(ValueError, match="does not match the data"):
        load_checkpoint(tmp_path / "ckpt", expected_vocab=other)
    with pytest.raises(ValueError, match="1 only in the model, 1 only in the data"):
        check_vocab_matches(VOCAB, other)
    with pytest.raises(ValueError, match="vocabulary has"):
        save_checkpoint(tmp_path / "bad", trained_model, other.__class__(other.item_ids[:5]))


def test_corrupted_or_mismatched_files_raise(tmp_path, trained_model) -> None:
    path = save_checkpoint(tmp_path / "ckpt", trained_model, VOCAB)
    weights = path / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-8] + b"\0" * 8)
    with pytest.raises(ValueError, match="does not match the hash"):
        load_checkpoint(path)
    weights.write_bytes(original)

    config = json.loads((path / "config.json").read_text())
    config["model_config"]["d_model"] = 32
    atomic_write_json(path / "config.json", config)
    with pytest.raises(ValueError, match="has shape"):
        load_checkpoint(path)

    config["model_config"]["d_model"] = 16
    config["vocab_size"] = 3
    atomic_write_json(path / "config.json", config)
    with pytest.raises(ValueError, match="disagrees"):
        load_checkpoint(path)

    (path / "config.json").write_text('{"format": "mechrec.gptrec/1",\n "vocab": [1,}')
    with pytest.raises(ValueError, match=r"line 2, column"):
        load_checkpoint(path)
    (path / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not a GPTRec checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="checkpoint directory not found"):
        load_checkpoint(tmp_path / "missing")


def test_plain_transformer_lens_models_are_refused(tmp_path) -> None:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    plain = HookedTransformer(HookedTransformerConfig(
        n_layers=1, d_model=8, n_heads=1, d_head=8, d_vocab=VOCAB.size, n_ctx=4, act_fn="relu"))
    with pytest.raises(ValueError, match="not a GPTRec model"):
        save_checkpoint(tmp_path / "x", plain, VOCAB)


def test_run_state_round_trip_and_torn_writes(tmp_path, trained_model) -> None:
    optimizer = torch.optim.Adam(trained_model.parameters(), lr=0.01)
    tokens, mask = batch()
    trained_model(tokens, attention_mask=mask)[:, -1, 1:].logsumexp(-1).sum().backward()
    optimizer.step()
    state = {k: v.clone() for k, v in trained_model.state_dict().items()}
    save_run_state(tmp_path, model_state=state, best_state=state, optimizer=optimizer,
                   info={"epoch": 3})
    loaded = load_run_state(tmp_path)
    assert loaded.info["epoch"] == 3
    assert all(torch.equal(loaded.model[k], v) and torch.equal(loaded.best[k], v)
               for k, v in state.items())
    fresh = torch.optim.Adam(trained_model.parameters(), lr=0.5)
    loaded.restore_optimizer(fresh)
    for param in trained_model.parameters():
        a, b = optimizer.state[param], fresh.state[param]
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["step"], b["step"])
    assert fresh.param_groups[0]["lr"] == 0.01
    # New tensors written but the JSON (the commit point) not: the pair is refused.
    write_tensors(tmp_path / "train_state.safetensors", {"x": torch.zeros(1)})
    with pytest.raises(ValueError, match="does not match the hash"):
        load_run_state(tmp_path)
    assert load_run_state(tmp_path / "nothing-here") is None
