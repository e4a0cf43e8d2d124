"""The RepeatNet repeat-explore head: hand-worked mixtures, masking, and a rule only repeats can learn."""

import math

import numpy as np
import pytest

from jobs.common.config import section_settings
from jobs.common.features import make_examples
from jobs.common.schema import N_EVENT_TYPES, SPLIT_TRAIN, SPLIT_VALID
from jobs.train.encoder_scorers import (
    RepeatExploreScorer, load_user_encoder_scorer, recall_at_k, user_encoder_scorer,
)
from jobs.train.models.repeat_head import (
    RepeatAttention, RepeatExploreLogProbabilities, repeat_explore_log_probabilities, target_log_probabilities,
)
from jobs.train.models.training import write_model_dir
from jobs.train.models.user_encoder import SampledSoftmaxTrainer, build_training_model
from jobs.train.train_user_encoder import build_encoder_from_settings, train_user_encoder, training_examples
from tests.train.test_train_user_encoder import walk_sequences

# One history: items 1, 1 (the same item twice) and padding in front; catalog of 3 items.
# Explore logits [pad, 0, 0, ln 2]: softmax over items 1..3 = [1/4, 1/4, 1/2].
# Repeat weights 0.2 on each of item 1's positions: P(repeat) = 0.4, explore share 0.6.
# p = [0.6 * 1/4 + 0.2 + 0.2, 0.6 * 1/4, 0.6 * 1/2] = [0.55, 0.15, 0.30].
LOGITS = np.array([[-1e9, 0.0, 0.0, math.log(2.0)]], dtype=np.float32)
WEIGHTS = np.array([[0.0, 0.2, 0.2]], dtype=np.float32)
ITEMS = np.array([[0, 1, 1]], dtype=np.int32)
MIXTURE = [0.55, 0.15, 0.30]


def test_numpy_mixture_by_hand():
    scores = repeat_explore_log_probabilities(LOGITS, WEIGHTS, ITEMS)
    assert scores[0, 0] == -np.inf  # padding is never recommended
    np.testing.assert_allclose(np.exp(scores[0, 1:]), MIXTURE, rtol=1e-6)


def test_keras_mixture_matches_by_hand_and_its_cross_entropy_is_minus_log_p():
    log_p = np.asarray(RepeatExploreLogProbabilities()([LOGITS, WEIGHTS, ITEMS]))
    np.testing.assert_allclose(np.exp(log_p[0, 1:]), MIXTURE, rtol=1e-5)
    assert np.exp(log_p[0, 0]) == pytest.approx(0.0, abs=1e-12)
    # The target's log-probability alone (what the sampled softmax mixes): item 2 -> log 0.15.
    target = np.asarray(target_log_probabilities(np.array([math.log(0.25)], dtype=np.float32), WEIGHTS, ITEMS,
                                                 np.array([2])))
    assert float(target[0]) == pytest.approx(math.log(0.15), rel=1e-5)
    # Item 1: log(0.6 * 1/4 + 0.4) = log 0.55.
    target = np.asarray(target_log_probabilities(np.array([math.log(0.25)], dtype=np.float32), WEIGHTS, ITEMS,
                                                 np.array([1])))
    assert float(target[0]) == pytest.approx(math.log(0.55), rel=1e-5)


def test_far_down_the_explore_softmax_items_keep_distinct_scores():
    # Logits 0 and -200: the second item's explore probability is e^-200, below float32's
    # range; in log space it still ranks above the third item (-300) instead of tying at -inf.
    logits = np.array([[-1e9, 0.0, -200.0, -300.0]], dtype=np.float32)
    scores = repeat_explore_log_probabilities(logits, np.zeros((1, 2), np.float32), np.array([[0, 0]]))
    assert np.isfinite(scores[0, 1:]).all() and scores[0, 2] > scores[0, 3]


def test_attention_ignores_padding_and_out_of_catalog_positions():
    # All projections zero: every repeatable position has the same energy, so attention is
    # uniform over them; the gate's bias 0 gives P(repeat) = sigmoid(0) = 1/2.
    # Row 1: items [0, 5, 0, 7] -> weights [0, 1/4, 0, 1/4]. Row 2: no catalog item -> all 0.
    layer = RepeatAttention(3)
    states = np.random.default_rng(0).normal(size=(2, 4, 6)).astype(np.float32)
    items = np.array([[0, 5, 0, 7], [0, 0, 0, 0]], dtype=np.int32)
    layer([states, items])
    layer.set_weights([np.zeros_like(weight) for weight in layer.get_weights()])
    np.testing.assert_allclose(np.asarray(layer([states, items])), [[0, 0.25, 0, 0.25], [0, 0, 0, 0]], atol=1e-7)


def repeat_settings(architecture: str, overrides: dict | None = None) -> dict:
    return section_settings("user_encoder", {"architecture": architecture, "repeat_head": True, "embedding_dim": 8,
                                             "hidden_dim": 8, **(overrides or {})})


