"""Bad input at job level: each defect ends in one clear error line or in quarantine rows.

The defects of the issue (an empty day, a truncated gzip file, a changed column set, a wrong
delimiter, non-UTF-8 bytes) are fed to the stages as the DAG runs them (jobs.pipeline.run_stage)
or, for public formats, to ingest with a configured source. A clear error is one line that
names the file, the column or the rule; never a Java stack trace as the only message.
"""

import gzip
import json
from pathlib import Path

import pytest

from jobs.common.night import Night
from jobs.etl import ingest
from jobs.common import schema
from jobs.common.lake import partition_path
from jobs.common.schema import RAW_CATALOG, RAW_EVENTS, REASON_MALFORMED, REASON_MISSING_KEY
from jobs.etl.sources import SourceError
from jobs.common.spark_io import UnreadableFileError, quarantine_partition_path
from jobs.pipeline import run_night_stage

DAY = "2026-11-27"
REES46_HEADER = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
REES46_ROW = ("2019-10-01 00:00:05 UTC,view,1004237,2053013555631882655,electronics.smartphone,apple,1081.98,"
              "535871217,s1")


def event(event_id, time="2026-11-27T10:00:00Z", event_type="view", user="u1", item="i1", price=10.0) -> dict:
    return {"event_id": event_id, "event_time": time, "event_type": event_type, "user_id": user,
            "session_id": "s1", "item_id": item, "query": None, "price": price}


GOOD_LINES = [json.dumps(event(f"e{n}", f"2026-11-27T1{n}:00:00Z")) for n in range(4)]


def gzip_lines(lines) -> bytes:
    return gzip.compress(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))


def land_raw(config, ds, files: dict, catalog: bytes | None = None) -> Path:
    """raw/events/dt=ds/<name> = bytes for each file, and a catalog of i1, i2 (or the bytes given)."""
    folder = Path(partition_path(config, RAW_EVENTS, ds))
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    catalog_folder = Path(partition_path(config, RAW_CATALOG, ds))
    catalog_folder.mkdir(parents=True, exist_ok=True)
    (catalog_folder / "catalog.jsonl.gz").write_bytes(
        catalog if catalog is not None else gzip_lines([json.dumps({"item_id": item}) for item in ("i1", "i2")]))
    return folder


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def run_clean(config, dates=(DAY,)):
    return run_night_stage("clean", Night.plan(config, DAY, list(dates)))


def quarantined_reasons(spark, config, ds=DAY) -> list[str]:
    return sorted(row.reason for row in spark.read.parquet(quarantine_partition_path(config, "clean", ds)).collect())


def assert_one_clear_line(error: BaseException, *fragments: str) -> None:
    message = str(error)
    assert "\n" not in message and "at org.apache" not in message and "Py4J" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    # No Java trace chained under it either (a traceback would print it above the message).
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


# --- An empty day ---------------------------------------------------------------------------------

def test_nothing_landed_for_the_night_names_the_folder(tmp_config):
    config = dict(tmp_config, window_days=1)
    with pytest.raises(FileNotFoundError, match=f"no landed files matching \\*.jsonl.gz for {DAY} in "
                                                f".*{schema.LANDING_EVENTS}/dt={DAY}"):
        ingest.run(Night.plan(config, DAY))


@pytest.mark.parametrize("files", [{"events-00000.jsonl.gz": gzip_lines([])}, {"README.txt": b"no events\n"}],
                         ids=["an empty gzip file", "no event file"])
def test_clean_of_an_empty_day_names_the_date_and_folder(spark, tmp_config, files):
    land_raw(tmp_config, DAY, files)
    with pytest.raises(ValueError) as raised:
        run_clean(tmp_config)
    assert_one_clear_line(raised.value, f"no lines in *.jsonl.gz files under {tmp_config['lake_root']}/raw/events "
                                        f"for ['{DAY}']")


# --- A truncated gzip file ------------------------------------------------------------------------

