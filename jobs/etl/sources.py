"""Source adapters: public clickstream formats -> the landed layout the pipeline reads.

    land_source(config, "rees46", "/data/2019-Oct.csv")          -> {"2019-10-01": 1000, ...}

Every adapter maps the rows of one real format onto the canonical raw events of
jobs.common.schema (RAW_EVENT_FIELDS) and derives a catalog from whatever item attributes the
source has, then `land_source` writes, for each UTC date found,

    <lake>/landing/events/dt=D/events-00000.jsonl.gz    one event a line, in source order
    <lake>/landing/catalog/dt=D/catalog.jsonl.gz        items seen on or before D, by item_id

exactly like the tracking export (gzip mtime 0: the same source gives the same bytes), each
partition replaced atomically, so ingest, clean and everything after run unchanged.

Rules shared by every adapter:
- No row is ever dropped. A row that cannot be mapped fully is still landed, with the
  field it could not map left null or holding the original text, so clean quarantines it
  with a reason code (missing_key, bad_timestamp, unknown_event_type, bad_price, ...).
  A line that does not even split into the format's fields is landed verbatim (it is not
  JSON), so clean quarantines it as malformed_json with the original text as its record.
  land_source checks that the lines it wrote (plus those of dates not asked for) equal
  the source rows it read.
- event_id: no format has one, so it is derived from the row's content (format, table and
  every field; a SHA-1 prefix). A row repeated byte for byte in the source therefore lands
  as an identical line, and clean quarantines the copy as exact_duplicate instead of
  counting the same event twice.
- Times become ISO-8601 UTC with milliseconds (2019-10-01T00:00:00.000Z) and the date
  partition is the UTC date of that time. A row without a usable time lands on the date
  its own fields give (DIGINETICA's eventdate) or else on the date of the row before it
  in the file (the first dated row's, for leading ones); its event_time keeps the original
  text, so clean quarantines it as bad_timestamp in that partition.
- Users the source does not identify get a key from the visit the source does identify:
  "session-<id>" (DIGINETICA's NA users, every YOOCHOOSE user) or "invoice-<no>" (Online
  Retail guests): one anonymous visit counts as one user, and its events still teach item
  transitions. Where the source has no session at all, session_id stays null:
  sessionization is a later stage, not a guess made here. Ids are not hashed here either
  (privacy is a later stage).
- Catalog of date D: every item that occurs in a timed event of a canonical item type on
  or before D (not just on D: an item stays in the assortment once seen; not items first
  seen later: that would leak the future), with, per attribute, the latest non-null value
  observed on or before D. Price comes from the events' prices (only positive ones: a
  free or adjustment line says nothing about what an item costs). An attribute the source
  never has is null. Items referenced only by a source's side table (e.g. DIGINETICA's
  184k-item category table) are not listed: nobody interacted with them, and every listed
  item widens the models' full-softmax output.
- Text: files are read as UTF-8. A line with bytes that are not UTF-8 is decoded with
  U+FFFD replacement characters and kept (a stray Latin-1 brand name must not cost the
  event); such lines are counted and reported with the first line number.
- Files ending in .gz are decompressed while streaming. Input is read in chunks of
  CHUNK_ROWS rows (pyarrow row batches for Parquet), so a big file never has to fit in
  memory; what stays in memory is per item and date (the catalog history), not per event.
- Bad input is a SourceError (a ValueError) naming the file and the problem: an empty
  file, a header with another column set or delimiter, a truncated gzip file, a file that
  is not Parquet.

Why a line reader instead of chunked pandas.read_csv: read_csv fails the whole file at a
line with too many fields (or drops it, with on_bad_lines="skip"), pads a short line with
NaN without a word, skips blank lines and cannot say which line had undecodable bytes;
reading lines ourselves makes every line exactly one landed row. Each chunk of lines is
then mapped with vectorised pandas operations.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gzip
import hashlib
import itertools
import json
import shutil
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.common import schema
from jobs.common.lake import partition_path, replace_partition

CHUNK_ROWS = 50_000
EVENTS_FILE = "events-00000.jsonl.gz"  # the tracking export's name for a day's first part
CATALOG_FILE = "catalog.jsonl.gz"
FUSIONREC = "fusionrec"

# Internal columns of a mapped chunk, next to RAW_EVENT_FIELDS and the item attributes.
DAY = "_day"  # the UTC date the row lands on; None = take the previous row's
RAW_LINE = "_raw_line"  # a source line that did not split into fields; landed verbatim
ITEM_ATTRIBUTES = (schema.CATEGORY, schema.BRAND, schema.TITLE)
MAPPED_COLUMNS = schema.RAW_EVENT_FIELDS + ITEM_ATTRIBUTES + (DAY, RAW_LINE)

ISO_UTC_PATTERN = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"  # what _utc_times writes
# Epoch values outside these bounds cannot be pandas timestamps; they are unusable times.
MIN_EPOCH_MS, MAX_EPOCH_MS = 0, 9_000_000_000_000_000
LINE_ENCODER = json.JSONEncoder(separators=(",", ":"))


class SourceError(ValueError):
    """A source file the adapters cannot read; the message names the file and the problem."""


@dataclasses.dataclass
class ReadReport:
    """What reading one source file found: its rows and the lines that needed help."""
    path: str
    rows: int = 0
    ragged_rows: int = 0  # lines that did not split into the format's fields
    first_ragged_line: int | None = None
    undecodable_rows: int = 0  # lines with bytes that are not UTF-8
    first_undecodable_line: int | None = None

    def warnings(self) -> list[str]:
        notes = []
        if self.undecodable_rows:
            notes.append(f"{self.path}: {self.undecodable_rows} line(s) are not valid UTF-8 (first: line "
                         f"{self.first_undecodable_line}); their bad bytes became U+FFFD and the rows were kept")
        if self.ragged_rows:
            notes.append(f"{self.path}: {self.ragged_rows} line(s) do not have the format's fields (first: "
                         f"line {self.first_ragged_line}); landed verbatim for clean to quarantine as "
                         f"{schema.REASON_MALFORMED}")
        return notes


# =========================================================================================
# Reading: files -> chunks of text fields (one row per source line, never fewer)
# =========================================================================================
@dataclasses.dataclass(frozen=True)
class DelimitedLayout:
    """How one delimited file is laid out."""
    name: str  # for messages, e.g. "REES46 events"
    columns: tuple[str, ...]
    delimiter: str
    has_header: bool
    quoted: bool = False  # values may be "quoted" (csv rules); otherwise a plain split


DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def _binary_lines(path: Path) -> Iterator[bytes]:
    """The file's lines as bytes (gunzipped for .gz), with a clear error for broken files."""
    if path.stat().st_size == 0:
        raise SourceError(f"{path}: the file is empty")
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            yield from handle
    except EOFError:
        raise SourceError(f"{path}: truncated gzip file (it ends before the gzip end-of-stream marker); "
                          f"the copy is incomplete, fetch it again") from None
    except (gzip.BadGzipFile, zlib.error) as error:
        raise SourceError(f"{path}: not a readable gzip file ({error})") from None


