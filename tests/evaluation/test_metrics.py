"""Full-catalog metrics, tie handling, top-k, list metrics, exclude-seen, segments, bootstrap
intervals, the report files and the popularity baseline, on hand-made scores."""

import json
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.train.baselines import PopularityScorer
from jobs.common.features import catalog_mask
from jobs.evaluation.metrics import (NOT_RECOMMENDED, CatalogMaskedScorer, MemoizedScorer, TopKListStatistics,
                             bootstrap_intervals, evaluate_full_catalog, evaluate_full_catalog_many, evaluate_scorer,
                             evaluate_scorers, example_segments, metric_contributions, mlflow_metric_key,
                             parse_metric, ranking_metrics, segment_metrics, target_ranks, top_k)
from jobs.common.schema import EVENT_TYPE_IDX, ITEM_IDX, POPULARITY, SPLIT, SPLIT_TEST, TIMESTAMPS, USER_ID

NEG_INF = -np.inf

# Four examples over a catalog of 4 items (columns 0..4, column 0 = padding).
HAND_SCORES = np.array([
    [NEG_INF, 0.5, 0.9, 0.5, 0.1],  # target 1 (0.5): item 2 higher, item 3 tied -> rank 1+1+1 = 3
    [10.0, 0.2, 0.1, 0.3, 0.3],  # target 3 (0.3): item 4 tied, padding's 10.0 ignored -> rank 1+0+1 = 2
    [0.0, 0.0, 0.0, 0.0, 0.0],  # target 2: everything tied -> worst rank 1+0+3 = 4
    [NEG_INF, 0.0, 0.0, 0.0, 1.0],  # target 4 alone on top -> rank 1
], dtype=np.float32)
HAND_TARGETS = np.array([1, 3, 2, 4])
HAND_RANKS = [3, 2, 4, 1]


@dataclass
class FakeExamples:
    items: np.ndarray
    types: np.ndarray
    targets: np.ndarray


class MatrixScorer:
    """Returns fixed score rows; the example's row id is smuggled in as its last history item."""

    name = "matrix"

    def __init__(self, matrix):
        self.matrix = matrix
        self.batch_sizes = []

    def score(self, items, types, gaps=None):
        self.batch_sizes.append(len(items))
        return self.matrix[items[:, -1]]


@dataclass
class FakeExamplesWithGaps(FakeExamples):
    gaps: np.ndarray


class GapRecorder:
    """Scores item 1 highest for everyone and keeps every gaps argument it is given."""

    name = "gap_recorder"

    def __init__(self):
        self.received = []

    def score(self, items, types, gaps=None):
        self.received.append(None if gaps is None else gaps.copy())
        return np.tile(np.array([NEG_INF, 1.0, 0.0], dtype=np.float32), (len(items), 1))


def test_evaluation_hands_each_batch_its_own_gaps():
    # Five examples, batches of 2: rows 0-1, 2-3, 4. Gap buckets 10 * row + column are unique,
    # so a wrong row or a batch that is not cut would show up.
    gaps = (10 * np.arange(5)[:, None] + np.arange(2)[None, :]).astype(np.int32)
    examples = FakeExamplesWithGaps(items=np.ones((5, 2), np.int32), types=np.ones((5, 2), np.int32),
                                    targets=np.ones(5, np.int64), gaps=gaps)
    for evaluate in (lambda scorer: evaluate_scorer(scorer, examples, ks=(1,), batch_size=2),
                     lambda scorer: evaluate_full_catalog(scorer, examples, ks=(1,), batch_size=2)):
        recorder = GapRecorder()
        evaluate(recorder)
        assert [batch.tolist() for batch in recorder.received] == [[[0, 1], [10, 11]], [[20, 21], [30, 31]],
                                                                   [[40, 41]]]


def test_examples_without_gaps_are_scored_with_gaps_none():
    recorder = GapRecorder()
    examples = FakeExamples(items=np.ones((3, 2), np.int32), types=np.ones((3, 2), np.int32), targets=np.ones(3))
    evaluate_scorer(recorder, examples, ks=(1,), batch_size=2)
    assert recorder.received == [None, None]


def test_catalog_mask_forwards_gaps_to_the_wrapped_scorer():
    recorder = GapRecorder()
    masked = CatalogMaskedScorer(recorder, np.array([False, True, True]))
    masked.score(np.ones((1, 2), np.int32), np.ones((1, 2), np.int32), np.array([[0, 7]], np.int32))
    assert recorder.received[0].tolist() == [[0, 7]]


