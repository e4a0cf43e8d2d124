"""Baselines every model must beat, exposing the common scorer interface.

Every scorer here is duck-typed like the rest of the system (jobs/evaluation/metrics.py): a `name`
and `score(items, types, gaps=None)` -> float32 [n, n_items + 1] for left-padded histories
items/types int32 [n, L] (most recent event in the last column), column 0 = -inf (padding is
never recommended). None of the baselines uses the time-gap buckets `gaps`: they accept
them, as every scorer must, and ignore them. The learned baselines are fitted on *training
sequences*: an iterable of 1-d arrays of item indices in time order, one per user or session
(`training_sequences` cuts them out of the nightly features; bench/models.py reads them from
a session file). Item index 0 (padding / out of catalog) in a sequence is skipped.

- PopularityScorer: global popularity (POP).
- SessionPopularityScorer: S-POP, the most frequent items of the current history.
- ItemKNNScorer: item-to-item cosine KNN over session co-occurrence (Item-KNN).
- ALSScorer: implicit-feedback matrix factorisation by Spark MLlib ALS, folded in per history.
"""

from __future__ import annotations

import json
import os
from typing import Iterable

import numpy as np

from jobs.common.schema import ITEM_IDX, POPULARITY, SPLIT, TIMESTAMPS

# float32 represents every integer below 2**24 exactly; S-POP's integer scores must stay below.
_FLOAT32_EXACT_INTEGERS = 2 ** 24


def checked_popularity(popularity, dtype) -> np.ndarray:
    """Per-item counts [n_items + 1] as dtype, with a clear error for anything else."""
    popularity = np.asarray(popularity, dtype=dtype)
    if popularity.ndim != 1 or len(popularity) < 2:
        raise ValueError(f"popularity must be a vector [n_items + 1] with n_items >= 1, got {popularity.shape}")
    if not np.isfinite(popularity).all() or (popularity < 0).any():
        raise ValueError("popularity counts must be finite and non-negative")
    return popularity


class PopularityScorer:
    """Recommends the items with the most events on the training days, to everyone.

    Training-day counts only (the `popularity` feature), so the validation and test days
    never leak into the ranking they are used to judge.
    """

    name = "popularity"

    def __init__(self, popularity: np.ndarray):
        popularity = checked_popularity(popularity, np.float32)
        self.popularity = popularity
        self.n_items = len(popularity) - 1
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
            raise ValueError(f"items table {ITEM_IDX} must lie in 1..{n_items}; "
                             f"found {item_idx.min()}..{item_idx.max()}")
        if len(np.unique(item_idx)) != len(item_idx):
            raise ValueError(f"items table has duplicate {ITEM_IDX} values")
        popularity = np.zeros(n_items + 1, dtype=np.float32)
        popularity[item_idx] = items_df[POPULARITY].fillna(0).to_numpy(dtype=np.float32)
        return cls(popularity)

    def score(self, items: np.ndarray, types: np.ndarray, gaps: np.ndarray | None = None) -> np.ndarray:
        """The same popularity row for every example, [n, n_items + 1], column 0 = -inf."""
        return np.broadcast_to(self._scores, (len(items), len(self._scores))).copy()


# --- Training sequences -----------------------------------------------------------------

def training_sequences(sequences_df, split: int) -> list[np.ndarray]:
    """Per user of features/sequences, the item indices of their `split` events, in time order.

    Users without such an event are left out. This is what the baselines' `fit` reads.
    """
    missing = [column for column in (ITEM_IDX, SPLIT) if column not in sequences_df.columns]
    if missing:
        raise ValueError(f"sequences table lacks column(s) {missing} needed to fit the baselines")
    selected = []
    for items, splits in zip(sequences_df[ITEM_IDX].to_numpy(), sequences_df[SPLIT].to_numpy()):
        chosen = np.asarray(items, dtype=np.int64)[np.asarray(splits) == split]
        if len(chosen):
            selected.append(chosen)
    return selected


