"""jobs/etl/clean.py: one quarantined line per rule, the kept events, and the job's lake contract."""

import datetime as dt
import gzip
import json
import os

import pytest
from pyspark.testing import assertDataFrameEqual

from jobs.common.night import Night
from jobs.etl import clean
from jobs.common import spark_io as spark_lake
from jobs.common.lake import partition_path
from jobs.etl.privacy import hash_user_id
from jobs.common.schema import (CLEAN_EVENTS, RAW_CATALOG, RAW_EVENTS, REASON_BAD_PRICE,
                         REASON_BAD_TIMESTAMP, REASON_DOUBLE_CLICK, REASON_DUPLICATE,
                         REASON_FUTURE_TIMESTAMP, REASON_MALFORMED, REASON_MISSING_KEY,
                         REASON_UNKNOWN_EVENT_TYPE, REASON_UNKNOWN_ITEM, REASON_WRONG_DAY)

DAY = "2026-11-27"
NEXT_DAY = "2026-11-28"
RULES = dict(max_future_skew_s=300, max_price=1000.0, double_click_s=2)
KEPT_SCHEMA = ("event_id string, event_time timestamp, event_type string, user_id string, "
               "session_id string, item_id string, query string, price double, dt string")
QUARANTINE_SCHEMA = "stage string, reason string, record string, dt string"
TEST_KEY = "test-user-id-key"


def line(event_id, event_time, event_type="view", user_id="u1", item_id="i1", price=10.0, query=None,
         session_id="s1"):
    """One raw JSON line with the fields in landing order."""
    return json.dumps({"event_id": event_id, "event_time": event_time, "event_type": event_type,
                       "user_id": user_id, "session_id": session_id, "item_id": item_id,
                       "query": query, "price": price})


def utc(text):
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)


# Kept events.
VIEW = line("e01", "2026-11-27T10:00:00.000Z")
SEARCH = line("e02", "2026-11-27T10:00:05Z", "search", item_id=None, price=None, query="red shoes")
# 4 minutes after midnight: inside the 300 s clock-skew allowance, so it stays in DAY.
SKEWED = line("e03", "2026-11-28T00:04:00Z", user_id="u2", item_id="i2")
# Double-click chain for u1/i1/click: 0 s kept, 1.5 s double, 3.0 s kept (3.0 s after the
# last *kept* click, although only 1.5 s after the removed one).
CLICK_0 = line("e10", "2026-11-27T10:01:00.000Z", "click")
CLICK_1_5 = line("e11", "2026-11-27T10:01:01.500Z", "click")
CLICK_3 = line("e12", "2026-11-27T10:01:03.000Z", "click")
# Same user and item 0.1 s after e11 but another event type: not a double click.
CART = line("e13", "2026-11-27T10:01:01.600Z", "add_to_cart")
# Threshold edge for u3/i2/click: 2.000 s after is a double click, 2.001 s after is not.
EDGE_0 = line("e20", "2026-11-27T12:00:00.000Z", "click", user_id="u3", item_id="i2")
EDGE_2 = line("e21", "2026-11-27T12:00:02.000Z", "click", user_id="u3", item_id="i2")
EDGE_0B = line("e22", "2026-11-27T13:00:00.000Z", "click", user_id="u3", item_id="i2")
EDGE_2001 = line("e23", "2026-11-27T13:00:02.001Z", "click", user_id="u3", item_id="i2")

# One line per rule; several also fail later rules, to show the first failing rule wins.
QUARANTINED = {
    '{"event_id": "e30", "event_ti': REASON_MALFORMED,
    line("e31", "2026-11-27T10:00:00Z", user_id=None, price=-5.0): REASON_MISSING_KEY,  # also bad price
    line("e32", "2026-11-27T10:00:00Z", item_id=""): REASON_MISSING_KEY,  # item event without item
    line("e33", "2026-11-27 10:00:00", "like"): REASON_BAD_TIMESTAMP,  # no offset; also unknown type
    line("e34", "2026-11-28T00:05:01Z"): REASON_FUTURE_TIMESTAMP,  # 301 s after midnight > 300 s skew
    line("e35", "2026-11-26T23:59:59Z"): REASON_WRONG_DAY,
    line("e36", "2026-11-27T10:00:00Z", "like", price=-1.0): REASON_UNKNOWN_EVENT_TYPE,  # also bad price
    line("e37", "2026-11-27T10:00:00Z", price=1000.5): REASON_BAD_PRICE,  # > max_price 1000
    line("e38", "2026-11-27T10:00:00Z", item_id="i9", price="ten"): REASON_BAD_PRICE,  # also unknown item
    line("e39", "2026-11-27T10:00:00Z", item_id="i9"): REASON_UNKNOWN_ITEM,
    VIEW: REASON_DUPLICATE,  # the second copy of VIEW; the first copy is kept
    CLICK_1_5: REASON_DOUBLE_CLICK,
    EDGE_2: REASON_DOUBLE_CLICK,
}


