"""Normalize: denoised events + the window's catalogs -> the integer features every model reads.

Outputs for the logical date ds (each replaces only dt=ds):
  features/items/dt=ds      one row per item of the persistent item vocabulary,
                            schema.ITEM_FEATURE_COLUMNS (in_catalog: listed in ds's catalog)
  features/sequences/dt=ds  one row per user, parallel arrays in time order, SEQUENCE_COLUMNS
  features/sessions/dt=ds   the same per (user, session), SESSION_SEQUENCE_COLUMNS
  features/meta/dt=ds/meta.json     vocabulary sizes, split dates and counts
  features/meta/dt=ds/scalers.json  the price scaling fitted on the train days, for serving
  state/vocabularies/<name>/dt=ds   the append-only vocabularies (jobs/etl/vocabulary.py)

Split by day (config split): test = the last test_days days of the window (ending at ds),
valid = the valid_days days before them, train = the earlier days of the window; the
defaults 1 and 1 make test = ds and valid = the day before. Anything learned from data
(popularity, rolling rates, price scaling) uses train days only, so validation and test
never leak into features.

Id conventions (schema): vocabularies persist across nights and only grow (new values get
the next ids, in sorted order); 0 means padding or unknown. meta's n_items / n_categories /
n_brands / n_title_tokens / n_price_buckets are the largest id (an embedding needs n + 1
rows); n_event_types is schema.N_EVENT_TYPES, which already counts the padding 0.
"""

from __future__ import annotations

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

import dataclasses
import json
import os

from jobs.common.spark_io import read_catalogs, read_event_partitions, write_partitions
from jobs.common.lake import days_back, existing_partitions, partition_path, replace_partition
from jobs.common.schema import (ADD_TO_CART, BRAND, BRAND_IDX, CATALOG_FIELDS, CATEGORY, CATEGORY_IDX, CLICK,
                         DENOISED_EVENTS, DT, EVENT_ID, EVENT_TIME, EVENT_TYPE, EVENT_TYPE_IDX,
                         EVENT_TYPE_INDEX, FEATURE_ITEMS, FEATURE_META, FEATURE_SEQUENCES, FEATURE_SESSIONS,
                         IN_CATALOG, ITEM_EVENT_TYPES, ITEM_ID, ITEM_IDX, ITEM_STAT_COLUMNS,
                         ITEM_STAT_WINDOWS_DAYS, N_EVENT_TYPES, N_PRICE_BUCKETS, POPULARITY, PRICE,
                         PRICE_BUCKET, PRICE_Z, PURCHASE, RAW_CATALOG, SEQUENCE_COLUMNS, SESSION_ID,
                         SESSION_SEQUENCE_COLUMNS, SPLIT, SPLIT_NAMES, SPLIT_TEST, SPLIT_TRAIN, SPLIT_VALID,
                         TIMESTAMPS, TITLE, TITLE_TOKENS, USER_ID, VIEW, item_stat_column)
from jobs.common.night import Night
from jobs.common.spark_session import get_spark
from jobs.etl.vocabulary import (extend_vocabulary, observed_values, previous_values, store_vocabulary,
                             vocabulary_table)

MIN_DATES = 3  # at least one day each for train, valid and test
META_FILE = "meta.json"
SCALERS_FILE = "scalers.json"
TOKEN, TOKEN_ID = "token", "token_id"
VIEW_COUNT_COLUMNS = tuple(item_stat_column("views", days) for days in ITEM_STAT_WINDOWS_DAYS)


@dataclasses.dataclass(frozen=True)
class SplitDates:
    train: list[str]
    valid: list[str]
    test: list[str]

    @property
    def all(self) -> list[str]:
        return [*self.train, *self.valid, *self.test]


def _check_split_days(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"config split.{key} must be a whole number of days >= 1, got {value!r}")


