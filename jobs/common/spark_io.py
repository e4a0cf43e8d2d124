"""Spark I/O on the lake shared by the Spark stages: reading and replacing date partitions.

Paths go through Hadoop's filesystem API, so the same code reads and writes a local lake,
HDFS or s3a. Writes replace exactly the dates they carry (dynamic partition overwrite) and
every stage proves row conservation per date with check_conservation.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import urllib.parse

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.common.lake import dataset_path, parse_ds, partition_path
from jobs.common.schema import (CATALOG_FIELDS, DT, ITEM_ID, PRICE, QUARANTINE_EVENTS, RAW_CATALOG, RAW_EVENTS, RAW_FILE_GLOB,
                         REASON, RECORD, STAGE)

CORRUPT_RECORD = "_corrupt_record"  # filled by from_json with the text of a line it cannot parse


def all_text_schema(fields: tuple[str, ...]) -> T.StructType:
    """Every field as text (plus the corrupt-record column), so wrong types stay visible."""
    return T.StructType([T.StructField(name, T.StringType()) for name in (*fields, CORRUPT_RECORD)])


def parsed_price() -> Column:
    return F.col(PRICE).try_cast("double")


def validate_dates(dates: list[str]) -> list[str]:
    """The dates, each checked to be YYYY-MM-DD, without repeats; at least one."""
    if not dates:
        raise ValueError("no dates given: pass at least one logical date YYYY-MM-DD")
    return list(dict.fromkeys(parse_ds(ds).isoformat() for ds in dates))


def union_all(frames: list[DataFrame]) -> DataFrame:
    return functools.reduce(DataFrame.unionByName, frames)


def read_raw_lines(spark: SparkSession, config: dict, dates: list[str]) -> DataFrame:
    """Raw event lines of each date as (record, dt); a date without a folder is a ValueError.

    One read over every date's folder (one file listing, one scan), not a read per date:
    the plan and the number of Spark jobs stay the same for 14 dates or 365.
    """
    folders = _existing_partitions(spark, config, RAW_EVENTS, dates, lambda ds, folder: (
        f"no raw events for {ds}: {folder} does not exist (did ingest run for this date?)"))
    lines = _read_partitions(spark.read.option("pathGlobFilter", RAW_FILE_GLOB).format("text"),
                             dataset_path(config, RAW_EVENTS), folders)
    return lines.select(F.col("value").alias(RECORD), DT)


def read_catalog(spark: SparkSession, config: dict, ds: str) -> DataFrame:
    """Day ds's catalog (read_catalogs of one date)."""
    return read_catalogs(spark, config, [ds])


def read_catalogs(spark: SparkSession, config: dict, dates: list[str]) -> DataFrame:
    """The dates' catalogs: CATALOG_FIELDS (price as double) and dt, validated, in one read.

    A catalog line that is not a JSON object, lacks item_id or repeats one within its day is
    a ValueError: item ids and indices are built from the catalog, so guessing would corrupt
    them. A non-numeric or negative price becomes null (unknown price).
    """
    folders = _existing_partitions(spark, config, RAW_CATALOG, dates,
                                   lambda ds, folder: f"no catalog for {ds}: {folder} does not exist")
    lines = _read_partitions(spark.read.option("pathGlobFilter", RAW_FILE_GLOB).format("text"),
                             dataset_path(config, RAW_CATALOG), folders)
    rows = lines.select(F.from_json("value", all_text_schema(CATALOG_FIELDS),
                                    {"columnNameOfCorruptRecord": CORRUPT_RECORD}).alias("row"), "value", DT)
    unusable = (F.col("row").isNull() | F.col(f"row.{CORRUPT_RECORD}").isNotNull()
                | F.col(f"row.{ITEM_ID}").isNull() | (F.trim(F.col(f"row.{ITEM_ID}")) == ""))
    first_unusable = rows.where(unusable).select("value", DT).first()
    if first_unusable is not None:
        raise ValueError(f"catalog {partition_path(config, RAW_CATALOG, first_unusable[DT])}: a line is not "
                         f"a JSON object with an item_id: {first_unusable['value']!r}")
    catalog = rows.select(*[F.col(f"row.{name}").alias(name) for name in CATALOG_FIELDS], DT)
    price = parsed_price()
    catalog = catalog.withColumn(PRICE, F.when(price >= 0, price))
    repeated = catalog.groupBy(DT, ITEM_ID).count().where(F.col("count") > 1).first()
    if repeated is not None:
        raise ValueError(f"catalog {partition_path(config, RAW_CATALOG, repeated[DT])}: item_id "
                         f"{repeated[ITEM_ID]!r} appears {repeated['count']} times")
    return catalog


