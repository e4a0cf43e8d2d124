"""Repeat-explore head for the user encoders (RepeatNet, Ren et al., AAAI 2019).

Shoppers return to items: re-viewing, comparing, going back to a cart item. A tied softmax
over the catalog can only rank a session's own items high by moving the user vector near
them, which costs it the items the user has not seen yet. RepeatNet splits the decision:

- a **repeat mode** scores the history's own items by attention over their positions:
  energy_t = v . tanh(W_s h_t + W_q q), softmax over the positions that hold a catalog item
  (h_t: the encoder's state at position t, q: its state at the last position);
- an **explore mode** is the encoder's usual softmax over the whole catalog;
- a **mode gate** P(repeat) = sigmoid(w . [q; sum_t a_t h_t] + b) mixes them:

      p(i) = (1 - P(repeat)) * softmax(logits)_i + P(repeat) * sum_{t: item_t = i} a_t

so an item seen twice collects both positions' attention. The encoder outputs the user
vector (the explore mode's query, as without the head) and the repeat weights
P(repeat) * a_t [n, L]; scores are log p(i) over the full catalog (RepeatExploreLogProbabilities
in training, repeat_explore_log_probabilities in numpy for scoring).

One simplification of the paper: its explore mode excludes the session's items; here the
explore softmax keeps them, so a model with nothing to gain from repeats can set the gate
near 0 and score exactly as the encoder without the head.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

REPEAT_WEIGHTS_LAYER = "repeat_weights"
_PACKAGE = "fusionrec"
# Energy of positions the repeat mode may not pick (padding, out-of-catalog items): softmax
# gives them ~0, and finite so that 0 * energy stays 0 in the gradient.
_MASKED_ENERGY = -1e9
# The explore share is floored here, so log(1 - P(repeat)) stays finite when the gate saturates.
MIN_EXPLORE_SHARE = 1e-7


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RepeatAttention(layers.Layer):
    """(states [n, L, h], items int [n, L]) -> repeat weights float32 [n, L] = P(repeat) * attention.

    Positions holding item 0 (padding, or an item outside the catalog) get weight 0; a row
    with no catalog item has P(repeat) = 0 (all weights 0), i.e. pure explore.
    """

    def __init__(self, attention_dim: int, **kwargs):
        super().__init__(**{"dtype": "float32", **kwargs})
        self.attention_dim = int(attention_dim)
        self.state_projection = layers.Dense(self.attention_dim, use_bias=False, name="state_projection",
                                             dtype="float32")
        self.query_projection = layers.Dense(self.attention_dim, name="query_projection", dtype="float32")
        self.energy = layers.Dense(1, use_bias=False, name="energy", dtype="float32")
        self.mode_gate = layers.Dense(1, name="mode_gate", dtype="float32")
        # The GRU's states carry its padding mask; the item ids already say which positions count.
        self.supports_masking = True

    def build(self, input_shape):
        states_shape = tuple(input_shape[0])
        state_dim = states_shape[-1]
        self.state_projection.build(states_shape)
        self.query_projection.build((None, state_dim))
        self.energy.build((None, None, self.attention_dim))
        self.mode_gate.build((None, 2 * state_dim))

    def call(self, inputs):
        states, items = inputs
        states = ops.cast(states, "float32")
        # One query, the last column (left padding: the most recent event), over every column.
        weights = self.query_weights(self.state_projection(states)[:, None], states[:, None], states[:, -1:, :],
                                     ops.not_equal(items, 0)[:, None, :])
        return weights[:, 0, :]

    def query_weights(self, projected_keys, keys, queries, repeatable):
        """P(repeat) * attention [n, Q, K] of Q queries [n, Q, h], each over its own K key states.

        keys [n, Q, K, h] and projected_keys = state_projection(keys) [n, Q, K, attention_dim]
        (the caller projects each state once, however many queries read it); repeatable: bool
        [n, Q, K], the keys each query may return to. A query with none has all weights 0 (pure
        explore). Serving asks one query, the last position, over all columns; window training
        (jobs/train/models/window_training.py) one per trained position over its last max_len.
        """
        hidden = ops.tanh(projected_keys + self.query_projection(queries)[:, :, None, :])
        energies = ops.squeeze(self.energy(hidden), axis=-1)
        attention = ops.softmax(ops.where(repeatable, energies, _MASKED_ENERGY), axis=-1)
        attention = attention * ops.cast(repeatable, "float32")  # a query with nothing repeatable: all 0
        summary = ops.sum(attention[..., None] * keys, axis=-2)
        repeat_probability = ops.sigmoid(self.mode_gate(ops.concatenate([queries, summary], axis=-1)))
        return repeat_probability * attention

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1])

    def get_config(self):
        return {**super().get_config(), "attention_dim": self.attention_dim}


def with_repeat_outputs(inputs: list, items, states, user_vector) -> keras.Model:
    """The encoder model with two outputs: [user vector [n, d], repeat weights [n, L]]."""
    repeat_weights = RepeatAttention(int(states.shape[-1]), name=REPEAT_WEIGHTS_LAYER)([states, items])
    return keras.Model(inputs, [user_vector, repeat_weights], name="user_encoder")


def has_repeat_head(encoder: keras.Model) -> bool:
    return len(encoder.outputs) == 2


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RepeatExploreLogProbabilities(layers.Layer):
    """(logits [n, N+1], repeat weights [n, L], items [n, L]) -> log p [n, N+1], the mixture above.

    Its rows are normalised log-probabilities, so a softmax cross-entropy on them (from
    logits) is exactly -log p(target): the full-softmax loss trains the head unchanged.
    """

    def __init__(self, **kwargs):
        super().__init__(**{"dtype": "float32", **kwargs})

    def call(self, inputs):
        logits, repeat_weights, items = inputs
        logits = ops.cast(logits, "float32")
        repeat_weights = ops.cast(repeat_weights, "float32")
        repeat_mass = _scatter_rows(repeat_weights, items, ops.shape(logits))
        log_explore = logits - ops.logsumexp(logits, axis=-1, keepdims=True)
        explore_share = ops.maximum(1.0 - ops.sum(repeat_weights, axis=-1, keepdims=True), MIN_EXPLORE_SHARE)
        return ops.logaddexp(ops.log(explore_share) + log_explore, _safe_log(repeat_mass))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


def _scatter_rows(weights, items, shape):
    """[n, L] weights onto [n, N+1] columns items[n, L]; weights of one item in one row add up."""
    n, length = ops.shape(items)[0], ops.shape(items)[1]
    rows = ops.repeat(ops.arange(n, dtype="int32")[:, None], length, axis=1)
    indices = ops.reshape(ops.stack([rows, ops.cast(items, "int32")], axis=-1), (-1, 2))
    return ops.scatter(indices, ops.reshape(weights, (-1,)), shape)


def _safe_log(mass):
    """log(mass) where mass > 0, a very low finite value elsewhere (no -inf, no NaN gradient)."""
    positive = mass > 0
    return ops.where(positive, ops.log(ops.where(positive, mass, 1.0)), _MASKED_ENERGY)


def target_log_probabilities(log_explore_target, repeat_weights, items, targets):
    """log p(target) [n] from the explore mode's log-probability of each target [n] (e.g. a sampled softmax's).

    Also per window position: log_explore_target and targets [n, Q], repeat_weights and their
    items [n, Q, L] give [n, Q].
    """
    repeat_weights = ops.cast(repeat_weights, "float32")
    explore_share = ops.maximum(1.0 - ops.sum(repeat_weights, axis=-1), MIN_EXPLORE_SHARE)
    targets = ops.expand_dims(ops.cast(targets, "int32"), -1)
    on_target = ops.cast(ops.equal(ops.cast(items, "int32"), targets), "float32")
    repeat_mass = ops.sum(repeat_weights * on_target, axis=-1)
    return ops.logaddexp(ops.log(explore_share) + log_explore_target, _safe_log(repeat_mass))


def repeat_explore_log_probabilities(logits: np.ndarray, repeat_weights: np.ndarray, items: np.ndarray) -> np.ndarray:
    """numpy twin of RepeatExploreLogProbabilities for scoring: float32 [n, N+1], column 0 = -inf.

    logits: the explore mode's scores (user vectors @ item table); column 0 (padding) is
    left out of the softmax. Computed in log space, so items far down the explore
    softmax keep distinct scores instead of underflowing to one tie.
    """
    logits = np.asarray(logits, dtype=np.float32)
    weights = np.asarray(repeat_weights, dtype=np.float32)
    items = np.asarray(items)
    catalog = logits[:, 1:]
    top = catalog.max(axis=1, keepdims=True)
    log_normalizer = top + np.log(np.exp(catalog - top).sum(axis=1, keepdims=True))
    explore_share = np.maximum(1.0 - weights.sum(axis=1, keepdims=True), MIN_EXPLORE_SHARE)
    scores = logits - log_normalizer + np.log(explore_share)
    rows, positions = np.nonzero((weights > 0) & (items > 0))
    if len(rows):
        width = logits.shape[1]
        cells, at = np.unique(rows.astype(np.int64) * width + items[rows, positions], return_inverse=True)
        mass = np.bincount(at, weights=weights[rows, positions].astype(np.float64))
        cell_rows, cell_items = np.divmod(cells, width)
        scores[cell_rows, cell_items] = np.logaddexp(scores[cell_rows, cell_items], np.log(mass)).astype(np.float32)
    scores[:, 0] = -np.inf
    return scores
