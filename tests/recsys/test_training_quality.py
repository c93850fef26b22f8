"""Full-size GPTRec on ml-100k against popularity (slow: minutes of training per split).

Leave-one-out has ~940 test users, so one target each is decisive. The paper split has only
80 scorable test users; one target each leaves GPTRec vs popularity to chance (NDCG SE ~0.02),
so that split is judged on each test user's last 20 items, averaged per user.
"""

from __future__ import annotations

import pytest
from mechrec_recsys.data import load_dataset
from mechrec_recsys.data.splits import make_split
from mechrec_recsys.model import GPTRecConfig
from mechrec_recsys.training import TrainConfig, train_and_evaluate

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("kind", "targets_per_user", "min_ndcg_ratio"), [("loo", 1, 1.5), ("paper", 20, 1.2)]
)
def test_paper_sized_gptrec_beats_popularity_on_ml100k(
    tmp_path, data_dir, kind: str, targets_per_user: int, min_ndcg_ratio: float
) -> None:
    split = make_split(load_dataset("ml-100k", data_dir, download=False), kind, seed=0,
                       max_len=10**9)
    run = train_and_evaluate(split, model_config=GPTRecConfig(),
                             train_config=TrainConfig(progress=False), out_dir=tmp_path,
                             targets_per_user=targets_per_user)
    gptrec = run.comparison.reports["GPTRec"].metrics
    popularity = run.comparison.reports["Popularity"].metrics
    assert gptrec["ndcg"].mean > min_ndcg_ratio * popularity["ndcg"].mean
    assert gptrec["hit_rate"].mean > popularity["hit_rate"].mean
    assert gptrec["coverage"].mean > popularity["coverage"].mean
    assert run.comparison.paired["ndcg"].mean > 2 * run.comparison.paired["ndcg"].se
