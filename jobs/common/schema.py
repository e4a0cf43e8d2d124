"""The feature contract: every column name, id convention and feature list, defined once.

Spark jobs (jobs/etl/clean.py, jobs/etl/denoise.py, jobs/etl/normalize_features.py) and TensorFlow code
(jobs/common/features.py, jobs/train/models/*, jobs/train_*.py) both import from here, so a renamed
column breaks loudly in one place instead of silently in two.

Id conventions (shared by every model):
- Index 0 is reserved in every integer vocabulary (items, categories, brands, price
  buckets, title tokens, event types): it means padding or out-of-vocabulary.
- Item indices run 1..n_items over the day's catalog; score matrices therefore have
  n_items + 1 columns and column 0 is never a valid recommendation.
"""

# --- Raw events as landed by the tracking system (gzip JSON lines) -------------------
EVENT_ID = "event_id"
EVENT_TIME = "event_time"  # ISO-8601 string in raw JSON, Spark timestamp after clean
EVENT_TYPE = "event_type"
USER_ID = "user_id"
SESSION_ID = "session_id"
ITEM_ID = "item_id"  # null for search events
QUERY = "query"  # search text; null for item events
PRICE = "price"  # price seen by the user; null for search events

RAW_EVENT_FIELDS = (EVENT_ID, EVENT_TIME, EVENT_TYPE, USER_ID, SESSION_ID, ITEM_ID, QUERY, PRICE)

# Event types in a fixed order: event_type_idx = position + 1 (0 = padding).
VIEW, CLICK, ADD_TO_CART, PURCHASE, SEARCH = "view", "click", "add_to_cart", "purchase", "search"
EVENT_TYPES = (VIEW, CLICK, ADD_TO_CART, PURCHASE, SEARCH)
ITEM_EVENT_TYPES = (VIEW, CLICK, ADD_TO_CART, PURCHASE)  # events that carry an item
EVENT_TYPE_INDEX = {name: i + 1 for i, name in enumerate(EVENT_TYPES)}
N_EVENT_TYPES = len(EVENT_TYPES) + 1  # including padding 0

# Time gaps: the seconds from a user's previous event to this one, bucketed on a roughly
# logarithmic scale (what matters is "same burst / same session / next day / weeks later",
# not the exact second). gap_bucket = 1 + number of edges <= gap; 0 = padding or no
# previous event (a user's first event, or histories without timestamps).
GAP_BUCKET_EDGES_SECONDS = (10, 30, 60, 120, 300, 600, 1_800, 3_600, 3 * 3_600, 12 * 3_600,
                            86_400, 3 * 86_400, 7 * 86_400, 30 * 86_400)
N_GAP_BUCKETS = len(GAP_BUCKET_EDGES_SECONDS) + 2  # including 0 (none)

# --- Catalog as landed (gzip JSON lines, one snapshot per day) ------------------------
CATEGORY = "category"
BRAND = "brand"
TITLE = "title"
CATALOG_FIELDS = (ITEM_ID, CATEGORY, BRAND, PRICE, TITLE)

# --- Lake columns added by the pipeline ----------------------------------------------
DT = "dt"  # partition column: the logical date, 'YYYY-MM-DD'
REASON = "reason"  # quarantine: why the row was removed (one of the codes below)
STAGE = "stage"  # quarantine: which job removed it ('clean' or 'denoise')
RECORD = "record"  # quarantine: the original row as a JSON string (or the raw line)

# Columns of clean/events and denoised/events (plus the dt partition column).
CLEAN_COLUMNS = (EVENT_ID, EVENT_TIME, EVENT_TYPE, USER_ID, SESSION_ID, ITEM_ID, QUERY, PRICE)
QUARANTINE_COLUMNS = (STAGE, REASON, RECORD, DT)

# Quarantine reason codes. Every removed row carries exactly one.
REASON_MALFORMED = "malformed_json"
REASON_MISSING_KEY = "missing_key"
REASON_BAD_TIMESTAMP = "bad_timestamp"
REASON_FUTURE_TIMESTAMP = "future_timestamp"
REASON_WRONG_DAY = "outside_partition_day"
REASON_BAD_PRICE = "bad_price"
REASON_UNKNOWN_EVENT_TYPE = "unknown_event_type"
REASON_UNKNOWN_ITEM = "unknown_item"
REASON_DUPLICATE = "exact_duplicate"
REASON_DOUBLE_CLICK = "double_click"
REASON_BOT = "bot_user"
REASON_BOT_DISTINCT_ITEMS = "bot_distinct_items"
REASON_BOT_REGULAR_TIMING = "bot_regular_timing"
REASON_SESSION_LENGTH_OUTLIER = "session_length_outlier"
REASON_ACCIDENTAL_CLICK = "accidental_click"
REASON_HEAVY_USER_CAP = "heavy_user_cap"
REASON_MIN_SUPPORT = "min_support"
REASON_CONSECUTIVE_REPEAT = "consecutive_repeat"

