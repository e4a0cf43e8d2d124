"""jobs/etl/normalize_features.py: vocabularies, deciles, splits, leakage-free popularity and meta.json."""

import datetime as dt
import gzip
import json
import math
import os

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

import numpy as np

from jobs.common.night import Night
from jobs.etl import normalize_features as normalize
from jobs.common import spark_io as spark_lake
from jobs.etl import vocabulary
from jobs.common.features import read_scalers, scale_prices
from jobs.common.lake import partition_path
from jobs.common.schema import (DENOISED_EVENTS, FEATURE_ITEMS, FEATURE_META, FEATURE_SEQUENCES, FEATURE_SESSIONS,
                         ITEM_FEATURE_COLUMNS, RAW_CATALOG, SEQUENCE_COLUMNS, SESSION_SEQUENCE_COLUMNS)

TRAIN_DAY, VALID_DAY, TEST_DAY = "2026-11-25", "2026-11-26", "2026-11-27"
EVENT_SCHEMA = ("event_id string, event_time timestamp, event_type string, user_id string, "
                "session_id string, item_id string, query string, price double, dt string")
CATALOG_SCHEMA = "item_id string, category string, brand string, price double, title string, dt string"
ITEMS_SCHEMA = ("item_idx int, item_id string, category_idx int, brand_idx int, price_bucket int, "
                "price_z float, title_tokens array<int>, popularity long, in_catalog boolean, "
                "views_1d long, ctr_1d float, cart_rate_1d float, purchase_rate_1d float, "
                "views_7d long, ctr_7d float, cart_rate_7d float, purchase_rate_7d float")
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
SPLITS = normalize.SplitDates(train=[TRAIN_DAY], valid=[VALID_DAY], test=[TEST_DAY])


def first_night_vocabularies(spark, snapshots):
    tables, _ = {}, None
    for name, frame, value_column, id_column in (
            ("item", snapshots, "item_id", "item_idx"), ("category", snapshots, "category", "category_idx"),
            ("brand", snapshots, "brand", "brand_idx"),
            ("title_token", normalize.title_words(snapshots), "token", "token_id")):
        values = vocabulary.extend_vocabulary([], vocabulary.observed_values(frame, value_column))
        tables[name] = vocabulary.vocabulary_table(spark, values, value_column, id_column)
    return tables


def build_items(spark, catalog_rows, train_rows, prior_views=20.0):
    catalog = spark.createDataFrame(catalog_rows, CATALOG_SCHEMA)
    snapshots = normalize.latest_snapshots(catalog, TEST_DAY)
    vocabularies = first_night_vocabularies(spark, snapshots)
    train_events = spark.createDataFrame(train_rows, EVENT_SCHEMA)
    statistics = normalize.item_statistics(vocabularies["item"], train_events, [TRAIN_DAY], prior_views)
    return normalize.item_features(snapshots, vocabularies, normalize.price_statistics(catalog), statistics)


def test_item_features_from_the_catalog_and_train_statistics(spark):
    prices = normalize.price_statistics(spark.createDataFrame(CATALOG, CATALOG_SCHEMA))
    items = build_items(spark, CATALOG, [row for row in EVENTS if row[-1] == TRAIN_DAY])

    assert prices["log_mean"] == pytest.approx(2.5)
    assert prices["log_std"] == pytest.approx(math.sqrt(1.25))
    # popularity: the train day has a0 (view of i4) and a1 (click of i1); the search counts for
    # nothing. Both windows (1 and 7 days) hold just that day: 1 view and 1 click in all, a
    # catalog-wide ctr of 1.0, no carts or purchases. With 20 prior views: i1 (0 views, 1 click)
    # (1 + 20) / 20 = 1.05; i4 (1 view) 20 / 21 = 0.952381; items without events the prior, 1.0.
    stats = {"i1": (0, 1.05), "i4": (1, 20 / 21)}
    expected = [
        (1, "i1", 1, 2, 1, -1.3416408, [2, 1], 1),
        (2, "i2", 2, 0, 4, -0.4472136, [], 0),
        (3, "i3", 2, 1, 7, 0.4472136, [2, 3, 4], 0),
        (4, "i4", 0, 1, 10, 1.3416408, [4], 1),
        (5, "i5", 1, 1, 0, 0.0, [1], 0),
    ]
    rows = []
    for row in expected:
        views, ctr = stats.get(row[1], (0, 1.0))
        rows.append((*row, True, views, ctr, 0.0, 0.0, views, ctr, 0.0, 0.0))
    assertDataFrameEqual(items, spark.createDataFrame(rows, ITEMS_SCHEMA))