def test_target_ranks_are_conservative_about_ties_and_ignore_padding():
    assert target_ranks(HAND_SCORES, HAND_TARGETS).tolist() == HAND_RANKS


def test_ranking_metrics_match_hand_computation():
    metrics = ranking_metrics(np.array(HAND_RANKS), ks=(2, 20))
    # k=2: hits are ranks 2 and 1 -> recall 2/4; mrr (1/2 + 1)/4; ndcg (1/log2(3) + 1/log2(2))/4
    assert metrics["recall@2"] == pytest.approx(0.5)
    assert metrics["mrr@2"] == pytest.approx(0.375)
    assert metrics["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1.0) / 4)  # 0.407732
    # k=20: every rank counts: mrr (1/3 + 1/2 + 1/4 + 1)/4 = 0.520833
    assert metrics["recall@20"] == pytest.approx(1.0)
    assert metrics["mrr@20"] == pytest.approx(0.5208333)
    # ndcg (1/log2(4) + 1/log2(3) + 1/log2(5) + 1)/4 = (0.5 + 0.630930 + 0.430677 + 1)/4 = 0.640402
    assert metrics["ndcg@20"] == pytest.approx(0.6404016, abs=1e-6)
    assert set(metrics) == {f"{kind}@{k}" for kind in ("recall", "mrr", "ndcg") for k in (2, 20)}


def test_evaluate_scorer_batches_give_the_unbatched_answer():
    examples = FakeExamples(items=np.array([[0], [1], [2], [3]]), types=np.ones((4, 1), np.int32),
                            targets=HAND_TARGETS)
    scorer = MatrixScorer(HAND_SCORES)
    metrics = evaluate_scorer(scorer, examples, ks=(1, 5), batch_size=3)
    assert scorer.batch_sizes == [3, 1]
    # ranks 3, 2, 4, 1: only the last is a hit at 1; all four within 5.
    assert metrics["recall@1"] == pytest.approx(0.25)
    assert metrics["recall@5"] == pytest.approx(1.0)
    assert metrics["mrr@5"] == pytest.approx(0.5208333)


def test_bad_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="targets must be item indices 1..4"):
        target_ranks(HAND_SCORES, np.array([0, 1, 1, 1]))
    nan_scores = HAND_SCORES.copy()
    nan_scores[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(nan_scores, HAND_TARGETS)
    with pytest.raises(ValueError, match="need scores"):
        target_ranks(HAND_SCORES, HAND_TARGETS[:2])
    with pytest.raises(ValueError, match="non-empty"):
        ranking_metrics(np.array([], dtype=int))
    with pytest.raises(ValueError, match="ndcg@20"):
        parse_metric("ndcg20")


def test_top_k_breaks_ties_by_lower_index_and_never_returns_padding():
    scores = np.array([[5.0, 0.3, 0.7, 0.3, 0.7, 0.1]])  # padding scores highest but is never chosen
    assert top_k(scores, 3).tolist() == [[2, 4, 1]]  # 0.7 tie -> 2 before 4; 0.3 tie -> 1 before 3
    assert top_k(scores, 10).tolist() == [[2, 4, 1, 3, 5]]  # more than the catalog: all 5 items


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), min_size=7, max_size=7), min_size=1, max_size=4), st.integers(1, 7))
def test_top_k_equals_sorting_by_score_then_index(rows, k):
    scores = np.array(rows, dtype=np.float32)  # small integers: many ties
    expected = [sorted(range(1, 7), key=lambda item: (-row[item], item))[:k] for row in rows]
    assert top_k(scores, k).tolist() == expected


def test_popularity_scorer_from_items_table():
    items = pd.DataFrame({ITEM_IDX: [2, 1, 3], POPULARITY: [5, 0, 5]})
    scorer = PopularityScorer.from_items(items, n_items=3)
    scores = scorer.score(np.zeros((2, 4), np.int32), np.zeros((2, 4), np.int32))
    assert scorer.name == "popularity"
    assert scores.tolist() == [[NEG_INF, 0.0, 5.0, 5.0]] * 2
    # Target 3 ties item 2 at 5 counts -> conservative rank 2; target 1 is last of 3.
    assert target_ranks(scores, np.array([3, 1])).tolist() == [2, 3]


