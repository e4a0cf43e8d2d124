"""Clean: raw event lines -> typed, validated events; every rejected line goes to quarantine.

Input:  raw/events/dt=D/*.jsonl.gz (one JSON object per line) and raw/catalog/dt=D.
Output: clean/events (Parquet, partitioned by dt, columns CLEAN_COLUMNS) and
        quarantine/events (partitioned by stage=clean/dt, columns stage, reason, record).

Every raw line ends up in exactly one of the two outputs, and a quarantined line carries
exactly one reason: the first rule it fails, in this fixed order

  1. malformed_json         the line is not a JSON object
  2. missing_key            event_id, user_id, event_type or event_time is null or blank,
                            or item_id is on an item event (view/click/add_to_cart/purchase)
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
"""

from __future__ import annotations

import functools

from jobs.lake import dataset_path, partition_path
from jobs.schema import (CLEAN_EVENTS, DT, EVENT_ID, EVENT_TIME, EVENT_TYPE, EVENT_TYPES,
                         ITEM_EVENT_TYPES, ITEM_ID, PRICE, QUARANTINE_EVENTS, QUERY,
                         RAW_CATALOG, RAW_EVENT_FIELDS, RAW_EVENTS, REASON, REASON_BAD_PRICE,
                         REASON_BAD_TIMESTAMP, REASON_DOUBLE_CLICK, REASON_DUPLICATE,
                         REASON_FUTURE_TIMESTAMP, REASON_MALFORMED, REASON_MISSING_KEY,
                         REASON_UNKNOWN_EVENT_TYPE, REASON_UNKNOWN_ITEM, REASON_WRONG_DAY,
                         RECORD, SESSION_ID, STAGE, USER_ID, CATALOG_FIELDS)

STAGE_NAME = "clean"

# Columns of clean/events and denoised/events (plus the dt partition column).
CLEAN_COLUMNS = (EVENT_ID, EVENT_TIME, EVENT_TYPE, USER_ID, SESSION_ID, ITEM_ID, QUERY, PRICE)
QUARANTINE_COLUMNS = (STAGE, REASON, RECORD, DT)

RULE_ORDER = (REASON_MALFORMED, REASON_MISSING_KEY, REASON_BAD_TIMESTAMP, REASON_FUTURE_TIMESTAMP,
              REASON_WRONG_DAY, REASON_UNKNOWN_EVENT_TYPE, REASON_BAD_PRICE, REASON_UNKNOWN_ITEM,
              REASON_DUPLICATE, REASON_DOUBLE_CLICK)

RAW_FILE_GLOB = "*.jsonl.gz"
# Optional fraction of 1-6 digits and a mandatory offset ('Z' or +hh:mm): a timestamp
# without an offset is ambiguous, so it is rejected rather than guessed.
TIMESTAMP_FORMAT = "yyyy-MM-dd'T'HH:mm:ss[.SSSSSS]XXX"
MICROS_PER_SECOND = 1_000_000
MICROS_PER_DAY = 86_400 * MICROS_PER_SECOND

_CORRUPT = "_corrupt_record"
_IN_CATALOG = "_in_catalog"
_MICROS = "_micros"


# --- Transform (pure: DataFrames and plain parameters in, DataFrames out) -------------

def clean_events(raw_lines, catalog_items, *, max_future_skew_s: float, max_price: float,
                 double_click_s: float):
    """Split raw lines (columns record, dt) into (kept events, quarantined lines).

    catalog_items has columns item_id, dt: the items known on each day.
    """
    labeled = label_events(raw_lines, catalog_items, max_future_skew_s=max_future_skew_s,
                           max_price=max_price, double_click_s=double_click_s)
    return split_labeled(labeled)


def label_events(raw_lines, catalog_items, *, max_future_skew_s: float, max_price: float,
                 double_click_s: float):
    """Parse every raw line and add `reason`: the first failed rule, or null for kept events."""
    parsed = _attach_catalog_flag(parse_raw_lines(raw_lines), catalog_items)
    row_labeled = parsed.select(
        RECORD, DT, *_typed_event_columns(),
        _first_failing_row_rule(max_future_skew_s, max_price).alias(REASON))
    return _label_double_clicks(_label_exact_duplicates(row_labeled), double_click_s)


def split_labeled(labeled):
    """(kept events with CLEAN_COLUMNS + dt, quarantine rows with QUARANTINE_COLUMNS)."""
    from pyspark.sql import functions as F

    kept = labeled.where(F.col(REASON).isNull()).select(*CLEAN_COLUMNS, DT)
    quarantined = labeled.where(F.col(REASON).isNotNull()).select(
        F.lit(STAGE_NAME).alias(STAGE), REASON, RECORD, DT)
    return kept, quarantined


