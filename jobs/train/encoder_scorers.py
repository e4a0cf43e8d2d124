"""The scoring interface shared by the encoders, evaluation and fusion.

Every model answers the same question on the same input: for histories `items`/`types`
and optionally `gaps` (int32 [n, L] from features.make_examples; gaps None = unknown, read
as bucket 0), a user vector per row and a score per catalog item.
Scores are plain numpy: user vectors times the item vectors, with column
0 (padding) at -inf so it can never be recommended; for a user encoder with a repeat head
(RepeatExploreScorer), the log-probabilities of its repeat-explore mixture.

Everything is computed in batches of `batch_size` histories, so scoring 100k examples
never holds more than one [batch_size, n_items + 1] block besides the result.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Iterator

import numpy as np

from jobs.common.config import default_of

USER_ENCODER = "user_encoder"
ITEM_ENCODER = "item_encoder"
MODEL_FILE = "model.keras"
ITEM_EMBEDDINGS_FILE = "item_embeddings.npy"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
# Weight of an event one step further in the past, for the item encoder's user vector.
DEFAULT_RECENCY_DECAY = default_of("item_encoder.recency_decay")  # also for folders saved before it was stored
DEFAULT_BATCH_SIZE = 4096

# (items, types, gaps) -> user vectors; gaps is always an array here (zeros when unknown).
HistoryEncoder = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class EmbeddingScorer:
    """Scores = user_vectors(history) @ item_vectors.T, column 0 = -inf."""

    def __init__(self, name: str, item_vectors: np.ndarray, encode_histories: HistoryEncoder,
                 batch_size: int = DEFAULT_BATCH_SIZE):
        self.name = name
        self.item_vectors = np.asarray(item_vectors, dtype=np.float32)
        self._encode_histories = encode_histories
        self.batch_size = batch_size

    @property
    def n_items(self) -> int:
        return self.item_vectors.shape[0] - 1

    def user_vectors(self, items: np.ndarray, types: np.ndarray, gaps: np.ndarray | None = None) -> np.ndarray:
        """float32 [n, d], one vector per history row."""
        blocks = [self._encode_batch(*batch) for batch in self._batches(items, types, gaps)]
        return np.concatenate(blocks) if blocks else np.zeros((0, self.item_vectors.shape[1]), dtype=np.float32)

    def score_batches(self, items: np.ndarray, types: np.ndarray,
                      gaps: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """Yield float32 [batch, n_items + 1] score blocks, in row order."""
        for batch in self._batches(items, types, gaps):
            scores = self._encode_batch(*batch) @ self.item_vectors.T
            scores[:, 0] = -np.inf
            yield scores

    def score(self, items: np.ndarray, types: np.ndarray, gaps: np.ndarray | None = None) -> np.ndarray:
        """float32 [n, n_items + 1] = user_vectors @ item_vectors.T, column 0 = -inf."""
        blocks = list(self.score_batches(items, types, gaps))
        return np.concatenate(blocks) if blocks else np.zeros((0, self.n_items + 1), dtype=np.float32)

    def _batches(self, items: np.ndarray, types: np.ndarray,
                 gaps: np.ndarray | None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        gaps = np.zeros_like(items, dtype=np.int32) if gaps is None else np.asarray(gaps)
        if items.ndim != 2 or items.shape != types.shape or items.shape != gaps.shape:
            raise ValueError(f"items, types and gaps must be [n, L] arrays of the same shape, "
                             f"got {items.shape}, {types.shape} and {gaps.shape}")
        for start in range(0, len(items), self.batch_size):
            rows = slice(start, start + self.batch_size)
            yield items[rows], types[rows], gaps[rows]

    def _encode_batch(self, items: np.ndarray, types: np.ndarray, gaps: np.ndarray) -> np.ndarray:
        return np.asarray(self._encode_histories(items, types, gaps), dtype=np.float32)


class RepeatExploreScorer(EmbeddingScorer):
    """Scores of an encoder with a repeat head: log p(i) of the repeat-explore mixture.

    encode_histories returns (user vectors [n, d], repeat weights [n, L]); the explore
    mode's logits are user vectors @ item vectors as in EmbeddingScorer, and the repeat
    weights add the probability of the history's own items (jobs/train/models/repeat_head.py).
    user_vectors() are the explore mode's vectors alone (for the feature-level fusion).
    """

    def score_batches(self, items: np.ndarray, types: np.ndarray,
                      gaps: np.ndarray | None = None) -> Iterator[np.ndarray]:
        from jobs.train.models.repeat_head import repeat_explore_log_probabilities

        for batch in self._batches(items, types, gaps):
            user_vectors, repeat_weights = self._encode_histories(*batch)
            logits = np.asarray(user_vectors, dtype=np.float32) @ self.item_vectors.T
            yield repeat_explore_log_probabilities(logits, np.asarray(repeat_weights), batch[0])

    def _encode_batch(self, items: np.ndarray, types: np.ndarray, gaps: np.ndarray) -> np.ndarray:
        return np.asarray(self._encode_histories(items, types, gaps)[0], dtype=np.float32)


def recall_at_k(scorer: EmbeddingScorer, items: np.ndarray, types: np.ndarray, targets: np.ndarray, k: int,
                gaps: np.ndarray | None = None) -> float:
    """Share of examples whose target ranks in the catalog's top k, ranked exactly as
    jobs.evaluation.metrics ranks every model (conservative ties), so training curves and reports agree."""
    from types import SimpleNamespace

    from jobs.evaluation.metrics import scorer_ranks

    if len(targets) == 0:
        raise ValueError("recall_at_k needs at least one example")
    examples = SimpleNamespace(items=items, types=types, targets=np.asarray(targets), gaps=gaps)
    return float(np.mean(scorer_ranks(scorer, examples, batch_size=scorer.batch_size) <= k))


# --- The user encoder (GRU, SASRec or NARM) ---------------------------------------------------

def load_user_encoder_scorer(model_dir: str) -> EmbeddingScorer:
    """Scorer of models/user_encoder/dt=<ds>: the encoder's user vector against the tied item table."""
    import keras

    import jobs.train.models.repeat_head  # noqa: F401  registers the repeat head's layers, likewise
    import jobs.train.models.sasrec  # noqa: F401  registers the SASRec layers, so its saved models can be loaded
    import jobs.train.models.narm  # noqa: F401  registers NARM's attention, likewise

    encoder = keras.saving.load_model(_model_file(model_dir, MODEL_FILE), compile=False)
    return user_encoder_scorer(encoder, np.load(_model_file(model_dir, ITEM_EMBEDDINGS_FILE)))


