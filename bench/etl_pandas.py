"""The clean -> denoise -> normalize chain in single-process pandas / numpy, for bench/etl.py.

    python bench/etl_pandas.py --config CONFIG.json --dates D1 D2 ... Dn [--summary OUT.json]

The same rules as the Spark jobs, in the same order and with the same reason codes, on the
same lake layout: it reads <lake_root>/raw/events and raw/catalog of the dates and writes
clean/events, denoised/events, quarantine/events (stage=clean|denoise), features/items,
features/sequences, features/meta and state/vocabularies for the last date, as Parquet.
Each stage reads what the previous one wrote, as the nightly tasks do.

It is the "in-memory approach" of issue 3's benchmark: a stage loads every row of every
date into one process's memory, as a plain pandas script does. It is written to be fair,
not naive: text columns are Arrow strings (not Python objects), a raw file is parsed into
columns and compacted before the next one is read, and the sequential rules (double clicks,
the next-kept-event dwell) are vectorised with a Python loop only over the rare chains.

What each stage must reproduce (the Spark job's docstring is the specification):
  clean     jobs/etl/clean.py: rules 1-10, then sessionization of events without a session id
            (jobs/etl/sessionize.py) and pseudonymization of user_id and query (jobs/etl/privacy.py);
  denoise   jobs/etl/denoise.py: rules 1-8 on each user's day;
  normalize jobs/etl/normalize_features.py: vocabularies, price deciles and z, train-day popularity and
            rolling item statistics, per-user sequences, the train/valid/test split.
Layouts may differ (e.g. file names); counts per date and reason, users and sequence events
are what tests/test_bench_etl.py compares with Spark's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import re
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.etl import privacy  # noqa: E402
from jobs.common.lake import days_back, existing_partitions, partition_path, replace_partition  # noqa: E402
from jobs.common.schema import (ADD_TO_CART, BRAND, BRAND_IDX, CATALOG_FIELDS, CATEGORY, CATEGORY_IDX,  # noqa: E402
                         CLEAN_COLUMNS, CLEAN_EVENTS, CLICK, DENOISED_EVENTS, DT, EVENT_ID, EVENT_TIME,
                         EVENT_TYPE, EVENT_TYPE_IDX, EVENT_TYPE_INDEX, EVENT_TYPES, FEATURE_ITEMS,
                         FEATURE_META, FEATURE_SEQUENCES, IN_CATALOG, ITEM_EVENT_TYPES, ITEM_FEATURE_COLUMNS,
                         ITEM_ID, ITEM_IDX, ITEM_STAT_WINDOWS_DAYS, N_EVENT_TYPES, N_PRICE_BUCKETS,
                         POPULARITY, PRICE, PRICE_BUCKET, PRICE_Z, PURCHASE, QUARANTINE_EVENTS, QUERY,
                         RAW_CATALOG, RAW_EVENT_FIELDS, RAW_EVENTS, RAW_FILE_GLOB, REASON,
                         REASON_ACCIDENTAL_CLICK, REASON_BAD_PRICE, REASON_BAD_TIMESTAMP, REASON_BOT,
                         REASON_BOT_DISTINCT_ITEMS, REASON_BOT_REGULAR_TIMING, REASON_CONSECUTIVE_REPEAT,
                         REASON_DOUBLE_CLICK, REASON_DUPLICATE, REASON_FUTURE_TIMESTAMP,
                         REASON_HEAVY_USER_CAP, REASON_MALFORMED, REASON_MIN_SUPPORT, REASON_MISSING_KEY,
                         REASON_SESSION_LENGTH_OUTLIER, REASON_UNKNOWN_EVENT_TYPE, REASON_UNKNOWN_ITEM,
                         REASON_WRONG_DAY, RECORD, SEQUENCE_COLUMNS, SESSION_ID, SPLIT, SPLIT_NAMES,
                         SPLIT_TEST, SPLIT_TRAIN, SPLIT_VALID, STAGE, TIMESTAMPS, TITLE, TITLE_TOKENS,
                         USER_ID, VIEW, item_stat_column)

MICROS_PER_SECOND = 1_000_000
MICROS_PER_DAY = 86_400 * MICROS_PER_SECOND
TEXT = pd.StringDtype("pyarrow")  # Arrow-backed strings: a few bytes each instead of a Python object
PART_FILE = "part-00000.parquet"

CLEAN_RULES = (REASON_MALFORMED, REASON_MISSING_KEY, REASON_BAD_TIMESTAMP, REASON_FUTURE_TIMESTAMP,
               REASON_WRONG_DAY, REASON_UNKNOWN_EVENT_TYPE, REASON_BAD_PRICE, REASON_UNKNOWN_ITEM,
               REASON_DUPLICATE, REASON_DOUBLE_CLICK)
DENOISE_RULES = (REASON_BOT, REASON_BOT_DISTINCT_ITEMS, REASON_BOT_REGULAR_TIMING, REASON_SESSION_LENGTH_OUTLIER,
                 REASON_ACCIDENTAL_CLICK, REASON_CONSECUTIVE_REPEAT, REASON_HEAVY_USER_CAP, REASON_MIN_SUPPORT)

# jobs/etl/clean.py's TIMESTAMP_FORMAT "yyyy-MM-dd'T'HH:mm:ss[.SSSSSS]XXX": an optional fraction of
# 1-6 digits and a mandatory offset. The pattern checks the shape, pandas the calendar.
TIMESTAMP_SHAPE = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})"
# Java's regex \s (what Spark's split of titles uses): ASCII white space only.
TITLE_SEPARATOR = re.compile(r"[ \t\n\x0b\f\r]+")
# jobs/etl/privacy.py's Java patterns in Python's re: [^\W_] is a letter or digit (\p{L}\p{N}).
_ALNUM = r"[^\W_]"
QUERY_EMAIL = re.compile(rf"(?:{_ALNUM}|[._%+-])+@(?:{_ALNUM}|-)+(?:\.(?:{_ALNUM}|-)+)+")
QUERY_SEPARATED_NUMBER = re.compile(rf"(?<!{_ALNUM})\d(?:[\s\-./()]{{0,2}}\d){{{privacy.MIN_NUMBER_DIGITS - 1},}}"
                                    rf"(?!{_ALNUM})")
QUERY_TOKEN = re.compile(rf"{re.escape(privacy.EMAIL_TOKEN)}|{re.escape(privacy.NUMBER_TOKEN)}|{_ALNUM}+")


# ===========================================================================================
# Reading and writing the lake
# ===========================================================================================
def read_lines(path: Path) -> list[str]:
    """A gzip text file's lines as Spark's text reader splits them (\\n, \\r\\n or \\r; bad bytes -> U+FFFD)."""
    with gzip.open(path, "rb") as stream:
        text = stream.read().decode("utf-8", errors="replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start another
    return lines


def partition_files(config: dict, dataset: str, ds: str, missing: str) -> list[Path]:
    folder = Path(partition_path(config, dataset, ds))
    if not folder.is_dir():
        raise ValueError(missing.format(folder=folder))
    return sorted(folder.glob(RAW_FILE_GLOB))


def write_partition(frame: pd.DataFrame, folder: str) -> None:
    """Replace one partition folder with the frame as one Parquet file (atomically, like jobs.common.lake)."""
    with replace_partition(folder) as staging:
        frame.to_parquet(os.path.join(staging, PART_FILE), index=False)


def write_by_date(frame: pd.DataFrame, config: dict, dataset: str, dates: list[str]) -> None:
    """Write each date's rows (without the dt column) into dataset/dt=D; a date without rows has none."""
    by_date = dict(iter(frame.groupby(DT, observed=True, sort=False)))
    for ds in dates:
        folder = partition_path(config, dataset, ds)
        if ds in by_date:
            write_partition(by_date[ds].drop(columns=[DT]), folder)
        elif os.path.isdir(folder):
            _remove_tree(folder)


