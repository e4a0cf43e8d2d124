"""jobs/etl/denoise.py: every rule at and just past its threshold, by hand-made timelines."""

import datetime as dt
import json

import pytest
from pyspark.testing import assertDataFrameEqual

from jobs.common.night import Night
from jobs.etl import denoise
from jobs.common import spark_io as spark_lake
from jobs.common.lake import partition_path
from jobs.common.schema import (CLEAN_COLUMNS, CLEAN_EVENTS, DENOISED_EVENTS, REASON_ACCIDENTAL_CLICK, REASON_BOT,
                         REASON_BOT_DISTINCT_ITEMS, REASON_BOT_REGULAR_TIMING, REASON_CONSECUTIVE_REPEAT,
                         REASON_HEAVY_USER_CAP, REASON_MIN_SUPPORT, REASON_SESSION_LENGTH_OUTLIER)

DAY = "2026-11-27"
NEXT_DAY = "2026-11-28"
EVENT_SCHEMA = ("event_id string, event_time timestamp, event_type string, user_id string, "
                "session_id string, item_id string, query string, price double, dt string")
QUARANTINE_SCHEMA = "stage string, reason string, record string, dt string"


def event(event_id, when, event_type, user_id, item_id, ds=DAY, session="s1"):
    """A clean event; `when` is 'HH:MM:SS[.fff]' on ds. Searches get a query and no price."""
    time = dt.datetime.fromisoformat(f"{ds}T{when}").replace(tzinfo=dt.timezone.utc)
    query, price = ("shoes", None) if event_type == "search" else (None, 1.0)
    return (event_id, time, event_type, user_id, session, item_id, query, price, ds)


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

    summary = denoise.run(Night.for_dates(tmp_config, [DAY, NEXT_DAY]))['summary']

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
        denoise.run(Night.for_dates(tmp_config, [DAY]))['summary']


# --- The rules added for issue 3, each alone (the others off) --------------------------------

def record_of(row):
    """The JSON that to_json writes for an event() row: UTC milliseconds, null fields left out."""
    fields = dict(zip(CLEAN_COLUMNS, row))
    moment = fields["event_time"]
    fields["event_time"] = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return json.dumps({k: v for k, v in fields.items() if v is not None}, separators=(",", ":"))


def assert_split(spark, rows, removed, **rules):
    """denoise_events keeps exactly the rows not in `removed` ({event_id: reason}) and quarantines those."""
    kept, quarantined = denoise.denoise_events(spark.createDataFrame(rows, EVENT_SCHEMA), **rules)
    assertDataFrameEqual(kept, spark.createDataFrame([r for r in rows if r[0] not in removed], EVENT_SCHEMA))
    assertDataFrameEqual(quarantined, spark.createDataFrame(
        [("denoise", removed[r[0]], record_of(r), r[-1]) for r in rows if r[0] in removed], QUARANTINE_SCHEMA))


def test_record_of_matches_the_hand_written_json():
    assert record_of(SHOPPER[1]) == item_record("a2", "10:05:00.000", "u1", "i1")


def test_distinct_items_per_minute(spark):
    rows = [  # limit 3 distinct items in a calendar minute
        event("p1", "10:00:00", "view", "at", "i1"), event("p2", "10:00:10", "click", "at", "i1"),
        event("p3", "10:00:20", "view", "at", "i2"), event("p4", "10:00:30", "view", "at", "i3"),
        # 4 events but 3 distinct items: at the limit, kept (it counts items, not events)
        event("q1", "10:00:00", "view", "past", "i1"), event("q2", "10:00:10", "view", "past", "i2"),
        event("q3", "10:00:20", "view", "past", "i3"), event("q4", "10:00:59.999", "view", "past", "i4"),
        event("q5", "11:00:00", "view", "past", "i5"),  # 4 distinct in 10:00: the whole day goes
    ]
    removed = {f"q{n}": REASON_BOT_DISTINCT_ITEMS for n in range(1, 6)}
    assert_split(spark, rows, removed, bot_max_distinct_items_per_minute=3)


