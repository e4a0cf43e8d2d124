"""Normalize: denoised events + day ds's catalog -> the integer features every model reads.

Outputs for the logical date ds (each replaces only dt=ds):
  features/items/dt=ds      one row per catalog item, schema.ITEM_FEATURE_COLUMNS
  features/sequences/dt=ds  one row per user, parallel arrays in time order, SEQUENCE_COLUMNS
  features/meta/dt=ds/meta.json  vocabulary sizes, split dates and counts

Split by day: test = ds, valid = the day before, train = the earlier days of the window.
Anything learned from data (popularity) uses train days only, so validation and test
never leak into features. Vocabularies come from the catalog, which is not behaviour.

Id conventions (schema): every vocabulary starts at 1 in sorted order, 0 means padding or
unknown. meta's n_items / n_categories / n_brands / n_title_tokens / n_price_buckets are the
largest id (an embedding needs n + 1 rows); n_event_types is schema.N_EVENT_TYPES, which
already counts the padding 0.
"""

from __future__ import annotations

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

import dataclasses
import json
import os

from jobs.spark_lake import read_catalog, read_event_partitions, write_partitions
from jobs.lake import days_back, existing_partitions, parse_ds, partition_path, replace_partition
from jobs.schema import (BRAND, BRAND_IDX, CATEGORY, CATEGORY_IDX, DENOISED_EVENTS, DT, EVENT_ID,
                         EVENT_TIME, EVENT_TYPE, EVENT_TYPE_IDX, EVENT_TYPE_INDEX, FEATURE_ITEMS,
                         FEATURE_META, FEATURE_SEQUENCES, ITEM_EVENT_TYPES,
                         ITEM_ID, ITEM_IDX, N_EVENT_TYPES, N_PRICE_BUCKETS, POPULARITY, PRICE,
                         PRICE_BUCKET, PRICE_Z, SEQUENCE_COLUMNS, SPLIT, SPLIT_NAMES, SPLIT_TEST,
                         SPLIT_TRAIN, SPLIT_VALID, TIMESTAMPS, TITLE, TITLE_TOKENS, USER_ID)
from jobs.spark import get_spark

MIN_DATES = 3  # at least one day each for train, valid and test
META_FILE = "meta.json"


@dataclasses.dataclass(frozen=True)
class SplitDates:
    train: list[str]
    valid: str
    test: str

    @property
    def all(self) -> list[str]:
        return [*self.train, self.valid, self.test]


def plan_splits(ds: str, window_days: int, available: list[str]) -> SplitDates:
    """Pick the window's dates that exist and assign each to a split; ValueError if unusable."""
    window = days_back(ds, window_days)
    available_dates = set(available)
    present = [day for day in window if day in available_dates]
    valid = days_back(ds, 2)[0]
    if ds not in present:
        raise ValueError(f"no denoised events for the logical date {ds}: run clean and denoise first")
    if len(present) < MIN_DATES:
        raise ValueError(f"normalize {ds} needs denoised events on at least {MIN_DATES} of the "
                         f"{window_days} days {window[0]}..{ds}; found {present}")
    if valid not in present:
        raise ValueError(f"normalize {ds}: the validation day {valid} has no denoised events")
    return SplitDates(train=[day for day in present if day < valid], valid=valid, test=ds)


# --- Items ---------------------------------------------------------------------------------

def price_statistics(catalog: DataFrame) -> dict:
    """Decile cut points and log1p(price) mean / population std over the catalog's known prices."""
    deciles = [k / N_PRICE_BUCKETS for k in range(1, N_PRICE_BUCKETS)]
    log_price = F.log1p(F.col(PRICE))
    row = catalog.where(F.col(PRICE).isNotNull()).agg(
        F.percentile(PRICE, deciles).alias("cuts"), F.avg(log_price).alias("mean"),
        F.stddev_pop(log_price).alias("std")).first()
    return {"cuts": row["cuts"] or [], "log_mean": row["mean"] or 0.0, "log_std": row["std"] or 0.0}


