"""Where each dataset's date partition lives, and how a partition is replaced atomically.

Every output of the nightly run is a directory `<lake_root>/<dataset>/dt=<YYYY-MM-DD>/`.
A re-run of a date replaces exactly that directory: writers build the new content in a
sibling temporary directory and swap it in, so readers never see half a partition and
other dates are never touched. (Spark writers get the same guarantee from dynamic
partition overwrite; see jobs/common/spark_session.py.)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path


def partition_path(config: dict, dataset: str, ds: str) -> str:
    """The directory of one date partition of a dataset, e.g. <lake>/clean/events/dt=2026-11-27."""
    return os.path.join(dataset_path(config, dataset), f"dt={ds}")


def dataset_path(config: dict, dataset: str) -> str:
    return os.path.join(config["lake_root"], dataset)


def parse_ds(ds: str) -> dt.date:
    try:
        return dt.date.fromisoformat(ds)
    except (TypeError, ValueError):
        raise ValueError(f"logical date must look like YYYY-MM-DD, got {ds!r}") from None


def days_back(ds: str, n_days: int) -> list[str]:
    """The n_days dates ending at ds, oldest first."""
    end = parse_ds(ds)
    return [(end - dt.timedelta(days=offset)).isoformat() for offset in range(n_days - 1, -1, -1)]


def existing_partitions(config: dict, dataset: str) -> list[str]:
    """Dates (sorted) that have a partition of the dataset."""
    root = Path(dataset_path(config, dataset))
    if not root.is_dir():
        return []
    return sorted(p.name[3:] for p in root.iterdir() if p.is_dir() and p.name.startswith("dt="))


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextlib.contextmanager
def replace_partition(final_dir: str):
    """Yield a fresh temporary directory; on success it atomically becomes final_dir.

    On failure the temporary directory is removed and final_dir is left as it was.
    """
    final = Path(final_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; a shared lake needs normal modes
    try:
        yield str(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    retired = None
    if final.exists():
        retired = final.parent / f".{final.name}.retired-{os.getpid()}"
        shutil.rmtree(retired, ignore_errors=True)
        final.rename(retired)
    staging.rename(final)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
