"""Clean: raw event lines -> typed, validated events; every rejected line goes to quarantine.

Input:  raw/events/dt=D/*.jsonl.gz (one JSON object per line) and raw/catalog/dt=D.
Output: clean/events (Parquet, partitioned by dt, columns CLEAN_COLUMNS) and
        quarantine/events (partitioned by stage=clean/dt, columns stage, reason, record).

Every raw line ends up in exactly one of the two outputs, and a quarantined line carries
exactly one reason: the first rule it fails, in this fixed order

  1. malformed_json         the line is not a JSON object
  2. missing_key            event_id, user_id, event_type or event_time is null or blank,
                            or, on an item event (view/click/add_to_cart/purchase), item_id is
  3. bad_timestamp          event_time is not ISO-8601 with an offset, e.g. ...T10:15:03.123Z
  4. future_timestamp       later than the end of day D + clean.max_future_skew_s
  5. outside_partition_day  earlier than the start of day D
  6. unknown_event_type     not one of schema.EVENT_TYPES
  7. bad_price              present but not a finite number in [0, clean.max_price]
  8. unknown_item           an item event whose item_id is not in day D's catalog
  9. exact_duplicate        the identical raw line appeared before on day D (one copy is kept)
 10. double_click           an item event with the same user, item and event type as the
                            previous *kept* one, at most clean.double_click_s seconds later

Rules 1-8 look at one line; 9 and 10 compare lines, so they only see lines that passed 1-8.
Events up to max_future_skew_s after midnight stay in day D: that is clock skew, not a
future event. A null price is allowed (searches have none; an item event may lack one).

The kept events are then finished before they are written (finish_clean_events):

  pseudonymize  user_id becomes HMAC-SHA256(key, user_id) as 64 hex characters, and the
                free search text (query) is tokenized with e-mail addresses and long
                numbers masked, or dropped (config privacy; jobs/etl/privacy.py). The key comes
                from the environment, an Airflow connection or a key file at run time,
                never from code or the logged config.
  sessionize    events without a session id get one by inactivity gap (config sessionize;
                jobs/etl/sessionize.py). It runs on the hashed ids, because a generated session
                id embeds the user id. Sessions stay within their day.

Both only rewrite columns, so every raw line still ends up in exactly one output and the
job asserts raw = clean + quarantined per date. Nothing downstream of clean/events sees a
raw user id or raw search text. The quarantine keeps each rejected raw line exactly as it
came: it is the raw tier's audit trail (a line too broken to parse has no user id to hash),
and so needs the same access control as raw/.
"""

from __future__ import annotations

import functools
from typing import Callable

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs.common.lake import dataset_path
from jobs.common.night import Night
from jobs.etl.privacy import check_query_mode, keyed_hash, masked_query, resolve_user_id_key
from jobs.common.schema import (CLEAN_COLUMNS, CLEAN_EVENTS, DT, EVENT_ID, EVENT_TIME, EVENT_TYPE,
                         EVENT_TYPES, ITEM_EVENT_TYPES, ITEM_ID, PRICE, QUERY,
                         RAW_EVENT_FIELDS, RAW_EVENTS, REASON, REASON_BAD_PRICE,
                         REASON_BAD_TIMESTAMP, REASON_DOUBLE_CLICK, REASON_DUPLICATE,
                         REASON_FUTURE_TIMESTAMP, REASON_MALFORMED, REASON_MISSING_KEY,
                         REASON_UNKNOWN_EVENT_TYPE, REASON_UNKNOWN_ITEM, REASON_WRONG_DAY,
                         RECORD, SESSION_ID, STAGE, USER_ID)
from jobs.etl.sessionize import sessionize
from jobs.common.spark_session import get_spark
from jobs.common.spark_io import (CORRUPT_RECORD, RAW_FILE_GLOB, all_text_schema, check_conservation,
                             count_by_date, count_outcomes, count_quarantined, parsed_price,
                             read_catalogs, read_raw_lines, replace_stage_output,
                             validate_dates)

STAGE_NAME = "clean"

RULE_ORDER = (REASON_MALFORMED, REASON_MISSING_KEY, REASON_BAD_TIMESTAMP, REASON_FUTURE_TIMESTAMP,
              REASON_WRONG_DAY, REASON_UNKNOWN_EVENT_TYPE, REASON_BAD_PRICE, REASON_UNKNOWN_ITEM,
              REASON_DUPLICATE, REASON_DOUBLE_CLICK)