def _decoded_lines(path: Path, report: ReadReport) -> Iterator[tuple[int, str]]:
    """(line number, text without the line break), counting lines that are not UTF-8."""
    for number, raw in enumerate(_binary_lines(path), start=1):
        raw = raw.rstrip(b"\r\n")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
            report.undecodable_rows += 1
            report.first_undecodable_line = report.first_undecodable_line or number
        yield number, text.lstrip("\ufeff") if number == 1 else text


def _split(text: str, layout: DelimitedLayout) -> list[str]:
    if layout.quoted and '"' in text:
        return next(csv.reader([text], delimiter=layout.delimiter), [])
    return text.split(layout.delimiter)


def _layout_problem(fields: list[str], text: str, layout: DelimitedLayout) -> str | None:
    """Why the first line does not fit the layout (None if it does), with a delimiter hint."""
    expected = list(layout.columns)
    if layout.has_header and fields == expected:
        return None
    if not layout.has_header and len(fields) == len(expected):
        return None
    for other, other_name in DELIMITER_NAMES.items():
        if other != layout.delimiter and len(text.split(other)) == len(expected):
            return (f"the file looks {other_name}-separated, but {layout.name} files are "
                    f"{DELIMITER_NAMES[layout.delimiter]}-separated")
    if layout.has_header:
        missing = [name for name in expected if name not in fields]
        unexpected = [name for name in fields if name not in expected]
        return (f"expected the header {layout.delimiter.join(expected)!r}, found {text!r}: the column set "
                f"changed (missing {missing}, unexpected {unexpected}) or the order did")
    return (f"line 1 has {len(fields)} field(s) but {layout.name} rows have {len(expected)} "
            f"({', '.join(expected)}, no header)")


def read_delimited(path: Path, layout: DelimitedLayout, report: ReadReport) -> Iterator[pd.DataFrame]:
    """Chunks of the file's rows: the layout's columns as text, plus RAW_LINE.

    A line with a different number of fields becomes a row of None with the line in
    RAW_LINE. The first line is checked against the layout: a changed header or delimiter
    there means the whole file is something else, which is an error, not dirt.
    """
    rows: list[list[str | None]] = []
    raw_lines: list[str | None] = []
    width = len(layout.columns)
    for number, text in _decoded_lines(path, report):
        fields = _split(text, layout)
        if number == 1:
            problem = _layout_problem(fields, text, layout)
            if problem:
                raise SourceError(f"{path}: {problem}")
            if layout.has_header:
                continue
        report.rows += 1
        if len(fields) == width:
            rows.append(fields)
            raw_lines.append(None)
        else:
            report.ragged_rows += 1
            report.first_ragged_line = report.first_ragged_line or number
            rows.append([None] * width)
            raw_lines.append(text)
        if len(rows) == CHUNK_ROWS:
            yield _text_frame(rows, raw_lines, layout.columns)
            rows, raw_lines = [], []
    if rows:
        yield _text_frame(rows, raw_lines, layout.columns)
    if report.rows == 0:
        raise SourceError(f"{path}: no data rows" + (" below the header" if layout.has_header else ""))


def _text_frame(rows, raw_lines, columns) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(columns), dtype=object)
    frame[RAW_LINE] = pd.Series(raw_lines, dtype=object)
    return frame


