"""Attribute tower for items, trained contrastively on co-consumption.

The tower sees only attributes (category, brand, price bucket, standardised price,
title tokens, log popularity) -- never an item id -- so it embeds an item added to the
catalog tonight exactly like one sold for months: the cold-start path of the system.

Training signal: two items a user touched one after the other (distinct items,
consecutive events) should have nearby embeddings. Each batch of B such pairs is scored
B x B and every other pair's item serves as a negative (in-batch softmax, InfoNCE; van
den Oord et al. 2018, as used symmetrically by CLIP, Radford et al. 2021).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from jobs.common.features import LOG_POPULARITY
from jobs.common.schema import BRAND_IDX, CATEGORY_IDX, PRICE_BUCKET, PRICE_Z, TITLE_TOKENS

CATEGORICAL_INPUTS = (CATEGORY_IDX, BRAND_IDX, PRICE_BUCKET)
NUMERIC_INPUTS = (PRICE_Z, LOG_POPULARITY)
# Logit for excluded candidates: finite so masked entries give exact zeros in the softmax
# and its gradient (-inf can produce NaN).
MASKED_LOGIT = -1e9


@keras.saving.register_keras_serializable(package="fusionrec")
class MeanTitleEmbedding(layers.Layer):
    """token ids int [n, T] (0 = padding) -> mean of the non-padding token embeddings [n, d].

    A title with no tokens gets the zero vector (Keras' masked average pooling would
    divide by zero there).
    """

    def __init__(self, vocabulary_size: int, output_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.output_dim = output_dim
        self.token_embedding = layers.Embedding(vocabulary_size, output_dim, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.token_embedding.build(input_shape)

    def call(self, token_ids):
        is_token = ops.cast(ops.not_equal(token_ids, 0), self.compute_dtype)[..., None]
        summed = ops.sum(self.token_embedding(token_ids) * is_token, axis=1)
        return summed / ops.maximum(ops.sum(is_token, axis=1), 1.0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_dim)

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size, "output_dim": self.output_dim}


def build_item_tower(vocabulary_sizes: dict[str, int], max_title_tokens: int, embedding_dim: int,
                     hidden_dim: int) -> keras.Model:
    """Item attributes (the dict of features.item_feature_arrays, one row per item) -> unit vector [n, d].

    vocabulary_sizes maps category_idx, brand_idx, price_bucket and title_tokens to the
    number of embedding rows (largest id + 1).
    """
    inputs = {name: keras.Input(shape=(), dtype="int32", name=name) for name in CATEGORICAL_INPUTS}
    inputs[TITLE_TOKENS] = keras.Input(shape=(max_title_tokens,), dtype="int32", name=TITLE_TOKENS)
    inputs.update({name: keras.Input(shape=(), dtype="float32", name=name) for name in NUMERIC_INPUTS})

    parts = [layers.Embedding(vocabulary_sizes[name], embedding_dim, name=f"{name}_embedding")(inputs[name])
             for name in CATEGORICAL_INPUTS]
    parts.append(MeanTitleEmbedding(vocabulary_sizes[TITLE_TOKENS], embedding_dim, name="title_embedding")(
        inputs[TITLE_TOKENS]))
    parts += [layers.Reshape((1,), name=f"{name}_column")(inputs[name]) for name in NUMERIC_INPUTS]
    hidden = layers.Dense(hidden_dim, activation="relu", name="hidden")(layers.Concatenate(name="attributes")(parts))
    projected = layers.Dense(embedding_dim, name="projection")(hidden)
    # Unit length: dot products become cosines, so the temperature alone sets the sharpness.
    item_vector = layers.UnitNormalization(name="item_vector", dtype="float32")(projected)
    return keras.Model(inputs, item_vector, name="item_encoder")


def info_nce_loss(anchors, positives, temperature: float, anchor_ids=None, positive_ids=None):
    """Symmetric in-batch InfoNCE for B pairs: mean over both directions of -log softmax(diagonal).

    Row i scores anchor i against every positive of the batch (true one: column i), and
    column i scores positive i against every anchor. With item ids given, a candidate that
    is not a negative is excluded rather than pushed away: the query item itself, or an
    item paired with the query's item somewhere in the batch (popular items recur within
    a batch, so the "other" positive is often the very same item).
    """
    anchors = ops.cast(anchors, "float32")
    positives = ops.cast(positives, "float32")
    logits = ops.matmul(anchors, ops.transpose(positives)) / temperature
    if anchor_ids is not None and positive_ids is not None:
        anchor_to_positive = _mask_batch_partners(logits, anchor_ids, positive_ids)
        positive_to_anchor = _mask_batch_partners(ops.transpose(logits), positive_ids, anchor_ids)
    else:
        anchor_to_positive, positive_to_anchor = logits, ops.transpose(logits)
    return 0.5 * (_diagonal_cross_entropy(anchor_to_positive) + _diagonal_cross_entropy(positive_to_anchor))


def _mask_batch_partners(logits, query_ids, candidate_ids):
    """logits[i, j], j != i -> MASKED_LOGIT where candidate j's item is query i's item or its partner in some pair."""
    query_ids = ops.reshape(query_ids, (-1,))
    candidate_ids = ops.reshape(candidate_ids, (-1,))
    # pairs_of_query[i, m]: pair m starts from query i's item; pair_reaches[m, j]: pair m
    # ends at candidate j's item. Their product counts the pairs linking i to j.
    pairs_of_query = ops.cast(ops.equal(query_ids[:, None], query_ids[None, :]), "float32")
    pair_reaches = ops.cast(ops.equal(candidate_ids[:, None], candidate_ids[None, :]), "float32")
    is_partner = ops.matmul(pairs_of_query, pair_reaches) > 0
    is_query_itself = ops.equal(candidate_ids[None, :], query_ids[:, None])
    off_diagonal = ops.logical_not(ops.eye(ops.shape(logits)[0], dtype="bool"))
    excluded = ops.logical_and(off_diagonal, ops.logical_or(is_partner, is_query_itself))
    return ops.where(excluded, MASKED_LOGIT, logits)


def _diagonal_cross_entropy(logits):
    labels = ops.arange(ops.shape(logits)[0])
    return ops.mean(ops.sparse_categorical_crossentropy(labels, logits, from_logits=True))


class PairContrastiveModel(keras.Model):
    """Trains the tower on (anchor item_idx, positive item_idx) pairs, int32 [B, 2].

    Holds the catalog's attribute arrays, so the input pipeline only moves pairs of ids
    and each step looks the attributes up on device.

    Popularity dropout (after DropoutNet, Volkovs et al. 2017): every item in training has
    been consumed, so without it the tower never sees log popularity 0 and a new item's
    0 lands it in an untrained region. Zeroing the input for a random share of training
    lookups teaches the tower to place an item from its other attributes alone.
    """

    def __init__(self, tower: keras.Model, item_features: dict[str, np.ndarray], temperature: float,
                 popularity_dropout: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.tower = tower
        self.temperature = temperature
        self.popularity_dropout = popularity_dropout
        self.item_features = {name: ops.convert_to_tensor(values) for name, values in item_features.items()}
        self.seed_generator = keras.random.SeedGenerator(seed)

    def embed_items(self, item_idx, training=False):
        features = {name: ops.take(values, item_idx, axis=0) for name, values in self.item_features.items()}
        if training and self.popularity_dropout > 0:
            keep = keras.random.uniform(ops.shape(item_idx), seed=self.seed_generator) >= self.popularity_dropout
            features[LOG_POPULARITY] = ops.where(keep, features[LOG_POPULARITY], 0.0)
        return self.tower(features, training=training)

    def call(self, pairs, training=False):
        anchors = self.embed_items(pairs[:, 0], training=training)
        positives = self.embed_items(pairs[:, 1], training=training)
        return ops.stack([anchors, positives], axis=1)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return info_nce_loss(y_pred[:, 0], y_pred[:, 1], self.temperature, anchor_ids=x[:, 0], positive_ids=x[:, 1])


def embed_catalog(tower: keras.Model, item_features: dict[str, np.ndarray], batch_size: int = 4096) -> np.ndarray:
    """float32 [n_items + 1, d] embeddings of every row of item_feature_arrays; row 0 (padding) zeros."""
    embeddings = tower.predict(item_features, batch_size=batch_size, verbose=0).astype(np.float32)
    embeddings[0] = 0.0
    return embeddings
