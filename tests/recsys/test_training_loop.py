"""Next-item training on synthetic sequences: learning, resume, early stopping, DDP, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from mechrec_recsys.checkpoint import load_checkpoint
from mechrec_recsys.model import GPTRecConfig, build_gptrec, last_position_scores
from mechrec_recsys.sequences import SequenceSet, left_pad
from mechrec_recsys.training import (
    TrainConfig,
    make_training_batches,
    next_item_loss,
    train_gptrec,
)
from mechrec_recsys.vocab import ItemVocab
from safetensors.torch import load_file

N_ITEMS = 40
MODEL = GPTRecConfig(n_layers=1, n_heads=2, d_model=16, d_mlp=32, max_len=16, dropout=0.1)
FAST = TrainConfig(epochs=4, batch_size=16, lr=5e-3, progress=False, patience=50)


def stride_sequences(n: int, seed: int) -> list[np.ndarray]:
    """Sequences that step through the catalog by 3: the next item is fully predictable."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        start = int(rng.integers(0, N_ITEMS))
        out.append((start + 3 * np.arange(rng.integers(4, 30))) % N_ITEMS + 1)
    return out


def synthetic_data(n_train: int = 120, n_val: int = 30):
    vocab = ItemVocab(np.arange(1000, 1000 + N_ITEMS))
    train = SequenceSet(np.arange(n_train), stride_sequences(n_train, 0))
    held = stride_sequences(n_val, 1)
    validation = SequenceSet(np.arange(n_val), [s[:-1] for s in held],
                             np.array([s[-1] for s in held]))
    return vocab, train, validation


def test_batches_hold_next_items_at_real_positions() -> None:
    rng = np.random.default_rng(0)
    sequences = [np.arange(1, n + 1) for n in (1, 2, 5, 40)]
    batches = make_training_batches(sequences, 2, max_len=8, rng=rng, window="last")
    rows = []
    for tokens, mask, targets in batches:
        assert (mask == (tokens != 0)).all() and (mask[:, -1] == 1).all()
        for t, m, y in zip(tokens, mask, targets, strict=True):
            real = m.bool()
            assert torch.equal(y[real][:-1], t[real][1:])
            rows.append([*t[real].tolist(), int(y[real][-1])])
    assert sorted(rows) == sorted([[1, 2], list(range(1, 6)), list(range(32, 41))])


def test_training_learns_and_writes_a_loadable_best_model(tmp_path) -> None:
    vocab, train, validation = synthetic_data()
    result = train_gptrec(train, vocab, validation=validation, model_config=MODEL,
                          train_config=FAST, out_dir=tmp_path)
    ndcgs = [h["val_ndcg"] for h in result.history]
    assert len(result.history) == 4 and ndcgs[-1] > ndcgs[0]
    assert result.best_val_ndcg == max(ndcgs) > 0.5
    assert not result.model.training
    loaded = load_checkpoint(tmp_path / "model", expected_vocab=vocab)
    tokens, mask = left_pad(validation.sequences, MODEL.max_len)
    assert torch.equal(last_position_scores(loaded.model, tokens, mask),
                       last_position_scores(result.model, tokens, mask))
    assert loaded.metadata["best_epoch"] == result.best_epoch


def test_sampled_softmax_trains() -> None:
    vocab, train, validation = synthetic_data()
    cfg = dataclasses.replace(FAST, loss="sampled", num_negatives=8)
    result = train_gptrec(train, vocab, validation=validation, model_config=MODEL,
                          train_config=cfg)
    assert result.best_val_ndcg > 0.3
    model = build_gptrec(vocab.size, MODEL)
    tokens, mask = left_pad([np.array([1, 2, 3]), np.array([5, 6])])
    targets = torch.tensor([[2, 3, 4], [0, 6, 7]])
    torch.manual_seed(0)
    loss = next_item_loss(model, tokens, mask, targets, num_negatives=30)
    torch.manual_seed(0)
    negatives = torch.randint(1, vocab.size, (30,))
    scores = model(tokens, attention_mask=mask)[mask.bool()]  # (5 real positions, V)
    expected = []
    for row, target in zip(scores, targets[mask.bool()], strict=True):
        others = negatives[negatives != target]  # accidental hits are dropped
        expected.append(-torch.log_softmax(torch.cat([row[target][None], row[others]]), 0)[0])
    assert torch.allclose(loss, torch.stack(expected).mean(), atol=1e-5)


