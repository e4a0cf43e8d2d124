"""Time the nightly DAG's Spark stages on the demo's generated world, as `make demo` runs them.

    python bench/spark_stages.py [--scale small] [--days 14] [--date 2026-11-27] [--repeat 1]

Generates the world `make demo` generates (devtools/generate.py, the same seed), into a
fresh FUSIONREC_HOME under --work-dir, then runs ingest and the Spark-side stages (validate,
clean, denoise, normalize_features, train_baselines) for the date with jobs.pipeline, one
after the other in this one process, as the demo's in-process DAG run does (the stages share
one Spark session). Prints each stage's seconds and their sum, and writes them to
<work-dir>/spark_stages.json.

To compare two commits side by side, run the script from a worktree of each, one after the
other on the same idle machine (the script only needs the checkout it sits in).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SPARK_SIDE_STAGES = ("validate", "clean", "denoise", "normalize_features", "train_baselines")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="small", choices=("tiny", "small", "wide", "large"))
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--date", default="2026-11-27")
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / ".fusionrec" / "bench-spark-stages")
    parser.add_argument("--stages", nargs="+", choices=SPARK_SIDE_STAGES, default=list(SPARK_SIDE_STAGES))
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    home = args.work_dir.resolve() / "home"
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    os.environ["FUSIONREC_HOME"] = str(home)
    os.environ.setdefault("MPLCONFIGDIR", str(home / "matplotlib"))

    from devtools.generate import generate_clickstream
    from jobs.common.config import resolve_config
    from jobs.pipeline import run_stage

    config = resolve_config()
    generate_clickstream(config["lake_root"], args.date, args.days, scale=args.scale, seed=config["seed"])
    seconds = {}
    for stage in ("ingest", *[stage for stage in SPARK_SIDE_STAGES if stage in args.stages]):
        started = time.monotonic()
        run_stage(stage, config, args.date)
        seconds[stage] = round(time.monotonic() - started, 1)
    spark_side = {stage: seconds[stage] for stage in seconds if stage != "ingest"}
    result = {"scale": args.scale, "days": args.days, "date": args.date, "seconds": seconds,
              "spark_side_s": round(sum(spark_side.values()), 1)}
    (args.work_dir / "spark_stages.json").write_text(json.dumps(result, indent=2))
    print(" | ".join(f"{stage} {value} s" for stage, value in seconds.items()))
    print(f"Spark-side stages ({', '.join(spark_side)}): {result['spark_side_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
