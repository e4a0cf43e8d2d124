"""Non-learned baselines every model must beat, exposing the common scorer interface."""

from __future__ import annotations

import numpy as np

from jobs.schema import ITEM_IDX, POPULARITY


class PopularityScorer:
    """Recommends the items with the most events on the training days, to everyone.

    Training-day counts only (the `popularity` feature), so the validation and test days
    never leak into the ranking they are used to judge.
    """

    name = "popularity"

    def __init__(self, popularity: np.ndarray):
        popularity = np.asarray(popularity, dtype=np.float32)
        if popularity.ndim != 1 or len(popularity) < 2:
            raise ValueError(f"popularity must be a vector [n_items + 1] with n_items >= 1, got {popularity.shape}")
        if not np.isfinite(popularity).all() or (popularity < 0).any():
            raise ValueError("popularity counts must be finite and non-negative")
        self.popularity = popularity
        self._scores = popularity.copy()
        self._scores[0] = -np.inf  # index 0 is padding / out-of-vocabulary

    @classmethod
    def from_items(cls, items_df, n_items: int) -> "PopularityScorer":
        """Build from the items feature table (columns item_idx and popularity)."""
        missing = [column for column in (ITEM_IDX, POPULARITY) if column not in items_df.columns]
        if missing:
            raise ValueError(f"items table lacks column(s) {missing} needed by the popularity baseline")
        item_idx = items_df[ITEM_IDX].to_numpy(dtype=np.int64)
        if len(item_idx) and (item_idx.min() < 1 or item_idx.max() > n_items):
            raise ValueError(f"items table {ITEM_IDX} must lie in 1..{n_items}; found {item_idx.min()}..{item_idx.max()}")
        if len(np.unique(item_idx)) != len(item_idx):
            raise ValueError(f"items table has duplicate {ITEM_IDX} values")
        popularity = np.zeros(n_items + 1, dtype=np.float32)
        popularity[item_idx] = items_df[POPULARITY].fillna(0).to_numpy(dtype=np.float32)
        return cls(popularity)

    def score(self, items: np.ndarray, types: np.ndarray) -> np.ndarray:
        """The same popularity row for every example, [n, n_items + 1], column 0 = -inf."""
        return np.broadcast_to(self._scores, (len(items), len(self._scores))).copy()