def test_popularity_scorer_rejects_a_bad_items_table():
    with pytest.raises(ValueError, match="lacks column"):
        PopularityScorer.from_items(pd.DataFrame({ITEM_IDX: [1]}), n_items=1)
    with pytest.raises(ValueError, match=r"item_idx must lie in 1..2"):
        PopularityScorer.from_items(pd.DataFrame({ITEM_IDX: [1, 3], POPULARITY: [1, 1]}), n_items=2)


def test_mlflow_metric_key_avoids_characters_mlflow_rejects():
    assert mlflow_metric_key("fusion_rrf", "ndcg@20") == "fusion_rrf.ndcg_at_20"


def test_markdown_report_sorts_models_by_the_primary_metric():
    from jobs.evaluation.evaluate import markdown_table, report_ks

    metrics = {"popularity": {"recall@20": 0.5, "ndcg@20": 0.2},
               "fusion_rrf": {"recall@20": 0.25, "ndcg@20": 0.3},
               "user_encoder": {"recall@20": 0.75, "ndcg@20": 0.3}}
    assert markdown_table(metrics, "ndcg@20", n_examples=7, ds="2026-11-27").splitlines() == [
        "Test split of night 2026-11-27: 7 examples, full-catalog ranking, sorted by ndcg@20.",
        "",
        "| model | recall@20 | ndcg@20 |",
        "|---|---:|---:|",
        "| fusion_rrf | 0.2500 | 0.3000 |",  # tied at 0.3 with user_encoder: by name
        "| user_encoder | 0.7500 | 0.3000 |",
        "| popularity | 0.5000 | 0.2000 |",
    ]
    config = {"mlflow": {"primary_metric": "ndcg@20"}}
    assert report_ks(dict(config, evaluation={"ks": [20]})) == (20,)
    assert report_ks(dict(config, evaluation={"ks": [10, 1, 5]})) == (1, 5, 10, 20)


# --- list metrics: coverage and average popularity ------------------------------------------

# Three examples over a catalog of 5 items; popularity 10, 40, 0, 20, 5 -> divided by the
# largest (40): 0.25, 1.0, 0.0, 0.5, 0.125.
LIST_SCORES = np.array([
    [NEG_INF, 0.1, 0.9, 0.0, 0.5, 0.2],  # top 2: items 2, 4
    [NEG_INF, 0.0, 0.9, 0.1, 0.1, 0.8],  # top 2: items 2, 5
    [NEG_INF, NEG_INF, NEG_INF, NEG_INF, NEG_INF, 0.3],  # only item 5 is recommendable: slot 2 (item 1
    # by the lowest-index tie break) is empty, so item 1 is not covered
])
LIST_POPULARITY = np.array([0.0, 10, 40, 0, 20, 5])


def test_coverage_and_average_popularity_match_hand_computation():
    statistics = TopKListStatistics(n_items=5, ks=(1, 2), popularity=LIST_POPULARITY)
    statistics.add(LIST_SCORES[:2])
    statistics.add(LIST_SCORES[2:])  # batches accumulate
    assert statistics.metrics() == pytest.approx({
        "coverage@1": 2 / 5,  # items {2, 5}
        "coverage@2": 3 / 5,  # items {2, 4, 5}
        "avg_popularity@1": (1.0 + 1.0 + 0.125) / 3,  # items 2, 2, 5 = 0.708333
        "avg_popularity@2": (1.0 + 0.5 + 1.0 + 0.125 + 0.125) / 5,  # 5 filled slots: 2, 4, 2, 5, 5 = 0.55
    })


def test_evaluate_full_catalog_batches_lists_and_ranks_like_one_pass():
    examples = FakeExamples(items=np.array([[0], [1], [2]]), types=np.ones((3, 1), np.int32),
                            targets=np.array([4, 3, 5]))
    result = evaluate_full_catalog(MatrixScorer(LIST_SCORES), examples, ks=(1, 2), popularity=LIST_POPULARITY,
                                   batch_size=2)
    # target 4 below item 2 -> 2; target 3 (0.1) below items 2, 5 and tied with 4 -> 4; target 5 on top -> 1.
    assert result.ranks.tolist() == [2, 4, 1]
    assert result.list_metrics == pytest.approx({"coverage@1": 0.4, "coverage@2": 0.6,
                                                 "avg_popularity@1": 2.125 / 3, "avg_popularity@2": 0.55})
    assert result.metrics(ks=(2,))["recall@2"] == pytest.approx(2 / 3)
    without_popularity = evaluate_full_catalog(MatrixScorer(LIST_SCORES), examples, ks=(1,))
    assert without_popularity.list_metrics == pytest.approx({"coverage@1": 0.4})