def parse_raw_lines(raw_lines):
    """Parse each line with every field as text, so a wrongly typed value stays visible.

    Adds the RAW_EVENT_FIELDS as string columns and `_corrupt_record` (the line when it is
    not a JSON object). Type checks happen in the rules, where they get a reason code.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    schema = T.StructType([T.StructField(name, T.StringType()) for name in RAW_EVENT_FIELDS]
                          + [T.StructField(_CORRUPT, T.StringType())])
    parsed = F.from_json(RECORD, schema, {"columnNameOfCorruptRecord": _CORRUPT, "mode": "PERMISSIVE"})
    # from_json gives null for an empty line and fills _corrupt_record for any other non-object.
    malformed = parsed.isNull() | parsed[_CORRUPT].isNotNull()
    return raw_lines.select(
        RECORD, DT, *[parsed[name].alias(name) for name in RAW_EVENT_FIELDS],
        malformed.alias(_CORRUPT))


def _attach_catalog_flag(parsed, catalog_items):
    from pyspark.sql import functions as F

    # distinct: a catalog listing an item twice must not duplicate events in the join.
    known = catalog_items.select(DT, ITEM_ID).distinct().withColumn(_IN_CATALOG, F.lit(True))
    return (parsed.join(known, on=[DT, ITEM_ID], how="left")
            .withColumn(_IN_CATALOG, F.coalesce(F.col(_IN_CATALOG), F.lit(False))))


def _typed_event_columns():
    from pyspark.sql import functions as F

    return [
        F.col(EVENT_ID), _parsed_event_time().alias(EVENT_TIME), F.col(EVENT_TYPE), F.col(USER_ID),
        F.col(SESSION_ID), F.col(ITEM_ID), F.col(QUERY), F.col(PRICE).try_cast("double").alias(PRICE),
    ]


def _parsed_event_time():
    from pyspark.sql import functions as F

    return F.try_to_timestamp(F.col(EVENT_TIME), F.lit(TIMESTAMP_FORMAT))


def _first_failing_row_rule(max_future_skew_s: float, max_price: float):
    """Rules 1-8 as one column: coalesce picks the code of the first rule that fails."""
    from pyspark.sql import functions as F

    def blank(name):
        return F.col(name).isNull() | (F.trim(F.col(name)) == "")

    is_item_event = F.col(EVENT_TYPE).isin(*ITEM_EVENT_TYPES)
    event_micros = F.unix_micros(_parsed_event_time())
    day_start_micros = F.unix_date(F.to_date(F.col(DT))) * F.lit(MICROS_PER_DAY)
    latest_allowed_micros = day_start_micros + F.lit(MICROS_PER_DAY + _micros(max_future_skew_s))
    price = F.col(PRICE).try_cast("double")
    price_is_bad = F.col(PRICE).isNotNull() & (
        price.isNull() | F.isnan(price) | (price < 0) | (price > F.lit(float(max_price))))
    # Each condition may assume the earlier ones passed (e.g. the timestamp parses).
    rules = [
        (REASON_MALFORMED, F.col(_CORRUPT)),
        (REASON_MISSING_KEY, blank(EVENT_ID) | blank(USER_ID) | blank(EVENT_TYPE) | blank(EVENT_TIME)
         | (is_item_event & blank(ITEM_ID))),
        (REASON_BAD_TIMESTAMP, event_micros.isNull()),
        (REASON_FUTURE_TIMESTAMP, event_micros > latest_allowed_micros),
        (REASON_WRONG_DAY, event_micros < day_start_micros),
        (REASON_UNKNOWN_EVENT_TYPE, ~F.col(EVENT_TYPE).isin(*EVENT_TYPES)),
        (REASON_BAD_PRICE, price_is_bad),
        (REASON_UNKNOWN_ITEM, is_item_event & ~F.col(_IN_CATALOG)),
    ]
    assert tuple(code for code, _ in rules) == RULE_ORDER[:len(rules)]
    return F.coalesce(*[F.when(failed, F.lit(code)) for code, failed in rules])


def _label_exact_duplicates(labeled):
    """Rule 9: of identical lines of a day, the first copy is kept.

    The copies are byte-identical, so which one counts as "first" cannot change the output.
    Identical lines failing a row rule all carry that rule's reason instead.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    copy_number = F.row_number().over(Window.partitionBy(DT, RECORD).orderBy(RECORD))
    return labeled.withColumn(
        REASON, F.coalesce(F.col(REASON), F.when(copy_number > 1, F.lit(REASON_DUPLICATE))))


def _label_double_clicks(labeled, double_click_s: float):
    """Rule 10 on surviving item events, per (day, user, item, event type) in time order.

    "Previous kept one" makes this a sequential scan: in a burst at 0 s, 1.5 s and 3 s with
    a 2 s threshold, 1.5 s is a double click but 3 s is kept (3 s after the kept 0 s).
    A lag() window cannot express that, so each group's events are folded in order.
    """
    from pyspark.sql import functions as F

    is_candidate = F.col(REASON).isNull() & F.col(EVENT_TYPE).isin(*ITEM_EVENT_TYPES)
    others = labeled.where(~is_candidate)
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
    return others.unionByName(flagged)


