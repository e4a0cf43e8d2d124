"""UCI Online Retail (user level) through the nightly jobs, with a time-based split.

    python bench/online_retail.py [--data DIR_OR_FILE] [--work-dir DIR] [--valid-days 14] [--test-days 14]

1. lands the invoice lines with the pipeline's own adapter (jobs.etl.sources, format
   "online_retail": one line = one purchase event, guests become "invoice-<no>" users,
   Description is the catalog title) into <work-dir>/lake/landing, every date of the file;
2. runs the nightly DAG's stages in DAG order through jobs.pipeline.run_stage, in this one
   process as `make demo` does (its dag.test runs every task in-process), for the file's
   last date, with window_days covering the whole file and config split = the last
   --test-days days for test and the --valid-days before them for validation: ingest,
   validate, clean, denoise, normalize_features, train_baselines (the Spark phase; the
   Spark session is stopped after it so the JVM does not sit beside TensorFlow), then
   train_user_encoder, train_item_encoder, fuse and evaluate. register_and_gate and
   batch_recommend are skipped: they register / serve the fused model and compute no metric;
3. prints evaluate's metrics table (every model, every cutoff) and the item encoder's
   cold-start metrics, and writes bench/results/online-retail.json: models -> metrics,
   cold_start, wall seconds per stage, test examples, the split dates, peak memory.

`peak_mb` is the largest resident memory of this process and its children (the Spark JVM
is one), summed every 0.2 s from /proc with bench/etl.py's functions. The lake is emptied at
the start of every run; the MLflow store (<work-dir>/mlflow) keeps every run's records. The
resolved config is saved as <work-dir>/config.json, so one stage can be re-run by hand:

    FUSIONREC_CONFIG=<work-dir>/config.json FUSIONREC_USER_ID_KEY=fusionrec-bench-etl-key \
        python -m jobs.pipeline normalize_features --ds 2011-12-09
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # `python bench/online_retail.py` puts only bench/ on the path

from bench.etl import (BENCH_USER_ID_KEY, MIB, SAMPLE_EVERY_S, shuffle_partitions, tree_pids,  # noqa: E402
                       tree_rss_bytes)
from jobs.common import schema  # noqa: E402
from jobs.common.config import deep_merge, resolve_config, set_dotted  # noqa: E402
from jobs.common.lake import partition_path  # noqa: E402

SOURCE_FORMAT = "online_retail"
DATA_FILE = "retail_session.parquet.snappy"  # the folder's only file (RecoHut-Datasets/retail_session)
DEFAULT_DATA = Path(os.environ.get("RECSYS_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data") / "online-retail"
DEFAULT_WORK_DIR = REPO_ROOT / ".fusionrec" / "bench-online-retail"
RESULTS_FILE = REPO_ROOT / "bench" / "results" / "online-retail.json"
# One day holds a median of 52 identified customers (31 on the 10th-percentile day), so a
# one-day test split would judge every model on a few hundred purchases of ~50 people. Two
# weeks (about 12 trading days, ~600 customer-days) make the intervals usable and still
# leave 11 of the file's ~12 months for training; valid gets as much for early stopping and
# for choosing the served fusion variant.
DEFAULT_VALID_DAYS = DEFAULT_TEST_DAYS = 14
SPARK_PHASE = ("ingest", "validate", "clean", "denoise", "normalize_features", "train_baselines")
MODEL_PHASE = ("train_user_encoder", "train_item_encoder", "fuse", "evaluate")
SKIPPED_STAGES = {"register_and_gate": "registers and gates the fused model in MLflow; computes no metric",
                  "batch_recommend": "writes tomorrow's top-k lists; computes no metric"}

# Denoise rules that would drop real purchases, turned off for invoice data. Every line of
# an invoice carries the invoice's time to the minute, so one order is a burst of same-minute
# events with all gaps 0. Of the file's 526,052 purchase lines (cancellations and stock
# adjustments aside), 422,532 sit in invoices of 20+ lines (bot_regular_timing: all gaps
# equal counts as a script), 211,778 in invoices of 60+ lines (bot_user: 60 events a minute;
# bot_distinct_items: 30 distinct items a minute) and 29,236 in invoices of 500+ lines
# (session_length_outlier: session = invoice): wholesale orders, not crawlers.
# collapse_consecutive_repeats is off too: after clean's double_click (kept: the same user
# and StockCode within 2 s, in practice one StockCode listed twice on one invoice - one
# buying decision split over two lines, 5,304 lines), what it would still remove is the
# same item bought again in a later order of the day, a real purchase. accidental_click
# (views and clicks only; there are none) and heavy_user_cap (2,000 a user-day; the largest
# is 1,114) never fire and keep their defaults.
PURCHASE_DENOISE = {"bot_max_events_per_minute": None, "bot_max_distinct_items_per_minute": None,
                    "bot_regular_min_events": None, "max_events_per_session": None,
                    "collapse_consecutive_repeats": False}


def data_file(data: Path) -> Path:
    """The Parquet file: --data itself, or DATA_FILE inside the --data folder."""
    path = data / DATA_FILE if data.is_dir() else data
    if not path.is_file():
        raise SystemExit(f"--data {data}: no {DATA_FILE} there (set RECSYS_SHARED_DATA or pass --data)")
    return path


def window_days_covering(dates: list[str]) -> int:
    """Days from the first to the last date, both included (gaps count: the window is calendar days)."""
    first, last = dt.date.fromisoformat(min(dates)), dt.date.fromisoformat(max(dates))
    return (last - first).days + 1


def bench_config(work_dir: Path, window_days: int, valid_days: int, test_days: int, raw_lines: int,
                 settings: dict | None = None) -> dict:
    """The resolved config of the run: the defaults, this work dir, the window, split and denoise,
    then `settings` (from --set) on top."""
    overrides = {
        "home": str(work_dir),
        "window_days": window_days,
        "split": {"valid_days": valid_days, "test_days": test_days},
        "denoise": PURCHASE_DENOISE,
        # Shuffle partitions sized to the lines, as bench/etl.py does (3 for the file's 541,909):
        # the default 8 suits one night, and every partition writes a file into each of ~300 dates.
        "spark": {"conf": {"spark.sql.shuffle.partitions": str(shuffle_partitions(raw_lines))}},
        # The key comes from the environment (BENCH_USER_ID_KEY, set by run_pipeline): the same
        # hashed ids, so the same user order and results, on every machine.
        "privacy": {"create_key_file": False},
        "mlflow": {"experiment": "fusionrec-online-retail"},
    }
    # environ={}: the benchmark's settings, not whatever FUSIONREC_* the shell (or make) exports.
    return resolve_config(deep_merge(overrides, settings or {}), environ={})


def parse_setting(assignment: str) -> dict:
    """'user_encoder.time_gaps=false' -> {"user_encoder": {"time_gaps": False}}; the value is read
    as JSON (numbers, true/false, null), else kept as a string."""
    key, separator, text = assignment.partition("=")
    if not separator or not key.strip():
        raise argparse.ArgumentTypeError(f"--set {assignment!r}: expected KEY=VALUE, e.g. user_encoder.time_gaps=false")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    setting = {}
    set_dotted(setting, key.strip(), value)
    return setting


def land(work_dir: Path, path: Path) -> dict[str, int]:
    """Empty the lake, land every date of the file; {date: event lines}."""
    from jobs.etl.sources import land_source

    config = resolve_config({"home": str(work_dir)}, environ={})
    shutil.rmtree(config["lake_root"], ignore_errors=True)
    return land_source(config, SOURCE_FORMAT, path)


def plan(landed: dict[str, int], work_dir: Path, valid_days: int, test_days: int, settings: dict | None = None):
    """(config, the split normalize will make if denoise leaves every date some events).

    Checked before any Spark work, so a split that does not fit fails in seconds.
    """
    from jobs.etl.normalize_features import plan_splits

    config = bench_config(work_dir, window_days_covering(list(landed)), valid_days, test_days, sum(landed.values()),
                          settings)
    splits = plan_splits(max(landed), config["window_days"], list(landed), valid_days, test_days)
    return config, splits


class PeakMemory:
    """The largest resident memory of this process and its children while the block runs."""

    def __init__(self):
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, tree_rss_bytes(tree_pids(os.getpid())))
            self._stop.wait(SAMPLE_EVERY_S)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_pipeline(config: dict, ds: str, first_stage: str = SPARK_PHASE[0]) -> dict:
    """Run the stages for ds in DAG order from first_stage on; {stage: its result (with "seconds")}."""
    from jobs.pipeline import run_stage

    os.environ[config["privacy"]["key_env"]] = BENCH_USER_ID_KEY
    results: dict = {}
    stages = SPARK_PHASE + MODEL_PHASE
    for stage in stages[stages.index(first_stage):]:
        # Clean, denoise and validate read the dates ingest recorded in the night's manifest.
        results[stage] = run_stage(stage, config, ds)
        if stage == SPARK_PHASE[-1]:
            stop_spark()
    return results


def landed_lines(work_dir: Path) -> dict[str, int]:
    """{date: event lines} of the lake's landing partitions, as land() returned them."""
    import gzip

    config = resolve_config({"home": str(work_dir)}, environ={})
    landing = Path(partition_path(config, schema.LANDING_EVENTS, "2000-01-01")).parent
    counts = {}
    for partition in sorted(landing.glob("dt=*")):
        counts[partition.name[3:]] = sum(sum(1 for _ in gzip.open(path, "rt")) for path in partition.glob("*.gz"))
    if not counts:
        raise SystemExit(f"--resume-from: {landing} holds no landed dates; run without --resume-from first")
    return counts


