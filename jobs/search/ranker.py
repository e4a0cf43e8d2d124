"""A learned search ranker: LightGBM's LambdaRank over the candidates' features.

Fitted on the searches of earlier days (each search one query group, labels its graded
interactions), early-stopped on a later day's searches by their NDCG@10, so the number of
trees is chosen on validation data, never on the test night. The remaining settings are
LightGBM's usual ones for LambdaRank with a small learning rate, not tuned on any data.
"""

from __future__ import annotations

import dataclasses

import numpy as np

LEARNING_RATE = 0.05
MAX_TREES = 500
EARLY_STOPPING_ROUNDS = 30
NUM_LEAVES = 31
MIN_CHILD_SAMPLES = 50


@dataclasses.dataclass
class RankingRows:
    """Candidates of many searches: features [rows, F], grades [rows], group sizes (one per search, in row order)."""
    features: np.ndarray
    grades: np.ndarray
    groups: np.ndarray

    def __post_init__(self):
        if len(self.features) != len(self.grades) or int(np.sum(self.groups)) != len(self.grades):
            raise ValueError(f"rows do not add up: {len(self.features)} feature rows, {len(self.grades)} grades, "
                             f"groups summing to {int(np.sum(self.groups))}")


class SearchRanker:
    def __init__(self, feature_names: tuple[str, ...], booster):
        self.feature_names, self.booster = feature_names, booster

    @classmethod
    def fit(cls, train: RankingRows, valid: RankingRows, feature_names: tuple[str, ...], columns: list[int],
            seed: int = 0) -> "SearchRanker":
        """columns: which feature columns of the rows this ranker uses (feature_names, in order)."""
        import lightgbm

        model = lightgbm.LGBMRanker(objective="lambdarank", learning_rate=LEARNING_RATE, n_estimators=MAX_TREES,
                                    num_leaves=NUM_LEAVES, min_child_samples=MIN_CHILD_SAMPLES, random_state=seed,
                                    n_jobs=2, verbose=-1)
        model.fit(train.features[:, columns], train.grades, group=train.groups,
                  eval_X=(valid.features[:, columns],), eval_y=(valid.grades,), eval_group=[valid.groups],
                  eval_at=[10],
                  callbacks=[lightgbm.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)])
        return cls(tuple(feature_names), model.booster_)

    def score(self, features: np.ndarray) -> np.ndarray:
        return self.booster.predict(features, num_iteration=self.booster.best_iteration or None)

    @property
    def trees(self) -> int:
        return int(self.booster.best_iteration or self.booster.num_trees())

    def importances(self) -> dict[str, float]:
        """Each feature's share of the total split gain."""
        gain = self.booster.feature_importance(importance_type="gain")
        return {name: round(float(value / max(gain.sum(), 1e-12)), 4) for name, value in zip(self.feature_names, gain)}