def plan_splits(ds: str, window_days: int, available: list[str], valid_days: int, test_days: int) -> SplitDates:
    """Pick the window's dates that exist and assign each to a split; ValueError if unusable.

    Test gets the last test_days days of the window (ds the last of them), valid the
    valid_days days before those, train every earlier day; each split lists only the days
    that have data. Worked example, ds 11-27, valid_days 2, test_days 2, window 6:
    window 11-22..11-27, test 11-26, 11-27; valid 11-24, 11-25; train 11-22, 11-23.
    """
    _check_split_days("valid_days", valid_days)
    _check_split_days("test_days", test_days)
    window = days_back(ds, window_days)
    available_dates = set(available)
    present = [day for day in window if day in available_dates]
    if ds not in present:
        raise ValueError(f"no denoised events for the logical date {ds}: run clean and denoise first")
    if len(present) < MIN_DATES:
        raise ValueError(f"normalize {ds} needs denoised events on at least {MIN_DATES} of the "
                         f"{window_days} days {window[0]}..{ds}; found {present}")
    if valid_days + test_days >= window_days:
        raise ValueError(f"config split.valid_days ({valid_days}) + split.test_days ({test_days}) must be less "
                         f"than window_days ({window_days}): the window must leave at least one train day")
    test_window = window[-test_days:]
    valid_window = window[-(valid_days + test_days):-test_days]
    valid = [day for day in valid_window if day in available_dates]
    if not valid:
        named = (f"day {valid_window[0]} has" if valid_days == 1
                 else f"days {valid_window[0]}..{valid_window[-1]} have")
        raise ValueError(f"normalize {ds}: the validation {named} no denoised events")
    train = [day for day in present if day < valid_window[0]]
    if not train:
        raise ValueError(f"normalize {ds}: no denoised events on the train days {window[0]}.."
                         f"{days_back(valid_window[0], 2)[0]} (before the validation days)")
    return SplitDates(train=train, valid=valid, test=[day for day in test_window if day in available_dates])


# --- Items ---------------------------------------------------------------------------------

def latest_snapshots(catalogs: DataFrame, ds: str) -> DataFrame:
    """One row per item of the window's catalogs: its latest snapshot, and whether it is in ds's.

    An item that left the catalog keeps its last known attributes (its events in the
    training window still teach the models about it) but is never recommended.
    """
    newest_first = Window.partitionBy(ITEM_ID).orderBy(F.col(DT).desc())
    return (catalogs.withColumn("_rank", F.row_number().over(newest_first)).where(F.col("_rank") == 1)
            .select(*CATALOG_FIELDS, (F.col(DT) == F.lit(ds)).alias(IN_CATALOG)))


def price_statistics(catalog: DataFrame) -> dict:
    """Decile cut points and log1p(price) mean / population std over the catalog's known prices."""
    deciles = [k / N_PRICE_BUCKETS for k in range(1, N_PRICE_BUCKETS)]
    log_price = F.log1p(F.col(PRICE))
    row = catalog.where(F.col(PRICE).isNotNull()).agg(
        F.percentile(PRICE, deciles).alias("cuts"), F.avg(log_price).alias("mean"),
        F.stddev_pop(log_price).alias("std")).first()
    return {"cuts": row["cuts"] or [], "log_mean": row["mean"] or 0.0, "log_std": row["std"] or 0.0}


def title_words(snapshots: DataFrame) -> DataFrame:
    """(item_id, position, token): the lowercased whitespace tokens of each title."""
    words = F.filter(F.split(F.lower(F.col(TITLE)), r"\s+"), lambda word: word != "")
    return snapshots.select(ITEM_ID, F.posexplode(words).alias("position", TOKEN))


def title_token_ids(words: DataFrame, token_vocabulary: DataFrame) -> DataFrame:
    """(item_id, title_tokens): each title's tokens as vocabulary ids, in title order."""
    in_title_order = F.sort_array(F.collect_list(F.struct("position", TOKEN_ID)))
    return (words.join(token_vocabulary, on=TOKEN).groupBy(ITEM_ID)
            .agg(in_title_order.alias("tokens"))
            .select(ITEM_ID, F.col(f"tokens.{TOKEN_ID}").cast("array<int>").alias(TITLE_TOKENS)))