def read_parquet(path: Path, columns: tuple[str, ...], name: str, report: ReadReport) -> Iterator[pd.DataFrame]:
    """Row batches of a Parquet file as DataFrames (plus an all-None RAW_LINE)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise SourceError(f"{path}: the file is empty")
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise SourceError(f"{path}: not a readable Parquet file ({error})") from None
    found = [field for field in parquet.schema_arrow.names if not field.startswith("__index_level_")]
    if sorted(found) != sorted(columns):
        raise SourceError(f"{path}: {name} needs the columns {list(columns)}, the file has {found}: "
                          f"the column set changed")
    try:
        for batch in parquet.iter_batches(batch_size=CHUNK_ROWS, columns=list(columns)):
            frame = batch.to_pandas()
            frame[RAW_LINE] = None
            report.rows += len(frame)
            yield frame
    except (pa.ArrowException, OSError) as error:
        raise SourceError(f"{path}: the Parquet data cannot be read after {report.rows} rows ({error})") from None
    if report.rows == 0:
        raise SourceError(f"{path}: no data rows")


# =========================================================================================
# Vectorised mapping helpers (pure: Series in, Series out)
# =========================================================================================
def _present(values: pd.Series, missing: tuple[str, ...] = ("",)) -> pd.Series:
    """Text without surrounding blanks; NaN/None or a missing-value marker -> None."""
    text = values.astype("string[pyarrow]").str.strip()  # vectorised; keeps missing values missing
    text = text.mask(text.isin(missing))
    return text.astype(object).where(text.notna(), None)


def _translated(values: pd.Series, mapping: dict[str, str]) -> pd.Series:
    """Mapped names; an unknown value keeps its original text so clean can name it."""
    text = _present(values)
    return text.map(lambda value: mapping.get(value, value)).astype(object)


def _prices(values: pd.Series) -> pd.Series:
    """A finite number where the text is one; otherwise the original text (clean: bad_price)."""
    text = _present(values)
    numbers = pd.to_numeric(text, errors="coerce")
    out = text.copy()
    finite = np.isfinite(numbers.to_numpy(dtype=float))
    out[finite] = [float(number) for number in numbers[finite]]
    return out


def _iso_millis(times: pd.Series) -> pd.Series:
    """'YYYY-MM-DDTHH:MM:SS.mmm' of each time (the zone's wall clock); NaT -> None.

    numpy formats in C: Series.dt.strftime took about 7x as long per chunk when profiled
    on the Online Retail sample.
    """
    naive = times.dt.tz_localize(None) if times.dt.tz is not None else times
    text = np.datetime_as_string(naive.to_numpy(dtype="datetime64[ms]"), unit="ms")
    return pd.Series(text, index=times.index, dtype=object).where(times.notna(), None)


def _utc_times(times: pd.Series, original: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(event_time, day) from tz-aware timestamps; NaT -> (the original text, None)."""
    text = _iso_millis(times.dt.tz_convert("UTC"))
    valid = text.notna()
    event_time = (text + "Z").where(valid, _present(original))
    day = text.str[:10].where(valid, None)
    return event_time.where(event_time.notna(), None), day.where(day.notna(), None)


def _epoch_times(values: pd.Series, ms_per_unit: int) -> pd.Series:
    """UTC timestamps from epoch numbers in text, to the millisecond; unusable -> NaT."""
    millis = (pd.to_numeric(_present(values), errors="coerce") * ms_per_unit).round()
    usable = millis.between(MIN_EPOCH_MS, MAX_EPOCH_MS)
    return pd.to_datetime(millis.where(usable), unit="ms", utc=True)


def _content_ids(prefix: str, rows: pd.DataFrame, columns: Iterable[str]) -> pd.Series:
    """prefix-<20 hex digits of SHA-1 over the row's fields>: identical rows, identical ids."""
    columns = list(columns)
    joined = rows[columns[0]].astype(str).str.cat([rows[name].astype(str) for name in columns[1:]], sep="\x1f")
    return pd.Series([f"{prefix}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:20]}" for text in joined],
                     index=rows.index, dtype=object)


def _visit_user_keys(users: pd.Series, visits: pd.Series, visit_kind: str) -> pd.Series:
    """The user id, or '<visit_kind>-<visit id>' where the source does not know the user."""
    keys = _present(visits).map(lambda visit: None if visit is None else f"{visit_kind}-{visit}")
    return users.where(users.notna(), keys).astype(object)


def mapped_frame(rows: pd.DataFrame, fields: dict) -> pd.DataFrame:
    """The MAPPED_COLUMNS frame of a chunk: fields holds Series (or a constant) per column.

    Rows that arrived as unsplittable lines keep only their RAW_LINE (written verbatim).
    """
    columns = {}
    for name in MAPPED_COLUMNS[:-1]:
        value = fields.get(name)
        series = value if isinstance(value, pd.Series) else pd.Series(value, index=rows.index, dtype=object)
        columns[name] = series.astype(object).where(series.notna(), None)
    columns[RAW_LINE] = rows[RAW_LINE]
    return pd.DataFrame(columns, index=rows.index)


# =========================================================================================
# The adapters: one per format, each `(path, reports) -> Iterator[mapped chunk]`
# =========================================================================================
REES46_LAYOUT = DelimitedLayout("REES46 events", (
    "event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price",
    "user_id", "user_session"), delimiter=",", has_header=True, quoted=True)
REES46_EVENT_TYPES = {"view": schema.VIEW, "cart": schema.ADD_TO_CART, "purchase": schema.PURCHASE}


def map_rees46(rows: pd.DataFrame) -> pd.DataFrame:
    """REES46 multi-category store events (one CSV file, header, comma-separated).

    - event_time "2019-10-01 00:00:05 UTC" is already UTC.
    - event_type: view -> view, cart -> add_to_cart, purchase -> purchase. Any other value
      (the cosmetics-shop variant of the data has remove_from_cart, which has no canonical
      counterpart) keeps its text: clean quarantines it as unknown_event_type, visibly
      counted, instead of it posing as another type.
    - product_id -> item_id, user_id -> user_id, user_session -> session_id, price -> price.
    - Catalog: category = category_id (always present, the finest grouping); brand = brand;
      title = the words of category_code ("appliances.environment.water_heater" ->
      "appliances environment water heater"): the source has no product titles and
      category_code is its only text about the item, so the title-token features get it.
    """
    times = pd.to_datetime(_present(rows["event_time"]), format="%Y-%m-%d %H:%M:%S UTC", utc=True, errors="coerce")
    event_time, day = _utc_times(times, rows["event_time"])
    words = _present(rows["category_code"]).map(
        lambda code: None if code is None else code.replace(".", " ").replace("_", " "))
    return mapped_frame(rows, {
        schema.EVENT_ID: _content_ids("rees46", rows, REES46_LAYOUT.columns),
        schema.EVENT_TIME: event_time, DAY: day,
        schema.EVENT_TYPE: _translated(rows["event_type"], REES46_EVENT_TYPES),
        schema.USER_ID: _present(rows["user_id"]), schema.SESSION_ID: _present(rows["user_session"]),
        schema.ITEM_ID: _present(rows["product_id"]), schema.PRICE: _prices(rows["price"]),
        schema.CATEGORY: _present(rows["category_id"]), schema.BRAND: _present(rows["brand"]),
        schema.TITLE: words,
    })


def rees46_source(path: Path, reports: list[ReadReport]) -> Iterator[pd.DataFrame]:
    yield from _mapped_file(path, REES46_LAYOUT, map_rees46, reports)


TAOBAO_LAYOUT = DelimitedLayout("Taobao UserBehavior", (
    "user_id", "item_id", "category_id", "behavior", "timestamp"), delimiter=",", has_header=False)
TAOBAO_EVENT_TYPES = {"pv": schema.VIEW, "cart": schema.ADD_TO_CART, "fav": schema.ADD_TO_CART,
                      "buy": schema.PURCHASE}


def map_taobao(rows: pd.DataFrame) -> pd.DataFrame:
    """Taobao UserBehavior (CSV, no header): user_id,item_id,category_id,behavior,timestamp.

    - timestamp: unix seconds (UTC).
    - behavior: pv (page view) -> view, cart -> add_to_cart, buy -> purchase, and
      fav -> add_to_cart. A favourite is an explicit save-for-later on the item page: the
      same intent level as a cart (in Taobao's funnel pv >> fav ~ cart >> buy, and both sit
      between browsing and buying); as a view it would vanish among the ~90% passive page
      views. Unknown behaviors keep their text (clean: unknown_event_type).
    - No sessions in the source: session_id is null (sessionization is a later stage).
    - Catalog: category = category_id; no brand, price or title in the source (null).
    """
    event_time, day = _utc_times(_epoch_times(rows["timestamp"], 1000), rows["timestamp"])
    return mapped_frame(rows, {
        schema.EVENT_ID: _content_ids("taobao", rows, TAOBAO_LAYOUT.columns),
        schema.EVENT_TIME: event_time, DAY: day,
        schema.EVENT_TYPE: _translated(rows["behavior"], TAOBAO_EVENT_TYPES),
        schema.USER_ID: _present(rows["user_id"]), schema.ITEM_ID: _present(rows["item_id"]),
        schema.CATEGORY: _present(rows["category_id"]),
    })


def taobao_source(path: Path, reports: list[ReadReport]) -> Iterator[pd.DataFrame]:
    yield from _mapped_file(path, TAOBAO_LAYOUT, map_taobao, reports)


YOOCHOOSE_LAYOUT = DelimitedLayout("YOOCHOOSE clicks", ("SessionId", "ItemId", "Time"),
                                   delimiter="\t", has_header=True)


def map_yoochoose(rows: pd.DataFrame) -> pd.DataFrame:
    """YOOCHOOSE clicks as the session-rec split files: TAB-separated SessionId ItemId Time.

    - Time: unix seconds with a fraction (1396860669.277), kept to the millisecond.
    - Every row is a click (the challenge's click events: the user clicked an item); the
      data has one event type, so this choice changes the type index, not the sequences.
    - No user ids: each session is its own user, user_id = "session-<SessionId>", and
      session_id = SessionId.
    - Catalog: item ids only; these files carry no category, brand, price or title (null).
    """
    event_time, day = _utc_times(_epoch_times(rows["Time"], 1000), rows["Time"])
    sessions = _present(rows["SessionId"])
    return mapped_frame(rows, {
        schema.EVENT_ID: _content_ids("yoochoose", rows, YOOCHOOSE_LAYOUT.columns),
        schema.EVENT_TIME: event_time, DAY: day, schema.EVENT_TYPE: schema.CLICK,
        schema.USER_ID: _visit_user_keys(pd.Series(None, index=rows.index, dtype=object), sessions, "session"),
        schema.SESSION_ID: sessions, schema.ITEM_ID: _present(rows["ItemId"]),
    })


def yoochoose_source(path: Path, reports: list[ReadReport]) -> Iterator[pd.DataFrame]:
    yield from _mapped_file(path, YOOCHOOSE_LAYOUT, map_yoochoose, reports)


DIGINETICA_VIEWS_GLOB = "*item-views.csv*"  # train-item-views.csv or the sample's name
DIGINETICA_CATEGORIES_FILE = "product-categories.csv"
DIGINETICA_PURCHASES_FILE = "train-purchases.csv"
DIGINETICA_VIEWS_LAYOUT = DelimitedLayout("DIGINETICA item views", (
    "session_id", "user_id", "item_id", "timeframe", "eventdate"), delimiter=";", has_header=True)
DIGINETICA_PURCHASES_LAYOUT = DelimitedLayout("DIGINETICA purchases", (
    "sessionId", "userId", "timeframe", "eventdate", "ordernumber", "itemId"), delimiter=";", has_header=True)
DIGINETICA_CATEGORIES_LAYOUT = DelimitedLayout("DIGINETICA product categories", ("itemId", "categoryId"),
                                               delimiter=";", has_header=True)
DIGINETICA_MISSING = ("", "NA")
# A timeframe (ms since the session's start) beyond a year is no usable time.
DIGINETICA_MAX_TIMEFRAME_MS = 366 * 86_400_000


def map_diginetica(rows: pd.DataFrame, *, event_type: str, table: str, session: str, user: str, item: str,
                   categories: dict[str, str]) -> pd.DataFrame:
    """DIGINETICA (CIKM Cup 2016) item views or purchases (';'-separated, header).

    - Time: the source gives only the session's date (eventdate) and `timeframe`, the
      milliseconds since the session's start. event_time = eventdate 00:00 UTC + timeframe:
      order and gaps within a session are exact, the time of day is not (the session's
      start is unknown, so it is taken as midnight). A purchase timeframe can exceed a day;
      such an event lands on the later date its time falls on. A row whose timeframe is
      unusable keeps "<eventdate> <timeframe>" as event_time on the eventdate partition
      (clean: bad_timestamp).
    - user_id "NA" (62% of views): the session is the user, user_id = "session-<id>".
    - Views are views; purchases table rows are purchases, one per item line (ordernumber
      is not a field of the schema; the content-derived event_id keeps lines apart).
    - Catalog: category from product-categories.csv (null for an item not in it); the
      files hold no brand, price or title (null).
    """
    offsets = pd.to_numeric(_present(rows["timeframe"], DIGINETICA_MISSING), errors="coerce")
    dates = pd.to_datetime(_present(rows["eventdate"]), format="%Y-%m-%d", utc=True, errors="coerce")
    times = dates + pd.to_timedelta(offsets.where(offsets.between(0, DIGINETICA_MAX_TIMEFRAME_MS)), unit="ms")
    original = rows["eventdate"].astype(str) + " " + rows["timeframe"].astype(str)
    event_time, day = _utc_times(times, original.where(rows["eventdate"].notna(), None))
    day = day.where(day.notna(), _iso_millis(dates).str[:10])
    items = _present(rows[item], DIGINETICA_MISSING)
    sessions = _present(rows[session], DIGINETICA_MISSING)
    return mapped_frame(rows, {
        schema.EVENT_ID: _content_ids(f"diginetica-{table}", rows, [c for c in rows.columns if c != RAW_LINE]),
        schema.EVENT_TIME: event_time, DAY: day, schema.EVENT_TYPE: event_type,
        schema.USER_ID: _visit_user_keys(_present(rows[user], DIGINETICA_MISSING), sessions, "session"),
        schema.SESSION_ID: sessions, schema.ITEM_ID: items,
        schema.CATEGORY: items.map(categories).astype(object),
    })


def diginetica_source(folder: Path, reports: list[ReadReport]) -> Iterator[pd.DataFrame]:
    """The DIGINETICA folder: *item-views.csv, plus product-categories.csv and
    train-purchases.csv when present."""
    if not folder.is_dir():
        raise SourceError(f"{folder}: the diginetica source is the folder holding {DIGINETICA_VIEWS_GLOB}, "
                          f"{DIGINETICA_CATEGORIES_FILE} and {DIGINETICA_PURCHASES_FILE}")
    views = sorted(folder.glob(DIGINETICA_VIEWS_GLOB))
    if len(views) != 1:
        raise SourceError(f"{folder}: expected exactly one {DIGINETICA_VIEWS_GLOB} file, found "
                          f"{[view.name for view in views]}")
    categories = _diginetica_categories(folder / DIGINETICA_CATEGORIES_FILE, reports)
    yield from _mapped_file(views[0], DIGINETICA_VIEWS_LAYOUT, lambda rows: map_diginetica(
        rows, event_type=schema.VIEW, table="view", session="session_id", user="user_id", item="item_id",
        categories=categories), reports)
    purchases = folder / DIGINETICA_PURCHASES_FILE
    if purchases.exists():
        yield from _mapped_file(purchases, DIGINETICA_PURCHASES_LAYOUT, lambda rows: map_diginetica(
            rows, event_type=schema.PURCHASE, table="purchase", session="sessionId", user="userId",
            item="itemId", categories=categories), reports)


def _diginetica_categories(path: Path, reports: list[ReadReport]) -> dict[str, str]:
    """item id -> category id; a side table, so its rows are not events (not counted)."""
    if not path.exists():
        return {}
    categories: dict[str, str] = {}
    for chunk in read_delimited(path, DIGINETICA_CATEGORIES_LAYOUT, ReadReport(str(path))):
        usable = chunk[chunk[RAW_LINE].isna()]
        categories.update(zip(_present(usable["itemId"]), _present(usable["categoryId"])))
    return categories


ONLINE_RETAIL_COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
                         "CustomerID", "Country")