def item_features(catalog: DataFrame, train_events: DataFrame, prices: dict) -> DataFrame:
    """One row per catalog item with ITEM_FEATURE_COLUMNS; ids are deterministic.

    prices is price_statistics(catalog); train_events are the events of the train days.
    Building the plan already runs the (small) vocabulary jobs; the rest stays lazy.
    """
    popularity = (train_events.where(F.col(EVENT_TYPE).isin(*ITEM_EVENT_TYPES))
                  .groupBy(ITEM_ID).agg(F.count(F.lit(1)).alias(POPULARITY)))
    return (catalog
            .join(_vocabulary(catalog, ITEM_ID, ITEM_IDX), on=ITEM_ID, how="inner")
            .join(_vocabulary(catalog, CATEGORY, CATEGORY_IDX), on=CATEGORY, how="left")
            .join(_vocabulary(catalog, BRAND, BRAND_IDX), on=BRAND, how="left")
            .join(title_token_ids(catalog), on=ITEM_ID, how="left")
            .join(popularity, on=ITEM_ID, how="left")
            .select(
                ITEM_IDX, ITEM_ID,
                F.coalesce(CATEGORY_IDX, F.lit(0)).cast("int").alias(CATEGORY_IDX),
                F.coalesce(BRAND_IDX, F.lit(0)).cast("int").alias(BRAND_IDX),
                _price_bucket(prices["cuts"]).alias(PRICE_BUCKET),
                _price_z(prices["log_mean"], prices["log_std"]).alias(PRICE_Z),
                F.coalesce(TITLE_TOKENS, F.array().cast("array<int>")).alias(TITLE_TOKENS),
                F.coalesce(POPULARITY, F.lit(0)).cast("long").alias(POPULARITY)))


def _vocabulary(frame: DataFrame, column: str, index_column: str) -> DataFrame:
    """(value, id): the distinct non-null values of column numbered 1.. in sorted order.

    Vocabularies are catalog-sized (items, brands, words), so the sorted values are
    numbered on the driver, as Spark ML's StringIndexer does; a global row_number window
    would instead funnel them through one partition. Events never come here.
    """
    distinct = frame.select(column).where(F.col(column).isNotNull()).distinct().orderBy(column)
    values = [row[0] for row in distinct.collect()]
    return frame.sparkSession.createDataFrame(
        list(zip(values, range(1, len(values) + 1))),
        T.StructType([T.StructField(column, T.StringType()), T.StructField(index_column, T.IntegerType())]))


def title_token_ids(catalog: DataFrame) -> DataFrame:
    """(item_id, title_tokens): lowercased whitespace tokens of the title as vocabulary ids."""
    words = F.filter(F.split(F.lower(F.col(TITLE)), r"\s+"), lambda word: word != "")
    tokens = catalog.select(ITEM_ID, F.posexplode(words).alias("position", "token"))
    vocabulary = _vocabulary(tokens, "token", "token_id")
    in_title_order = F.sort_array(F.collect_list(F.struct("position", "token_id")))
    return (tokens.join(vocabulary, on="token").groupBy(ITEM_ID)
            .agg(in_title_order.alias("tokens"))
            .select(ITEM_ID, F.col("tokens.token_id").cast("array<int>").alias(TITLE_TOKENS)))


def _price_bucket(cuts: list[float]) -> Column:
    """1 + the number of decile cut points below the price: 1..N_PRICE_BUCKETS, 0 if unknown."""
    if not cuts:
        return F.lit(0).cast("int")
    cut_points = F.array(*[F.lit(float(cut)) for cut in cuts])
    below = F.size(F.filter(cut_points, lambda cut: cut < F.col(PRICE)))
    return F.when(F.col(PRICE).isNull(), F.lit(0)).otherwise(below + 1).cast("int")


def _price_z(log_mean: float, log_std: float) -> Column:
    """Standardized log1p(price); 0 (the mean) for an unknown price or a constant catalog."""
    if log_std == 0:
        return F.lit(0.0).cast("float")
    z = (F.log1p(F.col(PRICE)) - F.lit(log_mean)) / F.lit(log_std)
    return F.coalesce(z, F.lit(0.0)).cast("float")


# --- Sequences -----------------------------------------------------------------------------

def index_item_events(events: DataFrame, items: DataFrame, splits: SplitDates) -> DataFrame:
    """Item events with user_id, event_time, event_id, item_idx (null if not in the catalog),
    event_type_idx, ts and split. Searches carry no item and are left out."""
    type_index = F.create_map(*[F.lit(value) for pair in EVENT_TYPE_INDEX.items() for value in pair])
    split = (F.when(F.col(DT) == splits.test, F.lit(SPLIT_TEST))
             .when(F.col(DT) == splits.valid, F.lit(SPLIT_VALID))
             .otherwise(F.lit(SPLIT_TRAIN)))
    item_events = events.where(F.col(EVENT_TYPE).isin(*ITEM_EVENT_TYPES) & F.col(ITEM_ID).isNotNull())
    return (item_events.join(items.select(ITEM_ID, ITEM_IDX), on=ITEM_ID, how="left")
            .select(USER_ID, EVENT_TIME, EVENT_ID, ITEM_IDX,
                    type_index[F.col(EVENT_TYPE)].cast("int").alias(EVENT_TYPE_IDX),
                    F.unix_seconds(EVENT_TIME).alias(TIMESTAMPS), split.cast("int").alias(SPLIT)))