def session_sequences(sequences_df, split: int, inactivity_gap_s: float) -> list[np.ndarray]:
    """Like training_sequences, but each user's events cut into sessions at gaps > inactivity_gap_s.

    Co-occurrence baselines (Item-KNN, ALS) learn from what is consumed *together*; a user's
    twelve days as one bag would pair last week's shoes with tonight's tent.
    """
    missing = [column for column in (ITEM_IDX, SPLIT, TIMESTAMPS) if column not in sequences_df.columns]
    if missing:
        raise ValueError(f"sequences table lacks column(s) {missing} needed to fit the baselines")
    sessions = []
    for items, splits, times in zip(sequences_df[ITEM_IDX].to_numpy(), sequences_df[SPLIT].to_numpy(),
                                    sequences_df[TIMESTAMPS].to_numpy()):
        chosen = np.asarray(splits) == split
        items, times = np.asarray(items, dtype=np.int64)[chosen], np.asarray(times, dtype=np.int64)[chosen]
        breaks = np.flatnonzero(np.diff(times) > inactivity_gap_s) + 1
        sessions.extend(part for part in np.split(items, breaks) if len(part))
    return sessions


def item_counts(sequences: Iterable[np.ndarray], n_items: int) -> np.ndarray:
    """float64 [n_items + 1]: how often each item occurs in the sequences (every event counts).

    This is POP's popularity and S-POP's tie-breaker; index 0 stays 0.
    """
    checked = list(_checked_sequences(sequences, n_items))
    events = np.concatenate(checked) if checked else np.zeros(0, dtype=np.int64)
    return np.bincount(events, minlength=n_items + 1).astype(np.float64)


def recent_item_counts(sequences_df, split: int, window_s: int, n_items: int) -> np.ndarray:
    """float64 [n_items + 1]: item_counts of the `split` events in the last window_s seconds of that split.

    The window ends at the split's latest event over all users (for the train split: the end
    of the last training day), so "recent" means the same hours for everyone.
    """
    missing = [column for column in (ITEM_IDX, SPLIT, TIMESTAMPS) if column not in sequences_df.columns]
    if missing:
        raise ValueError(f"sequences table lacks column(s) {missing} needed to count recent events")
    chosen_items, chosen_times = [], []
    for items, splits, times in zip(sequences_df[ITEM_IDX].to_numpy(), sequences_df[SPLIT].to_numpy(),
                                    sequences_df[TIMESTAMPS].to_numpy()):
        chosen = np.asarray(splits) == split
        chosen_items.append(np.asarray(items, dtype=np.int64)[chosen])
        chosen_times.append(np.asarray(times, dtype=np.int64)[chosen])
    times = np.concatenate(chosen_times) if chosen_times else np.zeros(0, dtype=np.int64)
    if not len(times):
        return np.zeros(n_items + 1)
    items = np.concatenate(chosen_items)
    return item_counts([items[times > times.max() - window_s]], n_items)


def _checked_sequences(sequences: Iterable[np.ndarray], n_items: int) -> Iterable[np.ndarray]:
    """Each sequence as int64 without padding 0; a clear error for ids outside 0..n_items."""
    for position, sequence in enumerate(sequences):
        sequence = np.asarray(sequence, dtype=np.int64)
        if sequence.ndim != 1:
            raise ValueError(f"training sequence {position} must be a 1-d array of item indices, "
                             f"got shape {sequence.shape}")
        if len(sequence) and (sequence.min() < 0 or sequence.max() > n_items):
            raise ValueError(f"training sequence {position} has item indices {sequence.min()}..{sequence.max()}; "
                             f"they must lie in 1..n_items={n_items} (0 = padding, skipped)")
        yield sequence[sequence != 0]


