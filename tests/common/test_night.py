"""Night (the stage context) and the night's manifest (jobs/common/night.py)."""

import json
import os
import stat
from pathlib import Path

import pytest

from jobs.common.night import (ManifestMissingError, Night, manifest_path, read_manifest, record_stage,
                               start_manifest)

DS = "2026-11-27"
CONFIG = {"window_days": 3}  # plan() reads nothing else from the config


@pytest.fixture()
def config(tmp_config):
    return dict(tmp_config, window_days=3)


def manifest_folder(config) -> Path:
    return Path(manifest_path(config, DS)).parent


def test_plan_window_is_the_window_days_ending_at_ds_and_dates_default_to_ds():
    # window_days 3 ending 2026-11-27: 11-25, 11-26, 11-27 (oldest first).
    night = Night.plan(CONFIG, DS)
    assert night.window == ("2026-11-25", "2026-11-26", "2026-11-27")
    assert night.dates == (DS,) and night.ds == DS and night.config is CONFIG


def test_plan_window_crosses_a_month_boundary():
    # 3 days ending 2026-12-01: 11-29, 11-30, 12-01.
    assert Night.plan(CONFIG, "2026-12-01").window == ("2026-11-29", "2026-11-30", "2026-12-01")


def test_plan_sorts_and_deduplicates_the_dates():
    night = Night.plan(CONFIG, DS, ["2026-11-27", "2026-11-25", "2026-11-27", "2026-11-26"])
    assert night.dates == ("2026-11-25", "2026-11-26", "2026-11-27")


@pytest.mark.parametrize("ds, dates", [("2026-11-31", None), ("27/11/2026", None), (DS, [DS, "2026-13-01"])])
def test_plan_rejects_a_bad_date(ds, dates):
    with pytest.raises(ValueError, match="logical date must look like YYYY-MM-DD, got '"):
        Night.plan(CONFIG, ds, dates)


def test_for_dates_picks_the_latest_date_as_ds():
    night = Night.for_dates(CONFIG, ["2026-11-26", "2026-11-28", "2026-11-25"])
    assert night.ds == "2026-11-28"
    assert night.dates == ("2026-11-25", "2026-11-26", "2026-11-28")
    assert night.window == ("2026-11-26", "2026-11-27", "2026-11-28")
    with pytest.raises(ValueError, match="no dates given"):
        Night.for_dates(CONFIG, [])


def test_json_round_trip_gives_an_equal_night_with_tuples():
    night = Night.plan({"window_days": 3, "spark": {"master": "local[2]"}}, DS, ["2026-11-26", DS])
    again = Night.from_json(night.to_json())
    assert again == night
    assert isinstance(again.window, tuple) and isinstance(again.dates, tuple)


def test_start_manifest_writes_dates_and_window_and_open_reads_them_back(config):
    planned = Night.plan(config, DS, ["2026-11-26", DS])
    written = start_manifest(planned)
    expected = {"ds": DS, "dates": ["2026-11-26", DS], "window": ["2026-11-25", "2026-11-26", DS], "stages": {}}
    assert written == expected and read_manifest(config, DS) == expected
    assert manifest_path(config, DS).endswith(f"manifests/night/dt={DS}/manifest.json")
    assert Night.open(config, DS) == planned


def test_open_without_a_manifest_names_the_path_and_the_ingest_stage(config):
    with pytest.raises(ManifestMissingError, match=f"no manifest for night {DS} at .*manifest.json: "
                                                   f"run the ingest stage for {DS} first") as raised:
        Night.open(config, DS)
    assert isinstance(raised.value, FileNotFoundError)


def test_record_stage_adds_records_and_replaces_one_on_retry(config):
    start_manifest(Night.plan(config, DS))
    record_stage(config, DS, "ingest", {"seconds": 1.5, "peak_rss_mb": 100})
    record_stage(config, DS, "validate", {"seconds": 9.0, "peak_rss_mb": 120})
    record_stage(config, DS, "validate", {"seconds": 2.0, "peak_rss_mb": 110})  # the retry wins
    assert read_manifest(config, DS)["stages"] == {"ingest": {"seconds": 1.5, "peak_rss_mb": 100},
                                                   "validate": {"seconds": 2.0, "peak_rss_mb": 110}}
    assert read_manifest(config, DS)["dates"] == [DS]  # the rest is untouched


def test_record_stage_without_a_manifest_writes_nothing(config):
    record_stage(config, DS, "clean", {"seconds": 1.0})
    assert read_manifest(config, DS) is None
    assert not manifest_folder(config).exists()


def test_manifest_writes_leave_one_readable_file_and_no_temporary_files(config):
    start_manifest(Night.plan(config, DS))
    record_stage(config, DS, "ingest", {"seconds": 1.0})
    assert os.listdir(manifest_folder(config)) == ["manifest.json"]
    assert stat.S_IMODE(os.stat(manifest_path(config, DS)).st_mode) == 0o644
    assert json.loads(Path(manifest_path(config, DS)).read_text())["stages"] == {"ingest": {"seconds": 1.0}}


def test_a_failed_record_keeps_the_previous_manifest_whole(config):
    start_manifest(Night.plan(config, DS))
    with pytest.raises(TypeError):
        record_stage(config, DS, "ingest", {"seconds": object()})  # not JSON
    assert read_manifest(config, DS)["stages"] == {}


def test_a_failed_record_leaves_no_temporary_file(config):
    start_manifest(Night.plan(config, DS))
    with pytest.raises(TypeError):
        record_stage(config, DS, "ingest", {"seconds": object()})
    assert os.listdir(manifest_folder(config)) == ["manifest.json"]
