"""Top-K recommendation and ranking metrics for next-item prediction.

Conventions: tokens as in :mod:`mechrec_recsys.vocab` (0 is padding, items ``1..N``). A top-K
array is ``(S, K)`` int64, best first; a slot holding 0 means "no item" (fewer than K items
could be recommended, e.g. after masking seen items in a tiny catalog). Every user has one
held-out target token and relevance is binary, so per-user NDCG@K is ``1 / log2(rank + 1)``
when the target is at 1-based ``rank <= K`` and 0 otherwise.

Test sets are small (the paper's split of ml-100k has about 94 users), so every ranking metric
comes with a standard error: analytic (sample standard deviation / sqrt(S)) for per-user means,
bootstrap over users for set-level metrics (coverage, diversity).

Modules: :mod:`.recommend` (top-K lists, popularity), :mod:`.ranking` (metrics),
:mod:`.uncertainty` (standard errors), :mod:`.report` (whole evaluations).
"""

from mechrec_recsys.metrics.ranking import (
    attribute_share_at_k,
    coverage_at_k,
    diversity_at_k,
    hit_rate_at_k,
    mrr_at_k,
    ndcg_at_k,
    target_ranks,
)
from mechrec_recsys.metrics.recommend import (
    PopularityRecommender,
    mask_seen,
    ndcg_all_positions,
    recommend_top_k,
    top_k_excluding,
    top_k_from_scores,
)
from mechrec_recsys.metrics.report import (
    Comparison,
    RankingReport,
    compare_with_popularity,
    evaluate_top_k,
    expand_last_targets,
)
from mechrec_recsys.metrics.uncertainty import (
    Estimate,
    bootstrap_se,
    mean_and_se,
    paired_difference,
)

__all__ = [
    "Comparison",
    "Estimate",
    "PopularityRecommender",
    "RankingReport",
    "attribute_share_at_k",
    "bootstrap_se",
    "compare_with_popularity",
    "coverage_at_k",
    "diversity_at_k",
    "evaluate_top_k",
    "expand_last_targets",
    "hit_rate_at_k",
    "mask_seen",
    "mean_and_se",
    "mrr_at_k",
    "ndcg_all_positions",
    "ndcg_at_k",
    "paired_difference",
    "recommend_top_k",
    "target_ranks",
    "top_k_excluding",
    "top_k_from_scores",
]