def test_rolling_windows_count_only_their_days_and_smooth_toward_the_window_rate(spark):
    early, late = "2026-11-20", TRAIN_DAY  # 5 days apart: in the 7-day window, not the 1-day one
    train = [event(f"e{n}", day, f"0{n}:00:00", kind, "u1", item) for n, (day, kind, item) in enumerate([
        (early, "view", "i1"), (early, "purchase", "i1"), (late, "view", "i1"), (late, "view", "i2"),
        (late, "add_to_cart", "i2"), (late, "click", "i2")])]
    items = spark.createDataFrame([("i1",), ("i2",), ("i3",)], "item_id string")

    stats = normalize.item_statistics(items, spark.createDataFrame(train, EVENT_SCHEMA), [early, late], 2.0)

    # 1-day window (late only): 2 views, 1 click, 1 cart, 0 purchases -> rates 0.5, 0.5, 0.
    #   i1: 1 view -> ctr (0 + 2 x 0.5) / (1 + 2) = 1/3, cart 1/3, purchase 0
    #   i2: 1 view, 1 click, 1 cart -> (1 + 1) / 3 = 2/3 for ctr and cart; i3: the window rates.
    # 7-day window: 3 views, 1 click, 1 cart, 1 purchase -> rates 1/3 each, prior 2 x 1/3 = 2/3.
    #   i1: 2 views, 1 purchase (popularity 3) -> ctr (2/3) / 4 = 1/6, cart 1/6, purchase (1 + 2/3) / 4 = 5/12
    #   i2: 1 view, 1 click, 1 cart -> (5/3) / 3 = 5/9 for ctr and cart, purchase (2/3) / 3 = 2/9
    assertDataFrameEqual(stats, spark.createDataFrame([
        ("i1", 3, 1, 1 / 3, 1 / 3, 0.0, 2, 1 / 6, 1 / 6, 5 / 12),
        ("i2", 3, 1, 2 / 3, 2 / 3, 0.0, 1, 5 / 9, 5 / 9, 2 / 9),
        ("i3", 0, 0, 0.5, 0.5, 0.0, 0, 1 / 3, 1 / 3, 1 / 3),
    ], "item_id string, popularity long, views_1d long, ctr_1d float, cart_rate_1d float, "
       "purchase_rate_1d float, views_7d long, ctr_7d float, cart_rate_7d float, purchase_rate_7d float"))


def test_ten_distinct_prices_fill_the_ten_buckets(spark):
    # Deciles of 1..10 interpolate to 1.9, 2.8, ..., 9.1, so price p has p - 1 cuts below it.
    catalog = [(f"i{p:02d}", None, None, float(p), None, TEST_DAY) for p in range(1, 11)]
    items = build_items(spark, catalog, [])
    assert sorted((row.item_id, row.price_bucket) for row in items.collect()) == [
        (f"i{p:02d}", p) for p in range(1, 11)]


