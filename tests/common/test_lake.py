"""The lake layout: date windows, partition paths, all-or-nothing writes, ingest's catch-up."""

import gzip
from pathlib import Path

import pytest

from jobs.common import schema
from jobs.common.lake import days_back, partition_path, replace_partition
from jobs.common.night import Night


def test_days_back_and_partition_paths():
    assert days_back("2026-03-01", 3) == ["2026-02-27", "2026-02-28", "2026-03-01"]
    assert partition_path({"lake_root": "/lake"}, schema.CLEAN_EVENTS, "2026-03-01") == "/lake/clean/events/dt=2026-03-01"
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        days_back("yesterday", 2)


def test_replace_partition_is_all_or_nothing(tmp_path):
    target = tmp_path / "dataset" / "dt=2026-01-01"
    with replace_partition(str(target)) as staging:
        Path(staging, "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with replace_partition(str(target)) as staging:
            Path(staging, "b.txt").write_text("half-written")
            raise RuntimeError("job died")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]  # the failed write left no trace
    assert sorted(p.name for p in target.parent.iterdir()) == ["dt=2026-01-01"]
    with replace_partition(str(target)) as staging:
        Path(staging, "c.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]


def _land(config, day, lines=("{}",)):
    for dataset, name in ((schema.LANDING_EVENTS, "events-00000.jsonl.gz"), (schema.LANDING_CATALOG, "catalog.jsonl.gz")):
        folder = Path(partition_path(config, dataset, day))
        folder.mkdir(parents=True, exist_ok=True)
        with gzip.open(folder / name, "wt") as handle:
            handle.write("\n".join(lines) + "\n")


def test_ingest_catches_up_on_unprocessed_history_then_only_the_night(tmp_config):
    from jobs.etl import ingest

    config = dict(tmp_config, window_days=3)
    for day in ("2026-05-01", "2026-05-02", "2026-05-03"):
        _land(config, day)
    assert ingest.run(Night.plan(config, "2026-05-03"))["dates"] == ["2026-05-01", "2026-05-02", "2026-05-03"]
    for day in ("2026-05-01", "2026-05-02", "2026-05-03"):  # as if denoise had run
        Path(partition_path(config, schema.DENOISED_EVENTS, day)).mkdir(parents=True)
    assert ingest.run(Night.plan(config, "2026-05-03"))["dates"] == ["2026-05-03"]
    assert sorted(p.name for p in Path(partition_path(config, schema.RAW_EVENTS, "2026-05-03")).iterdir()) == [
        "events-00000.jsonl.gz"]


def test_ingest_of_a_night_that_never_landed_names_the_folder(tmp_config):
    from jobs.etl import ingest

    with pytest.raises(FileNotFoundError, match="no landed files .* for 2026-05-09 in .*landing/events/dt=2026-05-09"):
        ingest.run(Night.plan(tmp_config, "2026-05-09"))
