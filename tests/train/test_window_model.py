"""Window training: the window model is the serving encoder read at every position, and its losses by hand."""

import math

import keras
import numpy as np
import pytest

from jobs.common.config import section_settings
from jobs.common.schema import N_EVENT_TYPES
from jobs.train.models.repeat_head import RepeatAttention
from jobs.train.models.user_encoder import TiedItemLogits, sampled_target_log_probabilities
from jobs.train.models.window_training import (
    WindowRepeatWeights, WindowTrainer, build_window_model, full_softmax_target_log_probabilities, masked_mean,
)
from jobs.train.train_user_encoder import build_encoder_from_settings

MAX_LEN = 3


def encoder(architecture: str, repeat_head: bool = True):
    keras.utils.set_random_seed(0)
    settings = section_settings("user_encoder", {"architecture": architecture, "repeat_head": repeat_head,
                                                 "embedding_dim": 8, "hidden_dim": 8, "dropout": 0.0})
    return build_encoder_from_settings(settings, 9, N_EVENT_TYPES, MAX_LEN)


def prefix_of(window: np.ndarray, end: int) -> np.ndarray:
    """Columns end - MAX_LEN + 1 .. end of each row: the served history that ends at column `end`."""
    return window[:, end - MAX_LEN + 1:end + 1]


@pytest.mark.parametrize("repeat_head, span", [(True, MAX_LEN), (False, MAX_LEN), (True, 2)])
def test_gru_windows_give_each_position_what_serving_its_prefix_gives(repeat_head, span):
    # A user's first window: MAX_LEN columns of padding, then `span` of the user's events. The
    # GRU's state at column MAX_LEN + j has read events 0..j, exactly what the served prefix
    # ending there holds.
    gru = encoder("gru", repeat_head)
    items = np.array([[0, 0, 0, 3, 5, 3], [0, 0, 0, 0, 7, 2]], dtype=np.int32)[:, :MAX_LEN + span]
    types, gaps = (items > 0).astype(np.int32), np.where(items > 0, 4, 0).astype(np.int32)
    outputs = build_window_model(gru, MAX_LEN, span)([items, types, gaps])
    vectors, weights, weighed_items = outputs if repeat_head else (outputs, None, None)
    assert tuple(vectors.shape) == (2, span, 8)
    for j in range(span):
        end = MAX_LEN + j
        served = gru([prefix_of(items, end), prefix_of(types, end), prefix_of(gaps, end)])
        served_vectors = served[0] if repeat_head else served
        np.testing.assert_allclose(np.asarray(vectors[:, j]), np.asarray(served_vectors), atol=1e-5)
        if repeat_head:  # position j weighs the served prefix's columns, in its order
            np.testing.assert_allclose(np.asarray(weights[:, j]), np.asarray(served[1]), atol=1e-5)
            np.testing.assert_array_equal(np.asarray(weighed_items[:, j]), prefix_of(items, end))


def test_sasrec_windows_read_their_last_position_as_served():
    # No context: a window is MAX_LEN events, and its last position is the served history itself.
    sasrec = encoder("sasrec")
    items = np.array([[4, 3, 4], [0, 2, 6]], dtype=np.int32)
    types, gaps = (items > 0).astype(np.int32), np.zeros_like(items)
    vectors, weights, weighed_items = build_window_model(sasrec, MAX_LEN)([items, types, gaps])
    served_vectors, served_weights = sasrec([items, types, gaps])
    np.testing.assert_allclose(np.asarray(vectors[:, -1]), np.asarray(served_vectors), atol=1e-5)
    np.testing.assert_allclose(np.asarray(weights[:, -1]), np.asarray(served_weights), atol=1e-5)
    # Causal: position j weighs the columns up to j, right-aligned; columns left of the window
    # hold item 0. Row 2's position 0 is padding (nothing to return to), its position 1 item 2.
    np.testing.assert_array_equal(np.asarray(weighed_items[0]), [[0, 0, 4], [0, 4, 3], [4, 3, 4]])
    np.testing.assert_array_equal(np.asarray(weighed_items[1]), [[0, 0, 0], [0, 0, 2], [0, 2, 6]])
    assert np.asarray(weights[1, 0]).sum() == 0.0 and np.count_nonzero(np.asarray(weights[1, 1])) <= 1


def test_sasrec_windows_of_fewer_positions_keep_max_len_columns():
    # window_positions 2 of MAX_LEN 3: the window is still 3 events, its last 2 are trained,
    # and the last is served exactly; the first column is context only.
    sasrec = encoder("sasrec")
    items = np.array([[4, 3, 4]], dtype=np.int32)
    types, gaps = (items > 0).astype(np.int32), np.zeros_like(items)
    vectors, weights, weighed_items = build_window_model(sasrec, MAX_LEN, span=2)([items, types, gaps])
    assert tuple(vectors.shape) == (1, 2, 8)
    np.testing.assert_allclose(np.asarray(vectors[:, -1]), np.asarray(sasrec([items, types, gaps])[0]), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(weighed_items[0]), [[0, 4, 3], [4, 3, 4]])
    with pytest.raises(ValueError, match="SASRec window trains 1..max_len=3 positions, got 4"):
        build_window_model(sasrec, MAX_LEN, span=4)


