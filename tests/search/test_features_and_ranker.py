"""jobs/search/features.py by hand, and the LambdaRank ranker learning a preference that only personal features show."""

import numpy as np
import pandas as pd
import pytest

from types import SimpleNamespace

from jobs.search.features import (ALL_FEATURES, CatalogSignals, UserProfiles, candidate_features,
                                  features_for, model_signals)
from jobs.search.ranker import RankingRows, SearchRanker

# Items 0-3: two brands x two categories; popularity shares and price z-scores by hand.
CATALOG = pd.DataFrame({"item": [0, 1, 2, 3], "brand": ["Acme", "Zorb", "Acme", "Zorb"],
                        "brand_id": [0, 1, 0, 1], "category_id": [0, 0, 1, 1],
                        "price_z": [-1.0, 1.0, 0.0, 2.0], "popularity": [0.4, 0.3, 0.2, 0.1]})
DOCUMENTS = ["acme kelano lamp", "zorb kelano lamp", "acme woven rug", "zorb woven rug"]


def signals():
    return CatalogSignals.from_catalog(CATALOG, DOCUMENTS)


def test_candidate_features_by_hand():
    # User 0's history: items 0, 0, 2 (brand Acme 3/3, category 0 2/3, category 1 1/3,
    # mean price_z (-1 - 1 + 0) / 3 = -2/3). User 1 has none.
    profiles = UserProfiles.from_history(pd.DataFrame({"user": [0, 0, 0], "item": [0, 0, 2]}), signals(), n_users=2)
    rows = candidate_features("acme lamp", 0, np.array([0, 1]), np.array([2.5, 1.0]), signals(), profiles)
    assert rows.shape == (2, len(ALL_FEATURES))
    got = dict(zip(ALL_FEATURES, rows.T))
    np.testing.assert_allclose(got["bm25"], [2.5, 1.0])
    np.testing.assert_allclose(got["bm25_rank"], [1, 2])
    np.testing.assert_allclose(got["word_match"], [1.0, 0.5])  # item 1 has "lamp" but not "acme"
    np.testing.assert_allclose(got["brand_in_query"], [1, 0])
    np.testing.assert_allclose(got["log_popularity"], np.log([0.4 * 4, 0.3 * 4]))
    np.testing.assert_allclose(got["user_brand_share"], [1.0, 0.0])
    np.testing.assert_allclose(got["user_category_share"], [2 / 3, 2 / 3])
    np.testing.assert_allclose(got["user_brand_share_in_category"], [1.0, 0.0])  # both category-0 events Acme's
    np.testing.assert_allclose(got["price_gap"], [1 / 3, 5 / 3])
    np.testing.assert_allclose(got["user_history_size"], [3, 3])
    np.testing.assert_allclose(got["seen_before"], [2, 0])
    new_user = dict(zip(ALL_FEATURES, candidate_features("lamp", 1, np.array([1]), np.array([1.0]), signals(),
                                                         profiles).T))
    assert new_user["user_history_size"][0] == 0 and np.isnan(new_user["price_gap"][0])
    assert np.isnan(new_user["user_brand_share_in_category"][0])


def test_profiles_of_nobody_s_history_describe_candidates_as_new_users():
    profiles = UserProfiles.from_history(pd.DataFrame({"user": np.zeros(0, dtype=np.int64),
                                                       "item": np.zeros(0, dtype=np.int64)}), signals(), n_users=1)
    got = dict(zip(ALL_FEATURES, candidate_features("lamp", 0, np.array([0, 1]), np.ones(2), signals(), profiles).T))
    assert np.isnan(got["user_brand_share_in_category"]).all() and (got["user_history_size"] == 0).all()


def test_brand_share_in_category_counts_only_the_item_s_category():
    # User 0 viewed item 0 (Acme, category 0) once and item 3 (Zorb, category 1) twice: Zorb
    # is 2/3 of their history, but of their one event in category 0 none was Zorb's, so for
    # the category-0 lamps Acme's share there is 1 and Zorb's 0; in category 1 Zorb's is 1.
    # Item 2 (Acme, category 1): 0 of their 2 events there.
    profiles = UserProfiles.from_history(pd.DataFrame({"user": [0, 0, 0], "item": [0, 3, 3]}), signals(), n_users=1)
    got = dict(zip(ALL_FEATURES, candidate_features("lamp", 0, np.array([0, 1, 2, 3]), np.ones(4), signals(),
                                                    profiles).T))
    np.testing.assert_allclose(got["user_brand_share"], [1 / 3, 2 / 3, 1 / 3, 2 / 3])
    np.testing.assert_allclose(got["user_brand_share_in_category"], [1.0, 0.0, 0.0, 1.0])
    assert features_for(personal=False) == ALL_FEATURES[:6]