def write_quarantine(rows: pd.DataFrame, config: dict, stage: str, dates: list[str]) -> None:
    """rows: reason, record, dt -> quarantine/events/stage=<stage>/dt=D (columns stage, reason, record)."""
    stage_dataset = os.path.join(QUARANTINE_EVENTS, f"{STAGE}={stage}")
    frame = rows.assign(**{STAGE: stage})[[STAGE, REASON, RECORD, DT]]
    write_by_date(frame, config, stage_dataset, dates)


def _remove_tree(folder: str) -> None:
    import shutil

    shutil.rmtree(folder)


def read_event_partitions(config: dict, dataset: str, dates: list[str]) -> pd.DataFrame:
    frames = []
    for ds in dates:
        folder = partition_path(config, dataset, ds)
        if not os.path.isdir(folder):
            raise ValueError(f"no {dataset} partition for {ds}: {folder} does not exist")
        frames.append(pd.read_parquet(folder, dtype_backend="pyarrow").assign(**{DT: ds}))
    frame = pd.concat(frames, ignore_index=True)
    frame[DT] = frame[DT].astype("category")
    for name in (EVENT_ID, EVENT_TYPE, USER_ID, SESSION_ID, ITEM_ID, QUERY):
        frame[name] = frame[name].astype(TEXT)
    frame[EVENT_TIME] = frame[EVENT_TIME].astype("datetime64[us, UTC]")
    frame[PRICE] = frame[PRICE].astype("float64")
    return frame


def conservation(stage: str, source: dict, kept: dict, quarantined: dict) -> None:
    for ds, rows in source.items():
        if kept.get(ds, 0) + quarantined.get(ds, 0) != rows:
            raise RuntimeError(f"{stage} {ds}: {rows} input rows but {kept.get(ds, 0)} kept + "
                               f"{quarantined.get(ds, 0)} quarantined")


def outcome_counts(frame_dates: pd.Series, reasons: pd.Series, dates: list[str]) -> dict:
    """{date: {"kept": rows, "reasons": {reason: rows}}} (reason NA = kept)."""
    outcomes = {ds: {"kept": 0, "reasons": {}} for ds in dates}
    counts = pd.DataFrame({DT: frame_dates.astype(str), REASON: reasons.astype(object)}).value_counts(dropna=False)
    for (ds, reason), rows in counts.items():
        if reason is None or reason is pd.NA or (isinstance(reason, float) and np.isnan(reason)):
            outcomes[ds]["kept"] = int(rows)
        else:
            outcomes[ds]["reasons"][reason] = int(rows)
    return outcomes


def _flag(values) -> np.ndarray:
    """A boolean mask as numpy, NA counting as False."""
    if isinstance(values, np.ndarray):
        return values.astype(bool)
    return values.fillna(False).to_numpy(dtype=bool)


def _codes(series: pd.Series) -> np.ndarray:
    """Integer codes in sorted value order, -1 for NA (group keys that sort like the values)."""
    codes, _ = pd.factorize(series, sort=True, use_na_sentinel=True)
    return codes.astype(np.int64)


def _runs(*keys: np.ndarray) -> np.ndarray:
    """For rows sorted by keys: True where a new run of equal keys starts."""
    n = len(keys[0])
    starts = np.ones(n, dtype=bool)
    if n > 1:
        changed = np.zeros(n - 1, dtype=bool)
        for key in keys:
            changed |= key[1:] != key[:-1]
        starts[1:] = changed
    return starts


def _label(codes: np.ndarray, rules: tuple[str, ...]) -> pd.Series:
    """Reason codes (0 = kept, k = rules[k-1]) as a categorical of reason strings, NA = kept."""
    return pd.Series(pd.Categorical.from_codes(codes.astype(np.int64) - 1, categories=list(rules)))


# ===========================================================================================
# Clean
# ===========================================================================================
def parse_file(path: Path, ds: str) -> pd.DataFrame:
    """One raw file's lines: record, every raw field as text, price as a number, malformed."""
    lines = read_lines(path)
    loads = json.loads

    def parse(line: str):
        try:
            value = loads(line)
        except ValueError:
            return None
        return value if type(value) is dict else None

    objects = [parse(line) for line in lines]
    columns = {RECORD: pd.array(lines, dtype=TEXT), DT: ds,
               "_malformed": np.fromiter((obj is None for obj in objects), dtype=bool, count=len(objects))}
    for name in RAW_EVENT_FIELDS:
        values = [None if obj is None else obj.get(name) for obj in objects]
        if name == PRICE:
            columns["_price_present"] = np.fromiter((value is not None for value in values), dtype=bool,
                                                    count=len(values))
            columns[PRICE] = np.fromiter((_as_price(value) for value in values), dtype=np.float64, count=len(values))
        else:
            # Spark's all-text schema keeps a non-string value as its JSON text.
            columns[name] = pd.array([value if value is None or type(value) is str else json.dumps(value)
                                      for value in values], dtype=TEXT)
    return pd.DataFrame(columns)