def _load_array(directory: str, file_name: str) -> np.ndarray:
    path = os.path.join(directory, file_name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: has train_baselines run for this night?")
    return np.load(path, allow_pickle=False)


def _write_settings(directory: str, name: str, settings: dict) -> None:
    with open(os.path.join(directory, f"{name}.json"), "w") as handle:
        json.dump(settings, handle, indent=2, sort_keys=True)


def _read_settings(directory: str, name: str) -> dict:
    path = os.path.join(directory, f"{name}.json")
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the {name} settings {path}: {error}") from None


def _check_histories(items: np.ndarray, n_items: int, scorer_name: str) -> np.ndarray:
    items = np.asarray(items)
    if items.ndim != 2:
        raise ValueError(f"{scorer_name}: histories must be an int array [n, L], got shape {items.shape}")
    if items.size and (items.min() < 0 or items.max() > n_items):
        raise ValueError(f"{scorer_name}: history item indices must lie in 0..n_items={n_items}, "
                         f"found {items.min()}..{items.max()}")
    return items.astype(np.int64)


def _first_occurrences(items: np.ndarray) -> np.ndarray:
    """bool [n, L]: True at exactly one position of each distinct non-padding item of a row."""
    order = np.argsort(items, axis=1, kind="stable")
    in_order = np.take_along_axis(items, order, axis=1)
    is_first = in_order != 0
    is_first[:, 1:] &= in_order[:, 1:] != in_order[:, :-1]
    first = np.zeros_like(is_first)
    np.put_along_axis(first, order, is_first, axis=1)
    return first


# --- S-POP --------------------------------------------------------------------------------

class SessionPopularityScorer:
    """S-POP: the items the current session clicked most, ties broken by global popularity.

    As defined among the baselines of GRU4Rec (Hidasi et al., ICLR 2016) and SR-GNN (Wu et
    al., AAAI 2019): score = count of the item in the history row, and among items with the
    same count (in particular every item the history never touched) the globally more
    popular one first -- so on an empty history it is exactly POP. Items with equal count
    and equal popularity tie (evaluation ranks ties conservatively).

    The score is the integer count * n_levels + popularity_level, where popularity_level is
    the dense rank 0..n_levels-1 of the item's global count: exact in float32 as long as it
    stays below 2**24 (checked), so ties are real ties and nothing else is.
    """

    name = "session_popularity"

    def __init__(self, popularity: np.ndarray):
        popularity = checked_popularity(popularity, np.float64)
        self.popularity = popularity
        levels, level_of_item = np.unique(popularity[1:], return_inverse=True)
        self.n_levels = len(levels)
        self.popularity_level = np.concatenate([[0], level_of_item]).astype(np.float32)  # [0] = padding
        self.n_items = len(popularity) - 1

    @classmethod
    def fit(cls, sequences: Iterable[np.ndarray], n_items: int) -> "SessionPopularityScorer":
        """Global popularity = event counts over the training sequences."""
        return cls(item_counts(sequences, n_items))

    def save(self, directory: str) -> None:
        np.save(os.path.join(directory, f"{self.name}.npy"), self.popularity)

    @classmethod
    def load(cls, directory: str) -> "SessionPopularityScorer":
        return cls(_load_array(directory, f"{cls.name}.npy"))

    def score(self, items: np.ndarray, types: np.ndarray, gaps: np.ndarray | None = None) -> np.ndarray:
        """float32 [n, n_items + 1]: count in the row's history * n_levels + popularity level."""
        items = _check_histories(items, self.n_items, self.name)
        if (items.shape[1] + 1) * self.n_levels >= _FLOAT32_EXACT_INTEGERS:
            raise ValueError(f"{self.name}: histories of length {items.shape[1]} with {self.n_levels} popularity "
                             "levels exceed float32's exact integers; shorten max_len")
        scores = np.repeat(self.popularity_level[None, :], len(items), axis=0)
        # Each occurrence adds n_levels: one more click outranks any popularity difference.
        rows = np.repeat(np.arange(len(items)), items.shape[1])
        np.add.at(scores, (rows, items.ravel()), np.float32(self.n_levels))
        scores[:, 0] = -np.inf  # also undoes the additions of padding positions
        return scores


# --- Item-KNN -----------------------------------------------------------------------------

class ItemKNNScorer:
    """Item-KNN: items similar to the current (last) item of the history.

    Item-to-item collaborative filtering (Sarwar et al., WWW 2001) in the session-based
    form of the GRU4Rec and SR-GNN baselines (Hidasi et al., ICLR 2016, section 4.1): an
    item is the binary vector of the training sessions it occurs in; two items are as
    similar as the cosine of those vectors, i.e. co-occurrence count / sqrt(n_i * n_j)
    with n_i the number of sessions containing item i, regularised in the denominator so
    that two rare items seen together once do not look perfectly similar:

        sim(i, j) = |S_i & S_j| / (n_i**alpha * n_j**(1 - alpha) + regularization)

    (alpha = 0.5 is the cosine). Only each item's `neighbours` most similar items are kept
    (a sparse scipy matrix). The defaults (100 neighbours, regularization 20, alpha 0.5) are
    those of the Item-KNN in the session-rec evaluation framework (Ludewig & Jannach, 2018).
    An item is not its own neighbour: the protocol recommends *other* items similar to the
    current one (`include_self=True` keeps the diagonal). On DIGINETICA (bench/models.py)
    that choice reproduces the published row -- 36.99 / 11.90 P@20 / MRR@20 against the
    published 35.75 / 11.57 -- while keeping the diagonal gives 45.41 / 16.79.

    Scoring follows the published protocol: the similarity to the last item of the
    history. With recency_decay = d the score is instead sum_k d**k * sim(item k steps
    back, j) over the whole history (a documented variant, not the published one).
    """

    name = "item_knn"

    def __init__(self, similarity, recency_decay: float | None = None):
        import scipy.sparse

        if recency_decay is not None and not 0.0 < recency_decay <= 1.0:
            raise ValueError(f"recency_decay must be None (last item only) or in (0, 1], got {recency_decay}")
        similarity = scipy.sparse.csr_matrix(similarity, dtype=np.float32)
        if similarity.shape[0] != similarity.shape[1] or similarity.shape[0] < 2:
            raise ValueError(f"similarity must be a square [n_items + 1, n_items + 1] matrix, got {similarity.shape}")
        self.similarity = similarity
        self.recency_decay = recency_decay
        self.n_items = similarity.shape[0] - 1

    @classmethod
    def fit(cls, sequences: Iterable[np.ndarray], n_items: int, neighbours: int = 100, regularization: float = 20.0,
            alpha: float = 0.5, include_self: bool = False, recency_decay: float | None = None) -> "ItemKNNScorer":
        """Co-occurrence within each training sequence (one session = one binary vector)."""
        if neighbours < 1:
            raise ValueError(f"neighbours must be >= 1, got {neighbours}")
        if regularization < 0 or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"need regularization >= 0 and 0 <= alpha <= 1, got {regularization} and {alpha}")
        incidence = _session_incidence(sequences, n_items)
        co_occurrence = (incidence.T @ incidence).tocoo()  # [i, j] = sessions holding both
        sessions_per_item = np.asarray(incidence.sum(axis=0)).ravel()
        rows, columns, together = co_occurrence.row, co_occurrence.col, co_occurrence.data.astype(np.float64)
        if not include_self:
            keep = rows != columns
            rows, columns, together = rows[keep], columns[keep], together[keep]
        denominator = sessions_per_item[rows] ** alpha * sessions_per_item[columns] ** (1.0 - alpha) + regularization
        similarity = _top_per_row(rows, columns, together / denominator, neighbours, n_items + 1)
        return cls(similarity, recency_decay)

    def save(self, directory: str) -> None:
        import scipy.sparse

        scipy.sparse.save_npz(os.path.join(directory, f"{self.name}.npz"), self.similarity)
        _write_settings(directory, self.name, {"recency_decay": self.recency_decay})

    @classmethod
    def load(cls, directory: str) -> "ItemKNNScorer":
        import scipy.sparse

        path = os.path.join(directory, f"{cls.name}.npz")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} does not exist: has train_baselines run for this night?")
        return cls(scipy.sparse.load_npz(path), _read_settings(directory, cls.name)["recency_decay"])

    def score(self, items: np.ndarray, types: np.ndarray, gaps: np.ndarray | None = None) -> np.ndarray:
        """float32 [n, n_items + 1]: similarity of each item to the history's last item (or decayed sum)."""
        import scipy.sparse

        items = _check_histories(items, self.n_items, self.name)
        n_rows, length = items.shape
        if self.recency_decay is None:
            weights = np.zeros(length)
            weights[-1] = 1.0  # left-padded: the last column is the most recent event
        else:
            weights = self.recency_decay ** np.arange(length - 1, -1, -1, dtype=np.float64)
        history = scipy.sparse.csr_matrix(
            (np.broadcast_to(weights, items.shape).ravel(), (np.repeat(np.arange(n_rows), length), items.ravel())),
            shape=(n_rows, self.n_items + 1))
        # Row 0 of the similarity is empty, so padding (item 0) contributes nothing.
        scores = (history @ self.similarity).toarray().astype(np.float32)
        scores[:, 0] = -np.inf
        return scores