@pytest.mark.parametrize("architecture", ["gru", "sasrec"])
def test_scorer_gives_the_training_models_log_probabilities_and_survives_saving(architecture, tmp_path):
    encoder = build_encoder_from_settings(repeat_settings(architecture), 9, N_EVENT_TYPES, 4)
    items = np.array([[0, 3, 5, 3], [0, 0, 0, 0], [2, 2, 2, 2]], dtype=np.int32)
    types, gaps = (items > 0).astype(np.int32), np.zeros_like(items)
    model = build_training_model(encoder)
    expected = np.asarray(model.predict_on_batch((items, types, gaps)))

    scorer = user_encoder_scorer(encoder, np.asarray(encoder.get_layer("item_embedding").embeddings))
    assert isinstance(scorer, RepeatExploreScorer)
    scores = scorer.score(items, types, gaps)
    # (The training model's table is cosine-normalised; so is the scorer's, via item_table below.)
    write_model_dir(str(tmp_path), encoder, _exported_table(encoder), {}, {})
    reloaded = load_user_encoder_scorer(str(tmp_path)).score(items, types, gaps)
    np.testing.assert_allclose(reloaded[:, 1:], expected[:, 1:], atol=1e-5)
    np.testing.assert_allclose(np.exp(reloaded[:, 1:]).sum(axis=1), 1.0, rtol=1e-5)
    assert scores.shape == reloaded.shape
    assert scorer.user_vectors(items, types, gaps).shape == (3, 8)


def _exported_table(encoder):
    from jobs.train.models.user_encoder import item_table

    return item_table(encoder)


def test_sampled_softmax_with_a_repeat_head_mixes_the_targets_probability():
    # No extra samples, batch of one: the target is the only candidate, its explore
    # log-softmax is log 1 = 0. Repeat weights 0.3 on the target's position: P(repeat) 0.3,
    # p = 0.7 * 1 + 0.3 = 1, loss 0. With the weight on another item: p = 0.7, loss -log 0.7.
    encoder = build_encoder_from_settings(repeat_settings("gru"), 4, N_EVENT_TYPES, 2)
    trainer = SampledSoftmaxTrainer(encoder, target_counts=[0, 1, 1, 1, 1], num_sampled_negatives=0, seed=0)
    user_vectors = np.ones((1, 8), dtype=np.float32)
    weights = np.array([[0.0, 0.3]], dtype=np.float32)
    on_target = trainer.compute_loss(x=(np.array([[0, 2]]),), y=np.array([2]), y_pred=[user_vectors, weights])
    elsewhere = trainer.compute_loss(x=(np.array([[0, 3]]),), y=np.array([2]), y_pred=[user_vectors, weights])
    assert float(on_target) == pytest.approx(0.0, abs=1e-6)
    assert float(elsewhere) == pytest.approx(-math.log(0.7), rel=1e-5)


def comparison_sequences(n_items: int, n_users: int, length: int, seed: int, compared: int = 3):
    """Each user cycles through `compared` random items (a, b, c, a, b, c, ...); the last event is the valid one."""
    rng = np.random.default_rng(seed)
    compared_items = [rng.choice(n_items, size=compared, replace=False) + 1 for _ in range(n_users)]
    return walk_sequences([items[np.arange(length) % compared] for items in compared_items])


def train_on_comparisons(architecture: str, repeat_head: bool) -> float:
    """Valid recall@1 of an encoder trained on comparison_sequences of 200 items and 300 users."""
    sequences = comparison_sequences(200, n_users=300, length=7, seed=3)
    settings = repeat_settings(architecture, {"repeat_head": repeat_head, "embedding_dim": 16, "hidden_dim": 16,
                                              "epochs": 6, "batch_size": 32, "patience": 6, "dropout": 0.0,
                                              "learning_rate": 0.01, "learning_rate_decay": 1.0})
    train = training_examples(sequences, settings, max_len=5)  # windows, the default
    valid = make_examples(sequences, SPLIT_VALID, max_len=5)
    trained = train_user_encoder(train, valid, 200, N_EVENT_TYPES, settings, seed=7)
    return recall_at_k(user_encoder_scorer(trained.encoder, trained.item_embeddings),
                       valid.items, valid.types, valid.targets, k=1, gaps=valid.gaps)


def test_the_repeat_head_lets_a_gru_return_to_items_it_would_have_to_memorise():
    # Each user cycles through three random items of 200; the next item is always the one
    # three steps back. A GRU alone must carry three item identities in its state to the
    # tied softmax (valid recall@1 0.25 when written); the repeat head only has to point at
    # a position (1.0).
    assert train_on_comparisons("gru", repeat_head=True) >= 0.95
    assert train_on_comparisons("gru", repeat_head=False) <= 0.6


def test_sasrec_with_a_repeat_head_learns_the_comparisons_too():
    # Self-attention can already copy from a position (1.0 without the head when written);
    # the head must not get in its way.
    assert train_on_comparisons("sasrec", repeat_head=True) >= 0.95
