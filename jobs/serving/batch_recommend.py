"""batch_recommend: tonight's top-K for every active user, from the registered champion.

Active users are those with events on the logical date. Each gets top_k items from the
model that holds alias `champion` after tonight's gate (tonight's model only if it won; a
backfilled night older than the champion's uses its own registered model instead),
with every item the user bought in the window excluded. Written as one Parquet partition
recommendations/dt=<ds>/ (user_id, rank, item_id, score, model_version), replaced
atomically on a re-run.

The night also writes similar_items/dt=<ds>/ (jobs/serving/similar_items.py): the top-N
similar catalog items per catalog item from tonight's item encoder and Item-KNN, and
search_results/dt=<ds>/ (jobs/serving/search_lists.py): the search champion's top results of
the window's most frequent queries per user segment. publish_serving serves both beside the
recommendations.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from jobs.common import schema
from jobs.common.lake import partition_path, replace_partition
from jobs.common.night import Night
from jobs.serving.register_and_gate import serving_version
from jobs.serving.search_lists import write_search_results
from jobs.serving.similar_items import write_similar_items

PURCHASE_IDX = schema.EVENT_TYPE_INDEX[schema.PURCHASE]
REQUEST_COLUMNS = ("history", "event_types", "timestamps", "exclude")  # what the pyfunc model reads


def active_user_requests(sequences: pd.DataFrame, items: pd.DataFrame, max_seq_len: int) -> pd.DataFrame:
    """One request per user active on the test day: recent history (items, types, epoch seconds)
    and bought items, raw ids."""
    id_of = dict(zip(items[schema.ITEM_IDX], items[schema.ITEM_ID]))
    type_name = {index: name for name, index in schema.EVENT_TYPE_INDEX.items()}
    rows = []
    for user in sequences.itertuples(index=False):
        splits = np.asarray(getattr(user, schema.SPLIT))
        if not (splits == schema.SPLIT_TEST).any():
            continue
        item_idx = np.asarray(getattr(user, schema.ITEM_IDX))
        type_idx = np.asarray(getattr(user, schema.EVENT_TYPE_IDX))
        seconds = np.asarray(getattr(user, schema.TIMESTAMPS), dtype=np.int64)
        bought = sorted({id_of[i] for i in item_idx[type_idx == PURCHASE_IDX]})
        # One event more than the model reads: it gives the oldest event read its time gap, as
        # in training (the model keeps the last max_seq_len known events).
        window = slice(-(max_seq_len + 1), None)
        rows.append({
            schema.USER_ID: getattr(user, schema.USER_ID),
            "history": [id_of[i] for i in item_idx[window]],
            "event_types": [type_name[t] for t in type_idx[window]],
            "timestamps": [int(t) for t in seconds[window]],  # the model's time gaps come from these
            "exclude": bought,
        })
    return pd.DataFrame(rows, columns=[schema.USER_ID, *REQUEST_COLUMNS])


def explode_recommendations(requests: pd.DataFrame, predictions: pd.DataFrame, model_version: str) -> pd.DataFrame:
    frames = []
    for user_id, ids, scores in zip(requests[schema.USER_ID], predictions["item_ids"], predictions["scores"]):
        frames.append(pd.DataFrame({schema.USER_ID: user_id, "rank": np.arange(1, len(ids) + 1, dtype=np.int32),
                                    schema.ITEM_ID: list(ids), "score": np.asarray(scores, dtype=np.float64)}))
    result = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {schema.USER_ID: [], "rank": [], schema.ITEM_ID: [], "score": []})
    result["model_version"] = model_version
    return result


def run(night: Night) -> dict:
    """Write tonight's top-K per active user from the champion."""
    import mlflow
    from mlflow import MlflowClient

    from jobs.common.features import load_features
    from jobs.common.tracking import configure_mlflow
    config, ds = night.config, night.ds

    configure_mlflow(config)
    name = config["mlflow"]["registered_model"]
    chosen = serving_version(MlflowClient(), name, ds)
    if chosen is None:
        raise LookupError(f"batch_recommend {ds}: {name} has no champion (and no version registered for {ds}) "
                          f"in the registry at {mlflow.get_registry_uri()}: has register_and_gate run?")
    version, chosen_as = chosen
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    features = load_features(config, ds)
    requests = active_user_requests(features.sequences, features.items, config["max_seq_len"])
    predictions = model.predict(requests[list(REQUEST_COLUMNS)], params={"k": config["top_k"]})
    table = explode_recommendations(requests, predictions, str(version))
    output = partition_path(config, schema.RECOMMENDATIONS, ds)
    with replace_partition(output) as staging:
        table.to_parquet(os.path.join(staging, "part-00000.parquet"), index=False)
    print(f"batch_recommend {ds}: top-{config['top_k']} for {len(requests)} active users "
          f"from {name} v{version} ({chosen_as}) → {output}")
    similar = write_similar_items(config, ds, features.items)
    print(f"batch_recommend {ds}: {similar['similar_items_rows']} similar items for "
          f"{similar['similar_items_items']} catalog items → {similar['similar_items_path']}")
    searched = write_search_results(config, ds, features)
    print(f"batch_recommend {ds}: {searched['search_results_lists']} head-query search lists "
          f"({searched['search_results_note']}) → {searched['search_results_path']}")
    return {"path": output, "users": int(len(requests)), "rows": int(len(table)), "model_version": int(version),
            **similar, **searched}