def _session_incidence(sequences: Iterable[np.ndarray], n_items: int):
    """Binary CSR [n_sequences, n_items + 1]: does sequence s contain item i (repeats count once)."""
    import scipy.sparse

    unique_items = [np.unique(sequence) for sequence in _checked_sequences(sequences, n_items)]
    lengths = np.array([len(items) for items in unique_items], dtype=np.int64)
    columns = np.concatenate(unique_items) if unique_items else np.zeros(0, dtype=np.int64)
    rows = np.repeat(np.arange(len(unique_items)), lengths)
    return scipy.sparse.csr_matrix((np.ones(len(columns), dtype=np.float64), (rows, columns)),
                                   shape=(len(unique_items), n_items + 1))


def _top_per_row(rows, columns, values, keep: int, size: int):
    """CSR [size, size] holding, per row, its `keep` largest positive values (ties: lower column)."""
    import scipy.sparse

    positive = values > 0
    rows, columns, values = rows[positive], columns[positive], values[positive]
    order = np.lexsort((columns, -values, rows))  # by row, then value descending, then column
    rows, columns, values = rows[order], columns[order], values[order]
    row_starts = np.searchsorted(rows, rows, side="left")
    kept = np.arange(len(rows)) - row_starts < keep
    return scipy.sparse.csr_matrix((values[kept], (rows[kept], columns[kept])), shape=(size, size))


