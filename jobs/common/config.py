"""One resolved configuration dict for a nightly run, declared once as a typed model.

Precedence (later wins): built-in defaults < JSON file named by FUSIONREC_CONFIG <
environment variables < explicit overrides (the DAG run's params). The merged result is
validated by `FusionrecConfig` (an unknown key or a wrong type is a ValueError naming the
dotted key) and returned as a plain, JSON-serialisable dict: every job indexes it as
config["section"]["key"], logs it to MLflow and saves it beside its outputs. Every default
lives here and nowhere else.

Embedded defaults keep all state in `<checkout>/.fusionrec/` (git-ignored). A cluster
deployment changes only configuration: FUSIONREC_LAKE (e.g. an s3a:// or shared path),
FUSIONREC_SPARK_MASTER, FUSIONREC_MLFLOW_URI and FUSIONREC_MLFLOW_ARTIFACTS.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

REPO_ROOT = Path(__file__).resolve().parents[2]

# The text forms jobs/etl/privacy.py accepts for a flag: an environment variable carries
# "false", and bool("false") would be True (and silently create a key on a cluster).
_TRUE_TEXTS = ("true", "1", "yes")
_FALSE_TEXTS = ("false", "0", "no")


def _flag_from_text(value):
    """'true'/'1'/'yes' -> True, 'false'/'0'/'no' -> False (any case); anything else unchanged."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE_TEXTS:
            return True
        if text in _FALSE_TEXTS:
            return False
    return value


EnvFlag = Annotated[bool, BeforeValidator(_flag_from_text)]


class Section(BaseModel):
    # strict: an int stays an int ("5" or 5.0 for an int is an error, as is "abc"); a float
    # setting still accepts an int. extra="forbid": an unknown key is a typo, so an error.
    model_config = ConfigDict(extra="forbid", strict=True)


def defaults_of(model: type[Section]):
    """A nested section field whose default is the section's own defaults."""
    return Field(default_factory=model)


class SplitConfig(Section):
    # Time-based holdout in normalize: the window's last test_days days are the test split,
    # the valid_days before them validation, the rest training (1 and 1: test = the night).
    valid_days: int = Field(1, ge=1)
    test_days: int = Field(1, ge=1)


class SourceConfig(Section):
    # Where the night's events come from: the tracking system's own export ("fusionrec",
    # landed under <lake>/landing) or a public format read through jobs/etl/sources.py.
    format: str = "fusionrec"
    path: str | None = None


def _default_spark_conf() -> dict[str, str]:
    return {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": "8",
        # Raw files are gzip JSON lines: a file cannot be split, and Spark packs whole files
        # into read tasks by their *compressed* size, 128 MB by default, which is over a GB of
        # JSON to parse. 10M lines in 42 files became 3 tasks for 2 cores (one core idle for
        # a third of the scan); 16 MB gives 21 tasks (bench/README "ETL results").
        "spark.sql.files.maxPartitionBytes": "16m",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.driver.memory": "4g",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",  # progress bars garble task logs
    }


class SparkConfig(Section):
    master: str = "local[*]"
    # "in_process": Spark stages start a driver inside the task's own process (laptop).
    # "spark_submit": they run through `spark-submit` with the jobs package zipped and
    # shipped (--py-files), so a cluster needs only master / conf / submit_args.
    deploy: Literal["in_process", "spark_submit"] = "in_process"
    submit_args: list[str] = Field(default_factory=list)  # extra spark-submit arguments, e.g. ["--deploy-mode", "client"]
    app_name: str = "fusionrec"
    conf: dict[str, str] = Field(default_factory=_default_spark_conf)  # Spark's own settings are text


class MlflowConfig(Section):
    tracking_uri: str | None = None  # default: sqlite:///<home>/mlflow/mlflow.db
    artifact_root: str | None = None  # default: <home>/mlflow/artifacts
    experiment: str = "fusionrec-nightly"
    registered_model: str = "fusionrec-fused"
    registered_search_model: str = "fusionrec-search"  # the search ranker (register_search_ranker)
    primary_metric: str = "ndcg@20"