def test_list_metrics_reject_a_popularity_vector_of_the_wrong_size():
    with pytest.raises(ValueError, match=r"popularity must be a vector \[n_items \+ 1\] = \[6\]"):
        TopKListStatistics(n_items=5, ks=(1,), popularity=np.ones(5))
    with pytest.raises(ValueError, match="non-negative"):
        TopKListStatistics(n_items=2, ks=(1,), popularity=np.array([0.0, -1.0, 2.0]))


# --- the exclude-already-seen switch ---------------------------------------------------------

class RowScorer:
    """Returns fixed score rows; the example's row id is smuggled in as its last event type."""

    name = "rows"

    def __init__(self, matrix):
        self.matrix = matrix

    def score(self, items, types, gaps=None):
        return self.matrix[types[:, -1]]


def test_exclude_seen_ranks_without_history_items_and_misses_a_seen_target():
    scores = np.array([
        [NEG_INF, 0.5, 0.9, 0.5, 0.1],  # history [3, 2], target 2: the target itself was seen
        [NEG_INF, 0.5, 0.9, 0.5, 0.1],  # history [0, 2], target 1: item 2 removed -> only item 3 ties it
        [NEG_INF, 0.4, 0.3, 0.2, 0.1],  # history [0, 0], target 4: nothing to remove
    ])
    examples = FakeExamples(items=np.array([[3, 2], [0, 2], [0, 0]]), types=np.array([[1, 0], [1, 1], [1, 2]]),
                            targets=np.array([2, 1, 4]))
    # Without the switch: target 2 is on top (1); target 1 is below item 2 and tied with 3 (3); target 4 last (4).
    assert evaluate_full_catalog(RowScorer(scores), examples, ks=(5,)).ranks.tolist() == [1, 3, 4]
    result = evaluate_full_catalog(RowScorer(scores), examples, ks=(1, 5), exclude_seen=True)
    assert result.ranks.tolist() == [NOT_RECOMMENDED, 2, 4]
    # Even with k=5 above the 4-item catalog, the seen target is a miss: recall@5 = 2/3.
    assert result.metrics(ks=(5,)) == pytest.approx({"recall@5": 2 / 3, "mrr@5": (0.5 + 0.25) / 3,
                                                     "ndcg@5": (1 / math.log2(3) + 1 / math.log2(5)) / 3})
    # The top-1 lists: item 1 (items 2, 3 removed), item 1 (item 2 removed), item 1.
    assert result.list_metrics == pytest.approx({"coverage@1": 1 / 4, "coverage@5": 4 / 4})
    assert evaluate_scorer(RowScorer(scores), examples, ks=(1,), exclude_seen=True)["recall@1"] == pytest.approx(0.0)


def test_exclude_seen_leaves_the_scorers_own_matrix_untouched():
    scores = np.array([[NEG_INF, 0.5, 0.9]], dtype=np.float32)
    examples = FakeExamples(items=np.array([[2]]), types=np.array([[0]]), targets=np.array([1]))
    assert evaluate_full_catalog(RowScorer(scores), examples, ks=(1,), exclude_seen=True).ranks.tolist() == [1]
    assert scores.tolist() == [[NEG_INF, 0.5, pytest.approx(0.9)]]


def test_metrics_of_a_never_recommended_target_are_exact_zeros():
    metrics = ranking_metrics(np.array([NOT_RECOMMENDED, 1]), ks=(20,))
    assert metrics == {"recall@20": 0.5, "mrr@20": 0.5, "ndcg@20": 0.5}


# --- per-example contributions and per-segment results ---------------------------------------

def test_metric_contributions_average_to_the_metric():
    assert metric_contributions(np.array(HAND_RANKS), "mrr@2").tolist() == [0.0, 0.5, 0.0, 1.0]
    assert metric_contributions(np.array(HAND_RANKS), "recall@3").tolist() == [1.0, 1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="<recall|mrr|ndcg>@<k>"):
        metric_contributions(np.array(HAND_RANKS), "coverage@3")


