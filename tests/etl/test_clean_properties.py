"""Property: whatever the raw lines, clean keeps or quarantines each one, and never crashes.

Hypothesis draws batches of raw lines mixing valid events (as devtools/generate.py writes them)
with every kind of dirt a tracking export can carry; clean_events must account for every
line, give every quarantined one a reason code with its original text, and keep only
events that pass its rules. Derandomized, so CI sees the same examples on every run.
"""

import datetime as dt
import gzip
import json
import math
import os
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from jobs.etl import clean
from jobs.common.lake import partition_path
from jobs.common.schema import (DT, EVENT_ID, EVENT_TIME, EVENT_TYPE, EVENT_TYPES, ITEM_EVENT_TYPES, ITEM_ID, PRICE,
                         QUERY, RAW_EVENT_FIELDS, RAW_EVENTS, REASON, REASON_MALFORMED, REASON_MISSING_KEY, RECORD,
                         SEARCH, SESSION_ID, STAGE, USER_ID)
from jobs.common.spark_io import read_raw_lines

DAY = "2026-11-27"
DAY_START = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)
CATALOG_ITEMS = ("i1", "i2")
RULES = dict(max_future_skew_s=300, max_price=1000.0, double_click_s=2)
MICROS_PER_SECOND = 1_000_000
DAY_START_MICROS = int(DAY_START.timestamp()) * MICROS_PER_SECOND
LATEST_KEPT_MICROS = DAY_START_MICROS + (86_400 + RULES["max_future_skew_s"]) * MICROS_PER_SECOND

# Any character Python can encode to UTF-8: every script, emoji, control characters.
ANY_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)


# --- Valid events ----------------------------------------------------------------------------

def iso(moment: dt.datetime, millis: bool) -> str:
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{moment.microsecond // 1000:03d}Z" if millis else "Z")


@st.composite
def valid_events(draw) -> dict:
    """One event as the tracking export writes it; few users, items and seconds, so that
    exact duplicates and double clicks come up by themselves."""
    event_type = draw(st.sampled_from(EVENT_TYPES))
    offset_ms = draw(st.one_of(st.integers(0, 86_400_000 - 1), st.integers(36_000_000, 36_006_000)))
    is_item_event = event_type in ITEM_EVENT_TYPES
    return {
        EVENT_ID: f"e{draw(st.integers(0, 30))}",
        EVENT_TIME: iso(DAY_START + dt.timedelta(milliseconds=offset_ms), millis=draw(st.booleans())),
        EVENT_TYPE: event_type,
        USER_ID: draw(st.sampled_from(["u1", "u2", "u3"])),
        SESSION_ID: draw(st.sampled_from(["s1", "s2", None])),
        ITEM_ID: draw(st.sampled_from(CATALOG_ITEMS)) if is_item_event else None,
        QUERY: draw(ANY_TEXT) if event_type == SEARCH else None,
        PRICE: draw(st.one_of(st.none(), st.floats(0, 1000), st.integers(0, 1000))) if is_item_event else None,
    }


def render(record) -> str:
    return json.dumps(record, ensure_ascii=False)  # NaN and Infinity stay bare tokens, as a sloppy writer emits


# --- Dirt: each strategy turns a valid event into one defective line ---------------------------

ODD_VALUES = st.one_of(st.integers(-10**20, 10**20), st.floats(allow_nan=True), st.booleans(),
                       st.lists(st.integers(), max_size=2),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
BAD_TIMES = st.one_of(
    ANY_TEXT,
    st.sampled_from(["2026-11-27 10:00:00", "2026-11-27T10:00:00", "2026-11-27T25:00:00Z", "27/11/2026 10:00",
                     "2026-11-27T10:00:00.1234567Z", "2026-02-30T10:00:00Z", "1764237600", "unknown"]),
    # Well-formed but outside the day, or shifted by an offset (from 2 days before to 2 days after).
    st.builds(lambda seconds, offset: (DAY_START + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
              + offset, st.integers(-2 * 86_400, 3 * 86_400), st.sampled_from(["Z", "+05:30", "-11:00", "+00:00"])),
)
BAD_PRICES = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, -0.01, -5, 1000.01, 1e308, "ten", "12,50", "",
                                        "NaN", "1e400"]),
                       st.floats(), st.integers(-10**30, 10**30))


@st.composite
def defective_lines(draw) -> str:
    record = draw(valid_events())
    kind = draw(st.sampled_from(["truncated", "not_an_object", "wrong_type", "missing_key", "blank_key", "timestamp",
                                 "price", "event_type", "item", "unicode_line", "control_character", "csv"]))
    field = draw(st.sampled_from(RAW_EVENT_FIELDS))
    if kind == "truncated":
        text = render(record)
        return text[:draw(st.integers(0, len(text) - 1))]
    if kind == "not_an_object":
        return json.dumps(draw(st.one_of(st.lists(st.integers(), max_size=3), st.integers(), st.text(max_size=5),
                                          st.none(), st.booleans())))
    if kind == "wrong_type":
        record[field] = draw(ODD_VALUES)
    elif kind == "missing_key":
        del record[field]
    elif kind == "blank_key":
        record[field] = draw(st.sampled_from(["", "  ", None, "\t", "\r\n", "\u00a0", "\u3000"]))
    elif kind == "timestamp":
        record[EVENT_TIME] = draw(BAD_TIMES)
    elif kind == "price":
        record[PRICE] = draw(BAD_PRICES)
    elif kind == "event_type":
        record[EVENT_TYPE] = draw(st.one_of(ANY_TEXT, st.sampled_from(["like", "VIEW", "view ", "remove_from_cart"])))
    elif kind == "item":
        record[ITEM_ID] = draw(st.one_of(ANY_TEXT, st.sampled_from(["i9", "I1", " i1"])))
    elif kind == "unicode_line":
        return draw(ANY_TEXT)
    elif kind == "control_character":  # a raw (unescaped) control character somewhere in the line
        text = render(record)
        position = draw(st.integers(0, len(text)))
        control = draw(st.sampled_from(["\x00", "\x07", "\r", "\x1b", "\u2028", "\ufeff"]))
        return text[:position] + control + text[position:]
    elif kind == "csv":  # another export format, or the right one with another delimiter
        delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
        return delimiter.join("" if value is None else str(value) for value in record.values())
    return render(record)


