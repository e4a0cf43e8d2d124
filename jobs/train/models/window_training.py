"""Window training of the user encoders: one causal pass over a window trains several positions' next items.

Prefix training (make_examples) gives each target its own max_len-event history, so the
encoder reads max_len events per target. Both encoders are causal: a GRU's state at
position t and SASRec's causal attention output at t depend on events up to t only. So a
window of events (jobs.common.features.make_window_examples) trains the next item of each
of its last S positions in one pass (Hidasi et al., ICLR 2016, train GRU4Rec on whole
sessions the same way; Kang & McAuley, ICDM 2018, train SASRec on every position):

- the GRU reads windows of max_len + S events, the first max_len as context, and trains
  the last S positions (S = user_encoder.window_positions), so every target still sees at
  least its last max_len events, as at serving;
- SASRec reads windows of max_len events and trains the last S: its learned positions
  span max_len columns (jobs/train/models/sasrec.py), so a target sees between
  max_len - S + 1 and max_len events.

The window model below shares every weight with the serving encoder; it outputs a user
vector per trained position and, with a repeat head, each position's repeat weights over
the last max_len events up to it (the events a served history of max_len holds). The loss
is each target's log-probability only: no [positions, catalog] scatter of the mixture.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from jobs.train.models.repeat_head import REPEAT_WEIGHTS_LAYER, has_repeat_head, target_log_probabilities
from jobs.train.models.sasrec import SEQUENCE_STATES_LAYER
from jobs.train.models.user_encoder import (
    COSINE_USER_VECTOR_LAYER, GRU_LAYER, USER_VECTOR_LAYER, EncoderTrainer, PopularitySampler,
    sampled_target_log_probabilities, scoring_table, uses_cosine_logits,
)

_INPUT_NAMES = ("items", "types", "gaps")


def is_recurrent(encoder: keras.Model) -> bool:
    return any(layer.name == GRU_LAYER for layer in encoder.layers)


def window_context(recurrent: bool, max_len: int, span: int) -> int:
    """Events a training window holds before its first of `span` trained positions.

    GRU: max_len, so every target sees at least its last max_len events. SASRec: max_len -
    span, so the window fills the max_len positions its position embeddings cover.
    """
    if not recurrent and not 1 <= span <= max_len:
        raise ValueError(f"a SASRec window trains 1..max_len={max_len} positions, got {span}")
    return max_len if recurrent else max_len - span


def _sequence_states(encoder: keras.Model):
    """The symbolic tensor of every position's state [n, L, h] inside the encoder."""
    if is_recurrent(encoder):
        return encoder.get_layer(GRU_LAYER).output[0]  # the GRU returns [states, last state]
    return encoder.get_layer(SEQUENCE_STATES_LAYER).output


class TrainedPositions(layers.Layer):
    """x [n, context + L, ...] -> x[:, context:]: the positions whose next item is trained."""

    def __init__(self, context: int, **kwargs):
        super().__init__(**kwargs)
        self.context = int(context)

    def call(self, x):
        return x[:, self.context:]

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "context": self.context}


