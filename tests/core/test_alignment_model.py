"""The alignment toolkit end to end on a tiny non-recommender HookedTransformer.

Rows are the non-padding positions of the token batches, attributes are functions of the input
token, and the context of a top example is the tokens preceding it: the same shape of glue an
adapter writes, with no adapter code involved.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from mechrec.alignment import (
    alignment_stats,
    best_feature_table,
    compare_interpretability,
    p_top_k_table,
    random_projection_control,
    top_examples,
)


def collect_rows(model, batches, hook: str):
    """Activations at ``hook`` for every real position, with sequence, position and token."""
    acts, seqs, poss, toks, sequences = [], [], [], [], []
    offset = 0
    for tokens, mask in batches:
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=hook)
        real = mask.bool()
        first = real.long().argmax(dim=1)  # left padding: first real position
        b_idx, p_idx = real.nonzero(as_tuple=True)
        acts.append(cache[hook][b_idx, p_idx])
        seqs.append(b_idx + offset)
        poss.append(p_idx - first[b_idx])
        toks.append(tokens[b_idx, p_idx])
        sequences.extend(row[m].tolist() for row, m in zip(tokens, real, strict=True))
        offset += tokens.shape[0]
    return (
        torch.cat(acts),
        torch.cat(seqs).numpy(),
        torch.cat(poss).numpy(),
        torch.cat(toks).numpy(),
        sequences,
    )


def test_alignment_on_a_tiny_transformer(tiny_model, token_batches) -> None:
    acts, seq, pos, tok, sequences = collect_rows(
        tiny_model, token_batches, "blocks.0.hook_resid_post"
    )
    n, d = acts.shape
    assert n == int(sum(m.sum() for _, m in token_batches))
    attributes = pd.DataFrame({"even": tok % 2 == 0, "low": tok < 8, "token_id": tok.astype(float)})
    neurons = alignment_stats(acts, attributes)
    control = random_projection_control(acts, 4 * d, seed=0, active_fraction=0.2)
    random = alignment_stats(control, attributes)
    assert neurons.values["correlation"].shape == (d, 3)
    assert random.values["roc_auc"].shape == (4 * d, 3)
    assert np.isnan(neurons.table("roc_auc")["token_id"]).all()  # continuous: correlation only

    table = best_feature_table(neurons, "roc_auc")
    x = acts.numpy().astype(np.float64)
    aucs = [roc_auc_score(attributes["low"], x[:, j]) for j in range(d)]
    assert table.loc["low", "roc_auc"] == pytest.approx(max(aucs), abs=1e-9)
    assert table.loc["low", "feature"] == int(np.argmax(aucs))
    frame = compare_interpretability({"neurons": neurons, "random": random})
    assert {"neurons", "random", "attribute"} == set(frame.columns.get_level_values(0))

    best = int(table.loc["low", "feature"])

    def preceding(rows: np.ndarray) -> list[list[int]]:
        return [sequences[seq[r]][: pos[r]] for r in rows]

    ex = top_examples(
        acts,
        best,
        k=5,
        row_info={"sequence": seq, "position": pos, "token": tok},
        context=preceding,
        min_activation=None,
    )
    assert len(ex) == 5
    for _, row in ex.iterrows():
        assert sequences[row.sequence][row.position] == row.token
        assert len(row.context) == row.position
    shares = p_top_k_table(acts, [best], {"low": tok < 8, "even": lambda r: tok[r] % 2 == 0}, k=10)
    assert ((shares >= 0) & (shares <= 1)).all().all()
