"""Night: the one small context every stage runs with, and the night's manifest.

Every stage is `run(night) -> result` (jobs/pipeline.py lists them). A Night carries the
resolved config, the logical date and two lists of dates, each computed once:

- `window`: the window_days dates ending at ds that features and models see;
- `dates`: the dates tonight's ETL (re)processes. Ingest decides them (the logical date,
  plus any window date that landed but was never processed) and records them in the
  night's manifest, `<lake>/manifests/night/dt=<ds>/manifest.json`; every later stage
  reads them back from there, so a retried or separately started task sees the same list.

The manifest also keeps, per stage, the result's seconds (appended as stages finish).
A Night serialises to JSON, which is how a stage run through spark-submit receives exactly
the context its parent task built.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

from jobs.common.lake import days_back, parse_ds, partition_path
from jobs.common.schema import NIGHT_MANIFEST

MANIFEST_FILE = "manifest.json"


class ManifestMissingError(FileNotFoundError):
    """A stage after ingest ran for a night whose manifest ingest has not written."""


@dataclasses.dataclass(frozen=True)
class Night:
    config: dict
    ds: str
    window: tuple[str, ...]
    dates: tuple[str, ...]

    @classmethod
    def plan(cls, config: dict, ds: str, dates=None) -> "Night":
        """A night whose ETL dates are given (default: just ds); nothing is read or written."""
        parse_ds(ds)
        chosen = sorted(dict.fromkeys(parse_ds(day).isoformat() for day in (dates or [ds])))
        return cls(config=config, ds=ds, window=tuple(days_back(ds, config["window_days"])),
                   dates=tuple(chosen))

    @classmethod
    def for_dates(cls, config: dict, dates) -> "Night":
        """A night processing the given dates, its logical date the latest of them (tools, tests)."""
        if not dates:
            raise ValueError("no dates given: pass at least one date YYYY-MM-DD")
        return cls.plan(config, max(parse_ds(day).isoformat() for day in dates), dates)

    @classmethod
    def open(cls, config: dict, ds: str) -> "Night":
        """The night as ingest recorded it (its dates come from the manifest)."""
        parse_ds(ds)
        manifest = read_manifest(config, ds)
        if manifest is None:
            raise ManifestMissingError(
                f"no manifest for night {ds} at {manifest_path(config, ds)}: run the ingest stage "
                f"for {ds} first (it decides which dates the night processes)")
        return cls.plan(config, ds, manifest["dates"])

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, default=str)

    @classmethod
    def from_json(cls, text: str) -> "Night":
        value = json.loads(text)
        return cls(config=value["config"], ds=value["ds"], window=tuple(value["window"]),
                   dates=tuple(value["dates"]))


def manifest_path(config: dict, ds: str) -> str:
    return os.path.join(partition_path(config, NIGHT_MANIFEST, ds), MANIFEST_FILE)


def read_manifest(config: dict, ds: str) -> dict | None:
    path = Path(manifest_path(config, ds))
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def start_manifest(night: Night) -> dict:
    """Write a fresh manifest for the night (ingest's job): its dates and window, no stages yet."""
    manifest = {"ds": night.ds, "dates": list(night.dates), "window": list(night.window), "stages": {}}
    _write_atomically(manifest_path(night.config, night.ds), manifest)
    return manifest


def record_stage(config: dict, ds: str, stage: str, record: dict) -> None:
    """Add (or replace, on a retry) one stage's record in the night's manifest, if it exists."""
    manifest = read_manifest(config, ds)
    if manifest is None:
        return
    manifest.setdefault("stages", {})[stage] = record
    _write_atomically(manifest_path(config, ds), manifest)


def _write_atomically(path: str, value: dict) -> None:
    """Write JSON to a temporary file beside path and rename it: readers never see half a file."""
    folder = Path(path).parent
    folder.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=".manifest.", dir=folder)
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(value, out, indent=2, sort_keys=True)
        os.chmod(staging, 0o644)
        os.replace(staging, path)
    except BaseException:
        os.unlink(staging)
        raise
