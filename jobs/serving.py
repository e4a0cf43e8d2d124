"""The fused recommender as an MLflow pyfunc model: what is registered, gated and served.

Input: one row per request with `history` (item ids, oldest first), optionally
`event_types` (one per history item; default "view") and `exclude` (item ids never to
recommend, e.g. already bought). Output: `item_ids` and `scores` of the top k (param `k`).
Ids are the shop's raw ids, so champions trained on different nights (different
vocabularies) are compared and served through the same interface.

The bundle carries every base model and every fusion level; `serving.json` names the
variant that answers. Loading it needs only this package (logged as code with the model).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

try:  # mlflow is only needed to log/serve the model, not to use Recommender directly
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover
    PythonModel = object

from jobs import schema

TYPE_NAMES = {index: name for name, index in schema.EVENT_TYPE_INDEX.items()}
VIEW_IDX = schema.EVENT_TYPE_INDEX[schema.VIEW]  # the type assumed when a request gives none
BUNDLE_PARTS = ("user_encoder", "item_encoder", "baselines", "fusion", "items", "serving")
MODEL_PARTS = ("user_encoder", "item_encoder", "baselines", "fusion")  # as fuse.night_model_dirs


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
        from jobs.fuse import load_all_scorers

        with open(bundle["serving"]) as handle:
            settings = json.load(handle)
        items = pd.read_parquet(bundle["items"]).sort_values(schema.ITEM_IDX)
        n_items = int(items[schema.ITEM_IDX].max())
        scorers = load_all_scorers({part: bundle[part] for part in MODEL_PARTS}, items, n_items)
        item_ids = np.empty(n_items + 1, dtype=object)
        item_ids[items[schema.ITEM_IDX].to_numpy()] = items[schema.ITEM_ID].to_numpy()
        return cls(scorers[settings["variant"]], item_ids, settings["max_seq_len"])

    def encode(self, histories, event_types=None) -> tuple[np.ndarray, np.ndarray]:
        """Raw histories → left-padded (items, types) arrays; items unknown to this model are skipped."""
        n, length = len(histories), self.max_seq_len
        items = np.zeros((n, length), dtype=np.int32)
        types = np.zeros((n, length), dtype=np.int32)
        for row, history in enumerate(histories):
            names = event_types[row] if event_types is not None and event_types[row] is not None else None
            names = names if names is not None else [schema.VIEW] * len(history)
            known = [(self.index_of[item], schema.EVENT_TYPE_INDEX.get(name, VIEW_IDX))
                     for item, name in zip(history, names) if item in self.index_of][-length:]
            if known:
                items[row, length - len(known):], types[row, length - len(known):] = zip(*known)
        return items, types

    def recommend(self, histories, k: int = 20, event_types=None, exclude=None, batch_size: int = 1024):
        """Top-k (item_ids, scores) per history; excluded items never appear."""
        from jobs.evaluation import top_k

        items, types = self.encode(histories, event_types)
        all_ids, all_scores = [], []
        for start in range(0, len(histories), batch_size):
            scores = np.array(self.scorer.score(items[start:start + batch_size], types[start:start + batch_size]),
                              dtype=np.float64)
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
        ids, scores = self.recommender.recommend(list(model_input["history"]), k, event_types, exclude)
        return pd.DataFrame({"item_ids": ids, "scores": scores})


def model_signature(k: int):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, ParamSchema, ParamSpec, Schema

    strings = Array(DataType.string)
    inputs = Schema([ColSpec(strings, "history"), ColSpec(strings, "event_types", required=False),
                     ColSpec(strings, "exclude", required=False)])
    outputs = Schema([ColSpec(strings, "item_ids"), ColSpec(Array(DataType.double), "scores")])
    return ModelSignature(inputs=inputs, outputs=outputs, params=ParamSchema([ParamSpec("k", DataType.long, k)]))


def write_serving_settings(directory: str, variant: str, max_seq_len: int) -> str:
    path = os.path.join(directory, "serving.json")
    with open(path, "w") as handle:
        json.dump({"variant": variant, "max_seq_len": max_seq_len}, handle)
    return path