class WindowRepeatWeights(layers.Layer):
    """(states [n, C + S, h], items [n, C + S]) -> (repeat weights [n, S, L], their items [n, S, L]).

    C context columns, S trained positions, L = max_len. Row j is the serving head's answer
    (RepeatAttention.query_weights) for the query at column C + j over the L columns up to
    it, C + j - L + 1 .. C + j: the events a served history of L ending there would hold,
    in the same order. Columns left of the window (SASRec's first positions) are not
    repeatable; their item is 0.
    """

    def __init__(self, repeat_attention, context: int, max_len: int, span: int | None = None, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.repeat_attention = repeat_attention
        self.context, self.max_len = int(context), int(max_len)
        self.span = self.max_len if span is None else int(span)

    def build(self, input_shape):
        if not self.repeat_attention.built:  # an encoder's head is built; a head made alone is not
            self.repeat_attention.build(input_shape)

    def call(self, inputs):
        states, items = inputs
        states = ops.cast(states, "float32")
        length = self.max_len
        # reach[j, k]: the window column of query j's k-th key; < 0 left of the window.
        reach = self.context + ops.arange(self.span)[:, None] - length + 1 + ops.arange(length)[None, :]
        in_window = reach >= 0
        at = ops.reshape(ops.maximum(reach, 0), (-1,))

        def per_query(values):  # [n, C + S, ...] -> [n, S, L, ...]
            gathered = ops.take(values, at, axis=1)
            return ops.reshape(gathered, (ops.shape(values)[0], self.span, length, *values.shape[2:]))

        reach_items = ops.where(in_window[None], per_query(ops.cast(items, "int32")), 0)
        weights = self.repeat_attention.query_weights(
            per_query(self.repeat_attention.state_projection(states)), per_query(states),
            states[:, self.context:, :], ops.not_equal(reach_items, 0))
        return weights, reach_items

    def compute_mask(self, inputs, mask=None):
        return None


def build_window_model(encoder: keras.Model, max_len: int, span: int | None = None) -> keras.Model:
    """The encoder's layers over windows of window_context + span events (span: max_len unless given).

    Outputs the user vector of each of the last span positions [n, span, d] and, with a
    repeat head, their repeat weights and the items they weigh [n, span, max_len] each
    (WindowRepeatWeights). Every weight is the encoder's.
    """
    span = max_len if span is None else span
    context = window_context(is_recurrent(encoder), max_len, span)
    states_model = keras.Model(encoder.inputs, _sequence_states(encoder), name="sequence_states")
    inputs = [keras.Input(shape=(context + span,), dtype="int32", name=name)
              for name in _INPUT_NAMES[:len(encoder.inputs)]]
    states = states_model(inputs)
    vectors = TrainedPositions(context, name="trained_positions")(states)
    if is_recurrent(encoder):  # the GRU projects its state; SASRec's state is its user vector
        vectors = encoder.get_layer(USER_VECTOR_LAYER)(vectors)
    if uses_cosine_logits(encoder):
        vectors = encoder.get_layer(COSINE_USER_VECTOR_LAYER)(vectors)
    if not has_repeat_head(encoder):
        return keras.Model(inputs, vectors, name="user_encoder_windows")
    weights, reach_items = WindowRepeatWeights(encoder.get_layer(REPEAT_WEIGHTS_LAYER), context, max_len, span,
                                               name="window_repeat_weights")([states, inputs[0]])
    return keras.Model(inputs, [vectors, weights, reach_items], name="user_encoder_windows")


def full_softmax_target_log_probabilities(logits, targets):
    """log softmax(logits)[target] [n, S] of catalog logits [n, S, N+1] (TiedItemLogits: padding pinned low)."""
    on_target = ops.take_along_axis(logits, ops.expand_dims(targets, -1), axis=-1)[..., 0]
    return on_target - ops.logsumexp(logits, axis=-1)


def masked_mean(values, mask):
    """Mean of values where mask is True (0 when it is nowhere)."""
    mask = ops.cast(mask, "float32")
    return ops.sum(ops.where(mask > 0, ops.cast(values, "float32"), 0.0)) / ops.maximum(ops.sum(mask), 1.0)


class WindowTrainer(EncoderTrainer):
    """Trains an encoder on windows (full or sampled softmax at every trained position); validates
    the encoder itself on prefixes (EncoderTrainer)."""

    def __init__(self, encoder: keras.Model, max_len: int, span: int | None = None, sampled: dict | None = None,
                 **kwargs):
        """span: the windows' trained positions (max_len unless given); sampled: None for the full
        softmax, else {"target_counts", "num_sampled_negatives", "seed"}."""
        super().__init__(encoder, name="user_encoder_window_training", **kwargs)
        self.window_model = build_window_model(encoder, max_len, span)
        self.sampler, self.num_sampled_negatives = None, 0
        if sampled is not None:
            self.sampler = PopularitySampler(sampled["target_counts"], sampled["seed"], name="popularity_sampler")
            self.num_sampled_negatives = int(sampled["num_sampled_negatives"])
        self.built = True  # the encoder is built; the other layers hold no weights of their own

    def call(self, inputs, training=False):
        # Keras calls the model with training=True on train batches (windows) and False on
        # the validation batches (prefixes).
        return self.window_model(inputs, training=True) if training else self.encoder(inputs, training=False)

    def training_loss(self, x, y, y_pred):
        repeat_head = has_repeat_head(self.encoder)
        vectors = y_pred[0] if repeat_head else y_pred
        targets = ops.cast(y, "int32")
        if self.sampler is None:
            log_explore_target = full_softmax_target_log_probabilities(self.full_logits(vectors), targets)
        else:
            flat = sampled_target_log_probabilities(
                ops.reshape(vectors, (-1, ops.shape(vectors)[-1])), scoring_table(self.encoder),
                ops.reshape(targets, (-1,)), self.sampler.sample(self.num_sampled_negatives),
                self.sampler.log_target_frequency, self.sampler.log_sampling_probability)
            log_explore_target = ops.reshape(flat, ops.shape(targets))
        log_target = log_explore_target
        if repeat_head:
            log_target = target_log_probabilities(log_explore_target, y_pred[1], y_pred[2], targets)
        return -masked_mean(log_target, ops.not_equal(targets, 0))
