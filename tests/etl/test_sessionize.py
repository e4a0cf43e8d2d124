"""jobs/etl/sessionize.py: session ids by inactivity gap for events that lack one."""

import datetime as dt

import pytest
from pyspark.testing import assertDataFrameEqual

from jobs.etl.sessionize import sessionize

DAY, NEXT_DAY = "2026-11-27", "2026-11-28"
GAP_S = 1800
EVENT_SCHEMA = ("event_id string, event_time timestamp, event_type string, user_id string, "
                "session_id string, item_id string, query string, price double, dt string")


def utc(text):
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)


def session(user_id, start):
    """The id sessionize gives: the user and the session start in unix microseconds."""
    return f"{user_id}-{int(utc(start).timestamp()) * 1_000_000 + utc(start).microsecond}"


def event(event_id, when, user_id, session_id=None, ds=DAY):
    return (event_id, utc(when), "view", user_id, session_id, "i1", None, 1.0, ds)


# (input row, the session id expected out)
EVENTS = [
    # u1 on DAY, no source session: 10:00 starts a session; 10:30 is exactly 1800 s later
    # and stays in it; 11:00:01 is 1800 s + 1 s after 10:30 and starts a new one.
    (event("a1", "2026-11-27T10:00:00", "u1"), session("u1", "2026-11-27T10:00:00")),
    (event("a2", "2026-11-27T10:30:00", "u1"), session("u1", "2026-11-27T10:00:00")),
    (event("a3", "2026-11-27T11:00:01", "u1"), session("u1", "2026-11-27T11:00:01")),
    # Same time as a3 (gap 0), after it in event_id order: same session.
    (event("a4", "2026-11-27T11:00:01", "u1"), session("u1", "2026-11-27T11:00:01")),
    # 23:50 is hours after a4: a new session, ...
    (event("a5", "2026-11-27T23:50:00.250", "u1"), session("u1", "2026-11-27T23:50:00.250")),
    # ... and 20 minutes later, but on the next day's partition: sessions do not cross days.
    (event("a6", "2026-11-28T00:10:00", "u1", ds=NEXT_DAY), session("u1", "2026-11-28T00:10:00")),
    # u1 rows that came with a session id keep it, and do not bridge a2 -> a3 (10:45 sits
    # between them, less than 30 minutes from both).
    (event("s1", "2026-11-27T10:45:00", "u1", "src-a"), "src-a"),
    (event("s2", "2026-11-28T09:00:00", "u1", "src-b", ds=NEXT_DAY), "src-b"),
    # u2 at the same time as a1 gets a session of its own.
    (event("b1", "2026-11-27T10:00:00", "u2"), session("u2", "2026-11-27T10:00:00")),
    (event("b2", "2026-11-27T10:29:59", "u2"), session("u2", "2026-11-27T10:00:00")),
]


def test_sessions_start_after_a_gap_longer_than_the_threshold(spark):
    events = spark.createDataFrame([row for row, _ in EVENTS], EVENT_SCHEMA)

    sessionized = sessionize(events, GAP_S)

    expected = spark.createDataFrame([row[:4] + (session_id,) + row[5:] for row, session_id in EVENTS],
                                     EVENT_SCHEMA)
    assert sessionized.columns == events.columns
    assertDataFrameEqual(sessionized, expected)


def test_a_rerun_on_reshuffled_input_gives_identical_ids(spark):
    events = spark.createDataFrame([row for row, _ in EVENTS], EVENT_SCHEMA)
    reshuffled = spark.createDataFrame([row for row, _ in reversed(EVENTS)], EVENT_SCHEMA).repartition(3)
    assertDataFrameEqual(sessionize(reshuffled, GAP_S), sessionize(events, GAP_S))


@pytest.mark.parametrize("gap", [0, -5])
def test_a_gap_that_is_not_positive_is_refused(spark, gap):
    events = spark.createDataFrame([EVENTS[0][0]], EVENT_SCHEMA)
    with pytest.raises(ValueError, match="sessionize.inactivity_gap_s must be a positive"):
        sessionize(events, gap)