class ValidateConfig(Section):
    """Whole-partition checks before clean (jobs/etl/validate.py): hard ones stop the night.

    Shares are fractions of lines.
    """

    max_malformed_share: float = 0.20  # hard: 20% unparseable lines is a changed format, not dirt
    max_required_missing_share: float = 0.20  # hard: per required field, of parseable lines
    max_non_utf8_share: float = 0.01  # hard
    max_null_share: float = 0.02  # soft: per always-filled column (item_id: of item events)
    min_volume_ratio: float = 0.5  # soft: lines / mean lines of the trailing days
    max_volume_ratio: float = 2.0  # soft
    volume_trailing_days: int = 7  # days before D whose raw partitions form the baseline
    max_unknown_event_type_share: float = 0.01  # soft
    max_outside_day_share: float = 0.01  # soft: events outside [day start, day end + clean skew]
    max_future_skew_s: float = 3600.0  # soft: latest event after the day's end, in seconds


class PrivacyConfig(Section):
    """Pseudonymization in clean: user ids become HMAC-SHA256(key, user_id) before anything
    leaves the stage.

    The key is read at run time and never stored in config (which is logged): env `key_env`,
    else the password of the Airflow connection `key_connection_id`, else `key_file`. The
    laptop default creates a random key file once; a cluster sets create_key_file false and
    provides the connection.
    """

    key_env: str = "FUSIONREC_USER_ID_KEY"
    key_connection_id: str = "fusionrec_user_id_key"
    key_file: str | None = None  # default: <home>/secrets/user_id.key
    create_key_file: EnvFlag = True
    query_text: str = "tokenize"  # search text: "tokenize" (lowercase tokens, PII masked) or "drop"


class SessionizeConfig(Section):
    # Events whose source has no session id get one: a new session starts after this much
    # inactivity (the usual 30 minutes of web analytics).
    inactivity_gap_s: int = 1800


class CleanConfig(Section):
    max_future_skew_s: int = 300  # events up to 5 minutes ahead of the day's end are clock skew
    max_price: float = 100000.0
    double_click_s: int = 2  # same user, item and event type within this gap = double click


class DenoiseConfig(Section):
    """Denoise rules (jobs/etl/denoise.py); None turns a rule off.

    The bot, dwell and cap limits sit far outside what people do: on a generated tiny day the
    genuine users reach at most 7 distinct items in a minute, a gap CV of 0.83 at the lowest,
    60 events in a session, 108 events in a day and a dwell of 3 s at the shortest. Minimum
    support is off (1 and 0): one night's support is too thin a sample (an item viewed 4 times
    tonight is the long tail, not noise).
    """

    bot_max_events_per_minute: int | None = 60  # a user exceeding this in any minute is a bot
    bot_max_distinct_items_per_minute: int | None = 30
    bot_regular_min_events: int | None = 20
    bot_regular_max_cv: float | None = 0.1  # gaps this regular (std/mean) over 20+ events: a script
    max_events_per_session: int | None = 500
    accidental_click_max_dwell_s: float | None = 1.0
    collapse_consecutive_repeats: bool = True
    max_events_per_user_day: int | None = 2000
    min_item_events: int | None = 1
    min_session_item_events: int | None = 0
    min_support_max_rounds: int = 10


class ItemStatsConfig(Section):
    # Rolling item statistics in normalize, over training days only (no leakage): view counts
    # and click / cart / purchase rates per view over the windows schema.ITEM_STAT_WINDOWS_DAYS
    # ending at the last train day; rates are smoothed toward the catalog-wide rate with
    # `prior_views` pseudo-views, so an item seen twice does not claim a 50% purchase rate.
    prior_views: float = 20.0