ONLINE_RETAIL_TIME_ZONE = "Europe/London"
CANCELLATION = "cancellation"  # not a canonical event type: clean quarantines it
STOCK_ADJUSTMENT = "stock_adjustment"  # likewise


def map_online_retail(rows: pd.DataFrame) -> pd.DataFrame:
    """UCI Online Retail invoice lines (Parquet): one line = one purchase event.

    - InvoiceDate is the UK shop's local wall-clock time (no zone in the data): it is read
      as Europe/London and converted to UTC (an hour earlier in summer). A time that does
      not exist or is ambiguous at a clock change keeps its text (clean: bad_timestamp).
    - event_type: purchase, except two kinds of line that are not purchases and are kept
      under a non-canonical type, so clean quarantines them as unknown_event_type (kept,
      visible, counted; never counted as purchases):
        cancellation      InvoiceNo starting with "C" (negative quantity: a purchase undone)
        stock_adjustment  any other line with quantity <= 0 (damaged/lost stock, price 0)
      Other dirt is left to clean's rules: a negative UnitPrice ("adjust bad debt") is
      bad_price; exact duplicate lines are exact_duplicate. Quantity is not a schema field:
      one line is one purchase event whatever the quantity.
    - user_id = CustomerID ("17850"); a line without one (~25%) is a guest checkout, and
      the invoice is its user: "invoice-<InvoiceNo>" (the basket still shows which items
      go together). session_id = InvoiceNo (one checkout).
    - item_id = StockCode, price = UnitPrice; catalog title = Description; no category or
      brand in the source (null). Non-product codes (POST, M, DOT, ...) are items as given.
    """
    invoice = _present(rows["InvoiceNo"])
    local_times = pd.to_datetime(rows["InvoiceDate"], errors="coerce")
    times = local_times.dt.tz_localize(ONLINE_RETAIL_TIME_ZONE, ambiguous="NaT", nonexistent="NaT")
    event_time, day = _utc_times(times, rows["InvoiceDate"].astype(str).where(rows["InvoiceDate"].notna(), None))
    day = day.where(day.notna(), _iso_millis(local_times).str[:10])
    quantity = pd.to_numeric(rows["Quantity"], errors="coerce")
    cancelled = invoice.str.startswith("C", na=False).astype(bool)
    event_type = np.select([cancelled, quantity <= 0], [CANCELLATION, STOCK_ADJUSTMENT], schema.PURCHASE)
    customers = pd.to_numeric(rows["CustomerID"], errors="coerce")
    users = customers.map(lambda customer: None if np.isnan(customer) else f"{customer:.0f}").astype(object)
    return mapped_frame(rows, {
        schema.EVENT_ID: _content_ids("online_retail", rows, ONLINE_RETAIL_COLUMNS),
        schema.EVENT_TIME: event_time, DAY: day,
        schema.EVENT_TYPE: pd.Series(event_type, index=rows.index, dtype=object),
        schema.USER_ID: _visit_user_keys(users, invoice, "invoice"), schema.SESSION_ID: invoice,
        schema.ITEM_ID: _present(rows["StockCode"]), schema.PRICE: _prices(rows["UnitPrice"]),
        schema.TITLE: _present(rows["Description"]),
    })