def test_every_rule_quarantines_its_line_and_valid_events_are_kept(spark):
    kept_lines = [VIEW, SEARCH, SKEWED, CLICK_0, CLICK_3, CART, EDGE_0, EDGE_0B, EDGE_2001]
    raw = spark.createDataFrame([(text, DAY) for text in kept_lines + list(QUARANTINED)],
                                "record string, dt string")
    catalog = spark.createDataFrame([("i1", DAY), ("i2", DAY)], "item_id string, dt string")

    kept, quarantined = clean.clean_events(raw, catalog, **RULES)

    expected_kept = spark.createDataFrame([
        ("e01", utc("2026-11-27T10:00:00"), "view", "u1", "s1", "i1", None, 10.0, DAY),
        ("e02", utc("2026-11-27T10:00:05"), "search", "u1", "s1", None, "red shoes", None, DAY),
        ("e03", utc("2026-11-28T00:04:00"), "view", "u2", "s1", "i2", None, 10.0, DAY),
        ("e10", utc("2026-11-27T10:01:00"), "click", "u1", "s1", "i1", None, 10.0, DAY),
        ("e12", utc("2026-11-27T10:01:03"), "click", "u1", "s1", "i1", None, 10.0, DAY),
        ("e13", utc("2026-11-27T10:01:01.600"), "add_to_cart", "u1", "s1", "i1", None, 10.0, DAY),
        ("e20", utc("2026-11-27T12:00:00"), "click", "u3", "s1", "i2", None, 10.0, DAY),
        ("e22", utc("2026-11-27T13:00:00"), "click", "u3", "s1", "i2", None, 10.0, DAY),
        ("e23", utc("2026-11-27T13:00:02.001"), "click", "u3", "s1", "i2", None, 10.0, DAY),
    ], KEPT_SCHEMA)
    expected_quarantined = spark.createDataFrame(
        [("clean", reason, text, DAY) for text, reason in QUARANTINED.items()], QUARANTINE_SCHEMA)
    assertDataFrameEqual(kept, expected_kept)
    assertDataFrameEqual(quarantined, expected_quarantined)


def test_a_long_burst_folds_from_its_own_first_click(spark):
    # u4/i1/click, threshold 2 s. Burst one (each click at most 2 s after the previous):
    #   0.0 kept; 1.5 double (1.5 after 0.0); 2.5 kept (2.5 after the kept 0.0);
    #   3.9 double (1.4 after 2.5); 3.9's second copy a duplicate, not a click;
    #   5.0 kept (2.5 after 2.5); 6.9 double (1.9 after 5.0).
    # 10.0 starts burst two (3.1 after 6.9): kept whatever came before; 11.0 double.
    # The view at 1.0 is another event type: it neither breaks nor joins the clicks.
    seconds = {"b0": 0.0, "b1": 1.5, "b2": 2.5, "b3": 3.9, "b4": 5.0, "b5": 6.9, "b6": 10.0, "b7": 11.0}
    clicks = {event_id: line(event_id, f"2026-11-27T09:00:{offset:06.3f}Z", "click", user_id="u4")
              for event_id, offset in seconds.items()}
    view = line("b8", "2026-11-27T09:00:01.000Z", "view", user_id="u4")
    raw = spark.createDataFrame([(text, DAY) for text in [*clicks.values(), clicks["b3"], view]],
                                "record string, dt string")
    catalog = spark.createDataFrame([("i1", DAY)], "item_id string, dt string")

    _, quarantined = clean.clean_events(raw, catalog, **RULES)

    expected = spark.createDataFrame(
        [("clean", REASON_DOUBLE_CLICK, clicks[event_id], DAY) for event_id in ("b1", "b3", "b5", "b7")]
        + [("clean", REASON_DUPLICATE, clicks["b3"], DAY)], QUARANTINE_SCHEMA)
    assertDataFrameEqual(quarantined, expected)


