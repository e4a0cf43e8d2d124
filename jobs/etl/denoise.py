"""Denoise: remove behaviour that is valid data but not a shopper's intent.

Input:  clean/events for the dates.
Output: denoised/events (same columns as clean) and quarantine/events stage=denoise, where
        record is the removed clean row as JSON.

Every rule works per day (dt) on the partition being denoised, so a night never reads or
changes another night's rows and a re-run of a date gives the same split. A user's
"timeline" is their events of the day ordered by event_time, then event_id (a stable tie
break). Rules apply in this order and a removed row carries the first that matches:

  1. bot_user                a user with more than bot_max_events_per_minute events in any
                             calendar minute (10:00:00.000-10:00:59.999) loses *all* that
                             day's events: a bot's slow moments are still a bot's.
  2. bot_distinct_items      more than bot_max_distinct_items_per_minute distinct items in
                             any calendar minute: a crawler walking the catalog (a person
                             cannot look at that many products in a minute). All the day's
                             events go.
  3. bot_regular_timing      a user with at least bot_regular_min_events events whose gaps
                             between consecutive events have a coefficient of variation
                             (population std / mean) below bot_regular_max_cv: a scheduler,
                             not a person. All gaps equal to zero counts as regular. All the
                             day's events go.
  4. session_length_outlier  a user with a session (user_id, session_id) of more than
                             max_events_per_session events: browsing beyond any human
                             session is a crawler, so all that user's day goes, like 1-3.
  5. accidental_click        a view or click whose dwell - the time to the same user's next
                             event of the day that is not a collapsed repeat (rule 6) - is
                             under accidental_click_max_dwell_s seconds. The user's last
                             event of the day has no next event, so its dwell is unknown and
                             it is kept: a session often ends on the item that was wanted.
  6. consecutive_repeat      an item event with the same item and event type as the user's
                             immediately previous event of the day, when
                             collapse_consecutive_repeats. A run of repeats collapses to its
                             first event. Searches carry no item, so they never repeat, and
                             they break a run (view A, search, view A).
  7. heavy_user_cap          of the events left after rules 1-6, a user keeps the *earliest*
                             max_events_per_user_day of the day. Earliest, because then the
                             cut is causal: whether an event is kept depends only on what the
                             user did before it, as an online rate limiter would decide, and
                             events that arrive late can only ever fall past the cap instead
                             of changing which earlier events were kept.
  8. min_support             k-core style filtering of what is left after rules 1-7, as the
                             published session-based benchmarks prepare their data. Each round
                             counts the rows still kept at its start and drops, at once, the
                             events of items with fewer than min_item_events item events and
                             the sessions (all their rows, searches too) with fewer than
                             min_session_item_events item events; dropping a session can push
                             an item under its minimum, so rounds repeat until one drops
                             nothing or min_support_max_rounds have run. It runs per night
                             over the partition being denoised, so "support" is that day's
                             support, not the whole history's - which is why it is off by
                             default (min_item_events 1, min_session_item_events 0).

Rules 1-6 measure the clean timeline as it came in, so a row another rule removes can still
be a neighbour (rule 5 alone skips collapsed repeats); 7 and 8 count only the rows earlier
rules kept. Every rule is configured under config["denoise"] (defaults in
jobs/common/config.py; a setting of None turns its rule off, as does leaving a keyword of
label_noise out), and main's summary reports the rows and
users each rule removed.
"""

from __future__ import annotations

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from jobs.etl.clean import split_labeled, write_labeled
from jobs.common.night import Night
from jobs.common.spark_io import (check_conservation, count_by_date, count_quarantined,
                             read_event_partitions, validate_dates)
from jobs.common.schema import (CLEAN_COLUMNS, CLEAN_EVENTS, CLICK, DENOISED_EVENTS, DT, EVENT_ID, EVENT_TIME,
                         EVENT_TYPE, ITEM_ID, REASON, REASON_ACCIDENTAL_CLICK, REASON_BOT,
                         REASON_BOT_DISTINCT_ITEMS, REASON_BOT_REGULAR_TIMING, REASON_CONSECUTIVE_REPEAT,
                         REASON_HEAVY_USER_CAP, REASON_MIN_SUPPORT, REASON_SESSION_LENGTH_OUTLIER, RECORD,
                         SESSION_ID, USER_ID, VIEW)
from jobs.common.spark_session import get_spark

STAGE_NAME = "denoise"

