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
_PARSED = "_parsed"
_PARSED_TIME = "_parsed_time"
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
    """Parse every raw line and add `reason`: the first failed rule, or null for kept events.

    `record` keeps the raw line of quarantined rows only (null on kept events).
    """
    # The timestamp is parsed once, into a column of its own that the rules read too.
    parsed = (_attach_catalog_flag(parse_raw_lines(raw_lines), catalog_items)
              .withColumn(_PARSED_TIME, _parsed_event_time()))
    row_labeled = parsed.select(
        RECORD, DT, *_typed_event_columns(),
        _first_failing_row_rule(max_future_skew_s, max_price).alias(REASON))
    return _label_sequence_rules(row_labeled, double_click_s)


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
    # Parsed once into a column of its own: fields read from one from_json expression
    # would each repeat the parse (the optimizer keeps the two projections apart because
    # from_json is not cheap to inline).
    with_struct = raw_lines.select(RECORD, DT, parsed.alias(_PARSED))
    struct = F.col(_PARSED)
    malformed = struct.isNull() | struct[CORRUPT_RECORD].isNotNull() | ~F.is_valid_utf8(RECORD)
    return with_struct.select(RECORD, DT, *[struct[name].alias(name) for name in RAW_EVENT_FIELDS],
                              malformed.alias(_MALFORMED))


def _attach_catalog_flag(parsed: DataFrame, catalog_items: DataFrame) -> DataFrame:
    # distinct: a catalog listing an item twice must not duplicate events in the join.
    known = catalog_items.select(DT, ITEM_ID).distinct().withColumn(_IN_CATALOG, F.lit(True))
    return (parsed.join(known, on=[DT, ITEM_ID], how="left")
            .withColumn(_IN_CATALOG, F.coalesce(F.col(_IN_CATALOG), F.lit(False))))


def _typed_event_columns() -> list[Column]:
    return [F.col(EVENT_ID), F.col(_PARSED_TIME).alias(EVENT_TIME), F.col(EVENT_TYPE), F.col(USER_ID),
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
    event_micros = F.unix_micros(F.col(_PARSED_TIME))
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


def _label_sequence_rules(row_labeled: DataFrame, double_click_s: float) -> DataFrame:
    """Rules 9 and 10 on the lines that passed rules 1-8, with one shuffle by (day, user).

    Both rules compare lines of one user and day: identical lines share their user, and a
    double click repeats the user's own item event. So every line goes through a single
    exchange on (dt, user_id), and each group of (dt, user_id, item_id, event_type) is
    read in time order with window functions, which stream over sorted rows. No union:
    a union of the passed and failed lines would be planned as two scans of the raw files.

    Rule 10 says "after the last *kept* one", which is sequential: in a burst at 0 s, 1.5 s
    and 3 s with a 2 s threshold, 1.5 s is a double click but 3 s is kept (3 s after the
    kept 0 s); no lag() can tell. Only a burst (item events each at most the threshold
    after the previous one) needs that fold: its first event is always kept, so each event
    folds over the times of its own burst so far. A burst of k clicks costs k * k / 2 steps;
    people make bursts of two or three, and a bot's long burst is at most its day's clicks on
    one item (the per-group fold this replaced cost the same).
    """
    passed = F.col(REASON).isNull()
    by_user = row_labeled.repartition(DT, USER_ID).withColumn(_MICROS, F.unix_micros(EVENT_TIME))
    group = (DT, USER_ID, ITEM_ID, EVENT_TYPE, passed.alias(_PASSED))
    # time, then event_id, then the raw line: identical lines lie next to each other.
    order = (_MICROS, EVENT_ID, RECORD)
    timeline = Window.partitionBy(*group).orderBy(*order)
    before = timeline.rowsBetween(Window.unboundedPreceding, -1)
    max_gap = F.lit(_micros(double_click_s))

    is_duplicate = passed & F.coalesce(F.lag(RECORD).over(timeline) == F.col(RECORD), F.lit(False))
    in_chain = passed & ~F.col(_DUPLICATE) & F.col(EVENT_TYPE).isin(*ITEM_EVENT_TYPES)
    previous_in_chain = F.last(F.when(F.col(_IN_CHAIN), F.col(_MICROS)), ignorenulls=True).over(before)
    starts_burst = F.col(_IN_CHAIN) & (previous_in_chain.isNull() | (F.col(_MICROS) - previous_in_chain > max_gap))
    burst = F.sum(F.col(_STARTS_BURST).cast("int")).over(timeline.rowsBetween(Window.unboundedPreceding, 0))
    burst_so_far = (Window.partitionBy(*group, _BURST).orderBy(*order)
                    .rowsBetween(Window.unboundedPreceding, 0))
    burst_times = F.collect_list(F.when(F.col(_IN_CHAIN), F.col(_MICROS))).over(burst_so_far)
    is_double = F.col(_IN_CHAIN) & ~F.col(_STARTS_BURST) & _last_is_double_click(burst_times, max_gap)

    labeled = (by_user.withColumn(_DUPLICATE, is_duplicate)
               .withColumn(_IN_CHAIN, in_chain)
               .withColumn(_STARTS_BURST, starts_burst)
               .withColumn(_BURST, burst)
               .withColumn(REASON, F.coalesce(F.col(REASON),
                                               F.when(F.col(_DUPLICATE), F.lit(REASON_DUPLICATE)),
                                               F.when(is_double, F.lit(REASON_DOUBLE_CLICK)))))
    # Only a quarantined line needs its raw text from here on: dropping it from kept rows
    # shrinks what write_labeled caches by the largest column.
    record = F.when(F.col(REASON).isNotNull(), F.col(RECORD)).alias(RECORD)
    return labeled.select(*[record if name == RECORD else name for name in row_labeled.columns])


def _last_is_double_click(times: Column, max_gap: Column) -> Column:
    """Whether the last of a burst's times (ascending, the first one kept) is a double click.

    Folds the burst in order, carrying the last kept time: a time at most max_gap after it
    is a double click and leaves it unchanged, any other time becomes the last kept one.
    """
    start = F.struct(F.lit(None).cast("long").alias("last_kept"), F.lit(False).alias("is_double"))

    def step(state: Column, time: Column) -> Column:
        is_double = state["last_kept"].isNotNull() & (time - state["last_kept"] <= max_gap)
        return F.struct(F.when(is_double, state["last_kept"]).otherwise(time).alias("last_kept"),
                        is_double.alias("is_double"))

    return F.aggregate(times, start, step, lambda state: state["is_double"])


_PASSED, _DUPLICATE, _IN_CHAIN, _STARTS_BURST, _BURST = "_passed", "_duplicate", "_in_chain", "_starts_burst", "_burst"


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