def test_duplicates_are_per_day_and_keep_exactly_one_copy(spark):
    # Three copies on DAY -> 1 kept + 2 duplicates; the same text on NEXT_DAY is judged on its
    # own (and is outside that day, since its timestamp is on DAY).
    raw = spark.createDataFrame([(VIEW, DAY)] * 3 + [(VIEW, NEXT_DAY)], "record string, dt string")
    catalog = spark.createDataFrame([("i1", DAY), ("i1", NEXT_DAY)], "item_id string, dt string")

    kept, quarantined = clean.clean_events(raw, catalog, **RULES)

    assert [row.event_id for row in kept.collect()] == ["e01"]
    assertDataFrameEqual(quarantined, spark.createDataFrame(
        [("clean", REASON_DUPLICATE, VIEW, DAY)] * 2 + [("clean", REASON_WRONG_DAY, VIEW, NEXT_DAY)],
        QUARANTINE_SCHEMA))


# --- The job against a temporary lake ----------------------------------------------------

def write_gz_lines(folder, name, lines):
    os.makedirs(folder, exist_ok=True)
    with gzip.open(os.path.join(folder, name), "wt") as handle:
        handle.write("".join(text + "\n" for text in lines))


def land(config, ds, lines, items=("i1", "i2")):
    write_gz_lines(partition_path(config, RAW_EVENTS, ds), "part-0.jsonl.gz", lines)
    write_gz_lines(partition_path(config, RAW_CATALOG, ds), "catalog.jsonl.gz",
                   [json.dumps({"item_id": item, "category": "c", "brand": "b", "price": 1.0, "title": "t"})
                    for item in items])


def sorted_rows(spark, folder):
    return sorted(tuple(row) for row in spark.read.parquet(folder).collect())


def file_stamps(folder):
    return sorted((name, os.stat(os.path.join(folder, name)).st_mtime_ns) for name in os.listdir(folder))


def test_main_conserves_lines_and_a_rerun_replaces_only_its_date(spark, tmp_config):
    day_lines = [VIEW, VIEW, SEARCH, '{"event_id": "e30", "event_ti', CLICK_0, CLICK_1_5]
    land(tmp_config, DAY, day_lines)
    with open(os.path.join(partition_path(tmp_config, RAW_EVENTS, DAY), "manifest.json"), "w") as handle:
        handle.write('{"not": "an event file"}\n')  # only *.jsonl.gz files are events
    land(tmp_config, NEXT_DAY, [line("n1", "2026-11-28T09:00:00Z"), line("n2", "2026-11-28T09:00:00")])

    summary = clean.run(Night.for_dates(tmp_config, [DAY, NEXT_DAY]))['summary']

    # DAY: 6 lines = 3 kept (VIEW, SEARCH, CLICK_0) + duplicate + malformed + double click.
    assert summary[DAY] == {"raw_lines": 6, "clean": 3, "quarantined": 3, "reasons": {
        REASON_DUPLICATE: 1, REASON_MALFORMED: 1, REASON_DOUBLE_CLICK: 1}}
    assert summary[NEXT_DAY] == {"raw_lines": 2, "clean": 1, "quarantined": 1,
                                 "reasons": {REASON_BAD_TIMESTAMP: 1}}
    json.dumps(summary)  # the DAG logs it
    day_folder = partition_path(tmp_config, CLEAN_EVENTS, DAY)
    day_clean = sorted_rows(spark, day_folder)
    day_stamps = file_stamps(day_folder)

    # NEXT_DAY is fixed upstream: both lines are now valid, so its quarantine must vanish.
    land(tmp_config, NEXT_DAY, [line("n1", "2026-11-28T09:00:00Z"), line("n2", "2026-11-28T09:30:00Z")])
    for _ in range(2):  # and running it twice changes nothing
        summary = clean.run(Night.for_dates(tmp_config, [NEXT_DAY]))['summary']
        assert summary == {NEXT_DAY: {"raw_lines": 2, "clean": 2, "quarantined": 0, "reasons": {}}}
        next_day_clean = sorted_rows(spark, partition_path(tmp_config, CLEAN_EVENTS, NEXT_DAY))
        assert [row[0] for row in next_day_clean] == ["n1", "n2"]
    assert not os.path.exists(spark_lake.quarantine_partition_path(tmp_config, "clean", NEXT_DAY))
    # DAY was not rewritten: same files, same modification times, same rows.
    assert file_stamps(day_folder) == day_stamps
    assert sorted_rows(spark, day_folder) == day_clean
    assert len(sorted_rows(spark, spark_lake.quarantine_partition_path(tmp_config, "clean", DAY))) == 3