def test_serving_price_scaling_matches_normalize(spark):
    catalog = [(f"i{p:02d}", None, None, float(p) ** 2, None, TEST_DAY) for p in range(1, 11)]
    catalog.append(("i99", None, None, None, None, TEST_DAY))
    items = build_items(spark, catalog, []).orderBy("item_id").collect()
    prices = normalize.price_statistics(spark.createDataFrame(catalog, CATALOG_SCHEMA))
    scalers = normalize.scaling_statistics(prices, [TRAIN_DAY])

    buckets, z = scale_prices([row[3] for row in sorted(catalog)], scalers)

    assert list(buckets) == [row.price_bucket for row in items]
    assert np.allclose(z, [row.price_z for row in items], atol=1e-6)


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


def test_every_day_of_a_multi_day_split_gets_its_split(spark):
    items = spark.createDataFrame([(idx, f"i{idx}") for idx in range(1, 6)], "item_idx int, item_id string")
    two_test_days = normalize.SplitDates(train=[], valid=[TRAIN_DAY], test=[VALID_DAY, TEST_DAY])

    indexed = normalize.index_item_events(spark.createDataFrame(EVENTS, EVENT_SCHEMA), items, two_test_days)

    # EVENTS' known item events: a0, a1 on TRAIN_DAY (now valid), v1 on VALID_DAY and t2, t5 on
    # TEST_DAY (both test); v9's item i9 is unknown.
    assert normalize.count_indexed_events(indexed) == ({"train": 0, "valid": 2, "test": 3}, 1)


def test_session_sequences_split_a_users_events_by_session(spark):
    # EVENTS put every event in session s1; give u1's valid-day cart its own session s2.
    events = [row[:4] + (("s2",) if row[0] == "v1" else row[4:5]) + row[5:] for row in EVENTS]
    items = spark.createDataFrame([(idx, f"i{idx}") for idx in range(1, 6)], "item_idx int, item_id string")

    sessions = normalize.build_session_sequences(
        normalize.index_item_events(spark.createDataFrame(events, EVENT_SCHEMA), items, SPLITS))

    # The same arrays as test_sequences_are_time_ordered_item_events_with_their_split, cut by session.
    assertDataFrameEqual(sessions, spark.createDataFrame([
        ("u1", "s1", [4, 1, 2], [1, 2, 1], [1_795_597_200, 1_795_597_200, 1_795_773_600], [0, 0, 2]),
        ("u1", "s2", [3], [3], [1_795_680_000], [1]),
        ("u2", "s1", [5], [4], [1_795_777_200], [2]),
    ], "user_id string, session_id string, " + SEQUENCES_SCHEMA.split(", ", 1)[1]))


def test_plan_splits_uses_the_dates_present_in_the_window():
    available = ["2026-11-20", "2026-11-23", TRAIN_DAY, VALID_DAY, TEST_DAY]
    # A 5-day window ends at TEST_DAY and starts at 11-23, so 11-20 is out; 11-24 is missing.
    assert normalize.plan_splits(TEST_DAY, 5, available, 1, 1) == normalize.SplitDates(
        train=["2026-11-23", TRAIN_DAY], valid=[VALID_DAY], test=[TEST_DAY])
    with pytest.raises(ValueError, match="logical date 2026-11-28"):
        normalize.plan_splits("2026-11-28", 5, available, 1, 1)
    with pytest.raises(ValueError, match="at least 3"):
        normalize.plan_splits(TEST_DAY, 2, available, 1, 1)
    with pytest.raises(ValueError, match=f"validation day {VALID_DAY}"):
        normalize.plan_splits(TEST_DAY, 5, [TRAIN_DAY, "2026-11-23", TEST_DAY], 1, 1)


