"""Neural Attentive session encoder (NARM; Li et al., CIKM 2017).

Same contract as the GRU encoder (jobs/train/models/user_encoder.py): items, types and (with
time_gaps) gap buckets, int32 [n, L] each, left-padded with 0, in; a user vector [n,
embedding_dim] out, scored against the same tied item table.

A GRU reads the session's events as in the GRU encoder. NARM adds a local encoder next to
its last state (the global encoder, the shopper's sequential behaviour): an attention over
every position's state, queried by the last state, that picks out the events the session is
about (its main purpose), wherever they are in it:

    alpha_j = v^T sigmoid(A1 h_t + A2 h_j)      (not normalised, as in the paper)
    c_local = sum over real events j of alpha_j h_j
    c = [h_t ; c_local]
    score(i) = emb_i^T B c                       (B: the bilinear decoder, a Dense without bias)

with the paper's dropout between the item embeddings and the GRU (0.25) and before the
decoder (0.5). Its errors differ from the plain GRU's (which reads only h_t) and from
SASRec's: a fusion member of a different family.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from jobs.train.models.repeat_head import with_repeat_outputs
from jobs.train.models.sasrec import EventMask
from jobs.train.models.user_encoder import USER_VECTOR_LAYER, event_inputs

# Not "gru": window training (window_training.is_recurrent) is for the plain GRU encoder.
NARM_GRU_LAYER = "narm_gru"
LOCAL_ATTENTION_LAYER = "narm_local_attention"
EMBEDDING_DROPOUT = 0.25  # the paper's
CONTEXT_DROPOUT = 0.5  # the paper's


@keras.saving.register_keras_serializable(package="fusionrec")
class NarmLocalAttention(layers.Layer):
    """(states [n, L, h], last state [n, h], event mask [n, L]) -> c_local [n, h] (see the module docstring)."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, input_shape):
        hidden = int(input_shape[0][-1])
        self.query_projection = self.add_weight(shape=(hidden, self.units), name="a1", initializer="glorot_uniform")
        self.key_projection = self.add_weight(shape=(hidden, self.units), name="a2", initializer="glorot_uniform")
        self.scorer = self.add_weight(shape=(self.units,), name="v", initializer="glorot_uniform")

    def call(self, inputs):
        states, last_state, event_mask = inputs
        hidden = ops.sigmoid(ops.matmul(last_state, self.query_projection)[:, None, :]
                             + ops.matmul(states, self.key_projection))
        weights = ops.sum(hidden * self.scorer, axis=-1) * ops.cast(event_mask, hidden.dtype)  # [n, L]
        return ops.sum(weights[:, :, None] * states, axis=1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[1][0], int(input_shape[0][-1]))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def build_narm_encoder(n_items: int, n_event_types: int, max_len: int, embedding_dim: int, hidden_dim: int,
                       time_gaps: bool = True, repeat_head: bool = False) -> keras.Model:
    """Encoder: items, types[, gaps] int32 [n, max_len] -> user vector [n, embedding_dim]
    (and with repeat_head the repeat weights [n, max_len], read from the GRU's states)."""
    inputs, items, events = event_inputs(n_items, n_event_types, embedding_dim, time_gaps)
    event_mask = EventMask(name="event_mask")([items, inputs[1]])
    events = layers.Dropout(EMBEDDING_DROPOUT, name="embedding_dropout")(events)
    states, state = layers.GRU(hidden_dim, return_sequences=True, return_state=True, name=NARM_GRU_LAYER)(events)
    local = NarmLocalAttention(hidden_dim, name=LOCAL_ATTENTION_LAYER)([states, state, event_mask])
    context = layers.Concatenate(name="global_and_local")([state, local])
    context = layers.Dropout(CONTEXT_DROPOUT, name="context_dropout")(context)
    user_vector = layers.Dense(embedding_dim, use_bias=False, name=USER_VECTOR_LAYER, dtype="float32")(context)
    if repeat_head:
        return with_repeat_outputs(inputs, items, states, user_vector)
    return keras.Model(inputs, user_vector, name="user_encoder")
