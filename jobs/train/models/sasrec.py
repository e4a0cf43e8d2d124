"""Self-attention session encoder in the SASRec family (Kang & McAuley, ICDM 2018).

Same contract as the GRU encoder (jobs/train/models/user_encoder.py): items, types and (with
time_gaps) gap buckets, int32 [n, L] each, left-padded with 0, in; a user vector [n, embedding_dim] out, scored
against the SAME item table that embeds the inputs (so TiedItemLogits, full_softmax_loss
and item_table of user_encoder.py serve both architectures unchanged).

Each event is item embedding + event-type embedding (+ time-gap embedding) + a learned
position embedding; a stack
of causal self-attention blocks (pre-layer-norm attention and a position-wise feed-forward
net, each with dropout and a residual connection, as in the paper) lets every position read
only itself and earlier real events; the last position's output is the user vector.

Positions are counted back from the most recent event (0 = last column), not from the
start of the row: with left padding the last event is always in the last column, so a
history gets the same positions, and the same vector, however much padding precedes it.

Custom layers are registered with Keras, so a saved encoder reloads with
keras.saving.load_model once this module has been imported.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from jobs.train.models.repeat_head import with_repeat_outputs
from jobs.train.models.user_encoder import GAP_EMBEDDING_LAYER, ITEM_EMBEDDING_LAYER
from jobs.common.schema import N_GAP_BUCKETS

SEQUENCE_STATES_LAYER = "sequence_states"  # [n, L, d] before the last position is taken (tests read it)
_PACKAGE = "fusionrec"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class EventMask(layers.Layer):
    """(items, types) -> float [n, L]: 1 where there is an event, 0 on padding.

    An event is padding only if item AND type are 0: an out-of-catalog item (item 0 with a
    real type) is still an event, read through row 0 as "some unknown item" (as in the GRU).
    """

    def call(self, inputs):
        items, types = inputs
        return ops.cast(ops.logical_or(ops.not_equal(items, 0), ops.not_equal(types, 0)), self.compute_dtype)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CausalAttentionMask(layers.Layer):
    """event mask [n, L] -> bool [n, L, L]: query i may attend key j iff j <= i and j is an event.

    A query may always attend itself, so a padding query never has an all-masked row
    (whose softmax would be arbitrary); real queries never see padding keys, and the
    padding outputs are zeroed after each block, so padding cannot leak into real events.
    """

    def call(self, event_mask):
        length = ops.shape(event_mask)[1]
        positions = ops.arange(length)
        causal = positions[:, None] >= positions[None, :]
        itself = positions[:, None] == positions[None, :]
        key_is_event = ops.cast(event_mask, "bool")[:, None, :]
        return ops.logical_and(causal[None, :, :], ops.logical_or(key_is_event, itself[None, :, :]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], input_shape[1])


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RecencyPositionEmbedding(layers.Layer):
    """x [n, L, d] -> x + P[steps back from the last column]; L must be <= max_len."""

    def __init__(self, max_len: int, embedding_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.max_len = max_len
        self.embedding_dim = embedding_dim

    def build(self, input_shape):
        self.embeddings = self.add_weight(shape=(self.max_len, self.embedding_dim), name="embeddings",
                                          initializer=keras.initializers.RandomUniform(-0.05, 0.05))

    def call(self, x):
        length = ops.shape(x)[1]
        steps_back = ops.flip(ops.arange(length))
        return x + ops.cast(ops.take(self.embeddings, steps_back, axis=0), x.dtype)[None, :, :]

    def get_config(self):
        return {**super().get_config(), "max_len": self.max_len, "embedding_dim": self.embedding_dim}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ZeroPadding(layers.Layer):
    """(x [n, L, d], event mask [n, L]) -> x with padding positions set to 0."""

    def call(self, inputs):
        x, event_mask = inputs
        return x * ops.cast(event_mask, x.dtype)[:, :, None]

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LastPosition(layers.Layer):
    """x [n, L, d] -> x[:, -1, :], the most recent event's state."""

    def call(self, x):
        return x[:, -1, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


def build_sasrec_encoder(n_items: int, n_event_types: int, max_len: int, embedding_dim: int, hidden_dim: int,
                         num_blocks: int, num_heads: int, dropout: float, time_gaps: bool,
                         repeat_head: bool = False) -> keras.Model:
    """Encoder: items, types[, gaps] int32 [n, L] (L <= max_len) -> user vector [n, embedding_dim].

    hidden_dim is the feed-forward width; embedding_dim must be divisible by num_heads.
    time_gaps: take the third input, each event's gap bucket (0 on padding and first events).
    repeat_head: a second output, the repeat weights [n, L] read from every position's
    final state (jobs/train/models/repeat_head.py).
    """
    _check_settings(embedding_dim, hidden_dim, num_blocks, num_heads, dropout)
    # Length None: any history up to max_len columns (the positions are counted from the end).
    items = keras.Input(shape=(None,), dtype="int32", name="items")
    types = keras.Input(shape=(None,), dtype="int32", name="types")
    event_mask = EventMask(name="event_mask")([items, types])
    attention_mask = CausalAttentionMask(name="causal_attention_mask")(event_mask)

    item_vectors = layers.Embedding(n_items + 1, embedding_dim, name=ITEM_EMBEDDING_LAYER)(items)
    type_vectors = layers.Embedding(n_event_types, embedding_dim, name="event_type_embedding")(types)
    event_parts, inputs = [item_vectors, type_vectors], [items, types]
    if time_gaps:
        gaps = keras.Input(shape=(None,), dtype="int32", name="gaps")
        inputs.append(gaps)
        # Padding is zeroed below by the event mask, so no mask is needed here.
        event_parts.append(layers.Embedding(N_GAP_BUCKETS, embedding_dim, name=GAP_EMBEDDING_LAYER)(gaps))
    events = layers.Add(name="event_vectors")(event_parts)
    states = RecencyPositionEmbedding(max_len, embedding_dim, name="position_embedding")(events)
    states = layers.Dropout(dropout, name="embedding_dropout")(states)
    states = ZeroPadding(name="embedding_padding")([states, event_mask])
    for block in range(num_blocks):
        states = _self_attention_block(states, event_mask, attention_mask, block, embedding_dim, hidden_dim,
                                       num_heads, dropout)
    states = layers.LayerNormalization(name=SEQUENCE_STATES_LAYER)(states)
    # float32 output whatever the training policy, like the GRU's user_vector layer.
    user_vector = LastPosition(name="user_vector", dtype="float32")(states)
    if repeat_head:
        return with_repeat_outputs(inputs, items, states, user_vector)
    return keras.Model(inputs, user_vector, name="user_encoder")


def _self_attention_block(states, event_mask, attention_mask, block: int, embedding_dim: int, hidden_dim: int,
                          num_heads: int, dropout: float):
    """One SASRec block: x + Attn(LN(x), x), then x + FFN(LN(x)); padding re-zeroed."""
    name = f"block{block}"
    # As in the paper, only the queries are normalised; keys and values are the residual stream.
    queries = layers.LayerNormalization(name=f"{name}_attention_norm")(states)
    attended = layers.MultiHeadAttention(num_heads, embedding_dim // num_heads, dropout=dropout,
                                         name=f"{name}_attention")(queries, states, attention_mask=attention_mask)
    attended = layers.Dropout(dropout, name=f"{name}_attention_dropout")(attended)
    states = layers.Add(name=f"{name}_attention_residual")([states, attended])

    normed = layers.LayerNormalization(name=f"{name}_feed_forward_norm")(states)
    expanded = layers.Dense(hidden_dim, activation="relu", name=f"{name}_feed_forward_in")(normed)
    projected = layers.Dense(embedding_dim, name=f"{name}_feed_forward_out")(expanded)
    projected = layers.Dropout(dropout, name=f"{name}_feed_forward_dropout")(projected)
    states = layers.Add(name=f"{name}_feed_forward_residual")([states, projected])
    return ZeroPadding(name=f"{name}_padding")([states, event_mask])


def _check_settings(embedding_dim: int, hidden_dim: int, num_blocks: int, num_heads: int, dropout: float) -> None:
    if num_blocks < 1 or num_heads < 1 or hidden_dim < 1:
        raise ValueError(f"user_encoder: num_blocks, num_heads and hidden_dim must be >= 1, "
                         f"got {num_blocks}, {num_heads}, {hidden_dim}")
    if embedding_dim % num_heads:
        raise ValueError(f"user_encoder: embedding_dim ({embedding_dim}) must be divisible by num_heads ({num_heads})")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"user_encoder: dropout must be in [0, 1), got {dropout}")