def _double_click_flags(events, max_gap_micros: int):
    """array<boolean>: is each (time-sorted) event within max_gap of the last kept one."""
    from pyspark.sql import functions as F

    start = F.struct(F.lit(None).cast("long").alias("last_kept"),
                     F.array().cast("array<boolean>").alias("flags"))

    def step(state, event):
        is_double = state["last_kept"].isNotNull() & (event[_MICROS] - state["last_kept"] <= max_gap_micros)
        return F.struct(F.when(is_double, state["last_kept"]).otherwise(event[_MICROS]).alias("last_kept"),
                        F.concat(state["flags"], F.array(is_double)).alias("flags"))

    return F.aggregate(events, start, step, lambda state: state["flags"])


def _micros(seconds: float) -> int:
    return int(round(float(seconds) * MICROS_PER_SECOND))


# --- Lake I/O shared by the Spark stages ------------------------------------------------

def union_all(frames):
    return functools.reduce(lambda left, right: left.unionByName(right), frames)


def read_raw_lines(spark, config: dict, dates: list[str]):
    """Raw event lines of each date as (record, dt); a missing or empty day is a ValueError."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    frames = []
    for ds in dates:
        pattern = f"{partition_path(config, RAW_EVENTS, ds)}/{RAW_FILE_GLOB}"
        try:
            lines = spark.read.text(pattern)
        except AnalysisException as error:
            raise ValueError(f"no raw event files for {ds}: nothing matches {pattern} "
                             f"(did ingest run for this date?)") from error
        frames.append(lines.select(F.col("value").alias(RECORD), F.lit(ds).alias(DT)))
    return union_all(frames)


def read_catalog(spark, config: dict, ds: str):
    """Day ds's catalog with CATALOG_FIELDS (price as double) and dt; validated.

    A catalog line that is not a JSON object, lacks item_id or repeats one is a ValueError:
    item ids and indices are built from the catalog, so guessing would corrupt them.
    A non-numeric or negative price is kept as null (unknown price).
    """
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    path = f"{partition_path(config, RAW_CATALOG, ds)}/{RAW_FILE_GLOB}"
    schema = T.StructType([T.StructField(name, T.StringType()) for name in CATALOG_FIELDS]
                          + [T.StructField(_CORRUPT, T.StringType())])
    try:
        lines = spark.read.text(path)
    except AnalysisException as error:
        raise ValueError(f"no catalog for {ds}: nothing matches {path}") from error
    parsed = F.from_json("value", schema, {"columnNameOfCorruptRecord": _CORRUPT})
    rows = lines.select(parsed.alias("row"), F.col("value"))
    bad = rows.where(F.col("row").isNull() | F.col(f"row.{_CORRUPT}").isNotNull()
                     | F.col(f"row.{ITEM_ID}").isNull() | (F.trim(F.col(f"row.{ITEM_ID}")) == ""))
    first_bad = bad.select("value").first()
    if first_bad is not None:
        raise ValueError(f"catalog {path}: line without a JSON object or item_id: {first_bad[0]!r}")
    price = F.col(f"row.{PRICE}").try_cast("double")
    catalog = rows.select(
        *[F.col(f"row.{name}").alias(name) for name in CATALOG_FIELDS if name != PRICE],
        F.when(price >= 0, price).alias(PRICE), F.lit(ds).alias(DT)).select(*CATALOG_FIELDS, DT)
    repeated = catalog.groupBy(ITEM_ID).count().where(F.col("count") > 1).select(ITEM_ID).first()
    if repeated is not None:
        raise ValueError(f"catalog {path}: item_id {repeated[0]!r} appears more than once")
    return catalog


def read_event_partitions(spark, config: dict, dataset: str, dates: list[str]):
    """Parquet partitions of an event dataset for the dates, with dt as a 'YYYY-MM-DD' string."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    frames = []
    for ds in dates:
        path = partition_path(config, dataset, ds)
        try:
            frames.append(spark.read.parquet(path).withColumn(DT, F.lit(ds)))
        except AnalysisException as error:
            raise ValueError(f"no {dataset} partition for {ds} at {path}") from error
    return union_all(frames)


def write_partitions(frame, config: dict, dataset: str, partition_columns: tuple[str, ...] = (DT,)) -> None:
    """Replace exactly the partitions present in frame; other dates stay untouched.

    The write option makes the overwrite dynamic even if the session default is static,
    which would otherwise wipe every date of the dataset.
    """
    (frame.write.mode("overwrite").option("partitionOverwriteMode", "dynamic")
     .partitionBy(*partition_columns).parquet(dataset_path(config, dataset)))