def segment_sequences():
    """u1 came back on the test day; u2 is new (its item-0 event is a real event, not a target);
    u3 was last seen on the valid day."""
    return pd.DataFrame({
        USER_ID: ["u1", "u2", "u3"],
        ITEM_IDX: [[1, 2, 3], [5, 0, 6], [4, 1]],
        EVENT_TYPE_IDX: [[1, 1, 1], [1, 2, 1], [1, 1]],
        TIMESTAMPS: [[1, 2, 3], [1, 2, 3], [1, 2]],
        SPLIT: [[0, SPLIT_TEST, SPLIT_TEST], [SPLIT_TEST] * 3, [1, SPLIT_TEST]],
    })


def test_segments_split_new_and_returning_users_and_history_lengths():
    from jobs.common.features import make_examples

    examples = make_examples(segment_sequences(), SPLIT_TEST, max_len=3)
    # Examples in order: u1 -> 2 (history 1 event), u1 -> 3 (2 events), u2 -> 6 (2 events: 5 and
    # the out-of-catalog 0), u3 -> 1 (1 event).
    assert examples.user_ids.tolist() == ["u1", "u1", "u2", "u3"]
    segments = example_segments(examples, segment_sequences(), SPLIT_TEST, long_history_min_events=2)
    assert {name: mask.tolist() for name, mask in segments.items()} == {
        "new_users": [False, False, True, False],
        "returning_users": [True, True, False, True],
        "short_history": [True, False, False, True],
        "long_history": [False, True, True, False],
        "repeat_target": [False, False, False, False],  # no target is in its own history
        "new_target": [True, True, True, True],
    }
    results = segment_metrics(np.array([1, 4, 2, 30]), segments, ks=(2,))
    assert results["new_users"] == pytest.approx({"n_examples": 1, "recall@2": 1.0, "mrr@2": 0.5,
                                                  "ndcg@2": 1 / math.log2(3)})
    # returning: ranks 1, 4, 30 -> one hit at 1; long: ranks 4, 2; short: ranks 1, 30.
    assert results["returning_users"]["n_examples"] == 3
    assert results["returning_users"]["mrr@2"] == pytest.approx(1 / 3)
    assert (results["long_history"]["recall@2"], results["long_history"]["mrr@2"]) == pytest.approx((0.5, 0.25))
    assert (results["short_history"]["recall@2"], results["short_history"]["mrr@2"]) == pytest.approx((0.5, 0.5))


def test_a_target_already_in_the_history_is_a_repeat_target():
    from jobs.common.features import make_examples

    # r views 2, 3, back to 2, 2 again; n views 4 then 5 (all on the test day).
    sequences = pd.DataFrame({USER_ID: ["r", "n"], ITEM_IDX: [[2, 3, 2, 2], [4, 5]],
                              EVENT_TYPE_IDX: [[1, 1, 1, 1], [1, 1]], TIMESTAMPS: [[1, 2, 3, 4], [1, 2]],
                              SPLIT: [[SPLIT_TEST] * 4, [SPLIT_TEST] * 2]})
    examples = make_examples(sequences, SPLIT_TEST, max_len=3)
    # Examples: r -> 3 (history [2]), r -> 2 ([2, 3]), r -> 2 ([2, 3, 2]), n -> 5 ([4]).
    assert examples.targets.tolist() == [3, 2, 2, 5]
    segments = example_segments(examples, sequences, SPLIT_TEST, long_history_min_events=2)
    assert segments["repeat_target"].tolist() == [False, True, True, False]
    assert segments["new_target"].tolist() == [True, False, False, True]
    # Ranks 5, 1, 2, 1 at k=2: repeats hit twice (MRR (1 + 1/2) / 2), new ones once (MRR 1/2).
    results = segment_metrics(np.array([5, 1, 2, 1]), segments, ks=(2,))
    assert (results["repeat_target"]["n_examples"], results["repeat_target"]["mrr@2"]) == (2, pytest.approx(0.75))
    assert (results["new_target"]["recall@2"], results["new_target"]["mrr@2"]) == pytest.approx((0.5, 0.5))


def test_an_empty_segment_reports_only_its_size():
    from jobs.common.features import make_examples

    examples = make_examples(segment_sequences(), SPLIT_TEST, max_len=3)
    segments = example_segments(examples, segment_sequences(), SPLIT_TEST, long_history_min_events=4)
    assert segment_metrics(np.ones(4, dtype=int), segments, ks=(1,))["long_history"] == {"n_examples": 0}
    with pytest.raises(ValueError, match="lack column 'split'"):
        example_segments(examples, segment_sequences().drop(columns=[SPLIT]), SPLIT_TEST, long_history_min_events=4)