# Optional fraction of 1-6 digits and a mandatory offset ('Z' or +hh:mm): a timestamp
# without an offset is ambiguous, so it is rejected rather than guessed.
TIMESTAMP_FORMAT = "yyyy-MM-dd'T'HH:mm:ss[.SSSSSS]XXX"
MICROS_PER_SECOND = 1_000_000
MICROS_PER_DAY = 86_400 * MICROS_PER_SECOND

_MALFORMED = "_malformed"
_IN_CATALOG = "_in_catalog"
_MICROS = "_micros"


# --- Transform (pure: DataFrames and plain parameters in, DataFrames out) -------------

def clean_events(raw_lines: DataFrame, catalog_items: DataFrame, *, max_future_skew_s: float,
                 max_price: float, double_click_s: float) -> tuple[DataFrame, DataFrame]:
    """Split raw lines (columns record, dt) into (kept events, quarantined lines).

    catalog_items has columns item_id, dt: the items known on each day.
    """
    labeled = label_events(raw_lines, catalog_items, max_future_skew_s=max_future_skew_s,
                           max_price=max_price, double_click_s=double_click_s)
    return split_labeled(labeled, STAGE_NAME)


def label_events(raw_lines: DataFrame, catalog_items: DataFrame, *, max_future_skew_s: float,
                 max_price: float, double_click_s: float) -> DataFrame:
    """Parse every raw line and add `reason`: the first failed rule, or null for kept events."""
    parsed = _attach_catalog_flag(parse_raw_lines(raw_lines), catalog_items)
    row_labeled = parsed.select(
        RECORD, DT, *_typed_event_columns(),
        _first_failing_row_rule(max_future_skew_s, max_price).alias(REASON))
    return _label_double_clicks(_label_exact_duplicates(row_labeled), double_click_s)


def split_labeled(labeled: DataFrame, stage: str,
                  finish_kept: Callable[[DataFrame], DataFrame] | None = None) -> tuple[DataFrame, DataFrame]:
    """(kept events: CLEAN_COLUMNS + dt, the stage's quarantine rows: QUARANTINE_COLUMNS).

    labeled has the clean columns, dt, reason (null = kept) and record (what to quarantine).
    finish_kept, if given, transforms the kept events (same rows and columns) before they
    are returned; the quarantine is never passed through it.
    """
    kept = labeled.where(F.col(REASON).isNull()).select(*CLEAN_COLUMNS, DT)
    if finish_kept is not None:
        kept = finish_kept(kept).select(*CLEAN_COLUMNS, DT)
    quarantined = labeled.where(F.col(REASON).isNotNull()).select(
        F.lit(stage).alias(STAGE), REASON, RECORD, DT)
    return kept, quarantined


def write_labeled(spark: SparkSession, config: dict, stage: str, kept_dataset: str, labeled: DataFrame,
                  dates: list[str], also=None,
                  finish_kept: Callable[[DataFrame], DataFrame] | None = None) -> tuple[dict, object]:
    """Write a labeled frame's kept rows and quarantine; return (count_outcomes, also(labeled)).

    finish_kept: see split_labeled (clean pseudonymizes and sessionizes its kept rows).

    The labels are cached once: they feed the counts, `also` and both writes, and
    recomputing them (windows over a whole day) would multiply the work.
    """
    labeled = labeled.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        outcomes = count_outcomes(labeled, dates)
        extra = also(labeled) if also is not None else None
        kept, quarantined = split_labeled(labeled, stage, finish_kept)
        replace_stage_output(spark, config, stage, kept_dataset, kept, quarantined, outcomes)
    finally:
        labeled.unpersist()
    return outcomes, extra


def pseudonymize(kept: DataFrame, key: bytes, query_mode: str) -> DataFrame:
    """Kept events with user_id as its keyed hash and query masked (privacy.masked_query)."""
    return (kept.withColumn(USER_ID, keyed_hash(F.col(USER_ID), key))
            .withColumn(QUERY, masked_query(F.col(QUERY), query_mode)))


def finish_clean_events(kept: DataFrame, *, key: bytes, query_mode: str, inactivity_gap_s: float) -> DataFrame:
    """Pseudonymize, then sessionize: a generated session id embeds the (hashed) user id."""
    return sessionize(pseudonymize(kept, key, query_mode), inactivity_gap_s)


