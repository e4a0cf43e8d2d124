"""Nightly job: train the attribute item tower on features/*/dt=<ds> -> models/item_encoder/dt=<ds>.

extract: load_features; transform: train_item_encoder (attribute arrays and co-consumption
pairs in, fitted tower and catalog embeddings out) and cold_start_metrics; load: the model
directory, written atomically, and one MLflow run with params, per-epoch losses and valid
recall@20, final and cold-start metrics and the directory as artifacts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from jobs.train.encoder_scorers import item_encoder_scorer, recall_at_k
from jobs.common.features import (
    SCALERS_FILE, Examples, item_feature_arrays, load_features, make_examples, read_scalers, transition_pairs,
    vocabulary_size,
)
from jobs.common.lake import partition_path, replace_partition
from jobs.train.models.training import (
    VALID_RECALL_K, EpochLogger, copy_to_float32, final_metrics, fit_with_early_stopping, log_epoch_to_mlflow,
    make_dataset, training_precision, write_model_dir,
)
from jobs.common.schema import (
    BRAND_IDX, CATEGORY_IDX, ITEM_IDX, MODEL_ITEM_ENCODER, POPULARITY, PRICE_BUCKET, SPLIT_TRAIN, SPLIT_VALID,
    TITLE_TOKENS,
)
from jobs.common.tracking import stage_run
from jobs.common.night import Night

STAGE = "train_item_encoder"
SECTION = "item_encoder"
COLD_START_K = 20
# Which meta.json count sizes the embedding of each categorical attribute.
VOCABULARY_META_KEYS = {CATEGORY_IDX: "n_categories", BRAND_IDX: "n_brands", PRICE_BUCKET: "n_price_buckets",
                        TITLE_TOKENS: "n_title_tokens"}


@dataclass
class TrainedItemEncoder:
    tower: object  # keras.Model: item attributes -> unit vector
    item_embeddings: np.ndarray  # float32 [n_items + 1, d], row 0 zeros
    history: dict


def run(night: Night) -> dict:
    """Train on the features of `ds`; returns {"path": the model directory}."""
    import mlflow
    config, ds = night.config, night.ds

    features = load_features(config, ds)
    settings = config[SECTION]
    item_features = item_feature_arrays(features.items, settings["max_title_tokens"], n_items=features.n_items)
    vocabulary_sizes = {name: vocabulary_size(features.meta, key, item_features[name])
                        for name, key in VOCABULARY_META_KEYS.items()}
    train_pairs = transition_pairs(features.sequences, SPLIT_TRAIN)
    valid_pairs = transition_pairs(features.sequences, SPLIT_VALID)
    valid = make_examples(features.sequences, SPLIT_VALID, config["max_seq_len"])
    _require_rows(ds, {"train co-consumption pairs": train_pairs, "valid co-consumption pairs": valid_pairs,
                       "valid examples": valid})

    model_dir = partition_path(config, MODEL_ITEM_ENCODER, ds)
    model_config = {**settings, "n_items": features.n_items, "vocabulary_sizes": vocabulary_sizes,
                    "seed": config["seed"], "ds": ds}
    with stage_run(config, STAGE, ds):
        mlflow.log_params({**settings, "n_items": features.n_items, "n_train_pairs": len(train_pairs),
                           "n_valid_pairs": len(valid_pairs)})
        trained = train_item_encoder(item_features, vocabulary_sizes, train_pairs, valid_pairs, valid, settings,
                                     seed=config["seed"], on_epoch_end=log_epoch_to_mlflow)
        cold_start = cold_start_metrics(trained.item_embeddings, features.items, valid_pairs)
        with replace_partition(model_dir) as staging:
            write_model_dir(staging, trained.tower, trained.item_embeddings, model_config,
                            {**trained.history, "cold_start": cold_start})
            # The price scaling the tower's inputs were built with: serving must featurize a
            # new item's raw price with exactly these numbers (jobs.common.features.scale_prices).
            with open(os.path.join(staging, SCALERS_FILE), "w") as handle:
                json.dump(read_scalers(config, ds), handle, indent=2, sort_keys=True)
        mlflow.log_metrics({**final_metrics(trained.history), **cold_start})
        mlflow.log_artifacts(model_dir, artifact_path=SECTION)
    return {"path": model_dir}


def _require_rows(ds: str, named_rows: dict) -> None:
    for name, rows in named_rows.items():
        if len(rows) == 0:
            raise ValueError(f"features/sequences/dt={ds} yields no {name}: cannot train the item encoder")


def train_item_encoder(item_features: dict[str, np.ndarray], vocabulary_sizes: dict[str, int],
                       train_pairs: np.ndarray, valid_pairs: np.ndarray, valid: Examples, settings: dict, seed: int,
                       on_epoch_end: EpochLogger | None = None) -> TrainedItemEncoder:
    """Fit the tower on (item, next item) pairs with in-batch InfoNCE; early-stop on valid pairs.

    item_features: features.item_feature_arrays (row = item_idx). settings: the
    item_encoder config section. The per-epoch
    val_recall_at_20 ranks the valid examples' targets the way the scorer will (recency-
    weighted history mean), so it is comparable with the user encoder's.
    """
    import keras

    from jobs.train.models.item_encoder import PairContrastiveModel, build_item_tower, embed_catalog

    keras.utils.set_random_seed(seed)

    def build_tower():
        return build_item_tower(vocabulary_sizes, item_features[TITLE_TOKENS].shape[1],
                                settings["embedding_dim"], settings["hidden_dim"])

    with training_precision():
        tower = build_tower()
        model = PairContrastiveModel(tower, item_features, settings["temperature"],
                                     popularity_dropout=settings["popularity_dropout"], seed=seed)
        model.compile(optimizer=keras.optimizers.Adam(settings["learning_rate"]))

        def valid_recall() -> float:
            scorer = item_encoder_scorer(embed_catalog(tower, item_features), settings["recency_decay"])
            return recall_at_k(scorer, valid.items, valid.types, valid.targets, VALID_RECALL_K)

        batch_size = settings["batch_size"]
        history = fit_with_early_stopping(
            model, make_dataset(train_pairs.astype(np.int32), batch_size, seed=seed),
            make_dataset(valid_pairs.astype(np.int32), batch_size),
            epochs=settings["epochs"], patience=settings["patience"], valid_recall=valid_recall,
            on_epoch_end=on_epoch_end, max_train_minutes=settings["max_train_minutes"])
    exported = copy_to_float32(build_tower, tower)
    return TrainedItemEncoder(exported, embed_catalog(exported, item_features), history)


def cold_start_metrics(item_embeddings: np.ndarray, items: pd.DataFrame, valid_pairs: np.ndarray,
                       k: int = COLD_START_K) -> dict[str, float]:
    """How well the tower places items with no training events (popularity 0), each beside its chance level.

    - cold_nn_same_category: share of cold items whose nearest warm item (cosine) has
      the same category; _chance: the same share for a warm item drawn at random.
      (Category is an input, so this checks the tower uses it, not that it is enough.)
    - cold_valid_recall_at_<k>: for valid transitions (previous item -> cold item), share
      where the cold item is among the k items most similar to the previous item (the
      previous item itself excluded); _chance: k / (n_items - 1). This is co-consumption
      predicted for items the model never saw consumed.
    """
    vectors = item_embeddings / np.maximum(np.linalg.norm(item_embeddings, axis=1, keepdims=True), 1e-12)
    item_idx = items[ITEM_IDX].to_numpy()
    popularity = items[POPULARITY].to_numpy()
    category = np.zeros(len(item_embeddings), dtype=np.int64)
    category[item_idx] = items[CATEGORY_IDX].to_numpy()
    cold, warm = item_idx[popularity == 0], item_idx[popularity > 0]
    metrics = {"cold_items": float(len(cold))}
    if len(cold) and len(warm):
        nearest_warm = warm[np.argmax(vectors[cold] @ vectors[warm].T, axis=1)]
        metrics["cold_nn_same_category"] = float(np.mean(category[nearest_warm] == category[cold]))
        warm_category_share = pd.Series(category[warm]).value_counts(normalize=True)
        metrics["cold_nn_same_category_chance"] = float(np.mean(
            warm_category_share.reindex(category[cold]).fillna(0.0).to_numpy()))
    cold_pairs = valid_pairs[np.isin(valid_pairs[:, 1], cold)]
    metrics["cold_valid_pairs"] = float(len(cold_pairs))
    if len(cold_pairs):
        similarity = vectors[cold_pairs[:, 0]] @ vectors.T
        similarity[:, 0] = -np.inf
        similarity[np.arange(len(cold_pairs)), cold_pairs[:, 0]] = -np.inf
        target_similarity = similarity[np.arange(len(cold_pairs)), cold_pairs[:, 1]]
        # Rank = number of items strictly more similar than the target.
        rank = np.sum(similarity > target_similarity[:, None], axis=1)
        metrics[f"cold_valid_recall_at_{k}"] = float(np.mean(rank < k))
        metrics[f"cold_valid_recall_at_{k}_chance"] = min(1.0, k / max(len(item_idx) - 1, 1))
    return metrics