def _existing_partitions(spark: SparkSession, config: dict, dataset: str, dates: list[str],
                         missing_message) -> list[str]:
    """The dates' partition folders; the first missing one is a ValueError (missing_message(ds, folder)).

    Checked here, on the driver, because Spark would log a stack trace for a missing path.
    """
    folders = [partition_path(config, dataset, ds) for ds in dates]
    for ds, folder in zip(dates, folders):
        if not path_exists(spark, folder):
            raise ValueError(missing_message(ds, folder))
    return folders


def _read_partitions(reader, dataset_folder: str, folders: list[str]) -> DataFrame:
    """folders (dt=YYYY-MM-DD partitions of dataset_folder) as one frame with dt as 'YYYY-MM-DD' text.

    Partition discovery types dt as a date; cast back, it is the folder's text again. Folders
    without a matching file give no rows (and no discovered dt column: added as null text).
    """
    frame = reader.option("basePath", dataset_folder).load(folders)
    if DT not in frame.columns:
        return frame.withColumn(DT, F.lit(None).cast("string"))
    return frame.withColumn(DT, F.col(DT).cast("string"))


class UnreadableFileError(ValueError):
    """A lake file Spark could not read; the message names the file and the cause."""


# Spark 4 wraps any failure of a file scan in this error class, with the file's URI.
_FAILED_READ = re.compile(r"FAILED_READ_FILE[.A-Z_]*\] Encountered error while reading file (\S+?)\.(?=\s|$)")
_CAUSED_BY = re.compile(r"^Caused by: (.+)$", re.MULTILINE)
# What the innermost Java exception means for a gzip JSON-lines file.
_READ_FAILURE_HINTS = (
    ("java.io.EOFException", "the gzip stream ends early: a truncated copy, or not gzip at all"),
    ("java.io.IOException: not a gzip file", "not a gzip file, although its name ends in .gz"),
    ("java.util.zip.ZipException", "not a readable gzip file"),
    ("org.apache.parquet", "not a readable Parquet file"),
)


@contextlib.contextmanager
def readable_read_errors():
    """Turn Spark's failure to read a lake file into one line naming the file and the cause.

    Spark reads lazily, so an unreadable file (a truncated gzip, a corrupt Parquet footer)
    fails whichever action first scans it, as a Py4J error whose message is a Java stack
    trace. Everything else propagates unchanged.

    Why fail instead of quarantining what could be read: Spark's text reader cannot return
    the lines of a gzip file before the point where it breaks, except with
    spark.sql.files.ignoreCorruptFiles, which drops the rest of the file without counting
    it. The lines after the break are unknown, so no stage could prove raw = kept +
    quarantined for that date: the night stops, naming the file to land again (validate,
    which runs first, reports the same file and how many lines it had before the break).
    """
    try:
        yield
    except Exception as error:
        unreadable = unreadable_file_error(error)
        if unreadable is None:
            raise
        raise unreadable from None


def unreadable_file_error(error: BaseException) -> UnreadableFileError | None:
    """The UnreadableFileError that a Spark read failure stands for, else None."""
    text = "\n".join(part for part in (str(error), getattr(error, "_stackTrace", None)) if part)
    failed = _FAILED_READ.search(text)
    if failed is None:
        return None
    causes = _CAUSED_BY.findall(text)
    root_cause = causes[-1].strip() if causes else "no cause given"
    hint = next((hint for prefix, hint in _READ_FAILURE_HINTS if root_cause.startswith(prefix)),
                "Spark could not read it")
    return UnreadableFileError(f"cannot read {_readable_path(failed.group(1))}: {hint} ({root_cause}); "
                               f"land the file again, then re-run the date")


def _readable_path(uri: str) -> str:
    """A local file as a plain path (Spark names it file:///... and URL-encoded); others as given."""
    parsed = urllib.parse.urlparse(uri)
    return urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else uri


def read_event_partitions(spark: SparkSession, config: dict, dataset: str, dates: list[str]) -> DataFrame:
    """Parquet partitions of an event dataset for the dates, with dt as a 'YYYY-MM-DD' string.

    One read over the dates' folders; a missing one is named in the error.
    """
    folders = _existing_partitions(spark, config, dataset, dates, lambda ds, folder: (
        f"no {dataset} partition for {ds}: {folder} does not exist (did the previous stage run for this date?)"))
    return _read_partitions(spark.read.format("parquet"), dataset_path(config, dataset), folders)