def parse_raw_lines(raw_lines: DataFrame) -> DataFrame:
    """Parse each line with every field as text, so a wrongly typed value stays visible.

    Adds the RAW_EVENT_FIELDS as string columns and a boolean `_malformed` (the line is not
    a JSON object). Type checks happen in the rules, where a failure gets a reason code.
    """
    parsed = F.from_json(RECORD, all_text_schema(RAW_EVENT_FIELDS), {"columnNameOfCorruptRecord": CORRUPT_RECORD})
    # from_json gives null for an empty line and fills _corrupt_record for any other non-object.
    # JSON text must be UTF-8 (RFC 8259); invalid bytes inside a string would otherwise be
    # decoded to U+FFFD and the damaged event kept.
    malformed = parsed.isNull() | parsed[CORRUPT_RECORD].isNotNull() | ~F.is_valid_utf8(RECORD)
    return raw_lines.select(RECORD, DT, *[parsed[name].alias(name) for name in RAW_EVENT_FIELDS],
                            malformed.alias(_MALFORMED))


def _attach_catalog_flag(parsed: DataFrame, catalog_items: DataFrame) -> DataFrame:
    # distinct: a catalog listing an item twice must not duplicate events in the join.
    known = catalog_items.select(DT, ITEM_ID).distinct().withColumn(_IN_CATALOG, F.lit(True))
    return (parsed.join(known, on=[DT, ITEM_ID], how="left")
            .withColumn(_IN_CATALOG, F.coalesce(F.col(_IN_CATALOG), F.lit(False))))


def _typed_event_columns() -> list[Column]:
    return [F.col(EVENT_ID), _parsed_event_time().alias(EVENT_TIME), F.col(EVENT_TYPE), F.col(USER_ID),
            F.col(SESSION_ID), F.col(ITEM_ID), F.col(QUERY), parsed_price().alias(PRICE)]


def _parsed_event_time() -> Column:
    # try_: with ANSI SQL on (Spark 4's default) a plain parse would fail the whole job.
    return F.try_to_timestamp(F.col(EVENT_TIME), F.lit(TIMESTAMP_FORMAT))


def _first_failing_row_rule(max_future_skew_s: float, max_price: float) -> Column:
    """Rules 1-8 as one column: coalesce picks the code of the first rule that fails."""
    def blank(name: str) -> Column:
        # (?U): Unicode whitespace (tab, CR/LF, no-break and ideographic spaces), which
        # trim() would not strip: an id of a lone tab is missing, as validate counts it.
        return F.col(name).isNull() | F.col(name).rlike(r"(?U)^\s*$")

    is_item_event = F.col(EVENT_TYPE).isin(*ITEM_EVENT_TYPES)
    # Integer microseconds since the epoch: exact comparisons, independent of the session
    # time zone (unix_date of the dt string is the UTC day number).
    event_micros = F.unix_micros(_parsed_event_time())
    day_start_micros = F.unix_date(F.to_date(F.col(DT))) * F.lit(MICROS_PER_DAY)
    latest_allowed_micros = day_start_micros + F.lit(MICROS_PER_DAY + _micros(max_future_skew_s))
    price = parsed_price()
    price_is_bad = F.col(PRICE).isNotNull() & (
        price.isNull() | F.isnan(price) | (price < 0) | (price > F.lit(float(max_price))))
    # Each condition may assume the earlier ones passed (e.g. that the timestamp parses).
    rules = [
        (REASON_MALFORMED, F.col(_MALFORMED)),
        (REASON_MISSING_KEY, blank(EVENT_ID) | blank(USER_ID) | blank(EVENT_TYPE) | blank(EVENT_TIME)
         | (is_item_event & blank(ITEM_ID))),
        (REASON_BAD_TIMESTAMP, event_micros.isNull()),
        (REASON_FUTURE_TIMESTAMP, event_micros > latest_allowed_micros),
        (REASON_WRONG_DAY, event_micros < day_start_micros),
        (REASON_UNKNOWN_EVENT_TYPE, ~F.col(EVENT_TYPE).isin(*EVENT_TYPES)),
        (REASON_BAD_PRICE, price_is_bad),
        (REASON_UNKNOWN_ITEM, is_item_event & ~F.col(_IN_CATALOG)),
    ]
    assert tuple(code for code, _ in rules) == RULE_ORDER[:len(rules)], "keep RULE_ORDER in sync"
    return F.coalesce(*[F.when(failed, F.lit(code)) for code, failed in rules])


def _label_exact_duplicates(labeled: DataFrame) -> DataFrame:
    """Rule 9: of identical lines of a day, the first copy is kept.

    The copies are byte-identical, so which one counts as "first" cannot change the output.
    Identical lines failing a row rule all carry that rule's reason instead.
    """
    copy_number = F.row_number().over(Window.partitionBy(DT, RECORD).orderBy(RECORD))
    return labeled.withColumn(
        REASON, F.coalesce(F.col(REASON), F.when(copy_number > 1, F.lit(REASON_DUPLICATE))))


