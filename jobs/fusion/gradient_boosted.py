"""Model-level fusion with gradient boosting: LightGBM's LambdaRank re-ranks the members' candidates.

The logistic stacker (model_level.StackingRanker) weighs each member's signal the same for
every prefix. Trees can learn what the ensembles of the recommender challenges learn: whom
to trust when, e.g. session popularity on long prefixes that return to an item, the
sequence encoder right after a new item, popularity when the members disagree. For each
(prefix, candidate) pair of the union of the members' top-C lists the features are:

- per member: its own score, its score z-scored within the prefix, and its position in its
  top-C list (missing when it did not list the candidate);
- how many members list the candidate;
- the prefix: how often the candidate is in it, how many steps ago it last was (missing
  when never), and the prefix's length;
- the candidate: log(1 + its training popularity) and log(1 + its recent popularity), the
  count over the latest training data (a trend the overall count hides).

Each prefix is one query group whose only relevant candidate is the next item. The fit
prefixes are those of data no member trained on (the nightly valid day, the benchmark's
latest training sessions); a seeded share of their users (or sessions) early-stops the
trees by NDCG@20, so the number of trees is chosen on held-out prefixes, never on a test
set. The booster is saved in LightGBM's own text format beside the fuser's description.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from jobs.common.config import default_of
from jobs.common.lambdarank import RankingRows, booster_trees, fit_lambdarank, gain_shares, learnable
from jobs.evaluation.metrics import Scorer
from jobs.fusion import (Candidates, build_candidates, prefix_signals, read_fuser, scatter_to_catalog,
                         select_scorers, training_set, write_fuser)

BOOSTER_FILE = "booster.txt"
CUTOFF = 20  # the fusers are judged by recall@20 and MRR@20: early stopping on NDCG@20
DEFAULT_MAX_TRAIN_EXAMPLES = default_of("fusion.gbm_max_train_examples")
DEFAULT_STOPPING_SHARE = default_of("fusion.gbm_stopping_share")
SHARED_FEATURES = ("n_members_listing", "prefix_count", "prefix_steps_since_last", "prefix_length",
                   "log_popularity", "log_recent_popularity")


class GradientBoostedRanker:
    """LambdaRank meta-ranker (LightGBM) over the union of the base models' top-C lists."""

    name = "fusion_gbm"
    # A jobs.fusion.CandidateMemo shared with the other fusers of the same members (or None).
    candidate_memo = None

    def __init__(self, base_scorers: Sequence[Scorer], popularity: np.ndarray, recent_popularity: np.ndarray,
                 candidates_per_model: int = 50, booster=None,
                 max_train_examples: int = DEFAULT_MAX_TRAIN_EXAMPLES,
                 stopping_share: float = DEFAULT_STOPPING_SHARE, seed: int = 42):
        if not base_scorers:
            raise ValueError("fusion_gbm needs at least one base model")
        self.base_scorers = list(base_scorers)
        self.base_names = [scorer.name for scorer in self.base_scorers]
        self.popularity = _counts(popularity, "popularity")
        self.recent_popularity = _counts(recent_popularity, "recent_popularity")
        if self.popularity.shape != self.recent_popularity.shape:
            raise ValueError(f"fusion_gbm popularity and recent_popularity differ in length: "
                             f"{len(self.popularity)} and {len(self.recent_popularity)}")
        self.candidates_per_model = int(candidates_per_model)
        self.booster = booster
        self.max_train_examples = int(max_train_examples)
        if not 0.0 < stopping_share < 1.0:
            raise ValueError(f"fusion_gbm stopping_share must be strictly between 0 and 1, got {stopping_share}")
        self.stopping_share = float(stopping_share)
        self.seed = seed

    @property
    def feature_names(self) -> list[str]:
        per_member = [f"{name}.{kind}" for name in self.base_names for kind in ("score", "z_score", "rank")]
        return per_member + list(SHARED_FEATURES)

    def candidate_features(self, candidates: Candidates, prefixes: np.ndarray) -> np.ndarray:
        """float32 [n, S, F] in the order of feature_names; NaN is LightGBM's "missing"."""
        if len(self.popularity) != candidates.n_items + 1:
            raise ValueError(f"fusion_gbm popularity covers {len(self.popularity) - 1} items but the base models "
                             f"score {candidates.n_items}")
        n, slots, members = candidates.ranks.shape
        ranks = np.where(candidates.ranks > 0, candidates.ranks, np.nan).astype(np.float32)
        per_member = np.stack([candidates.scores, candidates.standardized_scores, ranks], axis=-1)
        signals = prefix_signals(candidates.items, prefixes)
        steps_since_last = np.where(signals[:, :, 1] > 0, 1.0 / np.maximum(signals[:, :, 1], 1e-12), np.nan)
        prefix_length = np.broadcast_to((np.asarray(prefixes) > 0).sum(axis=1)[:, None], (n, slots))
        shared = np.stack([(candidates.ranks > 0).sum(axis=2), signals[:, :, 0], steps_since_last, prefix_length,
                           np.log1p(self.popularity)[candidates.items],
                           np.log1p(self.recent_popularity)[candidates.items]], axis=-1)
        return np.concatenate([per_member.reshape(n, slots, 3 * members), shared], axis=2).astype(np.float32)

    def fit(self, examples, batch_size: int = 512, candidates: Candidates | None = None) -> dict:
        """Fit on examples, prefixes no member trained on (candidates: see training_set);
        returns the trees, rows and gain shares."""
        rows, candidates = training_set(self, examples, batch_size, candidates)
        features = self.candidate_features(candidates, examples.items[rows])
        labels = (candidates.items == examples.targets[rows][:, None]) & candidates.filled
        users = getattr(examples, "user_ids", None)  # None: every prefix its own shopper
        stopping = _stopping_examples(np.arange(len(rows)) if users is None else np.asarray(users)[rows],
                                      self.stopping_share, self.seed)
        fit_rows = learnable(_ranking_rows(features[~stopping], labels[~stopping], candidates.filled[~stopping]))
        stop_rows = learnable(_ranking_rows(features[stopping], labels[stopping], candidates.filled[stopping]))
        if not len(fit_rows.groups) or not len(stop_rows.groups):
            raise ValueError(f"fusion_gbm needs prefixes whose next item is among the candidates in both its fit "
                             f"and its early-stopping part; got {len(fit_rows.groups)} and {len(stop_rows.groups)} "
                             f"of {len(rows)} prefixes (raise fusion.candidates_per_model?)")
        self.booster = fit_lambdarank(fit_rows, stop_rows, self.feature_names, CUTOFF, self.seed)
        return {"trees": booster_trees(self.booster), "n_examples": int(len(rows)),
                "n_fit_groups": int(len(fit_rows.groups)), "n_stopping_groups": int(len(stop_rows.groups)),
                "n_fit_rows": int(len(fit_rows.grades)),
                "stopping_ndcg@20": float(self.booster.best_score["valid_0"][f"ndcg@{CUTOFF}"]),
                "gain_shares": gain_shares(self.booster, self.feature_names)}

    def score(self, items: np.ndarray, types: np.ndarray, gaps: np.ndarray | None = None) -> np.ndarray:
        """The booster's score for the candidates, -inf for every other item, [n, n_items + 1]."""
        if self.booster is None:
            raise RuntimeError("fusion_gbm must be fitted (or loaded) before scoring")
        candidates = build_candidates(self.base_scorers, items, types, self.candidates_per_model, gaps=gaps,
                                      memo=self.candidate_memo)
        filled = candidates.filled
        slot_scores = np.full(filled.shape, -np.inf, dtype=np.float64)
        if filled.any():
            slot_scores[filled] = self.booster.predict(self.candidate_features(candidates, items)[filled],
                                                       num_iteration=booster_trees(self.booster))
        return scatter_to_catalog(candidates, slot_scores)

    def save(self, directory: str) -> None:
        if self.booster is None:
            raise RuntimeError("fusion_gbm must be fitted before saving")
        write_fuser(directory, {"name": self.name, "level": "model", "base_models": self.base_names,
                                "candidates_per_model": self.candidates_per_model, "features": self.feature_names,
                                "trees": booster_trees(self.booster), "booster_file": BOOSTER_FILE},
                    {"popularity": self.popularity, "recent_popularity": self.recent_popularity})
        self.booster.save_model(os.path.join(directory, BOOSTER_FILE), num_iteration=booster_trees(self.booster))

    @classmethod
    def load(cls, directory: str, base_scorers: Mapping[str, Scorer]) -> "GradientBoostedRanker":
        import lightgbm

        description, arrays = read_fuser(directory, cls.name)
        missing = [name for name in ("popularity", "recent_popularity") if name not in arrays]
        booster_path = os.path.join(directory, description.get("booster_file", BOOSTER_FILE))
        if missing or not os.path.isfile(booster_path):
            raise ValueError(f"{directory} is not a complete fusion_gbm: missing {missing or booster_path}")
        scorers = select_scorers(base_scorers, description["base_models"], cls.name)
        ranker = cls(scorers, arrays["popularity"], arrays["recent_popularity"],
                     description["candidates_per_model"], lightgbm.Booster(model_file=booster_path))
        if ranker.feature_names != description["features"]:
            raise ValueError(f"{directory} was fitted on features {description['features']}, "
                             f"this code computes {ranker.feature_names}")
        return ranker


def _counts(values, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or (values < 0).any():
        raise ValueError(f"fusion_gbm {name} must be a vector [n_items + 1] of non-negative counts")
    return values


def _stopping_examples(groups: np.ndarray, share: float, seed: int) -> np.ndarray:
    """bool per example: its user (or session) is one of the seeded share held out to stop the trees.

    A user's prefixes are alike: split by example, the stopping part would share shoppers
    with the fit part and stop the trees too late.
    """
    keys = groups.astype(str)
    unique = np.unique(keys)
    if len(unique) < 2:
        raise ValueError(f"fusion_gbm needs the prefixes of at least 2 users or sessions to hold some out for "
                         f"early stopping; got {len(unique)}")
    n_stopping = min(len(unique) - 1, max(1, round(share * len(unique))))
    return np.isin(keys, np.random.default_rng(seed).permutation(unique)[:n_stopping])


def _ranking_rows(features: np.ndarray, labels: np.ndarray, filled: np.ndarray) -> RankingRows:
    """One row per filled slot, grouped by prefix (rows of a prefix are contiguous: boolean
    indexing walks the slots in row-major order)."""
    return RankingRows(features[filled], labels[filled].astype(np.int64), filled.sum(axis=1).astype(np.int64))
