"""Full-catalog metrics, tie handling, top-k and the popularity baseline, on hand-made scores."""

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.baselines import PopularityScorer
from jobs.evaluation import (evaluate_scorer, mlflow_metric_key, parse_metric, ranking_metrics, target_ranks,
                             top_k)
from jobs.schema import ITEM_IDX, POPULARITY

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

    def score(self, items, types):
        self.batch_sizes.append(len(items))
        return self.matrix[items[:, -1]]


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
    from jobs.evaluate import markdown_table, report_ks

    metrics = {"popularity": {"recall@20": 0.5, "ndcg@20": 0.2},
               "fusion_rrf": {"recall@20": 0.25, "ndcg@20": 0.3},
               "user_encoder": {"recall@20": 0.75, "ndcg@20": 0.3}}
    assert markdown_table(metrics, "ndcg@20", n_examples=7, ds="2026-11-27").splitlines() == [
        "Test day 2026-11-27: 7 examples, full-catalog ranking, sorted by ndcg@20.",
        "",
        "| model | recall@20 | ndcg@20 |",
        "|---|---:|---:|",
        "| fusion_rrf | 0.2500 | 0.3000 |",  # tied at 0.3 with user_encoder: by name
        "| user_encoder | 0.7500 | 0.3000 |",
        "| popularity | 0.5000 | 0.2000 |",
    ]
    config = {"mlflow": {"primary_metric": "ndcg@20"}}
    assert report_ks(config) == (20,)
    assert report_ks(dict(config, evaluation={"ks": [10, 1, 5]})) == (1, 5, 10, 20)