def write_partitions(frame: DataFrame, config: dict, dataset: str,
                     partition_columns: tuple[str, ...] = (DT,)) -> None:
    """Replace exactly the partitions present in frame; other dates stay untouched.

    The write option makes the overwrite dynamic even if the session default is static,
    which would wipe every date of the dataset.
    """
    (frame.write.mode("overwrite").option("partitionOverwriteMode", "dynamic")
     .partitionBy(*partition_columns).parquet(dataset_path(config, dataset)))


def _hadoop_path(spark: SparkSession, path: str):
    """(filesystem, path) through Hadoop, so local folders, HDFS and s3a all work."""
    hadoop_path = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(path)
    return hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hadoop_path


def path_exists(spark: SparkSession, path: str) -> bool:
    filesystem, hadoop_path = _hadoop_path(spark, path)
    return bool(filesystem.exists(hadoop_path))


def delete_partitions(spark: SparkSession, paths: list[str]) -> None:
    """Remove partition folders that a re-run left without rows.

    Dynamic overwrite only replaces partitions that receive rows, so a date whose rows all
    disappeared would otherwise keep the previous run's output.
    """
    for path in paths:
        filesystem, hadoop_path = _hadoop_path(spark, path)
        if filesystem.exists(hadoop_path):
            filesystem.delete(hadoop_path, True)


def quarantine_partition_path(config: dict, stage: str, ds: str) -> str:
    return os.path.join(dataset_path(config, QUARANTINE_EVENTS), f"{STAGE}={stage}", f"{DT}={ds}")


def replace_stage_output(spark: SparkSession, config: dict, stage: str, kept_dataset: str,
                         kept: DataFrame, quarantined: DataFrame, outcomes: dict) -> None:
    """Write the kept rows and the stage's quarantine; drop partitions left without rows.

    outcomes is count_outcomes() of the same labels: it says which dates have no rows.
    """
    write_partitions(kept, config, kept_dataset)
    write_partitions(quarantined, config, QUARANTINE_EVENTS, (STAGE, DT))
    delete_partitions(spark, [partition_path(config, kept_dataset, ds)
                              for ds, outcome in outcomes.items() if outcome["kept"] == 0]
                      + [quarantine_partition_path(config, stage, ds)
                         for ds, outcome in outcomes.items() if not outcome["reasons"]])


def count_outcomes(labeled: DataFrame, dates: list[str]) -> dict:
    """{date: {"kept": rows, "reasons": {reason: rows}}} of a frame labeled with `reason`."""
    outcomes = {ds: {"kept": 0, "reasons": {}} for ds in dates}
    for row in labeled.groupBy(DT, REASON).count().collect():
        if row[REASON] is None:
            outcomes[row[DT]]["kept"] = row["count"]
        else:
            outcomes[row[DT]]["reasons"][row[REASON]] = row["count"]
    return outcomes


def count_by_date(spark: SparkSession, config: dict, dataset: str, dates: list[str]) -> dict:
    """{date: rows on disk} of a dt-partitioned dataset (0 for a date without a partition)."""
    return _count_partitions(spark, dataset_path(config, dataset),
                             {ds: partition_path(config, dataset, ds) for ds in dates})


def count_quarantined(spark: SparkSession, config: dict, stage: str, dates: list[str]) -> dict:
    """{date: rows on disk} of one stage's quarantine."""
    return _count_partitions(spark, os.path.join(dataset_path(config, QUARANTINE_EVENTS), f"{STAGE}={stage}"),
                             {ds: quarantine_partition_path(config, stage, ds) for ds in dates})


def _count_partitions(spark: SparkSession, dataset_folder: str, folders: dict) -> dict:
    # One job over the dates' folders only: Parquet counts come from the file footers, while
    # listing a whole dataset with years of dates would cost more.
    counts = {ds: 0 for ds in folders}
    existing = [folder for folder in folders.values() if path_exists(spark, folder)]
    if existing:
        frame = _read_partitions(spark.read.format("parquet"), dataset_folder, existing)
        counts.update({row[DT]: row["count"] for row in frame.groupBy(DT).count().collect()})
    return counts


def check_conservation(stage: str, source_counts: dict, kept_counts: dict,
                       quarantined_counts: dict) -> None:
    """Every input row of each date must be on disk exactly once: kept or quarantined."""
    for ds, source_rows in source_counts.items():
        kept, quarantined = kept_counts.get(ds, 0), quarantined_counts.get(ds, 0)
        if kept + quarantined != source_rows:
            raise RuntimeError(f"{stage} {ds}: {source_rows} input rows but {kept} kept + "
                               f"{quarantined} quarantined = {kept + quarantined} on disk")
