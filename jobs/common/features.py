"""Read one night's feature partitions and turn them into model inputs (numpy only).

Shared by every model, by evaluation and by fusion, so it stays framework-free:
pandas/numpy/pyarrow, no TensorFlow or Spark.

The unit of prediction everywhere is an *example*: "given this user's events so far,
which item comes next?". `make_examples` cuts those out of the per-user sequences that
the normalize job writes, with the same left-padded layout for every model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from jobs.common.config import default_of
from jobs.common.lake import partition_path, replace_partition
from jobs.common.schema import (
    CATEGORY_IDX, BRAND_IDX, EVENT_TYPE_IDX, FEATURE_ITEMS, FEATURE_META, FEATURE_SEQUENCES, GAP_BUCKET_EDGES_SECONDS,
    IN_CATALOG,
    ITEM_FEATURE_COLUMNS, ITEM_IDX, ITEM_STAT_COLUMNS, N_PRICE_BUCKETS, POPULARITY, PRICE_BUCKET, PRICE_Z,
    SEQUENCE_COLUMNS, SPLIT,
    TIMESTAMPS, TITLE_TOKENS, USER_ID,
)

META_FILE = "meta.json"
SCALERS_FILE = "scalers.json"  # written by normalize beside meta.json
_ITEM_FIXTURE_DEFAULTS = {IN_CATALOG: True, **{name: 0 for name in ITEM_STAT_COLUMNS}}
# Keys of item_feature_arrays() that are not lake columns.
LOG_POPULARITY = "log_popularity"
DEFAULT_MAX_TITLE_TOKENS = default_of("item_encoder.max_title_tokens")
# make_examples builds an index matrix of [examples, max_len]; chunking bounds its memory.
_EXAMPLE_CHUNK = 200_000


@dataclass(frozen=True)
class Features:
    meta: dict
    items: pd.DataFrame  # one row per catalog item, sorted by item_idx
    sequences: pd.DataFrame  # one row per user, parallel arrays sorted by time

    @property
    def n_items(self) -> int:
        return int(self.meta["n_items"])


@dataclass(frozen=True)
class Examples:
    """Next-item examples: history (left-padded, most recent last) -> target item."""

    items: np.ndarray  # int32 [n, max_len]
    types: np.ndarray  # int32 [n, max_len]
    targets: np.ndarray  # int32 [n]
    user_ids: np.ndarray  # object [n]
    # int32 [n, max_len]: each history event's gap bucket (schema.GAP_BUCKET_EDGES_SECONDS);
    # None where the source has no timestamps (every model then reads bucket 0).
    gaps: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.targets)


def load_features(config: dict, ds: str) -> Features:
    """Read features/{meta,items,sequences}/dt=<ds>; errors name the path that is wrong."""
    items_dir = partition_path(config, FEATURE_ITEMS, ds)
    sequences_dir = partition_path(config, FEATURE_SEQUENCES, ds)
    meta = _read_meta(os.path.join(partition_path(config, FEATURE_META, ds), META_FILE))
    items = _read_parquet(items_dir, ITEM_FEATURE_COLUMNS).sort_values(ITEM_IDX, ignore_index=True)
    sequences = _read_parquet(sequences_dir, SEQUENCE_COLUMNS)
    _check_items(items, meta, items_dir)
    _check_sequences(sequences, meta, sequences_dir)
    return Features(meta=meta, items=items, sequences=sequences)


def write_features(config: dict, ds: str, meta: dict, items: pd.DataFrame, sequences: pd.DataFrame,
                   scalers: dict | None = None) -> None:
    """Write a feature partition from pandas frames, in the layout load_features reads.

    The nightly writer is the Spark normalize job; this is for test fixtures and small
    local tools that need features without Spark. Item columns a fixture leaves out get
    neutral values: in the catalog, no rolling statistics.
    """
    items = items.assign(**{name: default for name, default in _ITEM_FIXTURE_DEFAULTS.items()
                            if name not in items.columns})
    for dataset, frame, columns in ((FEATURE_ITEMS, items, ITEM_FEATURE_COLUMNS),
                                    (FEATURE_SEQUENCES, sequences, SEQUENCE_COLUMNS)):
        with replace_partition(partition_path(config, dataset, ds)) as staging:
            frame.loc[:, list(columns)].to_parquet(os.path.join(staging, "part-00000.parquet"), index=False)
    scalers = scalers or {"fitted_on_dates": [], "price": {"transform": "log1p_standardize", "log1p_mean": 0.0,
                                                           "log1p_std": 0.0, "bucket_cuts": []}}
    with replace_partition(partition_path(config, FEATURE_META, ds)) as staging:
        with open(os.path.join(staging, META_FILE), "w") as handle:
            json.dump(meta, handle)
        with open(os.path.join(staging, SCALERS_FILE), "w") as handle:
            json.dump(scalers, handle)


def _read_meta(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"feature metadata {path} does not exist: has the normalize job run for this date?")
    try:
        with open(path) as handle:
            meta = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"feature metadata {path} is not valid JSON: {error}") from None
    if "n_items" not in meta:
        raise ValueError(f"feature metadata {path} has no 'n_items'")
    return meta


def _read_parquet(directory: str, required_columns: tuple[str, ...]) -> pd.DataFrame:
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"feature partition {directory} does not exist: "
                                "has the normalize job run for this date?")
    frame = pd.read_parquet(directory)
    missing = [column for column in required_columns if column not in frame.columns]
    if missing:
        raise ValueError(f"feature partition {directory} lacks columns {missing} (has {list(frame.columns)})")
    return frame


def _check_items(items: pd.DataFrame, meta: dict, path: str) -> None:
    item_idx = items[ITEM_IDX].to_numpy()
    if items[ITEM_IDX].duplicated().any():
        raise ValueError(f"{path}: column {ITEM_IDX} has duplicate values")
    if len(item_idx) and (item_idx.min() < 1 or item_idx.max() > meta["n_items"]):
        raise ValueError(f"{path}: column {ITEM_IDX} must lie in 1..n_items={meta['n_items']}, "
                         f"found {item_idx.min()}..{item_idx.max()}")


def _check_sequences(sequences: pd.DataFrame, meta: dict, path: str) -> None:
    lengths = sequences[ITEM_IDX].map(len).to_numpy(dtype=np.int64)
    for column in (EVENT_TYPE_IDX, TIMESTAMPS, SPLIT):
        bad_users = sequences[USER_ID][sequences[column].map(len).to_numpy(dtype=np.int64) != lengths]
        if len(bad_users):
            raise ValueError(f"{path}: column {column} is not parallel to {ITEM_IDX} "
                             f"(different length) for users {list(bad_users[:5])}")
    flat_items = _flatten(sequences[ITEM_IDX])
    if len(flat_items) and (flat_items.min() < 0 or flat_items.max() > meta["n_items"]):
        raise ValueError(f"{path}: column {ITEM_IDX} must lie in 0..n_items={meta['n_items']}, "
                         f"found {flat_items.min()}..{flat_items.max()}")


def _flatten(column: pd.Series) -> np.ndarray:
    if len(column) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(column.to_numpy()).astype(np.int64)


def make_examples(sequences: pd.DataFrame, split: int, max_len: int) -> Examples:
    """One example per event of `split` at position >= 1 of its user's sequence.

    The history is every earlier event of the user, whatever its split (a valid-day
    example sees the training days, never the future), truncated to the last max_len
    and left-padded with 0 so the most recent event is always in the last column.
    Events whose item is 0 (not in today's catalog) are not targets: no model could
    recommend them.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    flat = _FlatSequences.of(sequences)
    positions = np.arange(len(flat.items)) - flat.user_starts
    is_target = (flat.splits == split) & (positions >= 1) & (flat.items != 0)
    target_events = np.flatnonzero(is_target)
    items, types, gaps = flat.windows(target_events, flat.user_starts[target_events], max_len)
    return Examples(items=items, types=types, targets=flat.items[target_events].astype(np.int32),
                    user_ids=flat.user_of_event[target_events], gaps=gaps)


@dataclass(frozen=True)
class WindowExamples:
    """make_examples' targets grouped into windows that a causal model reads once for many targets.

    Column c of a window's inputs holds one event of its user (0 outside the user's events:
    left of the first, right of the last); targets[w, j] is the next item after input column
    context + j, or 0 where that next event is not a target (no loss there). The first
    `context` columns only give context.
    """

    items: np.ndarray  # int32 [windows, context + max_len]
    types: np.ndarray  # int32 [windows, context + max_len]
    gaps: np.ndarray  # int32 [windows, context + max_len]
    targets: np.ndarray  # int32 [windows, max_len]

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def context(self) -> int:
        return self.items.shape[1] - self.targets.shape[1]


def make_window_examples(sequences: pd.DataFrame, split: int, max_len: int, context: int | None = None,
                         span: int | None = None) -> WindowExamples:
    """Every target of make_examples(sequences, split, max_len), once, in windows of context + max_len events.

    Why: make_examples gives each target its own max_len-event history, so a causal encoder
    (a GRU, causal self-attention) runs max_len steps per target; here it runs
    (context + max_len) / max_len steps per target. The targets at positions k * max_len + 1 ..
    (k + 1) * max_len of a user's sequence share window k, whose inputs are the events at
    positions k * max_len - context .. (k + 1) * max_len - 1. With context = max_len (the
    default, for the GRU) each target still sees at least its last max_len events (all it
    has, near the start); with context 0 (SASRec, whose positions span max_len) a target sees
    the events of its block up to it, as SASRec's paper trains.
    """
    context = max_len if context is None else context
    span = max_len if span is None else span
    if max_len < 1 or context < 0 or span < 1:
        raise ValueError(f"max_len and span must be >= 1 and context >= 0, got {max_len}, {span} and {context}")
    flat = _FlatSequences.of(sequences)
    n_events = len(flat.items)
    positions = np.arange(n_events) - flat.user_starts
    is_target = (flat.splits == split) & (positions >= 1) & (flat.items != 0)
    target_events = np.flatnonzero(is_target)
    # One window per (user, block of max_len target positions) that holds a target.
    windows = np.unique(np.stack([flat.user_starts[target_events], (positions[target_events] - 1) // span], 1),
                        axis=0).reshape(-1, 2)
    user_start, block = windows[:, 0], windows[:, 1]
    # The user who owns events from user_start: the last of those starting there (an empty
    # sequence shares its start with the next user's).
    owner = np.searchsorted(flat.first_event, user_start, side="right") - 1
    user_end = user_start + np.diff(np.append(flat.first_event, n_events))[owner]
    columns = (user_start + block * span - context)[:, None] + np.arange(context + span)[None, :]
    inside = (columns >= user_start[:, None]) & (columns < user_end[:, None])
    at = np.where(inside, columns, 0)
    inputs = {name: np.where(inside, values[at], 0).astype(np.int32) if n_events else
              np.zeros(columns.shape, dtype=np.int32) for name, values in
              (("items", flat.items), ("types", flat.types), ("gaps", flat.gaps))}
    following = columns[:, context:] + 1
    has_target = following < user_end[:, None]
    following = np.where(has_target, following, 0)
    targets = np.where(has_target & is_target[following], flat.items[following], 0) if n_events else \
        np.zeros((0, span), dtype=np.int64)
    return WindowExamples(items=inputs["items"], types=inputs["types"], gaps=inputs["gaps"],
                          targets=targets.astype(np.int32))


def histories_before(sequences: pd.DataFrame, user_ids, times, max_len: int) -> Examples:
    """The history of each (user, epoch second) request: the user's events strictly before that
    second, in make_examples' layout (last max_len, left-padded). A user without sequence or
    without earlier events gets an all-padding row. targets are 0 (there is no next item)."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    flat = _FlatSequences.of(sequences)
    user_ids = np.asarray(user_ids, dtype=object)
    rank_of_user = {user: rank for rank, user in enumerate(sequences[USER_ID].tolist())}
    user_rank = np.array([rank_of_user.get(user, -1) for user in user_ids.tolist()], dtype=np.int64)
    known = user_rank >= 0
    lengths = np.diff(np.append(flat.first_event, len(flat.items)))
    starts = np.where(known, flat.first_event[np.maximum(user_rank, 0)], 0)
    ends = starts.copy()
    requested = np.asarray(times, dtype=np.int64)
    if known.any() and len(flat.items):
        # One binary search for all requests: events are sorted by (user rank, time), so the key
        # user rank x span + (time - earliest) is sorted too and a request's key lands right
        # after its user's last event before that second.
        earliest = min(int(flat.timestamps.min()), int(requested[known].min()))
        span = max(int(flat.timestamps.max()), int(requested[known].max())) - earliest + 1
        event_keys = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths) * span + (flat.timestamps - earliest)
        request_keys = user_rank[known] * span + (requested[known] - earliest)
        ends[known] = np.searchsorted(event_keys, request_keys, side="left")
    items, types, gaps = flat.windows(ends, starts, max_len)
    return Examples(items=items, types=types, targets=np.zeros(len(user_ids), dtype=np.int32),
                    user_ids=user_ids, gaps=gaps)


@dataclass(frozen=True)
class _FlatSequences:
    """Every user's events end to end (numpy), with each event's user start and time-gap bucket."""
    items: np.ndarray
    types: np.ndarray
    splits: np.ndarray
    timestamps: np.ndarray
    gaps: np.ndarray
    first_event: np.ndarray  # per user (sequence row): the flat index of their first event
    user_starts: np.ndarray  # per event: the flat index of its user's first event
    user_of_event: np.ndarray

    @classmethod
    def of(cls, sequences: pd.DataFrame) -> "_FlatSequences":
        lengths = sequences[ITEM_IDX].map(len).to_numpy(dtype=np.int64)
        items = _flatten(sequences[ITEM_IDX])
        timestamps = _flatten(sequences[TIMESTAMPS])
        first_event = np.cumsum(lengths) - lengths
        user_starts = np.repeat(first_event, lengths)
        # Per event: the bucket of the gap since its user's previous event (0 for a first event).
        gaps = np.zeros(len(items), dtype=np.int32)
        later = np.flatnonzero(np.arange(len(items)) - user_starts >= 1)
        gaps[later] = gap_buckets(timestamps[later] - timestamps[later - 1])
        return cls(items, _flatten(sequences[EVENT_TYPE_IDX]), _flatten(sequences[SPLIT]), timestamps, gaps,
                   first_event, user_starts, np.repeat(sequences[USER_ID].to_numpy(dtype=object), lengths))

    def windows(self, ends: np.ndarray, starts: np.ndarray, max_len: int) -> tuple[np.ndarray, ...]:
        """(items, types, gaps) int32 [n, max_len]: events starts[i] <= e < ends[i], the last max_len,
        left-padded with 0 so the most recent event is always in the last column."""
        blocks = {"items": [], "types": [], "gaps": []}
        for begin in range(0, len(ends), _EXAMPLE_CHUNK):
            end = np.asarray(ends[begin:begin + _EXAMPLE_CHUNK])
            # Column j of a row holds event (end - max_len + j): the last column is end - 1.
            history = end[:, None] - max_len + np.arange(max_len)[None, :]
            inside_user = history >= np.asarray(starts[begin:begin + _EXAMPLE_CHUNK])[:, None]
            history = np.where(inside_user, history, 0)
            for name, values in (("items", self.items), ("types", self.types), ("gaps", self.gaps)):
                blocks[name].append(np.where(inside_user, values[history], 0) if len(values)
                                    else np.zeros(history.shape, dtype=np.int32))
        return tuple(np.concatenate(blocks[name]).astype(np.int32) if blocks[name]
                     else np.zeros((0, max_len), dtype=np.int32) for name in ("items", "types", "gaps"))


def gap_buckets(gap_seconds) -> np.ndarray:
    """int32 bucket of each gap in seconds: 1 + number of schema.GAP_BUCKET_EDGES_SECONDS <= gap.

    Gaps below the first edge (0 included) are bucket 1. A negative gap (clock skew between
    sources) counts as 0 seconds rather than failing a night's training.
    """
    seconds = np.maximum(np.asarray(gap_seconds, dtype=np.int64), 0)
    return (1 + np.searchsorted(np.asarray(GAP_BUCKET_EDGES_SECONDS), seconds, side="right")).astype(np.int32)


def event_gap_buckets(timestamps) -> np.ndarray:
    """int32 [n]: the gap bucket of each event of one user's time-ordered epoch seconds; 0 for the first.

    A missing timestamp (None/NaN) gives bucket 0 to its own event and to the next.
    """
    seconds = pd.to_numeric(pd.Series(list(timestamps), dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    buckets = np.zeros(len(seconds), dtype=np.int32)
    if len(seconds) > 1:
        gaps = np.diff(seconds)
        known = np.isfinite(gaps)
        buckets[1:][known] = gap_buckets(gaps[known].astype(np.int64))
    return buckets


def transition_pairs(sequences: pd.DataFrame, split: int) -> np.ndarray:
    """int32 [n, 2] (previous item, next item) for consecutive events of distinct items.

    The next event belongs to `split`. Repeats (view then click of the same item) say
    nothing about which items go together, so they are dropped.
    """
    last_step = make_examples(sequences, split, max_len=1)
    pairs = np.stack([last_step.items[:, 0], last_step.targets], axis=1)
    keep = (pairs[:, 0] != 0) & (pairs[:, 0] != pairs[:, 1])
    return pairs[keep]


def item_feature_arrays(items: pd.DataFrame, max_title_tokens: int = DEFAULT_MAX_TITLE_TOKENS,
                        n_items: int | None = None) -> dict[str, np.ndarray]:
    """Item attributes as arrays whose row r describes item_idx r (row 0 = padding, zeros).

    Keys: category_idx, brand_idx, price_bucket (int32 [n+1]), price_z (float32 [n+1]),
    title_tokens (int32 [n+1, max_title_tokens], first tokens kept, right-padded with 0),
    log_popularity (float32 [n+1], log1p of the training-day count). n_items defaults to
    the largest item_idx; items missing from the frame keep all-zero rows.
    """
    item_idx = items[ITEM_IDX].to_numpy(dtype=np.int64)
    if n_items is None:
        n_items = int(item_idx.max()) if len(item_idx) else 0
    n_rows = n_items + 1
    arrays = {}
    for column in (CATEGORY_IDX, BRAND_IDX, PRICE_BUCKET):
        arrays[column] = _aligned(item_idx, items[column].to_numpy(dtype=np.int32), n_rows)
    arrays[PRICE_Z] = _aligned(item_idx, items[PRICE_Z].fillna(0.0).to_numpy(dtype=np.float32), n_rows)
    # Popularity is heavy-tailed; log1p keeps best-sellers from swamping the other inputs.
    log_popularity = np.log1p(items[POPULARITY].to_numpy(dtype=np.float64)).astype(np.float32)
    arrays[LOG_POPULARITY] = _aligned(item_idx, log_popularity, n_rows)
    arrays[TITLE_TOKENS] = _title_matrix(item_idx, items[TITLE_TOKENS].to_numpy(), n_rows, max_title_tokens)
    return arrays


def _aligned(item_idx: np.ndarray, values: np.ndarray, n_rows: int) -> np.ndarray:
    aligned = np.zeros(n_rows, dtype=values.dtype)
    aligned[item_idx] = values
    return aligned


def _title_matrix(item_idx: np.ndarray, token_lists: np.ndarray, n_rows: int, width: int) -> np.ndarray:
    matrix = np.zeros((n_rows, width), dtype=np.int32)
    for row, tokens in zip(item_idx, token_lists):
        kept = np.asarray(tokens if tokens is not None else [], dtype=np.int32)[:width]
        matrix[row, :len(kept)] = kept
    return matrix


def vocabulary_size(meta: dict, key: str, observed_ids: np.ndarray) -> int:
    """Rows an embedding needs for ids 0..max: the declared count or the largest id seen.

    Taking the larger of the two keeps an embedding lookup from ever going out of range
    (TensorFlow silently returns zeros on GPU and fails on CPU) whether the meta count
    includes the padding id or not.
    """
    largest_observed = int(observed_ids.max()) if observed_ids.size else 0
    return max(int(meta.get(key, 0)), largest_observed) + 1


def catalog_mask(items: pd.DataFrame, n_items: int) -> np.ndarray | None:
    """bool [n_items + 1]: which item indices may be recommended tonight (index 0 never).

    None when every item may (the common case, so scorers skip the masking), and for an
    items table written before in_catalog existed (an older champion's bundle).
    """
    if IN_CATALOG not in items.columns or bool(items[IN_CATALOG].all()):
        return None
    mask = np.zeros(n_items + 1, dtype=bool)
    mask[items.loc[items[IN_CATALOG].astype(bool), ITEM_IDX].to_numpy(dtype=np.int64)] = True
    return mask


def read_scalers(config: dict, ds: str) -> dict:
    """The scaling statistics normalize fitted for night ds (features/meta/dt=ds/scalers.json)."""
    path = os.path.join(partition_path(config, FEATURE_META, ds), SCALERS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"scaling statistics {path} do not exist: has the normalize job run for this date?")
    with open(path) as handle:
        return json.load(handle)


def scale_prices(prices, scalers: dict) -> tuple[np.ndarray, np.ndarray]:
    """(price_bucket int32, price_z float32) of raw prices, exactly as normalize computes them.

    For serving a price normalize never saw. NaN or None means unknown: bucket 0, z 0.
    """
    price = np.asarray([np.nan if p is None else p for p in prices], dtype=np.float64)
    known = ~np.isnan(price)
    settings = scalers["price"]
    cuts = np.asarray(settings["bucket_cuts"], dtype=np.float64)
    if len(cuts) not in (0, N_PRICE_BUCKETS - 1):
        raise ValueError(f"scalers price.bucket_cuts must hold the {N_PRICE_BUCKETS - 1} decile cuts, got {len(cuts)}")
    # 1 + the number of cut points strictly below the price (normalize's _price_bucket);
    # no cuts (a catalog without prices): every bucket unknown, as in normalize.
    below = (cuts[None, :] < price[:, None]).sum(axis=1)
    bucket = np.where(known & (len(cuts) > 0), 1 + below, 0)
    if settings["log1p_std"] == 0:
        z = np.zeros(len(price))
    else:
        log_price = np.log1p(np.where(known, price, 0.0))
        z = np.where(known, (log_price - settings["log1p_mean"]) / settings["log1p_std"], 0.0)
    return bucket.astype(np.int32), z.astype(np.float32)