# --- bootstrap confidence intervals ------------------------------------------------------------

def test_bootstrap_of_equal_contributions_has_zero_width():
    intervals = bootstrap_intervals({"recall@20": np.full(7, 0.25)}, resamples=50, confidence=0.95, seed=3)
    assert intervals == {"recall@20": (0.25, 0.25)}


def test_bootstrap_bounds_of_a_two_example_vector():
    # Resampling [0, 1] gives means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: about 50 of the
    # 200 resample means are 0 and 50 are 1, so the 2.5% and 97.5% percentiles are 0 and 1.
    assert bootstrap_intervals({"m": np.array([0.0, 1.0])}, resamples=200, confidence=0.95, seed=0) == {"m": (0.0, 1.0)}


def test_bootstrap_interval_of_a_coin_matches_the_normal_approximation():
    # 400 examples, half hits: standard error sqrt(0.25 / 400) = 0.025, so the 95% interval is
    # about 0.5 +- 1.96 * 0.025 = 0.451..0.549 (200 resamples estimate it to about +-0.01).
    low, high = bootstrap_intervals({"m": np.tile([0.0, 1.0], 200)}, resamples=200, confidence=0.95, seed=42)["m"]
    assert 0.43 < low < 0.47 and 0.53 < high < 0.57


def test_bootstrap_resamples_are_paired_across_metrics_and_seeded():
    base = np.array([0.0, 1.0, 0.0, 0.0, 1.0, 0.5])
    intervals = bootstrap_intervals({"a": base, "b": base + 0.1}, resamples=100, confidence=0.95, seed=7)
    # The same examples are drawn for both vectors, so b's interval is a's shifted by 0.1.
    assert np.array(intervals["b"]) == pytest.approx(np.array(intervals["a"]) + 0.1)
    assert bootstrap_intervals({"a": base}, resamples=100, confidence=0.95, seed=7)["a"] == intervals["a"]
    assert intervals["a"][0] < base.mean() < intervals["a"][1]


def test_by_user_bootstrap_draws_whole_users_and_widens_the_interval():
    # User a has three hits, user b one miss. Drawing 2 users: (a, a) mean 1, (b, b) mean 0,
    # (a, b) mean 3/4 -- each of (a, a) and (b, b) with probability 1/4, so the 2.5% and 97.5%
    # percentiles of 400 resamples are 0 and 1. Drawing the 4 examples one by one instead, a
    # mean of 0 needs four misses in a row (1/256 < 2.5%): the interval starts higher.
    hits, users = np.array([1.0, 1.0, 1.0, 0.0]), np.array(["a", "a", "a", "b"])
    by_user = bootstrap_intervals({"m": hits}, resamples=400, confidence=0.95, seed=0, groups=users)["m"]
    by_example = bootstrap_intervals({"m": hits}, resamples=400, confidence=0.95, seed=0)["m"]
    assert by_user == (0.0, 1.0)
    assert by_example[0] > 0.0
    with pytest.raises(ValueError, match="one group per example"):
        bootstrap_intervals({"m": hits}, resamples=10, confidence=0.95, seed=0, groups=users[:3])


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="non-empty and finite"):
        bootstrap_intervals({"m": np.array([0.5, np.nan])}, resamples=10, confidence=0.95, seed=0)
    with pytest.raises(ValueError, match="0 < confidence < 1"):
        bootstrap_intervals({"m": np.ones(3)}, resamples=10, confidence=95, seed=0)


# --- the evaluate job's report files ----------------------------------------------------------