def build_sequences(indexed_events: DataFrame) -> DataFrame:
    """One row per user: SEQUENCE_COLUMNS arrays sorted by (event_time, event_id)."""
    # The struct sorts by its first fields: time, then event_id as the tie-break.
    event = F.struct(EVENT_TIME, EVENT_ID, ITEM_IDX, EVENT_TYPE_IDX, TIMESTAMPS, SPLIT)
    timelines = (indexed_events.where(F.col(ITEM_IDX).isNotNull()).groupBy(USER_ID)
                 .agg(F.sort_array(F.collect_list(event)).alias("events")))
    return timelines.select(USER_ID, *[F.col(f"events.{name}").alias(name) for name in SEQUENCE_COLUMNS[1:]])


def count_indexed_events(indexed_events: DataFrame) -> tuple[dict, int]:
    """({split name: events kept}, events dropped because their item is not in the catalog)."""
    rows = indexed_events.groupBy(F.col(ITEM_IDX).isNull().alias("unknown"), SPLIT).count().collect()
    per_split = {name: 0 for name in SPLIT_NAMES.values()}
    dropped = 0
    for row in rows:
        if row["unknown"]:
            dropped += row["count"]
        else:
            per_split[SPLIT_NAMES[row[SPLIT]]] += row["count"]
    return per_split, dropped


def vocabulary_sizes(items: DataFrame) -> dict:
    """Largest id of each catalog vocabulary (ids are dense, so this is also its size)."""
    row = items.agg(F.count(F.lit(1)).alias("n_items"), F.max(CATEGORY_IDX).alias("n_categories"),
                    F.max(BRAND_IDX).alias("n_brands"),
                    F.max(F.array_max(TITLE_TOKENS)).alias("n_title_tokens")).first()
    return {key: int(row[key] or 0) for key in ("n_items", "n_categories", "n_brands", "n_title_tokens")}


# --- Job -------------------------------------------------------------------------------------

def main(config: dict, ds: str) -> dict:
    """Build the features of day ds; returns the meta dict written to meta.json."""
    parse_ds(ds)  # a malformed date fails here, before Spark starts
    spark = get_spark(config)
    splits = plan_splits(ds, config["window_days"], existing_partitions(config, DENOISED_EVENTS))
    events = read_event_partitions(spark, config, DENOISED_EVENTS, splits.all)
    catalog = read_catalog(spark, config, ds)

    prices = price_statistics(catalog)
    items = item_features(catalog, events.where(F.col(DT).isin(*splits.train)), prices)
    items = items.persist(StorageLevel.MEMORY_AND_DISK)  # written, counted and joined to events
    indexed = index_item_events(events, items, splits).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        write_partitions(items.withColumn(DT, F.lit(ds)), config, FEATURE_ITEMS)
        write_partitions(build_sequences(indexed).withColumn(DT, F.lit(ds)), config, FEATURE_SEQUENCES)
        events_per_split, dropped = count_indexed_events(indexed)
        sizes = vocabulary_sizes(items)
    finally:
        indexed.unpersist()
        items.unpersist()
    n_users = spark.read.parquet(partition_path(config, FEATURE_SEQUENCES, ds)).count()

    meta = {"ds": ds, **sizes, "n_event_types": N_EVENT_TYPES, "n_price_buckets": N_PRICE_BUCKETS,
            "train_dates": splits.train, "valid_date": splits.valid, "test_date": splits.test,
            "n_users": n_users, "events_per_split": events_per_split,
            "price_log_mean": prices["log_mean"], "price_log_std": prices["log_std"],
            "dropped_unknown_item": dropped}
    write_meta(config, ds, meta)
    return meta


def write_meta(config: dict, ds: str, meta: dict) -> None:
    with replace_partition(partition_path(config, FEATURE_META, ds)) as staging:
        with open(os.path.join(staging, META_FILE), "w") as handle:
            json.dump(meta, handle, indent=2, sort_keys=True)

