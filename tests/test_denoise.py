"""jobs/denoise.py: bot users and consecutive repeats, by hand-made timelines."""

import datetime as dt

import pytest
from pyspark.testing import assertDataFrameEqual

from jobs import denoise, spark_lake
from jobs.lake import partition_path
from jobs.schema import CLEAN_EVENTS, DENOISED_EVENTS, REASON_BOT, REASON_CONSECUTIVE_REPEAT

DAY = "2026-11-27"
NEXT_DAY = "2026-11-28"
EVENT_SCHEMA = ("event_id string, event_time timestamp, event_type string, user_id string, "
                "session_id string, item_id string, query string, price double, dt string")
QUARANTINE_SCHEMA = "stage string, reason string, record string, dt string"


def event(event_id, when, event_type, user_id, item_id, ds=DAY):
    """A clean event; `when` is 'HH:MM:SS[.fff]' on ds. Searches get a query and no price."""
    time = dt.datetime.fromisoformat(f"{ds}T{when}").replace(tzinfo=dt.timezone.utc)
    query, price = ("shoes", None) if event_type == "search" else (None, 1.0)
    return (event_id, time, event_type, user_id, "s1", item_id, query, price, ds)


def item_record(event_id, when, user_id, item_id, event_type="view"):
    """The JSON that to_json writes for an item event; `when` is 'HH:MM:SS.fff' on DAY."""
    return (f'{{"event_id":"{event_id}","event_time":"{DAY}T{when}Z","event_type":"{event_type}",'
            f'"user_id":"{user_id}","session_id":"s1","item_id":"{item_id}","price":1.0}}')


# 4 views in the 10:00 minute (> 3): a bot, so its 11:00 view goes too. x2 also repeats x1,
# but bot_user is the first rule.
BOT_VIEWS = [("x1", "10:00:00.000", "i1"), ("x2", "10:00:10.000", "i1"), ("x3", "10:00:20.000", "i2"),
             ("x4", "10:00:59.999", "i3"), ("x5", "11:00:00.000", "i4")]
BOT = [event(event_id, when, "view", "bot", item) for event_id, when, item in BOT_VIEWS]
REMOVED_BOT = [(REASON_BOT, item_record(event_id, when, "bot", item)) for event_id, when, item in BOT_VIEWS]

BUSY = [  # 6 events within 60 s, but only 3 per calendar minute: not a bot.
    event("y1", "10:00:30", "view", "busy", "i1"),
    event("y2", "10:00:45", "view", "busy", "i2"),
    event("y3", "10:00:59", "view", "busy", "i3"),
    event("y4", "10:01:00", "view", "busy", "i4"),
    event("y5", "10:01:10", "view", "busy", "i5"),
    event("y6", "10:01:20", "view", "busy", "i6"),
]
SHOPPER = [
    event("a1", "10:00:00", "view", "u1", "i1"),
    event("a2", "10:05:00", "view", "u1", "i1"),  # repeat of a1
    event("a3", "10:06:00", "click", "u1", "i1"),  # same item, new type: kept
    event("a4", "10:07:00", "click", "u1", "i1"),  # repeat of a3
    event("a5", "10:08:00", "view", "u1", "i2"),
    event("a6", "10:09:00", "search", "u1", None),
    event("a7", "10:10:00", "search", "u1", None),  # searches have no item: never a repeat
    event("a8", "10:11:00", "view", "u1", "i2"),  # previous event is a search: kept
    event("b2", "13:00:00", "view", "u1", "i5"),  # same time as b1: event_id orders b1 first,
    event("b1", "13:00:00", "view", "u1", "i5"),  # so b2 is the repeat
    event("c1", "00:00:01", "view", "u1", "i5", ds=NEXT_DAY),  # a new day starts a new timeline
]
REMOVED_REPEATS = [
    (REASON_CONSECUTIVE_REPEAT, item_record("a2", "10:05:00.000", "u1", "i1")),
    (REASON_CONSECUTIVE_REPEAT, item_record("a4", "10:07:00.000", "u1", "i1", "click")),
    (REASON_CONSECUTIVE_REPEAT, item_record("b2", "13:00:00.000", "u1", "i5")),
]
RULES = dict(bot_max_events_per_minute=3, collapse_consecutive_repeats=True)


def by_id(rows, *ids):
    return [row for row in rows if row[0] in ids]


def test_bots_lose_all_events_and_repeats_collapse(spark):
    events = spark.createDataFrame(BOT + BUSY + SHOPPER, EVENT_SCHEMA)

    kept, quarantined = denoise.denoise_events(events, **RULES)

    expected_kept = BUSY + by_id(SHOPPER, "a1", "a3", "a5", "a6", "a7", "a8", "b1", "c1")
    assertDataFrameEqual(kept, spark.createDataFrame(expected_kept, EVENT_SCHEMA))
    assertDataFrameEqual(quarantined, spark.createDataFrame(
        [("denoise", reason, record, DAY) for reason, record in REMOVED_BOT + REMOVED_REPEATS],
        QUARANTINE_SCHEMA))


def test_repeats_are_kept_when_collapsing_is_off(spark):
    events = spark.createDataFrame(BOT + SHOPPER, EVENT_SCHEMA)

    kept, quarantined = denoise.denoise_events(events, bot_max_events_per_minute=3,
                                               collapse_consecutive_repeats=False)

    assertDataFrameEqual(kept, spark.createDataFrame(SHOPPER, EVENT_SCHEMA))
    assert sorted(row.reason for row in quarantined.collect()) == [REASON_BOT] * 5


def test_main_writes_both_outputs_and_summarises_per_rule(spark, tmp_config):
    tmp_config["denoise"]["bot_max_events_per_minute"] = 3
    clean_events = spark.createDataFrame(BOT + BUSY + SHOPPER, EVENT_SCHEMA)
    spark_lake.write_partitions(clean_events, tmp_config, CLEAN_EVENTS)

    summary = denoise.main(tmp_config, [DAY, NEXT_DAY])

    # DAY: 5 bot + 6 busy + 10 shopper = 21 clean rows; 5 bot rows (1 user) and 3 repeats
    # (1 user) removed, 13 left. NEXT_DAY: only c1.
    assert summary == {
        DAY: {"clean": 21, "denoised": 13, "quarantined": 8,
              "removed": {REASON_BOT: {"rows": 5, "users": 1},
                          REASON_CONSECUTIVE_REPEAT: {"rows": 3, "users": 1}}},
        NEXT_DAY: {"clean": 1, "denoised": 1, "quarantined": 0, "removed": {}},
    }
    on_disk = spark.read.parquet(partition_path(tmp_config, DENOISED_EVENTS, DAY))
    assert sorted(row.event_id for row in on_disk.collect()) == sorted(
        ["y1", "y2", "y3", "y4", "y5", "y6", "a1", "a3", "a5", "a6", "a7", "a8", "b1"])


def test_missing_clean_partition_names_the_path(spark, tmp_config):
    with pytest.raises(ValueError, match=f"clean/events/dt={DAY}"):
        denoise.main(tmp_config, [DAY])
