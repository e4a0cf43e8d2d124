"""Feature-level fusion: one learned scorer over the embeddings of several encoders.

Each source s (an encoder exposing user and item vectors) is projected into a common space
by learned linear maps P_s (users) and Q_s (items); the projections are L2-normalised and
mixed with softmax-normalised source weights w_s:

    fused_user = sum_s w_s * normalize(P_s u_s)      fused_item_i = sum_s w_s * normalize(Q_s v_s,i)
    logit_i    = scale * fused_user . fused_item_i

Normalising each projection is what makes w_s meaningful: without it a source's weight
could be undone by scaling up its projection, and the learned weights would say nothing
about how useful each encoder is. The learned scale restores the dynamic range the unit
vectors lack. Training is full-softmax cross-entropy over the catalog on the valid day,
with the encoders frozen (only the projections, weights and scale are learned).

Scoring is plain numpy on the saved arrays, so serving does not run TensorFlow for it.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from jobs.fusion import read_fuser, select_scorers, write_fuser

NORM_EPSILON = 1e-12  # guards the L2 normalisation of an all-zero vector
PADDING_LOGIT = -1e9  # column 0 while training; -inf would turn the softmax gradient into NaN
INITIAL_SCALE = 10.0  # unit vectors give logits in [-1, 1]: too flat for a softmax over a catalog
USER_VECTOR_BATCH = 2048


class FeatureFusion:
    """Learned weighted fusion of EmbeddingScorers' user and item vectors."""

    name = "fusion_feature"

    def __init__(self, sources: Sequence, dim: int = 32, epochs: int = 10, batch_size: int = 256,
                 learning_rate: float = 0.01, seed: int = 42):
        if len(sources) < 1:
            raise ValueError("fusion_feature needs at least one embedding source")
        self.sources = list(sources)
        self.source_names = [source.name for source in self.sources]
        self.item_vectors = [np.asarray(source.item_vectors, dtype=np.float32) for source in self.sources]
        catalog_sizes = {len(vectors) for vectors in self.item_vectors}
        if len(catalog_sizes) != 1:
            raise ValueError(f"fusion_feature sources disagree on the catalog size (item_vectors rows): "
                             f"{dict(zip(self.source_names, (len(v) for v in self.item_vectors)))}")
        self.dim, self.epochs, self.batch_size = int(dim), int(epochs), int(batch_size)
        self.learning_rate, self.seed = float(learning_rate), seed
        self.parameters: dict[str, np.ndarray] | None = None
        self._fused_items: np.ndarray | None = None

    @property
    def source_weights(self) -> dict[str, float]:
        """The softmax-normalised weight of each source, e.g. {"user_encoder": 0.7, ...}."""
        weights = _softmax(self.parameters["source_logits"])
        return dict(zip(self.source_names, weights.astype(float).tolist()))

    def fit(self, examples) -> dict:
        """Learn projections, source weights and scale on examples; returns the weights and losses."""
        if len(examples.targets) == 0:
            raise ValueError("fusion_feature cannot be fitted on zero examples")
        user_vectors = self._user_vectors(examples.items, examples.types, getattr(examples, "gaps", None))
        self.parameters, losses = _train(user_vectors, self.item_vectors, np.asarray(examples.targets),
                                         self.dim, self.epochs, self.batch_size, self.learning_rate, self.seed)
        self._fused_items = None
        return {"source_weights": self.source_weights, "loss_by_epoch": losses}

    def score(self, items: np.ndarray, types: np.ndarray, gaps: np.ndarray | None = None) -> np.ndarray:
        """scale * fused_user . fused_item for every item, [n, n_items + 1], column 0 = -inf."""
        if self.parameters is None:
            raise RuntimeError("fusion_feature must be fitted (or loaded) before scoring")
        if len(items) == 0:
            return np.zeros((0, len(self.item_vectors[0])), dtype=np.float32)
        if self._fused_items is None:  # items do not depend on the example: fuse them once
            self._fused_items = _fuse(self.item_vectors, self._projections("item"), self.parameters["source_logits"])
        fused_users = _fuse(self._user_vectors(items, types, gaps), self._projections("user"),
                            self.parameters["source_logits"])
        scores = (math.exp(float(self.parameters["log_scale"])) * fused_users @ self._fused_items.T).astype(np.float32)
        scores[:, 0] = -np.inf
        return scores

    def save(self, directory: str) -> None:
        if self.parameters is None:
            raise RuntimeError("fusion_feature must be fitted before saving")
        write_fuser(directory, {"name": self.name, "level": "feature", "sources": self.source_names,
                                "source_weights": self.source_weights, "dim": self.dim, "epochs": self.epochs,
                                "batch_size": self.batch_size, "learning_rate": self.learning_rate,
                                "seed": self.seed}, self.parameters)

    @classmethod
    def load(cls, directory: str, base_scorers: Mapping) -> "FeatureFusion":
        description, arrays = read_fuser(directory, cls.name)
        sources = select_scorers(base_scorers, description["sources"], cls.name)
        fusion = cls(sources, description["dim"], description["epochs"], description["batch_size"],
                     description["learning_rate"], description["seed"])
        fusion.parameters = _check_parameters(arrays, fusion, directory)
        return fusion

    def _projections(self, side: str) -> list[np.ndarray]:
        return [self.parameters[f"{side}_projection_{s}"] for s in range(len(self.sources))]

    def _user_vectors(self, items: np.ndarray, types: np.ndarray, gaps: np.ndarray | None) -> list[np.ndarray]:
        """Each source's user vectors [n, d_s], computed in bounded batches (gaps sliced like items)."""
        vectors = []
        for source in self.sources:
            batches = [source.user_vectors(items[start:start + USER_VECTOR_BATCH],
                                           types[start:start + USER_VECTOR_BATCH],
                                           None if gaps is None else gaps[start:start + USER_VECTOR_BATCH])
                       for start in range(0, len(items), USER_VECTOR_BATCH)]
            vectors.append(np.concatenate(batches).astype(np.float32))
        return vectors