def online_retail_source(path: Path, reports: list[ReadReport]) -> Iterator[pd.DataFrame]:
    report = ReadReport(str(path))
    reports.append(report)
    for chunk in read_parquet(path, ONLINE_RETAIL_COLUMNS, "UCI Online Retail", report):
        yield map_online_retail(chunk)


def _mapped_file(path: Path, layout: DelimitedLayout, mapper: Callable[[pd.DataFrame], pd.DataFrame],
                 reports: list[ReadReport]) -> Iterator[pd.DataFrame]:
    if not path.is_file():
        raise SourceError(f"{path}: not a file ({layout.name} expected)")
    report = ReadReport(str(path))
    reports.append(report)
    for chunk in read_delimited(path, layout, report):
        yield mapper(chunk)


MAPPED_SOURCES: dict[str, Callable[[Path, list[ReadReport]], Iterator[pd.DataFrame]]] = {
    "diginetica": diginetica_source,
    "yoochoose": yoochoose_source,
    "rees46": rees46_source,
    "taobao": taobao_source,
    "online_retail": online_retail_source,
}
SOURCE_FORMATS = (FUSIONREC, *MAPPED_SOURCES)


def map_source(source_format: str, source_path, reports: list[ReadReport] | None = None) -> Iterator[pd.DataFrame]:
    """The source's rows as mapped chunks (MAPPED_COLUMNS), one row per source row."""
    adapter = MAPPED_SOURCES.get(source_format)
    if adapter is None:
        raise ValueError(f"unknown source format {source_format!r}: choose one of {list(SOURCE_FORMATS)}")
    path = Path(source_path)
    if not path.exists():
        raise SourceError(f"{path}: the {source_format} source does not exist")
    return adapter(path, [] if reports is None else reports)