def test_implausibly_regular_gaps(spark):
    def timeline(user, seconds, prefix):
        return [event(f"{prefix}{n}", f"10:00:{s:06.3f}", "view", user, f"i{n}") for n, s in enumerate(seconds)]

    rows = (timeline("edge", [0, 9, 20, 29, 40], "e")  # gaps 9,11,9,11: mean 10, std 1, CV 0.1: kept
            + timeline("tick", [0, 9.5, 20, 29.5, 40], "t")  # gaps 9.5,10.5,..: CV 0.05 < 0.1: a bot
            + timeline("few", [0, 10, 20, 30], "f")  # CV 0 but 4 events < 5: too few to judge, kept
            + timeline("burst", [5, 5, 5, 5, 5], "b"))  # all gaps 0 (mean 0): regular, a bot
    removed = {f"{p}{n}": REASON_BOT_REGULAR_TIMING for p in "tb" for n in range(5)}
    assert_split(spark, rows, removed, bot_regular_min_events=5, bot_regular_max_cv=0.1)


def test_session_length_outlier(spark):
    rows = ([event(f"a{n}", f"10:0{n}:00", "view", "at", f"i{n}", session="s1") for n in range(3)]
            + [event(f"b{n}", f"11:0{n}:00", "view", "at", f"i{n}", session="s2") for n in range(3)]
            # 3 + 3 events: each session at the cap of 3 (the cap is per session, not per day)
            + [event(f"c{n}", f"10:0{n}:00", "view", "past", f"i{n}", session="s1") for n in range(4)]
            + [event("d0", "12:00:00", "view", "past", "i9", session="s2")])
    # "past" has a 4-event session: a crawler, so its other session goes too.
    removed = {event_id: REASON_SESSION_LENGTH_OUTLIER for event_id in ["c0", "c1", "c2", "c3", "d0"]}
    assert_split(spark, rows, removed, max_events_per_session=3)


def test_accidental_clicks_use_dwell_to_the_next_kept_event(spark):
    rows = [  # limit: dwell under 5 s
        event("d1", "10:00:00.000", "view", "u1", "i1"),  # next d2 after 5.000 s: kept
        event("d2", "10:00:05.000", "view", "u1", "i2"),  # next d3 after 4.999 s: accidental
        event("d3", "10:00:09.999", "add_to_cart", "u1", "i2"),  # 0.001 s, but a cart: kept
        event("d4", "10:00:10.000", "click", "u1", "i3"),  # next d5 after 1 s: accidental
        event("d5", "10:00:11.000", "view", "u1", "i3"),  # next non-repeat d7 after 60 s: kept
        event("d6", "10:00:11.000", "view", "u1", "i3"),  # repeat of d5 (same time, later id)
        event("d7", "10:01:11.000", "view", "u1", "i4"),
        event("e1", "12:00:00.000", "view", "u1", "i7"),  # next non-repeat e3 after 3 s: accidental
        event("e2", "12:00:01.000", "view", "u1", "i7"),  # repeat of e1, skipped as e1's next;
        # its own next, e3, is 2 s later: accidental, the rule before consecutive_repeat
        event("e3", "12:00:03.000", "view", "u1", "i8"),
        event("d8", "23:59:59.999", "view", "u1", "i5"),  # last of the day: dwell unknown, kept
        event("d9", "00:00:00.000", "view", "u1", "i6", ds=NEXT_DAY),  # another day's timeline
    ]
    removed = {"d2": REASON_ACCIDENTAL_CLICK, "d4": REASON_ACCIDENTAL_CLICK, "d6": REASON_CONSECUTIVE_REPEAT,
               "e1": REASON_ACCIDENTAL_CLICK, "e2": REASON_ACCIDENTAL_CLICK}
    assert_split(spark, rows, removed, accidental_click_max_dwell_s=5.0, collapse_consecutive_repeats=True)


