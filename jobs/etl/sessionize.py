"""Sessionize: give events whose source has no session id one, by inactivity gap.

Some sources carry a session id (the tracking system's own export, REES46, YOOCHOOSE,
DIGINETICA); others have none (Taobao UserBehavior) and land with session_id null. For
those events a user's session is a run of events without a pause longer than the
inactivity gap (config sessionize.inactivity_gap_s, 30 minutes as in web analytics).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from jobs.common.schema import DT, EVENT_ID, EVENT_TIME, SESSION_ID, USER_ID

MICROS_PER_SECOND = 1_000_000

_MICROS = "_micros"
_STARTS_SESSION = "_starts_session"
_SESSION_START_MICROS = "_session_start_micros"


def sessionize(events: DataFrame, inactivity_gap_s: float) -> DataFrame:
    """Fill the null session ids of events (CLEAN_COLUMNS + dt); same columns out as in.

    Per (dt, user_id), the events without a session id, in (event_time, event_id) order,
    form sessions: one starts at the first event and at every event more than
    inactivity_gap_s after the previous one (a gap of exactly inactivity_gap_s stays in the
    session). Its id is "<user_id>-<unix microseconds of the session's first event>", so a
    re-run gives identical ids, and ids of different users never collide.

    Rows that already have a session id keep it unchanged, and they do not take part in the
    gaps of the rows without one.

    Sessions do not cross the day partition: clean processes each dt on its own (a re-run of
    a date must not depend on its neighbours), so a user active from 23:50 to 00:10 has one
    session ending in day D and another starting in day D+1.
    """
    if not inactivity_gap_s > 0:
        raise ValueError(f"config sessionize.inactivity_gap_s must be a positive number of seconds, "
                         f"got {inactivity_gap_s!r}")
    gap_micros = int(round(float(inactivity_gap_s) * MICROS_PER_SECOND))
    needs_session = F.col(SESSION_ID).isNull()
    # Only the rows without a session id are shuffled and sorted: with most sources that
    # is none of them, and rows with an id must not split the others' gaps anyway.
    timeline = Window.partitionBy(DT, USER_ID).orderBy(EVENT_TIME, EVENT_ID)
    gap = F.col(_MICROS) - F.lag(_MICROS).over(timeline)
    so_far = timeline.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    # Times only grow along the timeline, so the latest session start is the largest one.
    session_start = F.max(F.when(F.col(_STARTS_SESSION), F.col(_MICROS))).over(so_far)
    generated_id = F.concat_ws("-", F.col(USER_ID), F.col(_SESSION_START_MICROS).cast("string"))
    sessionized = (events.where(needs_session)
                   .withColumn(_MICROS, F.unix_micros(EVENT_TIME))
                   .withColumn(_STARTS_SESSION, gap.isNull() | (gap > F.lit(gap_micros)))
                   .withColumn(_SESSION_START_MICROS, session_start)
                   .withColumn(SESSION_ID, generated_id)
                   .select(*events.columns))
    return events.where(~needs_session).unionByName(sessionized)