class UserEncoderConfig(Section):
    # "gru", "sasrec" (self-attention) or "narm" (a GRU with NARM's attention over its states);
    # the next three are sasrec's.
    architecture: Literal["gru", "sasrec", "narm"] = "gru"
    num_blocks: int = 2
    num_heads: int = 1
    dropout: float = 0.2
    embedding_dim: int = 64
    hidden_dim: int = 64
    epochs: int = 8
    batch_size: int = 256
    learning_rate: float = 0.003
    # The rate is multiplied by it before each epoch after the first (1.0: constant).
    learning_rate_decay: float = 0.5
    patience: int = 2
    # An epoch counts as progress only if it lowers the valid loss by at least this share of
    # the last progress (jobs/train/models/plateau_stopping.py); `patience` epochs without
    # progress end the run, keeping the lowest valid loss's weights. 0: any decrease counts.
    # 0.001 was chosen on validation curves only (bench/README.md, "Stopping rule"): on all
    # five it keeps the very epoch the old rule kept, and runs fewer epochs to find it.
    min_relative_improvement: float = Field(0.001, ge=0.0, lt=1.0)
    # "full_softmax" scores every catalog item per example; "sampled_softmax" scores the
    # batch's other targets (in-batch negatives) plus `num_sampled_negatives` items drawn by
    # popularity, with the logQ correction, for catalogs too large for a full softmax.
    loss: Literal["full_softmax", "sampled_softmax"] = "full_softmax"
    num_sampled_negatives: int = 512
    # > 0: logits are logit_scale * cos(user, item) instead of the dot product (NISER);
    # 0: the plain dot product. 16 with the 0.5 decay above: demo ndcg@20 0.5935 against
    # 0.5832 for the dot product and a constant rate (README), DIGINETICA +4.7 P@20.
    logit_scale: float = 16.0
    # Each event also carries the bucketed time since the user's previous event
    # (schema.GAP_BUCKET_EDGES_SECONDS); false: items and event types only.
    time_gaps: bool = True
    # A RepeatNet repeat-explore head (jobs/train/models/repeat_head.py): a session's own
    # items are also scored by attention over its positions, mixed with the catalog
    # softmax by a learned gate. false: the catalog softmax alone. Chosen on validation
    # prefixes (bench/README.md, "Repeat-aware encoders").
    repeat_head: bool = True
    # Stop after the epoch past which another would overrun this many minutes, keeping
    # the best epoch so far (null: no budget).
    max_train_minutes: float | None = None
    # "windows": each pass over a window of events trains the next item of every position
    # (jobs/train/models/window_training.py); "prefixes": one max_len-event history per
    # target, read anew for each (make_examples). Same targets either way; windows read
    # each event about twice instead of max_len times, but score every position of a
    # window. "auto": the GRU on windows where they are full enough to be cheaper (long
    # histories, as in the nightly lake), on prefixes where they are not (short sessions);
    # SASRec on prefixes (its valid loss suffered on windows). See
    # train_user_encoder.training_examples and bench/README.md, "Window training".
    training_examples: Literal["auto", "windows", "prefixes"] = "auto"
    # Positions a window trains (after max_len events of context for the GRU; the last of
    # max_len for SASRec). Fewer: each target's history is closer to the max_len a served
    # history holds, at more encoder work per target. 5 was chosen on the demo night's valid
    # split (bench/README.md, "Window training"): valid loss as 2 positions', in two thirds
    # of their time; 10 and 20 lost 0.4% of valid loss.
    window_positions: int = Field(5, ge=1)


class ItemEncoderConfig(Section):
    embedding_dim: int = 64
    hidden_dim: int = 128
    epochs: int = 8
    batch_size: int = 256
    learning_rate: float = 0.003
    temperature: float = 0.1
    patience: int = 2
    max_title_tokens: int = 16
    recency_decay: float = 0.8  # the scorer's weight of a history item k steps back: 0.8**k
    popularity_dropout: float = 0.2  # share of training lookups that see popularity 0, as a new item does
    max_train_minutes: float | None = None  # as for user_encoder


class ItemKnnConfig(Section):
    neighbours: int = 100
    regularization: float = 20.0
    alpha: float = 0.5


class AlsConfig(Section):
    rank: int = 32
    reg_param: float = 0.1
    alpha: float = 10.0
    max_iter: int = 10


class BaselinesConfig(Section):
    # Baselines fitted nightly (jobs/train/train_baselines.py): yardsticks and fusion members. Item-KNN
    # and ALS learn from sessions (a user's train events cut at this much inactivity).
    session_gap_s: int = 1800
    item_knn: ItemKnnConfig = defaults_of(ItemKnnConfig)
    als: AlsConfig = defaults_of(AlsConfig)


class FusionConfig(Section):
    candidates_per_model: int = 50
    rrf_k: int = 60
    rrf_grid_steps: int = 5  # RRF weights in multiples of 1/5: 252 grid points for the six members
    feature_fusion_dim: int = 32
    feature_fusion_epochs: int = 10
    feature_fusion_batch_size: int = 256
    feature_fusion_learning_rate: float = 0.01
    stacking_max_train_examples: int = 20000  # ~3M candidate rows at C=50: plenty for a handful of weights
    # The gradient-boosted fuser (fusion_gbm): prefixes it is fitted on at most, and the share of
    # their users held out to early-stop its trees.
    gbm_max_train_examples: int = Field(20000, ge=2)
    gbm_stopping_share: float = Field(0.2, gt=0.0, lt=1.0)
    holdout_fraction: float = 0.2  # valid-day users held out to choose the served fusion variant


