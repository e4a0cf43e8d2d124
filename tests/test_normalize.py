"""jobs/normalize.py: vocabularies, deciles, splits, leakage-free popularity and meta.json."""

import datetime as dt
import gzip
import json
import math
import os

import pytest
from pyspark.testing import assertDataFrameEqual

from jobs import normalize, spark_lake
from jobs.lake import partition_path
from jobs.schema import (DENOISED_EVENTS, FEATURE_ITEMS, FEATURE_META, FEATURE_SEQUENCES,
                         ITEM_FEATURE_COLUMNS, RAW_CATALOG, SEQUENCE_COLUMNS)

TRAIN_DAY, VALID_DAY, TEST_DAY = "2026-11-25", "2026-11-26", "2026-11-27"
EVENT_SCHEMA = ("event_id string, event_time timestamp, event_type string, user_id string, "
                "session_id string, item_id string, query string, price double, dt string")
CATALOG_SCHEMA = "item_id string, category string, brand string, price double, title string, dt string"
ITEMS_SCHEMA = ("item_idx int, item_id string, category_idx int, brand_idx int, price_bucket int, "
                "price_z float, title_tokens array<int>, popularity long")
SEQUENCES_SCHEMA = ("user_id string, item_idx array<int>, event_type_idx array<int>, ts array<long>, "
                    "split array<int>")

# Prices e^k - 1 make log1p(price) = k = 1, 2, 3, 4: mean 2.5, population std
# sqrt((1.5² + 0.5² + 0.5² + 1.5²) / 4) = sqrt(1.25) = 1.1180340.
CATALOG = [
    ("i3", "shoes", "acme", math.expm1(3), "Red  Running Shoe", TEST_DAY),
    ("i1", "bags", "zeta", math.expm1(1), "red bag", TEST_DAY),
    ("i2", "shoes", None, math.expm1(2), None, TEST_DAY),
    ("i4", None, "acme", math.expm1(4), "Shoe", TEST_DAY),
    ("i5", "bags", "acme", None, "bag", TEST_DAY),
]
# item_idx: i1..i5 -> 1..5. category: bags 1, shoes 2. brand: acme 1, zeta 2.
# tokens: bag 1, red 2, running 3, shoe 4 (lowercased, double space ignored).
# price deciles of [p1, p2, p3, p4] interpolate at rank 3q for q = 0.1..0.9, so below p1 lie
# 0 cuts, below p2 the 3 with 3q < 1, below p3 the 6 with 3q < 2, below p4 all 9:
# buckets 1, 4, 7, 10; i5 has no price -> 0.
# z = (k - 2.5) / 1.1180340 = -1.3416408, -0.4472136, 0.4472136, 1.3416408.


def event(event_id, ds, when, event_type, user_id, item_id):
    time = dt.datetime.fromisoformat(f"{ds}T{when}").replace(tzinfo=dt.timezone.utc)
    query, price = ("shoes", None) if event_type == "search" else (None, 1.0)
    return (event_id, time, event_type, user_id, "s1", item_id, query, price, ds)


EVENTS = [
    event("t2", TEST_DAY, "10:00:00", "view", "u1", "i2"),  # i2 is seen on the test day only
    event("a1", TRAIN_DAY, "09:00:00", "click", "u1", "i1"),
    event("a0", TRAIN_DAY, "09:00:00", "view", "u1", "i4"),  # same second as a1: a0 sorts first
    event("s1", TRAIN_DAY, "09:30:00", "search", "u1", None),  # searches are not in sequences
    event("v1", VALID_DAY, "08:00:00", "add_to_cart", "u1", "i3"),
    event("v9", VALID_DAY, "08:30:00", "view", "u1", "i9"),  # i9 is not in the catalog: dropped
    event("t5", TEST_DAY, "11:00:00", "purchase", "u2", "i5"),
    event("s3", TEST_DAY, "12:00:00", "search", "u3", None),  # u3 has no item event: no row
]
SPLITS = normalize.SplitDates(train=[TRAIN_DAY], valid=VALID_DAY, test=TEST_DAY)


def test_item_features_from_the_catalog_and_train_popularity(spark):
    catalog = spark.createDataFrame(CATALOG, CATALOG_SCHEMA)
    train_events = spark.createDataFrame([row for row in EVENTS if row[-1] == TRAIN_DAY], EVENT_SCHEMA)

    prices = normalize.price_statistics(catalog)
    items = normalize.item_features(catalog, train_events, prices)

    assert prices["log_mean"] == pytest.approx(2.5)
    assert prices["log_std"] == pytest.approx(math.sqrt(1.25))
    # popularity: train day has a0 (i4) and a1 (i1); the search counts for nothing.
    assertDataFrameEqual(items, spark.createDataFrame([
        (1, "i1", 1, 2, 1, -1.3416408, [2, 1], 1),
        (2, "i2", 2, 0, 4, -0.4472136, [], 0),
        (3, "i3", 2, 1, 7, 0.4472136, [2, 3, 4], 0),
        (4, "i4", 0, 1, 10, 1.3416408, [4], 1),
        (5, "i5", 1, 1, 0, 0.0, [1], 0),
    ], ITEMS_SCHEMA))