def test_clean_of_a_truncated_gzip_names_the_file_in_one_line(spark, tmp_config):
    # Spark reads lazily: without jobs.common.spark_io.readable_read_errors this is a Py4JJavaError
    # whose message is a Java stack trace ending in java.io.EOFException.
    many = [json.dumps(event(f"e{n}", f"2026-11-27T10:{n % 60:02d}:00Z")) for n in range(3000)]
    land_raw(tmp_config, DAY, {"events-00000.jsonl.gz": gzip_lines(GOOD_LINES),
                               "events-00001.jsonl.gz": truncated(gzip_lines(many))})
    with pytest.raises(UnreadableFileError) as raised:
        run_clean(tmp_config)
    assert_one_clear_line(raised.value, f"cannot read {tmp_config['lake_root']}/"
                          f"raw/events/dt={DAY}/events-00001.jsonl.gz: the gzip stream ends early: a truncated "
                          f"copy, or not gzip at all (java.io.EOFException: Unexpected end of input stream)",
                          "land the file again")
    assert isinstance(raised.value, ValueError)


def test_a_truncated_catalog_or_a_file_that_is_not_gzip_is_named_too(spark, tmp_config):
    catalog = gzip_lines([json.dumps({"item_id": f"i{n}"}) for n in range(3000)])
    land_raw(tmp_config, DAY, {"events-00000.jsonl.gz": gzip_lines(GOOD_LINES)}, catalog=truncated(catalog))
    with pytest.raises(UnreadableFileError) as raised:
        run_clean(tmp_config)
    assert_one_clear_line(raised.value, f"raw/catalog/dt={DAY}/catalog.jsonl.gz: the gzip stream ends early")

    land_raw(tmp_config, "2026-11-28", {"events-00000.jsonl.gz": "\n".join(GOOD_LINES).encode()})  # not compressed
    with pytest.raises(UnreadableFileError) as raised:
        run_clean(tmp_config, ["2026-11-28"])
    assert_one_clear_line(raised.value, "raw/events/dt=2026-11-28/events-00000.jsonl.gz: not a gzip file, although "
                                        "its name ends in .gz (java.io.IOException: not a gzip file)")


def test_other_spark_errors_pass_through_unchanged():
    from jobs.common.spark_io import readable_read_errors

    with pytest.raises(RuntimeError, match="^something else$"):
        with readable_read_errors():
            raise RuntimeError("something else")


# --- Validate stops the night on each defect, naming file, column and rule ------------------------

def test_validate_names_file_column_and_rule_of_every_defect(tmp_config):
    renamed = [json.dumps({("timestamp" if key == "event_time" else key): value for key, value in
                           event(f"r{n}", f"2026-11-27T1{n}:00:00Z").items()}) for n in range(4)]
    latin1 = [line.encode().replace(b'"u1"', b'"ren\xe9"') for line in GOOD_LINES]  # Latin-1 e-acute
    land_raw(tmp_config, "2026-11-24", {"empty.jsonl.gz": gzip_lines([])})
    land_raw(tmp_config, "2026-11-25", {"cut.jsonl.gz": truncated(gzip_lines(GOOD_LINES * 200))})
    land_raw(tmp_config, "2026-11-26", {"renamed.jsonl.gz": gzip_lines(renamed)})
    land_raw(tmp_config, DAY, {"latin1.jsonl.gz": gzip_lines(latin1)})
    dates = ["2026-11-24", "2026-11-25", "2026-11-26", DAY]

    with pytest.raises(ValueError) as raised:
        run_night_stage("validate", Night.plan(tmp_config, DAY, dates))

    violations = str(raised.value).splitlines()[1:]
    assert [line.split(" rule ")[0].strip() for line in violations] == [
        "[dt=2026-11-24]",
        "[dt=2026-11-25, file cut.jsonl.gz]",
        "[dt=2026-11-26, column event_time]",
        f"[dt={DAY}, file latin1.jsonl.gz]",
    ]
    assert "rule no_lines: observed 0" in violations[0]
    assert "rule unreadable_gzip" in violations[1] and "EOFError" in violations[1]
    assert "rule required_field_missing: observed 1" in violations[2]
    assert "unexpected keys seen: timestamp" in violations[2]
    assert "rule non_utf8_share: observed 1, threshold 0.01" in violations[3]


