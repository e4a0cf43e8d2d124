"""The generated clickstream (devtools/generate.py) in the session protocol bench/models.py reads.

    python bench/generated_sessions.py --output .fusionrec/bench-data/generated-small
    python bench/models.py --data .fusionrec/bench-data/generated-small --models pop,spop,item_knn,gru

Lands --days dates of the `--scale` world without planted dirt into a temporary lake, reads
every session's item views in time order (the same views a shop's clickstream holds;
clicks, carts and purchases of the viewed item are left out, as the click logs of the
public sets hold only clicks) and converts them as bench/yoochoose_sessions.py converts
YOOCHOOSE: the last date's sessions are the test sessions, items viewed fewer than
--min-support times in training are dropped, sessions shorter than 2 are dropped, ids are
renumbered. The generator's revisits (comparisons, returns to an item; devtools/generate.py
P_REVISIT) make repeats a fair share of the targets, as in real shops.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # `python bench/...` puts only bench/ on the path

from bench.yoochoose_sessions import MIN_SUPPORT, convert, write_protocol  # noqa: E402
from devtools import generate  # noqa: E402
from jobs.common import schema  # noqa: E402

DEFAULT_SCALE, DEFAULT_DAYS, DEFAULT_END_DATE = "small", 14, "2026-11-27"


def landed_views(lake: Path, date: str) -> pd.DataFrame:
    """A landed date's views as (session, item, time): generated without dirt, so every line parses."""
    rows = []
    for part in sorted((lake / "landing" / "events" / f"dt={date}").glob("*.jsonl.gz")):
        with gzip.open(part, "rt") as handle:
            for line in handle:
                event = json.loads(line)
                if event[schema.EVENT_TYPE] == schema.VIEW:
                    rows.append((event[schema.SESSION_ID], event[schema.ITEM_ID], event[schema.EVENT_TIME]))
    frame = pd.DataFrame(rows, columns=["session", "item", "time"])
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    return frame


def generated_protocol(scale: str, days: int, end_date: str, seed: int, min_support: int = MIN_SUPPORT):
    """(train sessions, test examples) of a freshly generated world, the last date as the test."""
    with tempfile.TemporaryDirectory(prefix="generated-sessions-") as lake:
        summary = generate.generate_clickstream(lake, end_date, days, scale=scale, seed=seed,
                                                dirt_rates=dict.fromkeys(generate.DIRT_KINDS, 0.0))
        dates = sorted(summary["per_day"])
        views = {date: landed_views(Path(lake), date) for date in dates}
    train = pd.concat([views[date] for date in dates[:-1]], ignore_index=True)
    return convert(train, views[dates[-1]], min_support)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True, help="folder for train_sessions.txt, test_examples.tsv")
    parser.add_argument("--scale", default=DEFAULT_SCALE, choices=sorted(generate.SCALES))
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help="dates generated; the last one is the test")
    parser.add_argument("--end-date", default=DEFAULT_END_DATE)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--min-support", type=int, default=MIN_SUPPORT)
    args = parser.parse_args(argv)
    if args.days < 2:
        parser.error("--days must be at least 2: one date or more to train on, the last to test")
    train_sessions, examples = generated_protocol(args.scale, args.days, args.end_date, args.seed, args.min_support)
    write_protocol(args.output, train_sessions, examples, f"generated {args.scale}, {args.days} days, seed {args.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