_EVENTS_IN_MINUTE = "_events_in_minute"
_ITEMS_IN_MINUTE = "_items_in_minute"
_GAP_S = "_gap_s"
_DWELL_S = "_dwell_s"
_REPEAT = "_repeat"
_SESSION_EVENTS = "_session_events"
_MINUTE = "_minute"


# --- Transform -----------------------------------------------------------------------------

def denoise_events(events: DataFrame, **rules) -> tuple[DataFrame, DataFrame]:
    """Split clean events (CLEAN_COLUMNS + dt) into (denoised events, quarantine rows).

    rules: the keyword arguments of label_noise.
    """
    return split_labeled(label_noise(events, **rules), STAGE_NAME)


def label_noise(events: DataFrame, *, bot_max_events_per_minute: int | None = None,
                bot_max_distinct_items_per_minute: int | None = None,
                bot_regular_min_events: int | None = None, bot_regular_max_cv: float | None = None,
                max_events_per_session: int | None = None,
                accidental_click_max_dwell_s: float | None = None,
                collapse_consecutive_repeats: bool = False,
                max_events_per_user_day: int | None = None,
                min_item_events: int | None = None, min_session_item_events: int | None = None,
                min_support_max_rounds: int | None = None) -> DataFrame:
    """Add `reason` (first matching rule, null = kept) and `record` (the row as JSON).

    A rule whose setting is None (or False) is off; the min_support rule, when on, needs
    min_support_max_rounds too. The min_support rule runs Spark jobs
    (one per round) to know when nothing more drops; every other rule is lazy.
    """
    # One shuffle by (dt, user_id) and two sorts: every rule reads one user's day. The
    # session sizes need rows sorted by session, so they come first; every other window
    # then reads the timeline in one order, (minute, event_time, event_id), which is time
    # order (a later minute is a later time) and also groups each calendar minute.
    # A window function cannot take another as its argument, so the per-minute, per-gap and
    # per-session values are columns of their own before the user's day is summarised.
    measured = (events.repartition(DT, USER_ID)
                .withColumn(_SESSION_EVENTS, _events_in_same_session())
                .withColumn(_MINUTE, _minute_number())
                .withColumn(_EVENTS_IN_MINUTE, _events_in_same_minute())
                .withColumn(_ITEMS_IN_MINUTE, _distinct_items_in_same_minute())
                .withColumn(_GAP_S, _seconds_since_previous_event())
                .withColumn(_REPEAT, _repeats_previous_event() if collapse_consecutive_repeats else F.lit(False))
                .withColumn(_DWELL_S, _seconds_to_next_kept_event()))
    rules = []
    if bot_max_events_per_minute is not None:
        rules.append((REASON_BOT, _busiest_minute_over(_EVENTS_IN_MINUTE, bot_max_events_per_minute)))
    if bot_max_distinct_items_per_minute is not None:
        rules.append((REASON_BOT_DISTINCT_ITEMS,
                      _busiest_minute_over(_ITEMS_IN_MINUTE, bot_max_distinct_items_per_minute)))
    if bot_regular_min_events is not None and bot_regular_max_cv is not None:
        rules.append((REASON_BOT_REGULAR_TIMING, _has_regular_gaps(bot_regular_min_events, bot_regular_max_cv)))
    if max_events_per_session is not None:
        rules.append((REASON_SESSION_LENGTH_OUTLIER, _has_long_session(max_events_per_session)))
    if accidental_click_max_dwell_s is not None:
        rules.append((REASON_ACCIDENTAL_CLICK, _is_accidental_click(accidental_click_max_dwell_s)))
    if collapse_consecutive_repeats:
        rules.append((REASON_CONSECUTIVE_REPEAT, F.col(_REPEAT)))
    reason = F.coalesce(*[F.when(matched, F.lit(code)) for code, matched in rules]) if rules else F.lit(None)
    labeled = measured.select(*CLEAN_COLUMNS, DT, _MINUTE, reason.cast("string").alias(REASON))
    if max_events_per_user_day is not None:
        labeled = cap_user_days(labeled, max_events_per_user_day)
    labeled = labeled.drop(_MINUTE)
    if (min_item_events or 0) > 1 or (min_session_item_events or 0) > 0:
        labeled = drop_unsupported(labeled, min_item_events or 0, min_session_item_events or 0,
                                   min_support_max_rounds)
    # Only removed rows need their JSON; kept rows would carry it through the cache for nothing.
    record = F.when(F.col(REASON).isNotNull(), F.to_json(F.struct(*CLEAN_COLUMNS)))
    return labeled.withColumn(RECORD, record)


def _user_day() -> Window:
    return Window.partitionBy(DT, USER_ID)