# --- ALS ----------------------------------------------------------------------------------

ALS_USER = "sequence_index"  # the ALS "user" is one training sequence
ALS_COUNT = "event_count"


class ALSScorer:
    """Implicit-feedback matrix factorisation (Hu, Koren & Volinsky, ICDM 2008) by Spark MLlib ALS.

    Fitting: ALS(implicitPrefs=True) on (sequence, item, how often the item occurs in it)
    gives item factors y_i; items never seen in training keep zero factors.

    Scoring a history the model never saw (a new session, or a user's recent events) folds
    it in: the user vector x is the exact solution of the same weighted least squares that
    ALS solves for a training user, with the history's counts r_i as ratings:

        (Y^T Y + alpha * sum_i r_i y_i y_i^T + reg_param * n_u * I) x = sum_i (1 + alpha * r_i) y_i

    (confidence 1 + alpha * r_i, preference 1 for history items and 0 elsewhere; the
    regularisation is scaled by n_u, the number of distinct history items, as Spark's ALS
    does). Score = x . y_j. A history with no known item gets x = 0, i.e. all scores tie.
    """

    name = "als"

    def __init__(self, item_factors: np.ndarray, reg_param: float, alpha: float):
        item_factors = np.asarray(item_factors, dtype=np.float64)
        if item_factors.ndim != 2 or item_factors.shape[0] < 2:
            raise ValueError(f"item_factors must be [n_items + 1, rank], got {item_factors.shape}")
        if reg_param <= 0 or alpha < 0:
            raise ValueError(f"need reg_param > 0 and alpha >= 0, got {reg_param} and {alpha}")
        self.item_factors = item_factors
        self.item_factors[0] = 0.0  # padding has no factor
        self.gram = item_factors.T @ item_factors  # Y^T Y, shared by every fold-in
        self.reg_param = float(reg_param)
        self.alpha = float(alpha)
        self.n_items = item_factors.shape[0] - 1

    @classmethod
    def fit(cls, spark, sequences: Iterable[np.ndarray], n_items: int, rank: int = 32, reg_param: float = 0.1,
            alpha: float = 10.0, max_iter: int = 10, seed: int = 0) -> "ALSScorer":
        """Train Spark MLlib ALS on the implicit counts of the training sequences."""
        model = fit_spark_als(spark, sequences, n_items, rank, reg_param, alpha, max_iter, seed)
        return cls.from_spark_model(model, n_items, reg_param, alpha)

    def save(self, directory: str) -> None:
        np.save(os.path.join(directory, f"{self.name}_item_factors.npy"), self.item_factors)
        _write_settings(directory, self.name, {"reg_param": self.reg_param, "alpha": self.alpha})

    @classmethod
    def load(cls, directory: str) -> "ALSScorer":
        settings = _read_settings(directory, cls.name)
        return cls(_load_array(directory, f"{cls.name}_item_factors.npy"), settings["reg_param"], settings["alpha"])

    @classmethod
    def from_spark_model(cls, model, n_items: int, reg_param: float, alpha: float) -> "ALSScorer":
        """Scorer over a fitted pyspark ALSModel's item factors (the parameters it was fitted with)."""
        item_factors = np.zeros((n_items + 1, model.rank), dtype=np.float64)
        for row in model.itemFactors.collect():
            item_factors[row["id"]] = row["features"]
        return cls(item_factors, reg_param, alpha)

    def user_vectors(self, items: np.ndarray) -> np.ndarray:
        """float64 [n, rank]: the folded-in user vector of each history row."""
        items = _check_histories(items, self.n_items, self.name)
        factors = self.item_factors[items]  # [n, L, rank]; padding rows are zero
        is_event = items != 0
        # Every occurrence adds alpha * y y^T: the sum over positions equals alpha * r_i * y_i y_i^T.
        confidence_part = self.alpha * np.einsum("nl,nlr,nls->nrs", is_event, factors, factors)
        first = _first_occurrences(items)
        n_distinct = first.sum(axis=1)
        rank = self.gram.shape[0]
        lhs = self.gram[None] + confidence_part + (self.reg_param * n_distinct)[:, None, None] * np.eye(rank)[None]
        # sum_i (1 + alpha r_i) y_i = sum over distinct items of y_i + alpha * sum over positions of y.
        rhs = np.einsum("nl,nlr->nr", first + self.alpha * is_event, factors)
        vectors = np.zeros((len(items), rank))
        known = n_distinct > 0  # with no history item the solution is 0; skip a possibly singular Y^T Y
        if known.any():
            vectors[known] = np.linalg.solve(lhs[known], rhs[known][..., None])[..., 0]
        return vectors

    def score(self, items: np.ndarray, types: np.ndarray, gaps: np.ndarray | None = None) -> np.ndarray:
        """float32 [n, n_items + 1] = folded-in user vector . item factors, column 0 = -inf."""
        scores = (self.user_vectors(items) @ self.item_factors.T).astype(np.float32)
        scores[:, 0] = -np.inf
        return scores