def item_statistics(item_ids: DataFrame, train_events: DataFrame, train_dates: list[str],
                    prior_views: float) -> DataFrame:
    """(item_id, popularity, ITEM_STAT_COLUMNS) for every item of item_ids, from the train days.

    popularity counts every item event of the train days. For each window of W days ending at
    the last train day: views_Wd, and ctr / cart_rate / purchase_rate_Wd = (events of the kind
    + prior_views x the window's catalog-wide rate) / (views + prior_views); an item without
    events gets the catalog-wide rate. Worked example, prior 20: catalog-wide 10 clicks per
    100 views = 0.1; an item with 2 views and 1 click gets (1 + 20 x 0.1) / (2 + 20) = 0.136.
    """
    item_events = train_events.where(F.col(EVENT_TYPE).isin(*ITEM_EVENT_TYPES))
    counts = [F.count(F.lit(1)).alias(POPULARITY)]
    for days in ITEM_STAT_WINDOWS_DAYS:
        window_dates = days_back(train_dates[-1], days) if train_dates else []
        for event_type in (VIEW, CLICK, ADD_TO_CART, PURCHASE):
            is_counted = F.col(DT).isin(*window_dates) & (F.col(EVENT_TYPE) == event_type)
            counts.append(F.sum(F.when(is_counted, 1).otherwise(0)).alias(_window_count(event_type, days)))
    per_item = item_ids.select(ITEM_ID).join(item_events.groupBy(ITEM_ID).agg(*counts), on=ITEM_ID, how="left")
    per_item = per_item.fillna(0, subset=per_item.columns[1:])
    totals = per_item.agg(*[F.sum(name).alias(name) for name in per_item.columns[1:]]).first()
    columns = [ITEM_ID, F.col(POPULARITY).cast("long").alias(POPULARITY)]
    for days in ITEM_STAT_WINDOWS_DAYS:
        views = F.col(_window_count(VIEW, days))
        total_views = totals[_window_count(VIEW, days)] or 0
        columns.append(views.cast("long").alias(item_stat_column("views", days)))
        for kind, event_type in (("ctr", CLICK), ("cart_rate", ADD_TO_CART), ("purchase_rate", PURCHASE)):
            events = F.col(_window_count(event_type, days))
            overall_rate = (totals[_window_count(event_type, days)] or 0) / total_views if total_views else 0.0
            if prior_views > 0:
                rate = (events + F.lit(prior_views * overall_rate)) / (views + F.lit(float(prior_views)))
            else:  # unsmoothed: an item without views has no rate, 0 rather than 0 / 0
                rate = F.when(views > 0, events / views).otherwise(F.lit(0.0))
            columns.append(rate.cast("float").alias(item_stat_column(kind, days)))
    return per_item.select(*columns)


def _window_count(event_type: str, days: int) -> str:
    return f"_{event_type}_{days}d"


def item_features(snapshots: DataFrame, vocabularies: dict[str, DataFrame], prices: dict,
                  statistics: DataFrame) -> DataFrame:
    """One row per item of the item vocabulary with ITEM_FEATURE_COLUMNS.

    snapshots is latest_snapshots(); vocabularies maps each of schema.VOCABULARY_NAMES to its
    (value column, id column) table; statistics is item_statistics(). An item of the
    vocabulary that no catalog of the window lists keeps zero attributes and in_catalog false.
    """
    def statistic(name: str) -> Column:
        zero = F.lit(0).cast("long" if name in (POPULARITY, *VIEW_COUNT_COLUMNS) else "float")
        return F.coalesce(F.col(name), zero).alias(name)

    return (vocabularies["item"]
            .join(snapshots, on=ITEM_ID, how="left")
            .join(vocabularies["category"], on=CATEGORY, how="left")
            .join(vocabularies["brand"], on=BRAND, how="left")
            .join(title_token_ids(title_words(snapshots), vocabularies["title_token"]), on=ITEM_ID, how="left")
            .join(statistics, on=ITEM_ID, how="left")
            .select(
                ITEM_IDX, ITEM_ID,
                F.coalesce(CATEGORY_IDX, F.lit(0)).cast("int").alias(CATEGORY_IDX),
                F.coalesce(BRAND_IDX, F.lit(0)).cast("int").alias(BRAND_IDX),
                _price_bucket(prices["cuts"]).alias(PRICE_BUCKET),
                _price_z(prices["log_mean"], prices["log_std"]).alias(PRICE_Z),
                F.coalesce(TITLE_TOKENS, F.array().cast("array<int>")).alias(TITLE_TOKENS),
                statistic(POPULARITY),
                F.coalesce(F.col(IN_CATALOG), F.lit(False)).alias(IN_CATALOG),
                *[statistic(name) for name in ITEM_STAT_COLUMNS]))