def _label_double_clicks(labeled: DataFrame, double_click_s: float) -> DataFrame:
    """Rule 10 on surviving item events, per (day, user, item, event type) in time order.

    "Previous kept one" makes this a sequential scan: in a burst at 0 s, 1.5 s and 3 s with
    a 2 s threshold, 1.5 s is a double click but 3 s is kept (3 s after the kept 0 s).
    A lag() window cannot express that, so each group's events are folded in order.
    """
    is_candidate = F.col(REASON).isNull() & F.col(EVENT_TYPE).isin(*ITEM_EVENT_TYPES)
    # The struct sorts by time, then event_id, then the rest: a deterministic order.
    row = F.struct(F.unix_micros(EVENT_TIME).alias(_MICROS), EVENT_ID,
                   *[name for name in labeled.columns if name != EVENT_ID])
    groups = (labeled.where(is_candidate)
              .groupBy(DT, USER_ID, ITEM_ID, EVENT_TYPE)
              .agg(F.sort_array(F.collect_list(row)).alias("events"))
              .withColumn("is_double", _double_click_flags(F.col("events"), _micros(double_click_s))))
    flagged = groups.select(F.explode(F.arrays_zip("events", "is_double")).alias("pair")).select(
        *[F.col("pair.events")[name].alias(name) for name in labeled.columns if name != REASON],
        F.when(F.col("pair.is_double"), F.lit(REASON_DOUBLE_CLICK)).alias(REASON))
    return labeled.where(~is_candidate).unionByName(flagged)


def _double_click_flags(events: Column, max_gap_micros: int) -> Column:
    """array<boolean>: is each (time-sorted) event at most max_gap after the last kept one."""
    start = F.struct(F.lit(None).cast("long").alias("last_kept"),
                     F.array().cast("array<boolean>").alias("flags"))

    def step(state: Column, event: Column) -> Column:
        gap = event[_MICROS] - state["last_kept"]
        is_double = state["last_kept"].isNotNull() & (gap <= max_gap_micros)
        last_kept = F.when(is_double, state["last_kept"]).otherwise(event[_MICROS])
        return F.struct(last_kept.alias("last_kept"),
                        F.concat(state["flags"], F.array(is_double)).alias("flags"))

    return F.aggregate(events, start, step, lambda state: state["flags"])


def _micros(seconds: float) -> int:
    return int(round(float(seconds) * MICROS_PER_SECOND))


# --- Job -------------------------------------------------------------------------------

def run(night: Night) -> dict:
    """Clean the raw events of the night's dates.

    Returns {"dates": [...], "summary": {date: {"raw_lines", "clean", "quarantined",
    "reasons": {reason: rows}}}}.
    """
    config, dates = night.config, validate_dates(list(night.dates))
    # Settings and key first: a missing key should stop the night before any Spark work.
    finish_kept = functools.partial(
        finish_clean_events, key=resolve_user_id_key(config),
        query_mode=check_query_mode(config["privacy"]["query_text"]),
        inactivity_gap_s=config["sessionize"]["inactivity_gap_s"])
    spark = get_spark(config)
    raw_lines = read_raw_lines(spark, config, dates)
    raw_counts = {ds: 0 for ds in dates}
    raw_counts.update({row[DT]: row["count"] for row in raw_lines.groupBy(DT).count().collect()})
    empty_days = [ds for ds, lines in raw_counts.items() if lines == 0]
    if empty_days:
        raise ValueError(f"no lines in {RAW_FILE_GLOB} files under {dataset_path(config, RAW_EVENTS)} "
                         f"for {empty_days}")
    catalog_items = read_catalogs(spark, config, dates).select(ITEM_ID, DT)

    settings = config["clean"]
    labeled = label_events(raw_lines, catalog_items, max_future_skew_s=settings["max_future_skew_s"],
                           max_price=settings["max_price"], double_click_s=settings["double_click_s"])
    outcomes, _ = write_labeled(spark, config, STAGE_NAME, CLEAN_EVENTS, labeled, dates, finish_kept=finish_kept)

    clean_counts = count_by_date(spark, config, CLEAN_EVENTS, dates)
    quarantined_counts = count_quarantined(spark, config, STAGE_NAME, dates)
    check_conservation(STAGE_NAME, raw_counts, clean_counts, quarantined_counts)
    return {"dates": dates, "summary": {
        ds: {"raw_lines": raw_counts[ds], "clean": clean_counts[ds], "quarantined": quarantined_counts[ds],
             "reasons": outcomes[ds]["reasons"]}
        for ds in dates}}
