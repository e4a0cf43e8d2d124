"""Attribute item encoder: InfoNCE by hand, its scorer, cold start, and the nightly job end to end."""

import json
import math
import os

import keras
import numpy as np
import pandas as pd
import pytest

from jobs.common.config import section_settings
from jobs.common.night import Night
from jobs.train.encoder_scorers import item_encoder_scorer, load_item_encoder_scorer, recall_at_k
from jobs.evaluation.metrics import top_k
from jobs.common.features import item_feature_arrays, make_examples, transition_pairs, write_features
from jobs.train.models.item_encoder import info_nce_loss
from jobs.common.schema import (
    BRAND_IDX, CATEGORY_IDX, EVENT_TYPE_IDX, ITEM_ID, ITEM_IDX, POPULARITY, PRICE_BUCKET, PRICE_Z, SPLIT,
    SPLIT_TRAIN, SPLIT_VALID, TIMESTAMPS, TITLE_TOKENS, USER_ID,
)

# Anchors a1 = [1, 0], a2 = [0, 1]; positives p1 = [1, 0], p2 = [0.6, 0.8] (all unit length).
ANCHORS = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
POSITIVES = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)


def test_info_nce_by_hand_on_a_2x2_batch():
    # logits = A P^T / 1 = [[1, 0.6], [0, 0.8]]
    # rows (anchor -> positive):   ln(e^1 + e^0.6) - 1   = 0.513015
    #                              ln(e^0 + e^0.8) - 0.8 = 0.371101   mean 0.442058
    # columns (positive -> anchor): ln(e^1 + e^0) - 1    = 0.313262
    #                              ln(e^0.6 + e^0.8) - 0.8 = 0.598139 mean 0.455700
    # symmetric loss = (0.442058 + 0.455700) / 2 = 0.448879
    loss = info_nce_loss(ANCHORS, POSITIVES, temperature=1.0, anchor_ids=np.array([1, 2]),
                         positive_ids=np.array([3, 4]))
    assert float(loss) == pytest.approx(0.448879, abs=1e-5)


def test_info_nce_temperature_sharpens_the_logits():
    # Temperature 0.5 doubles every logit: [[2, 1.2], [0, 1.6]]
    # rows: ln(e^2 + e^1.2) - 2 = 0.371101, ln(1 + e^1.6) - 1.6 = 0.183901
    # cols: ln(e^2 + 1) - 2 = 0.126928,     ln(e^1.2 + e^1.6) - 1.6 = 0.513015
    # (0.371101 + 0.183901 + 0.126928 + 0.513015) / 4 = 0.298736
    loss = info_nce_loss(ANCHORS, POSITIVES, temperature=0.5)
    assert float(loss) == pytest.approx(0.298736, abs=1e-5)


def test_info_nce_does_not_push_apart_partners_that_recur_in_the_batch():
    # Pairs (item 1 -> item 7) and (item 2 -> item 7): the other column is item 7 again in
    # both rows, and in both columns the other anchor is also a partner of item 7. Every
    # off-diagonal candidate is excluded, each softmax has one entry: loss exactly 0.
    duplicated = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    loss = info_nce_loss(ANCHORS, duplicated, temperature=1.0, anchor_ids=np.array([1, 2]),
                         positive_ids=np.array([7, 7]))
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


def test_item_scorer_is_the_cosine_of_the_recency_weighted_history():
    # e1 = [1, 0], e2 = [0, 2] (unit length after normalising: [0, 1]). Decay 0.5:
    # history [0, 1, 2] -> weights [0 (padding), 0.5, 1] -> u = [0.5, 1] / |[0.5, 1]|
    # = [0.447214, 0.894427]; cosine with e1 = 0.447214, with e2 = 0.894427.
    item_vectors = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    scorer = item_encoder_scorer(item_vectors, recency_decay=0.5)
    scores = scorer.score(np.array([[0, 1, 2]], dtype=np.int32), np.array([[0, 1, 1]], dtype=np.int32))
    assert scores[0, 0] == -np.inf
    np.testing.assert_allclose(scores[0, 1:], [0.447214, 0.894427], atol=1e-6)
    # An all-padding history has no direction: every score is 0, nothing is NaN.
    empty = scorer.score(np.zeros((1, 3), dtype=np.int32), np.zeros((1, 3), dtype=np.int32))
    np.testing.assert_array_equal(empty[0, 1:], [0.0, 0.0])