def _fuse(vectors: Sequence[np.ndarray], projections: Sequence[np.ndarray], source_logits: np.ndarray) -> np.ndarray:
    """sum_s softmax(logits)_s * normalize(vectors_s @ projection_s), in numpy."""
    weights = _softmax(source_logits)
    return sum(weight * _l2_normalize(vectors_s @ projection)
               for weight, vectors_s, projection in zip(weights, vectors, projections)).astype(np.float32)


def _l2_normalize(matrix: np.ndarray) -> np.ndarray:
    squared_norm = np.sum(np.square(matrix), axis=1, keepdims=True)
    return matrix / np.sqrt(np.maximum(squared_norm, NORM_EPSILON))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(np.asarray(logits, dtype=np.float64) - np.max(logits))
    return shifted / shifted.sum()


def _train(user_vectors: list[np.ndarray], item_vectors: list[np.ndarray], targets: np.ndarray, dim: int,
           epochs: int, batch_size: int, learning_rate: float, seed: int) -> tuple[dict[str, np.ndarray], list[float]]:
    """Full-softmax training of the fusion parameters with TensorFlow; returns numpy arrays."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)  # initialisers and the shuffle order: reproducible runs
    n_sources, n_columns = len(item_vectors), len(item_vectors[0])
    initializer = keras.initializers.GlorotUniform(seed=seed)
    user_projections = [tf.Variable(initializer((u.shape[1], dim))) for u in user_vectors]
    item_projections = [tf.Variable(initializer((v.shape[1], dim))) for v in item_vectors]
    source_logits = tf.Variable(tf.zeros(n_sources))  # equal weights to start
    log_scale = tf.Variable(math.log(INITIAL_SCALE))
    named_variables = {"source_logits": source_logits, "log_scale": log_scale,
                       **{f"user_projection_{s}": p for s, p in enumerate(user_projections)},
                       **{f"item_projection_{s}": p for s, p in enumerate(item_projections)}}
    variables = list(named_variables.values())
    item_constants = [tf.constant(vectors) for vectors in item_vectors]
    padding_mask = tf.constant(np.eye(1, n_columns, 0, dtype=np.float32)[0] * PADDING_LOGIT)
    optimizer = keras.optimizers.Adam(learning_rate)

    def fuse(vectors, projections, weights):
        return tf.add_n([weights[s] * tf.math.l2_normalize(tf.matmul(vectors[s], projections[s]), axis=1,
                                                            epsilon=NORM_EPSILON)
                         for s in range(n_sources)])

    @tf.function(reduce_retracing=True)
    def train_step(batch_users, batch_targets):
        with tf.GradientTape() as tape:
            weights = tf.nn.softmax(source_logits)
            fused_users = fuse(batch_users, user_projections, weights)
            fused_items = fuse(item_constants, item_projections, weights)
            logits = tf.exp(log_scale) * tf.matmul(fused_users, fused_items, transpose_b=True) + padding_mask
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(batch_targets, logits))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    dataset = (tf.data.Dataset.from_tensor_slices((tuple(user_vectors), targets.astype(np.int32)))
               .shuffle(len(targets), seed=seed, reshuffle_each_iteration=True).batch(batch_size))
    losses = []
    for _ in range(epochs):
        batch_losses = [float(train_step(list(users), batch_targets)) for users, batch_targets in dataset]
        losses.append(float(np.mean(batch_losses)))
    return {name: variable.numpy() for name, variable in named_variables.items()}, losses


def _check_parameters(arrays: dict[str, np.ndarray], fusion: FeatureFusion, directory: str) -> dict[str, np.ndarray]:
    """The saved arrays, checked against the sources they are about to be applied to."""
    expected = {"source_logits": (len(fusion.sources),), "log_scale": ()}
    for s, vectors in enumerate(fusion.item_vectors):
        expected[f"item_projection_{s}"] = (vectors.shape[1], fusion.dim)
        expected[f"user_projection_{s}"] = (None, fusion.dim)  # user dims are only known from a batch
    for key, shape in expected.items():
        if key not in arrays:
            raise ValueError(f"{directory}: fusion_feature array {key!r} is missing")
        actual = arrays[key].shape
        if len(actual) != len(shape) or any(want is not None and want != got for want, got in zip(shape, actual)):
            raise ValueError(f"{directory}: fusion_feature array {key!r} has shape {actual}, "
                             f"the sources need {shape}")
    return {key: arrays[key] for key in expected}
