"""Search sessions from the clickstream: each search, and what its user did with the results.

A `search` event opens a search; the item events after it in the same session, up to the
session's next search, are what the user did with its results. The clickstream does not
say which list an item was opened from, so the session's next events stand for it, as in
most shops' logs. Each item gets its deepest event's grade: 1 viewed or clicked, 2 added
to the cart, 3 bought (the gains of jobs/search/quality.py). Searches without query text
(privacy.query_text: drop) or without any item event after them are left out: nothing
could be learned from or scored on them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from jobs.common.schema import (ADD_TO_CART, CLICK, EVENT_TIME, EVENT_TYPE, ITEM_ID, PURCHASE, QUERY, SEARCH,
                                SESSION_ID, USER_ID, VIEW)

GRADES = {VIEW: 1, CLICK: 1, ADD_TO_CART: 2, PURCHASE: 3}
SEARCH_COLUMNS = ("search_id", USER_ID, SESSION_ID, "time", QUERY)
INTERACTION_COLUMNS = ("search_id", ITEM_ID, "grade")


def search_sessions(events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(searches, interactions) of clean events.

    events: user_id, session_id, event_time (epoch seconds), event_type, item_id, query.
    searches: search_id (0.. in time order of the input's sort), user_id, session_id, time, query;
    interactions: search_id, item_id, grade (one row per search and item).
    """
    is_search = events[EVENT_TYPE].eq(SEARCH).to_numpy()
    # Within a session, a search comes before an item event of the same second.
    ordered = (events.assign(_item_event=~is_search)
               .sort_values([USER_ID, SESSION_ID, EVENT_TIME, "_item_event"], kind="stable", ignore_index=True))
    is_search = ordered[EVENT_TYPE].eq(SEARCH).to_numpy()
    row_of_search = pd.Series(np.where(is_search, np.arange(len(ordered)), np.nan))
    # Per event: the row of the latest search before it in its session (NaN before any search).
    latest_search = row_of_search.groupby([ordered[USER_ID], ordered[SESSION_ID]], sort=False).ffill()
    grade = ordered[EVENT_TYPE].map(GRADES)
    attached = ordered.assign(search_row=latest_search.to_numpy(), grade=grade)
    attached = attached[~is_search & attached["search_row"].notna() & attached["grade"].notna()
                        & attached[ITEM_ID].notna()]
    interactions = (attached.groupby(["search_row", ITEM_ID], sort=True)["grade"].max().astype(np.int64)
                    .reset_index())

    searches = ordered[is_search].assign(search_row=np.flatnonzero(is_search))
    has_text = searches[QUERY].fillna("").str.strip().ne("")
    searches = searches[has_text & searches["search_row"].isin(interactions["search_row"])]
    searches = searches.sort_values([EVENT_TIME, "search_row"], kind="stable")
    search_id = pd.Series(np.arange(len(searches)), index=searches["search_row"].to_numpy())
    interactions = interactions[interactions["search_row"].isin(search_id.index)]
    interactions = interactions.assign(search_id=search_id[interactions["search_row"]].to_numpy())
    searches = searches.assign(search_id=np.arange(len(searches)), time=searches[EVENT_TIME].astype(np.int64))
    return (searches.loc[:, list(SEARCH_COLUMNS)].reset_index(drop=True),
            interactions.sort_values(["search_id", ITEM_ID]).loc[:, list(INTERACTION_COLUMNS)].reset_index(drop=True))