def test_pseudonymize_hashes_user_ids_and_masks_search_text(spark):
    key = TEST_KEY.encode()
    kept = spark.createDataFrame([
        ("e1", utc("2026-11-27T10:00:00"), "search", "u1", "s1", None, "Shoes for jane@example.com", None, DAY),
        ("e2", utc("2026-11-27T10:00:01"), "view", "u2", None, "i1", None, 10.0, DAY),
    ], KEPT_SCHEMA)

    assertDataFrameEqual(clean.pseudonymize(kept, key, "tokenize"), spark.createDataFrame([
        ("e1", utc("2026-11-27T10:00:00"), "search", hash_user_id("u1", key), "s1", None, "shoes for <email>",
         None, DAY),
        ("e2", utc("2026-11-27T10:00:01"), "view", hash_user_id("u2", key), None, "i1", None, 10.0, DAY),
    ], KEPT_SCHEMA))
    assert [row.query for row in clean.pseudonymize(kept, key, "drop").collect()] == [None, None]


def test_main_writes_hashed_users_and_filled_sessions_and_quarantines_the_raw_line(spark, tmp_config, monkeypatch):
    monkeypatch.setenv(tmp_config["privacy"]["key_env"], TEST_KEY)
    u1, u2 = hash_user_id("u1", TEST_KEY.encode()), hash_user_id("u2", TEST_KEY.encode())
    # u1 has no source sessions: 10:00 and 10:05 form one, 11:00 (55 minutes later) another.
    # u2 keeps its source session s7. The malformed line still names u1 in clear text.
    malformed = '{"event_id": "e9", "user_id": "u1", "query": "call 0171 5551234"'
    land(tmp_config, DAY, [
        line("e1", "2026-11-27T10:00:00Z", session_id=None),
        line("e2", "2026-11-27T10:05:00Z", "search", item_id=None, price=None, query="Call 0171 5551234",
             session_id=None),
        line("e3", "2026-11-27T11:00:00Z", item_id="i2", session_id=None),
        line("e4", "2026-11-27T10:00:00Z", user_id="u2", session_id="s7"),
        malformed,
    ])

    summary = clean.run(Night.for_dates(tmp_config, [DAY]))['summary']

    assert summary == {DAY: {"raw_lines": 5, "clean": 4, "quarantined": 1, "reasons": {REASON_MALFORMED: 1}}}
    session_10, session_11 = f"{u1}-1795773600000000", f"{u1}-1795777200000000"  # 10:00, 11:00 UTC
    assert utc("2026-11-27T10:00:00").timestamp() == 1795773600
    written = spark.read.parquet(partition_path(tmp_config, CLEAN_EVENTS, DAY))
    assertDataFrameEqual(written, spark.createDataFrame([
        ("e1", utc("2026-11-27T10:00:00"), "view", u1, session_10, "i1", None, 10.0),
        ("e2", utc("2026-11-27T10:05:00"), "search", u1, session_10, None, "call <number>", None),
        ("e3", utc("2026-11-27T11:00:00"), "view", u1, session_11, "i2", None, 10.0),
        ("e4", utc("2026-11-27T10:00:00"), "view", u2, "s7", "i1", None, 10.0),
    ], KEPT_SCHEMA.removesuffix(", dt string")))
    assert all(len(user) == 64 and int(user, 16) >= 0 for user in (u1, u2))
    quarantine = spark.read.parquet(spark_lake.quarantine_partition_path(tmp_config, "clean", DAY))
    assert [row.record for row in quarantine.collect()] == [malformed]


def test_missing_raw_folder_names_the_path(spark, tmp_config):
    with pytest.raises(ValueError, match=f"raw/events/dt={DAY} does not exist"):
        clean.run(Night.for_dates(tmp_config, [DAY]))['summary']


def test_empty_day_names_the_date(spark, tmp_config):
    land(tmp_config, DAY, [])
    with pytest.raises(ValueError, match=f"no lines in .* for \\['{DAY}'\\]"):
        clean.run(Night.for_dates(tmp_config, [DAY]))['summary']