def user_encoder_scorer(encoder, item_table: np.ndarray) -> EmbeddingScorer:
    """Scorer around an in-memory Keras encoder (also used per epoch during training)."""

    from jobs.train.models.repeat_head import has_repeat_head

    repeat_head = has_repeat_head(encoder)  # once, not per request

    def encode_histories(items: np.ndarray, types: np.ndarray, gaps: np.ndarray):
        # predict_on_batch runs Keras' compiled predict step: on one history it takes about 1 ms
        # where calling the model eagerly takes about 50 (a served search request scores one).
        outputs = encoder.predict_on_batch(encoder_inputs(encoder, items, types, gaps))
        return tuple(np.asarray(output) for output in outputs) if repeat_head else np.asarray(outputs)

    scorer_class = RepeatExploreScorer if repeat_head else EmbeddingScorer
    return scorer_class(USER_ENCODER, item_table, encode_histories)


def encoder_inputs(encoder, items: np.ndarray, types: np.ndarray, gaps: np.ndarray | None) -> list:
    """The arrays a user encoder takes: [items, types, gaps], or [items, types] for an encoder
    built without the time-gap input (time_gaps: false, or saved before it existed)."""
    if len(encoder.inputs) == 2:
        return [items, types]
    return [items, types, np.zeros_like(items, dtype=np.int32) if gaps is None else gaps]


# --- The attribute item encoder ---------------------------------------------------------

def load_item_encoder_scorer(model_dir: str) -> EmbeddingScorer:
    """Scorer of models/item_encoder/dt=<ds>: cosine of the recency-weighted history mean."""
    item_vectors = np.load(_model_file(model_dir, ITEM_EMBEDDINGS_FILE))
    with open(_model_file(model_dir, CONFIG_FILE)) as handle:
        recency_decay = json.load(handle).get("recency_decay", DEFAULT_RECENCY_DECAY)
    return item_encoder_scorer(item_vectors, recency_decay)


def item_encoder_scorer(item_vectors: np.ndarray, recency_decay: float = DEFAULT_RECENCY_DECAY) -> EmbeddingScorer:
    """Scorer over unit item vectors: user vector = normalised recency-weighted mean of the history.

    The item encoder has no sequence model of its own; a user is where their recent items
    are, the last one counting most (weight decay**steps_back; padding and out-of-catalog
    items weigh 0). Both sides have unit length, so scores are cosines.
    """
    unit_items = _unit_rows(np.asarray(item_vectors, dtype=np.float32))

    def encode_histories(items: np.ndarray, types: np.ndarray, gaps: np.ndarray) -> np.ndarray:
        steps_back = np.arange(items.shape[1] - 1, -1, -1)
        weights = (recency_decay ** steps_back)[None, :] * (items != 0)
        weighted_mean = np.einsum("nl,nld->nd", weights.astype(np.float32), unit_items[items])
        return _unit_rows(weighted_mean)

    return EmbeddingScorer(ITEM_ENCODER, unit_items, encode_histories)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1; all-zero rows (padding, empty history) stay zero."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def _model_file(model_dir: str, name: str) -> str:
    path = os.path.join(model_dir, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path} does not exist: has the encoder been trained for this date?")
    return path