# =========================================================================================
# Landing: mapped chunks -> landing/events and landing/catalog partitions
# =========================================================================================
def render_event_lines(mapped: pd.DataFrame) -> list[str]:
    """One JSON line per row, fields in RAW_EVENT_FIELDS order; unsplit lines verbatim."""
    fields = schema.RAW_EVENT_FIELDS
    records = zip(*(mapped[name].tolist() for name in fields))
    return [raw if raw is not None else LINE_ENCODER.encode(dict(zip(fields, values)))
            for raw, values in zip(mapped[RAW_LINE].tolist(), records)]


class CatalogHistory:
    """Per date and item, which items occurred and their latest attribute values.

    Only timed rows of a canonical item event type count: a row clean rejects for its
    type (an Online Retail stock adjustment described as "damaged") must not rename an
    item, and a price counts only when positive (free or adjustment lines say nothing
    about what the item costs). Memory grows with distinct (date, item) pairs, not events.
    """

    ATTRIBUTES = ITEM_ATTRIBUTES + (schema.PRICE,)
    _COMPACT_EVERY = 64  # chunks

    def __init__(self):
        self._seen: list[pd.DataFrame] = []
        self._latest: dict[str, list[pd.DataFrame]] = {name: [] for name in self.ATTRIBUTES}

    def observe(self, mapped: pd.DataFrame) -> None:
        timed = mapped[mapped[schema.ITEM_ID].notna()
                       & mapped[schema.EVENT_TYPE].isin(schema.ITEM_EVENT_TYPES)
                       & mapped[schema.EVENT_TIME].astype(str).str.match(ISO_UTC_PATTERN)]
        self._seen.append(timed[[DAY, schema.ITEM_ID]].drop_duplicates())
        for name in self.ATTRIBUTES:
            values = timed[name]
            if name == schema.PRICE:
                numbers = pd.to_numeric(values, errors="coerce")
                values = numbers.where(np.isfinite(numbers) & (numbers > 0))
            observed = timed[[DAY, schema.ITEM_ID, schema.EVENT_TIME]].assign(**{name: values})
            self._latest[name].append(_last_per_item_day(observed[values.notna()]))
        if len(self._seen) >= self._COMPACT_EVERY:
            self._compact()

    def _compact(self) -> None:
        self._seen = [pd.concat(self._seen).drop_duplicates()]
        self._latest = {name: [_last_per_item_day(pd.concat(frames))] for name, frames in self._latest.items()}

    def snapshots(self, days: Iterable[str]) -> Iterator[tuple[str, list[str]]]:
        """(day, catalog JSON lines sorted by item_id) for each requested day, oldest first."""
        wanted = sorted(set(days))
        if not wanted or not self._seen:
            return
        self._compact()
        first_seen = self._seen[0].groupby(schema.ITEM_ID)[DAY].min()
        new_items = first_seen.groupby(first_seen).groups  # day -> items first seen that day
        updates = {name: {day: dict(zip(group[schema.ITEM_ID], group[name]))
                          for day, group in frames[0].groupby(DAY)}
                   for name, frames in self._latest.items()}
        attributes: dict[str, dict] = {}
        lines: dict[str, str] = {}  # rendered once per change, not once per item and day
        ordered: list[str] = []
        for day in sorted({*new_items, *wanted}):
            if day > wanted[-1]:
                break
            changed = set(new_items.get(day, ()))
            for item in changed:
                attributes[item] = dict.fromkeys(self.ATTRIBUTES)
            if changed:
                ordered = sorted(attributes)
            for name in self.ATTRIBUTES:
                for item, value in updates[name].get(day, {}).items():
                    attributes[item][name] = float(value) if name == schema.PRICE else value
                    changed.add(item)
            for item in changed:
                lines[item] = LINE_ENCODER.encode(
                    {schema.ITEM_ID: item, **{name: attributes[item][name] for name in schema.CATALOG_FIELDS[1:]}})
            if day in wanted:
                yield day, [lines[item] for item in ordered]


