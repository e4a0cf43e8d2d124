"""The serving wrapper, the gate's metrics from top-k lists and batch-recommendation requests."""

import numpy as np
import pandas as pd
import pytest

from jobs.common import schema
from jobs.serving.batch_recommend import active_user_requests, explode_recommendations
from jobs.serving.register_and_gate import raw_histories, raw_timestamps, request_frame, topk_metrics
from jobs.serving.fused_model import FusedRecommenderModel, Recommender, model_signature

VIEW, PURCHASE = schema.EVENT_TYPE_INDEX[schema.VIEW], schema.EVENT_TYPE_INDEX[schema.PURCHASE]


class FixedScorer:
    """Scores every history with the same row: item index i scores scores[i]."""

    name = "fixed"

    def __init__(self, scores):
        self.scores = np.asarray(scores, dtype=np.float32)
        self.seen = []

    def score(self, items, types, gaps=None):
        self.seen.append((items.copy(), types.copy(), None if gaps is None else gaps.copy()))
        return np.tile(self.scores, (len(items), 1))


def make_recommender(scores=(0.0, 0.4, 0.9, 0.1, 0.7), max_seq_len=3):
    return Recommender(FixedScorer(scores), [None, "a", "b", "c", "d"], max_seq_len)


def test_encode_left_pads_skips_unknown_items_and_keeps_the_latest():
    recommender = make_recommender()
    items, types, gaps = recommender.encode([["a", "zzz", "b"], ["a", "b", "c", "d"], []],
                                            [["view", "click", "purchase"], None, None])
    # Row 0: "zzz" is unknown to this model (a newer item) and is dropped with its type.
    assert items.tolist() == [[0, 1, 2], [2, 3, 4], [0, 0, 0]]
    assert types.tolist() == [[0, VIEW, PURCHASE], [VIEW, VIEW, VIEW], [0, 0, 0]]
    assert gaps.tolist() == [[0, 0, 0]] * 3  # no timestamps: every gap unknown


# Bucket = 1 + number of schema.GAP_BUCKET_EDGES_SECONDS <= gap; the edges start
# 10, 30, 60, 120, 300, 600, 1800, 3600, 10800, 43200, 86400, ... so
# 5 s -> 1, 10 s -> 2, 50 s -> 3, 95 s -> 4 (10, 30, 60), 86400 s -> 12 (the first 11 edges).
DAY = 86_400


def test_gap_bucket_edges_are_the_ones_the_hand_computations_assume():
    assert schema.GAP_BUCKET_EDGES_SECONDS[:11] == (10, 30, 60, 120, 300, 600, 1800, 3600, 10800, 43200, DAY)


def test_encode_buckets_the_gaps_of_the_whole_raw_history():
    recommender = make_recommender(max_seq_len=4)
    _, _, gaps = recommender.encode(
        [["a", "b", "c", "d"], ["a", "zzz", "b", "c"], ["d", "a", "b", "c", "d"], ["b"]],
        timestamps=[[0, 5, 100, 100 + DAY], [0, 50, 55, 55 + DAY], [0, 10, 15, 110, 110 + DAY], [7]])
    assert gaps.tolist() == [
        [0, 1, 4, 12],  # gaps 5 s, 95 s, 1 day; the first event has no previous one
        # "zzz" is skipped, yet "b" keeps its gap to it (5 s -> 1), not to "a" (55 s -> 3); left-padded
        [0, 0, 1, 12],
        [2, 1, 4, 12],  # only the last 4 are kept: "a" keeps its 10 s gap to the cut "d"
        [0, 0, 0, 0],
    ]


def test_encode_treats_missing_or_malformed_timestamps_as_unknown():
    recommender = make_recommender()
    items, _, gaps = recommender.encode([["a", "b"], ["a", "b"], ["a", "b"], ["a", "b"], ["a", "b"]],
                                        timestamps=[None, [1], [1, 2, 3], float("nan"), [[1], [2]]])
    assert items.tolist() == [[0, 1, 2]] * 5  # the histories themselves are served
    assert gaps.tolist() == [[0, 0, 0]] * 5
    # A missing time inside a list makes its own gap and the next one unknown (features.event_gap_buckets).
    assert recommender.encode([["a", "b", "c"]], timestamps=[[0, None, 100]])[2].tolist() == [[0, 0, 0]]
    with pytest.raises(ValueError, match="one entry"):
        recommender.encode([["a"], ["b"]], timestamps=[[0]])