def _as_price(value) -> float:
    """The price as Spark's try_cast to double sees it: NaN when present but not a number."""
    if value is None or type(value) is bool:
        return np.nan
    if type(value) in (int, float):
        return float(value)
    if type(value) is str:
        try:
            return float(value)
        except ValueError:
            return np.nan
    return np.nan


def read_raw_events(config: dict, dates: list[str]) -> pd.DataFrame:
    frames = []
    for ds in dates:
        files = partition_files(config, RAW_EVENTS, ds, f"no raw events for {ds}: {{folder}} does not exist")
        frames += [parse_file(path, ds) for path in files]
    if not frames:
        raise ValueError(f"no lines in {RAW_FILE_GLOB} files for {dates}")
    raw = pd.concat(frames, ignore_index=True)
    raw[DT] = raw[DT].astype(pd.CategoricalDtype(dates))
    return raw


def read_catalog(config: dict, ds: str) -> pd.DataFrame:
    """Day ds's catalog (CATALOG_FIELDS, price a number or NaN), validated as jobs.common.spark_io.read_catalog."""
    folder = partition_path(config, RAW_CATALOG, ds)
    files = partition_files(config, RAW_CATALOG, ds, f"no catalog for {ds}: {{folder}} does not exist")
    rows = []
    for path in files:
        for line in read_lines(path):
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if type(row) is not dict or row.get(ITEM_ID) in (None, "") or not str(row.get(ITEM_ID)).strip(" "):
                raise ValueError(f"catalog {folder}: a line is not a JSON object with an item_id: {line!r}")
            rows.append([_text(row.get(name)) for name in CATALOG_FIELDS[:3]]
                        + [_as_price(row.get(PRICE)), _text(row.get(TITLE))])
    catalog = pd.DataFrame(rows, columns=list(CATALOG_FIELDS))
    catalog[PRICE] = catalog[PRICE].where(catalog[PRICE] >= 0)  # negative or non-numeric: unknown
    repeated = catalog[ITEM_ID][catalog[ITEM_ID].duplicated()]
    if len(repeated):
        raise ValueError(f"catalog {folder}: item_id {repeated.iloc[0]!r} appears more than once")
    return catalog.assign(**{DT: ds})


def _text(value):
    return value if value is None or type(value) is str else json.dumps(value)


def label_clean(raw: pd.DataFrame, catalogs: dict[str, set], *, max_future_skew_s: float, max_price: float,
                double_click_s: float) -> tuple[pd.Series, np.ndarray]:
    """(reason per row as a categorical, NA = kept; event time in unix micros, -1 if unparseable)."""
    n = len(raw)
    code = np.zeros(n, dtype=np.int8)

    def fail(rule: str, failed) -> None:
        code[(code == 0) & _flag(failed)] = CLEAN_RULES.index(rule) + 1

    def blank(name: str) -> np.ndarray:
        column = raw[name]
        return _flag(column.isna()) | _flag(column.str.strip(" ") == "")

    event_type = raw[EVENT_TYPE]
    is_item_event = _flag(event_type.isin(ITEM_EVENT_TYPES))
    shaped = _flag(raw[EVENT_TIME].str.fullmatch(TIMESTAMP_SHAPE))
    parsed = pd.to_datetime(raw[EVENT_TIME].where(shaped), format="ISO8601", utc=True, errors="coerce")
    time_ok = _flag(parsed.notna())
    micros = np.where(time_ok, parsed.to_numpy(dtype="datetime64[us]").astype(np.int64), -1)
    day_start = np.array([_day_start_micros(ds) for ds in raw[DT].cat.categories], dtype=np.int64)[raw[DT].cat.codes]
    price = raw[PRICE].to_numpy()

    fail(REASON_MALFORMED, raw["_malformed"].to_numpy())
    fail(REASON_MISSING_KEY, blank(EVENT_ID) | blank(USER_ID) | blank(EVENT_TYPE) | blank(EVENT_TIME)
         | (is_item_event & blank(ITEM_ID)))
    fail(REASON_BAD_TIMESTAMP, ~time_ok)
    fail(REASON_FUTURE_TIMESTAMP, time_ok & (micros > day_start + MICROS_PER_DAY + _micros(max_future_skew_s)))
    fail(REASON_WRONG_DAY, time_ok & (micros < day_start))
    fail(REASON_UNKNOWN_EVENT_TYPE, ~_flag(event_type.isin(EVENT_TYPES)))
    with np.errstate(invalid="ignore"):
        fail(REASON_BAD_PRICE, raw["_price_present"].to_numpy()
             & (np.isnan(price) | (price < 0) | (price > float(max_price))))
    in_catalog = np.zeros(n, dtype=bool)
    dates = raw[DT].astype(str)
    for ds, known in catalogs.items():
        on_day = _flag(dates == ds)
        in_catalog[on_day] = _flag(raw[ITEM_ID][on_day].isin(known))
    fail(REASON_UNKNOWN_ITEM, is_item_event & ~in_catalog)
    # Rule 9: identical lines of a day fail the same row rules, so the later copies of a kept line
    # are exactly the duplicated (dt, record) rows still kept. Arrow's dictionary encoding
    # numbers the lines exactly without turning them into Python strings.
    line_number = pd.factorize(raw[RECORD], use_na_sentinel=False)[0].astype(np.int64)
    same_line_and_day = line_number * len(raw[DT].cat.categories) + raw[DT].cat.codes.to_numpy()
    fail(REASON_DUPLICATE, pd.Series(same_line_and_day).duplicated(keep="first").to_numpy())
    del line_number, same_line_and_day
    candidates = np.flatnonzero((code == 0) & is_item_event)
    doubles = double_click_rows(raw[[DT, USER_ID, ITEM_ID, EVENT_TYPE, EVENT_ID, RECORD]].iloc[candidates],
                                micros[candidates], _micros(double_click_s))
    code[candidates[doubles]] = CLEAN_RULES.index(REASON_DOUBLE_CLICK) + 1
    return _label(code, CLEAN_RULES), micros


