"""Pure helpers of jobs/common/spark_io.py on tiny hand-made inputs."""

import gzip
import json

import pytest

from jobs.common import spark_io
from jobs.common.schema import DT, REASON

DS1, DS2 = "2026-11-26", "2026-11-27"


def read_error(uri: str, cause: str | None) -> Exception:
    """A Spark 4 read failure as Py4J shows it: the error class, the file URI, then the Java causes."""
    text = (f"An error occurred while calling o42.count.\n: org.apache.spark.SparkException: "
            f"[FAILED_READ_FILE.NO_HINT] Encountered error while reading file {uri}. SQLSTATE: KD001\n"
            f"\tat org.apache.spark.sql.errors.QueryExecutionErrors$.cannotReadFilesError(...)\n")
    if cause:
        text += f"Caused by: java.lang.RuntimeException: wrapper\nCaused by: {cause}\n\tat java.base/...\n"
    return RuntimeError(text)


def test_validate_dates_checks_each_and_drops_repeats_in_order():
    assert spark_io.validate_dates([DS2, DS1, DS2]) == [DS2, DS1]
    with pytest.raises(ValueError, match="no dates given"):
        spark_io.validate_dates([])
    with pytest.raises(ValueError, match="got '2026-02-30'"):
        spark_io.validate_dates([DS1, "2026-02-30"])


def test_check_conservation_accepts_kept_plus_quarantined_equal_to_input():
    # DS1: 5 = 3 + 2; DS2: 4 = 4 + 0 (no quarantine entry at all counts as 0).
    spark_io.check_conservation("clean", {DS1: 5, DS2: 4}, {DS1: 3, DS2: 4}, {DS1: 2})


def test_check_conservation_names_the_stage_date_and_counts_of_a_lost_row():
    with pytest.raises(RuntimeError, match=f"^denoise {DS2}: 4 input rows but 2 kept \\+ 1 quarantined = 3 on disk$"):
        spark_io.check_conservation("denoise", {DS1: 1, DS2: 4}, {DS1: 1, DS2: 2}, {DS2: 1})


def test_count_outcomes_splits_kept_rows_and_reasons_per_date(spark):
    labeled = spark.createDataFrame(
        [(DS1, None), (DS1, None), (DS1, "bot_user"), (DS1, "malformed_json"), (DS1, "bot_user")],
        f"{DT} string, {REASON} string")
    # DS1: 2 kept, bot_user 2, malformed_json 1; DS2 has no rows at all.
    assert spark_io.count_outcomes(labeled, [DS1, DS2]) == {
        DS1: {"kept": 2, "reasons": {"bot_user": 2, "malformed_json": 1}},
        DS2: {"kept": 0, "reasons": {}}}


def test_count_by_date_counts_each_partition_and_a_missing_one_as_zero(spark, tmp_config):
    frame = spark.createDataFrame([("a", DS1), ("b", DS1), ("c", DS2)], f"x string, {DT} string")
    spark_io.write_partitions(frame, tmp_config, "tests/counted")
    assert spark_io.count_by_date(spark, tmp_config, "tests/counted", [DS1, DS2, "2026-11-28"]) == {
        DS1: 2, DS2: 1, "2026-11-28": 0}


def test_union_all_matches_columns_by_name(spark):
    first = spark.createDataFrame([(1, "a")], "n int, s string")
    second = spark.createDataFrame([("b", 2)], "s string, n int")
    assert [tuple(row) for row in spark_io.union_all([first, second]).collect()] == [(1, "a"), (2, "b")]


def test_parsed_price_is_a_double_or_null(spark):
    frame = spark.createDataFrame([("12.5",), ("abc",), (None,), ("-3",)], "price string")
    assert [row[0] for row in frame.select(spark_io.parsed_price()).collect()] == [12.5, None, None, -3.0]


def test_a_truncated_gzip_becomes_one_line_naming_the_file(spark, tmp_path):
    data = gzip.compress("\n".join(json.dumps({"n": n}) for n in range(3000)).encode())
    path = tmp_path / "events-00000.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(spark_io.UnreadableFileError) as raised:
        with spark_io.readable_read_errors():
            spark.read.text(str(path)).count()
    assert str(raised.value) == (f"cannot read {path}: the gzip stream ends early: a truncated copy, or not gzip at "
                                 f"all (java.io.EOFException: Unexpected end of input stream); land the file "
                                 f"again, then re-run the date")
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_unreadable_file_error_decodes_a_local_path_and_keeps_other_uris():
    local = spark_io.unreadable_file_error(read_error("file:///lake/dt%3D1/my%20events.jsonl.gz",
                                                      "java.io.IOException: not a gzip file"))
    assert str(local).startswith("cannot read /lake/dt=1/my events.jsonl.gz: not a gzip file, although its name "
                                 "ends in .gz (java.io.IOException: not a gzip file);")
    remote = spark_io.unreadable_file_error(read_error("s3a://bucket/part-0.parquet",
                                                       "org.apache.parquet.io.ParquetDecodingException: bad footer"))
    assert str(remote).startswith("cannot read s3a://bucket/part-0.parquet: not a readable Parquet file")


def test_unreadable_file_error_without_a_known_cause_or_any_cause():
    odd = spark_io.unreadable_file_error(read_error("file:///x.gz", "java.lang.OutOfMemoryError: heap"))
    assert "x.gz: Spark could not read it (java.lang.OutOfMemoryError: heap)" in str(odd)
    assert "x.gz: Spark could not read it (no cause given)" in str(spark_io.unreadable_file_error(
        read_error("file:///x.gz", None)))
    assert spark_io.unreadable_file_error(ValueError("no file involved")) is None


def test_raw_gzip_files_are_packed_into_read_tasks_by_16_mb_not_128(spark, tmp_config):
    # A gzip file cannot be split: Spark packs whole files into read tasks by compressed size
    # plus an open cost of 4 MB each. Six files of about 4 MB (base64 of random bytes keeps
    # ~3 MB random as ~4 MB of gzip):
    #   16 MB per task:  4 + 4 = 8, + 4 = 12 fits, + 4 open = 16; a third file would not -> 2
    #                    files a task, 3 tasks for the 2 cores;
    #   the 128 MB default: capped at (6 x 8 MB) / 2 cores = 24 MB -> 3 files a task, 2 tasks:
    #                    one task per core, however uneven the files are.
    import base64
    import os

    from jobs.common.lake import partition_path
    from jobs.common.schema import RAW_EVENTS

    folder = partition_path(tmp_config, RAW_EVENTS, DS1)
    os.makedirs(folder)
    for number in range(6):
        with gzip.open(os.path.join(folder, f"events-{number:05d}.jsonl.gz"), "wb", compresslevel=1) as handle:
            handle.write(base64.encodebytes(os.urandom(3 * 1024 * 1024)))
    sizes_mb = [os.path.getsize(os.path.join(folder, name)) / 2**20 for name in os.listdir(folder)]
    assert all(2.7 < size < 6 for size in sizes_mb), sizes_mb  # the range where the sums above hold
    assert spark.conf.get("spark.sql.files.maxPartitionBytes") == "16m"  # the configured default
    assert spark_io.read_raw_lines(spark, tmp_config, [DS1]).rdd.getNumPartitions() == 3