def stop_spark() -> None:
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()


def read_json(path: str) -> dict:
    with open(path) as handle:
        return json.load(handle)


def summarize(config: dict, ds: str, landed: dict[str, int], results: dict, seconds: dict,
              wall_s: float, peak_mb: float, data: Path) -> dict:
    """The results document: the night's metrics, cold start, split, counts and costs."""
    report_dir = partition_path(config, schema.REPORTS, ds)
    metrics = read_json(os.path.join(report_dir, "metrics.json"))
    detail = read_json(os.path.join(report_dir, "metrics_detail.json"))
    meta = read_json(os.path.join(partition_path(config, schema.FEATURE_META, ds), "meta.json"))
    history = read_json(os.path.join(partition_path(config, schema.MODEL_ITEM_ENCODER, ds), "history.json"))
    primary = config["mlflow"]["primary_metric"]
    return {
        "data": data.name, "measured_on": dt.date.today().isoformat(), "cpu_cores": os.cpu_count(),
        "ds": ds, "window_days": config["window_days"], "split": config["split"],
        "split_dates": {"train": [meta["train_dates"][0], meta["train_dates"][-1]],
                        "n_train_dates": len(meta["train_dates"]),
                        "valid": meta["valid_dates"], "test": meta["test_dates"]},
        "n_test_examples": detail["n_examples"],
        "landed_lines": sum(landed.values()), "landed_dates": len(landed),
        # None when a --resume-from run did not re-run the stage.
        "clean": reason_totals(results["clean"]["summary"], "clean", "reasons") if "clean" in results else None,
        "denoise": (reason_totals(results["denoise"]["summary"], "denoised", "removed")
                    if "denoise" in results else None),
        "features": {key: meta[key] for key in ("n_users", "n_items", "n_items_in_catalog", "n_title_tokens",
                                                "events_per_split", "dropped_unknown_item")},
        "primary_metric": primary,
        "models": metrics,
        "intervals": {name: model["intervals"][primary] for name, model in detail["models"].items()},
        "cold_start": history["cold_start"],
        "skipped_stages": SKIPPED_STAGES,
        "stage_seconds": seconds, "wall_s": round(wall_s, 1), "peak_mb": round(peak_mb),
    }