class SearchConfig(Section):
    """The nightly search ranker (jobs/search/train_search_ranker.py)."""

    candidates: int = Field(100, ge=1)  # lexical top-N per search that the rankers reorder
    # The item encoder's nearest items per query, added to the lexical ones (0: lexical only).
    semantic_candidates: int = Field(100, ge=0)
    # Users whose searches (of any day before the test day) early-stop the rankers; the others'
    # searches fit them.
    holdout_fraction: float = Field(0.3, gt=0.0, lt=1.0)
    # Fewer valid-day searches to fit on (or none to early-stop on): the night reports BM25 only.
    min_fit_searches: int = Field(30, ge=1)
    # A test query typed at least this often before the test day is a head query.
    head_query_min_searches: int = Field(5, ge=1)
    # Ready-made results served beside the recommendations (jobs/serving/search_lists.py): the
    # window's most frequent queries, each segment's top results for them, merged from the
    # personalized lists of this many of the segment's users (0 queries: none written).
    head_queries: int = Field(30, ge=0)
    segment_results: int = Field(20, ge=1)
    segment_members: int = Field(5, ge=1)


class EvaluationConfig(Section):
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10, 20])  # cutoffs reported; the primary metric's is always added
    exclude_seen: bool = False  # True: items already in the history can't be recommended
    long_history_min_events: int = Field(5, ge=1)  # segment boundary: short vs long histories
    bootstrap_resamples: int = Field(200, ge=1)  # percentile bootstrap for the CIs
    # Resample whole users (their examples are correlated) or single examples.
    bootstrap_unit: Literal["user", "example"] = "user"
    confidence: float = Field(0.95, gt=0.0, lt=1.0)


class ServingStoreConfig(Section):
    """Where publish_serving puts the night's lists for a web shop (jobs/serving/publish_serving.py).

    Each night becomes a new version that goes live only after the checks below pass; until
    then yesterday's version stays live. The thresholds are sanity checks against a broken
    night (a collapsed model, wrong item ids), not quality targets: the generated tiny and
    small demo data clear them by far, and a re-run of the same night scores overlap 1.0.
    """

    # Any of "sqlite" (a file, no server: the laptop default), "postgres", "redis". Production
    # sets ["postgres", "redis"]: the shop reads Redis first and the tables as the fallback.
    targets: list[Literal["sqlite", "postgres", "redis"]] = Field(default_factory=lambda: ["sqlite"], min_length=1)
    sqlite_path: str | None = None  # default: <home>/serving/serving.db
    # Addresses and credentials: Airflow connections (or AIRFLOW_CONN_<ID> as a URI outside Airflow).
    postgres_connection_id: str = "fusionrec_serving_postgres"
    redis_connection_id: str = "fusionrec_serving_redis"
    redis_key_prefix: str = "fusionrec"  # keys <prefix>:<version>:user:<id>, pointer <prefix>:live
    # A version's Redis keys expire after this long: a week outlives versions_kept nightly
    # versions, and keys of a pipeline that stopped publishing do not linger forever.
    redis_ttl_s: int = Field(7 * 86400, ge=60)
    versions_kept: int = Field(3, ge=2)  # the live one and the ones before it (2: yesterday stays for a rollback)
    similar_items_n: int = Field(20, ge=1)  # similar items per catalog item (batch_recommend)
    # Every catalog item's list holds at least this many (or the catalog minus the item, if
    # smaller): the item encoder ranks the whole catalog, so a shorter list means a broken night.
    min_similar_items: int = Field(10, ge=1)
    # Mean share of a user's (and an item's) list also in the live version's list, over keys
    # in both. Lists built from unrelated item ids share about top_k / catalog items (1.3% on
    # the small demo's 1,500 items); a retrained model on one more day keeps far more.
    min_overlap_with_previous: float = Field(0.05, ge=0.0, le=1.0)
    # Distinct recommended items / the most the night could show (catalog items, or users x
    # top_k if fewer). 5%: only a night that gives nearly everyone the same few items fails.
    min_catalog_coverage: float = Field(0.05, ge=0.0, le=1.0)


class AirflowConfig(Section):
    """How recsys_nightly retries and waits; read when Airflow parses the DAG file."""

    retries: int = Field(1, ge=0)  # per task; a killed or failed attempt is retried this often
    retry_delay_s: int = Field(300, ge=0)
    # wait_for_landing: the tracking export usually lands within the two hours before the
    # 02:00 run; poke every five minutes for up to eight more hours, then fail the night.
    landing_poke_interval_s: int = Field(300, ge=1)
    landing_timeout_s: int = Field(8 * 3600, ge=1)


