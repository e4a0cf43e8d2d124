"""SASRec user encoder: padding, causality, learning a toy rule, save/load, and config errors."""

import keras
import numpy as np
import pytest

from jobs.train.encoder_scorers import load_user_encoder_scorer, recall_at_k, user_encoder_scorer
from jobs.common.config import section_settings
from jobs.common.features import make_examples
from jobs.train.models.sasrec import SEQUENCE_STATES_LAYER, build_sasrec_encoder
from jobs.train.models.training import write_model_dir
from jobs.common.schema import N_EVENT_TYPES, SPLIT_TRAIN, SPLIT_VALID
from jobs.train.train_user_encoder import build_encoder_from_settings, train_user_encoder
from tests.train.test_train_user_encoder import successor_rule_sequences


def tiny_encoder(max_len: int = 4, num_blocks: int = 2):
    keras.utils.set_random_seed(0)
    return build_sasrec_encoder(n_items=9, n_event_types=N_EVENT_TYPES, max_len=max_len, embedding_dim=8,
                                hidden_dim=16, num_blocks=num_blocks, num_heads=2, dropout=0.0, time_gaps=True)


def test_left_padding_gives_the_same_vector_as_the_unpadded_history():
    # Positions count back from the last column, so [3, 4] and [0, 0, 3, 4] give both
    # events the same positions; padding keys are masked, so they add nothing either.
    encoder = tiny_encoder()
    unpadded = np.asarray(encoder([np.array([[3, 4]]), np.array([[1, 2]]), np.array([[0, 3]])]))
    padded = np.asarray(encoder([np.array([[0, 0, 3, 4]]), np.array([[0, 0, 1, 2]]), np.array([[0, 0, 0, 3]])]))
    np.testing.assert_allclose(padded, unpadded, atol=1e-5)
    assert unpadded.shape == (1, 8)
    reversed_order = np.asarray(encoder([np.array([[4, 3]]), np.array([[2, 1]]), np.array([[0, 3]])]))
    assert not np.allclose(reversed_order, unpadded, atol=1e-4)  # order matters
    other_type = np.asarray(encoder([np.array([[3, 4]]), np.array([[1, 1]]), np.array([[0, 3]])]))
    assert not np.allclose(other_type, unpadded, atol=1e-4)  # event types are read
    other_gap = np.asarray(encoder([np.array([[3, 4]]), np.array([[1, 2]]), np.array([[0, 13]])]))
    assert not np.allclose(other_gap, unpadded, atol=1e-4)  # time gaps are read


def test_attention_is_causal_and_reaches_back_to_the_first_event():
    # Per-position states of [1, 2, 3, 4] and [1, 2, 7, 8]: positions 0 and 1 see only
    # items 1, 2 in both rows, so they must be equal; positions 2 and 3 see the changed
    # items and must differ. A non-causal (bidirectional) block would change all four.
    encoder = tiny_encoder()
    states = keras.Model(encoder.inputs, encoder.get_layer(SEQUENCE_STATES_LAYER).output)
    types, gaps = np.ones((2, 4), dtype=np.int32), np.ones((2, 4), dtype=np.int32)
    both = np.asarray(states([np.array([[1, 2, 3, 4], [1, 2, 7, 8]]), types, gaps]))
    np.testing.assert_allclose(both[0, :2], both[1, :2], atol=1e-5)
    assert not np.allclose(both[0, 2], both[1, 2], atol=1e-4)
    assert not np.allclose(both[0, 3], both[1, 3], atol=1e-4)
    # The user vector (last position) depends on the FIRST event too: attention reaches back.
    first_changed = np.asarray(encoder([np.array([[5, 2, 3, 4]]), types[:1], gaps[:1]]))
    original = np.asarray(encoder([np.array([[1, 2, 3, 4]]), types[:1], gaps[:1]]))
    assert not np.allclose(first_changed, original, atol=1e-4)


# Dot-product logits and a constant rate: what this toy rule was tuned with; the encoder
# alone (the repeat head has tests/train/test_repeat_head.py).
SASREC_SETTINGS = section_settings("user_encoder", {
    "architecture": "sasrec", "embedding_dim": 16, "hidden_dim": 32, "num_blocks": 1, "num_heads": 1, "dropout": 0.0,
    "epochs": 12, "batch_size": 64, "learning_rate": 0.01, "patience": 12, "logit_scale": 0.0,
    "learning_rate_decay": 1.0, "repeat_head": False})


def test_sasrec_learns_the_successor_rule():
    # Item k is always followed by k + 1 (12 wraps to 1); recall@1 near 1 needs the last
    # position to read its own item. Popularity gets about 1 in 12 right (uniform starts).
    n_items = 12
    sequences = successor_rule_sequences(n_items, n_users=240, length=6, seed=1)
    train = make_examples(sequences, SPLIT_TRAIN, max_len=4)
    valid = make_examples(sequences, SPLIT_VALID, max_len=4)
    trained = train_user_encoder(train, valid, n_items, N_EVENT_TYPES, SASREC_SETTINGS, seed=7)
    recall = recall_at_k(user_encoder_scorer(trained.encoder, trained.item_embeddings),
                         valid.items, valid.types, valid.targets, k=1)
    assert recall >= 0.95
    assert trained.encoder.get_layer(SEQUENCE_STATES_LAYER) is not None  # it really is the SASRec graph


def test_saved_sasrec_reloads_and_scores_identically(tmp_path):
    sequences = successor_rule_sequences(6, n_users=20, length=4, seed=2)
    train = make_examples(sequences, SPLIT_TRAIN, max_len=3)
    valid = make_examples(sequences, SPLIT_VALID, max_len=3)
    settings = {**SASREC_SETTINGS, "epochs": 1, "dropout": 0.3}
    trained = train_user_encoder(train, valid, 6, N_EVENT_TYPES, settings, seed=3)
    write_model_dir(str(tmp_path), trained.encoder, trained.item_embeddings, settings, trained.history)

    in_memory = user_encoder_scorer(trained.encoder, trained.item_embeddings).score(valid.items, valid.types)
    reloaded = load_user_encoder_scorer(str(tmp_path)).score(valid.items, valid.types)
    assert reloaded.shape == (len(valid), 7)
    np.testing.assert_allclose(reloaded, in_memory, atol=1e-6)  # dropout is off when scoring


def test_unknown_architecture_and_bad_heads_are_named():
    with pytest.raises(ValueError, match="architecture must be one of gru, sasrec, narm, got 'transformer'"):
        build_encoder_from_settings({**SASREC_SETTINGS, "architecture": "transformer"}, 5, N_EVENT_TYPES, 4)
    with pytest.raises(ValueError, match=r"embedding_dim \(16\) must be divisible by num_heads \(3\)"):
        build_encoder_from_settings({**SASREC_SETTINGS, "num_heads": 3}, 5, N_EVENT_TYPES, 4)
