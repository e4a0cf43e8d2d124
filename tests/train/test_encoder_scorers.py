"""The scoring interface shared by the encoders (jobs/train/encoder_scorers.py), by hand."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from jobs.train.encoder_scorers import (CONFIG_FILE, ITEM_EMBEDDINGS_FILE, EmbeddingScorer, encoder_inputs,
                                        item_encoder_scorer, load_item_encoder_scorer, recall_at_k)

BASIS = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)  # items 1..3 orthonormal


def int_rows(*rows) -> np.ndarray:
    return np.array(rows, dtype=np.int32)


def sign_of_last_item_scorer() -> EmbeddingScorer:
    """1-d item vectors 1, 1, 2 for items 1..3; the user vector is +1 if the last item is 1, else -1."""
    return EmbeddingScorer("sign", np.array([[0.0], [1.0], [1.0], [2.0]]),
                           lambda items, types, gaps: np.where(items[:, -1:] == 1, 1.0, -1.0))


def test_recall_at_k_counts_targets_in_the_top_k_with_conservative_ties():
    # Row 0 ends in 1: scores (1, 1, 2), target 3 ranks 1.
    # Row 1 ends in 2: scores (-1, -1, -2), target 3 ranks 3.
    # Row 2 ends in 1: scores (1, 1, 2), target 1 ties with item 2: conservative rank 3.
    # Row 3 ends in 2: scores (-1, -1, -2), target 2 ties with item 1: rank 2.
    # Ranks (1, 3, 3, 2): recall@1 = 1/4, recall@2 = 2/4, recall@3 = 4/4.
    scorer = sign_of_last_item_scorer()
    scorer.batch_size = 3  # two blocks: 3 rows, then 1
    items = int_rows([2, 1], [1, 2], [0, 1], [0, 2])
    targets = np.array([3, 3, 1, 2])
    assert [recall_at_k(scorer, items, items, targets, k) for k in (1, 2, 3)] == [0.25, 0.5, 1.0]


def test_recall_at_k_needs_an_example():
    with pytest.raises(ValueError, match="at least one example"):
        recall_at_k(sign_of_last_item_scorer(), int_rows([1])[:0], int_rows([1])[:0], np.array([]), 1)


def test_scores_put_padding_at_minus_infinity_and_keep_the_row_count():
    scores = sign_of_last_item_scorer().score(int_rows([0, 1]), int_rows([0, 1]))
    np.testing.assert_array_equal(scores, [[-np.inf, 1.0, 1.0, 2.0]])
    assert scores.dtype == np.float32
    empty = sign_of_last_item_scorer().score(int_rows([1])[:0], int_rows([1])[:0])
    assert empty.shape == (0, 4)


def test_histories_types_and_gaps_must_share_one_2d_shape():
    scorer = sign_of_last_item_scorer()
    with pytest.raises(ValueError, match=r"same shape, got \(1, 2\), \(1, 3\) and \(1, 2\)"):
        scorer.score(int_rows([0, 1]), int_rows([0, 1, 1]))
    with pytest.raises(ValueError, match=r"\[n, L\] arrays"):
        scorer.score(np.array([1, 2], dtype=np.int32), np.array([1, 2], dtype=np.int32))


def test_item_encoder_weighs_each_step_back_by_0_8():
    # History 1, 2, 3 (3 is the latest): weights 0.8**2 = 0.64, 0.8, 1 on orthonormal items,
    # |(0.64, 0.8, 1)| = sqrt(2.0496) = 1.431642, so the cosines are 0.447039, 0.558799, 0.698498.
    scorer = item_encoder_scorer(BASIS)
    np.testing.assert_allclose(scorer.score(int_rows([1, 2, 3]), int_rows([1, 1, 1]))[0, 1:],
                               [0.447039, 0.558799, 0.698498], atol=1e-6)


def test_item_encoder_padding_weighs_nothing_and_keeps_the_positions():
    # History pad, 1, 3: weights 0, 0.8, 1 -> (0.8, 0, 1) / 1.280625 = (0.624695, 0, 0.780869).
    scores = item_encoder_scorer(BASIS).score(int_rows([0, 1, 3]), int_rows([0, 1, 1]))
    np.testing.assert_allclose(scores[0, 1:], [0.624695, 0.0, 0.780869], atol=1e-6)


def write_item_encoder_dir(folder, config: dict):
    np.save(folder / ITEM_EMBEDDINGS_FILE, BASIS)
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    return str(folder)


def test_a_saved_item_encoder_uses_its_recency_decay_or_the_default(tmp_path):
    # Decay 0.5 on history 1, 2, 3: (0.25, 0.5, 1) / 1.145644 = (0.218218, 0.436436, 0.872872).
    (tmp_path / "half").mkdir()
    (tmp_path / "default").mkdir()
    items = int_rows([1, 2, 3])
    half = load_item_encoder_scorer(write_item_encoder_dir(tmp_path / "half", {"recency_decay": 0.5}))
    np.testing.assert_allclose(half.score(items, items)[0, 1:], [0.218218, 0.436436, 0.872872], atol=1e-6)
    default = load_item_encoder_scorer(write_item_encoder_dir(tmp_path / "default", {}))
    np.testing.assert_allclose(default.score(items, items)[0, 1:], [0.447039, 0.558799, 0.698498], atol=1e-6)


def test_a_missing_model_file_says_the_encoder_was_not_trained(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{ITEM_EMBEDDINGS_FILE} does not exist: has the encoder been trained"):
        load_item_encoder_scorer(str(tmp_path))


def test_encoder_inputs_follow_the_encoders_input_count():
    items, types, gaps = int_rows([1, 2]), int_rows([0, 1]), int_rows([5, 7])
    two, three = SimpleNamespace(inputs=[None, None]), SimpleNamespace(inputs=[None, None, None])
    assert encoder_inputs(two, items, types, gaps) == [items, types]
    with_gaps = encoder_inputs(three, items, types, gaps)
    assert with_gaps[0] is items and with_gaps[1] is types and with_gaps[2] is gaps
    unknown = encoder_inputs(three, items, types, None)[2]
    assert unknown.dtype == np.int32 and unknown.shape == (1, 2) and not unknown.any()
