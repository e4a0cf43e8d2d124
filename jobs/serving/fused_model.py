"""The fused recommender as an MLflow pyfunc model: what is registered, gated and served.

Input: one row per request with `history` (item ids, oldest first), optionally
`event_types` (one per history item; default "view"), `timestamps` (epoch seconds as
integers, one per history item; they give the models the time gaps between events) and
`exclude` (item ids never to recommend, e.g. already bought). A request whose timestamps
are missing (None) or not one per history item is served without gaps (all unknown), not
refused; a float or a null inside the list is refused by MLflow's own schema check, before
this code runs. Output: `item_ids` and `scores` of the top k (param `k`).
Ids are the shop's raw ids, so champions trained on different nights (different
vocabularies) are compared and served through the same interface.

The bundle carries every base model and every fusion level; `serving.json` names the
variant that answers. Loading it needs only the jobs modules this one imports, which are
logged as code with the model (register_and_gate.log_bundle).
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pandas as pd

try:  # mlflow is only needed to log/serve the model, not to use Recommender directly
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover
    PythonModel = object

from jobs.common import schema
from jobs.serving.night_models import MODEL_PARTS, load_all_scorers

TYPE_NAMES = {index: name for name, index in schema.EVENT_TYPE_INDEX.items()}
VIEW_IDX = schema.EVENT_TYPE_INDEX[schema.VIEW]  # the type assumed when a request gives none
# The bundle's artifacts: a night's models, its items table and serving.json (the variant).
BUNDLE_PARTS = (*MODEL_PARTS, "items", "serving")

logger = logging.getLogger(__name__)


class Recommender:
    """Scores raw-id histories with one scorer; framework-free at call time.

    item_ids[i] is the raw id of item index i (index 0, padding, is never recommended).
    """

    def __init__(self, scorer, item_ids, max_seq_len: int):
        self.scorer = scorer
        self.max_seq_len = max_seq_len
        self.item_ids = np.asarray(item_ids, dtype=object)
        self.index_of = {item_id: idx for idx, item_id in enumerate(self.item_ids) if idx > 0}

    @classmethod
    def from_bundle(cls, bundle: dict[str, str]) -> "Recommender":
        settings, scorers, item_ids = load_bundle(bundle)
        return cls(scorers[settings["variant"]], item_ids, settings["max_seq_len"])

    def encode(self, histories, event_types=None, timestamps=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw histories → left-padded (items, types, gaps) arrays; items unknown to this model are skipped.

        timestamps: per history, its events' epoch seconds (or None). Gap buckets are taken
        over the whole raw history before unknown items are skipped, so a kept event's gap is
        to the user's real previous event, as in training (features.make_examples). An entry
        that is None or not one time per event gives its history unknown gaps (bucket 0) and
        a warning, never an error: a request is still served, only without time gaps.
        """
        n, length = len(histories), self.max_seq_len
        if timestamps is not None and len(timestamps) != n:
            raise ValueError(f"timestamps must hold one entry (a list or None) per history: {len(timestamps)} for {n}")
        items, types, gaps = (np.zeros((n, length), dtype=np.int32) for _ in range(3))
        unusable = 0  # histories whose timestamps were given but cannot be used
        for row, history in enumerate(histories):
            names = event_types[row] if event_types is not None and event_types[row] is not None else None
            names = names if names is not None else [schema.VIEW] * len(history)
            stamps = None if timestamps is None else timestamps[row]
            row_gaps = None if stamps is None else history_gap_buckets(history, stamps)
            if row_gaps is None:  # no timestamps: every gap unknown (bucket 0), as a model reads gaps=None
                unusable += stamps is not None
                row_gaps = np.zeros(len(history), dtype=np.int32)
            known = [(self.index_of[item], schema.EVENT_TYPE_INDEX.get(name, VIEW_IDX), gap)
                     for item, name, gap in zip(history, names, row_gaps) if item in self.index_of][-length:]
            if known:
                kept = slice(length - len(known), length)
                items[row, kept], types[row, kept], gaps[row, kept] = zip(*known)
        if unusable:
            logger.warning("%d of %d histories came with timestamps that are not one epoch second per event; "
                           "they are scored without time gaps", unusable, n)
        return items, types, gaps

    def recommend(self, histories, k: int = 20, event_types=None, exclude=None, batch_size: int = 1024,
                  timestamps=None):
        """Top-k (item_ids, scores) per history; excluded items never appear."""
        from jobs.evaluation.metrics import top_k

        items, types, gaps = self.encode(histories, event_types, timestamps)
        all_ids, all_scores = [], []
        for start in range(0, len(histories), batch_size):
            rows = slice(start, start + batch_size)
            scores = np.array(self.scorer.score(items[rows], types[rows], gaps[rows]), dtype=np.float64)
            scores[:, 0] = -np.inf
            if exclude is not None:
                for offset, excluded in enumerate(exclude[start:start + batch_size]):
                    columns = [self.index_of[item] for item in (excluded if excluded is not None else ())
                               if item in self.index_of]
                    scores[offset, columns] = -np.inf
            best = top_k(scores, k)
            for row, columns in enumerate(best):
                keep = [c for c in columns if np.isfinite(scores[row, c])]
                all_ids.append([self.item_ids[c] for c in keep])
                all_scores.append([float(scores[row, c]) for c in keep])
        return all_ids, all_scores


