"""GRU session encoder in the GRU4Rec family (Hidasi et al., ICLR 2016; CIKM 2018).

A user's recent events (item, event type) run through a GRU; its last state, projected
into item-embedding space, is the user vector. Scores are dot products with the *same*
item table that embeds the inputs (weight tying, as in GRU4Rec's 2018 follow-up with
shared input/output embeddings): an item is described once, and one table serves both
"what did the user do" and "what will they do next". Training minimises the full-softmax
cross-entropy over the whole catalog, which is affordable for catalogs of thousands of
items and avoids the bias of sampled negatives.
"""

from __future__ import annotations

import keras
from keras import layers, ops

# Logit for the padding column: low enough that softmax gives it ~0 probability, finite
# so that 0 * logit stays 0 in the gradient (-inf would give NaN).
PAD_LOGIT = -1e9
ITEM_EMBEDDING_LAYER = "item_embedding"


def build_user_encoder(n_items: int, n_event_types: int, max_len: int, embedding_dim: int,
                       hidden_dim: int) -> keras.Model:
    """Encoder: items int32 [n, max_len], types int32 [n, max_len] -> user vector [n, embedding_dim].

    Inputs are left-padded with 0 (most recent event last). n_event_types counts the
    type ids including padding 0 (schema.N_EVENT_TYPES).
    """
    items = keras.Input(shape=(max_len,), dtype="int32", name="items")
    types = keras.Input(shape=(max_len,), dtype="int32", name="types")
    # mask_zero on both: the GRU skips padding steps (item 0 and type 0) instead of reading a
    # fake event. Keras ORs the two masks in the Add, so an out-of-catalog item (item 0 with
    # a real type) still counts as an event, seen through row 0 as "some unknown item".
    item_vectors = layers.Embedding(n_items + 1, embedding_dim, mask_zero=True, name=ITEM_EMBEDDING_LAYER)(items)
    # Event types are added like positional embeddings: a purchase and a view of the same
    # item become nearby but distinguishable points in the GRU's input space.
    type_vectors = layers.Embedding(n_event_types, embedding_dim, mask_zero=True, name="event_type_embedding")(types)
    events = layers.Add(name="event_vectors")([item_vectors, type_vectors])
    state = layers.GRU(hidden_dim, name="gru")(events)
    # Projects the GRU state into the item space so hidden_dim may differ from embedding_dim.
    user_vector = layers.Dense(embedding_dim, name="user_vector", dtype="float32")(state)
    return keras.Model([items, types], user_vector, name="user_encoder")


class TiedItemLogits(layers.Layer):
    """user vector [n, d] -> logits [n, n_items + 1] against the encoder's input item table.

    Column 0 (padding / out of catalog) is pinned to PAD_LOGIT so it is never predicted.
    Computed in float32 so mixed-precision training keeps an exact softmax.
    """

    def __init__(self, item_embedding: layers.Embedding, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.item_embedding = item_embedding

    def call(self, user_vectors):
        table = ops.cast(self.item_embedding.embeddings, "float32")
        logits = ops.matmul(ops.cast(user_vectors, "float32"), ops.transpose(table))
        is_padding_column = ops.arange(ops.shape(table)[0]) == 0
        return ops.where(is_padding_column[None, :], PAD_LOGIT, logits)


def build_training_model(encoder: keras.Model) -> keras.Model:
    """(items, types) -> next-item logits over the catalog, sharing the encoder's weights."""
    logits = TiedItemLogits(encoder.get_layer(ITEM_EMBEDDING_LAYER), name="tied_item_logits")(encoder.output)
    return keras.Model(encoder.inputs, logits, name="user_encoder_training")


def full_softmax_loss(targets, logits):
    """Mean cross-entropy of the target item under a softmax over every catalog item."""
    targets = ops.cast(ops.reshape(targets, (-1,)), "int32")
    return ops.mean(ops.sparse_categorical_crossentropy(targets, logits, from_logits=True))


def item_table(encoder: keras.Model):
    """The tied item embedding table, float32 [n_items + 1, d] (numpy)."""
    return ops.convert_to_numpy(ops.cast(encoder.get_layer(ITEM_EMBEDDING_LAYER).embeddings, "float32"))