def catalog_vocabularies(spark, config: dict, ds: str, snapshots: DataFrame) -> tuple[dict, dict]:
    """Extend yesterday's vocabularies with the window's catalog snapshots and store tonight's.

    Returns ({name: (value column, id column) table}, {meta size key: largest id}).
    """
    sources = {"item": (snapshots, ITEM_ID, ITEM_IDX, "n_items"),
               "category": (snapshots, CATEGORY, CATEGORY_IDX, "n_categories"),
               "brand": (snapshots, BRAND, BRAND_IDX, "n_brands"),
               "title_token": (title_words(snapshots), TOKEN, TOKEN_ID, "n_title_tokens")}
    tables, sizes = {}, {}
    for name, (frame, value_column, id_column, size_key) in sources.items():
        values = extend_vocabulary(previous_values(spark, config, name, ds), observed_values(frame, value_column))
        store_vocabulary(spark, config, name, ds, values)
        tables[name] = vocabulary_table(spark, values, value_column, id_column)
        sizes[size_key] = len(values)
    return tables, sizes


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
    """Item events with user_id, event_time, event_id, item_idx (null if not in the vocabulary),
    event_type_idx, ts and split. Searches carry no item and are left out."""
    type_index = F.create_map(*[F.lit(value) for pair in EVENT_TYPE_INDEX.items() for value in pair])
    split = (F.when(F.col(DT).isin(*splits.test), F.lit(SPLIT_TEST))
             .when(F.col(DT).isin(*splits.valid), F.lit(SPLIT_VALID))
             .otherwise(F.lit(SPLIT_TRAIN)))
    item_events = events.where(F.col(EVENT_TYPE).isin(*ITEM_EVENT_TYPES) & F.col(ITEM_ID).isNotNull())
    return (item_events.join(items.select(ITEM_ID, ITEM_IDX), on=ITEM_ID, how="left")
            .select(USER_ID, SESSION_ID, EVENT_TIME, EVENT_ID, ITEM_IDX,
                    type_index[F.col(EVENT_TYPE)].cast("int").alias(EVENT_TYPE_IDX),
                    F.unix_seconds(EVENT_TIME).alias(TIMESTAMPS), split.cast("int").alias(SPLIT)))


def build_sequences(indexed_events: DataFrame) -> DataFrame:
    """One row per user: SEQUENCE_COLUMNS arrays sorted by (event_time, event_id)."""
    return _time_sorted_arrays(indexed_events, SEQUENCE_COLUMNS[:1])


def build_session_sequences(indexed_events: DataFrame) -> DataFrame:
    """One row per (user, session): SESSION_SEQUENCE_COLUMNS arrays sorted by (event_time, event_id).

    Clean gave every event a session (the source's, or one by inactivity gap), and sessions
    stay within a day, so each row belongs to one split.
    """
    return _time_sorted_arrays(indexed_events, SESSION_SEQUENCE_COLUMNS[:2])


def _time_sorted_arrays(indexed_events: DataFrame, keys: tuple[str, ...]) -> DataFrame:
    # The struct sorts by its first fields: time, then event_id as the tie-break.
    event = F.struct(EVENT_TIME, EVENT_ID, ITEM_IDX, EVENT_TYPE_IDX, TIMESTAMPS, SPLIT)
    timelines = (indexed_events.where(F.col(ITEM_IDX).isNotNull()).groupBy(*keys)
                 .agg(F.sort_array(F.collect_list(event)).alias("events")))
    return timelines.select(*keys, *[F.col(f"events.{name}").alias(name) for name in SEQUENCE_COLUMNS[1:]])


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


# --- Job -------------------------------------------------------------------------------------

