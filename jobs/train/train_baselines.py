"""train_baselines: fit S-POP, Item-KNN and ALS on the train days; they join the fusion as members.

Output: models/baselines/dt=<ds>/ with each baseline's arrays (session_popularity.npy,
item_knn.npz + .json, als_item_factors.npy + .json) and config.json. POP needs no file: it
is the items table's train-day popularity.

The baselines are yardsticks (evaluate reports them beside the encoders) and fusion members:
a cheap model that is right where the encoders are weak -- S-POP on repeat visits, Item-KNN
on the long tail the encoders see too rarely -- is exactly what fusion can exploit.
"""

from __future__ import annotations

import json
import os

from jobs.train.baselines import (SAVED_BASELINES, ALSScorer, ItemKNNScorer, SessionPopularityScorer,
                                  session_sequences, training_sequences)
from jobs.common.schema import MODEL_BASELINES, SPLIT_TRAIN, SPLIT_VALID
from jobs.common.night import Night

STAGE = "train_baselines"
SECTION = "baselines"
BASELINE_NAMES = tuple(cls.name for cls in SAVED_BASELINES)
CONFIG_FILE = "config.json"


def run(night: Night) -> dict:
    """Fit and save the baselines of night ds; returns {"path": models/baselines/dt=<ds>}."""
    import mlflow

    from jobs.evaluation.metrics import evaluate_scorer, mlflow_metric_key
    from jobs.common.features import load_features, make_examples
    from jobs.common.lake import partition_path, replace_partition
    from jobs.common.spark_session import get_spark
    from jobs.common.tracking import stage_run
    config, ds = night.config, night.ds

    features = load_features(config, ds)
    settings = config[SECTION]
    valid = make_examples(features.sequences, SPLIT_VALID, config["max_seq_len"])
    model_dir = partition_path(config, MODEL_BASELINES, ds)
    with stage_run(config, STAGE, ds):
        scorers = fit_baselines(features.sequences, features.n_items, settings,
                                spark=get_spark(config), seed=config["seed"])
        with replace_partition(model_dir) as staging:
            for scorer in scorers.values():
                scorer.save(staging)
            with open(os.path.join(staging, CONFIG_FILE), "w") as handle:
                json.dump({**settings, "n_items": features.n_items, "ds": ds}, handle, indent=2, sort_keys=True)
        metrics = {}
        for name, scorer in scorers.items():
            if len(valid):
                metrics.update({mlflow_metric_key(f"valid.{name}", metric): value
                                for metric, value in evaluate_scorer(scorer, valid).items()})
        mlflow.log_params({"session_gap_s": settings["session_gap_s"], "n_items": features.n_items})
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(model_dir, artifact_path=SECTION)
    return {"path": model_dir}


def fit_baselines(sequences_df, n_items: int, settings: dict, spark, seed: int = 0) -> dict:
    """{name: fitted scorer} for S-POP (user sequences), Item-KNN and ALS (sessions) on the train days."""
    sessions = session_sequences(sequences_df, SPLIT_TRAIN, settings["session_gap_s"])
    if not sessions:
        raise ValueError("no training events in the features: the baselines have nothing to learn from")
    knn, als = settings["item_knn"], settings["als"]
    return {
        SessionPopularityScorer.name: SessionPopularityScorer.fit(training_sequences(sequences_df, SPLIT_TRAIN),
                                                                  n_items),
        ItemKNNScorer.name: ItemKNNScorer.fit(sessions, n_items, neighbours=knn["neighbours"],
                                              regularization=knn["regularization"], alpha=knn["alpha"]),
        ALSScorer.name: ALSScorer.fit(spark, sessions, n_items, rank=als["rank"], reg_param=als["reg_param"],
                                      alpha=als["alpha"], max_iter=als["max_iter"], seed=seed),
    }