def test_catalog_prices_that_are_not_amounts_become_unknown(spark, tmp_config):
    write_gz_lines(partition_path(tmp_config, RAW_CATALOG, DAY), "catalog.jsonl.gz", [
        '{"item_id": "i1", "price": "abc"}', '{"item_id": "i2", "price": -3}',
        '{"item_id": "i3", "category": "c", "brand": "b", "price": 4.5, "title": "t"}'])
    catalog = spark_lake.read_catalog(spark, tmp_config, DAY)
    assertDataFrameEqual(catalog, spark.createDataFrame(
        [("i1", None, None, None, None, DAY), ("i2", None, None, None, None, DAY),
         ("i3", "c", "b", 4.5, "t", DAY)],
        "item_id string, category string, brand string, price double, title string, dt string"))


def test_catalog_line_without_item_id_is_rejected(spark, tmp_config):
    write_gz_lines(partition_path(tmp_config, RAW_CATALOG, DAY), "catalog.jsonl.gz",
                   ['{"item_id": "i1"}', '{"item_id": "i2"', '{"title": "no id"}'])
    with pytest.raises(ValueError, match="not a JSON object with an item_id"):
        spark_lake.read_catalog(spark, tmp_config, DAY)


def test_catalog_with_a_repeated_item_is_rejected(spark, tmp_config):
    land(tmp_config, DAY, [VIEW], items=("i1", "i1"))
    with pytest.raises(ValueError, match="item_id 'i1' appears 2 times"):
        spark_lake.read_catalog(spark, tmp_config, DAY)


def test_conservation_check_reports_the_lost_rows():
    with pytest.raises(RuntimeError, match=f"clean {DAY}: 5 input rows but 3 kept \\+ 1 quarantined"):
        spark_lake.check_conservation("clean", {DAY: 5}, {DAY: 3}, {DAY: 1})


def spark_jobs_of(spark, action) -> int:
    """How many Spark jobs action() starts (counted through the job group it runs in)."""
    context = spark.sparkContext
    group = f"count-{os.urandom(4).hex()}"
    context.setJobGroup(group, "counted")
    try:
        action()
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)  # PySpark has no clearJobGroup
    return len(context.statusTracker().getJobIdsForGroup(group))


def test_clean_and_denoise_start_as_many_spark_jobs_for_six_dates_as_for_two(spark, tmp_config):
    # One read over all dates' folders and one count per output, not a read or a count per
    # date: a history of 365 dates costs the jobs of 2 (only the scans grow with the lines).
    from jobs.etl import denoise

    days = [(dt.date(2026, 11, 22) + dt.timedelta(days=n)).isoformat() for n in range(6)]
    for number, ds in enumerate(days):
        land(tmp_config, ds, [line(f"e{number}-{n}", f"{ds}T10:0{n}:00Z", user_id=f"u{n % 2}") for n in range(4)])
    jobs = {}
    for stage in (clean, denoise):
        jobs[stage.STAGE_NAME] = [spark_jobs_of(spark, lambda: stage.run(Night.for_dates(tmp_config, dates)))
                                  for dates in (days[-2:], days)]
    assert jobs["clean"][0] == jobs["clean"][1] and jobs["denoise"][0] == jobs["denoise"][1], jobs


def test_catalogs_of_several_days_are_read_at_once_and_a_repeat_is_named_with_its_day(spark, tmp_config):
    # i1 is listed on both days (fine: one listing per day); NEXT_DAY lists i2 twice.
    land(tmp_config, DAY, [VIEW], items=("i1",))
    land(tmp_config, NEXT_DAY, [VIEW], items=("i1", "i2"))
    assert sorted((row.dt, row.item_id) for row in spark_lake.read_catalogs(spark, tmp_config, [DAY, NEXT_DAY])
                  .collect()) == [(DAY, "i1"), (NEXT_DAY, "i1"), (NEXT_DAY, "i2")]
    land(tmp_config, NEXT_DAY, [VIEW], items=("i1", "i2", "i2"))
    with pytest.raises(ValueError, match=f"catalog {partition_path(tmp_config, RAW_CATALOG, NEXT_DAY)}: "
                                         f"item_id 'i2' appears 2 times"):
        spark_lake.read_catalogs(spark, tmp_config, [DAY, NEXT_DAY])
    with pytest.raises(ValueError, match="no catalog for 2026-11-29: .* does not exist"):
        spark_lake.read_catalogs(spark, tmp_config, [DAY, "2026-11-29"])