@st.composite
def raw_batches(draw) -> list[str]:
    lines = draw(st.lists(st.one_of(valid_events().map(render), defective_lines()), min_size=1, max_size=36))
    copies = draw(st.lists(st.integers(0, len(lines) - 1), max_size=4))  # exact duplicates
    return lines + [lines[index] for index in copies]


# --- The property --------------------------------------------------------------------------------

@settings(max_examples=20, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw_batches())
def test_every_line_is_kept_valid_or_quarantined_with_a_reason_and_its_text(spark, lines):
    raw = spark.createDataFrame([(line, DAY) for line in lines], f"{RECORD} string, {DT} string")
    catalog = spark.createDataFrame([(item, DAY) for item in CATALOG_ITEMS], f"{ITEM_ID} string, {DT} string")

    kept, quarantined = clean.clean_events(raw, catalog, **RULES)
    kept_rows = kept.withColumn("_micros", F.unix_micros(EVENT_TIME)).collect()
    quarantined_rows = quarantined.collect()

    assert len(kept_rows) + len(quarantined_rows) == len(lines)
    for row in quarantined_rows:
        assert row[REASON] in clean.RULE_ORDER and row[STAGE] == clean.STAGE_NAME and row[DT] == DAY
    assert not Counter(row[RECORD] for row in quarantined_rows) - Counter(lines)  # each one an original line
    for row in kept_rows:
        for key in (EVENT_ID, USER_ID, EVENT_TYPE):
            assert row[key] is not None and row[key].strip(), (key, row)
        assert DAY_START_MICROS <= row["_micros"] <= LATEST_KEPT_MICROS, row
        assert row[EVENT_TYPE] in EVENT_TYPES, row
        assert row[PRICE] is None or (math.isfinite(row[PRICE]) and 0 <= row[PRICE] <= RULES["max_price"]), row
        if row[EVENT_TYPE] in ITEM_EVENT_TYPES:
            assert row[ITEM_ID] in CATALOG_ITEMS, row
        assert row[DT] == DAY


def test_keys_of_other_whitespace_are_missing(spark):
    records = [{EVENT_ID: f"e{number}", EVENT_TIME: "2026-11-27T10:00:00Z", EVENT_TYPE: "view", USER_ID: blank,
                SESSION_ID: "s1", ITEM_ID: "i1", QUERY: None, PRICE: 1.0}
               for number, blank in enumerate(["\t", "\r\n", "\u00a0", "\u3000 "])]
    raw = spark.createDataFrame([(render(record), DAY) for record in records], f"{RECORD} string, {DT} string")
    catalog = spark.createDataFrame([(item, DAY) for item in CATALOG_ITEMS], f"{ITEM_ID} string, {DT} string")
    kept, quarantined = clean.clean_events(raw, catalog, **RULES)
    assert kept.count() == 0
    assert [row[REASON] for row in quarantined.collect()] == [REASON_MISSING_KEY] * len(records)


# --- Bytes that are not UTF-8, through the job's reader ---------------------------------------------

def test_lines_that_are_not_utf8_are_quarantined_with_their_bytes(spark, tmp_config):
    valid = json.dumps({EVENT_ID: "e1", EVENT_TIME: "2026-11-27T10:00:00Z", EVENT_TYPE: SEARCH, USER_ID: "u1",
                        SESSION_ID: "s1", ITEM_ID: None, QUERY: "x", PRICE: None}).encode()
    latin1_query = valid.replace(b'"e1"', b'"e2"').replace(b'"x"', b'"cr\xe8me br\xfbl\xe9e"')  # Latin-1 text
    broken_lead = b"\xff\xfe" + valid.replace(b'"e1"', b'"e3"')  # a UTF-16 byte-order mark before the object
    folder = partition_path(tmp_config, RAW_EVENTS, DAY)
    os.makedirs(folder)
    with open(os.path.join(folder, "events-00000.jsonl.gz"), "wb") as handle:
        handle.write(gzip.compress(b"\n".join([valid, latin1_query, broken_lead]) + b"\n"))
    catalog = spark.createDataFrame([(item, DAY) for item in CATALOG_ITEMS], f"{ITEM_ID} string, {DT} string")

    kept, quarantined = clean.clean_events(read_raw_lines(spark, tmp_config, [DAY]), catalog, **RULES)

    assert [row[EVENT_ID] for row in kept.collect()] == ["e1"]
    # Compared as hex: the quarantined records are the original bytes, not a decoded copy.
    assert sorted((row[REASON], row["bytes"]) for row in quarantined.select(REASON, F.hex(RECORD).alias("bytes"))
                  .collect()) == sorted([(REASON_MALFORMED, latin1_query.hex().upper()),
                                         (REASON_MALFORMED, broken_lead.hex().upper())])
