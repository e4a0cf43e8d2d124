"""Where the real public data sets are, for the tests that read them.

RECSYS_SHARED_DATA (set by .ci/run) wins and, when set, a missing folder fails the tests
instead of skipping them; without it, ../shared/data beside the checkout is used if present.
The data carries research-use terms: tests read it in place and never copy it into the repo.
"""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _shared_data() -> Path | None:
    if os.environ.get("RECSYS_SHARED_DATA"):
        return Path(os.environ["RECSYS_SHARED_DATA"])
    fallback = REPO.parent / "shared" / "data"
    return fallback if fallback.is_dir() else None


SHARED = _shared_data()
needs_shared_data = pytest.mark.skipif(
    SHARED is None, reason="real data sets not found: RECSYS_SHARED_DATA is unset and ../shared/data does not exist")