def test_model_signals_by_hand():
    # A scorer over items 1-4 (column 0 padding, -inf; item 4 out of the catalog, -inf):
    # finite scores 1, 3, 2 -> mean 2, population std sqrt(2/3); z of item 2 = (3 - 2) / 0.8165.
    # Ranks: item 2 first, item 3 second, item 1 third. The second search has no history: nan.
    class Scorer:
        def score(self, items, types, gaps=None):
            return np.tile(np.array([-np.inf, 1.0, 3.0, 2.0, -np.inf]), (len(items), 1))

    histories = SimpleNamespace(items=np.array([[0, 5], [0, 0]]), types=np.array([[0, 1], [0, 0]]), gaps=None)
    first, second = model_signals(Scorer(), histories, [np.array([2, 1]), np.array([3])])
    np.testing.assert_allclose(first, [[1 / np.sqrt(2 / 3), 1], [-1 / np.sqrt(2 / 3), 3]])
    assert second.shape == (1, 2) and np.isnan(second).all()


def test_the_catalog_must_be_in_index_order():
    with pytest.raises(ValueError, match="index's items in order"):
        CatalogSignals.from_catalog(CATALOG.iloc[::-1], DOCUMENTS[::-1])


def preference_rows(rng, searches: int) -> tuple[RankingRows, np.ndarray]:
    """Every search shows items 0 and 1 (equal bm25); a user opens the one of their history's brand."""
    likes = rng.integers(0, 2, searches)  # the brand each searcher prefers
    history = pd.DataFrame({"user": np.arange(searches), "item": likes})  # one past view of that brand
    profiles = UserProfiles.from_history(history, signals(), n_users=searches)
    features = np.vstack([candidate_features("kelano lamp", user, np.array([0, 1]), np.array([1.0, 1.0]),
                                             signals(), profiles) for user in range(searches)])
    grades = np.stack([likes == 0, likes == 1], axis=1).astype(int).ravel()
    return RankingRows(features, grades, np.full(searches, 2)), likes


def test_the_ranker_learns_a_brand_preference_only_personal_features_reveal():
    rng = np.random.default_rng(0)
    (train, _), (valid, _), (test, likes) = (preference_rows(rng, n) for n in (300, 100, 100))
    scores = {}
    for personal in (False, True):
        names = features_for(personal)
        columns = [ALL_FEATURES.index(name) for name in names]
        ranker = SearchRanker.fit(train, valid, names, columns)
        scores[personal] = ranker.score(test.features[:, columns]).reshape(-1, 2)
    # With personal features the liked item is on top in every test search; without them every
    # search looks the same to the ranker, so it orders the two items the same way for everyone.
    assert (scores[True].argmax(axis=1) == likes).all()
    assert len(np.unique(scores[False], axis=0)) == 1
    assert ranker.importances()["user_brand_share"] > 0.5


def test_ranking_rows_must_add_up():
    with pytest.raises(ValueError, match="rows do not add up"):
        RankingRows(np.zeros((3, 2)), np.zeros(3), np.array([2, 2]))


def test_renumbered_searches_point_at_their_rows_in_a_subset_of_exactly_them():
    from jobs.search.ranker import ScoredSearch, renumbered, subset

    features = np.arange(30, dtype=np.float64)[:, None]
    rows = RankingRows(features, np.zeros(30, dtype=np.int64), np.array([30]))
    searches = [ScoredSearch(0, slice(5, 8), np.arange(3), {}), ScoredSearch(1, slice(8, 8), np.arange(0), {}),
                ScoredSearch(2, slice(20, 22), np.arange(2), {})]
    local = renumbered(searches)
    # sizes 3, 0, 2 -> rows 0-2, none (3:3), 3-4
    assert [search.rows for search in local] == [slice(0, 3), slice(3, 3), slice(3, 5)]
    picked = subset(rows, searches, lambda position: True)
    for before, after in zip(searches, local):
        np.testing.assert_array_equal(picked.features[after.rows], features[before.rows])


def test_catalog_ranks_are_those_of_a_stable_sort_of_the_whole_row():
    from jobs.search.features import catalog_ranks

    # scores 0.5, 2, 2, -inf, 2, 1 -> order by (-score, index): 1, 2, 4, 5, 0, 3
    row = np.array([0.5, 2.0, 2.0, -np.inf, 2.0, 1.0])
    np.testing.assert_array_equal(catalog_ranks(row, np.array([4, 0, 3, 1])), [3, 5, 6, 1])
    rng = np.random.default_rng(2)
    for _ in range(50):
        scores = rng.integers(0, 6, size=300).astype(np.float64)
        scores[rng.random(300) < 0.3] = -np.inf
        items = rng.choice(300, size=40, replace=False)
        rank = np.empty(300, dtype=np.int64)
        rank[np.argsort(-scores, kind="stable")] = np.arange(1, 301)
        np.testing.assert_array_equal(catalog_ranks(scores, items), rank[items])