def _last_per_item_day(observed: pd.DataFrame) -> pd.DataFrame:
    return (observed.sort_values(schema.EVENT_TIME, kind="stable")
            .drop_duplicates([DAY, schema.ITEM_ID], keep="last"))


class _DayWriters:
    """The events gzip of each wanted day's staging partition, opened on first use."""

    def __init__(self, config: dict, stack: contextlib.ExitStack, wanted: set[str] | None):
        self._config, self._stack, self._wanted = config, stack, wanted
        self._handles: dict[str, gzip.GzipFile] = {}
        self.lines: dict[str, int] = {}
        self.skipped = 0  # rows of days that were not asked for

    def write(self, day: str, lines: list[str]) -> None:
        if self._wanted is not None and day not in self._wanted:
            self.skipped += len(lines)
            return
        if day not in self._handles:
            staging = self._stack.enter_context(
                replace_partition(partition_path(self._config, schema.LANDING_EVENTS, day)))
            self._handles[day] = self._stack.enter_context(_deterministic_gzip(Path(staging) / EVENTS_FILE))
            self.lines[day] = 0
        self._handles[day].write(("\n".join(lines) + "\n").encode("utf-8"))
        self.lines[day] += len(lines)


@contextlib.contextmanager
def _deterministic_gzip(path: Path):
    """A gzip writer with mtime 0 and no file name in the header: same lines, same bytes."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                compresslevel=6) as out:
        yield out


def _write_catalog(config: dict, stack: contextlib.ExitStack, day: str, lines: list[str]) -> None:
    """Stage one day's catalog; it replaces the old one when the stack closes without error."""
    staging = stack.enter_context(replace_partition(partition_path(config, schema.LANDING_CATALOG, day)))
    with _deterministic_gzip(Path(staging) / CATALOG_FILE) as out:
        out.write(("\n".join(lines) + "\n").encode("utf-8"))