def als_interactions(sequences: Iterable[np.ndarray], n_items: int):
    """pandas frame (sequence_index, item_idx, event_count): one row per item of each sequence."""
    import pandas as pd

    frames = []
    for position, sequence in enumerate(_checked_sequences(sequences, n_items)):
        items, counts = np.unique(sequence, return_counts=True)
        frames.append((np.full(len(items), position), items, counts))
    if not frames:
        return pd.DataFrame({ALS_USER: [], ITEM_IDX: [], ALS_COUNT: []})
    users, items, counts = (np.concatenate(parts) for parts in zip(*frames))
    return pd.DataFrame({ALS_USER: users.astype(np.int32), ITEM_IDX: items.astype(np.int32),
                         ALS_COUNT: counts.astype(np.float32)})


def fit_spark_als(spark, sequences: Iterable[np.ndarray], n_items: int, rank: int, reg_param: float, alpha: float,
                  max_iter: int, seed: int):
    """pyspark ALSModel, implicit preferences, on als_interactions(sequences)."""
    from pyspark.ml.recommendation import ALS

    counts = als_interactions(sequences, n_items)
    if len(counts) == 0:
        raise ValueError("ALS needs at least one training event; the training sequences are empty")
    als = ALS(rank=rank, regParam=reg_param, alpha=alpha, maxIter=max_iter, seed=seed, implicitPrefs=True,
              userCol=ALS_USER, itemCol=ITEM_IDX, ratingCol=ALS_COUNT)
    return als.fit(spark.createDataFrame(counts))


# The baselines train_baselines saves in a night's baselines directory (POP has no file: it
# comes from the items table).
SAVED_BASELINES = (SessionPopularityScorer, ItemKNNScorer, ALSScorer)


def load_baselines(model_dir: str) -> dict:
    """{name: scorer} from a models/baselines/dt=<ds> directory (or a serving bundle's copy)."""
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"{model_dir} does not exist: has train_baselines run for this night?")
    return {cls.name: cls.load(model_dir) for cls in SAVED_BASELINES}
