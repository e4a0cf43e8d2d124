"""One resolved configuration dict for a nightly run.

Precedence (later wins): built-in defaults < JSON file named by FUSIONREC_CONFIG <
environment variables < explicit overrides (the DAG run's params). The result is a plain,
JSON-serialisable dict: every job logs it to MLflow and saves it beside its outputs.

Embedded defaults keep all state in `<checkout>/.fusionrec/` (git-ignored). A cluster
deployment changes only configuration: FUSIONREC_LAKE (e.g. an s3a:// or shared path),
FUSIONREC_SPARK_MASTER, FUSIONREC_MLFLOW_URI and FUSIONREC_MLFLOW_ARTIFACTS.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULTS: dict = {
    "home": str(REPO_ROOT / ".fusionrec"),
    "lake_root": None,  # default: <home>/lake
    "scale": "small",  # synthetic data scale: tiny | small | large
    "seed": 42,
    "window_days": 14,  # nights of history the features and models see
    # Time-based holdout in normalize: the window's last test_days days are the test split,
    # the valid_days before them validation, the rest training (1 and 1: test = the night).
    "split": {"valid_days": 1, "test_days": 1},
    "max_seq_len": 20,
    "top_k": 20,
    # Where the night's events come from: the tracking system's own export ("fusionrec",
    # landed under <lake>/landing) or a public format read through jobs/etl/sources.py.
    "source": {"format": "fusionrec", "path": None},
    "spark": {
        "master": "local[*]",
        # "in_process": Spark stages start a driver inside the task's own process (laptop).
        # "spark_submit": they run through `spark-submit` with the jobs package zipped and
        # shipped (--py-files), so a cluster needs only master / conf / submit_args.
        "deploy": "in_process",
        "submit_args": [],  # extra spark-submit arguments, e.g. ["--deploy-mode", "client"]
        "app_name": "fusionrec",
        "conf": {
            "spark.sql.session.timeZone": "UTC",
            "spark.sql.shuffle.partitions": "8",
            "spark.sql.sources.partitionOverwriteMode": "dynamic",
            "spark.driver.memory": "4g",
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",  # progress bars garble task logs
        },
    },
    "mlflow": {
        "tracking_uri": None,  # default: sqlite:///<home>/mlflow/mlflow.db
        "artifact_root": None,  # default: <home>/mlflow/artifacts
        "experiment": "fusionrec-nightly",
        "registered_model": "fusionrec-fused",
        "primary_metric": "ndcg@20",
    },
    "validate": {  # whole-partition checks before clean (jobs/etl/validate.py): hard ones stop the night
        "max_malformed_share": 0.20,
        "max_required_missing_share": 0.20,
        "max_non_utf8_share": 0.01,
        "max_null_share": 0.02,
        "min_volume_ratio": 0.5,
        "max_volume_ratio": 2.0,
        "volume_trailing_days": 7,
        "max_unknown_event_type_share": 0.01,
        "max_outside_day_share": 0.01,
        "max_future_skew_s": 3600.0,
    },
    # Pseudonymization in clean: user ids become HMAC-SHA256(key, user_id) before anything
    # leaves the stage. The key is read at run time and never stored in config (which is
    # logged): env `key_env`, else the password of the Airflow connection `key_connection_id`,
    # else `key_file`. The laptop default creates a random key file once; a cluster sets
    # create_key_file false and provides the connection.
    "privacy": {
        "key_env": "FUSIONREC_USER_ID_KEY",
        "key_connection_id": "fusionrec_user_id_key",
        "key_file": None,  # default: <home>/secrets/user_id.key
        "create_key_file": True,
        "query_text": "tokenize",  # search text: "tokenize" (lowercase tokens, PII masked) or "drop"
    },
    # Events whose source has no session id get one: a new session starts after this much
    # inactivity (the usual 30 minutes of web analytics).
    "sessionize": {"inactivity_gap_s": 1800},
    "clean": {
        "max_future_skew_s": 300,  # events up to 5 minutes ahead of the day's end are clock skew
        "max_price": 100000.0,
        "double_click_s": 2,  # same user, item and event type within this gap = double click
    },
    # Denoise rules (jobs/etl/denoise.py). The bot, dwell and cap limits sit far outside what
    # people do: on a generated tiny day the genuine users reach at most 7 distinct items in a
    # minute, a gap CV of 0.83 at the lowest, 60 events in a session, 108 events in a day and a
    # dwell of 3 s at the shortest. Minimum support is off (1 and 0): one night's support is
    # too thin a sample (an item viewed 4 times tonight is the long tail, not noise).
    "denoise": {
        "bot_max_events_per_minute": 60,  # a user exceeding this in any minute is a bot
        "bot_max_distinct_items_per_minute": 30,
        "bot_regular_min_events": 20,
        "bot_regular_max_cv": 0.1,  # gaps this regular (std/mean) over 20+ events: a script
        "max_events_per_session": 500,
        "accidental_click_max_dwell_s": 1.0,
        "collapse_consecutive_repeats": True,
        "max_events_per_user_day": 2000,
        "min_item_events": 1,
        "min_session_item_events": 0,
        "min_support_max_rounds": 10,
    },
    # Rolling item statistics in normalize, over training days only (no leakage): view counts
    # and click / cart / purchase rates per view over the windows schema.ITEM_STAT_WINDOWS_DAYS
    # ending at the last train day; rates are smoothed toward the catalog-wide rate with
    # `prior_views` pseudo-views, so an item seen twice does not claim a 50% purchase rate.
    "item_stats": {"prior_views": 20.0},
    "user_encoder": {
        "architecture": "gru",  # or "sasrec" (self-attention); the next three are sasrec's
        "num_blocks": 2,
        "num_heads": 1,
        "dropout": 0.2,
        "embedding_dim": 64,
        "hidden_dim": 64,
        "epochs": 8,
        "batch_size": 256,
        "learning_rate": 0.003,
        # The rate is multiplied by it before each epoch after the first (1.0: constant).
        "learning_rate_decay": 0.5,
        "patience": 2,
        # "full_softmax" scores every catalog item per example; "sampled_softmax" scores the
        # batch's other targets (in-batch negatives) plus `num_sampled_negatives` items drawn by
        # popularity, with the logQ correction, for catalogs too large for a full softmax.
        "loss": "full_softmax",
        "num_sampled_negatives": 512,
        # > 0: logits are logit_scale * cos(user, item) instead of the dot product (NISER);
        # 0: the plain dot product. 16 with the 0.5 decay above: demo ndcg@20 0.5935 against
        # 0.5832 for the dot product and a constant rate (README), DIGINETICA +4.7 P@20.
        "logit_scale": 16.0,
        # Each event also carries the bucketed time since the user's previous event
        # (schema.GAP_BUCKET_EDGES_SECONDS); false: items and event types only.
        "time_gaps": True,
        # Stop after the epoch past which another would overrun this many minutes, keeping
        # the best epoch so far (null: no budget).
        "max_train_minutes": None,
    },
    "item_encoder": {
        "embedding_dim": 64,
        "hidden_dim": 128,
        "epochs": 8,
        "batch_size": 256,
        "learning_rate": 0.003,
        "temperature": 0.1,
        "patience": 2,
        "max_title_tokens": 16,
        "recency_decay": 0.8,  # the scorer's weight of a history item k steps back: 0.8**k
        "popularity_dropout": 0.2,  # share of training lookups that see popularity 0, as a new item does
        "max_train_minutes": None,  # as for user_encoder
    },
    # Baselines fitted nightly (jobs/train/train_baselines.py): yardsticks and fusion members. Item-KNN
    # and ALS learn from sessions (a user's train events cut at this much inactivity).
    "baselines": {
        "session_gap_s": 1800,
        "item_knn": {"neighbours": 100, "regularization": 20.0, "alpha": 0.5},
        "als": {"rank": 32, "reg_param": 0.1, "alpha": 10.0, "max_iter": 10},
    },
    "fusion": {
        "candidates_per_model": 50,
        "rrf_k": 60,
        "rrf_grid_steps": 5,  # RRF weights in multiples of 1/5: 252 grid points for the six members
        "feature_fusion_dim": 32,
        "feature_fusion_epochs": 10,
        "feature_fusion_batch_size": 256,
        "feature_fusion_learning_rate": 0.01,
        "stacking_max_train_examples": 20000,
        "holdout_fraction": 0.2,  # valid-day users held out to choose the served fusion variant
    },
    "evaluation": {
        "ks": [1, 5, 10, 20],  # cutoffs reported; the primary metric's is always added
        "exclude_seen": False,  # True: items already in the history can't be recommended
        "long_history_min_events": 5,  # segment boundary: short vs long histories
        "bootstrap_resamples": 200,  # percentile bootstrap for the CIs
        "bootstrap_unit": "user",  # resample whole users (their examples are correlated) or "example"
        "confidence": 0.95,
    },
}

# Environment variables that map onto config keys (dotted paths).
ENV_KEYS = {
    "FUSIONREC_HOME": "home",
    "FUSIONREC_LAKE": "lake_root",
    "FUSIONREC_SCALE": "scale",
    "FUSIONREC_SOURCE_FORMAT": "source.format",
    "FUSIONREC_SOURCE_PATH": "source.path",
    "FUSIONREC_SPARK_MASTER": "spark.master",
    "FUSIONREC_SPARK_DEPLOY": "spark.deploy",
    # "false" on a cluster: a missing user-id key must stop the night, not mint a new key
    # (which would split every user's history at that night). jobs/etl/privacy.py reads the text.
    "FUSIONREC_CREATE_KEY_FILE": "privacy.create_key_file",
    # Not MLFLOW_TRACKING_URI: mlflow.set_tracking_uri() writes that variable into the
    # process environment, so a config resolved after any MLflow call would inherit it.
    "FUSIONREC_MLFLOW_URI": "mlflow.tracking_uri",
    "FUSIONREC_MLFLOW_ARTIFACTS": "mlflow.artifact_root",
}


def deep_merge(base: dict, override: dict) -> dict:
    """Return base updated recursively by override (neither is modified)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def set_dotted(config: dict, dotted_key: str, value) -> None:
    *parents, leaf = dotted_key.split(".")
    node = config
    for parent in parents:
        node = node.setdefault(parent, {})
    node[leaf] = value