def reason_totals(per_date: dict, kept_key: str, reasons_key: str) -> dict:
    """Kept rows and rows per reason, summed over the dates of clean's or denoise's summary."""
    totals = {"kept": sum(day[kept_key] for day in per_date.values()), "removed": {}}
    for day in per_date.values():
        for reason, value in day[reasons_key].items():
            rows = value["rows"] if isinstance(value, dict) else value
            totals["removed"][reason] = totals["removed"].get(reason, 0) + rows
    return totals


def report_text(config: dict, ds: str, summary: dict) -> str:
    """evaluate's metrics table (metrics.md), then cold start and where the time went."""
    with open(os.path.join(partition_path(config, schema.REPORTS, ds), "metrics.md")) as handle:
        lines = [handle.read()]
    split = summary["split_dates"]
    lines.append(f"split: train {split['train'][0]}..{split['train'][1]} ({split['n_train_dates']} dates), "
                 f"valid {', '.join(split['valid'])}, test {', '.join(split['test'])}")
    lines.append("item encoder cold start: " + ", ".join(f"{name} {value:.4g}"
                                                         for name, value in summary["cold_start"].items()))
    lines.append("seconds: " + ", ".join(f"{stage} {value}" for stage, value in summary["stage_seconds"].items()))
    lines.append(f"wall {summary['wall_s']:.0f} s, peak resident memory {summary['peak_mb']:,} MB")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"folder with {DATA_FILE}, or the file itself (default: {DEFAULT_DATA})")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR,
                        help="home of the run: lake (emptied first), MLflow store (default: %(default)s)")
    parser.add_argument("--valid-days", type=int, default=DEFAULT_VALID_DAYS,
                        help="calendar days before the test days that are the validation split (default: %(default)s)")
    parser.add_argument("--test-days", type=int, default=DEFAULT_TEST_DAYS,
                        help="the last calendar days of the data that are the test split (default: %(default)s)")
    parser.add_argument("--results", type=Path, default=RESULTS_FILE, help="JSON written (default: %(default)s)")
    parser.add_argument("--resume-from", choices=SPARK_PHASE[1:] + MODEL_PHASE,
                        help="keep the work dir's lake and run from this stage on (the earlier stages' outputs "
                             "must be there from a previous run with the same split)")
    parser.add_argument("--set", dest="assignments", action="append", default=[], type=parse_setting,
                        metavar="KEY=VALUE", help="a config setting on top of the benchmark's, e.g. "
                        "user_encoder.time_gaps=false (repeatable; the value is read as JSON)")
    args = parser.parse_args(argv)
    args.settings = {}
    for setting in args.assignments:
        args.settings = deep_merge(args.settings, setting)
    for name in ("valid_days", "test_days"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    args.work_dir = args.work_dir.resolve()
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    path = data_file(args.data)
    started = time.perf_counter()
    with PeakMemory() as memory:
        try:
            landed = landed_lines(args.work_dir) if args.resume_from else land(args.work_dir, path)
            land_s = round(time.perf_counter() - started, 1)
            config, splits = plan(landed, args.work_dir, args.valid_days, args.test_days, args.settings)
            ds = max(landed)
            (args.work_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            print(f"night {ds}: window {config['window_days']} days; valid {splits.valid[0]}..{splits.valid[-1]}, "
                  f"test {splits.test[0]}..{ds}")
            results = run_pipeline(config, ds, args.resume_from or SPARK_PHASE[0])
        except ValueError as error:  # bad input or settings: its message, not a stack trace
            raise SystemExit(f"bench online-retail: {error}") from None
    wall_s = time.perf_counter() - started
    seconds = {"land" if not args.resume_from else "count_landed": land_s,
               **{stage: result["seconds"] for stage, result in results.items()}}
    summary = {**summarize(config, ds, landed, results, seconds, wall_s, memory.peak_bytes / MIB, path),
               "settings": args.settings}  # what --set changed: the results say what they measured
    print("\n" + "=" * 72 + "\n" + report_text(config, ds, summary))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"written {args.results}")
    return summary


if __name__ == "__main__":
    main()
