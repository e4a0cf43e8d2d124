"""jobs/etl/ingest.py with config["source"]: a public format is landed, then ingested as usual."""

import csv
import gzip
from pathlib import Path

import pytest
from shared_data import SHARED, needs_shared_data

from jobs.common.night import Night
from jobs.etl import clean
from jobs.etl import ingest
from jobs.common import schema
from jobs.common.lake import partition_path
from jobs.etl.sources import CATALOG_FILE, EVENTS_FILE


def raw_lines(config, dataset, day, file) -> list[str]:
    with gzip.open(Path(partition_path(config, dataset, day)) / file, "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()


def landed_lines(config, dataset, day) -> list[str]:
    return raw_lines(config, dataset, day, EVENTS_FILE if dataset == schema.LANDING_EVENTS else CATALOG_FILE)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@needs_shared_data
def test_ingest_lands_a_rees46_source_copies_it_into_raw_and_clean_accepts_it(tmp_config, spark):
    sample = SHARED / "rees46" / "2019-Oct-sample.csv"
    config = dict(tmp_config, window_days=2, source={"format": "rees46", "path": str(sample)})

    result = ingest.run(Night.plan(config, "2019-10-01"))

    # Sep 30th is in the window but the sample has no rows then: nothing lands for it.
    assert result["landed_from_source"] == {"2019-10-01": 1000}
    assert result["dates"] == ["2019-10-01"]
    assert len(raw_lines(config, schema.RAW_EVENTS, "2019-10-01", EVENTS_FILE)) == 1000
    with open(sample, newline="") as handle:
        rows = [tuple(row) for row in csv.reader(handle)][1:]
    catalog = raw_lines(config, schema.RAW_CATALOG, "2019-10-01", CATALOG_FILE)
    assert len(catalog) == len({row[2] for row in rows})  # one entry per distinct product_id

    summary = clean.run(Night.for_dates(config, ["2019-10-01"]))['summary']["2019-10-01"]
    assert summary["raw_lines"] == summary["clean"] + summary["quarantined"] == 1000
    # Every line parses and passes the row rules; only cross-line rules may remove some.
    assert set(summary["reasons"]) <= {schema.REASON_DUPLICATE, schema.REASON_DOUBLE_CLICK}
    assert summary["reasons"].get(schema.REASON_DUPLICATE, 0) == len(rows) - len(set(rows))


def test_ingest_lands_only_the_missing_window_dates_and_the_night(tmp_path, tmp_config):
    # 1511481600 = 2017-11-24T00:00:00Z; one row per day on Nov 24, 25 and 26.
    source = write(tmp_path / "UserBehavior.csv",
                   "1,10,100,pv,1511481600\n1,11,100,pv,1511568000\n1,12,100,pv,1511654400\n")
    config = dict(tmp_config, window_days=3, source={"format": "taobao", "path": str(source)})
    for dataset, name in ((schema.LANDING_EVENTS, EVENTS_FILE), (schema.LANDING_CATALOG, CATALOG_FILE)):
        folder = Path(partition_path(config, dataset, "2017-11-24"))
        folder.mkdir(parents=True)
        (folder / name).write_bytes(gzip.compress(b'{"already": "landed"}\n'))

    result = ingest.run(Night.plan(config, "2017-11-26"))

    assert result["landed_from_source"] == {"2017-11-25": 1, "2017-11-26": 1}
    assert result["dates"] == ["2017-11-24", "2017-11-25", "2017-11-26"]  # none denoised yet
    assert landed_lines(config, schema.LANDING_EVENTS, "2017-11-24") == ['{"already": "landed"}']
    assert '"item_id":"12"' in raw_lines(config, schema.RAW_EVENTS, "2017-11-26", EVENTS_FILE)[0]


def test_ingest_of_a_night_the_source_does_not_have_names_the_source(tmp_path, tmp_config):
    source = write(tmp_path / "UserBehavior.csv", "1,10,100,pv,1511481600\n")  # Nov 24th only
    config = dict(tmp_config, window_days=1, source={"format": "taobao", "path": str(source)})
    with pytest.raises(ValueError, match=f"the taobao source {source} has no events on 2017-11-30"):
        ingest.run(Night.plan(config, "2017-11-30"))


def test_a_source_format_without_a_path_is_a_clear_error(tmp_config):
    config = dict(tmp_config, source={"format": "rees46", "path": None})
    with pytest.raises(ValueError, match="source.format is 'rees46' but source.path is not set"):
        ingest.run(Night.plan(config, "2019-10-01"))


def test_the_default_source_lands_nothing_itself(tmp_config):
    config = dict(tmp_config, window_days=1, source={"format": "fusionrec", "path": None})
    for dataset, name in ((schema.LANDING_EVENTS, EVENTS_FILE), (schema.LANDING_CATALOG, CATALOG_FILE)):
        folder = Path(partition_path(config, dataset, "2026-05-01"))
        folder.mkdir(parents=True)
        (folder / name).write_bytes(gzip.compress(b"{}\n"))
    result = ingest.run(Night.plan(config, "2026-05-01"))
    assert result["landed_from_source"] == {}
    assert result["dates"] == ["2026-05-01"]
