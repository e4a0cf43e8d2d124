"""The serving wrapper, the gate's metrics from top-k lists and batch-recommendation requests."""

import numpy as np
import pandas as pd
import pytest

from jobs import schema
from jobs.recommend import active_user_requests, explode_recommendations
from jobs.register import raw_histories, topk_metrics
from jobs.serving import Recommender

VIEW, PURCHASE = schema.EVENT_TYPE_INDEX[schema.VIEW], schema.EVENT_TYPE_INDEX[schema.PURCHASE]


class FixedScorer:
    """Scores every history with the same row: item index i scores scores[i]."""

    name = "fixed"

    def __init__(self, scores):
        self.scores = np.asarray(scores, dtype=np.float32)
        self.seen = []

    def score(self, items, types):
        self.seen.append((items.copy(), types.copy()))
        return np.tile(self.scores, (len(items), 1))


def make_recommender(scores=(0.0, 0.4, 0.9, 0.1, 0.7), max_seq_len=3):
    return Recommender(FixedScorer(scores), [None, "a", "b", "c", "d"], max_seq_len)


def test_encode_left_pads_skips_unknown_items_and_keeps_the_latest():
    recommender = make_recommender()
    items, types = recommender.encode([["a", "zzz", "b"], ["a", "b", "c", "d"], []],
                                      [["view", "click", "purchase"], None, None])
    # Row 0: "zzz" is unknown to this model (a newer item) and is dropped with its type.
    assert items.tolist() == [[0, 1, 2], [2, 3, 4], [0, 0, 0]]
    assert types.tolist() == [[0, VIEW, PURCHASE], [VIEW, VIEW, VIEW], [0, 0, 0]]


def test_recommend_ranks_by_score_and_never_returns_excluded_items():
    recommender = make_recommender()
    ids, scores = recommender.recommend([["a"], ["a"]], k=3, exclude=[[], ["b", "unknown"]])
    # Scores b=0.9 > d=0.7 > a=0.4 > c=0.1; the second request excludes b.
    assert ids == [["b", "d", "a"], ["d", "a", "c"]]
    assert scores[1] == pytest.approx([0.7, 0.4, 0.1])


def test_topk_metrics_from_lists():
    # Target ranks 1, 3 and missing: recall = 2/3, mrr = (1 + 1/3) / 3 = 0.4444,
    # ndcg = (1/log2(2) + 1/log2(4)) / 3 = (1 + 0.5) / 3 = 0.5.
    metrics = topk_metrics([["x", "y", "z"], ["y", "z", "x"], ["y", "z", "w"]], ["x", "x", "x"], k=3)
    assert metrics == pytest.approx({"recall@3": 2 / 3, "mrr@3": 4 / 9, "ndcg@3": 0.5})


def test_raw_histories_drop_padding():
    class Examples:
        items = np.array([[0, 2, 1], [0, 0, 3]])
        types = np.array([[0, VIEW, PURCHASE], [0, 0, VIEW]])

    histories, types = raw_histories(Examples, np.array([None, "a", "b", "c"], dtype=object))
    assert histories == [["b", "a"], ["c"]]
    assert types == [["view", "purchase"], ["view"]]


def test_requests_cover_test_day_users_only_and_exclude_their_purchases():
    items = pd.DataFrame({schema.ITEM_IDX: [1, 2, 3], schema.ITEM_ID: ["a", "b", "c"]})
    sequences = pd.DataFrame({
        schema.USER_ID: ["u1", "u2"],
        schema.ITEM_IDX: [[1, 2, 3], [2, 3]],
        schema.EVENT_TYPE_IDX: [[PURCHASE, VIEW, VIEW], [VIEW, PURCHASE]],
        schema.TIMESTAMPS: [[1, 2, 3], [1, 2]],
        schema.SPLIT: [[schema.SPLIT_TRAIN, schema.SPLIT_VALID, schema.SPLIT_TEST],
                       [schema.SPLIT_TRAIN, schema.SPLIT_VALID]],  # u2 was not active on the test day
    })
    requests = active_user_requests(sequences, items, max_seq_len=2)
    assert requests[schema.USER_ID].tolist() == ["u1"]
    assert requests.loc[0, "history"] == ["b", "c"]  # the last max_seq_len events
    assert requests.loc[0, "event_types"] == ["view", "view"]
    assert requests.loc[0, "exclude"] == ["a"]  # bought in the window, even outside the history


def test_explode_recommendations_numbers_ranks_per_user():
    requests = pd.DataFrame({schema.USER_ID: ["u1", "u2"]})
    predictions = pd.DataFrame({"item_ids": [["b", "a"], ["c"]], "scores": [[0.9, 0.5], [0.3]]})
    table = explode_recommendations(requests, predictions, "7")
    assert table.to_dict("records") == [
        {schema.USER_ID: "u1", "rank": 1, schema.ITEM_ID: "b", "score": 0.9, "model_version": "7"},
        {schema.USER_ID: "u1", "rank": 2, schema.ITEM_ID: "a", "score": 0.5, "model_version": "7"},
        {schema.USER_ID: "u2", "rank": 1, schema.ITEM_ID: "c", "score": 0.3, "model_version": "7"},
    ]


def test_served_variant_is_the_best_fusion_on_the_validation_fold(tmp_config):
    import json
    import os

    from jobs.lake import partition_path
    from jobs.register import choose_variant

    folder = partition_path(tmp_config, schema.MODEL_FUSION, "2026-01-02")
    os.makedirs(folder)
    with open(os.path.join(folder, "valid_metrics.json"), "w") as handle:
        json.dump({"user_encoder": {"ndcg@20": 0.9}, "fusion_rrf": {"ndcg@20": 0.5},
                   "fusion_stacking": {"ndcg@20": 0.6}, "fusion_feature": {"ndcg@20": 0.4}}, handle)
    # A base model may score higher, but only fusion variants are candidates for serving.
    assert choose_variant(tmp_config, "2026-01-02") == "fusion_stacking"