def test_plan_splits_gives_the_last_days_to_test_and_the_days_before_to_valid():
    # Window of 8 days ending 11-27: 11-20..11-27. test_days 3 -> 11-25, 11-26, 11-27;
    # valid_days 2 -> 11-23, 11-24; train: the rest, 11-20..11-22. Missing days are left out of
    # their split: 11-21 (train) and 11-26 (test) have no events.
    available = ["2026-11-19", "2026-11-20", "2026-11-22", "2026-11-23", "2026-11-24", "2026-11-25", TEST_DAY]
    assert normalize.plan_splits(TEST_DAY, 8, available, valid_days=2, test_days=3) == normalize.SplitDates(
        train=["2026-11-20", "2026-11-22"], valid=["2026-11-23", "2026-11-24"],
        test=["2026-11-25", TEST_DAY])
    # One of the two valid days is enough; none is an error naming both.
    assert normalize.plan_splits(TEST_DAY, 8, [d for d in available if d != "2026-11-23"], 2, 3).valid == [
        "2026-11-24"]
    with pytest.raises(ValueError, match="validation days 2026-11-23..2026-11-24 have no"):
        normalize.plan_splits(TEST_DAY, 8, [d for d in available if d not in ("2026-11-23", "2026-11-24")], 2, 3)
    # Train days 11-20..11-22 without events: no train split.
    with pytest.raises(ValueError, match="no denoised events on the train days 2026-11-20..2026-11-22"):
        normalize.plan_splits(TEST_DAY, 8, available[3:], 2, 3)


def test_plan_splits_rejects_split_settings_that_leave_no_train_day():
    available = [f"2026-11-{day}" for day in range(20, 28)]  # every day of the 8-day window
    with pytest.raises(ValueError, match=r"split.valid_days \(3\) \+ split.test_days \(5\) must be less than "
                                         r"window_days \(8\)"):
        normalize.plan_splits(TEST_DAY, 8, available, valid_days=3, test_days=5)
    with pytest.raises(ValueError, match="split.test_days must be a whole number of days >= 1, got 0"):
        normalize.plan_splits(TEST_DAY, 8, available, valid_days=1, test_days=0)
    with pytest.raises(ValueError, match="split.valid_days must be a whole number of days >= 1, got True"):
        normalize.plan_splits(TEST_DAY, 8, available, valid_days=True, test_days=1)


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

    meta = normalize.run(Night.plan(tmp_config, TEST_DAY))

    assert meta == {
        "ds": TEST_DAY, "n_items": 5, "n_categories": 2, "n_brands": 2, "n_title_tokens": 4,
        "n_event_types": 6, "n_price_buckets": 10, "train_dates": [TRAIN_DAY], "valid_dates": [VALID_DAY],
        "test_dates": [TEST_DAY], "n_users": 2, "events_per_split": {"train": 2, "valid": 1, "test": 2},
        "price_log_mean": pytest.approx(2.5), "price_log_std": pytest.approx(math.sqrt(1.25)),
        "dropped_unknown_item": 1, "n_items_in_catalog": 5}
    with open(os.path.join(partition_path(tmp_config, FEATURE_META, TEST_DAY), "meta.json")) as handle:
        assert json.load(handle) == meta
    items = spark.read.parquet(partition_path(tmp_config, FEATURE_ITEMS, TEST_DAY))
    # i2 and i5 occur only on the test day and i3 only on the valid day: no leakage.
    assert sorted((row.item_id, row.popularity) for row in items.collect()) == [
        ("i1", 1), ("i2", 0), ("i3", 0), ("i4", 1), ("i5", 0)]
    assert tuple(items.columns) == ITEM_FEATURE_COLUMNS
    sequences = spark.read.parquet(partition_path(tmp_config, FEATURE_SEQUENCES, TEST_DAY))
    assert tuple(sequences.columns) == SEQUENCE_COLUMNS
    sessions = spark.read.parquet(partition_path(tmp_config, FEATURE_SESSIONS, TEST_DAY))
    assert tuple(sessions.columns) == SESSION_SEQUENCE_COLUMNS and sessions.count() == 2  # all in s1
    assert sorted(row.user_id for row in sequences.collect()) == ["u1", "u2"]


