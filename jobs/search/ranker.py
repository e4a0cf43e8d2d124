"""A learned search ranker: LightGBM's LambdaRank over the candidates' features.

Fitted on the searches of earlier days (each search one query group, labels its graded
interactions), early-stopped on a later day's searches by their NDCG@10, so the number of
trees is chosen on validation data, never on the test night. The LightGBM settings are
jobs/common/lambdarank.py's (shared with the gradient-boosted fusion), not tuned on any
data. bench/README.md ("Search ranker fit time") has the validation figures of the
truncation level.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jobs.common.lambdarank import RankingRows, booster_trees, fit_lambdarank, gain_shares, learnable

OPTIMIZED_CUTOFF = 10  # the rankers are early-stopped and reported on NDCG@10
__all__ = ["RankingRows", "learnable", "SearchRanker"]


@dataclasses.dataclass
class ScoredSearch:
    """One search's place in RankingRows: its rows, its candidates (retrieval order) and what it
    found relevant ({item: grade >= 1}, candidates or not). position: its index in the input."""
    position: int
    rows: slice
    candidates: np.ndarray
    relevance: dict


def retrieve_all(index, queries, n_candidates: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(candidates, bm25 scores) of each query: the lexical index's top n_candidates."""
    return [index.search(query, n_candidates) for query in queries]


def candidate_rows(queries, profile_rows, relevances, retrieved, catalog, profiles,
                   extra_features=None, n_extra: int = 0) -> tuple[RankingRows, list[ScoredSearch]]:
    """Describe the retrieved candidates of every search that has a relevant item.

    queries, profile_rows (the row of `profiles` describing the searcher), relevances and
    retrieved (retrieve_all's) are parallel; extra_features(position, candidates) ->
    [candidates, n_extra] appends columns after jobs.search.features.ALL_FEATURES. A search
    whose query matches nothing keeps an empty slice: every metric 0, no rows to learn from.
    """
    from jobs.search.features import ALL_FEATURES, candidate_features

    features, grades, groups, scored = [], [], [], []
    start = 0
    for position, (query, profile_row, relevant, (candidates, bm25)) in enumerate(
            zip(queries, profile_rows, relevances, retrieved)):
        if not relevant:
            continue
        if len(candidates):
            block = candidate_features(query, profile_row, candidates, bm25, catalog, profiles)
            if extra_features is not None:
                block = np.hstack([block, extra_features(position, candidates)])
            features.append(block)
            grades.append(np.array([relevant.get(item, 0) for item in candidates]))
            groups.append(len(candidates))
        scored.append(ScoredSearch(position, slice(start, start + len(candidates)), candidates, relevant))
        start += len(candidates)
    width = len(ALL_FEATURES) + n_extra
    rows = RankingRows(np.vstack(features) if features else np.zeros((0, width)),
                       np.concatenate(grades) if grades else np.zeros(0, dtype=np.int64),
                       np.array(groups, dtype=np.int64))
    return rows, scored


def subset(rows: RankingRows, scored: list[ScoredSearch], keep) -> RankingRows:
    """The rows of the searches whose position keep(position) accepts, in order."""
    picked = [search.rows for search in scored if keep(search.position) and search.rows.stop > search.rows.start]
    index = np.concatenate([np.arange(part.start, part.stop) for part in picked]) if picked else np.zeros(0, int)
    return RankingRows(rows.features[index], rows.grades[index],
                       np.array([part.stop - part.start for part in picked], dtype=np.int64))


def renumbered(searches: list[ScoredSearch]) -> list[ScoredSearch]:
    """The searches with their rows numbered from 0, in order: where subset(...) of exactly these
    searches puts each one's rows."""
    sizes = [search.rows.stop - search.rows.start for search in searches]
    offsets = np.cumsum([0] + sizes)
    return [dataclasses.replace(search, rows=slice(int(offsets[i]), int(offsets[i + 1])))
            for i, search in enumerate(searches)]


class SearchRanker:
    def __init__(self, feature_names: tuple[str, ...], booster):
        self.feature_names, self.booster = feature_names, booster

    @classmethod
    def fit(cls, train: RankingRows, valid: RankingRows, feature_names: tuple[str, ...], columns: list[int],
            seed: int = 0, init_model: "SearchRanker | None" = None) -> "SearchRanker":
        """columns: which feature columns of the rows this ranker uses (feature_names, in order).
        init_model (same features): more trees from its scores on, one model with both's trees."""
        booster = fit_lambdarank(RankingRows(train.features[:, columns], train.grades, train.groups),
                                 RankingRows(valid.features[:, columns], valid.grades, valid.groups),
                                 list(feature_names), OPTIMIZED_CUTOFF, seed,
                                 None if init_model is None else init_model.booster)
        return cls(tuple(feature_names), booster)

    def score(self, features: np.ndarray) -> np.ndarray:
        return self.booster.predict(features, num_iteration=self.booster.best_iteration or None)

    @property
    def trees(self) -> int:
        return booster_trees(self.booster)

    def importances(self) -> dict[str, float]:
        """Each feature's share of the total split gain."""
        return gain_shares(self.booster, self.feature_names)
