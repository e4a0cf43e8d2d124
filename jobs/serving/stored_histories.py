"""Each user's latest events, stored with the night's search ranker: a request that names only
the (hashed) user id is personalized as if it had sent the user's history.

The night writes, per user of its feature window, the latest events (raw item ids, event type
names, epoch seconds; oldest first) to `user_histories.parquet` in the search ranker's folder.
Ids are the lake's hashed user ids, the same keys as recommendations/dt=<ds>/.

A served request may send both a user id and recent events (those since the night, say). The
request's events are newer than the stored ones, so they are appended: when the request gives
timestamps, its events at or before the stored history's last second are dropped (the store
already holds them, so a caller that sends the whole history does not count it twice); without
timestamps every request event is appended and the row is scored without time gaps (the
request's events have no times to take gaps from).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from jobs.common import schema

USER_HISTORIES_FILE = "user_histories.parquet"
TYPE_NAME = np.array([None, *schema.EVENT_TYPES], dtype=object)  # event type index → name (0 is padding)


def user_histories_table(sequences: pd.DataFrame, items: pd.DataFrame, max_events: int) -> pd.DataFrame:
    """One row per user: the latest max_events events as raw ids (None for an item outside the
    night's catalog: its time still gives the next event its gap), type names and epoch seconds."""
    item_ids = np.full(int(items[schema.ITEM_IDX].max()) + 1, None, dtype=object)
    item_ids[items[schema.ITEM_IDX].to_numpy()] = items[schema.ITEM_ID].to_numpy()
    latest = slice(-max_events, None)
    return pd.DataFrame({
        schema.USER_ID: sequences[schema.USER_ID].to_numpy(),
        "history": [item_ids[np.asarray(row, dtype=np.int64)[latest]].tolist() for row in sequences[schema.ITEM_IDX]],
        "event_types": [TYPE_NAME[np.asarray(row, dtype=np.int64)[latest]].tolist()
                        for row in sequences[schema.EVENT_TYPE_IDX]],
        "timestamps": [np.asarray(row, dtype=np.int64)[latest].tolist() for row in sequences[schema.TIMESTAMPS]],
    })


class StoredHistories:
    """user id → (raw item ids, event type names, epoch seconds) of the night's stored events."""

    def __init__(self, table: pd.DataFrame, max_events: int):
        self.max_events = max_events
        self.by_user = {user: (list(history), list(types), list(seconds)) for user, history, types, seconds
                        in zip(table[schema.USER_ID], table["history"], table["event_types"], table["timestamps"])}

    @classmethod
    def load(cls, search_dir: str, max_events: int) -> "StoredHistories":
        """The night's stored histories; none for a search folder written before they were stored."""
        path = os.path.join(search_dir, USER_HISTORIES_FILE)
        if not os.path.isfile(path):
            return cls(pd.DataFrame({schema.USER_ID: [], "history": [], "event_types": [], "timestamps": []}),
                       max_events)
        return cls(pd.read_parquet(path), max_events)

    def merged(self, user_ids, histories: list, event_types: list | None, timestamps: list | None):
        """(histories, event_types, timestamps) with each known user's stored events before the
        request's own; unknown or missing (None) user ids leave their request unchanged."""
        n = len(histories)
        event_types = list(event_types) if event_types is not None else [None] * n
        timestamps = list(timestamps) if timestamps is not None else [None] * n
        histories = list(histories)
        for row, user in enumerate(user_ids):
            stored = self.by_user.get(user) if isinstance(user, str) else None
            if stored is None:
                continue
            history, types, seconds = _appended(stored, histories[row], event_types[row], timestamps[row])
            keep = slice(-self.max_events, None)
            histories[row], event_types[row] = history[keep], types[keep]
            timestamps[row] = seconds[keep] if seconds is not None else None
        return histories, event_types, timestamps


def _appended(stored: tuple, history, types, seconds) -> tuple[list, list, list | None]:
    """The stored events, then the request's newer ones (see the module's docstring)."""
    stored_history, stored_types, stored_seconds = stored
    history = list(history) if history is not None else []
    types = list(types) if types is not None and len(types) == len(history) else [schema.VIEW] * len(history)
    if not history:
        return stored_history, stored_types, stored_seconds
    if seconds is None or len(seconds) != len(history):
        return stored_history + history, stored_types + types, None
    last = stored_seconds[-1] if stored_seconds else None
    newer = [position for position, second in enumerate(seconds) if last is None or int(second) > last]
    return (stored_history + [history[p] for p in newer], stored_types + [types[p] for p in newer],
            stored_seconds + [int(seconds[p]) for p in newer])
