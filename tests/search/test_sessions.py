"""Search sessions: which item events belong to which search, and their grades."""

import pandas as pd

from jobs.search.sessions import search_sessions

COLUMNS = ["user_id", "session_id", "event_time", "event_type", "item_id", "query"]


def test_each_search_takes_the_item_events_after_it_in_its_session_up_to_the_next_search():
    events = pd.DataFrame([
        ("u1", "s1", 100, "view", "i9", None),  # before any search: no search's
        ("u1", "s1", 110, "search", None, "red lamp"),
        ("u1", "s1", 110, "view", "i1", None),  # the same second as the search: after it
        ("u1", "s1", 120, "add_to_cart", "i1", None),  # i1's deepest event: cart -> grade 2
        ("u1", "s1", 130, "click", "i2", None),  # grade 1
        ("u1", "s1", 140, "search", None, "sofa"),
        ("u1", "s1", 150, "purchase", "i3", None),  # grade 3, the second search's
        ("u2", "s2", 105, "search", None, "lamp"),  # nothing after it in its session: left out
        ("u2", "s3", 106, "view", "i1", None),  # another session
        ("u2", "s4", 107, "search", None, " "),  # no text: left out
        ("u2", "s4", 108, "view", "i5", None),
    ], columns=COLUMNS)
    searches, interactions = search_sessions(events.sample(frac=1.0, random_state=3))  # any input order

    assert searches.to_dict("list") == {"search_id": [0, 1], "user_id": ["u1", "u1"], "session_id": ["s1", "s1"],
                                        "time": [110, 140], "query": ["red lamp", "sofa"]}
    assert interactions.to_dict("list") == {"search_id": [0, 0, 1], "item_id": ["i1", "i2", "i3"],
                                            "grade": [2, 1, 3]}


def test_no_search_events_give_empty_tables_with_their_columns():
    events = pd.DataFrame([("u1", "s1", 100, "view", "i9", None)], columns=COLUMNS)
    searches, interactions = search_sessions(events)
    assert searches.empty and list(searches.columns) == ["search_id", "user_id", "session_id", "time", "query"]
    assert interactions.empty and list(interactions.columns) == ["search_id", "item_id", "grade"]