def _user_timeline() -> Window:
    # _MINUTE first changes nothing in the order and lets the minute windows share the sort.
    return Window.partitionBy(DT, USER_ID).orderBy(_MINUTE, EVENT_TIME, EVENT_ID)


def _minute_number() -> Column:
    """The calendar minute (10:00:00.000-10:00:59.999 UTC) as whole minutes since the epoch."""
    return F.floor(F.unix_micros(EVENT_TIME) / F.lit(60_000_000)).cast("long")


def _same_minute() -> Window:
    # The peers of a row in the minute order: the user's events of the same minute.
    return Window.partitionBy(DT, USER_ID).orderBy(_MINUTE).rangeBetween(Window.currentRow, Window.currentRow)


def _events_in_same_minute() -> Column:
    return F.count(F.lit(1)).over(_same_minute())


def _distinct_items_in_same_minute() -> Column:
    # countDistinct is not a window function; the size of the set is (searches add no item).
    return F.size(F.collect_set(ITEM_ID).over(_same_minute()))


def _seconds_between(earlier: Column, later: Column) -> Column:
    # Whole microseconds subtracted before dividing, so gaps of whole seconds stay exact.
    return (F.unix_micros(later) - F.unix_micros(earlier)) / F.lit(1_000_000.0)


def _seconds_since_previous_event() -> Column:
    return _seconds_between(F.lag(EVENT_TIME).over(_user_timeline()), F.col(EVENT_TIME))


def _seconds_to_next_kept_event() -> Column:
    # The next event that is not a collapsed repeat: a view followed by its own repeat at the
    # same moment is one view, and must not lose both copies (one as accidental, one as repeat).
    # lead() that skips nulls reads it in the timeline's own order, in linear time; the
    # Python API has no ignoreNulls for lead, so the window is written in SQL.
    next_time = F.expr(f"lead(CASE WHEN NOT {_REPEAT} THEN {EVENT_TIME} END) IGNORE NULLS OVER "
                       f"(PARTITION BY {DT}, {USER_ID} ORDER BY {_MINUTE}, {EVENT_TIME}, {EVENT_ID})")
    return _seconds_between(F.col(EVENT_TIME), next_time)


def _events_in_same_session() -> Column:
    return F.count(F.lit(1)).over(Window.partitionBy(DT, USER_ID, SESSION_ID))


def _busiest_minute_over(per_minute_column: str, limit: int) -> Column:
    return F.max(per_minute_column).over(_user_day()) > F.lit(int(limit))


def _has_regular_gaps(min_events: int, max_cv: float) -> Column:
    # Population moments from the count, sum and sum of squares, not Spark's stddev: sums do
    # not depend on the order rows reach the window, so a re-run gives the same verdict for a
    # user right at the threshold. Gaps are seconds, so the squares lose nothing that matters.
    # The first event has no gap (null), which count and sum skip.
    user_day = _user_day()
    gaps = F.count(_GAP_S).over(user_day)
    mean_gap = F.sum(_GAP_S).over(user_day) / gaps
    variance = F.greatest(F.sum(F.col(_GAP_S) * F.col(_GAP_S)).over(user_day) / gaps - mean_gap * mean_gap,
                          F.lit(0.0))
    # All gaps zero (mean 0): every event at one instant, as regular as it gets. `when`, not
    # `|`, so the division never meets a zero mean (ANSI mode would fail on it).
    regular = F.when(mean_gap == 0, F.lit(True)).otherwise(F.sqrt(variance) / mean_gap < F.lit(float(max_cv)))
    return F.when(gaps + 1 >= F.lit(int(min_events)), regular).otherwise(F.lit(False))


def _has_long_session(max_events: int) -> Column:
    return F.max(_SESSION_EVENTS).over(_user_day()) > F.lit(int(max_events))


def _is_accidental_click(max_dwell_s: float) -> Column:
    # The last event's dwell is null, so the comparison is null and the rule does not match.
    return F.col(EVENT_TYPE).isin(VIEW, CLICK) & (F.col(_DWELL_S) < F.lit(float(max_dwell_s)))


def _repeats_previous_event() -> Column:
    # Plain equality: a null item (search) never equals anything, so searches never repeat.
    return ((F.col(ITEM_ID) == F.lag(ITEM_ID).over(_user_timeline()))
            & (F.col(EVENT_TYPE) == F.lag(EVENT_TYPE).over(_user_timeline())))