def double_click_rows(events: pd.DataFrame, micros: np.ndarray, max_gap_micros: int) -> np.ndarray:
    """Positions (into events) of double clicks: per (dt, user, item, type) in time order, an event
    at most max_gap after the group's last *kept* one.

    Vectorised by chains: an event more than max_gap after its predecessor is always kept and
    starts a chain; the second event of a chain is always a double click; only chains of three
    or more need the sequential fold (0 s, 1.5 s, 3 s with 2 s: 1.5 s double, 3 s kept).
    """
    if len(events) == 0:
        return np.zeros(0, dtype=np.int64)
    # Groups need only be contiguous (any numbering); inside one, Spark's order is time, then
    # event_id, then the whole line - lexically, so those codes are sorted.
    keys = [pd.factorize(events[name], use_na_sentinel=False)[0] for name in (DT, USER_ID, ITEM_ID, EVENT_TYPE)]
    event_id = _codes(events[EVENT_ID])
    order = np.lexsort((event_id, micros, *reversed(keys)))
    new_group = _runs(*[key[order] for key in keys])
    order = _break_ties_by_line(order, new_group | _runs(micros[order], event_id[order]), events[RECORD])
    times = micros[order]
    gap = np.diff(times, prepend=times[0])
    chain_start = new_group | (gap > max_gap_micros)
    chain = np.cumsum(chain_start) - 1
    chain_length = np.bincount(chain)
    position_in_chain = np.arange(len(times)) - np.flatnonzero(chain_start)[chain]
    is_double = position_in_chain == 1
    long_chain_starts = np.flatnonzero(chain_start)[chain_length >= 3]
    for start, length in zip(long_chain_starts.tolist(), chain_length[chain_length >= 3].tolist()):
        last_kept = times[start]
        for position in range(start + 1, start + length):
            if times[position] - last_kept <= max_gap_micros:
                is_double[position] = True
            else:
                is_double[position] = False
                last_kept = times[position]
    return order[is_double]


def _break_ties_by_line(order: np.ndarray, run_starts: np.ndarray, lines: pd.Series) -> np.ndarray:
    """Within each run of rows that tie on every earlier sort key (rare), order by the line text."""
    run_length = np.diff(np.append(np.flatnonzero(run_starts), len(order)))
    for start, length in zip(np.flatnonzero(run_starts)[run_length > 1].tolist(), run_length[run_length > 1].tolist()):
        positions = order[start:start + length]
        texts = lines.iloc[positions].tolist()
        order[start:start + length] = positions[sorted(range(length), key=texts.__getitem__)]
    return order


def _day_start_micros(ds: str) -> int:
    return dt.date.fromisoformat(ds).toordinal() * MICROS_PER_DAY - dt.date(1970, 1, 1).toordinal() * MICROS_PER_DAY


def _micros(seconds: float) -> int:
    return int(round(float(seconds) * MICROS_PER_SECOND))


def sessionize(events: pd.DataFrame, micros: np.ndarray, inactivity_gap_s: float) -> pd.Series:
    """session_id with the nulls filled as jobs/etl/sessionize.py does: per (dt, user_id) over the
    events without one, in (event_time, event_id) order, a new session after a gap > the
    inactivity gap, id "<user_id>-<unix micros of the session's first event>"."""
    session = events[SESSION_ID]
    missing = np.flatnonzero(_flag(session.isna()))
    if len(missing) == 0:
        return session
    subset = events.iloc[missing]
    times = micros[missing]
    users = _codes(subset[USER_ID])
    days = _codes(subset[DT].astype(str))
    order = np.lexsort((_codes(subset[EVENT_ID]), times, users, days))
    times_sorted = times[order]
    new_user_day = _runs(days[order], users[order])
    starts = new_user_day | (np.diff(times_sorted, prepend=times_sorted[0]) > _micros(inactivity_gap_s))
    start_micros = times_sorted[np.flatnonzero(starts)[np.cumsum(starts) - 1]]
    user_text = subset[USER_ID].to_numpy(dtype=object)[order]
    generated = [f"{user}-{start}" for user, start in zip(user_text.tolist(), start_micros.tolist())]
    filled = session.copy()
    filled.iloc[missing[order]] = generated
    return filled


def pseudonymize_users(user_ids: pd.Series, key: bytes) -> pd.Series:
    """HMAC-SHA256 hex of each user id (once per distinct id), as jobs.etl.privacy.keyed_hash."""
    codes, uniques = pd.factorize(user_ids, use_na_sentinel=True)
    hashed = np.array([privacy.hash_user_id(value, key) for value in uniques.tolist()] + [None], dtype=object)
    return pd.Series(pd.array(hashed[codes], dtype=TEXT), index=user_ids.index)


def masked_queries(queries: pd.Series, mode: str) -> pd.Series:
    """jobs.etl.privacy.masked_query in Python, once per distinct query text."""
    if privacy.check_query_mode(mode) == privacy.QUERY_DROP:
        return pd.Series(pd.array([None] * len(queries), dtype=TEXT), index=queries.index)
    codes, uniques = pd.factorize(queries, use_na_sentinel=True)
    masked = np.array([mask_query(value) for value in uniques.tolist()] + [None], dtype=object)
    return pd.Series(pd.array(masked[codes], dtype=TEXT), index=queries.index)


def mask_query(text: str) -> str | None:
    text = text.lower()
    text = QUERY_EMAIL.sub(f" {privacy.EMAIL_TOKEN} ", text)
    text = QUERY_SEPARATED_NUMBER.sub(f" {privacy.NUMBER_TOKEN} ", text)
    tokens = QUERY_TOKEN.findall(text)
    masked = [privacy.NUMBER_TOKEN if sum(ch.isdecimal() for ch in token) >= privacy.MIN_NUMBER_DIGITS else token
              for token in tokens]
    return " ".join(masked) if masked else None


