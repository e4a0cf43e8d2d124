"""Ingest: copy the landed raw files of the night (and any missing history) into the lake.

The tracking system drops gzip JSON-lines files into landing/events/dt=D/ and a catalog
snapshot into landing/catalog/dt=D/. Ingest copies them into raw/ (the immutable bronze
layer the Spark jobs read) and decides which dates tonight's ETL must (re)process:
the logical date always, plus any date of the trailing window that has landed data but
no denoised partition yet (first run, or a gap after an outage). Each date's partition is
replaced atomically, so re-running a date changes nothing else.

With config["source"] naming a public format and a path (e.g. {"format": "rees46", "path":
"/data/2019-Oct.csv"}), ingest first lands that source through its adapter
(jobs/etl/sources.py) for the window's dates that have not landed yet, and always for the
logical date (the source may have grown since); everything after is unchanged. The default
{"format": "fusionrec", "path": null} means the tracking export lands by itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from jobs.common import schema
from jobs.common.lake import days_back, partition_path, replace_partition
from jobs.common.night import Night, start_manifest

def dates_to_process(config: dict, ds: str) -> list[str]:
    """The logical date plus trailing-window dates that landed but were never denoised."""
    dates = []
    for day in days_back(ds, config["window_days"]):
        landed = Path(partition_path(config, schema.LANDING_EVENTS, day)).is_dir()
        processed = Path(partition_path(config, schema.DENOISED_EVENTS, day)).is_dir()
        if day == ds or (landed and not processed):
            dates.append(day)
    return dates


def copy_partition(config: dict, source_dataset: str, target_dataset: str, day: str, pattern: str) -> dict:
    """Copy one date's landed files into the lake; return what was copied."""
    source = Path(partition_path(config, source_dataset, day))
    files = sorted(source.glob(pattern)) if source.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"no landed files matching {pattern} for {day} in {source}: "
            f"has the tracking export for that day arrived? (make demo generates one)")
    with replace_partition(partition_path(config, target_dataset, day)) as staging:
        for file in files:
            shutil.copy2(file, Path(staging) / file.name)
    return {"files": len(files), "bytes": sum(f.stat().st_size for f in files)}


def dates_to_land(config: dict, ds: str) -> list[str]:
    """The logical date plus trailing-window dates whose events have not landed yet."""
    return [day for day in days_back(ds, config["window_days"])
            if day == ds or not Path(partition_path(config, schema.LANDING_EVENTS, day)).is_dir()]


def land_configured_source(config: dict, ds: str) -> dict:
    """Land config["source"] for dates_to_land; {} when the export lands by itself."""
    source_format, source_path = config["source"]["format"], config["source"]["path"]
    if not source_path:
        if source_format != "fusionrec":
            raise ValueError(f"config source.format is {source_format!r} but source.path is not set: "
                             f"name the file or folder to read")
        return {}
    from jobs.etl import sources  # pandas/pyarrow only when a source is configured

    landed = sources.land_source(config, source_format, source_path, dates_to_land(config, ds))
    if ds not in landed:
        raise ValueError(f"the {source_format} source {source_path} has no events on {ds} "
                         f"(landed: {', '.join(landed) or 'none'} of the window): nothing to ingest that night")
    return landed


def run(night: Night) -> dict:
    """Land and copy the night's files; record the dates it processes in the night's manifest.

    Ingest plans the night: it receives just the logical date and the window, and decides
    the dates every later stage reads back from the manifest (jobs/common/night.py).
    """
    config, ds = night.config, night.ds
    landed = land_configured_source(config, ds)
    dates = dates_to_process(config, ds)
    copied = {}
    for day in dates:
        events = copy_partition(config, schema.LANDING_EVENTS, schema.RAW_EVENTS, day, "*.jsonl.gz")
        catalog = copy_partition(config, schema.LANDING_CATALOG, schema.RAW_CATALOG, day, "*.jsonl.gz")
        copied[day] = {"event_files": events["files"], "event_bytes": events["bytes"],
                       "catalog_files": catalog["files"]}
    start_manifest(Night.plan(config, ds, dates))
    print(f"ingest {ds}: {len(dates)} date(s) to process: {', '.join(dates)}")
    return {"dates": dates, "copied": copied, "landed_from_source": landed}