def cap_user_days(labeled: DataFrame, max_events: int) -> DataFrame:
    """Label heavy_user_cap on the kept rows of a user's day past its `max_events` earliest.

    labeled carries _MINUTE (the timeline's order): the running count of kept rows is each
    kept row's rank among them in time order, read in the order the timeline sort left.
    """
    kept_so_far = F.count(F.when(F.col(REASON).isNull(), F.lit(1))).over(
        _user_timeline().rowsBetween(Window.unboundedPreceding, Window.currentRow))
    over_cap = F.col(REASON).isNull() & (kept_so_far > F.lit(int(max_events)))
    return labeled.withColumn(REASON, F.when(over_cap, F.lit(REASON_HEAVY_USER_CAP)).otherwise(F.col(REASON)))


def drop_unsupported(labeled: DataFrame, min_item_events: int, min_session_item_events: int,
                     max_rounds: int | None) -> DataFrame:
    """Label min_support on kept rows until every kept item and session has its minimum support.

    Stops early when a round drops nothing; after max_rounds the result may still hold a few
    under-supported rows (each round is a full pass over the day, so the cost is bounded).
    """
    if max_rounds is None or max_rounds < 1:
        raise ValueError(f"denoise.min_support_max_rounds must be at least 1, got {max_rounds}")
    kept = labeled.where(F.col(REASON).isNull()).count()
    cached = []
    try:
        for _ in range(max_rounds):
            labeled = _drop_unsupported_once(labeled, min_item_events, min_session_item_events)
            # Cached so the next round and the caller start from this round's labels instead
            # of recomputing every window of every earlier round.
            labeled = labeled.persist(StorageLevel.MEMORY_AND_DISK)
            cached.append(labeled)
            still_kept = labeled.where(F.col(REASON).isNull()).count()
            if still_kept == kept:
                break
            kept = still_kept
    finally:
        # Earlier rounds are no longer needed once the last one is materialized; the last
        # stays cached for the caller (main persists and unpersists its own copy as well).
        for earlier in cached[:-1]:
            earlier.unpersist()
    return labeled


def _drop_unsupported_once(labeled: DataFrame, min_item_events: int, min_session_item_events: int) -> DataFrame:
    kept_item_event = F.col(REASON).isNull() & F.col(ITEM_ID).isNotNull()
    item_support = F.count(F.when(kept_item_event, 1)).over(Window.partitionBy(DT, ITEM_ID))
    session_support = F.count(F.when(kept_item_event, 1)).over(Window.partitionBy(DT, USER_ID, SESSION_ID))
    rare_item = F.col(ITEM_ID).isNotNull() & (item_support < F.lit(int(min_item_events)))
    thin_session = session_support < F.lit(int(min_session_item_events))
    unsupported = F.col(REASON).isNull() & (rare_item | thin_session)
    return labeled.withColumn(REASON, F.when(unsupported, F.lit(REASON_MIN_SUPPORT)).otherwise(F.col(REASON)))


def removed_users(labeled: DataFrame) -> dict:
    """{date: {reason: distinct users with a row removed for that reason}}."""
    rows = (labeled.where(F.col(REASON).isNotNull()).groupBy(DT, REASON)
            .agg(F.countDistinct(USER_ID).alias("users")).collect())
    users: dict = {}
    for row in rows:
        users.setdefault(row[DT], {})[row[REASON]] = row["users"]
    return users


# --- Job -------------------------------------------------------------------------------------

def run(night: Night) -> dict:
    """Denoise the clean events of the night's dates.

    Returns {"dates": [...], "summary": {date: {"clean", "denoised", "quarantined",
    "removed": {rule: {"rows", "users"}}}}}.
    """
    config, dates = night.config, validate_dates(list(night.dates))
    spark = get_spark(config)
    events = read_event_partitions(spark, config, CLEAN_EVENTS, dates)
    labeled = label_noise(events, **config["denoise"])
    outcomes, users = write_labeled(spark, config, STAGE_NAME, DENOISED_EVENTS, labeled, dates, also=removed_users)

    clean_counts = count_by_date(spark, config, CLEAN_EVENTS, dates)
    denoised_counts = count_by_date(spark, config, DENOISED_EVENTS, dates)
    quarantined_counts = count_quarantined(spark, config, STAGE_NAME, dates)
    check_conservation(STAGE_NAME, clean_counts, denoised_counts, quarantined_counts)
    return {"dates": dates, "summary": {
        ds: {"clean": clean_counts[ds], "denoised": denoised_counts[ds], "quarantined": quarantined_counts[ds],
             "removed": {reason: {"rows": rows, "users": users[ds][reason]}
                         for reason, rows in outcomes[ds]["reasons"].items()}}
        for ds in dates}}
