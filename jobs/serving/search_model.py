"""The night's search ranker as an MLflow pyfunc model (jobs/search/engine.py behind MLflow's interface).

Input: one row per request with `query` (text), optionally the person's hashed `user_id` (the
lake's key, as in recommendations/dt=<ds>/) and recent `history` (raw item ids, oldest first)
with `event_types` and `timestamps` as for the fused recommender (jobs/serving/fused_model.py).
A known user id brings the user's events stored by the night (jobs/serving/stored_histories.py),
before the request's own; no history and no known id is a new visitor. Output: `item_ids`,
`scores` and `retrievers` (per result "lexical", "semantic" or "both": which retriever found
it) of the top k (param `k`).

Artifacts: the fused recommender's bundle (the night's models, items table and serving.json,
whose variant is the fusion the ranker's features were computed with) plus `search`, the
night's models/search folder (with the stored user histories).
"""

from __future__ import annotations

import pandas as pd

try:  # mlflow is only needed to log/serve the model
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover
    PythonModel = object

from jobs.search.engine import SearchEngine
from jobs.serving.fused_model import BUNDLE_PARTS, Recommender, load_bundle
from jobs.serving.stored_histories import StoredHistories

SEARCH_BUNDLE_PARTS = (*BUNDLE_PARTS, "search")
# Events of a request's history that the profile features read (the stage reads up to the
# same number of a searcher's latest events).
PROFILE_MAX_EVENTS = 500
# The user encoder answers a request twice, for its own features and inside the served
# fusion: remembered, it is scored once. The largest answer remembered (one request's is
# 400 KB at 100,000 items; a large batch of requests is scored twice rather than held).
REQUEST_MEMO_BYTES = 64 * 2**20


def load_search(bundle: dict[str, str]) -> tuple[SearchEngine, Recommender, StoredHistories]:
    """(the engine, a Recommender whose encode() turns raw histories into the night's indices,
    the users' stored histories)."""
    settings, scorers, item_ids = load_bundle(bundle, REQUEST_MEMO_BYTES)
    variant = settings["variant"]
    engine = SearchEngine.load(bundle["search"], bundle["item_encoder"],
                               {"user_encoder": scorers["user_encoder"], variant: scorers[variant]})
    if engine.settings["recommender"] != variant:
        raise ValueError(f"the search ranker's features came from {engine.settings['recommender']}, but the "
                         f"bundle serves {variant}: bundle the models of the search ranker's own night")
    return (engine, Recommender(scorers[variant], item_ids, PROFILE_MAX_EVENTS),
            StoredHistories.load(bundle["search"], PROFILE_MAX_EVENTS))


class SearchRankerModel(PythonModel):
    def load_context(self, context):
        bundle = {part: context.artifacts[part] for part in SEARCH_BUNDLE_PARTS}
        self.engine, self.encoder, self.stored = load_search(bundle)

    def predict(self, context, model_input: pd.DataFrame, params=None):
        k = int((params or {}).get("k", 20))
        histories = [list(history) if history is not None else [] for history in model_input["history"]] \
            if "history" in model_input else [[] for _ in range(len(model_input))]
        event_types = list(model_input["event_types"]) if "event_types" in model_input else None
        timestamps = list(model_input["timestamps"]) if "timestamps" in model_input else None
        if "user_id" in model_input:
            histories, event_types, timestamps = self.stored.merged(list(model_input["user_id"]), histories,
                                                                    event_types, timestamps)
        encoded = self.encoder.encode(histories, event_types, timestamps)
        return pd.DataFrame(self.engine.search([str(query) for query in model_input["query"]], encoded, k))


def search_signature(k: int):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, ParamSchema, ParamSpec, Schema

    strings = Array(DataType.string)
    inputs = Schema([ColSpec(DataType.string, "query"), ColSpec(DataType.string, "user_id", required=False),
                     ColSpec(strings, "history", required=False),
                     ColSpec(strings, "event_types", required=False),
                     ColSpec(Array(DataType.long), "timestamps", required=False)])
    outputs = Schema([ColSpec(strings, "item_ids"), ColSpec(Array(DataType.double), "scores"),
                      ColSpec(strings, "retrievers")])
    return ModelSignature(inputs=inputs, outputs=outputs, params=ParamSchema([ParamSpec("k", DataType.long, k)]))