def land_mapped(config: dict, chunks: Iterable[pd.DataFrame], dates: Iterable[str] | None = None) -> dict[str, int]:
    """Write mapped chunks as landing partitions (all dates, or only `dates`).

    Returns {date: event lines landed}. Either every partition of the call is replaced or,
    on an error, none is: the staging folders stay open until the source is fully read.
    """
    wanted = None if dates is None else set(dates)
    catalog = CatalogHistory()
    rows_read = 0
    with contextlib.ExitStack() as stack:
        writers = _DayWriters(config, stack, wanted)
        last_day: str | None = None
        undated_lead: list[str] = []  # rows before the first dated one: they wait for its date
        for mapped in chunks:
            rows_read += len(mapped)
            catalog.observe(mapped)
            lines = render_event_lines(mapped)
            days = mapped[DAY].ffill()
            days = days.fillna(last_day) if last_day is not None else days.bfill()
            if days.isna().all():
                undated_lead += lines
                continue
            if undated_lead:
                writers.write(days.iloc[0], undated_lead)
                undated_lead = []
            # One write per run of equal days: sorted sources give few, long runs.
            for day, run in itertools.groupby(zip(days.tolist(), lines), key=lambda pair: pair[0]):
                writers.write(day, [line for _, line in run])
            last_day = days.iloc[-1]
        if undated_lead:
            raise SourceError(f"none of the {rows_read} source rows has a usable time or date: "
                              f"nothing to partition by (is it the right format?)")
        landed = sum(writers.lines.values())
        if landed + writers.skipped != rows_read:  # a bug guard: nothing may be lost here
            raise RuntimeError(f"landing lost rows: read {rows_read}, landed {landed}, "
                               f"skipped {writers.skipped} of other dates")
        for day, lines in catalog.snapshots(writers.lines):
            _write_catalog(config, stack, day, lines)
    return dict(sorted(writers.lines.items()))


def land_passthrough(config: dict, source_root, dates: Iterable[str] | None = None) -> dict[str, int]:
    """The project's own format: copy landing/{events,catalog}/dt=D/*.jsonl.gz from another
    lake root, checking that every gzip file reads to its end. Returns {date: event lines}."""
    source_config = {"lake_root": str(source_root)}
    events_root = Path(source_root) / schema.LANDING_EVENTS
    available = sorted(p.name[3:] for p in events_root.glob("dt=*") if p.is_dir()) if events_root.is_dir() else []
    if not available:
        raise SourceError(f"{source_root}: no {schema.LANDING_EVENTS}/dt=YYYY-MM-DD/ folders (fusionrec format)")
    wanted = available if dates is None else [day for day in available if day in set(dates)]
    landed = {}
    for day in wanted:
        landed[day] = _copy_checked(partition_path(source_config, schema.LANDING_EVENTS, day),
                                    partition_path(config, schema.LANDING_EVENTS, day))
        _copy_checked(partition_path(source_config, schema.LANDING_CATALOG, day),
                      partition_path(config, schema.LANDING_CATALOG, day))
    return landed


def _copy_checked(source: str, target: str) -> int:
    files = sorted(Path(source).glob("*.jsonl.gz"))
    if not files:
        raise SourceError(f"{source}: no *.jsonl.gz files")
    lines = 0
    with replace_partition(target) as staging:
        for file in files:
            lines += sum(1 for _ in _binary_lines(file))
            shutil.copy2(file, Path(staging) / file.name)
    return lines


def land_source(config: dict, source_format: str, source_path, dates: Iterable[str] | None = None) -> dict[str, int]:
    """Land a source in the lake's landing layout; returns {date: event lines landed}.

    dates: only these UTC dates (rows of other dates are read but not written); None =
    every date the source has. Prints what it read and any lines that needed help.
    """
    if source_format == FUSIONREC:
        landed = land_passthrough(config, source_path, dates)
        print(f"landed {FUSIONREC} source {source_path}: {sum(landed.values()):,} lines on {len(landed)} date(s)")
        return landed
    reports: list[ReadReport] = []
    landed = land_mapped(config, map_source(source_format, source_path, reports), dates)
    rows = sum(report.rows for report in reports)
    print(f"landed {source_format} source {source_path}: read {rows:,} rows, landed "
          f"{sum(landed.values()):,} on {len(landed)} date(s)"
          + (f" {min(landed)}..{max(landed)}" if landed else ""))
    for report in reports:
        for note in report.warnings():
            print(f"warning: {note}")
    return landed
