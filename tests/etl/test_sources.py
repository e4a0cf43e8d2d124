"""jobs/etl/sources.py: every adapter on its real sample, hand-made bad input, the landing contract.

The real samples live in RECSYS_SHARED_DATA (research-use terms: read there, never copied).
Expected values below were read off the sample files by hand (the lines are quoted).
"""

import collections
import gzip
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from shared_data import SHARED, needs_shared_data

from jobs.common import schema
from jobs.etl import sources
from jobs.common.lake import partition_path

REPO = Path(__file__).resolve().parents[2]


EVENT_ID = re.compile(r"^[a-z0-9_-]+-[0-9a-f]{20}$")


# --- helpers ------------------------------------------------------------------------------

def landed_lines(config, dataset, day) -> list[str]:
    file = sources.EVENTS_FILE if dataset == schema.LANDING_EVENTS else sources.CATALOG_FILE
    with gzip.open(Path(partition_path(config, dataset, day)) / file, "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()


def landed_events(config, day) -> list[dict]:
    return [json.loads(line) for line in landed_lines(config, schema.LANDING_EVENTS, day)]


def landed_catalog(config, day) -> dict[str, dict]:
    rows = [json.loads(line) for line in landed_lines(config, schema.LANDING_CATALOG, day)]
    return {row[schema.ITEM_ID]: row for row in rows}


def event(event_time, event_type, user_id, session_id, item_id, price=None) -> dict:
    """A canonical record without its event_id (content-derived: checked by pattern)."""
    return {"event_time": event_time, "event_type": event_type, "user_id": user_id,
            "session_id": session_id, "item_id": item_id, "query": None, "price": price}


def without_id(record: dict) -> dict:
    assert EVENT_ID.match(record["event_id"]), record["event_id"]
    return {key: value for key, value in record.items() if key != "event_id"}


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


REES46_HEADER = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"


# --- every adapter on its real sample -------------------------------------------------------

@needs_shared_data
def test_rees46_sample_lands_every_row_with_the_documented_mapping(tmp_config):
    landed = sources.land_source(tmp_config, "rees46", SHARED / "rees46" / "2019-Oct-sample.csv")

    assert landed == {"2019-10-01": 1000}  # 1,000 rows, all in the first minutes of Oct 1st (UTC)
    events = landed_events(tmp_config, "2019-10-01")
    # Line 2: 2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde-...
    assert without_id(events[0]) == event("2019-10-01T00:00:00.000Z", "view", "541312140",
                                          "72d76fde-8bb3-4e00-8c23-a032dfed738c", "44600062", 35.79)
    # Line 585: 2019-10-01 00:09:33 UTC,cart,1002524,...,apple,515.67,524325294,0b74a829-...
    assert without_id(events[583]) == event("2019-10-01T00:09:33.000Z", "add_to_cart", "524325294",
                                            "0b74a829-f9d7-4654-b5b0-35bc9822c238", "1002524", 515.67)
    # `cut -d, -f2 | sort | uniq -c`: 987 view, 3 cart, 10 purchase.
    assert collections.Counter(e["event_type"] for e in events) == {"view": 987, "add_to_cart": 3, "purchase": 10}
    catalog = landed_catalog(tmp_config, "2019-10-01")
    assert catalog["1002524"] == {"item_id": "1002524", "category": "2053013555631882655", "brand": "apple",
                                  "price": 515.67, "title": "electronics smartphone"}
    # Line 17: 23100006 has no category_code and no brand.
    assert catalog["23100006"] == {"item_id": "23100006", "category": "2053013561638126333", "brand": None,
                                   "price": 357.79, "title": None}


@needs_shared_data
def test_taobao_sample_lands_every_row_on_its_utc_date(tmp_config):
    landed = sources.land_source(tmp_config, "taobao", SHARED / "taobao" / "UserBehavior.csv")

    # Dates of the 4,321 unix times (`date -u`): one stray 2017-09-11 row, then Nov 24 - Dec 3.
    assert landed == {"2017-09-11": 1, "2017-11-24": 52, "2017-11-25": 388, "2017-11-26": 403,
                      "2017-11-27": 469, "2017-11-28": 422, "2017-11-29": 456, "2017-11-30": 520,
                      "2017-12-01": 500, "2017-12-02": 549, "2017-12-03": 561}
    events = [e for day in landed for e in landed_events(tmp_config, day)]
    # behavior counts: 3926 pv, 190 cart, 128 fav, 77 buy; fav joins cart as add_to_cart.
    assert collections.Counter(e["event_type"] for e in events) == {"view": 3926, "add_to_cart": 318, "purchase": 77}
    by_content = {(e["user_id"], e["item_id"], e["event_time"]): e for e in events}
    # Line 1: 1,2268318,2520377,pv,1511544070 (= Fri Nov 24 17:21:10 UTC 2017); no session.
    assert without_id(by_content["1", "2268318", "2017-11-24T17:21:10.000Z"]) == event(
        "2017-11-24T17:21:10.000Z", "view", "1", None, "2268318")
    # Line 65: 100,3763048,3425094,fav,1511551860 (= 19:31:00 UTC).
    assert by_content["100", "3763048", "2017-11-24T19:31:00.000Z"]["event_type"] == "add_to_cart"
    assert landed_catalog(tmp_config, "2017-11-24")["2268318"] == {
        "item_id": "2268318", "category": "2520377", "brand": None, "price": None, "title": None}


@needs_shared_data
def test_yoochoose_sample_lands_sessions_as_users(tmp_config):
    landed = sources.land_source(tmp_config, "yoochoose", SHARED / "yoochoose-100k" / "yoochoose-clicks-100k_test.txt")

    assert landed == {"2014-04-07": 13559, "2014-04-08": 9}  # 13,568 rows (`date -u` of each Time)
    events = landed_events(tmp_config, "2014-04-07")
    # Lines 2-3: 1<TAB>214536502<TAB>1396860669.277 and 1<TAB>214536506<TAB>1396860886.998
    assert [without_id(e) for e in events[:2]] == [
        event("2014-04-07T08:51:09.277Z", "click", "session-1", "1", "214536502"),
        event("2014-04-07T08:54:46.998Z", "click", "session-1", "1", "214536506")]
    assert {e["event_type"] for e in events} == {"click"}


@needs_shared_data
def test_diginetica_sample_keeps_every_view_and_purchase(tmp_config):
    folder = SHARED / "diginetica"
    reports = []
    rows = sum(len(chunk) for chunk in sources.map_source("diginetica", folder, reports))
    # 12,391 view rows (12,392 lines with the header, no final newline) + 18,025 purchase rows.
    assert rows == 12391 + 18025 == sum(report.rows for report in reports)

    landed = sources.land_source(tmp_config, "diginetica", folder, dates=["2016-05-06", "2016-05-09"])
    assert set(landed) == {"2016-05-06", "2016-05-09"}
    views = {(e["session_id"], e["item_id"]): e for e in landed_events(tmp_config, "2016-05-09")}
    # Views line 2: 1;NA;81766;526309;2016-05-09 -> 526,309 ms after midnight; NA user -> the session.
    assert without_id(views["1", "81766"]) == event("2016-05-09T00:08:46.309Z", "view", "session-1", "1", "81766")
    purchases = {(e["session_id"], e["item_id"]): e for e in landed_events(tmp_config, "2016-05-06")}
    # Purchases line 2: 150;18278;17100868;2016-05-06;16421;25911 -> 17,100,868 ms = 04:45:00.868.
    assert without_id(purchases["150", "25911"]) == event(
        "2016-05-06T04:45:00.868Z", "purchase", "18278", "150", "25911")
    # product-categories.csv: 81766;1010 and 25911;822.
    assert landed_catalog(tmp_config, "2016-05-09")["81766"]["category"] == "1010"
    assert landed_catalog(tmp_config, "2016-05-06")["25911"]["category"] == "822"


@needs_shared_data
def test_online_retail_sample_maps_every_invoice_line(tmp_config):
    path = SHARED / "online-retail" / "retail_session.parquet.snappy"
    kinds = collections.Counter()
    picked = {}
    offset = 0
    for chunk in sources.map_source("online_retail", path):
        kinds.update(chunk[schema.EVENT_TYPE])
        for row in (0, 141, 622, 2406, 209029, 299983):  # source row positions, found with pandas
            if offset <= row < offset + len(chunk):
                picked[row] = chunk.iloc[row - offset]
        offset += len(chunk)

    assert offset == 541909
    # 9,288 lines of C-invoices; 1,336 other lines with quantity <= 0; the rest are purchases.
    assert kinds == {"purchase": 541909 - 9288 - 1336, "cancellation": 9288, "stock_adjustment": 1336}

    def mapped(row):
        return {name: picked[row][name] for name in schema.RAW_EVENT_FIELDS if name != schema.EVENT_ID}

    # 536365 85123A WHITE HANGING HEART T-LIGHT HOLDER 6 2010-12-01 08:26:00 2.55 17850.0 (GMT = UTC)
    assert mapped(0) == event("2010-12-01T08:26:00.000Z", "purchase", "17850", "536365", "85123A", 2.55)
    assert picked[0][schema.TITLE] == "WHITE HANGING HEART T-LIGHT HOLDER"
    # C536379 D Discount -1 2010-12-01 09:41:00 27.5 14527.0
    assert mapped(141) == event("2010-12-01T09:41:00.000Z", "cancellation", "14527", "C536379", "D", 27.5)
    # 536414 22139 None 56 2010-12-01 11:52:00 0.0 NaN: a guest line, the invoice is the user
    assert mapped(622) == event("2010-12-01T11:52:00.000Z", "purchase", "invoice-536414", "536414", "22139", 0.0)
    # 536589 21777 None -10 2010-12-01 16:50:00 0.0 NaN
    assert mapped(2406)[schema.EVENT_TYPE] == "stock_adjustment"
    # 555156 23299 ... 6 2011-06-01 07:37:00 3.75 15643.0: London summer time, one hour ahead of UTC
    assert mapped(209029) == event("2011-06-01T06:37:00.000Z", "purchase", "15643", "555156", "23299", 3.75)
    # A563186 B Adjust bad debt 1 2011-08-12 14:51:00 -11062.06 NaN: kept, clean says bad_price
    assert mapped(299983) == event("2011-08-12T13:51:00.000Z", "purchase", "invoice-A563186", "A563186", "B",
                                   -11062.06)


# --- mapping rules on hand-made files -------------------------------------------------------

def test_catalog_lists_items_seen_so_far_with_their_latest_attributes(tmp_path, tmp_config):
    source = write(tmp_path / "events.csv", REES46_HEADER + (
        "2019-10-01 09:00:00 UTC,view,A,11,shoes.sport,nike,10.00,u1,s1\n"
        "2019-10-01 10:00:00 UTC,view,A,11,shoes.sport,,11.00,u1,s1\n"     # no brand: nike stays
        "2019-10-02 08:00:00 UTC,view,B,12,,acme,5.00,u2,s2\n"
        "2019-10-02 09:00:00 UTC,purchase,A,11,shoes.sport,nike,12.50,u1,s3\n"
        "2019-10-02 09:30:00 UTC,view,A,11,shoes.sport,nike,-1,u1,s3\n"))  # a bad price is no price
    assert sources.land_source(tmp_config, "rees46", source) == {"2019-10-01": 2, "2019-10-02": 3}

    # Oct 1st: only A (B appears the next day), at its last price that day, 11.00.
    assert landed_catalog(tmp_config, "2019-10-01") == {
        "A": {"item_id": "A", "category": "11", "brand": "nike", "price": 11.0, "title": "shoes sport"}}
    assert landed_catalog(tmp_config, "2019-10-02") == {
        "A": {"item_id": "A", "category": "11", "brand": "nike", "price": 12.5, "title": "shoes sport"},
        "B": {"item_id": "B", "category": "12", "brand": "acme", "price": 5.0, "title": None}}
    assert landed_events(tmp_config, "2019-10-02")[2]["price"] == -1.0  # the event keeps it for clean


def test_rows_that_cannot_be_mapped_still_land_for_clean_to_quarantine(tmp_path, tmp_config):
    source = write(tmp_path / "events.csv", REES46_HEADER + (
        "2019-10-01 09:00:00 UTC,remove_from_cart,A,11,,,10.00,u1,s1\n"   # unknown_event_type
        "2019-10-01 09:00:01 UTC,view,A,11,,,ten,u1,s1\n"                # bad_price
        "2019-10-01 09:00:02 UTC,view,,11,,,10.00,u1,s1\n"               # missing_key (item)
        "yesterday,view,A,11,,,10.00,u1,s1\n"                            # bad_timestamp
        "2019-10-01 09:00:03 UTC,view,A,11\n"))                          # malformed_json (4 fields)

    assert sources.land_source(tmp_config, "rees46", source) == {"2019-10-01": 5}
    lines = landed_lines(tmp_config, schema.LANDING_EVENTS, "2019-10-01")
    records = [json.loads(line) for line in lines[:4]]
    assert records[0]["event_type"] == "remove_from_cart"
    assert records[1]["price"] == "ten"
    assert records[2]["item_id"] is None
    assert records[3]["event_time"] == "yesterday"  # on the day of the row before it
    assert lines[4] == "2019-10-01 09:00:03 UTC,view,A,11"  # verbatim: not JSON


def test_rows_without_a_usable_time_land_beside_their_neighbours(tmp_path, tmp_config):
    # 1511544070 = 2017-11-24T17:21:10Z, 1511654400 = 2017-11-26T00:00:00Z
    source = write(tmp_path / "UserBehavior.csv",
                   "1,10,100,pv,never\n"         # before any dated row: the first dated row's day
                   "1,11,100,fav,1511544070\n"
                   "2,12,100,buy,1511654400\n"
                   "2,13,100,pv,-5\n"            # before the epoch: unusable, the previous row's day
                   "2,14,100,clicked,1511654400\n")
    assert sources.land_source(tmp_config, "taobao", source) == {"2017-11-24": 2, "2017-11-26": 3}
    assert [without_id(e) for e in landed_events(tmp_config, "2017-11-24")] == [
        event("never", "view", "1", None, "10"), event("2017-11-24T17:21:10.000Z", "add_to_cart", "1", None, "11")]
    assert [without_id(e) for e in landed_events(tmp_config, "2017-11-26")] == [
        event("2017-11-26T00:00:00.000Z", "purchase", "2", None, "12"), event("-5", "view", "2", None, "13"),
        event("2017-11-26T00:00:00.000Z", "clicked", "2", None, "14")]
    # Only timed rows of a canonical type make catalog entries: 10 (no time) and 14 (type) do not.
    assert sorted(landed_catalog(tmp_config, "2017-11-26")) == ["11", "12"]


def test_online_retail_line_kinds_on_a_hand_made_file(tmp_path, tmp_config):
    lines = pd.DataFrame({
        "InvoiceNo": ["536365", "C536366", "536367", "536368", "536369"],
        "StockCode": ["85123A", "85123A", "22139", "21777", "B"],
        "Description": ["HEART HOLDER", "HEART HOLDER", None, "damaged", "Adjust bad debt"],
        "Quantity": [6, -6, 2, -10, 1],
        "InvoiceDate": pd.to_datetime(["2011-06-01 07:37", "2011-06-01 08:00", "2011-06-01 09:00",
                                       "2011-06-01 10:00", "2011-06-01 11:00"]),
        "UnitPrice": [2.55, 2.55, 1.0, 0.0, -5.0],
        "CustomerID": [17850.0, 17850.0, None, None, None],
        "Country": ["United Kingdom"] * 5})
    path = tmp_path / "retail.parquet"
    lines.to_parquet(path, index=False)

    assert sources.land_source(tmp_config, "online_retail", path) == {"2011-06-01": 5}
    # June: London is UTC+1, so 07:37 local is 06:37Z.
    assert [without_id(e) for e in landed_events(tmp_config, "2011-06-01")] == [
        event("2011-06-01T06:37:00.000Z", "purchase", "17850", "536365", "85123A", 2.55),
        event("2011-06-01T07:00:00.000Z", "cancellation", "17850", "C536366", "85123A", 2.55),
        event("2011-06-01T08:00:00.000Z", "purchase", "invoice-536367", "536367", "22139", 1.0),
        event("2011-06-01T09:00:00.000Z", "stock_adjustment", "invoice-536368", "536368", "21777", 0.0),
        event("2011-06-01T10:00:00.000Z", "purchase", "invoice-536369", "536369", "B", -5.0)]
    # The "damaged" adjustment names no item; the bad-debt line's negative price is no price.
    assert landed_catalog(tmp_config, "2011-06-01") == {
        "85123A": {"item_id": "85123A", "category": None, "brand": None, "price": 2.55, "title": "HEART HOLDER"},
        "22139": {"item_id": "22139", "category": None, "brand": None, "price": 1.0, "title": None},
        "B": {"item_id": "B", "category": None, "brand": None, "price": None, "title": "Adjust bad debt"}}


def test_a_repeated_source_row_lands_as_an_identical_line(tmp_path, tmp_config):
    row = "1\t214536502\t1396860669.277\n"
    source = write(tmp_path / "clicks.txt", "SessionId\tItemId\tTime\n" + row + row + "1\t214536502\t1396860669.278\n")
    sources.land_source(tmp_config, "yoochoose", source)
    first, copy, later = landed_lines(tmp_config, schema.LANDING_EVENTS, "2014-04-07")
    assert first == copy != later  # clean quarantines the copy as exact_duplicate
    assert json.loads(first)["event_id"] != json.loads(later)["event_id"]


def test_landing_is_deterministic_gzip_and_limited_to_the_asked_dates(tmp_path, tmp_config):
    source = write(tmp_path / "UserBehavior.csv", "1,10,100,pv,1511544070\n2,11,100,pv,1511654400\n")
    folder = Path(partition_path(tmp_config, schema.LANDING_EVENTS, "2017-11-26"))

    assert sources.land_source(tmp_config, "taobao", source, dates=["2017-11-26", "2017-11-27"]) == {"2017-11-26": 1}
    first = (folder / sources.EVENTS_FILE).read_bytes()
    assert sources.land_source(tmp_config, "taobao", source, dates=["2017-11-26"]) == {"2017-11-26": 1}
    assert (folder / sources.EVENTS_FILE).read_bytes() == first
    assert first[4:8] == b"\x00\x00\x00\x00"  # gzip header mtime 0
    assert not Path(partition_path(tmp_config, schema.LANDING_EVENTS, "2017-11-24")).exists()
    # Catalog of Nov 26th lists item 10 from Nov 24th too: items stay once seen.
    assert sorted(landed_catalog(tmp_config, "2017-11-26")) == ["10", "11"]


def test_a_gzip_source_reads_like_the_plain_file(tmp_path, tmp_config):
    text = "1,10,100,pv,1511544070\n"
    plain_config, gz_config = {"lake_root": str(tmp_path / "a")}, {"lake_root": str(tmp_path / "b")}
    with gzip.open(tmp_path / "UserBehavior.csv.gz", "wt") as handle:
        handle.write(text)
    sources.land_source(plain_config, "taobao", write(tmp_path / "UserBehavior.csv", text))
    sources.land_source(gz_config, "taobao", tmp_path / "UserBehavior.csv.gz")
    assert landed_lines(plain_config, schema.LANDING_EVENTS, "2017-11-24") == landed_lines(
        gz_config, schema.LANDING_EVENTS, "2017-11-24")


def test_non_utf8_bytes_are_replaced_counted_and_reported(tmp_path, tmp_config, capsys):
    source = tmp_path / "events.csv"
    source.write_bytes(REES46_HEADER.encode() + b"2019-10-01 09:00:00 UTC,view,A,11,,caf\xe9,10.00,u1,s1\n"
                       + b"2019-10-01 09:00:01 UTC,view,B,11,,acme,10.00,u1,s1\n")
    reports = []
    assert sum(len(chunk) for chunk in sources.map_source("rees46", source, reports)) == 2
    assert (reports[0].undecodable_rows, reports[0].first_undecodable_line) == (1, 2)

    assert sources.land_source(tmp_config, "rees46", source) == {"2019-10-01": 2}
    assert landed_catalog(tmp_config, "2019-10-01")["A"]["brand"] == "caf\ufffd"
    assert f"{source}: 1 line(s) are not valid UTF-8 (first: line 2)" in capsys.readouterr().out


# --- bad input: a clear error naming the file and the problem -------------------------------

def _truncated_gzip(path: Path) -> Path:
    data = gzip.compress(("SessionId\tItemId\tTime\n" + "1\t2\t1396860669.277\n" * 500).encode(), mtime=0)
    path.write_bytes(data[: len(data) // 2])
    return path


BAD_INPUTS = {
    "empty file": ("rees46", lambda tmp: write(tmp / "e.csv", ""), "the file is empty"),
    "header only": ("rees46", lambda tmp: write(tmp / "e.csv", REES46_HEADER), "no data rows below the header"),
    "changed column set": ("rees46", lambda tmp: write(tmp / "e.csv", REES46_HEADER.replace(",brand", "") + "x\n"),
                           r"column set changed \(missing \['brand'\]"),
    "wrong delimiter": ("rees46", lambda tmp: write(tmp / "e.csv", REES46_HEADER.replace(",", ";")),
                        "looks semicolon-separated, but REES46 events files are comma-separated"),
    "wrong delimiter, no header": ("taobao", lambda tmp: write(tmp / "u.csv", "1\t2\t3\tpv\t1511544070\n"),
                                   "looks tab-separated, but Taobao UserBehavior files are comma-separated"),
    "taobao with another column set": ("taobao", lambda tmp: write(tmp / "u.csv", "1,2,pv,1511544070\n"),
                                       r"line 1 has 4 field\(s\) but Taobao UserBehavior rows have 5"),
    "truncated gzip": ("yoochoose", lambda tmp: _truncated_gzip(tmp / "c.txt.gz"), "truncated gzip file"),
    "not gzip": ("yoochoose", lambda tmp: write(tmp / "c.txt.gz", "SessionId\tItemId\tTime\n"),
                 "not a readable gzip file"),
    "parquet column set": ("online_retail", lambda tmp: _parquet(tmp, rename={"UnitPrice": "Price"}),
                           "the column set changed"),
    "not parquet": ("online_retail", lambda tmp: write(tmp / "r.parquet", "InvoiceNo,StockCode\n"),
                    "not a readable Parquet file"),
    "diginetica file instead of folder": ("diginetica", lambda tmp: write(tmp / "views.csv", "x\n"),
                                          "the diginetica source is the folder"),
    "missing source": ("taobao", lambda tmp: tmp / "nowhere.csv", "the taobao source does not exist"),
    "no usable time anywhere": ("taobao", lambda tmp: write(tmp / "u.csv", "1,2,3,pv,soon\n"),
                                "none of the 1 source rows has a usable time"),
}


def _parquet(tmp: Path, rename: dict) -> Path:
    frame = pd.DataFrame({name: ["1"] for name in sources.ONLINE_RETAIL_COLUMNS}).rename(columns=rename)
    frame.to_parquet(tmp / "r.parquet", index=False)
    return tmp / "r.parquet"


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_clear_error_naming_the_file(case, tmp_path, tmp_config):
    source_format, make, message = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(sources.SourceError, match=message) as raised:
        sources.land_source(tmp_config, source_format, path)
    if case != "no usable time anywhere":  # the whole source, not one file
        assert str(path) in str(raised.value)
    assert not Path(tmp_config["lake_root"], schema.LANDING_EVENTS).exists() or not any(
        Path(tmp_config["lake_root"], schema.LANDING_EVENTS).iterdir())  # nothing half-landed


def test_unknown_format_names_the_known_ones(tmp_config):
    with pytest.raises(ValueError, match=r"unknown source format 'csv'.*'rees46'"):
        sources.land_source(tmp_config, "csv", "anything")


# --- the project's own format ---------------------------------------------------------------

def test_fusionrec_passthrough_copies_checked_partitions(tmp_path, tmp_config):
    source_root = tmp_path / "export"
    for dataset, name, lines in ((schema.LANDING_EVENTS, "events-00000.jsonl.gz", "{}\n{}\n{}\n"),
                                 (schema.LANDING_CATALOG, "catalog.jsonl.gz", '{"item_id":"i1"}\n')):
        for day in ("2026-05-01", "2026-05-02"):
            folder = source_root / dataset / f"dt={day}"
            folder.mkdir(parents=True)
            (folder / name).write_bytes(gzip.compress(lines.encode()))

    assert sources.land_source(tmp_config, "fusionrec", source_root, dates=["2026-05-02"]) == {"2026-05-02": 3}
    assert len(landed_lines(tmp_config, schema.LANDING_EVENTS, "2026-05-02")) == 3
    assert landed_lines(tmp_config, schema.LANDING_CATALOG, "2026-05-02") == ['{"item_id":"i1"}']
    assert not Path(partition_path(tmp_config, schema.LANDING_EVENTS, "2026-05-01")).exists()

    broken = source_root / schema.LANDING_EVENTS / "dt=2026-05-01" / "events-00000.jsonl.gz"
    broken.write_bytes(broken.read_bytes()[:-6])
    with pytest.raises(sources.SourceError, match=f"{broken}: truncated gzip file"):
        sources.land_source(tmp_config, "fusionrec", source_root)
