"""Append-only vocabularies (jobs/etl/vocabulary.py): yesterday's ids never change, 0 stays reserved."""

import pytest

from jobs.common.lake import partition_path
from jobs.etl import vocabulary

DAY1, DAY2, DAY3 = "2026-11-26", "2026-11-27", "2026-11-28"


def stored(spark, config, name, ds) -> list[tuple[str, int]]:
    path = partition_path(config, vocabulary.vocabulary_dataset(name), ds)
    return sorted(((row.value, row.id) for row in spark.read.parquet(path).collect()), key=lambda pair: pair[1])


def run_night(spark, config, ds, observed_items) -> list[str]:
    """What normalize does for one vocabulary: previous table, extended by tonight's values, stored."""
    frame = spark.createDataFrame([(item,) for item in observed_items], "item_id string")
    values = vocabulary.extend_vocabulary(vocabulary.previous_values(spark, config, "item", ds),
                                          vocabulary.observed_values(frame, "item_id"))
    vocabulary.store_vocabulary(spark, config, "item", ds, values)
    return values


def test_ids_are_append_only_across_nights(spark, tmp_config):
    # Night 1 sees i3, i1, null, i3 -> sorted distinct values, null dropped: i1=1, i3=2.
    assert run_night(spark, tmp_config, DAY1, ["i3", "i1", None, "i3"]) == ["i1", "i3"]
    assert stored(spark, tmp_config, "item", DAY1) == [("i1", 1), ("i3", 2)]
    # Night 2 sees i2, i3, i0: i1 and i3 keep 1 and 2, the new i0 and i2 follow in sorted order.
    run_night(spark, tmp_config, DAY2, ["i2", "i3", "i0"])
    assert stored(spark, tmp_config, "item", DAY2) == [("i1", 1), ("i3", 2), ("i0", 3), ("i2", 4)]
    assert stored(spark, tmp_config, "item", DAY1) == [("i1", 1), ("i3", 2)]  # night 1's table untouched


def test_a_rerun_starts_from_the_night_before_not_from_its_own_table(spark, tmp_config):
    run_night(spark, tmp_config, DAY1, ["i1"])
    run_night(spark, tmp_config, DAY2, ["i2"])
    # Re-running night 2 with a late i0 rebuilds from night 1's [i1]: i0=2, i2=3 (not i2=2, i0=3).
    run_night(spark, tmp_config, DAY2, ["i2", "i0"])
    assert stored(spark, tmp_config, "item", DAY2) == [("i1", 1), ("i0", 2), ("i2", 3)]


def test_previous_values_take_the_latest_table_before_the_night(spark, tmp_config):
    run_night(spark, tmp_config, DAY1, ["a"])
    run_night(spark, tmp_config, DAY3, ["a", "b"])
    assert vocabulary.previous_values(spark, tmp_config, "item", DAY1) == []  # first night
    assert vocabulary.previous_values(spark, tmp_config, "item", DAY2) == ["a"]  # a backfill of DAY2
    assert vocabulary.previous_values(spark, tmp_config, "item", "2026-11-29") == ["a", "b"]


def test_ids_start_at_one_so_zero_stays_reserved(spark):
    table = vocabulary.vocabulary_table(spark, ["x", "y"], "brand", "brand_id")
    assert table.columns == ["brand", "brand_id"]
    assert sorted(tuple(row) for row in table.collect()) == [("x", 1), ("y", 2)]


def test_observed_values_are_strings_with_null_kept(spark):
    frame = spark.createDataFrame([(7,), (None,), (7,), (12,)], "category long")
    assert sorted(vocabulary.observed_values(frame, "category"), key=str) == ["12", "7", None]


def test_an_unknown_vocabulary_name_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown vocabulary 'items'; known: item, category, brand, title_token"):
        vocabulary.vocabulary_dataset("items")