def test_ten_distinct_prices_fill_the_ten_buckets(spark):
    # Deciles of 1..10 interpolate to 1.9, 2.8, ..., 9.1, so price p has p - 1 cuts below it.
    catalog = spark.createDataFrame(
        [(f"i{p:02d}", None, None, float(p), None, TEST_DAY) for p in range(1, 11)], CATALOG_SCHEMA)
    items = normalize.item_features(catalog, spark.createDataFrame([], EVENT_SCHEMA),
                                    normalize.price_statistics(catalog))
    assert sorted((row.item_id, row.price_bucket) for row in items.collect()) == [
        (f"i{p:02d}", p) for p in range(1, 11)]


def test_sequences_are_time_ordered_item_events_with_their_split(spark):
    events = spark.createDataFrame(EVENTS, EVENT_SCHEMA)
    items = spark.createDataFrame([(idx, f"i{idx}") for idx in range(1, 6)], "item_idx int, item_id string")

    indexed = normalize.index_item_events(events, items, SPLITS)
    sequences = normalize.build_sequences(indexed)

    # ts: 2026-11-25T00:00Z = 20782 days * 86400 = 1_795_564_800; +09:00 = 1_795_597_200,
    # valid day 08:00 = +86_400 +28_800 = 1_795_680_000, test day 10:00 = +172_800 +36_000
    # = 1_795_773_600, test day 11:00 = 1_795_777_200. Types: view 1, click 2, cart 3, purchase 4.
    assertDataFrameEqual(sequences, spark.createDataFrame([
        ("u1", [4, 1, 3, 2], [1, 2, 3, 1], [1_795_597_200, 1_795_597_200, 1_795_680_000, 1_795_773_600],
         [0, 0, 1, 2]),
        ("u2", [5], [4], [1_795_777_200], [2]),
    ], SEQUENCES_SCHEMA))
    assert normalize.count_indexed_events(indexed) == ({"train": 2, "valid": 1, "test": 2}, 1)


def test_plan_splits_uses_the_dates_present_in_the_window():
    available = ["2026-11-20", "2026-11-23", TRAIN_DAY, VALID_DAY, TEST_DAY]
    # A 5-day window ends at TEST_DAY and starts at 11-23, so 11-20 is out; 11-24 is missing.
    assert normalize.plan_splits(TEST_DAY, 5, available) == normalize.SplitDates(
        train=["2026-11-23", TRAIN_DAY], valid=VALID_DAY, test=TEST_DAY)
    with pytest.raises(ValueError, match="logical date 2026-11-28"):
        normalize.plan_splits("2026-11-28", 5, available)
    with pytest.raises(ValueError, match="at least 3"):
        normalize.plan_splits(TEST_DAY, 2, available)
    with pytest.raises(ValueError, match=f"validation day {VALID_DAY}"):
        normalize.plan_splits(TEST_DAY, 5, [TRAIN_DAY, "2026-11-23", TEST_DAY])


def write_catalog(config, ds, rows):
    folder = partition_path(config, RAW_CATALOG, ds)
    os.makedirs(folder, exist_ok=True)
    with gzip.open(os.path.join(folder, "catalog.jsonl.gz"), "wt") as handle:
        for item_id, category, brand, price, title, _ in rows:
            handle.write(json.dumps({"item_id": item_id, "category": category, "brand": brand,
                                     "price": price, "title": title}) + "\n")


def test_main_writes_items_sequences_and_meta(spark, tmp_config):
    spark_lake.write_partitions(spark.createDataFrame(EVENTS, EVENT_SCHEMA), tmp_config, DENOISED_EVENTS)
    write_catalog(tmp_config, TEST_DAY, CATALOG)

    meta = normalize.main(tmp_config, TEST_DAY)

    assert meta == {
        "ds": TEST_DAY, "n_items": 5, "n_categories": 2, "n_brands": 2, "n_title_tokens": 4,
        "n_event_types": 6, "n_price_buckets": 10, "train_dates": [TRAIN_DAY], "valid_date": VALID_DAY,
        "test_date": TEST_DAY, "n_users": 2, "events_per_split": {"train": 2, "valid": 1, "test": 2},
        "price_log_mean": pytest.approx(2.5), "price_log_std": pytest.approx(math.sqrt(1.25)),
        "dropped_unknown_item": 1}
    with open(os.path.join(partition_path(tmp_config, FEATURE_META, TEST_DAY), "meta.json")) as handle:
        assert json.load(handle) == meta
    items = spark.read.parquet(partition_path(tmp_config, FEATURE_ITEMS, TEST_DAY))
    # i2 and i5 occur only on the test day and i3 only on the valid day: no leakage.
    assert sorted((row.item_id, row.popularity) for row in items.collect()) == [
        ("i1", 1), ("i2", 0), ("i3", 0), ("i4", 1), ("i5", 0)]
    assert tuple(items.columns) == ITEM_FEATURE_COLUMNS
    sequences = spark.read.parquet(partition_path(tmp_config, FEATURE_SEQUENCES, TEST_DAY))
    assert tuple(sequences.columns) == SEQUENCE_COLUMNS
    assert sorted(row.user_id for row in sequences.collect()) == ["u1", "u2"]


def test_main_needs_three_days(spark, tmp_config):
    two_days = [row for row in EVENTS if row[-1] != TRAIN_DAY]
    spark_lake.write_partitions(spark.createDataFrame(two_days, EVENT_SCHEMA), tmp_config, DENOISED_EVENTS)
    with pytest.raises(ValueError, match="at least 3"):
        normalize.main(tmp_config, TEST_DAY)
