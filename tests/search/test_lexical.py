"""jobs/search/text.py and lexical.py on a hand-made catalog."""

import numpy as np
import pytest

from jobs.search.lexical import LexicalIndex, item_document
from jobs.search.text import search_tokens, trigrams, words

CATALOG = {
    "lamp-1": item_document("acme soft kelano lamp", "lighting", "acme"),
    "lamp-2": item_document("zorb kelano lamp", "lighting", "zorb"),
    "rug-1": item_document("acme woven rug", "home textiles", "acme"),
}


@pytest.fixture(scope="module")
def index():
    return LexicalIndex.build(list(CATALOG), list(CATALOG.values()))


def test_words_and_trigrams():
    assert words("Acme  SOFT-lamp, 2x") == ["acme", "soft", "lamp", "2x"]
    assert words(None) == [] and words("  ") == []
    assert trigrams("kelano") == ["^ke", "kel", "ela", "lan", "ano", "no$"]
    assert trigrams("ab") == []  # too short to say anything
    assert search_tokens("Zorb lamp") == ["zorb", "lamp", "#^zo", "#zor", "#orb", "#rb$", "#^la", "#lam", "#amp", "#mp$"]


def test_an_exact_query_finds_its_items_first_and_nothing_unrelated(index):
    positions, scores = index.search("zorb lamp", 10)
    # lamp-2 matches both words; lamp-1 only "lamp"; rug-1 shares no token at all.
    assert list(index.item_ids[positions]) == ["lamp-2", "lamp-1"]
    assert scores[0] > scores[1] > 0


def test_a_partial_or_misspelled_word_still_finds_the_item_through_its_trigrams(index):
    for query in ("kela", "kelnao", "woevn"):
        positions, _ = index.search(query, 1)
        assert len(positions) == 1, query
    assert index.item_ids[index.search("woevn", 1)[0][0]] == "rug-1"


def test_scores_cover_every_item_and_an_unknown_query_matches_nothing(index):
    assert index.scores("acme").shape == (3,) and (index.scores("acme")[[0, 2]] > 0).all()
    assert index.scores("acme")[1] == 0
    positions, scores = index.search("qqqq", 5)
    assert len(positions) == 0 and len(scores) == 0
    assert np.array_equal(index.scores(""), np.zeros(3))


def test_ties_keep_index_order():
    tied = LexicalIndex.build(["b", "a", "c"], ["same words", "same words", "same words"])
    assert list(tied.item_ids[tied.search("same", 3)[0]]) == ["b", "a", "c"]


def test_an_empty_or_mismatched_catalog_is_refused():
    with pytest.raises(ValueError, match="one document per item"):
        LexicalIndex.build(["a", "b"], ["only one"])
    with pytest.raises(ValueError, match="at least one item"):
        LexicalIndex.build([], [])
