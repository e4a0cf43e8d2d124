"""jobs/serving/search_lists.py: head queries, user segments and the segments' merged lists."""

import numpy as np
import pandas as pd
import pytest

from jobs.common import schema
from jobs.serving.search_lists import (NEW_VISITORS, head_queries, merge_segment_lists, query_key,
                                       reciprocal_rank_fusion, segment_members, segment_requests, user_segments,
                                       window_histories)


def test_head_queries_count_a_query_by_its_words_and_break_ties_alphabetically():
    typed = pd.Series(["Lamp", "lamp ", "red mug", "Red  Mug", "sofa", "", None, "!!"])
    # lamp 2, red mug 2, sofa 1; blank and word-less queries are not queries
    assert head_queries(typed, 2) == ["lamp", "red mug"]
    assert head_queries(typed, 10) == ["lamp", "red mug", "sofa"]
    assert head_queries(pd.Series([], dtype=object), 5) == []


def test_a_query_key_is_the_segment_and_the_queries_words():
    assert query_key("Kitchen", "  Red MUG ") == "Kitchen|red mug"
    assert query_key(NEW_VISITORS, "lamp") == "new|lamp"


def test_a_users_segment_is_their_most_frequent_category_ties_to_the_first_name():
    sequences = pd.DataFrame({schema.USER_ID: ["u1", "u2", "u3", "u4"],
                              schema.ITEM_IDX: [[1, 2, 2], [1, 2], [9], []]})
    category_of_item = {1: "Toys", 2: "Books"}  # item 9 has no category in the catalog
    # u1: Books 2 x Toys 1; u2: 1 x 1, "Books" < "Toys"; u3 and u4: nothing named
    assert user_segments(sequences, category_of_item) == {"u1": "Books", "u2": "Books", "u3": NEW_VISITORS,
                                                          "u4": NEW_VISITORS}


def test_segment_members_are_a_seeded_sample_and_new_visitors_are_always_a_segment():
    segments = {f"u{n}": "Books" for n in range(10)} | {"t1": "Toys", "x": NEW_VISITORS}
    members = segment_members(segments, 3, seed=7)
    assert set(members) == {"Books", "Toys", NEW_VISITORS}
    assert len(members["Books"]) == 3 and len(set(members["Books"])) == 3
    assert set(members["Books"]) <= {f"u{n}" for n in range(10)}
    assert members["Toys"] == ["t1"] and members[NEW_VISITORS] == []
    assert segment_members(segments, 3, seed=7) == members
    assert segment_members({}, 3, seed=7) == {NEW_VISITORS: []}


def test_reciprocal_rank_fusion_sums_one_over_sixty_plus_rank():
    merged = reciprocal_rank_fusion([["a", "b"], ["b", "c"]], k=3)
    # b: 1/61 + 1/62 = 0.032522; a: 1/61 = 0.016393; c: 1/62 = 0.016129
    assert [item for item, _ in merged] == ["b", "a", "c"]
    assert [score for _, score in merged] == pytest.approx([1 / 61 + 1 / 62, 1 / 61, 1 / 62])
    assert reciprocal_rank_fusion([["a", "b"], ["b", "c"]], k=1) == [("b", pytest.approx(1 / 61 + 1 / 62))]
    assert reciprocal_rank_fusion([["z"], ["y"]], k=2) == [("y", pytest.approx(1 / 61)), ("z", pytest.approx(1 / 61))]


def test_each_segment_asks_once_per_member_and_query_new_visitors_with_an_empty_history():
    members = {"Books": ["u1", "u2"], NEW_VISITORS: []}
    histories = {"u1": {"history": ["i1"], "event_types": ["view"], "timestamps": [10]},
                 "u2": {"history": ["i2", "i3"], "event_types": ["view", "cart"], "timestamps": [5, 9]}}
    requests = segment_requests(["lamp", "mug"], members, histories)
    assert list(zip(requests["segment"], requests["member"], requests[schema.QUERY])) == [
        ("Books", "u1", "lamp"), ("Books", "u2", "lamp"), ("Books", "u1", "mug"), ("Books", "u2", "mug"),
        (NEW_VISITORS, None, "lamp"), (NEW_VISITORS, None, "mug")]
    assert requests["history"].tolist() == [["i1"], ["i2", "i3"], ["i1"], ["i2", "i3"], [], []]


def test_segment_lists_merge_the_members_answers_per_query():
    requests = pd.DataFrame({"segment": ["Books", "Books", NEW_VISITORS], schema.QUERY: ["lamp", "lamp", "lamp"]})
    predictions = pd.DataFrame({"item_ids": [["a", "b"], ["b", "c"], ["c"]]})
    table = merge_segment_lists(requests, predictions, n=2, model_version="4")
    assert list(table.columns) == ["segment", schema.QUERY, "rank", schema.ITEM_ID, "score", "model_version"]
    assert table[["segment", "rank", schema.ITEM_ID]].values.tolist() == [["Books", 1, "b"], ["Books", 2, "a"],
                                                                           [NEW_VISITORS, 1, "c"]]
    assert table["score"].to_numpy() == pytest.approx(np.array([1 / 61 + 1 / 62, 1 / 61, 1 / 61]))
    assert set(table["model_version"]) == {"4"}
    empty = merge_segment_lists(pd.DataFrame({"segment": [], schema.QUERY: []}), pd.DataFrame({"item_ids": []}),
                                n=2, model_version="")
    assert empty.empty and list(empty.columns) == list(table.columns)


def test_window_histories_give_the_members_latest_catalog_events_as_raw_ids():
    items = pd.DataFrame({schema.ITEM_IDX: [1, 2], schema.ITEM_ID: ["a", "b"]})
    view, cart = schema.EVENT_TYPE_INDEX[schema.VIEW], schema.EVENT_TYPE_INDEX[schema.ADD_TO_CART]
    sequences = pd.DataFrame({schema.USER_ID: ["u1", "u2"], schema.ITEM_IDX: [[1, 0, 2, 1], [2]],
                              schema.EVENT_TYPE_IDX: [[view, view, cart, view], [view]],
                              schema.TIMESTAMPS: [[10, 20, 30, 40], [5]]})
    # u1's last three events are (0, 2, 1) at 20, 30, 40: index 0 (outside the catalog) has no
    # raw id to send, so b (cart, 30) and a (view, 40) remain; u2 is not a member.
    assert window_histories(sequences, items, ["u1"], max_events=3) == {
        "u1": {"history": ["b", "a"], "event_types": [schema.ADD_TO_CART, schema.VIEW], "timestamps": [30, 40]}}