def test_window_repeat_weights_reach_back_max_len_columns_from_each_position():
    # Context 2, max_len 2, items 1 2 3 4: position 0 (column 2) may return to columns 1 and 2
    # (items 2 3), position 1 (column 3) to columns 2 and 3 (items 3 4), as RepeatAttention
    # on those two columns would.
    attention = RepeatAttention(4)
    states = np.random.default_rng(0).normal(size=(1, 4, 4)).astype(np.float32)
    items = np.array([[1, 2, 3, 4]], dtype=np.int32)
    weights, weighed_items = WindowRepeatWeights(attention, context=2, max_len=2)([states, items])
    np.testing.assert_array_equal(np.asarray(weighed_items), [[[2, 3], [3, 4]]])
    for j, (first, last) in enumerate([(1, 2), (2, 3)]):
        served = np.asarray(attention([states[:, first:last + 1], items[:, first:last + 1]]))
        np.testing.assert_allclose(np.asarray(weights)[0, j], served[0], atol=1e-6)


def test_full_softmax_target_log_probabilities_by_hand():
    # Table: padding, item 1 [1, 0], item 2 [0, 1]. User [ln 3, 0] at both positions: logits
    # [pad, ln 3, 0], so p = [3/4, 1/4]; targets 1 and 2 -> log 3/4 and log 1/4.
    table = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    vectors = np.array([[[math.log(3.0), 0.0], [math.log(3.0), 0.0]]], dtype=np.float32)
    embedding = keras.layers.Embedding(3, 2)
    embedding.build((None,))
    embedding.set_weights([table])
    logits = TiedItemLogits(embedding)(vectors)
    log_p = np.asarray(full_softmax_target_log_probabilities(logits, np.array([[1, 2]])))
    np.testing.assert_allclose(log_p, [[math.log(0.75), math.log(0.25)]], rtol=1e-5)
    # The mean leaves out positions without a target: (2 + 4) / 2, not (2 + 4 + 100) / 3.
    assert float(masked_mean(np.array([[2.0, 4.0, 100.0]]), np.array([[True, True, False]]))) == pytest.approx(3.0)


def test_positions_without_a_target_are_no_candidates_of_the_sampled_softmax():
    # Targets 1, (none), 2 give the real rows exactly what targets 1, 2 give: the empty row's
    # column is no negative and does not count in the logQ correction's batch size.
    table = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    vectors = np.array([[1.0, 0.5], [0.3, 0.3], [0.2, 1.0]], dtype=np.float32)
    log_frequency = np.log(np.array([1e-30, 0.5, 0.25, 0.25]))
    with_gap = np.asarray(sampled_target_log_probabilities(vectors, table, np.array([1, 0, 2]), np.array([3]),
                                                           log_frequency, log_frequency))
    without = np.asarray(sampled_target_log_probabilities(vectors[[0, 2]], table, np.array([1, 2]), np.array([3]),
                                                          log_frequency, log_frequency))
    np.testing.assert_allclose(with_gap[[0, 2]], without, rtol=1e-6)
    assert np.isfinite(with_gap).all()


def test_window_trainer_mixes_each_positions_repeat_mode_like_the_prefix_trainer():
    # One window [2, 3] without context (SASRec), targets: 3 after column 0, none after column 1.
    # Position 0 reaches items [0, 2] and puts repeat weight 0.3 on item 2: the target 3 gets
    # 0.7 * explore p(3). With a user vector of 0 the explore softmax is uniform over the
    # catalog's 4 items: p = 0.7 / 4, loss -log(0.175), the empty position left out.
    sasrec = build_encoder_from_settings(section_settings("user_encoder", {
        "architecture": "sasrec", "repeat_head": True, "embedding_dim": 8, "hidden_dim": 8, "logit_scale": 0.0}),
        4, N_EVENT_TYPES, 2)
    trainer = WindowTrainer(sasrec, max_len=2)
    vectors = np.zeros((1, 2, 8), dtype=np.float32)
    weights = np.array([[[0.0, 0.3], [0.0, 0.0]]], dtype=np.float32)
    weighed_items = np.array([[[0, 2], [2, 3]]], dtype=np.int32)
    loss = trainer.compute_loss(x=(np.array([[2, 3]]),), y=np.array([[3, 0]]),
                                y_pred=[vectors, weights, weighed_items])
    assert float(loss) == pytest.approx(-math.log(0.7 / 4), rel=1e-5)