def test_main_needs_three_days(spark, tmp_config):
    two_days = [row for row in EVENTS if row[-1] != TRAIN_DAY]
    spark_lake.write_partitions(spark.createDataFrame(two_days, EVENT_SCHEMA), tmp_config, DENOISED_EVENTS)
    with pytest.raises(ValueError, match="at least 3"):
        normalize.run(Night.plan(tmp_config, TEST_DAY))


NEXT_DAY = "2026-11-28"


def item_rows(spark, config, ds):
    items = spark.read.parquet(partition_path(config, FEATURE_ITEMS, ds))
    return {row.item_id: (row.item_idx, row.brand_idx, row.in_catalog) for row in items.collect()}


def test_vocabularies_persist_across_nights_and_only_grow(spark, tmp_config):
    next_day_events = [event("n1", NEXT_DAY, "10:00:00", "view", "u1", "i0")]
    spark_lake.write_partitions(spark.createDataFrame(EVENTS + next_day_events, EVENT_SCHEMA), tmp_config,
                                DENOISED_EVENTS)
    write_catalog(tmp_config, TEST_DAY, CATALOG)
    # Night two: i3 left the catalog; i0 (sorting before every old id) and i6 arrive, with a
    # new brand "beta" (sorting before acme and zeta).
    write_catalog(tmp_config, NEXT_DAY, [row for row in CATALOG if row[0] != "i3"]
                  + [("i0", "bags", "beta", 5.0, "bag", NEXT_DAY), ("i6", "shoes", "zeta", 6.0, None, NEXT_DAY)])

    normalize.run(Night.plan(tmp_config, TEST_DAY))
    second = normalize.run(Night.plan(tmp_config, NEXT_DAY))

    # Yesterday's ids never change; new values take the next ids in sorted order: i0 6, i6 7,
    # brand beta 3. i3 keeps its id and its last known brand (acme 1), but is out of the catalog.
    assert item_rows(spark, tmp_config, NEXT_DAY) == {
        "i1": (1, 2, True), "i2": (2, 0, True), "i3": (3, 1, False), "i4": (4, 1, True), "i5": (5, 1, True),
        "i0": (6, 3, True), "i6": (7, 2, True)}
    assert (second["n_items"], second["n_brands"], second["n_items_in_catalog"]) == (7, 3, 6)
    # Re-running the first night rebuilds it from the night before it (none): same ids as before.
    normalize.run(Night.plan(tmp_config, TEST_DAY))
    assert item_rows(spark, tmp_config, TEST_DAY) == {
        "i1": (1, 2, True), "i2": (2, 0, True), "i3": (3, 1, True), "i4": (4, 1, True), "i5": (5, 1, True)}
    # The train days (11-25, 11-26) have no catalog here, so the price scaling fell back to tonight's.
    scalers = read_scalers(tmp_config, NEXT_DAY)
    assert scalers["fitted_on_dates"] == [NEXT_DAY] and len(scalers["price"]["bucket_cuts"]) == 9


def test_a_damaged_vocabulary_stops_the_night(spark, tmp_config):
    vocabulary.store_vocabulary(spark, tmp_config, "item", TRAIN_DAY, ["i1", "i2"])
    table = spark.createDataFrame([("i1", 1), ("i2", 3)], "value string, id int")
    spark_lake.write_partitions(table.withColumn("dt", F.lit(VALID_DAY)), tmp_config,
                                vocabulary.vocabulary_dataset("item"))

    assert vocabulary.previous_values(spark, tmp_config, "item", VALID_DAY) == ["i1", "i2"]
    with pytest.raises(ValueError, match="ids must be exactly 1..2"):
        vocabulary.previous_values(spark, tmp_config, "item", TEST_DAY)


def test_extend_vocabulary_appends_unseen_values_in_sorted_order():
    assert vocabulary.extend_vocabulary(["b", "d"], ["e", None, "a", "d", "a"]) == ["b", "d", "a", "e"]
    with pytest.raises(ValueError, match="twice"):
        vocabulary.extend_vocabulary(["a", "a"], [])