def test_top_k_and_recall_batch_over_examples():
    # Item 1 points along x, item 2 along y, item 3 halfway; a history of one item ranks
    # itself first, then item 3 (cosine 0.707), then the orthogonal one (0).
    item_vectors = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float32)
    scorer = item_encoder_scorer(item_vectors)
    scorer.batch_size = 1  # force several blocks
    items = np.array([[1], [2]], dtype=np.int32)
    np.testing.assert_array_equal(top_k(scorer.score(items, items), k=2), [[1, 3], [2, 3]])
    # Targets 3 and 1: item 3 is in row 0's top 2, item 1 is not in row 1's.
    assert recall_at_k(scorer, items, items, np.array([3, 1]), k=2) == 0.5


def community_features(n_users: int, seed: int):
    """Items 1-6 (category 1) and 7-12 (category 2) are consumed only within their group.

    Brand and title are unique per item, so only the category carries the group. Item 13
    is a new item, never consumed (popularity 0), with item 3's attributes.
    """
    rng = np.random.default_rng(seed)
    idx = np.arange(1, 14)
    items = pd.DataFrame({
        ITEM_IDX: idx, ITEM_ID: [f"item-{i}" for i in idx],
        CATEGORY_IDX: np.where(idx <= 6, 1, 2), BRAND_IDX: idx, PRICE_BUCKET: idx % 4 + 1,
        PRICE_Z: np.zeros(13), TITLE_TOKENS: [[i, 20 + i] for i in idx], POPULARITY: np.full(13, 10),
    })
    twin = 13
    items.loc[items[ITEM_IDX] == twin, [CATEGORY_IDX, BRAND_IDX, PRICE_BUCKET, POPULARITY]] = [1, 3, 3 % 4 + 1, 0]
    items.at[twin - 1, TITLE_TOKENS] = [3, 23]
    groups = rng.integers(0, 2, n_users)
    walks = [rng.integers(1, 7, 8) + 6 * group for group in groups]
    sequences = pd.DataFrame({
        USER_ID: [f"u{user}" for user in range(n_users)], ITEM_IDX: walks,
        EVENT_TYPE_IDX: [np.ones(8, dtype=int)] * n_users, TIMESTAMPS: [np.arange(8)] * n_users,
        SPLIT: [np.r_[np.full(7, SPLIT_TRAIN), SPLIT_VALID]] * n_users,
    })
    meta = {"n_items": 13, "n_categories": 2, "n_brands": 13, "n_price_buckets": 4, "n_title_tokens": 33}
    return meta, items, sequences


SETTINGS = section_settings("item_encoder", {"embedding_dim": 16, "hidden_dim": 32, "epochs": 12, "batch_size": 64,
                                             "learning_rate": 0.01, "patience": 12})


def test_cold_item_lands_beside_its_twin_and_its_group():
    from jobs.train.train_item_encoder import train_item_encoder

    meta, items, sequences = community_features(n_users=150, seed=0)
    features = item_feature_arrays(items, max_title_tokens=2, n_items=13)
    sizes = {CATEGORY_IDX: 3, BRAND_IDX: 14, PRICE_BUCKET: 5, TITLE_TOKENS: 34}
    valid = make_examples(sequences, SPLIT_VALID, max_len=4)
    trained = train_item_encoder(features, sizes, transition_pairs(sequences, SPLIT_TRAIN),
                                 transition_pairs(sequences, SPLIT_VALID), valid, SETTINGS, seed=3)

    vectors = trained.item_embeddings
    assert vectors.shape == (14, 16) and np.all(vectors[0] == 0)
    np.testing.assert_allclose(np.linalg.norm(vectors[1:], axis=1), 1.0, atol=1e-5)
    cosine_to_new_item = vectors[1:13] @ vectors[13]  # position i = item i + 1
    # Training collapses each group to nearly one direction (nothing in the pairs tells
    # its items apart), so "near its twin" means: close to item 3, and every item of its
    # group ranks above every item of the other group.
    assert cosine_to_new_item[3 - 1] >= 0.9
    assert cosine_to_new_item[:6].min() > cosine_to_new_item[6:].max()
    assert cosine_to_new_item[:6].mean() - cosine_to_new_item[6:].mean() > 0.5


