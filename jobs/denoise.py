"""Denoise: remove behaviour that is valid data but not a shopper's intent.

Input:  clean/events for the dates.
Output: denoised/events (same columns as clean) and quarantine/events stage=denoise, where
        record is the removed clean row as JSON.

Rules, per day, applied in this order (a removed row carries the first that matches):

  1. bot_user            a user with more than denoise.bot_max_events_per_minute events in
                         any calendar minute (10:00:00.000-10:00:59.999) of the day loses
                         *all* that day's events: a bot's slow moments are still a bot's.
  2. consecutive_repeat  an item event with the same item and event type as the user's
                         immediately previous event of the day (ordered by event_time, then
                         event_id), when denoise.collapse_consecutive_repeats. A run of
                         repeats collapses to its first event. Searches carry no item, so
                         they never repeat, and they break a run (view A, search, view A).
"""

from __future__ import annotations

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from jobs.clean import split_labeled
from jobs.spark_lake import (check_conservation, count_by_date, count_outcomes, count_quarantined,
                             read_event_partitions, replace_stage_output, validate_dates)
from jobs.schema import (CLEAN_COLUMNS, CLEAN_EVENTS, DENOISED_EVENTS, DT, EVENT_ID, EVENT_TIME, EVENT_TYPE, ITEM_ID,
                         REASON, REASON_BOT, REASON_CONSECUTIVE_REPEAT, RECORD, USER_ID)
from jobs.spark import get_spark

STAGE_NAME = "denoise"

_EVENTS_IN_MINUTE = "_events_in_minute"


# --- Transform -----------------------------------------------------------------------------

def denoise_events(events: DataFrame, *, bot_max_events_per_minute: int,
                   collapse_consecutive_repeats: bool) -> tuple[DataFrame, DataFrame]:
    """Split clean events (CLEAN_COLUMNS + dt) into (denoised events, quarantine rows)."""
    labeled = label_noise(events, bot_max_events_per_minute=bot_max_events_per_minute,
                          collapse_consecutive_repeats=collapse_consecutive_repeats)
    return split_labeled(labeled, STAGE_NAME)


def label_noise(events: DataFrame, *, bot_max_events_per_minute: int,
                collapse_consecutive_repeats: bool) -> DataFrame:
    """Add `reason` (first matching rule, null = kept) and `record` (the row as JSON)."""
    # A window function cannot take another as its argument, so the per-minute count is
    # a column of its own before the busiest minute is taken over the user's day.
    with_rates = events.withColumn(_EVENTS_IN_MINUTE, _events_in_same_minute())
    rules = [(REASON_BOT, _is_bot_user(bot_max_events_per_minute))]
    if collapse_consecutive_repeats:
        rules.append((REASON_CONSECUTIVE_REPEAT, _repeats_previous_event()))
    reason = F.coalesce(*[F.when(matched, F.lit(code)) for code, matched in rules])
    labeled = with_rates.select(*CLEAN_COLUMNS, DT, reason.alias(REASON))
    # Only removed rows need their JSON; kept rows would carry it through the cache for nothing.
    record = F.when(F.col(REASON).isNotNull(), F.to_json(F.struct(*CLEAN_COLUMNS)))
    return labeled.withColumn(RECORD, record)


def _events_in_same_minute() -> Column:
    minute = F.date_trunc("minute", F.col(EVENT_TIME))
    return F.count(F.lit(1)).over(Window.partitionBy(DT, USER_ID, minute))


def _is_bot_user(max_events_per_minute: int) -> Column:
    busiest_minute = F.max(_EVENTS_IN_MINUTE).over(Window.partitionBy(DT, USER_ID))
    return busiest_minute > F.lit(int(max_events_per_minute))


def _repeats_previous_event() -> Column:
    user_timeline = Window.partitionBy(DT, USER_ID).orderBy(EVENT_TIME, EVENT_ID)
    # Plain equality: a null item (search) never equals anything, so searches never repeat.
    return ((F.col(ITEM_ID) == F.lag(ITEM_ID).over(user_timeline))
            & (F.col(EVENT_TYPE) == F.lag(EVENT_TYPE).over(user_timeline)))


def removed_users(labeled: DataFrame) -> dict:
    """{date: {reason: distinct users with a row removed for that reason}}."""
    rows = (labeled.where(F.col(REASON).isNotNull()).groupBy(DT, REASON)
            .agg(F.countDistinct(USER_ID).alias("users")).collect())
    users: dict = {}
    for row in rows:
        users.setdefault(row[DT], {})[row[REASON]] = row["users"]
    return users


# --- Job -------------------------------------------------------------------------------------

def main(config: dict, dates: list[str]) -> dict:
    """Denoise the clean events of the dates.

    Returns {date: {"clean", "denoised", "quarantined", "removed": {rule: {"rows", "users"}}}}.
    """
    dates = validate_dates(dates)
    spark = get_spark(config)
    settings = config["denoise"]
    events = read_event_partitions(spark, config, CLEAN_EVENTS, dates)
    labeled = label_noise(events, bot_max_events_per_minute=settings["bot_max_events_per_minute"],
                          collapse_consecutive_repeats=settings["collapse_consecutive_repeats"])
    # Cached: the labels feed the counts and both writes; recomputing would redo the windows.
    labeled = labeled.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        outcomes = count_outcomes(labeled, dates)
        users = removed_users(labeled)
        kept, quarantined = split_labeled(labeled, STAGE_NAME)
        replace_stage_output(spark, config, STAGE_NAME, DENOISED_EVENTS, kept, quarantined, outcomes)
    finally:
        labeled.unpersist()

    clean_counts = count_by_date(spark, config, CLEAN_EVENTS, dates)
    denoised_counts = count_by_date(spark, config, DENOISED_EVENTS, dates)
    quarantined_counts = count_quarantined(spark, config, STAGE_NAME, dates)
    check_conservation(STAGE_NAME, clean_counts, denoised_counts, quarantined_counts)
    return {ds: {"clean": clean_counts[ds], "denoised": denoised_counts[ds],
                 "quarantined": quarantined_counts[ds],
                 "removed": {reason: {"rows": rows, "users": users[ds][reason]}
                             for reason, rows in outcomes[ds]["reasons"].items()}}
            for ds in dates}