def test_report_files_keep_metrics_json_and_add_details_columns_and_mlflow_keys(tmp_path):
    from jobs.evaluation.evaluate import detail_report, mlflow_evaluation_metrics, write_report
    from jobs.evaluation.metrics import FullCatalogResult

    settings = {"ks": [1, 2], "exclude_seen": False, "long_history_min_events": 5, "bootstrap_resamples": 50,
                "confidence": 0.9, "bootstrap_unit": "example", "seed": 1}
    results = {"steady": FullCatalogResult(np.array([1, 1, 1, 1]), {"coverage@1": 0.25, "coverage@2": 0.5,
                                                                    "avg_popularity@1": 1.0,
                                                                    "avg_popularity@2": 0.75}),
               "shaky": FullCatalogResult(np.array([1, 3, 2, 1]), {"coverage@1": 0.5, "coverage@2": 0.75,
                                                                   "avg_popularity@1": 0.5,
                                                                   "avg_popularity@2": 0.5})}
    metrics = {name: result.metrics((1, 2)) for name, result in results.items()}
    segments = {"new_users": np.array([True, False, False, False]),
                "returning_users": np.array([False, True, True, True])}
    details = detail_report(results, metrics, segments, settings)
    write_report(str(tmp_path), metrics, "ndcg@2", n_examples=4, ds="2026-11-27", details=details)

    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics  # unchanged shape
    written = json.loads((tmp_path / "metrics_detail.json").read_text())
    assert written["n_examples"] == 4 and written["settings"] == settings
    steady = written["models"]["steady"]
    assert steady["intervals"]["ndcg@2"] == [1.0, 1.0]  # every example a hit at 1: zero width
    assert steady["lists"]["coverage@2"] == 0.5
    # shaky: ranks 3, 2, 1 for the returning users -> recall@2 = 2/3, mrr@2 = (0 + 0.5 + 1) / 3
    assert written["models"]["shaky"]["segments"]["returning_users"] == pytest.approx(
        {"n_examples": 3, "recall@1": 1 / 3, "mrr@1": 1 / 3, "ndcg@1": 1 / 3, "recall@2": 2 / 3, "mrr@2": 0.5,
         "ndcg@2": (1 / math.log2(3) + 1) / 3})

    table = (tmp_path / "metrics.md").read_text().splitlines()
    assert table[2] == ("| model | recall@1 | mrr@1 | ndcg@1 | recall@2 | mrr@2 | ndcg@2 | ndcg@2 90% CI "
                        "| coverage@2 | avg_popularity@2 |")
    assert table[4].startswith("| steady | 1.0000 |") and table[4].endswith(" | 1.0000..1.0000 | 0.5000 | 0.7500 |")
    assert table[5].startswith("| shaky |")

    flat = mlflow_evaluation_metrics(metrics, details, "ndcg@2")
    assert not [key for key in flat if "@" in key]
    assert flat["steady.ndcg_at_2.ci_low"] == flat["steady.ndcg_at_2.ci_high"] == 1.0
    assert flat["shaky.coverage_at_1"] == 0.5
    assert flat["shaky.returning_users.ndcg_at_2"] == pytest.approx((1 / math.log2(3) + 1) / 3)
    assert flat["segment.new_users.n_examples"] == 1


def test_evaluation_settings_add_the_primary_cutoff_and_the_seed():
    from jobs.common.config import resolve_config
    from jobs.evaluation.evaluate import evaluation_settings

    config = resolve_config({"evaluation": {"ks": [5, 1]}, "seed": 7}, environ={})
    assert evaluation_settings(config) == {"ks": [1, 5, 20], "exclude_seen": False, "long_history_min_events": 5,
                                           "bootstrap_resamples": 200, "confidence": 0.95, "bootstrap_unit": "user",
                                           "seed": 7}


@pytest.mark.parametrize("setting, message", [
    ({"exclude_seen": "yes"}, "config evaluation.exclude_seen: expected true or false, got 'yes'"),
    ({"long_history_min_events": 0}, "config evaluation.long_history_min_events: input should be greater than or equal to 1"),
    ({"confidence": 95}, "config evaluation.confidence: input should be less than 1"),
    ({"bootstrap_unit": "session"}, "config evaluation.bootstrap_unit: input should be 'user' or 'example'"),
])
def test_a_bad_evaluation_setting_is_named_when_the_config_is_resolved(setting, message):
    from jobs.common.config import resolve_config

    with pytest.raises(ValueError, match=re.escape(message)):
        resolve_config({"evaluation": setting}, environ={})


def test_top_k_on_rows_mostly_at_their_floor_matches_a_full_sort():
    # Popularity-like members leave most of a large catalog at one floor score; top_k then
    # selects among the values above it. Reference: a full sort by (-score, item index).
    from jobs.evaluation.metrics import top_k

    rng = np.random.default_rng(5)
    for floor_share, k in ((0.95, 10), (0.999, 10), (0.5, 40), (0.0, 7)):
        scores = rng.integers(0, 50, size=(4, 2001)).astype(np.float64)
        scores[rng.random(scores.shape) < floor_share] = -3.0
        scores[:, 0] = -np.inf  # column 0 is padding
        expected = [sorted(range(1, 2001), key=lambda item: (-row[item], item))[:k] for row in scores]
        np.testing.assert_array_equal(top_k(scores, k), expected)


