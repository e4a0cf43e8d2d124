"""jobs/search/semantic.py: query words to vocabulary tokens, and the union of the two retrievers' lists."""

import numpy as np

from jobs.common.schema import TITLE_TOKENS
from jobs.search.lexical import LexicalIndex
from jobs.search.semantic import SemanticIndex, union_candidates

TOKENS = {"kelano": 1, "zorvik": 2, "lamp": 3}


class FirstTokenTower:
    """A stand-in item tower: the unit vector of the first title token's id (3 dimensions)."""

    def predict_on_batch(self, inputs):
        first = inputs[TITLE_TOKENS][:, 0]
        return np.eye(4, dtype=np.float32)[first][:, 1:]


def semantic_index():
    # Item positions 0..3: vectors along kelano, zorvik, lamp, and between kelano and lamp.
    items = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1]], dtype=np.float32)
    return SemanticIndex(FirstTokenTower(), TOKENS, items, max_title_tokens=4)


def test_a_word_missing_from_the_vocabulary_takes_the_closest_by_trigrams_or_nothing():
    index = semantic_index()
    assert index.token_of("kelano") == 1
    # "kelnao" shares ^ke and kel of the 6 trigrams of ^kelano$ (its own: ^ke kel eln lna nao ao$):
    # Jaccard 2/10 = 0.2, the threshold; "kelan" shares ^ke kel ela lan, 4 of 5 + 6 - 4 = 7: 4/7.
    assert index.token_of("kelnao") == 1
    assert index.token_of("kelan") == 1
    assert index.token_of("lmap") is None  # ^lm lma map ap$ against ^la lam amp mp$: nothing shared
    assert index.token_of("xy") is None  # too short for trigrams


def test_a_query_without_a_known_word_has_no_vector_and_retrieves_nothing():
    index = semantic_index()
    vectors = index.query_vectors(["zorvik lamp", "qqqqq"])
    np.testing.assert_allclose(vectors, [[0, 1, 0], [0, 0, 0]])
    assert len(index.search(vectors[1], 3)) == 0
    np.testing.assert_array_equal(index.search(vectors[0], 2), [1, 0])  # cosines 1, then 0 for items 0 and 2: item order


def test_the_union_lists_the_lexical_candidates_first_then_the_nearest_ones_it_lacks():
    lexical = LexicalIndex.build(["a", "b", "c", "d"], ["kelano", "zorvik", "lamp", "kelano lamp"])
    retrieved, cosines = union_candidates(lexical, semantic_index(), ["lamp"], n_lexical=10, n_semantic=2)
    candidates, bm25 = retrieved[0]
    # Lexical: items 2 and 3 hold "lamp" (2 first: the shorter document). Nearest to the lamp
    # axis: item 2 (cosine 1), item 3 (0.707): nothing new. So the union is the lexical list.
    np.testing.assert_array_equal(candidates, [2, 3])
    np.testing.assert_allclose(cosines[0], [1.0, np.sqrt(0.5)], rtol=1e-6)
    assert bm25[0] > bm25[1] > 0
    retrieved, cosines = union_candidates(lexical, semantic_index(), ["kelano"], n_lexical=1, n_semantic=2)
    # Lexical top 1: item 0; nearest two: item 0, then item 3 (0.707), which the union appends.
    np.testing.assert_array_equal(retrieved[0][0], [0, 3])
    np.testing.assert_allclose(cosines[0], [1.0, np.sqrt(0.5)], rtol=1e-6)
    retrieved, cosines = union_candidates(lexical, None, ["kelano"], n_lexical=5, n_semantic=2)
    np.testing.assert_array_equal(retrieved[0][0], [0, 3])
    np.testing.assert_array_equal(cosines[0], [0.0, 0.0])