# --- Features written by normalize (the input of every model) -------------------------
ITEM_IDX = "item_idx"
CATEGORY_IDX = "category_idx"
BRAND_IDX = "brand_idx"
PRICE_BUCKET = "price_bucket"  # 1..N_PRICE_BUCKETS (quantiles of catalog price), 0 unknown
PRICE_Z = "price_z"  # standardized log1p(price), statistics from the catalog
TITLE_TOKENS = "title_tokens"  # array<int>: token ids 1..n_title_tokens, no padding
POPULARITY = "popularity"  # item-event count on training days only (no leakage)
IN_CATALOG = "in_catalog"  # bool: in tonight's catalog; other vocabulary items are never recommended
EVENT_TYPE_IDX = "event_type_idx"
TIMESTAMPS = "ts"  # array<long>: epoch seconds
SPLIT = "split"  # array<int>: per event, one of the split codes below

N_PRICE_BUCKETS = 10
SPLIT_TRAIN, SPLIT_VALID, SPLIT_TEST = 0, 1, 2
SPLIT_NAMES = {SPLIT_TRAIN: "train", SPLIT_VALID: "valid", SPLIT_TEST: "test"}

# Rolling item statistics over the last W training days (normalize): view counts and
# click / add-to-cart / purchase rates per view, smoothed toward the catalog-wide rate.
ITEM_STAT_WINDOWS_DAYS = (1, 7)
ITEM_STAT_KINDS = ("views", "ctr", "cart_rate", "purchase_rate")


def item_stat_column(kind: str, window_days: int) -> str:
    return f"{kind}_{window_days}d"


ITEM_STAT_COLUMNS = tuple(item_stat_column(kind, days) for days in ITEM_STAT_WINDOWS_DAYS
                          for kind in ITEM_STAT_KINDS)

# features/items/dt=D: one row per item of the persistent item vocabulary (ids 1..n_items).
ITEM_FEATURE_COLUMNS = (ITEM_IDX, ITEM_ID, CATEGORY_IDX, BRAND_IDX, PRICE_BUCKET, PRICE_Z,
                        TITLE_TOKENS, POPULARITY, IN_CATALOG, *ITEM_STAT_COLUMNS)
# features/sequences/dt=D: one row per user, parallel arrays sorted by time (item events only).
SEQUENCE_COLUMNS = (USER_ID, ITEM_IDX, EVENT_TYPE_IDX, TIMESTAMPS, SPLIT)
# features/sessions/dt=D: the same arrays per (user, session) -- what session-based models read.
SESSION_SEQUENCE_COLUMNS = (USER_ID, SESSION_ID, ITEM_IDX, EVENT_TYPE_IDX, TIMESTAMPS, SPLIT)

# --- Lake datasets (relative to the lake root; every one is partitioned by dt) ---------
LANDING_EVENTS = "landing/events"
LANDING_CATALOG = "landing/catalog"
RAW_EVENTS = "raw/events"
RAW_FILE_GLOB = "*.jsonl.gz"  # the event files of a raw partition (other files are skipped)
RAW_CATALOG = "raw/catalog"
CLEAN_EVENTS = "clean/events"
QUARANTINE_EVENTS = "quarantine/events"  # further partitioned by stage=
DENOISED_EVENTS = "denoised/events"
FEATURE_ITEMS = "features/items"
FEATURE_SEQUENCES = "features/sequences"
FEATURE_SESSIONS = "features/sessions"
FEATURE_META = "features/meta"  # meta.json: vocabulary sizes and the split dates; scalers.json
# Append-only vocabularies, one dataset per name (jobs/etl/vocabulary.py): <VOCABULARIES>/<name>/dt=D.
VOCABULARIES = "state/vocabularies"
VOCABULARY_NAMES = ("item", "category", "brand", "title_token")
VOCABULARY_VALUE, VOCABULARY_ID = "value", "id"  # the columns of every vocabulary table
MODEL_USER_ENCODER = "models/user_encoder"
MODEL_ITEM_ENCODER = "models/item_encoder"
MODEL_BASELINES = "models/baselines"  # S-POP, Item-KNN and ALS: fusion members beside the encoders
MODEL_FUSION = "models/fusion"
MODEL_SEARCH = "models/search"  # the search ranker and the lexical index it reorders
REPORTS = "reports"
SEARCH_REPORTS = "reports/search"
DATA_QUALITY = "reports/data_quality"
RECOMMENDATIONS = "recommendations"
# Top-N similar catalog items per catalog item (jobs/serving/similar_items.py), beside the recommendations.
SIMILAR_ITEMS = "similar_items"
# The head queries' results per user segment (jobs/serving/search_lists.py), beside them.
SEARCH_RESULTS = "search_results"
# One manifest per night (jobs/common/night.py): the dates the night processes and each stage's record.
NIGHT_MANIFEST = "manifests/night"