def strip_time(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_interrupted_run_resumes_exactly(tmp_path) -> None:
    vocab, train, validation = synthetic_data()
    straight = train_gptrec(train, vocab, validation=validation, model_config=MODEL,
                            train_config=FAST, out_dir=tmp_path / "a")

    def interrupt_at_epoch_3(message: str) -> None:
        if message.startswith("epoch 3"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_gptrec(train, vocab, validation=validation, model_config=MODEL,
                     train_config=FAST, out_dir=tmp_path / "b", log=interrupt_at_epoch_3)
    assert not (tmp_path / "b" / "model").exists()
    resumed = train_gptrec(train, vocab, validation=validation, model_config=MODEL,
                           train_config=FAST, out_dir=tmp_path / "b")
    assert strip_time(resumed.history) == strip_time(straight.history)
    for (name, a), b in zip(straight.model.state_dict().items(),
                            resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    final_a = load_file(tmp_path / "a" / "train_state.safetensors")
    final_b = load_file(tmp_path / "b" / "train_state.safetensors")
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)

    # More epochs continue the finished run; other settings are refused.
    longer = train_gptrec(train, vocab, validation=validation, model_config=MODEL,
                          train_config=dataclasses.replace(FAST, epochs=5),
                          out_dir=tmp_path / "b")
    assert [h["epoch"] for h in longer.history] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="different settings or data"):
        train_gptrec(train, vocab, validation=validation, model_config=MODEL,
                     train_config=dataclasses.replace(FAST, lr=1e-2), out_dir=tmp_path / "b")
    fresh = train_gptrec(train, vocab, validation=validation, model_config=MODEL,
                         train_config=dataclasses.replace(FAST, epochs=1, lr=1e-2),
                         out_dir=tmp_path / "b", resume=False)
    assert len(fresh.history) == 1


def test_early_stopping_keeps_the_best_epoch() -> None:
    vocab, train, validation = synthetic_data()
    cfg = dataclasses.replace(FAST, epochs=20, lr=1e-9, patience=2)
    result = train_gptrec(train, vocab, validation=validation, model_config=MODEL,
                          train_config=cfg)
    assert result.stopped_early and result.best_epoch == 1
    assert len(result.history) == 4  # the best epoch, then patience + 1 without improvement


def test_bad_training_input_is_refused() -> None:
    vocab, train, _ = synthetic_data()
    with pytest.raises(ValueError, match="outside the item range"):
        train_gptrec(SequenceSet(np.arange(1), [np.array([1, N_ITEMS + 1])]), vocab,
                     model_config=MODEL, train_config=FAST)
    with pytest.raises(ValueError, match="empty"):
        train_gptrec(SequenceSet(np.arange(0), []), vocab, model_config=MODEL,
                     train_config=FAST)
    with pytest.raises(ValueError, match="no targets"):
        train_gptrec(train, vocab, validation=SequenceSet(np.arange(1), [np.array([1, 2])]),
                     model_config=MODEL, train_config=FAST)
    with pytest.raises(ValueError, match="2 or more items"):
        train_gptrec(SequenceSet(np.arange(2), [np.array([1]), np.array([2])]), vocab,
                     model_config=MODEL, train_config=FAST)
    with pytest.raises(ValueError, match="validation target token 0"):
        train_gptrec(train, vocab, validation=SequenceSet(np.arange(1), [np.array([1])],
                                                          np.array([0])),
                     model_config=MODEL, train_config=FAST)
    with pytest.raises(ValueError, match="loss must be"):
        TrainConfig(loss="bpr")


DDP_WORKER = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import torch
    from safetensors.torch import save_file
    sys.path.insert(0, os.environ["TEST_DIR"])
    from test_training_loop import FAST, MODEL, synthetic_data
    from mechrec_recsys.training import train_gptrec
    import dataclasses

    vocab, train, validation = synthetic_data()
    cfg = dataclasses.replace(FAST, epochs=3, batch_size=8)
    result = train_gptrec(train, vocab, validation=validation, model_config=MODEL,
                          train_config=cfg, out_dir=sys.argv[1])
    rank = int(os.environ["RANK"])
    save_file({k: v.contiguous() for k, v in result.model.state_dict().items()},
              os.path.join(sys.argv[1], f"rank{rank}.safetensors"))
    with open(os.path.join(sys.argv[1], f"hist{rank}.json"), "w") as handle:
        json.dump([h["val_ndcg"] for h in result.history], handle)
""")


def test_ddp_two_processes_keep_identical_replicas(tmp_path) -> None:
    worker = tmp_path / "worker.py"
    worker.write_text(DDP_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "TEST_DIR": os.path.dirname(os.path.abspath(__file__))}
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(worker), str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0 = load_file(out / "rank0.safetensors")
    rank1 = load_file(out / "rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    initial = build_gptrec(N_ITEMS + 1, MODEL).state_dict()
    assert not torch.equal(rank0["embed.W_E"], initial["embed.W_E"])  # it did train
    history = [json.loads((out / f"hist{r}.json").read_text()) for r in (0, 1)]
    assert history[0] == history[1] and len(history[0]) == 3  # same sharded validation
    assert json.loads((out / "train_state.json").read_text())["world_size"] == 2
    loaded = load_checkpoint(out / "model")
    assert torch.equal(loaded.model.state_dict()["embed.W_E"], rank0["embed.W_E"])