# --- memoized members, and every model over the same batches ---------------------------

def test_a_memoized_scorer_answers_the_latest_request_again_without_scoring_it():
    inner = MatrixScorer(HAND_SCORES)
    memo = MemoizedScorer(inner, max_bytes=10**6)
    first = memo.score(np.array([[0], [1]]), np.ones((2, 1)))
    again = memo.score(np.array([[0], [1]]), np.ones((2, 1)))  # equal content, other arrays
    assert inner.batch_sizes == [2] and (memo.latest.hits, memo.latest.misses) == (1, 1)
    assert again is first and np.array_equal(first, HAND_SCORES[[0, 1]])
    with pytest.raises(ValueError):  # read-only: nobody can change the next caller's answer
        first[0, 1] = 7.0
    memo.score(np.array([[0], [1]]), np.ones((2, 1)), np.zeros((2, 1), np.int32))  # other gaps: other request
    memo.score(np.array([[1], [0]]), np.ones((2, 1)))  # other rows: other request
    memo.score(np.array([[0], [1]]), np.ones((2, 1)))  # only the latest answer is kept
    assert inner.batch_sizes == [2, 2, 2, 2]
    assert memo.name == "matrix"  # everything else is the wrapped scorer's


def test_a_memoized_scorer_keeps_no_answer_larger_than_its_budget():
    inner = MatrixScorer(HAND_SCORES)
    one_row = HAND_SCORES[[0]].nbytes  # 5 float32 = 20 bytes
    memo = MemoizedScorer(inner, max_bytes=one_row)
    for rows in ([[0]], [[0]], [[0], [1]], [[0], [1]]):
        memo.score(np.array(rows), np.ones((len(rows), 1)))
    assert inner.batch_sizes == [1, 2, 2]  # the two-row answer (40 bytes) is scored each time


def test_evaluating_many_scorers_together_gives_each_its_own_results():
    rows = np.arange(4)[:, None]
    examples = FakeExamples(rows, np.ones_like(rows), HAND_TARGETS)
    shifted = MatrixScorer(np.roll(HAND_SCORES, 1, axis=1))
    together = evaluate_full_catalog_many({"hand": MatrixScorer(HAND_SCORES), "shifted": shifted}, examples,
                                          ks=(1, 2), batch_size=3)
    for name, scorer in (("hand", MatrixScorer(HAND_SCORES)), ("shifted", MatrixScorer(np.roll(HAND_SCORES, 1, axis=1)))):
        alone = evaluate_full_catalog(scorer, examples, ks=(1, 2), batch_size=3)
        assert together[name].ranks.tolist() == alone.ranks.tolist()
        assert together[name].list_metrics == alone.list_metrics
    assert together["hand"].ranks.tolist() == HAND_RANKS
    assert shifted.batch_sizes == [3, 1]
    assert evaluate_scorers({"hand": MatrixScorer(HAND_SCORES)}, examples, ks=(1,), batch_size=3) == \
        {"hand": evaluate_scorer(MatrixScorer(HAND_SCORES), examples, ks=(1,))}


def test_each_batch_is_scored_by_every_scorer_before_the_next_batch():
    calls = []

    class Recording(MatrixScorer):
        def score(self, items, types, gaps=None):
            calls.append((self.name, len(items)))
            return super().score(items, types)

    first, second = Recording(HAND_SCORES), Recording(HAND_SCORES)
    first.name, second.name = "member", "fuser"
    rows = np.arange(4)[:, None]
    evaluate_full_catalog_many({"member": first, "fuser": second}, FakeExamples(rows, np.ones_like(rows), HAND_TARGETS),
                               ks=(1,), batch_size=2)
    assert calls == [("member", 2), ("fuser", 2), ("member", 2), ("fuser", 2)]


def test_evaluating_on_zero_examples_names_the_scorers():
    empty = FakeExamples(np.zeros((0, 1), np.int64), np.zeros((0, 1), np.int64), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="cannot evaluate 'matrix' on zero examples"):
        evaluate_full_catalog(MatrixScorer(HAND_SCORES), empty)
    with pytest.raises(ValueError, match="cannot evaluate 'member, fuser' on zero examples"):
        evaluate_scorers({"member": MatrixScorer(HAND_SCORES), "fuser": MatrixScorer(HAND_SCORES)}, empty)
