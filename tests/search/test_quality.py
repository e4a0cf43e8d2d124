"""jobs/search/quality.py on searches worked out by hand."""

import math

import numpy as np
import pytest

from jobs.search.quality import search_quality


def test_a_search_scored_by_hand():
    # Ranked: b (grade 0), a (3), c (1); d (grade 2) was never a candidate.
    # DCG@10 = 0/log2(2) + 7/log2(3) + 1/log2(4) = 4.4165 + 0.5 = 4.9165
    # IDCG@10 (a 3, d 2, c 1) = 7/1 + 3/log2(3) + 1/2 = 9.3928; NDCG = 0.52343
    # MRR@10: first relevant at rank 2 -> 0.5; Recall@50: a and c of a, c, d -> 2/3.
    quality = search_quality(np.array(["a", "b", "c"]), np.array([0.5, 0.9, 0.1]), {"a": 3, "c": 1, "d": 2})
    dcg = 7 / math.log2(3) + 1 / 2
    idcg = 7 + 3 / math.log2(3) + 1 / 2
    assert quality["NDCG@10"] == pytest.approx(dcg / idcg)
    assert quality["MRR@10"] == 0.5 and quality["Recall@50"] == pytest.approx(2 / 3)


def test_ties_are_conservative():
    # All scores equal: the irrelevant x and y come before the relevant z (rank 3).
    quality = search_quality(np.array(["z", "x", "y"]), np.zeros(3), {"z": 1})
    assert quality["MRR@10"] == pytest.approx(1 / 3)
    assert quality["NDCG@10"] == pytest.approx((1 / 2) / 1)  # 1/log2(4) over 1/log2(2)


def test_a_search_without_relevant_items_is_refused():
    with pytest.raises(ValueError, match="without any relevant item"):
        search_quality(np.array(["a"]), np.ones(1), {})


def test_a_candidate_scored_minus_infinity_is_not_listed():
    # c is a candidate of the union but not of this ranker's list: the list is a, b only, so
    # c's relevance is missed (recall 1/2) instead of counted at rank 3.
    quality = search_quality(np.array(["a", "b", "c"]), np.array([2.0, 1.0, -np.inf]), {"b": 1, "c": 1})
    assert quality["Recall@50"] == 0.5 and quality["MRR@10"] == 0.5