def clean(config: dict, dates: list[str]) -> dict:
    """jobs.etl.clean.main in pandas: {date: {"raw_lines", "clean", "quarantined", "reasons"}}."""
    # Settings and key first, as jobs.etl.clean.main: a missing key stops before any work.
    key = privacy.resolve_user_id_key(config)
    query_mode = privacy.check_query_mode(config["privacy"]["query_text"])
    raw = read_raw_events(config, dates)
    catalogs = {ds: set(read_catalog(config, ds)[ITEM_ID].tolist()) for ds in dates}
    settings = config["clean"]
    reason, micros = label_clean(raw, catalogs, max_future_skew_s=settings["max_future_skew_s"],
                                 max_price=settings["max_price"], double_click_s=settings["double_click_s"])
    outcomes = outcome_counts(raw[DT], reason, dates)
    raw_counts = raw[DT].value_counts().reindex(dates, fill_value=0).astype(int).to_dict()

    removed = _flag(reason.notna())
    write_quarantine(raw.loc[removed, [RECORD, DT]].assign(**{REASON: reason[removed].to_numpy()}),
                     config, "clean", dates)
    kept_rows = np.flatnonzero(~removed)
    kept = raw.iloc[kept_rows].drop(columns=[RECORD, "_malformed", "_price_present", EVENT_TIME])
    del raw
    kept_micros = micros[kept_rows]
    kept[EVENT_TIME] = pd.to_datetime(kept_micros, unit="us", utc=True)
    # Pseudonymize, then sessionize (jobs.etl.clean.finish_clean_events): a generated session id
    # embeds the user id, so it must be the hashed one.
    kept[USER_ID] = pseudonymize_users(kept[USER_ID], key)
    kept[QUERY] = masked_queries(kept[QUERY], query_mode)
    kept[SESSION_ID] = sessionize(kept, kept_micros, config["sessionize"]["inactivity_gap_s"])
    write_by_date(kept[[*CLEAN_COLUMNS, DT]], config, CLEAN_EVENTS, dates)
    clean_counts = kept[DT].value_counts().reindex(dates, fill_value=0).astype(int).to_dict()
    quarantined = {ds: sum(outcomes[ds]["reasons"].values()) for ds in dates}
    conservation("clean", raw_counts, clean_counts, quarantined)
    return {ds: {"raw_lines": raw_counts[ds], "clean": clean_counts[ds], "quarantined": quarantined[ds],
                 "reasons": outcomes[ds]["reasons"]} for ds in dates}