def run(night: Night) -> dict:
    """Build the features of the night over its window; returns the meta dict written to meta.json."""
    config, ds = night.config, night.ds
    spark = get_spark(config)
    splits = plan_splits(ds, len(night.window), existing_partitions(config, DENOISED_EVENTS), **config["split"])
    events = read_event_partitions(spark, config, DENOISED_EVENTS, splits.all)
    catalogs, catalog_dates = read_window_catalogs(spark, config, splits)
    train_events = events.where(F.col(DT).isin(*splits.train))

    snapshots = latest_snapshots(catalogs, ds).persist(StorageLevel.MEMORY_AND_DISK)
    vocabularies, sizes = catalog_vocabularies(spark, config, ds, snapshots)
    # Scaling statistics come from the catalog as it stood on the training days, like every
    # other learned number: the test day's new prices must not shape them. A source that
    # lands no catalog for past days (only tonight's) leaves tonight's as the only choice.
    fit_dates = [day for day in splits.train if day in catalog_dates] or [ds]
    prices = price_statistics(latest_snapshots(catalogs.where(F.col(DT).isin(*fit_dates)), ds))
    statistics = item_statistics(vocabularies["item"], train_events, splits.train,
                                 config["item_stats"]["prior_views"])
    items = item_features(snapshots, vocabularies, prices, statistics)
    items = items.persist(StorageLevel.MEMORY_AND_DISK)  # written, counted and joined to events
    # By user once: both sequence tables group by user (sessions by user and session), so
    # neither needs a shuffle of its own.
    indexed = index_item_events(events, items, splits).repartition(USER_ID).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        write_partitions(items.withColumn(DT, F.lit(ds)), config, FEATURE_ITEMS)
        write_partitions(build_sequences(indexed).withColumn(DT, F.lit(ds)), config, FEATURE_SEQUENCES)
        write_partitions(build_session_sequences(indexed).withColumn(DT, F.lit(ds)), config, FEATURE_SESSIONS)
        events_per_split, dropped = count_indexed_events(indexed)
        n_in_catalog = items.where(F.col(IN_CATALOG)).count()
    finally:
        indexed.unpersist()
        items.unpersist()
        snapshots.unpersist()
    n_users = spark.read.parquet(partition_path(config, FEATURE_SEQUENCES, ds)).count()

    scalers = scaling_statistics(prices, fit_dates)
    meta = {"ds": ds, **sizes, "n_event_types": N_EVENT_TYPES, "n_price_buckets": N_PRICE_BUCKETS,
            "n_items_in_catalog": n_in_catalog,
            "train_dates": splits.train, "valid_dates": splits.valid, "test_dates": splits.test,
            "n_users": n_users, "events_per_split": events_per_split,
            "price_log_mean": prices["log_mean"], "price_log_std": prices["log_std"],
            "dropped_unknown_item": dropped}
    write_meta(config, ds, meta, scalers)
    return meta


def read_window_catalogs(spark, config: dict, splits: SplitDates) -> tuple[DataFrame, list[str]]:
    """(the catalogs of the window's dates that have one, those dates); ds's (the last test day's) must exist."""
    landed = set(existing_partitions(config, RAW_CATALOG))
    dates = [day for day in splits.all if day in landed or day == splits.test[-1]]
    return read_catalogs(spark, config, dates), dates


def scaling_statistics(prices: dict, fitted_on_dates: list[str]) -> dict:
    """What serving needs to turn a raw price into the model's inputs exactly as normalize did
    (jobs.common.features.scale_prices applies it)."""
    return {"fitted_on_dates": list(fitted_on_dates),
            "price": {"transform": "log1p_standardize", "log1p_mean": prices["log_mean"],
                      "log1p_std": prices["log_std"], "bucket_cuts": [float(cut) for cut in prices["cuts"]]}}


def write_meta(config: dict, ds: str, meta: dict, scalers: dict) -> None:
    with replace_partition(partition_path(config, FEATURE_META, ds)) as staging:
        with open(os.path.join(staging, META_FILE), "w") as handle:
            json.dump(meta, handle, indent=2, sort_keys=True)
        with open(os.path.join(staging, SCALERS_FILE), "w") as handle:
            json.dump(scalers, handle, indent=2, sort_keys=True)