def test_nightly_job_writes_every_catalog_embedding_and_cold_start_metrics(tmp_config):
    import mlflow

    from jobs.train import train_item_encoder

    ds = "2026-11-27"
    meta, items, sequences = community_features(n_users=40, seed=1)
    write_features(tmp_config, ds, meta, items, sequences)
    config = {**tmp_config, "max_seq_len": 3, "item_encoder": {**SETTINGS, "epochs": 2, "embedding_dim": 8}}

    model_dir = train_item_encoder.run(Night.plan(config, ds))['path']

    assert model_dir == os.path.join(tmp_config["lake_root"], "models/item_encoder", f"dt={ds}")
    assert sorted(os.listdir(model_dir)) == [
        "config.json", "history.json", "item_embeddings.npy", "model.keras", "scalers.json"]
    embeddings = np.load(os.path.join(model_dir, "item_embeddings.npy"))
    assert embeddings.shape == (14, 8) and embeddings.dtype == np.float32 and np.all(embeddings[0] == 0)
    saved_config = json.load(open(os.path.join(model_dir, "config.json")))
    assert saved_config["vocabulary_sizes"] == {CATEGORY_IDX: 3, BRAND_IDX: 14, PRICE_BUCKET: 5, TITLE_TOKENS: 34}

    # The saved tower embeds a brand-new item from its attributes alone (item 13 = new).
    tower = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
    arrays = item_feature_arrays(items, max_title_tokens=saved_config["max_title_tokens"])
    new_item = {name: values[13:14] for name, values in arrays.items()}
    np.testing.assert_allclose(np.asarray(tower(new_item))[0], embeddings[13], atol=1e-5)

    scorer = load_item_encoder_scorer(model_dir)
    assert scorer.name == "item_encoder"
    scores = scorer.score(np.array([[0, 1, 2]], dtype=np.int32), np.array([[0, 1, 1]], dtype=np.int32))
    assert scores.shape == (1, 14) and scores[0, 0] == -np.inf

    run = mlflow.search_runs(experiment_names=[tmp_config["mlflow"]["experiment"]], output_format="list")[0]
    assert run.data.tags["stage"] == "train_item_encoder"
    assert run.data.metrics["cold_items"] == 1.0  # item 13
    assert {"cold_nn_same_category", "cold_nn_same_category_chance", "best_val_recall_at_20"} <= set(run.data.metrics)
    assert len(mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "val_loss")) == 2


def test_cold_start_metrics_by_hand():
    from jobs.train.train_item_encoder import cold_start_metrics

    # Items 1, 2 warm (categories 1, 2); item 3 cold, category 2, pointing like item 1.
    # Nearest warm item of 3 is item 1 (category 1): same-category share 0 of 1;
    # chance: half of the warm items are in category 2 -> 0.5.
    # Valid pair 2 -> 3: similarities to item 2's vector [0, 1]: item 1: 0, item 3: 0.6
    # (item 2 itself excluded) -> item 3 ranks first: recall@1 = 1; chance 1 / (3 - 1).
    embeddings = np.array([[0, 0], [1, 0], [0, 1], [0.8, 0.6]], dtype=np.float32)
    items = pd.DataFrame({ITEM_IDX: [1, 2, 3], CATEGORY_IDX: [1, 2, 2], POPULARITY: [5, 5, 0]})
    metrics = cold_start_metrics(embeddings, items, np.array([[2, 3]]), k=1)
    assert metrics == {"cold_items": 1.0, "cold_nn_same_category": 0.0, "cold_nn_same_category_chance": 0.5,
                       "cold_valid_pairs": 1.0, "cold_valid_recall_at_1": 1.0, "cold_valid_recall_at_1_chance": 0.5}
    assert math.isclose(metrics["cold_valid_recall_at_1_chance"], 1 / 2)
