"""The users' stored histories: what a served search request that names a user id is given."""

import numpy as np
import pandas as pd

from jobs.common import schema
from jobs.serving.stored_histories import USER_HISTORIES_FILE, StoredHistories, user_histories_table

# Item index → raw id: 1 "a", 2 "b", 3 "c" (index 4 is in a sequence but not in the catalog).
ITEMS = pd.DataFrame({schema.ITEM_IDX: [1, 2, 3], schema.ITEM_ID: ["a", "b", "c"]})
VIEW, CART = schema.EVENT_TYPE_INDEX[schema.VIEW], schema.EVENT_TYPE_INDEX[schema.ADD_TO_CART]


def sequences() -> pd.DataFrame:
    return pd.DataFrame({
        schema.USER_ID: ["u1", "u2"],
        schema.ITEM_IDX: [np.array([1, 2, 3]), np.array([0, 3])],
        schema.EVENT_TYPE_IDX: [np.array([VIEW, VIEW, CART]), np.array([VIEW, VIEW])],
        schema.TIMESTAMPS: [np.array([100, 200, 300]), np.array([50, 60])],
    })


def test_the_table_keeps_each_users_latest_events_as_raw_ids_type_names_and_seconds():
    table = user_histories_table(sequences(), ITEMS, max_events=2)
    # u1's latest two of (a, b, c); u2's out-of-catalog index 0 stays as None so that its time
    # still gives the next event its gap.
    assert table[schema.USER_ID].tolist() == ["u1", "u2"]
    assert [list(h) for h in table["history"]] == [["b", "c"], [None, "c"]]
    assert [list(t) for t in table["event_types"]] == [[schema.VIEW, schema.ADD_TO_CART], [schema.VIEW, schema.VIEW]]
    assert [list(s) for s in table["timestamps"]] == [[200, 300], [50, 60]]


def stored(max_events: int = 10) -> StoredHistories:
    return StoredHistories(user_histories_table(sequences(), ITEMS, max_events=10), max_events)


def test_a_known_user_id_alone_brings_the_stored_events_and_an_unknown_one_changes_nothing():
    histories, types, seconds = stored().merged(["u1", "nobody", None], [[], ["x"], []], None, None)
    assert histories == [["a", "b", "c"], ["x"], []]
    assert types == [[schema.VIEW, schema.VIEW, schema.ADD_TO_CART], None, None]
    assert seconds == [[100, 200, 300], None, None]


def test_request_events_after_the_stored_last_second_are_appended_and_earlier_ones_not_counted_twice():
    # The request resends c (at 300, already stored) and adds d at 400 and e at 500.
    histories, types, seconds = stored().merged(["u1"], [["c", "d", "e"]], [["view", "purchase", "view"]],
                                                [[300, 400, 500]])
    assert histories == [["a", "b", "c", "d", "e"]]
    assert types == [[schema.VIEW, schema.VIEW, schema.ADD_TO_CART, schema.PURCHASE, schema.VIEW]]
    assert seconds == [[100, 200, 300, 400, 500]]


def test_request_events_without_times_are_appended_as_views_and_the_row_loses_its_gaps():
    histories, types, seconds = stored().merged(["u2"], [["a"]], None, None)
    assert histories == [[None, "c", "a"]]
    assert types == [[schema.VIEW, schema.VIEW, schema.VIEW]]
    assert seconds == [None]  # "a" has no time: no gap can be taken for it, so the row has none


def test_the_merged_history_keeps_the_latest_max_events():
    histories, _, seconds = stored(max_events=3).merged(["u1"], [["d"]], None, [[400]])
    assert histories == [["b", "c", "d"]] and seconds == [[200, 300, 400]]


def test_a_search_folder_without_stored_histories_serves_requests_unchanged(tmp_path):
    empty = StoredHistories.load(str(tmp_path), 10)
    assert empty.merged(["u1"], [["a"]], None, None) == ([["a"]], [None], [None])
    user_histories_table(sequences(), ITEMS, 10).to_parquet(tmp_path / USER_HISTORIES_FILE, index=False)
    assert StoredHistories.load(str(tmp_path), 10).merged(["u2"], [[]], None, None)[0] == [[None, "c"]]