# --- A changed column set: quarantined line by line in clean, an error at the source --------------

def test_clean_quarantines_every_line_of_a_renamed_column_and_loses_none(spark, tmp_config):
    # event_time renamed to timestamp: each line lacks a required key (rule 2, missing_key).
    renamed = [json.dumps({("timestamp" if key == "event_time" else key): value for key, value in
                           event(f"r{n}").items()}) for n in range(3)]
    land_raw(tmp_config, DAY, {"events-00000.jsonl.gz": gzip_lines(renamed + GOOD_LINES[:1])})

    summary = run_clean(tmp_config)["summary"][DAY]

    assert (summary["raw_lines"], summary["clean"], summary["quarantined"]) == (4, 1, 3)
    assert quarantined_reasons(spark, tmp_config) == [REASON_MISSING_KEY] * 3


def write_source(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def ingest_source(tmp_config, source_format, path):
    config = dict(tmp_config, window_days=1, source={"format": source_format, "path": str(path)})
    return ingest.run(Night.plan(config, "2019-10-01"))


@pytest.mark.parametrize("header, expected", [
    (REES46_HEADER.replace("product_id", "item_id"), "missing ['product_id'], unexpected ['item_id']"),
    (REES46_HEADER.replace(",brand", ""), "missing ['brand'], unexpected []"),
], ids=["renamed column", "missing column"])
def test_a_source_csv_with_another_column_set_names_the_file_and_columns(tmp_path, tmp_config, header, expected):
    path = write_source(tmp_path, "2019-Oct.csv", header + "\n" + REES46_ROW + "\n")
    with pytest.raises(SourceError) as raised:
        ingest_source(tmp_config, "rees46", path)
    assert_one_clear_line(raised.value, str(path), "the column set changed", expected)


# --- A wrong delimiter ----------------------------------------------------------------------------

@pytest.mark.parametrize("source_format, name, text, expected", [
    ("rees46", "2019-Oct.csv", f"{REES46_HEADER}\n{REES46_ROW}\n".replace(",", ";"),
     "the file looks semicolon-separated, but REES46 events files are comma-separated"),
    ("taobao", "UserBehavior.csv", "1;10;100;pv;1569888005\n",
     "the file looks semicolon-separated, but Taobao UserBehavior files are comma-separated"),
], ids=["rees46", "taobao"])
def test_a_source_written_with_another_delimiter_names_the_file_and_both_delimiters(
        tmp_path, tmp_config, source_format, name, text, expected):
    path = write_source(tmp_path, name, text)
    with pytest.raises(SourceError) as raised:
        ingest_source(tmp_config, source_format, path)
    assert_one_clear_line(raised.value, str(path), expected)


def test_a_row_with_another_delimiter_in_a_good_file_lands_and_is_quarantined(spark, tmp_path, tmp_config):
    # Line 3 is one row written with ';': it lands verbatim (not JSON), so clean quarantines it.
    path = write_source(tmp_path, "2019-Oct.csv", f"{REES46_HEADER}\n{REES46_ROW}\n{REES46_ROW.replace(',', ';')}\n")
    result = ingest_source(tmp_config, "rees46", path)
    assert result["landed_from_source"] == {"2019-10-01": 2}

    summary = run_night_stage("clean", Night.plan(tmp_config, "2019-10-01", result["dates"]))["summary"]["2019-10-01"]

    assert (summary["raw_lines"], summary["clean"], summary["reasons"]) == (2, 1, {REASON_MALFORMED: 1})
    quarantine = spark.read.parquet(quarantine_partition_path(tmp_config, "clean", "2019-10-01")).collect()
    assert [row.record for row in quarantine] == [REES46_ROW.replace(",", ";")]
