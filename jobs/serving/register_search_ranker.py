"""register_search_ranker: log tonight's search ranker as an MLflow pyfunc, register it, and gate it.

The registered model (config mlflow.registered_search_model) is jobs/serving/search_model.py
over a bundle of the night's models, items table, serving.json (the fusion variant whose
scores the ranker's features hold) and models/search. Its gate is the recommender's
(register_and_gate), on search quality: the challenger and the current champion both answer
tonight's test-day searches through their registered pyfunc (the same requests: the query
and the searcher's raw history before it), and the challenger takes alias `champion` only
when its mean NDCG@10 is strictly higher; otherwise it gets `challenger` for a person to
review. A retry registers nothing twice (the same fingerprint of the night's files).

A night that trained no search ranker (train_search_ranker skipped it: no searches)
registers nothing and says why.
"""

from __future__ import annotations

import json
import os

import numpy as np

from jobs.common import schema
from jobs.common.night import Night

GATE_METRIC = "NDCG@10"
GATE_K = 50  # results asked of each model: Recall@50 needs the top 50


def run(night: Night) -> dict:
    from mlflow import MlflowClient

    from jobs.common.lake import partition_path
    from jobs.common.tracking import configure_mlflow
    from jobs.evaluation.metrics import mlflow_metric_key
    from jobs.search.engine import CONFIG_FILE
    from jobs.serving.register_and_gate import (gate_version, log_bundle, night_fingerprint, record_gate,
                                                registered_once)
    from jobs.serving.search_model import SearchRankerModel, search_signature

    config, ds = night.config, night.ds
    search_dir = partition_path(config, schema.MODEL_SEARCH, ds)
    if not os.path.isfile(os.path.join(search_dir, CONFIG_FILE)):
        reason = f"train_search_ranker saved no ranker for {ds} (see reports/search/dt={ds})"
        print(f"register_search_ranker {ds}: nothing to register: {reason}")
        return {"skipped": reason}
    with open(os.path.join(search_dir, CONFIG_FILE)) as handle:
        variant = json.load(handle)["recommender"]
    requests, relevances = gate_requests(config, ds)

    name = config["mlflow"]["registered_search_model"]
    configure_mlflow(config)
    client = MlflowClient()
    fingerprint = night_fingerprint(config, ds, variant, {"search": search_dir})

    def log_ranker() -> str:
        return log_bundle(config, ds, variant, requests.head(2), python_model=SearchRankerModel(),
                          signature=search_signature(GATE_K), extra_artifacts={"search": search_dir})

    with registered_once(client, config, "register_search_ranker", ds, name, variant, fingerprint,
                         log_ranker) as (run, version):
        challenger = score_search_model(f"models:/{name}/{version}", requests, relevances)
        gate = gate_version(client, name, version, ds, GATE_METRIC, challenger,
                            lambda uri: score_search_model(uri, requests, relevances))
        for key, value in challenger.items():
            client.set_model_version_tag(name, version, mlflow_metric_key("test_searches", key), f"{value:.4f}")
        description = (f"Search ranker trained for {ds} (features from {variant}). Test-day searches "
                       f"{GATE_METRIC}: {challenger[GATE_METRIC]:.2f}.")
        if gate.champion is not None:
            description += f" Champion v{gate.champion_version} on the same searches: {gate.champion[GATE_METRIC]:.2f}."
        if gate.older_night:
            description += f" Not promoted: trained for a night older than the champion's ({gate.champion_ds})."
        client.update_model_version(name, version, description=description)
        record_gate(version, gate.alias, variant, challenger, gate.champion)
    print(f"register_search_ranker {ds}: " + gate.decision(f"v{version}", challenger))
    return {"model_name": name, "version": int(version), "alias": gate.alias, "challenger": challenger,
            "champion": gate.champion, "champion_version": gate.champion_version, "run_id": run.info.run_id}


def gate_requests(config: dict, ds: str):
    """(request rows as the pyfunc reads them, {raw item id: grade} per row) of the test day's searches."""
    import pandas as pd

    from jobs.common.features import histories_before, load_features
    from jobs.search.train_search_ranker import search_log
    from jobs.serving.register_and_gate import raw_histories, raw_timestamps
    from jobs.serving.search_model import PROFILE_MAX_EVENTS

    features = load_features(config, ds)
    searches, interactions = search_log(config, features.meta["test_dates"])
    if searches.empty:
        raise ValueError(f"no test-day search for {ds} although a search ranker was saved: was the lake changed?")
    before = histories_before(features.sequences, searches[schema.USER_ID], searches["time"], PROFILE_MAX_EVENTS)
    item_ids = np.empty(int(features.meta["n_items"]) + 1, dtype=object)
    item_ids[features.items[schema.ITEM_IDX].to_numpy()] = features.items[schema.ITEM_ID].to_numpy()
    histories, types = raw_histories(before, item_ids)
    requests = pd.DataFrame({"query": searches[schema.QUERY].astype(str).tolist(), "history": histories,
                             "event_types": types, "timestamps": raw_timestamps(before)})
    grades = {search: dict(zip(group[schema.ITEM_ID], group["grade"]))
              for search, group in interactions.groupby("search_id")}
    return requests, [grades[search] for search in searches["search_id"]]


def score_search_model(model_uri: str, requests, relevances: list[dict]) -> dict:
    """Mean NDCG@10, MRR@10 and Recall@50 (in %) of a registered search model on the requests."""
    import mlflow

    from jobs.search.quality import METRICS, search_quality

    answers = mlflow.pyfunc.load_model(model_uri).predict(requests, params={"k": GATE_K})
    per_search = [search_quality(list(ids), np.asarray(scores, dtype=np.float64), relevance) if len(ids)
                  else dict.fromkeys(METRICS, 0.0)
                  for ids, scores, relevance in zip(answers["item_ids"], answers["scores"], relevances)]
    return {name: round(100.0 * float(np.mean([quality[name] for quality in per_search])), 4) for name in METRICS}