# ===========================================================================================
# Denoise
# ===========================================================================================
def label_noise(events: pd.DataFrame, *, bot_max_events_per_minute=None, bot_max_distinct_items_per_minute=None,
                bot_regular_min_events=None, bot_regular_max_cv=None, max_events_per_session=None,
                accidental_click_max_dwell_s=None, collapse_consecutive_repeats=False,
                max_events_per_user_day=None, min_item_events=None, min_session_item_events=None,
                min_support_max_rounds=None) -> pd.Series:
    """The reason per row (NA = kept) of events sorted into user timelines.

    events must be sorted by (dt, user_id, event_time, event_id); every rule is per user day.
    """
    n = len(events)
    code = np.zeros(n, dtype=np.int8)

    def fail(rule: str, failed: np.ndarray) -> None:
        code[(code == 0) & failed] = DENOISE_RULES.index(rule) + 1

    day = _codes(events[DT].astype(str))
    user = _codes(events[USER_ID])
    micros = events[EVENT_TIME].to_numpy(dtype="datetime64[us]").astype(np.int64)
    item = _codes(events[ITEM_ID])
    event_type = _codes(events[EVENT_TYPE])
    user_day_start = _runs(day, user)
    user_day = np.cumsum(user_day_start) - 1
    first_of_user_day = np.flatnonzero(user_day_start)

    def per_user_day_max(values: np.ndarray) -> np.ndarray:
        return np.maximum.reduceat(values, first_of_user_day)[user_day] if n else values

    # Minutes only grow along a timeline, so a user's minute is a contiguous run of rows.
    minute_start = user_day_start | _runs(micros // (60 * MICROS_PER_SECOND))
    minute = np.cumsum(minute_start) - 1
    events_in_minute = np.bincount(minute)[minute]
    with_item = item >= 0
    distinct = pd.DataFrame({"minute": minute[with_item], "item": item[with_item]}).drop_duplicates()
    items_in_minute = np.bincount(distinct["minute"].to_numpy(), minlength=minute[-1] + 1 if n else 0)[minute]

    previous_same = np.zeros(n, dtype=bool)
    previous_same[1:] = ~user_day_start[1:]
    gap_s = np.where(previous_same, np.diff(micros, prepend=micros[:1]) / float(MICROS_PER_SECOND), np.nan)
    repeat = np.zeros(n, dtype=bool)
    if collapse_consecutive_repeats:
        repeat[1:] = (previous_same[1:] & (item[1:] >= 0) & (item[1:] == item[:-1])
                      & (event_type[1:] == event_type[:-1]))

    if bot_max_events_per_minute is not None:
        fail(REASON_BOT, per_user_day_max(events_in_minute) > int(bot_max_events_per_minute))
    if bot_max_distinct_items_per_minute is not None:
        fail(REASON_BOT_DISTINCT_ITEMS, per_user_day_max(items_in_minute) > int(bot_max_distinct_items_per_minute))
    if bot_regular_min_events is not None and bot_regular_max_cv is not None:
        fail(REASON_BOT_REGULAR_TIMING, regular_timing(gap_s, user_day, int(bot_regular_min_events),
                                                       float(bot_regular_max_cv)))
    if max_events_per_session is not None:
        session = _codes(events[SESSION_ID])  # a null session id is one session of its own, as in Spark
        per_session = pd.Series(np.ones(n)).groupby([user_day, session]).transform("size").to_numpy()
        fail(REASON_SESSION_LENGTH_OUTLIER, per_user_day_max(per_session) > int(max_events_per_session))
    if accidental_click_max_dwell_s is not None:
        dwell_s = seconds_to_next_kept_event(micros, repeat, user_day)
        is_view_or_click = np.isin(events[EVENT_TYPE].to_numpy(dtype=object), [VIEW, CLICK])
        with np.errstate(invalid="ignore"):
            fail(REASON_ACCIDENTAL_CLICK, is_view_or_click & (dwell_s < float(accidental_click_max_dwell_s)))
    if collapse_consecutive_repeats:
        fail(REASON_CONSECUTIVE_REPEAT, repeat)
    if max_events_per_user_day is not None:
        kept = code == 0
        kept_rank = _running_count(kept, user_day_start)  # 1.. among the day's kept rows, in time order
        fail(REASON_HEAVY_USER_CAP, kept & (kept_rank > int(max_events_per_user_day)))
    if (min_item_events or 0) > 1 or (min_session_item_events or 0) > 0:
        drop_unsupported(code, day, user, item, _codes(events[SESSION_ID]), min_item_events or 0,
                         min_session_item_events or 0, min_support_max_rounds)
    return _label(code, DENOISE_RULES)


def regular_timing(gap_s: np.ndarray, user_day: np.ndarray, min_events: int, max_cv: float) -> np.ndarray:
    """jobs.etl.denoise._has_regular_gaps: population CV of the gaps from count, sum and sum of squares."""
    has_gap = ~np.isnan(gap_s)
    gaps = np.bincount(user_day, weights=has_gap)
    total = np.bincount(user_day, weights=np.where(has_gap, gap_s, 0.0))
    squares = np.bincount(user_day, weights=np.where(has_gap, gap_s * gap_s, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / gaps
        std = np.sqrt(np.maximum(squares / gaps - mean * mean, 0.0))
        regular = np.where(mean == 0, True, std / mean < max_cv)
    # No gap at all (one event): Spark's verdict is null, which removes nothing.
    return ((gaps + 1 >= min_events) & (gaps > 0) & regular)[user_day]


def seconds_to_next_kept_event(micros: np.ndarray, repeat: np.ndarray, user_day: np.ndarray) -> np.ndarray:
    """Seconds to the next later event of the same user day that is not a collapsed repeat (NaN if none)."""
    n = len(micros)
    candidate = np.where(~repeat, np.arange(n), n)
    # next_index[i] = the smallest non-repeat index > i: a running minimum from the end.
    later = np.append(candidate[1:], n)
    next_index = np.minimum.accumulate(later[::-1])[::-1]
    valid = next_index < n
    valid[valid] = user_day[next_index[valid]] == user_day[valid]
    dwell = np.full(n, np.nan)
    dwell[valid] = (micros[next_index[valid]] - micros[valid]) / float(MICROS_PER_SECOND)
    return dwell


def _running_count(flags: np.ndarray, group_start: np.ndarray) -> np.ndarray:
    """1-based running count of the flagged rows within each contiguous group."""
    total = np.cumsum(flags)
    before_group = (total - flags)[np.flatnonzero(group_start)][np.cumsum(group_start) - 1]
    return total - before_group


def drop_unsupported(code, day, user, item, session, min_item_events, min_session_item_events, max_rounds) -> None:
    """jobs.etl.denoise.drop_unsupported on the codes in place: k-core rounds over the kept rows."""
    if max_rounds is None or max_rounds < 1:
        raise ValueError(f"denoise.min_support_max_rounds must be at least 1, got {max_rounds}")
    rule = DENOISE_RULES.index(REASON_MIN_SUPPORT) + 1
    kept_before = int((code == 0).sum())
    for _ in range(max_rounds):
        kept_item_event = (code == 0) & (item >= 0)
        frame = pd.DataFrame({"day": day, "user": user, "item": item, "session": session,
                              "counted": kept_item_event.astype(np.int64)})
        item_support = frame.groupby(["day", "item"])["counted"].transform("sum").to_numpy()
        session_support = frame.groupby(["day", "user", "session"])["counted"].transform("sum").to_numpy()
        rare_item = (item >= 0) & (item_support < min_item_events)
        thin_session = session_support < min_session_item_events
        code[(code == 0) & (rare_item | thin_session)] = rule
        kept_now = int((code == 0).sum())
        if kept_now == kept_before:
            break
        kept_before = kept_now


def removed_record(rows: pd.DataFrame) -> list[str]:
    """The removed clean rows as JSON (Spark's to_json of the struct of CLEAN_COLUMNS; nulls left out)."""
    times = rows[EVENT_TIME].dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
    columns = {name: rows[name].astype(object).where(rows[name].notna(), None).tolist() for name in CLEAN_COLUMNS}
    columns[EVENT_TIME] = times.tolist()
    return [json.dumps({name: value for name, value in zip(CLEAN_COLUMNS, values) if value is not None},
                       separators=(",", ":"))
            for values in zip(*(columns[name] for name in CLEAN_COLUMNS))]


def denoise(config: dict, dates: list[str]) -> dict:
    """jobs.etl.denoise.main in pandas: {date: {"clean", "denoised", "quarantined", "removed": {rule: {"rows"}}}}."""
    events = read_event_partitions(config, CLEAN_EVENTS, dates)
    events = events.sort_values([DT, USER_ID, EVENT_TIME, EVENT_ID], kind="stable", ignore_index=True)
    reason = label_noise(events, **config["denoise"])
    outcomes = outcome_counts(events[DT], reason, dates)
    clean_counts = events[DT].value_counts().reindex(dates, fill_value=0).astype(int).to_dict()
    removed = _flag(reason.notna())
    quarantined_rows = events.loc[removed]
    write_quarantine(pd.DataFrame({REASON: reason[removed].to_numpy(),
                                   RECORD: pd.array(removed_record(quarantined_rows), dtype=TEXT),
                                   DT: quarantined_rows[DT].to_numpy()}), config, "denoise", dates)
    users = (pd.DataFrame({DT: quarantined_rows[DT].astype(str).to_numpy(), REASON: reason[removed].to_numpy(),
                           USER_ID: quarantined_rows[USER_ID].to_numpy()})
             .groupby([DT, REASON], observed=True)[USER_ID].nunique())
    kept = events.loc[~removed, [*CLEAN_COLUMNS, DT]]
    del events
    write_by_date(kept, config, DENOISED_EVENTS, dates)
    denoised_counts = kept[DT].value_counts().reindex(dates, fill_value=0).astype(int).to_dict()
    quarantined = {ds: sum(outcomes[ds]["reasons"].values()) for ds in dates}
    conservation("denoise", clean_counts, denoised_counts, quarantined)
    return {ds: {"clean": clean_counts[ds], "denoised": denoised_counts[ds], "quarantined": quarantined[ds],
                 "removed": {rule: {"rows": rows, "users": int(users.get((ds, rule), 0))}
                             for rule, rows in outcomes[ds]["reasons"].items()}}
            for ds in dates}


# ===========================================================================================
# Normalize
# ===========================================================================================
def plan_splits(config: dict, ds: str):
    from jobs.etl.normalize_features import plan_splits as spark_plan  # pure Python: the same rule, not a copy

    return spark_plan(ds, config["window_days"], existing_partitions(config, DENOISED_EVENTS), **config["split"])


def latest_snapshots(catalogs: pd.DataFrame, ds: str) -> pd.DataFrame:
    """One row per item: its newest snapshot among the catalogs, in_catalog = listed on ds."""
    newest = catalogs.sort_values(DT, ascending=False, kind="stable").drop_duplicates(ITEM_ID, keep="first")
    return newest.assign(**{IN_CATALOG: newest[DT] == ds})[[*CATALOG_FIELDS, IN_CATALOG]].reset_index(drop=True)


def price_statistics(catalog: pd.DataFrame) -> dict:
    prices = catalog[PRICE].dropna().to_numpy(dtype=np.float64)
    if len(prices) == 0:
        return {"cuts": [], "log_mean": 0.0, "log_std": 0.0}
    deciles = [k / N_PRICE_BUCKETS for k in range(1, N_PRICE_BUCKETS)]
    log_price = np.log1p(prices)
    return {"cuts": np.percentile(prices, [100 * q for q in deciles]).tolist(),
            "log_mean": float(log_price.mean()), "log_std": float(log_price.std())}


def title_words(snapshots: pd.DataFrame) -> pd.DataFrame:
    rows = [(item, position, word)
            for item, title in zip(snapshots[ITEM_ID].tolist(), snapshots[TITLE].tolist()) if title is not None
            for position, word in enumerate(w for w in TITLE_SEPARATOR.split(title.lower()) if w)]
    return pd.DataFrame(rows, columns=[ITEM_ID, "position", "token"])


def update_vocabulary(config: dict, name: str, ds: str, observed) -> dict:
    """jobs.etl.vocabulary.update_vocabulary: yesterday's values keep their ids, new ones are appended sorted."""
    from jobs.etl.vocabulary import extend_vocabulary, vocabulary_dataset

    dataset = vocabulary_dataset(name)
    earlier = [day for day in existing_partitions(config, dataset) if day < ds]
    previous = []
    if earlier:
        table = pd.read_parquet(partition_path(config, dataset, earlier[-1])).sort_values("id")
        previous = table["value"].tolist()
    values = extend_vocabulary(previous, (value for value in observed if value is not None and value == value))
    write_partition(pd.DataFrame({"value": values, "id": np.arange(1, len(values) + 1, dtype=np.int32)}),
                    partition_path(config, dataset, ds))
    return {value: index for index, value in enumerate(values, start=1)}


def item_statistics(item_ids: list[str], train_events: pd.DataFrame, train_dates: list[str],
                    prior_views: float) -> pd.DataFrame:
    """jobs.etl.normalize_features.item_statistics: popularity and the rolling views / smoothed rates of every
    item of item_ids (an item without train events gets the window's catalog-wide rate)."""
    item_events = train_events[_flag(train_events[EVENT_TYPE].isin(ITEM_EVENT_TYPES))]
    dates = item_events[DT].astype(str)
    index = pd.Index(item_ids, name=ITEM_ID)
    popularity = item_events.groupby(ITEM_ID, observed=True).size()
    statistics = pd.DataFrame({POPULARITY: popularity.reindex(index, fill_value=0).to_numpy()}, index=index)
    for days in ITEM_STAT_WINDOWS_DAYS:
        window = days_back(train_dates[-1], days) if train_dates else []
        in_window = item_events[_flag(dates.isin(window))]
        counts = (in_window.groupby([ITEM_ID, EVENT_TYPE], observed=True).size().unstack(fill_value=0)
                  .reindex(columns=[VIEW, CLICK, ADD_TO_CART, PURCHASE], fill_value=0))
        counts.index = counts.index.astype(object)
        counts = counts.reindex(index, fill_value=0)
        views = counts[VIEW]
        statistics[item_stat_column("views", days)] = views.to_numpy(dtype=np.int64)
        total_views = int(views.sum())
        for kind, event_type in (("ctr", CLICK), ("cart_rate", ADD_TO_CART), ("purchase_rate", PURCHASE)):
            events = counts[event_type].to_numpy(dtype=np.float64)
            overall = events.sum() / total_views if total_views else 0.0
            if prior_views > 0:
                rate = (events + prior_views * overall) / (views.to_numpy() + float(prior_views))
            else:  # unsmoothed: 0 rather than 0 / 0 for an item without views
                rate = np.where(views > 0, events / np.maximum(views.to_numpy(), 1), 0.0)
            statistics[item_stat_column(kind, days)] = rate.astype(np.float32)
    return statistics.reset_index()


def item_features(snapshots: pd.DataFrame, vocabularies: dict, prices: dict, statistics: pd.DataFrame,
                  words: pd.DataFrame) -> pd.DataFrame:
    """One row per item of the item vocabulary with ITEM_FEATURE_COLUMNS (jobs.etl.normalize_features.item_features)."""
    items = pd.DataFrame({ITEM_ID: list(vocabularies["item"]), ITEM_IDX: np.arange(1, len(vocabularies["item"]) + 1,
                                                                                  dtype=np.int32)})
    items = items.merge(snapshots, on=ITEM_ID, how="left").merge(statistics, on=ITEM_ID, how="left")
    items[CATEGORY_IDX] = items[CATEGORY].map(vocabularies["category"]).fillna(0).astype(np.int32)
    items[BRAND_IDX] = items[BRAND].map(vocabularies["brand"]).fillna(0).astype(np.int32)
    price = items[PRICE].to_numpy(dtype=np.float64)
    cuts = np.asarray(prices["cuts"], dtype=np.float64)
    known = ~np.isnan(price)
    bucket = np.zeros(len(items), dtype=np.int32)
    if len(cuts):
        bucket[known] = 1 + np.searchsorted(cuts, price[known], side="left")  # cuts strictly below the price
    items[PRICE_BUCKET] = bucket
    if prices["log_std"] == 0:
        items[PRICE_Z] = np.zeros(len(items), dtype=np.float32)
    else:
        z = (np.log1p(price) - prices["log_mean"]) / prices["log_std"]
        items[PRICE_Z] = np.where(known, z, 0.0).astype(np.float32)
    token_ids = words.assign(token_id=words["token"].map(vocabularies["title_token"]))
    token_lists = token_ids.sort_values([ITEM_ID, "position"]).groupby(ITEM_ID)["token_id"].agg(list)
    items[TITLE_TOKENS] = items[ITEM_ID].map(token_lists).apply(lambda ids: ids if isinstance(ids, list) else [])
    items[IN_CATALOG] = items[IN_CATALOG].fillna(False).astype(bool)
    for name in ITEM_FEATURE_COLUMNS[ITEM_FEATURE_COLUMNS.index(IN_CATALOG) + 1:] + (POPULARITY,):
        is_count = name == POPULARITY or name.startswith("views_")
        items[name] = items[name].fillna(0).astype(np.int64 if is_count else np.float32)
    return items[list(ITEM_FEATURE_COLUMNS)]


def build_sequences(indexed: pd.DataFrame) -> pa.Table:
    """One row per user: SEQUENCE_COLUMNS as parallel lists sorted by (event_time, event_id)."""
    known = indexed[indexed[ITEM_IDX] > 0]
    order = np.lexsort((_codes(known[EVENT_ID]), known["_micros"].to_numpy(), _codes(known[USER_ID])))
    ordered = known.iloc[order]
    user_start = _runs(_codes(ordered[USER_ID]))
    offsets = pa.array(np.append(np.flatnonzero(user_start), len(ordered)).astype(np.int32))
    columns = {USER_ID: pa.array(ordered[USER_ID].to_numpy(dtype=object)[user_start])}
    for name, values in ((ITEM_IDX, ordered[ITEM_IDX].to_numpy(np.int32)),
                         (EVENT_TYPE_IDX, ordered[EVENT_TYPE_IDX].to_numpy(np.int32)),
                         (TIMESTAMPS, ordered[TIMESTAMPS].to_numpy(np.int64)),
                         (SPLIT, ordered[SPLIT].to_numpy(np.int32))):
        columns[name] = pa.ListArray.from_arrays(offsets, pa.array(values))
    return pa.table({name: columns[name] for name in SEQUENCE_COLUMNS})


def normalize(config: dict, ds: str) -> dict:
    """jobs.etl.normalize_features.main in pandas; returns the meta dict it writes."""
    splits = plan_splits(config, ds)
    events = read_event_partitions(config, DENOISED_EVENTS, splits.all)
    landed = set(existing_partitions(config, RAW_CATALOG))
    catalog_dates = [day for day in splits.all if day in landed or day == splits.test[-1]]
    catalogs = pd.concat([read_catalog(config, day) for day in catalog_dates], ignore_index=True)
    train_events = events[_flag(events[DT].astype(str).isin(splits.train))]

    snapshots = latest_snapshots(catalogs, ds)
    words = title_words(snapshots)
    vocabularies = {"item": update_vocabulary(config, "item", ds, snapshots[ITEM_ID]),
                    "category": update_vocabulary(config, "category", ds, snapshots[CATEGORY]),
                    "brand": update_vocabulary(config, "brand", ds, snapshots[BRAND]),
                    "title_token": update_vocabulary(config, "title_token", ds, words["token"])}
    # Price scaling from the catalogs of the train days (tonight's when none landed), as Spark's.
    fit_dates = [day for day in splits.train if day in catalog_dates] or [ds]
    prices = price_statistics(latest_snapshots(catalogs[catalogs[DT].isin(fit_dates)], ds))
    statistics = item_statistics(list(vocabularies["item"]), train_events, splits.train,
                                 config["item_stats"]["prior_views"])
    items = item_features(snapshots, vocabularies, prices, statistics, words)
    write_partition(items, partition_path(config, FEATURE_ITEMS, ds))

    item_events = events[_flag(events[EVENT_TYPE].isin(ITEM_EVENT_TYPES)) & _flag(events[ITEM_ID].notna())]
    micros = item_events[EVENT_TIME].to_numpy(dtype="datetime64[us]").astype(np.int64)
    day = item_events[DT].astype(str)
    split = np.where(day.isin(splits.test), SPLIT_TEST, np.where(day.isin(splits.valid), SPLIT_VALID, SPLIT_TRAIN))
    indexed = pd.DataFrame({
        USER_ID: item_events[USER_ID].to_numpy(), EVENT_ID: item_events[EVENT_ID].to_numpy(), "_micros": micros,
        ITEM_IDX: item_events[ITEM_ID].map(vocabularies["item"]).fillna(0).to_numpy(dtype=np.int32),
        EVENT_TYPE_IDX: item_events[EVENT_TYPE].map(EVENT_TYPE_INDEX).to_numpy(dtype=np.int32),
        TIMESTAMPS: np.floor_divide(micros, MICROS_PER_SECOND), SPLIT: split.astype(np.int32)})
    del events, item_events, train_events
    sequences = build_sequences(indexed)
    with replace_partition(partition_path(config, FEATURE_SEQUENCES, ds)) as staging:
        pq.write_table(sequences, os.path.join(staging, PART_FILE))

    known = indexed[ITEM_IDX].to_numpy() > 0
    per_split = np.bincount(indexed[SPLIT].to_numpy()[known], minlength=3)
    sizes = {"n_items": len(vocabularies["item"]), "n_categories": len(vocabularies["category"]),
             "n_brands": len(vocabularies["brand"]), "n_title_tokens": len(vocabularies["title_token"])}
    meta = {"ds": ds, **sizes, "n_event_types": N_EVENT_TYPES, "n_price_buckets": N_PRICE_BUCKETS,
            "n_items_in_catalog": int(items[IN_CATALOG].sum()),
            "train_dates": splits.train, "valid_dates": splits.valid, "test_dates": splits.test,
            "n_users": sequences.num_rows,
            "events_per_split": {SPLIT_NAMES[code]: int(per_split[code]) for code in SPLIT_NAMES},
            "price_log_mean": prices["log_mean"], "price_log_std": prices["log_std"],
            "dropped_unknown_item": int((~known).sum())}
    scalers = {"fitted_on_dates": list(fit_dates),
               "price": {"transform": "log1p_standardize", "log1p_mean": prices["log_mean"],
                         "log1p_std": prices["log_std"], "bucket_cuts": [float(cut) for cut in prices["cuts"]]}}
    with replace_partition(partition_path(config, FEATURE_META, ds)) as staging:
        Path(staging, "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        Path(staging, "scalers.json").write_text(json.dumps(scalers, indent=2, sort_keys=True))
    return meta


# ===========================================================================================
# The chain
# ===========================================================================================
def run_chain(config: dict, dates: list[str]) -> dict:
    """clean and denoise the dates, normalize the last; {"seconds": {stage: s}, "clean", "denoise", "normalize"}."""
    seconds, peak_mb, results = {}, {}, {}
    for stage, run in (("clean", lambda: clean(config, dates)), ("denoise", lambda: denoise(config, dates)),
                       ("normalize", lambda: normalize(config, dates[-1]))):
        started = time.perf_counter()
        results[stage] = run()
        seconds[stage] = round(time.perf_counter() - started, 2)
        pa.default_memory_pool().release_unused()  # Arrow's allocator keeps freed blocks otherwise
        # The process's peak so far (Linux reports KiB): shows which stage needs the memory.
        peak_mb[stage] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(f"pandas {stage}: {seconds[stage]:.1f} s, peak so far {peak_mb[stage]:,} MB", flush=True)
    return {"seconds": seconds, "peak_mb_after": peak_mb, **results}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a resolved config as JSON (jobs.common.config.resolve_config)")
    parser.add_argument("--dates", nargs="+", required=True, help="dates to clean and denoise; the last is normalized")
    parser.add_argument("--summary", help="write the per-stage seconds and counts here as JSON")
    args = parser.parse_args(argv)
    config = json.loads(Path(args.config).read_text())
    summary = run_chain(config, sorted(args.dates))
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