class FusionrecConfig(Section):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    home: str = str(REPO_ROOT / ".fusionrec")
    lake_root: str | None = None  # default: <home>/lake
    scale: str = "small"  # synthetic data scale: tiny | small | large
    seed: int = 42
    window_days: int = 14  # nights of history the features and models see
    # The last stage a run runs (a name of jobs/pipeline.py STAGE_ORDER, checked there when a
    # stage starts: this module must not import the pipeline, which the served model would then
    # carry); the later ones are skipped and show as skipped in Airflow. None: the whole night.
    # "normalize_features" re-processes only the lake (a backfill after a cleaning rule changed).
    stop_after: str | None = None
    split: SplitConfig = defaults_of(SplitConfig)
    max_seq_len: int = Field(20, ge=1)
    top_k: int = 20
    source: SourceConfig = defaults_of(SourceConfig)
    spark: SparkConfig = defaults_of(SparkConfig)
    mlflow: MlflowConfig = defaults_of(MlflowConfig)
    # Aliased: a field named "validate" would shadow BaseModel.validate.
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    privacy: PrivacyConfig = defaults_of(PrivacyConfig)
    sessionize: SessionizeConfig = defaults_of(SessionizeConfig)
    clean: CleanConfig = defaults_of(CleanConfig)
    denoise: DenoiseConfig = defaults_of(DenoiseConfig)
    item_stats: ItemStatsConfig = defaults_of(ItemStatsConfig)
    user_encoder: UserEncoderConfig = defaults_of(UserEncoderConfig)
    item_encoder: ItemEncoderConfig = defaults_of(ItemEncoderConfig)
    baselines: BaselinesConfig = defaults_of(BaselinesConfig)
    fusion: FusionConfig = defaults_of(FusionConfig)
    evaluation: EvaluationConfig = defaults_of(EvaluationConfig)
    search: SearchConfig = defaults_of(SearchConfig)
    serving_store: ServingStoreConfig = defaults_of(ServingStoreConfig)
    airflow: AirflowConfig = defaults_of(AirflowConfig)


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
    # (which would split every user's history at that night). EnvFlag reads the text.
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


def default_config() -> dict:
    """The built-in defaults as a plain dict (paths derived from home still None)."""
    return FusionrecConfig().model_dump(mode="json", by_alias=True)


def default_of(dotted_key: str):
    """The built-in default of one key, e.g. "fusion.rrf_grid_steps": for library functions
    whose keyword defaults must be the config's, not a second declaration of it."""
    value = default_config()
    for key in dotted_key.split("."):
        value = value[key]
    return value


def section_settings(name: str, overrides: dict | None = None) -> dict:
    """One section's defaults updated by overrides, validated: the full settings a function
    taking config[name] expects, for callers (benchmarks, tests) that build their own."""
    defaults = default_config()
    return validated({**defaults, name: deep_merge(defaults[name], overrides or {})})[name]


# Pydantic error types -> what the value should have been, for messages without its jargon.
_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "string_type": "a string",
    "bool_type": "true or false", "bool_parsing": "true or false", "list_type": "a list",
    "dict_type": "an object", "model_type": "an object", "model_attributes_type": "an object",
}


def _describe(error: dict) -> str:
    """'config user_encoder.epocs: unknown key' / 'config top_k: expected an integer, got 'abc''."""
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        problem = "unknown key"
    elif error["type"] in _EXPECTED:
        problem = f"expected {_EXPECTED[error['type']]}, got {error['input']!r}"
    else:
        problem = f"{error['msg'][0].lower()}{error['msg'][1:]}, got {error['input']!r}"
    return f"config {where}: {problem}" if where else f"config: {problem}"


def validated(config: dict) -> dict:
    """config checked against FusionrecConfig, as a plain dict; ValueError names every bad key."""
    try:
        model = FusionrecConfig.model_validate(config)
    except ValidationError as error:
        raise ValueError("; ".join(_describe(detail) for detail in error.errors())) from None
    return model.model_dump(mode="json", by_alias=True)


def _read_config_file(config_file: str) -> dict:
    try:
        return json.loads(Path(config_file).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"FUSIONREC_CONFIG={config_file} is not a readable JSON file: {error}") from None