def test_heavy_user_cap_keeps_the_earliest_events_left_by_earlier_rules(spark):
    rows = [  # cap 3 events per user and day
        event("h1", "10:00:00", "view", "heavy", "i1"),
        event("h2", "10:01:00", "view", "heavy", "i1"),  # a repeat: removed first, not counted
        event("h3", "10:02:00", "view", "heavy", "i2"),
        event("h4", "10:03:00", "view", "heavy", "i3"),  # 3rd kept event: at the cap
        event("h5", "10:04:00", "view", "heavy", "i4"),  # 4th: past it
        event("g1", "09:00:00", "view", "light", "i1"), event("g2", "09:01:00", "view", "light", "i2"),
        event("g3", "09:02:00", "view", "light", "i3"),
        event("g4", "00:00:01", "view", "light", "i4", ds=NEXT_DAY),  # a new day, a new count
    ]
    removed = {"h2": REASON_CONSECUTIVE_REPEAT, "h5": REASON_HEAVY_USER_CAP}
    assert_split(spark, rows, removed, collapse_consecutive_repeats=True, max_events_per_user_day=3)


# Minimum support 2 item events per item and per session. Round 1 drops the only i3 and i4
# events; round 2 the sessions of u2 and u3, left with one item event each; that leaves i1
# and i2 once each (in u1's session), so round 3 drops u1's session, search included;
# round 4 drops nothing. u4 and u5 (i5, i6 twice each) are a stable core.
MIN_SUPPORT_ROWS = [
    event("m1", "10:00:00", "view", "u1", "i1"), event("m2", "10:01:00", "view", "u1", "i2"),
    event("m3", "10:02:00", "search", "u1", None),
    event("n1", "10:00:00", "view", "u2", "i1"), event("n2", "10:01:00", "view", "u2", "i3"),
    event("o1", "10:00:00", "view", "u3", "i2"), event("o2", "10:01:00", "view", "u3", "i4"),
    event("r1", "10:00:00", "view", "u4", "i5"), event("r2", "10:01:00", "view", "u4", "i6"),
    event("r3", "10:02:00", "search", "u4", None),
    event("t1", "10:00:00", "view", "u5", "i5"), event("t2", "10:01:00", "view", "u5", "i6"),
]
MIN_SUPPORT = dict(min_item_events=2, min_session_item_events=2)


def test_min_support_iterates_until_stable(spark):
    removed = {event_id: REASON_MIN_SUPPORT for event_id in ["m1", "m2", "m3", "n1", "n2", "o1", "o2"]}
    assert_split(spark, MIN_SUPPORT_ROWS, removed, **MIN_SUPPORT, min_support_max_rounds=10)


def test_min_support_stops_at_the_round_cap(spark):
    removed = {event_id: REASON_MIN_SUPPORT for event_id in ["n1", "n2", "o1", "o2"]}  # rounds 1-2
    assert_split(spark, MIN_SUPPORT_ROWS, removed, **MIN_SUPPORT, min_support_max_rounds=2)


def test_the_denoise_config_section_is_label_noises_keywords():
    # run() calls label_noise(events, **config["denoise"]): every key must be a keyword.
    import inspect

    from jobs.common.config import resolve_config

    keywords = [name for name, parameter in inspect.signature(denoise.label_noise).parameters.items()
                if parameter.kind is inspect.Parameter.KEYWORD_ONLY]
    rules = resolve_config({"denoise": {"bot_max_events_per_minute": 5, "min_item_events": None}}, environ={})["denoise"]
    assert list(rules) == keywords
    assert rules["bot_max_events_per_minute"] == 5 and rules["min_item_events"] is None  # None: the rule is off
    with pytest.raises(ValueError, match="config denoise.bot_max_per_minute: unknown key"):
        resolve_config({"denoise": {"bot_max_per_minute": 5}}, environ={})
