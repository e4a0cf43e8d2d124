"""Learning to rank with LightGBM's LambdaRank: rows grouped by query, early-stopped on held-out groups.

Shared by the search ranker (jobs/search/ranker.py; a group is one search) and the
gradient-boosted fusion (jobs/fusion/gradient_boosted.py; a group is one prefix and its
candidates). The settings are LightGBM's own defaults and documented advice, not tuned on
any data: its default learning rate and leaves, a truncation level of k + 3 for NDCG@k
(LightGBM's parameter docs), which also makes each boosting round cheaper than the default
30 (the pairwise gradients dominate a round), and as many trees as the held-out groups'
NDCG@k keeps improving within EARLY_STOPPING_ROUNDS, so the number of trees is chosen on
validation data, never on a test set.
"""

from __future__ import annotations

import dataclasses

import numpy as np

LEARNING_RATE = 0.1
MAX_TREES = 500
EARLY_STOPPING_ROUNDS = 30
NUM_LEAVES = 31
MIN_CHILD_SAMPLES = 50
THREADS = 2


@dataclasses.dataclass
class RankingRows:
    """Candidates of many queries: features [rows, F], grades [rows], group sizes (one per query, in row order)."""
    features: np.ndarray
    grades: np.ndarray
    groups: np.ndarray

    def __post_init__(self):
        if len(self.features) != len(self.grades) or int(np.sum(self.groups)) != len(self.grades):
            raise ValueError(f"rows do not add up: {len(self.features)} feature rows, {len(self.grades)} grades, "
                             f"groups summing to {int(np.sum(self.groups))}")


def learnable(rows: RankingRows) -> RankingRows:
    """Only the groups with a relevant candidate: a group of zeros has no pair to learn from."""
    ends = np.cumsum(rows.groups)
    starts = ends - rows.groups
    best = np.zeros(len(rows.groups), dtype=rows.grades.dtype if len(rows.grades) else np.int64)
    non_empty = rows.groups > 0
    if non_empty.any():
        best[non_empty] = np.maximum.reduceat(rows.grades, starts[non_empty])
    keep = best > 0
    kept = np.concatenate([np.arange(start, end) for start, end in zip(starts[keep], ends[keep])]) \
        if keep.any() else np.zeros(0, dtype=np.int64)
    return RankingRows(rows.features[kept], rows.grades[kept], rows.groups[keep].astype(np.int64))


def fit_lambdarank(train: RankingRows, valid: RankingRows, feature_names: list[str], cutoff: int, seed: int,
                   init_booster=None):
    """A LightGBM booster ranking train's groups, its trees early-stopped on valid's NDCG@cutoff.

    init_booster (same features): more trees from its scores on, one booster with both's trees.
    """
    import lightgbm

    model = lightgbm.LGBMRanker(objective="lambdarank", learning_rate=LEARNING_RATE, n_estimators=MAX_TREES,
                                num_leaves=NUM_LEAVES, min_child_samples=MIN_CHILD_SAMPLES, random_state=seed,
                                lambdarank_truncation_level=cutoff + 3, n_jobs=THREADS, verbose=-1)
    model.fit(train.features, train.grades, group=train.groups, feature_name=list(feature_names),
              eval_X=(valid.features,), eval_y=(valid.grades,), eval_group=[valid.groups],
              eval_at=[cutoff], init_model=init_booster,
              callbacks=[lightgbm.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)])
    return model.booster_


def booster_trees(booster) -> int:
    """The trees a booster predicts with: its best iteration when early stopping chose one."""
    return int(booster.best_iteration or booster.num_trees())


def gain_shares(booster, feature_names) -> dict[str, float]:
    """Each feature's share of the total split gain."""
    gain = booster.feature_importance(importance_type="gain")
    return {name: round(float(value / max(gain.sum(), 1e-12)), 4) for name, value in zip(feature_names, gain)}
