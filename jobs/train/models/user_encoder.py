"""GRU session encoder in the GRU4Rec family (Hidasi et al., ICLR 2016; CIKM 2018).

A user's recent events (item, event type, time gap since the previous event) run through
a GRU; its last state, projected into item-embedding space, is the user vector. Scores are
dot products with the *same* item table that embeds the inputs (weight tying, as in GRU4Rec's 2018 follow-up with
shared input/output embeddings): an item is described once, and one table serves both
"what did the user do" and "what will they do next".

Two training losses:

- full softmax (the default): cross-entropy over the whole catalog. Exact and affordable
  for catalogs of thousands of items; its cost grows with the catalog (a [batch, n_items]
  matmul and softmax per step).
- sampled softmax: cross-entropy over the batch's own targets (in-batch negatives, Yi et
  al., RecSys 2019; the mini-batch negatives of GRU4Rec, Hidasi et al., ICLR 2016) plus S
  extra items drawn by popularity^alpha and shared by the whole batch (the "additional
  samples" of Hidasi & Karatzoglou, CIKM 2018). Each candidate's logit is corrected by
  -log Q(candidate), its expected number of appearances among the candidates (the logQ
  correction of Yi et al.), so that the popular items the sampler over-represents are not
  pushed down more than the full softmax would. Cost per step is [batch, batch + S],
  independent of the catalog size.

Either loss can score by scaled cosine instead of the plain dot product (`logit_scale` > 0;
NISER, Gupta et al., 2019): the user vector and every item vector are L2-normalised and
the logit is logit_scale * cos(user, item). A plain dot product lets popular items win by
growing long embeddings; the cosine takes vector length out of the ranking, which lifts
the long tail, and the scale keeps the softmax sharp enough to learn (a cosine alone spans
only [-1, 1]).

Either architecture can carry a repeat-explore head (jobs/train/models/repeat_head.py,
RepeatNet): the encoder then has a second output, the repeat weights over its history's
positions, and every score becomes the mixture's log-probability.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from jobs.common.schema import N_GAP_BUCKETS
from jobs.train.models.repeat_head import (
    RepeatExploreLogProbabilities, has_repeat_head, target_log_probabilities, with_repeat_outputs,
)

# Logit for the padding column: low enough that softmax gives it ~0 probability, finite
# so that 0 * logit stays 0 in the gradient (-inf would give NaN).
PAD_LOGIT = -1e9
ITEM_EMBEDDING_LAYER = "item_embedding"
GRU_LAYER = "gru"
USER_VECTOR_LAYER = "user_vector"
COSINE_USER_VECTOR_LAYER = "cosine_user_vector"
# Time gaps are added to the event vectors like event types (and like TiSASRec's interval
# embeddings, Li et al., WSDM 2020, simplified to the gap to the previous event): "seconds
# later, same burst" and "three weeks later" are different contexts for the same item.
GAP_EMBEDDING_LAYER = "gap_embedding"
# Guards the L2 norm of an all-zero row (the padding item can be one): its unit vector is 0.
_NORM_EPSILON = 1e-12


def build_user_encoder(n_items: int, n_event_types: int, max_len: int, embedding_dim: int,
                       hidden_dim: int, time_gaps: bool = True, repeat_head: bool = False) -> keras.Model:
    """Encoder: items, types[, gaps] int32 [n, max_len] -> user vector [n, embedding_dim].

    Inputs are left-padded with 0 (most recent event last). n_event_types counts the
    type ids including padding 0 (schema.N_EVENT_TYPES). time_gaps: take a third input,
    each event's gap bucket (schema.GAP_BUCKET_EDGES_SECONDS), see add_gap_vectors.
    repeat_head: a second output, the repeat weights [n, max_len] read from the GRU's
    state at every position (jobs/train/models/repeat_head.py).
    """
    inputs, items, events = event_inputs(n_items, n_event_types, embedding_dim, time_gaps)
    # Every position's state: the repeat head attends over them, and window training reads a
    # user vector at each. The last one is `state`.
    states, state = layers.GRU(hidden_dim, return_sequences=True, return_state=True, name=GRU_LAYER)(events)
    # Projects the GRU state into the item space so hidden_dim may differ from embedding_dim.
    user_vector = layers.Dense(embedding_dim, name=USER_VECTOR_LAYER, dtype="float32")(state)
    if repeat_head:
        return with_repeat_outputs(inputs, items, states, user_vector)
    return keras.Model(inputs, user_vector, name="user_encoder")


def event_inputs(n_items: int, n_event_types: int, embedding_dim: int, time_gaps: bool):
    """(inputs, items input, event vectors [n, L, embedding_dim]): each event's item + type
    (+ time gap) embedding, masked on padding, as the recurrent encoders read them."""
    # Length None: serving reads max_len columns, window training (window_training.py) longer rows.
    items = keras.Input(shape=(None,), dtype="int32", name="items")
    types = keras.Input(shape=(None,), dtype="int32", name="types")
    inputs = [items, types]
    # mask_zero on both: the GRU skips padding steps (item 0 and type 0) instead of reading a
    # fake event. Keras ORs the two masks in the Add, so an out-of-catalog item (item 0 with
    # a real type) still counts as an event, seen through row 0 as "some unknown item".
    item_vectors = layers.Embedding(n_items + 1, embedding_dim, mask_zero=True, name=ITEM_EMBEDDING_LAYER)(items)
    # Event types are added like positional embeddings: a purchase and a view of the same
    # item become nearby but distinguishable points in the GRU's input space.
    type_vectors = layers.Embedding(n_event_types, embedding_dim, mask_zero=True, name="event_type_embedding")(types)
    event_parts = [item_vectors, type_vectors]
    if time_gaps:
        gaps = keras.Input(shape=(None,), dtype="int32", name="gaps")
        inputs.append(gaps)
        # mask_zero: padding has gap 0, and so does a user's first event, which the item and
        # type masks (ORed in the Add) keep. Without a mask here the Add would drop them all.
        gap_embedding = layers.Embedding(N_GAP_BUCKETS, embedding_dim, mask_zero=True, name=GAP_EMBEDDING_LAYER)
        event_parts.append(gap_embedding(gaps))
    events = layers.Add(name="event_vectors")(event_parts)
    return inputs, items, events


def unit_rows(vectors):
    """Each row divided by its L2 norm (an all-zero row stays 0)."""
    vectors = ops.cast(vectors, "float32")
    squared_norms = ops.sum(ops.square(vectors), axis=-1, keepdims=True)
    return vectors * ops.rsqrt(ops.maximum(squared_norms, _NORM_EPSILON))


@keras.saving.register_keras_serializable(package="fusionrec")
class ScaledUnitVector(layers.Layer):
    """x [n, d] -> scale * x / ||x||: the user side of the scaled-cosine logits."""

    def __init__(self, scale: float, **kwargs):
        super().__init__(**{"dtype": "float32", **kwargs})
        self.scale = float(scale)

    def call(self, vectors):
        return self.scale * unit_rows(vectors)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def with_cosine_logits(encoder: keras.Model, logit_scale: float) -> keras.Model:
    """The encoder with its user vector scaled to length logit_scale (see the module docstring).

    The item side is normalised wherever the tied table is read (item_table, TiedItemLogits,
    the sampled loss), so every score becomes logit_scale * cos(user, item). A repeat
    head's output passes through unchanged.
    """
    if logit_scale <= 0:
        raise ValueError(f"user_encoder.logit_scale must be > 0 for cosine logits, got {logit_scale}")
    user_vector = ScaledUnitVector(logit_scale, name=COSINE_USER_VECTOR_LAYER)(encoder.outputs[0])
    outputs = [user_vector, *encoder.outputs[1:]] if has_repeat_head(encoder) else user_vector
    return keras.Model(encoder.inputs, outputs, name=encoder.name)


def uses_cosine_logits(encoder: keras.Model) -> bool:
    return any(layer.name == COSINE_USER_VECTOR_LAYER for layer in encoder.layers)


def scoring_table(encoder: keras.Model):
    """The tied item table as scores read it: unit rows under cosine logits, else as stored (a tensor)."""
    table = ops.cast(encoder.get_layer(ITEM_EMBEDDING_LAYER).embeddings, "float32")
    return unit_rows(table) if uses_cosine_logits(encoder) else table


class TiedItemLogits(layers.Layer):
    """user vector [n, d] -> logits [n, n_items + 1] against the encoder's input item table.

    Column 0 (padding / out of catalog) is pinned to PAD_LOGIT so it is never predicted.
    Computed in float32 so mixed-precision training keeps an exact softmax. With
    unit_items the table's rows are L2-normalised first (cosine logits).
    """

    def __init__(self, item_embedding: layers.Embedding, unit_items: bool = False, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.item_embedding = item_embedding
        self.unit_items = unit_items

    def call(self, user_vectors):
        table = ops.cast(self.item_embedding.embeddings, "float32")
        if self.unit_items:
            table = unit_rows(table)
        logits = ops.matmul(ops.cast(user_vectors, "float32"), ops.transpose(table))
        is_padding_column = ops.arange(ops.shape(table)[0]) == 0
        return ops.where(is_padding_column[None, :], PAD_LOGIT, logits)


def build_training_model(encoder: keras.Model) -> keras.Model:
    """The encoder's inputs -> next-item logits over the catalog, sharing the encoder's weights.

    With a repeat head the "logits" are the repeat-explore mixture's log-probabilities,
    which full_softmax_loss turns into exactly -log p(target).
    """
    logits = TiedItemLogits(encoder.get_layer(ITEM_EMBEDDING_LAYER), unit_items=uses_cosine_logits(encoder),
                            name="tied_item_logits")(encoder.outputs[0])
    if has_repeat_head(encoder):
        logits = RepeatExploreLogProbabilities(name="repeat_explore")([logits, encoder.outputs[1], encoder.inputs[0]])
    return keras.Model(encoder.inputs, logits, name="user_encoder_training")


def full_softmax_loss(targets, logits):
    """Mean cross-entropy of the target item under a softmax over every catalog item."""
    targets = ops.cast(ops.reshape(targets, (-1,)), "int32")
    return ops.mean(ops.sparse_categorical_crossentropy(targets, logits, from_logits=True))


def item_table(encoder: keras.Model):
    """The tied item table the encoder's user vectors are scored against, float32 [n_items + 1, d] (numpy).

    Under cosine logits its rows have unit length (the saved item_embeddings.npy is this
    table, so serving scores exactly as training did).
    """
    return ops.convert_to_numpy(scoring_table(encoder))


# --- sampled softmax ---------------------------------------------------------------------

# Extra negatives are drawn with probability proportional to popularity ** SAMPLING_ALPHA:
# 0.75 flattens the popularity curve as word2vec's unigram^0.75 does (Mikolov et al.,
# 2013), so the tail is sampled more often than its share of targets, yet popular items,
# the hard negatives, still dominate (Hidasi & Karatzoglou, 2018, use the same kind of
# popularity^alpha sampling for their additional samples).
SAMPLING_ALPHA = 0.75
# Target count given to items that are never a train target: half an occurrence, so they
# are sampled (rarely) and get pushed away from users, instead of keeping their random init.
UNSEEN_ITEM_COUNT = 0.5


def popularity_distributions(target_counts, alpha: float = SAMPLING_ALPHA, unseen_count: float = UNSEEN_ITEM_COUNT):
    """counts [n_items + 1] (index 0 = padding) -> (target_frequency, sampling_probability), float64 each.

    target_frequency: p_pop(i), how often i is a train target (never-seen items floored to
    unseen_count); what the in-batch candidates are drawn from. sampling_probability: p(i)
    proportional to the floored count ** alpha; what the extra negatives are drawn from.
    Both are 0 for padding item 0, which is never a candidate.
    """
    counts = np.asarray(target_counts, dtype=np.float64).copy()
    if counts.ndim != 1 or len(counts) < 2:
        raise ValueError(f"target_counts must be one count per item id 0..n_items, got shape {counts.shape}")
    counts[1:] = np.maximum(counts[1:], unseen_count)
    counts[0] = 0.0
    smoothed = counts ** alpha
    smoothed[0] = 0.0
    return counts / counts.sum(), smoothed / smoothed.sum()


def alias_table(probabilities) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias method (Vose's construction): p [n] -> (acceptance float [n], alias int [n]).

    To draw: bin b uniform in [0, n), coin c uniform in [0, 1); the draw is b if c <
    acceptance[b], else alias[b]. Every draw is O(1) (two random numbers and a lookup, easy
    for XLA), and the probabilities stay exact for catalogs of millions of items, where a
    float32 cumulative sum could not tell apart items of probability 1e-9.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n = len(probabilities)
    scaled = probabilities * (n / probabilities.sum())
    acceptance = np.ones(n, dtype=np.float64)
    alias = np.arange(n, dtype=np.int64)
    small = np.flatnonzero(scaled < 1.0).tolist()
    large = np.flatnonzero(scaled >= 1.0).tolist()
    while small and large:
        short, tall = small.pop(), large.pop()
        # Bin `short` keeps its own mass and is topped up to 1 with mass from `tall`.
        acceptance[short], alias[short] = scaled[short], tall
        scaled[tall] -= 1.0 - scaled[short]
        (small if scaled[tall] < 1.0 else large).append(tall)
    # Whatever is left is within rounding of 1: acceptance stays 1.
    return acceptance, alias


def sampled_softmax_loss(user_vectors, item_vectors, targets, sampled_items, log_target_frequency,
                         log_sampling_probability):
    """Mean cross-entropy of each target among the batch's targets plus shared sampled items, logQ-corrected.

    = -mean(sampled_target_log_probabilities(...)), whose docstring says how.
    """
    return -ops.mean(sampled_target_log_probabilities(user_vectors, item_vectors, targets, sampled_items,
                                                      log_target_frequency, log_sampling_probability))


def sampled_target_log_probabilities(user_vectors, item_vectors, targets, sampled_items, log_target_frequency,
                                     log_sampling_probability):
    """Each target's log-softmax [B] among the batch's targets plus shared sampled items, logQ-corrected.

    user_vectors [B, d]; item_vectors [n_items + 1, d] (the tied table); targets [B] ids;
    sampled_items [S] ids drawn with replacement from the sampling distribution;
    log_target_frequency / log_sampling_probability [n_items + 1]: log p_pop and log p
    (popularity_distributions).

    Candidates are the B targets, then the S samples. Logit of example b for candidate c:
    u_b . e_c - log Q(c), where Q(c) is c's expected number of appearances among the
    candidates: B * p_pop(c) for an in-batch target (Yi et al.: its chance to be some
    example's target in a batch of B), S * p(c) for a sampled one. Example b's positive is
    column b. Any other column holding b's own target (the same item as another example's
    target, or drawn by the sampler) is an accidental hit, masked out: it is not a negative.

    A target 0 marks a row without a target (a window position with no next item): its
    column is no candidate, B counts only the real targets, and its own value is
    meaningless (the caller leaves it out of the loss).
    """
    targets = ops.cast(ops.reshape(targets, (-1,)), "int32")
    sampled_items = ops.cast(ops.reshape(sampled_items, (-1,)), "int32")
    batch_size, num_sampled = ops.shape(targets)[0], ops.shape(sampled_items)[0]
    candidates = ops.concatenate([targets, sampled_items], axis=0)
    item_vectors = ops.cast(item_vectors, "float32")
    logits = ops.matmul(ops.cast(user_vectors, "float32"), ops.transpose(ops.take(item_vectors, candidates, axis=0)))
    is_real_candidate = ops.not_equal(candidates, 0)
    n_targets = ops.maximum(ops.sum(ops.cast(is_real_candidate[:batch_size], "float32")), 1.0)
    log_expected_count = ops.concatenate([
        ops.log(n_targets) + ops.take(ops.cast(log_target_frequency, "float32"), targets),
        ops.log(ops.cast(num_sampled, "float32")) + ops.take(ops.cast(log_sampling_probability, "float32"),
                                                             sampled_items),
    ], axis=0)
    # Padding's log frequency is -inf: zeroed before it could make a logit +inf.
    logits = logits - ops.where(is_real_candidate, log_expected_count, 0.0)[None, :]
    positive_column = ops.arange(batch_size, dtype="int32")
    is_positive = positive_column[:, None] == ops.arange(batch_size + num_sampled, dtype="int32")[None, :]
    is_accidental_hit = ops.logical_and(targets[:, None] == candidates[None, :], ops.logical_not(is_positive))
    # PAD_LOGIT, not -inf, for the reason given at its definition.
    logits = ops.where(ops.logical_or(is_accidental_hit, ops.logical_not(is_real_candidate)[None, :]), PAD_LOGIT,
                       logits)
    return -ops.sparse_categorical_crossentropy(positive_column, logits, from_logits=True)


class PopularitySampler(layers.Layer):
    """Draws item ids with replacement from a fixed distribution over 1..n_items (alias method).

    Holds the alias table and both log distributions as non-trainable weights, and a seeded
    keras.random.SeedGenerator, so sampling works inside a jit-compiled train step and the
    same seed draws the same items.
    """

    def __init__(self, target_counts, seed: int, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        target_frequency, sampling_probability = popularity_distributions(target_counts)
        # The table covers items 1..n_items only (index k is item k + 1), so padding can never
        # be drawn, not even through a rounding leftover of the alias construction.
        acceptance, alias = alias_table(sampling_probability[1:])
        with np.errstate(divide="ignore"):  # log 0 = -inf for padding, which is never looked up
            arrays = {"acceptance": acceptance.astype(np.float32), "alias": alias.astype(np.int32),
                      "log_target_frequency": np.log(target_frequency).astype(np.float32),
                      "log_sampling_probability": np.log(sampling_probability).astype(np.float32)}
        for name, array in arrays.items():
            weight = self.add_weight(shape=array.shape, dtype=str(array.dtype), initializer="zeros",
                                     trainable=False, name=name)
            weight.assign(array)
            setattr(self, name, weight)
        self.n_sampled_items = len(acceptance)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True  # all its state exists now; there is no input shape to build for

    def sample(self, num_samples: int):
        """int32 [num_samples] item ids."""
        bins = keras.random.randint((num_samples,), 0, self.n_sampled_items, dtype="int32", seed=self.seed_generator)
        coins = keras.random.uniform((num_samples,), seed=self.seed_generator)
        chosen = ops.where(coins < ops.take(self.acceptance, bins), bins, ops.take(self.alias, bins))
        return chosen + 1


class EncoderTrainer(keras.Model):
    """Fits an encoder through a training loss of its own; evaluates it (val_loss) with the full softmax.

    Subclasses define training_loss. Validation always scores the encoder itself on the
    valid prefixes with the full softmax, whatever the training loss and examples: a
    sampled loss depends on which negatives were drawn (and is not the quantity we care
    about), so early stopping on it would compare noisy, differently biased numbers across
    epochs; the full softmax is exact, deterministic and comparable between runs. Its cost
    is one [batch, n_items] matmul per validation example, no more than the valid recall@20
    the job computes each epoch anyway.
    """

    def __init__(self, encoder: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.full_logits = TiedItemLogits(encoder.get_layer(ITEM_EMBEDDING_LAYER),
                                          unit_items=uses_cosine_logits(encoder), name="tied_item_logits")
        self.repeat_explore = RepeatExploreLogProbabilities(name="repeat_explore")

    def call(self, inputs, training=False):
        return self.encoder(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if training:
            return self.training_loss(x, y, y_pred)
        # With a repeat head y_pred is [user vectors, repeat weights]: the mixture's log-probabilities.
        repeat_head = has_repeat_head(self.encoder)
        logits = self.full_logits(y_pred[0] if repeat_head else y_pred)
        if repeat_head:
            logits = self.repeat_explore([logits, y_pred[1], x[0]])
        return full_softmax_loss(y, logits)

    def training_loss(self, x, y, y_pred):
        raise NotImplementedError


class SampledSoftmaxTrainer(EncoderTrainer):
    """Trains an encoder on prefixes with sampled softmax; its output is the encoder's user vector,
    so training never forms the [batch, n_items] logits."""

    def __init__(self, encoder: keras.Model, target_counts, num_sampled_negatives: int, seed: int, **kwargs):
        super().__init__(encoder, name="user_encoder_sampled_softmax", **kwargs)
        self.sampler = PopularitySampler(target_counts, seed, name="popularity_sampler")
        self.num_sampled_negatives = int(num_sampled_negatives)
        self.built = True  # the encoder is built; the other layers hold no weights of their own

    def training_loss(self, x, y, y_pred):
        # With a repeat head the explore mode's sampled probability of the target is mixed
        # with the repeat mode's.
        repeat_head = has_repeat_head(self.encoder)
        log_explore_target = sampled_target_log_probabilities(
            y_pred[0] if repeat_head else y_pred, scoring_table(self.encoder), y,
            self.sampler.sample(self.num_sampled_negatives), self.sampler.log_target_frequency,
            self.sampler.log_sampling_probability)
        if repeat_head:
            return -ops.mean(target_log_probabilities(log_explore_target, y_pred[1], x[0], ops.reshape(y, (-1,))))
        return -ops.mean(log_explore_target)