def test_recommend_passes_the_gaps_to_the_scorer_batch_by_batch():
    recommender = make_recommender()
    recommender.recommend([["a", "b"], ["c"], ["a", "b", "c"]], k=2, batch_size=2,
                          timestamps=[[0, 5], [3], [0, 40, 40 + DAY]])
    # 40 s -> 3 (10, 30); 1 day -> 12.
    assert [seen[2].tolist() for seen in recommender.scorer.seen] == [[[0, 0, 1], [0, 0, 0]], [[0, 3, 12]]]


def test_pyfunc_predict_reads_timestamps_when_the_frame_has_them():
    model = FusedRecommenderModel()
    model.recommender = make_recommender()
    with_times = pd.DataFrame({"history": [["a", "b"], ["a", "b"], ["c"]],
                               "timestamps": [[0, 120], None, [1, 2]]})  # None and a wrong length: no gaps
    without_times = pd.DataFrame({"history": [["a", "b"]]})
    for frame in (with_times, without_times):
        predictions = model.predict(None, frame, params={"k": 2})
        assert predictions["item_ids"].tolist() == [["b", "d"]] * len(frame)  # b 0.9 > d 0.7
    scorer = model.recommender.scorer
    assert scorer.seen[0][2].tolist() == [[0, 0, 5], [0, 0, 0], [0, 0, 0]]  # 120 s -> 5
    assert scorer.seen[1][2].tolist() == [[0, 0, 0]]
    # MLflow's schema check lets both frames through, and refuses timestamps that are not integers.
    from mlflow.exceptions import MlflowException
    from mlflow.models import validate_schema

    inputs = model_signature(2).inputs
    for frame in (with_times, without_times):
        validate_schema(frame, inputs)
    with pytest.raises(MlflowException):
        validate_schema(pd.DataFrame({"history": [["a"]], "timestamps": [[1.5]]}), inputs)


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
    assert raw_timestamps(Examples) is None  # no gaps, no timestamps
    assert list(request_frame(histories, types).columns) == ["history", "event_types"]


def test_raw_timestamps_give_the_served_model_the_examples_gap_buckets():
    class Examples:
        items = np.array([[0, 2, 1, 3], [2, 0, 1, 3]])
        types = np.array([[0, VIEW, VIEW, VIEW], [VIEW, VIEW, VIEW, VIEW]])
        gaps = np.array([[0, 3, 5, 12], [2, 1, 4, 1]])  # row 1's item 0 is an out-of-catalog event

    # Each gap becomes its bucket's lower edge: 1 -> 0 s, 2 -> 10, 3 -> 30, 4 -> 60, 5 -> 120, 12 -> 86400.
    # Row 0: 30, +120, +86400. Row 1: 10, (+0 at the dropped event), +60, +0 -> kept 10, 70, 70.
    timestamps = raw_timestamps(Examples)
    assert timestamps == [[30, 150, 86_550], [10, 70, 70]]
    histories, types = raw_histories(Examples, np.array([None, "a", "b", "c"], dtype=object))
    recommender = make_recommender()
    _, _, gaps = recommender.encode(histories, types, timestamps)
    # The served buckets are the examples' own, except the oldest event of a request (0) and
    # row 1's "a", whose gap now spans the dropped event: 0 + 60 s -> 4, as it was.
    assert gaps.tolist() == [[0, 5, 12], [0, 4, 1]]
    frame = request_frame(histories, types, timestamps)
    assert frame["timestamps"].tolist() == timestamps


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
    requests = active_user_requests(sequences, items, max_seq_len=1)
    assert requests[schema.USER_ID].tolist() == ["u1"]
    # The last max_seq_len + 1 events: the extra one gives the oldest event read its time gap.
    assert requests.loc[0, "history"] == ["b", "c"]
    assert requests.loc[0, "event_types"] == ["view", "view"]
    assert requests.loc[0, "timestamps"] == [2, 3]  # parallel to the history
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

    from jobs.common.lake import partition_path
    from jobs.serving.register_and_gate import choose_variant

    folder = partition_path(tmp_config, schema.MODEL_FUSION, "2026-01-02")
    os.makedirs(folder)
    with open(os.path.join(folder, "valid_metrics.json"), "w") as handle:
        json.dump({"user_encoder": {"ndcg@20": 0.9}, "fusion_rrf": {"ndcg@20": 0.5},
                   "fusion_stacking": {"ndcg@20": 0.6}, "fusion_feature": {"ndcg@20": 0.4}}, handle)
    # A base model may score higher, but only fusion variants are candidates for serving.
    assert choose_variant(tmp_config, "2026-01-02") == "fusion_stacking"