def _with_derived_paths(config: dict) -> dict:
    """Fill the paths left None with their places under home."""
    home = Path(config["home"])
    config["lake_root"] = config["lake_root"] or str(home / "lake")
    config["privacy"]["key_file"] = config["privacy"]["key_file"] or str(home / "secrets" / "user_id.key")
    mlflow_config = config["mlflow"]
    mlflow_config["tracking_uri"] = mlflow_config["tracking_uri"] or f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    mlflow_config["artifact_root"] = mlflow_config["artifact_root"] or str(home / "mlflow" / "artifacts")
    serving = config["serving_store"]
    serving["sqlite_path"] = serving["sqlite_path"] or str(home / "serving" / "serving.db")
    return config


def resolve_config(overrides: dict | None = None, environ: dict | None = None) -> dict:
    """Resolve defaults, file, environment and overrides into one validated dict with no None paths."""
    environ = os.environ if environ is None else environ
    # From the defaults, so a file or override naming one key of a dict-valued setting (one
    # spark.conf item) adds to the defaults instead of replacing the whole dict.
    config = default_config()
    config_file = environ.get("FUSIONREC_CONFIG")
    if config_file:
        config = deep_merge(config, _read_config_file(config_file))
    for env_name, dotted_key in ENV_KEYS.items():
        if environ.get(env_name):
            set_dotted(config, dotted_key, environ[env_name])
    if overrides:
        config = deep_merge(config, overrides)
    return _with_derived_paths(validated(config))


# --- DAG run params -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TriggerParam:
    """A field of the Airflow "Trigger" form that sets one config key for one run."""

    name: str
    config_key: str  # dotted
    description: str
    limits: dict = dataclasses.field(default_factory=dict)  # JSON-schema keywords: minimum, maximum


TRIGGER_PARAMS = (
    TriggerParam("window_days", "window_days", "Days of history", {"minimum": 3}),
    TriggerParam("top_k", "top_k", "Recommendations per user", {"minimum": 1, "maximum": 1000}),
    TriggerParam("user_encoder_epochs", "user_encoder.epochs", "Epochs of the user encoder", {"minimum": 1}),
    TriggerParam("item_encoder_epochs", "item_encoder.epochs", "Epochs of the item encoder", {"minimum": 1}),
    TriggerParam("spark_master", "spark.master", "e.g. spark://host:7077"),
    TriggerParam("stop_after", "stop_after", "Last stage to run; later ones skip (e.g. normalize_features: the lake only)"),
)
CONFIG_OVERRIDES_PARAM = "config_overrides"  # any nested dict of config keys

_JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean"}


def config_field_type(dotted_key: str) -> type:
    """The Python type FusionrecConfig declares for a dotted key (None stripped from X | None)."""
    model: type[BaseModel] = FusionrecConfig
    *parents, leaf = dotted_key.split(".")
    for parent in parents:
        model = model.model_fields[parent].annotation
    annotation = model.model_fields[leaf].annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return annotation


def trigger_params(stage_names: tuple[str, ...] = ()) -> dict:
    """The DAG's Params: each TRIGGER_PARAMS entry nullable (None keeps the configured value)
    and typed as its config key, plus the free-form config_overrides object. stage_names (the
    DAG passes jobs.pipeline.STAGE_ORDER) make stop_after a drop-down of the stages."""
    from airflow.sdk import Param  # lazily: the jobs import this module where Airflow is absent

    choices = {"stop_after": {"enum": [None, *stage_names]}} if stage_names else {}
    params = {param.name: Param(None, type=["null", _JSON_TYPES[config_field_type(param.config_key)]],
                                description=param.description, **param.limits, **choices.get(param.name, {}))
              for param in TRIGGER_PARAMS}
    params[CONFIG_OVERRIDES_PARAM] = Param({}, type="object", description="Any nested config keys (jobs/common/config.py)")
    return params


def overrides_from_params(params: dict | None) -> dict:
    """Turn a DAG run's params into config overrides for resolve_config."""
    params = params or {}
    overrides: dict = {}
    for param in TRIGGER_PARAMS:
        if params.get(param.name) is not None:
            set_dotted(overrides, param.config_key, params[param.name])
    extra = params.get(CONFIG_OVERRIDES_PARAM) or {}
    if not isinstance(extra, dict):
        raise ValueError(f"param {CONFIG_OVERRIDES_PARAM} must be a JSON object, got {type(extra).__name__}")
    return deep_merge(overrides, extra)
