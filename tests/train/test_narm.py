"""NARM user encoder: its local attention by hand, padding, learning a toy rule, save/load."""

import keras
import numpy as np
import pytest

from jobs.common.config import section_settings
from jobs.common.features import make_examples
from jobs.common.schema import N_EVENT_TYPES, SPLIT_TRAIN, SPLIT_VALID
from jobs.train.encoder_scorers import load_user_encoder_scorer, recall_at_k, user_encoder_scorer
from jobs.train.models.narm import LOCAL_ATTENTION_LAYER, NarmLocalAttention, build_narm_encoder
from jobs.train.models.training import write_model_dir
from jobs.train.train_user_encoder import train_user_encoder, training_examples
from tests.train.test_train_user_encoder import successor_rule_sequences

NARM_SETTINGS = section_settings("user_encoder", {
    "architecture": "narm", "embedding_dim": 16, "hidden_dim": 32, "epochs": 12, "batch_size": 64,
    "learning_rate": 0.01, "patience": 12, "logit_scale": 0.0, "learning_rate_decay": 1.0, "repeat_head": False})


def test_local_attention_by_hand():
    # States h0 = [1, 0], h1 = [0, 1]; the last state h_t = [0, 1]; A1 = A2 = I, v = [1, 1].
    # alpha_0 = sum(sigmoid([0, 1] + [1, 0])) = 2 sigmoid(1) = 1.462117;
    # alpha_1 = sum(sigmoid([0, 2])) = 0.5 + 0.880797 = 1.380797 (not normalised, as in the paper).
    # c_local = alpha_0 h0 + alpha_1 h1 = [1.462117, 1.380797]; with h0 padding: [0, 1.380797].
    attention = NarmLocalAttention(2)
    states, last = np.array([[[1.0, 0.0], [0.0, 1.0]]] * 2), np.array([[0.0, 1.0]] * 2)
    attention([states, last, np.ones((2, 2))])  # builds it
    attention.set_weights([np.eye(2), np.eye(2), np.ones(2)])
    local = np.asarray(attention([states, last, np.array([[1.0, 1.0], [0.0, 1.0]])]))
    np.testing.assert_allclose(local, [[1.462117, 1.380797], [0.0, 1.380797]], atol=1e-5)


def test_left_padding_gives_the_same_vector_and_every_event_counts():
    keras.utils.set_random_seed(0)
    encoder = build_narm_encoder(n_items=9, n_event_types=N_EVENT_TYPES, max_len=4, embedding_dim=8, hidden_dim=8)
    unpadded = np.asarray(encoder([np.array([[3, 4]]), np.array([[1, 2]]), np.array([[0, 3]])]))
    padded = np.asarray(encoder([np.array([[0, 0, 3, 4]]), np.array([[0, 0, 1, 2]]), np.array([[0, 0, 0, 3]])]))
    np.testing.assert_allclose(padded, unpadded, atol=1e-5)
    first_changed = np.asarray(encoder([np.array([[5, 4]]), np.array([[1, 2]]), np.array([[0, 3]])]))
    assert not np.allclose(first_changed, unpadded, atol=1e-4)
    assert encoder.get_layer(LOCAL_ATTENTION_LAYER) is not None


def test_narm_learns_the_successor_rule_and_reloads_with_its_repeat_head(tmp_path):
    # Item k is always followed by k + 1 (12 wraps to 1): recall@1 near 1 needs the last
    # event, which NARM reads through the GRU's last state (its global encoder).
    n_items = 12
    sequences = successor_rule_sequences(n_items, n_users=240, length=6, seed=1)
    train = make_examples(sequences, SPLIT_TRAIN, max_len=4)
    valid = make_examples(sequences, SPLIT_VALID, max_len=4)
    trained = train_user_encoder(train, valid, n_items, N_EVENT_TYPES, NARM_SETTINGS, seed=7)
    scorer = user_encoder_scorer(trained.encoder, trained.item_embeddings)
    assert recall_at_k(scorer, valid.items, valid.types, valid.targets, k=1) >= 0.95

    settings = {**NARM_SETTINGS, "epochs": 1, "repeat_head": True}
    with_head = train_user_encoder(train, valid, n_items, N_EVENT_TYPES, settings, seed=3)
    write_model_dir(str(tmp_path), with_head.encoder, with_head.item_embeddings, settings, with_head.history)
    in_memory = user_encoder_scorer(with_head.encoder, with_head.item_embeddings).score(valid.items, valid.types)
    np.testing.assert_allclose(load_user_encoder_scorer(str(tmp_path)).score(valid.items, valid.types), in_memory,
                               atol=1e-5)  # dropout is off when scoring


def test_narm_trains_on_prefixes_and_refuses_windows():
    sequences = successor_rule_sequences(6, n_users=10, length=4, seed=2)
    assert training_examples(sequences, {**NARM_SETTINGS, "training_examples": "auto"}, 3).items.shape[1] == 3
    with pytest.raises(ValueError, match="windows train gru and sasrec, not narm"):
        training_examples(sequences, {**NARM_SETTINGS, "training_examples": "windows"}, 3)