class FusedRecommenderModel(PythonModel):
    """The pyfunc wrapper around Recommender."""

    def load_context(self, context):
        self.recommender = Recommender.from_bundle({part: context.artifacts[part] for part in BUNDLE_PARTS})

    def predict(self, context, model_input: pd.DataFrame, params=None):
        k = int((params or {}).get("k", 20))
        event_types = list(model_input["event_types"]) if "event_types" in model_input else None
        exclude = list(model_input["exclude"]) if "exclude" in model_input else None
        timestamps = list(model_input["timestamps"]) if "timestamps" in model_input else None
        ids, scores = self.recommender.recommend(list(model_input["history"]), k, event_types, exclude,
                                                 timestamps=timestamps)
        return pd.DataFrame({"item_ids": ids, "scores": scores})


def load_bundle(bundle: dict[str, str], memo_bytes: int = 0) -> tuple[dict, dict, np.ndarray]:
    """(serving.json's settings, every scorer of the night by name, raw item id per item index).

    memo_bytes: as for jobs.serving.night_models.load_all_scorers."""
    with open(bundle["serving"]) as handle:
        settings = json.load(handle)
    items = pd.read_parquet(bundle["items"]).sort_values(schema.ITEM_IDX)
    n_items = int(items[schema.ITEM_IDX].max())
    scorers = load_all_scorers({part: bundle[part] for part in MODEL_PARTS}, items, n_items, memo_bytes)
    item_ids = np.empty(n_items + 1, dtype=object)
    item_ids[items[schema.ITEM_IDX].to_numpy()] = items[schema.ITEM_ID].to_numpy()
    return settings, scorers, item_ids


def history_gap_buckets(history, timestamps) -> np.ndarray | None:
    """int32 [len(history)]: the gap bucket of each event of one raw history (0 for the first);
    None when timestamps are not one per event (wrong length, not a list, unreadable values)."""
    from jobs.common.features import event_gap_buckets

    try:
        if len(timestamps) != len(history):
            return None
        return event_gap_buckets(timestamps)
    except (TypeError, ValueError):  # len() of a number, or values pandas cannot even coerce
        return None


def model_signature(k: int):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, ParamSchema, ParamSpec, Schema

    strings = Array(DataType.string)
    # Epoch seconds as integers, like the lake's timestamps; MLflow refuses floats for it.
    inputs = Schema([ColSpec(strings, "history"), ColSpec(strings, "event_types", required=False),
                     ColSpec(Array(DataType.long), "timestamps", required=False),
                     ColSpec(strings, "exclude", required=False)])
    outputs = Schema([ColSpec(strings, "item_ids"), ColSpec(Array(DataType.double), "scores")])
    return ModelSignature(inputs=inputs, outputs=outputs, params=ParamSchema([ParamSpec("k", DataType.long, k)]))


def write_serving_settings(directory: str, variant: str, max_seq_len: int) -> str:
    path = os.path.join(directory, "serving.json")
    with open(path, "w") as handle:
        json.dump({"variant": variant, "max_seq_len": max_seq_len}, handle)
    return path