def delete_partitions(spark, paths: list[str]) -> None:
    """Remove partition folders (any Hadoop filesystem) that a re-run left without rows.

    Dynamic overwrite only replaces partitions that receive rows, so a date whose rows all
    disappeared would otherwise keep the previous run's output.
    """
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    for path in paths:
        hadoop_path = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(path)
        filesystem = hadoop_path.getFileSystem(hadoop_conf)
        if filesystem.exists(hadoop_path):
            filesystem.delete(hadoop_path, True)


def count_by_date(spark, config: dict, dataset: str, dates: list[str], stage: str | None = None) -> dict:
    """{date: rows on disk} for a dt-partitioned dataset (quarantine: of one stage)."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    counts = {ds: 0 for ds in dates}
    try:
        frame = spark.read.parquet(dataset_path(config, dataset))
    except AnalysisException:  # nothing written yet
        return counts
    if stage is not None:
        frame = frame.where(F.col(STAGE) == stage)
    rows = (frame.withColumn(DT, F.col(DT).cast("string")).where(F.col(DT).isin(*dates))
            .groupBy(DT).count().collect())
    counts.update({row[DT]: row["count"] for row in rows})
    return counts


def check_conservation(stage: str, source_counts: dict, kept_counts: dict, quarantined_counts: dict) -> None:
    """Every input row of each date must be on disk exactly once: kept or quarantined."""
    for ds, source_rows in source_counts.items():
        written = kept_counts.get(ds, 0) + quarantined_counts.get(ds, 0)
        if written != source_rows:
            raise RuntimeError(
                f"{stage} {ds}: {source_rows} input rows but {kept_counts.get(ds, 0)} kept + "
                f"{quarantined_counts.get(ds, 0)} quarantined = {written} written; output is inconsistent")


def replace_stage_output(spark, config: dict, dates: list[str], stage: str, kept, quarantined,
                         kept_dataset: str) -> None:
    """Write kept rows and this stage's quarantine for the dates, dropping stale partitions."""
    kept_counts = {row[DT]: row["count"] for row in kept.groupBy(DT).count().collect()}
    quarantined_counts = {row[DT]: row["count"] for row in quarantined.groupBy(DT).count().collect()}
    write_partitions(kept, config, kept_dataset)
    write_partitions(quarantined, config, QUARANTINE_EVENTS, (STAGE, DT))
    stale = [partition_path(config, kept_dataset, ds) for ds in dates if not kept_counts.get(ds)]
    stale += [f"{dataset_path(config, QUARANTINE_EVENTS)}/{STAGE}={stage}/{DT}={ds}"
              for ds in dates if not quarantined_counts.get(ds)]
    delete_partitions(spark, stale)


# --- Job -------------------------------------------------------------------------------

def main(config: dict, dates: list[str]) -> dict:
    """Clean the raw events of the dates; return {date: {raw_lines, clean, quarantined, reasons}}."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    spark = get_spark_for(config)
    raw_lines = read_raw_lines(spark, config, dates)
    raw_counts = {row[DT]: row["count"] for row in raw_lines.groupBy(DT).count().collect()}
    empty_days = [ds for ds in dates if not raw_counts.get(ds)]
    if empty_days:
        raise ValueError(f"raw event files contain no lines for {empty_days} under "
                         f"{dataset_path(config, RAW_EVENTS)}")
    catalog_items = union_all([read_catalog(spark, config, ds).select(ITEM_ID, DT) for ds in dates])

    settings = config["clean"]
    labeled = label_events(raw_lines, catalog_items, max_future_skew_s=settings["max_future_skew_s"],
                           max_price=settings["max_price"], double_click_s=settings["double_click_s"])
    # Cached: the labels feed the counts and both writes; recomputing would triple the work.
    labeled = labeled.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        kept, quarantined = split_labeled(labeled)
        replace_stage_output(spark, config, dates, STAGE_NAME, kept, quarantined, CLEAN_EVENTS)
        reason_counts = labeled.where(F.col(REASON).isNotNull()).groupBy(DT, REASON).count().collect()
    finally:
        labeled.unpersist()

    clean_counts = count_by_date(spark, config, CLEAN_EVENTS, dates)
    quarantined_counts = count_by_date(spark, config, QUARANTINE_EVENTS, dates, stage=STAGE_NAME)
    check_conservation(STAGE_NAME, raw_counts, clean_counts, quarantined_counts)
    return {ds: {"raw_lines": raw_counts[ds], "clean": clean_counts[ds],
                 "quarantined": quarantined_counts[ds],
                 "reasons": {row[REASON]: row["count"] for row in reason_counts if row[DT] == ds}}
            for ds in dates}


def get_spark_for(config: dict):
    from jobs.spark import get_spark

    return get_spark(config)