def resolve_config(overrides: dict | None = None, environ: dict | None = None) -> dict:
    """Resolve defaults, file, environment and overrides into one dict with no None paths."""
    environ = os.environ if environ is None else environ
    config = copy.deepcopy(DEFAULTS)
    config_file = environ.get("FUSIONREC_CONFIG")
    if config_file:
        try:
            config = deep_merge(config, json.loads(Path(config_file).read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"FUSIONREC_CONFIG={config_file} is not a readable JSON file: {error}")
    for env_name, dotted_key in ENV_KEYS.items():
        if environ.get(env_name):
            set_dotted(config, dotted_key, environ[env_name])
    if overrides:
        config = deep_merge(config, overrides)
    home = config["home"]
    config["lake_root"] = config["lake_root"] or str(Path(home) / "lake")
    config["privacy"]["key_file"] = config["privacy"]["key_file"] or str(Path(home) / "secrets" / "user_id.key")
    mlflow_config = config["mlflow"]
    mlflow_config["tracking_uri"] = mlflow_config["tracking_uri"] or f"sqlite:///{Path(home) / 'mlflow' / 'mlflow.db'}"
    mlflow_config["artifact_root"] = mlflow_config["artifact_root"] or str(Path(home) / "mlflow" / "artifacts")
    return config


# DAG run params (what a user sets in the Airflow "Trigger" form) → config keys. A param
# left at None keeps the configured value; `config_overrides` takes any nested dict.
PARAM_KEYS = {
    "window_days": "window_days",
    "top_k": "top_k",
    "user_encoder_epochs": "user_encoder.epochs",
    "item_encoder_epochs": "item_encoder.epochs",
    "spark_master": "spark.master",
}


def overrides_from_params(params: dict | None) -> dict:
    """Turn a DAG run's params into config overrides for resolve_config."""
    params = params or {}
    overrides: dict = {}
    for param_name, dotted_key in PARAM_KEYS.items():
        if params.get(param_name) is not None:
            set_dotted(overrides, dotted_key, params[param_name])
    extra = params.get("config_overrides") or {}
    if not isinstance(extra, dict):
        raise ValueError(f"param config_overrides must be a JSON object, got {type(extra).__name__}")
    return deep_merge(overrides, extra)
