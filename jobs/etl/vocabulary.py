"""Append-only vocabularies that persist across nights: yesterday's ids never change.

Each vocabulary (schema.VOCABULARY_NAMES: items, categories, brands, title tokens) is a
lake dataset <VOCABULARIES>/<name>/dt=D with columns value (string) and id (int, dense
1..n). Night D starts from the table of the latest night before D -- never from D itself,
so a re-run of D rebuilds the identical table -- and appends the values it has not seen,
in sorted order, with the next ids. Id 0 stays reserved for padding and out-of-vocabulary
values, as everywhere (schema).

Why persist: a model trained tonight and a champion trained last week then agree on what
item 17 is, and embeddings can be warm-started; with per-night numbering every new item
would shift the ids of all items sorted after it.

A backfill of an old night D rebuilds D's table from the night before D; later nights keep
the tables they were built with (their ids for values known before D are the same anyway).
Vocabularies are catalog-sized, so they are numbered on the driver, as Spark ML's
StringIndexer does; events never come here.
"""

from __future__ import annotations

from typing import Iterable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.common.lake import existing_partitions, partition_path
from jobs.common.schema import DT, VOCABULARIES, VOCABULARY_ID, VOCABULARY_NAMES, VOCABULARY_VALUE
from jobs.common.spark_io import write_partitions

VALUE, ID = VOCABULARY_VALUE, VOCABULARY_ID


def extend_vocabulary(previous: list[str], observed: Iterable[str | None]) -> list[str]:
    """The previous values in id order, then the observed values not among them, sorted."""
    known = set(previous)
    if len(known) != len(previous):
        raise ValueError("a vocabulary lists a value twice: its ids would be ambiguous")
    new_values = {value for value in observed if value is not None} - known
    return [*previous, *sorted(new_values)]


def vocabulary_dataset(name: str) -> str:
    if name not in VOCABULARY_NAMES:
        raise ValueError(f"unknown vocabulary {name!r}; known: {', '.join(VOCABULARY_NAMES)}")
    return f"{VOCABULARIES}/{name}"


def previous_values(spark: SparkSession, config: dict, name: str, ds: str) -> list[str]:
    """Values of the latest stored table before night ds, in id order ([] on the first night)."""
    dataset = vocabulary_dataset(name)
    earlier = [day for day in existing_partitions(config, dataset) if day < ds]
    if not earlier:
        return []
    path = partition_path(config, dataset, earlier[-1])
    rows = spark.read.parquet(path).select(VALUE, ID).orderBy(ID).collect()
    ids = [row[ID] for row in rows]
    if ids != list(range(1, len(rows) + 1)):
        raise ValueError(f"vocabulary {path} is damaged: its ids must be exactly 1..{len(rows)}; "
                         "restore it from backup or re-run normalize from the night it was first written")
    return [row[VALUE] for row in rows]


def observed_values(frame: DataFrame, column: str) -> list[str]:
    """The distinct values of a column, as strings (null included; extend_vocabulary drops it)."""
    return [row[0] for row in frame.select(F.col(column).cast("string")).distinct().collect()]


def vocabulary_table(spark: SparkSession, values: list[str], value_column: str = VALUE,
                     id_column: str = ID) -> DataFrame:
    """(value_column, id_column): the values numbered 1.. in list order."""
    return spark.createDataFrame(list(zip(values, range(1, len(values) + 1))),
                                 T.StructType([T.StructField(value_column, T.StringType()),
                                               T.StructField(id_column, T.IntegerType())]))


def store_vocabulary(spark: SparkSession, config: dict, name: str, ds: str, values: list[str]) -> None:
    """Write night ds's table of the vocabulary (replacing only dt=ds)."""
    # coalesce(1): one small file per night instead of one per shuffle partition.
    table = vocabulary_table(spark, values).coalesce(1).withColumn(DT, F.lit(ds))
    write_partitions(table, config, vocabulary_dataset(name))
