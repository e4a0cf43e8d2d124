"""Scaled-cosine logits (user_encoder.logit_scale > 0, NISER): hand-worked values and a trained round trip."""

import math

import numpy as np
import pytest

from jobs.train.encoder_scorers import load_user_encoder_scorer, user_encoder_scorer
from jobs.train.models.training import write_model_dir
from jobs.train.models.user_encoder import (
    ITEM_EMBEDDING_LAYER, PAD_LOGIT, SampledSoftmaxTrainer, ScaledUnitVector, TiedItemLogits, item_table,
)
from jobs.common.config import section_settings
from jobs.common.schema import N_EVENT_TYPES
from jobs.train.train_user_encoder import build_encoder_from_settings
from tests.train.test_train_user_encoder import train_on_successor_rule

# Item 1 points along x with length 3, item 2 along y with length 5; padding row 0 is all zero.
TABLE = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 5.0]], dtype=np.float32)


def cosine_encoder(logit_scale: float):
    settings = section_settings("user_encoder", {"architecture": "gru", "embedding_dim": 2, "hidden_dim": 2,
                                                 "logit_scale": logit_scale, "repeat_head": False})
    encoder = build_encoder_from_settings(settings, 2, N_EVENT_TYPES, 3)
    encoder.get_layer(ITEM_EMBEDDING_LAYER).set_weights([TABLE])
    return encoder


def test_user_vector_is_scaled_to_unit_length_times_the_scale():
    # [3, 4] has length 5: 2 * [3, 4] / 5 = [1.2, 1.6]. The zero vector stays zero, not NaN.
    scaled = np.asarray(ScaledUnitVector(2.0)(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)))
    np.testing.assert_allclose(scaled, [[1.2, 1.6], [0.0, 0.0]], rtol=1e-6)


def test_tied_logits_with_unit_items_are_scale_times_cosine():
    # User [2, 0] (already scale 2 times a unit vector). Unit items: [1, 0] and [0, 1], so the
    # logits are 2 * cos = 2 and 0, whatever the stored lengths 3 and 5; column 0 is padding.
    encoder = cosine_encoder(2.0)
    logits = TiedItemLogits(encoder.get_layer(ITEM_EMBEDDING_LAYER), unit_items=True)(
        np.array([[2.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(np.asarray(logits), [[PAD_LOGIT, 2.0, 0.0]], rtol=1e-6)
    # The exported table, the one serving scores against, has the same unit rows.
    np.testing.assert_allclose(item_table(encoder), [[0, 0], [1, 0], [0, 1]], atol=1e-7)


def test_sampled_softmax_scores_against_unit_items_under_cosine_logits():
    # Batch of two: targets 1 and 2, no extra samples. Each item is the target once, so
    # p_pop = 1/2 each and the logQ correction log(B * p_pop) = log(2 * 1/2) = 0.
    # Users [2, 0] and [0, 2] against unit items [1, 0], [0, 1]: logits [[2, 0], [0, 2]],
    # each example's loss -log(e^2 / (e^2 + e^0)) = log(1 + e^-2) = 0.126928.
    # (On the raw table the first row would be [6, 0] and the loss 0.001239 + ...: different.)
    trainer = SampledSoftmaxTrainer(cosine_encoder(2.0), target_counts=[0, 1, 1], num_sampled_negatives=0, seed=0)
    loss = trainer.compute_loss(y=np.array([1, 2]), y_pred=np.array([[2.0, 0.0], [0.0, 2.0]], dtype=np.float32))
    assert float(loss) == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-5)


def test_negative_logit_scale_is_named():
    with pytest.raises(ValueError, match="logit_scale must be >= 0"):
        cosine_encoder(-1.0)


def test_cosine_gru_learns_the_walk_and_its_saved_model_scores_identically(tmp_path):
    trained, _, valid, recall = train_on_successor_rule(
        12, n_users=240, settings={"epochs": 10, "batch_size": 64, "patience": 10, "logit_scale": 8.0})
    assert recall >= 0.95

    # Every real item row has unit length, so every score lies within +-logit_scale.
    np.testing.assert_allclose(np.linalg.norm(trained.item_embeddings[1:], axis=1), 1.0, rtol=1e-5)
    scores = user_encoder_scorer(trained.encoder, trained.item_embeddings).score(valid.items, valid.types)
    assert np.abs(scores[:, 1:]).max() <= 8.0 + 1e-4

    write_model_dir(str(tmp_path), trained.encoder, trained.item_embeddings, {"logit_scale": 8.0}, trained.history)
    reloaded = load_user_encoder_scorer(str(tmp_path)).score(valid.items, valid.types)
    np.testing.assert_allclose(reloaded, scores, atol=1e-5)
