"""Benchmark the clean -> denoise -> normalize chain: Spark at local[2] against single-process pandas.

    python bench/etl.py [--sizes 1000000 10000000 50000000] [--work-dir DIR] [--time-limit-s 7200]

For each size N (raw event lines, all days together) it

1. generates N lines once with the project's generator (devtools/generate.py: realistic dirt,
   duplicates, double clicks, bots), spread over --days days (normalize needs 3+: train,
   valid, test), into <work-dir>/data/events=N/landing; a later run reuses it;
2. runs the real jobs (jobs.etl.clean.main, jobs.etl.denoise.main on every day, jobs.etl.normalize_features.main
   on the last) in a fresh Python process with spark.master local[2];
3. runs the same chain in single-process pandas (bench/etl_pandas.py) on the same files,
   with a memory cap (--pandas-memory-limit-gib) and a time cap (--time-limit-s);
4. compares the two engines' counts (per date: rows kept and quarantined per reason after
   clean and after denoise; users, sequence events per split and items after normalize);
5. merges one row per size into bench/results/etl.json (written atomically) and prints a
   side-by-side table, then the cost ratio of consecutive sizes (the goal: 10x the events
   at most ~11x the time).

Each engine runs in its own process tree, whose resident memory (the Spark JVM is a child of
the Python driver) is summed every 0.2 s from /proc: `*_peak_mb` is the largest sum. A
tree that exceeds its cap, or leaves the machine under --min-available-gib, is killed and
its row says why (`*_error`) with `*_s` null. Once pandas fails on a size, the larger sizes
skip it. `*_s` is the chain's wall time measured inside the worker (Spark: from starting
the session, JVM start included, to the end of normalize); `*_stages_s` splits it.

Every engine writes into its own lake under <work-dir>/runs/events=N/<engine>/, whose raw/
is a link to the generated landing folder; it is emptied before each run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime as dt
import functools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # `python bench/etl.py` puts only bench/ on the path

from devtools import generate  # noqa: E402
from jobs.common.config import resolve_config  # noqa: E402
from jobs.common.lake import days_back  # noqa: E402

RESULTS_FILE = REPO_ROOT / "bench" / "results" / "etl.json"
DEFAULT_WORK_DIR = REPO_ROOT / ".fusionrec" / "bench-etl"
DEFAULT_SIZES = (1_000_000, 10_000_000, 50_000_000)
ENGINES = ("spark", "pandas")
MANIFEST = "_BENCH.json"
MIB = 1024 * 1024
GIB = 1024 * MIB
SAMPLE_EVERY_S = 0.2
# A fixed, public key: the benchmark's user ids are synthetic, and both engines must hash alike.
BENCH_USER_ID_KEY = "fusionrec-bench-etl-key"
# Generated lines per user and day at the "large" scale's activity, dirt and bots included
# (measured: 490,745 lines for 40,000 users on one day); sizes the user count for N lines.
LINES_PER_USER_DAY = 12.27


# ===========================================================================================
# Data
# ===========================================================================================
def parse_size(text: str) -> int:
    """1000000, 1M, 10m, 500k, 5e6 -> an integer number of events."""
    cleaned = text.strip().lower().replace("_", "").replace(",", "")
    factor = {"k": 1_000, "m": 1_000_000}.get(cleaned[-1:], 1)
    try:
        value = float(cleaned[:-1] if factor > 1 else cleaned) * factor
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of events: {text!r} (e.g. 1000000 or 1M)")
    if value < 1000:
        raise argparse.ArgumentTypeError(f"a size must be at least 1000 events, got {text!r}")
    return int(value)


def parse_setting(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key.startswith("spark."):
        raise argparse.ArgumentTypeError(f"expected spark.KEY=VALUE, got {text!r}")
    return key, value


def bench_scale(events: int, days: int) -> generate.Scale:
    """The generator's world sized for about `events` lines over `days` days.

    From 200k events the "large" world (20,000 items, 40 categories, 20,000 users per part
    file) with as many users as the size needs; below, the "tiny" world's catalog.
    """
    base = generate.SCALES["large" if events >= 200_000 else "tiny"]
    n_users = max(10, round(events / (days * LINES_PER_USER_DAY)))
    return dataclasses.replace(base, n_users=n_users)


def ensure_data(work_dir: Path, events: int, days: int, end_date: str, seed: int, log, jobs: int = 2) -> dict:
    """Generate the size's landing folder unless a complete one with the same parameters exists."""
    folder = work_dir / "data" / f"events={events}"
    scale = bench_scale(events, days)
    wanted = {"events": events, "days": days, "end_date": end_date, "seed": seed,
              "scale": dataclasses.asdict(scale), "generator_dirt_rates": generate.DEFAULT_DIRT_RATES}
    manifest_path = folder / MANIFEST
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if {key: manifest.get(key) for key in wanted} == wanted:
            log(f"[{events:,}] reusing {folder} ({manifest['raw_lines']:,} lines, generated in "
                f"{manifest['generate_s']:.0f} s)")
            return manifest
        log(f"[{events:,}] {folder} was generated with other parameters: generating again")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    log(f"[{events:,}] generating about {events:,} lines: {scale.n_users:,} users, {scale.n_items:,} items, "
        f"{days} days ending {end_date}")
    started = time.perf_counter()
    dates = days_back(end_date, days)
    per_day = {}
    # Days are independent (the world is rebuilt from the seed in each worker), so they are
    # generated in parallel; the files are the same as one process would write.
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, min(jobs, days))) as pool:
        landed = pool.map(generate_day, [scale] * days, [seed] * days, [days] * days, range(days), dates,
                          [str(folder)] * days)
        for date, summary in zip(dates, landed):
            per_day[date] = summary["lines"]
            log(f"  {date}: {summary['lines']:,} lines ({summary['defect_lines']:,} planted defects)")
    seconds = time.perf_counter() - started
    raw_lines = sum(per_day.values())
    manifest = {**wanted, "raw_lines": raw_lines, "lines_per_day": per_day, "generate_s": round(seconds, 1),
                "generate_lines_per_s": round(raw_lines / seconds)}
    _write_json_atomically(manifest_path, manifest)
    log(f"[{events:,}] generated {raw_lines:,} lines in {seconds:.0f} s ({raw_lines / seconds:,.0f} lines/s)")
    return manifest


@functools.lru_cache(maxsize=1)
def _world(scale: generate.Scale, seed: int, days: int) -> generate.World:
    return generate.build_world(scale, seed, days)


def generate_day(scale: generate.Scale, seed: int, days: int, offset: int, date: str, lake_root: str) -> dict:
    """Land one generated date (devtools.generate.write_day); its _SUMMARY.json content."""
    return generate.write_day(_world(scale, seed, days), scale, "bench", seed, generate.resolve_dirt_rates(None),
                              date, offset, lake_root, lambda _: None)


# ===========================================================================================
# Running one engine as a watched process tree
# ===========================================================================================
@dataclasses.dataclass
class TreeRun:
    returncode: int | None
    wall_s: float
    peak_mb: float
    error: str | None  # why it was stopped (memory / time), or None


def tree_pids(root: int) -> list[int]:
    """root and every descendant (from /proc/<pid>/task/<tid>/children)."""
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/children") as handle:
                    pending += [int(child) for child in handle.read().split()]
            except OSError:
                pass
    return found


def tree_rss_bytes(pids: list[int], proc: str = "/proc") -> int:
    """Resident bytes of the processes, each address space counted once.

    A process that a JVM thread starts (Hadoop's shell commands, PySpark's daemon) shares the
    JVM's memory until it runs its own program, and its statm shows the JVM's pages: summing
    it too counted the JVM two or three times at those moments. A child whose statm is
    exactly its parent's is that shared address space, so it is left out.
    """
    page = os.sysconf("SC_PAGE_SIZE")
    statm, parent = {}, {}
    for pid in pids:
        try:
            with open(f"{proc}/{pid}/statm") as handle:
                statm[pid] = handle.read().split()
            with open(f"{proc}/{pid}/stat") as handle:
                parent[pid] = int(handle.read().rsplit(")", 1)[1].split()[1])  # the comm may hold spaces
        except (OSError, IndexError, ValueError):
            statm.pop(pid, None)  # exited between listing and reading
    total = 0
    for pid, fields in statm.items():
        if statm.get(parent.get(pid)) != fields:
            total += int(fields[1]) * page
    return total


def available_memory_bytes() -> int:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def run_watched(command: list[str], env: dict, log_path: Path, *, memory_limit_bytes: int | None,
                min_available_bytes: int, time_limit_s: float) -> TreeRun:
    """Run command in its own session; sample the tree's RSS; kill the tree past a limit."""
    started = time.perf_counter()
    peak = 0
    error = None
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
                                   start_new_session=True)
        seen: set[int] = set()
        while process.poll() is None:
            pids = tree_pids(process.pid)
            seen.update(pids)
            rss = tree_rss_bytes(pids)
            peak = max(peak, rss)
            elapsed = time.perf_counter() - started
            if memory_limit_bytes is not None and rss > memory_limit_bytes:
                error = f"exceeded {memory_limit_bytes / GIB:g} GiB resident memory after {elapsed:.0f} s"
            elif available_memory_bytes() < min_available_bytes:
                error = (f"the machine fell under {min_available_bytes / GIB:g} GiB of available memory "
                         f"at {rss / GIB:.1f} GiB resident after {elapsed:.0f} s")
            elif elapsed > time_limit_s:
                error = f"exceeded the time limit of {time_limit_s:g} s"
            if error:
                kill_tree(process, seen | set(tree_pids(process.pid)))
                break
            time.sleep(SAMPLE_EVERY_S)
        process.wait()
    return TreeRun(process.returncode, time.perf_counter() - started, peak / MIB, error)


def kill_tree(process: subprocess.Popen, pids: set[int]) -> None:
    """SIGKILL the run's process group, then any descendant that left it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ===========================================================================================
# The engines
# ===========================================================================================
def shuffle_partitions(raw_lines: int) -> int:
    """About 250k raw lines per shuffle partition, 2 to 200: 4 at 1M, 40 at 10M, 200 at 50M.

    The pipeline's default (8) suits a night of the demo; a fixed count would make the
    partitions of 50M events 25 times larger than those of 2M and spill all the more.
    """
    return int(min(200, max(2, math.ceil(raw_lines / 250_000))))


def engine_config(run_dir: Path, days: int, raw_lines: int, driver_memory: str,
                  spark_conf: dict | None = None) -> dict:
    """The resolved config both engines read: defaults, the run's own lake, local[2].

    spark_conf: extra Spark settings (--spark-conf), applied last.
    """
    overrides = {
        "home": str(run_dir / "home"), "lake_root": str(run_dir / "lake"),
        "window_days": max(days, resolve_config(environ={})["window_days"]),
        "spark": {"master": "local[2]", "conf": {
            "spark.driver.memory": driver_memory,
            "spark.sql.shuffle.partitions": str(shuffle_partitions(raw_lines)), **(spark_conf or {})}},
        # The key comes from the environment (BENCH_USER_ID_KEY); never create a key file.
        "privacy": {"create_key_file": False},
    }
    # environ={}: the benchmark's settings, not whatever FUSIONREC_* the shell exports.
    return resolve_config(overrides, environ={})


def prepare_run_dir(run_dir: Path, landing: Path) -> None:
    """An empty lake whose raw/ is the generated landing folder (events and catalog)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / "lake").mkdir(parents=True)
    (run_dir / "lake" / "raw").symlink_to(landing.resolve(), target_is_directory=True)


def engine_command(engine: str, config_path: Path, dates: list[str], summary_path: Path) -> list[str]:
    if engine == "spark":
        script = [str(Path(__file__).resolve()), "--worker", "spark"]
    else:
        script = [str(REPO_ROOT / "bench" / "etl_pandas.py")]
    return [sys.executable, *script, "--config", str(config_path), "--dates", *dates, "--summary", str(summary_path)]


def worker_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["FUSIONREC_USER_ID_KEY"] = BENCH_USER_ID_KEY
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env["PYSPARK_PYTHON"] = sys.executable
    return env


def run_engine(engine: str, events: int, manifest: dict, args, log) -> dict:
    """Run one engine on one size; {"s", "stages_s", "peak_mb", "error", "summary", ...}."""
    run_dir = args.work_dir / "runs" / f"events={events}" / engine
    prepare_run_dir(run_dir, args.work_dir / "data" / f"events={events}" / "landing")
    config = engine_config(run_dir, args.days, manifest["raw_lines"], args.spark_driver_memory,
                           dict(args.spark_conf))
    config_path, summary_path, log_path = run_dir / "config.json", run_dir / "summary.json", run_dir / "run.log"
    config_path.write_text(json.dumps(config, indent=2))
    dates = sorted(manifest["lines_per_day"])
    limit = args.pandas_memory_limit_gib * GIB if engine == "pandas" else None
    load = os.getloadavg()[0]
    log(f"[{events:,}] {engine}: running (load average {load:.1f}; log {log_path})")
    run = run_watched(engine_command(engine, config_path, dates, summary_path), worker_env(), log_path,
                      memory_limit_bytes=limit, min_available_bytes=int(args.min_available_gib * GIB),
                      time_limit_s=args.time_limit_s)
    result = {"wall_s": round(run.wall_s, 1), "peak_mb": round(run.peak_mb), "load_avg_1m": round(load, 2),
              "error": run.error, "s": None, "stages_s": None, "summary": None}
    if run.error is None and run.returncode == 0 and summary_path.exists():
        summary = json.loads(summary_path.read_text())
        result.update(s=round(sum(summary["seconds"].values()), 1), stages_s=summary["seconds"], summary=summary)
        log(f"[{events:,}] {engine}: {result['s']:.1f} s {summary['seconds']}, peak {result['peak_mb']:,} MB")
    else:
        result["error"] = run.error or f"exited with status {run.returncode}: {log_tail(log_path, 3)}"
        log(f"[{events:,}] {engine}: did not finish: {result['error']} (peak {result['peak_mb']:,} MB)\n"
            f"{log_tail(log_path)}")
    if not args.keep_outputs:
        # The lake's outputs can be GBs per size; the config, log and summary stay.
        for name in ("lake", "home"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
    return result


SPARK_STAGES = ("clean", "denoise", "normalize")  # chain order: each reads what the one before wrote


def run_spark_stage(stage: str, night) -> dict:
    """One stage of the Spark chain, the nightly job the DAG's task runs; returns its result."""
    from jobs.etl import clean, denoise
    from jobs.etl import normalize_features as normalize

    return {"clean": clean.run, "denoise": denoise.run, "normalize": normalize.run}[stage](night)


def spark_worker(config_path: str, dates: list[str], summary_path: str) -> int:
    """The Spark chain in this process: the nightly jobs, as the DAG's tasks call them."""
    from jobs.common.night import Night
    from jobs.common.spark_session import get_spark

    config = json.loads(Path(config_path).read_text())
    seconds = {}
    started = time.perf_counter()
    spark = get_spark(config)
    seconds["startup"] = round(time.perf_counter() - started, 2)
    results = {}
    night = Night.plan(config, dates[-1], dates)
    for stage in SPARK_STAGES:
        started = time.perf_counter()
        result = run_spark_stage(stage, night)
        results[stage] = result if stage == "normalize" else result["summary"]  # normalize returns its meta
        seconds[stage] = round(time.perf_counter() - started, 2)
        print(f"spark {stage}: {seconds[stage]:.1f} s", flush=True)
    spark.stop()
    Path(summary_path).write_text(json.dumps({"seconds": seconds, **results}, indent=2, sort_keys=True, default=str))
    return 0


# ===========================================================================================
# Comparing the engines
# ===========================================================================================
def comparable_counts(summary: dict) -> dict:
    """The counts both engines must agree on, keyed by a readable name."""
    counts = {}
    for ds, day in summary["clean"].items():
        counts[f"clean {ds} raw_lines"] = day["raw_lines"]
        counts[f"clean {ds} kept"] = day["clean"]
        for reason, rows in day["reasons"].items():
            counts[f"clean {ds} {reason}"] = rows
    for ds, day in summary["denoise"].items():
        counts[f"denoise {ds} kept"] = day["denoised"]
        for reason, removed in day["removed"].items():
            counts[f"denoise {ds} {reason}"] = removed["rows"]
            counts[f"denoise {ds} {reason} users"] = removed["users"]
    meta = summary["normalize"]
    for key in ("n_users", "n_items", "n_items_in_catalog", "n_categories", "n_brands", "n_title_tokens",
                "dropped_unknown_item"):
        if key in meta:
            counts[f"normalize {key}"] = meta[key]
    for split, rows in meta["events_per_split"].items():
        counts[f"normalize {split} events"] = rows
    return counts


def count_differences(spark_summary: dict, pandas_summary: dict) -> list[str]:
    """'name: spark X, pandas Y' for every count the engines disagree on ([] = equivalent)."""
    spark_counts, pandas_counts = comparable_counts(spark_summary), comparable_counts(pandas_summary)
    return [f"{name}: spark {spark_counts.get(name)}, pandas {pandas_counts.get(name)}"
            for name in sorted(set(spark_counts) | set(pandas_counts))
            if spark_counts.get(name) != pandas_counts.get(name)]


# ===========================================================================================
# Results
# ===========================================================================================
def result_row(events: int, manifest: dict, spark: dict | None, pandas: dict | None, args) -> dict:
    lines = manifest["raw_lines"]
    row = {"events": events, "raw_lines": lines, "days": args.days,
           "generate_s": manifest["generate_s"], "generate_lines_per_s": manifest["generate_lines_per_s"]}
    for engine, result in (("spark", spark), ("pandas", pandas)):
        result = result or {"s": None, "peak_mb": None, "error": "not run", "stages_s": None, "wall_s": None,
                            "load_avg_1m": None}
        row[f"{engine}_s"] = result["s"]
        row[f"{engine}_peak_mb"] = result["peak_mb"]
        row[f"{engine}_events_per_s"] = round(lines / result["s"]) if result["s"] else None
        row[f"{engine}_stages_s"] = result["stages_s"]
        row[f"{engine}_process_wall_s"] = result["wall_s"]
        row[f"{engine}_load_avg_1m"] = result["load_avg_1m"]
        row[f"{engine}_error"] = result["error"]
    summary = (pandas or {}).get("summary") or {}
    row["pandas_peak_mb_after_stage"] = summary.get("peak_mb_after")  # the worker's own peak after each stage
    both_finished = row["pandas_s"] and row["spark_s"]
    row["pandas_over_spark"] = round(row["pandas_s"] / row["spark_s"], 2) if both_finished else None
    both = spark and pandas and spark.get("summary") and pandas.get("summary")
    differences = count_differences(spark["summary"], pandas["summary"]) if both else None
    row["counts_match"] = None if differences is None else not differences
    row["count_differences"] = differences[:50] if differences else []
    row["spark_master"] = "local[2]"
    row["spark_driver_memory"] = args.spark_driver_memory
    row["spark_shuffle_partitions"] = shuffle_partitions(lines)
    row["spark_conf_overrides"] = dict(args.spark_conf)
    row["pandas_memory_limit_gib"] = args.pandas_memory_limit_gib
    row["measured_on"] = dt.date.today().isoformat()
    return row


def merge_rows(path: Path, rows: list[dict]) -> list[dict]:
    """The file's rows with these sizes replaced, sorted by size."""
    existing = json.loads(path.read_text()) if path.exists() else []
    fresh = {row["events"]: row for row in rows}
    merged = [row for row in existing if row.get("events") not in fresh] + list(fresh.values())
    return sorted(merged, key=lambda row: row["events"])


def _write_json_atomically(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(value, stream, indent=2)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _cell(value, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    header = ("| events | raw lines | spark s | pandas s | pandas/spark | spark peak MB | pandas peak MB "
              "| spark events/s | pandas events/s | counts match |")
    lines = [header, "|" + "---:|" * 9 + "---|"]
    for row in rows:
        pandas_s = _cell(row["pandas_s"], ",.1f") if row["pandas_s"] is not None else f"- ({row['pandas_error']})"
        spark_s = _cell(row["spark_s"], ",.1f") if row["spark_s"] is not None else f"- ({row['spark_error']})"
        lines.append(f"| {row['events']:,} | {row['raw_lines']:,} | {spark_s} | {pandas_s} "
                     f"| {_cell(row['pandas_over_spark'], '.2f')} | {_cell(row['spark_peak_mb'])} "
                     f"| {_cell(row['pandas_peak_mb'])} | {_cell(row['spark_events_per_s'])} "
                     f"| {_cell(row['pandas_events_per_s'])} | {_cell(row['counts_match'], '')} |")
    return "\n".join(lines)


def cost_ratios(rows: list[dict]) -> list[str]:
    """Time ratio of consecutive sizes against their line ratio, per engine (linear: equal)."""
    notes = []
    for smaller, larger in zip(rows, rows[1:]):
        line_ratio = larger["raw_lines"] / smaller["raw_lines"]
        for engine in ENGINES:
            if smaller[f"{engine}_s"] and larger[f"{engine}_s"]:
                ratio = larger[f"{engine}_s"] / smaller[f"{engine}_s"]
                notes.append(f"{engine}: {larger['events']:,} / {smaller['events']:,} events costs {ratio:.1f}x "
                             f"for {line_ratio:.1f}x the lines")
    return notes


# ===========================================================================================
# Main
# ===========================================================================================
def run_benchmark(args, log=print) -> list[dict]:
    rows = []
    pandas_failed_at = None
    for events in sorted(args.sizes):
        manifest = ensure_data(args.work_dir, events, args.days, args.end_date, args.seed, log, args.generate_jobs)
        spark = run_engine("spark", events, manifest, args, log) if "spark" in args.engines else None
        pandas = None
        if "pandas" in args.engines:
            if pandas_failed_at is not None:
                pandas = {"s": None, "peak_mb": None, "stages_s": None, "wall_s": None, "load_avg_1m": None,
                          "error": f"skipped: did not finish {pandas_failed_at[0]:,} events ({pandas_failed_at[1]})"}
            else:
                pandas = run_engine("pandas", events, manifest, args, log)
                if pandas["s"] is None:
                    pandas_failed_at = (events, pandas["error"])
        rows.append(result_row(events, manifest, spark, pandas, args))
        if rows[-1]["count_differences"]:
            log(f"[{events:,}] the engines' counts differ:\n  " + "\n  ".join(rows[-1]["count_differences"]))
        merged = merge_rows(args.output, rows)
        _write_json_atomically(args.output, merged)
        log(table(rows))
    log(f"\nwrote {args.output}\n")
    log(table(rows))
    for note in cost_ratios(rows):
        log(note)
    finished = {engine: max((row["events"] for row in rows if row[f"{engine}_s"] is not None), default=None)
                for engine in args.engines}
    for engine, largest in finished.items():
        log(f"largest input {engine} finished: {'none' if largest is None else format(largest, ',')} events")
    return rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=list(DEFAULT_SIZES),
                        help="raw event lines per run, all days together (e.g. 1000000 10M 50M)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR,
                        help="generated data (reused) and the engines' lakes (default .fusionrec/bench-etl)")
    parser.add_argument("--output", type=Path, default=RESULTS_FILE, help="results JSON (rows merged by size)")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--days", type=int, default=7, help="days the events are spread over (3 or more)")
    parser.add_argument("--end-date", default="2026-11-27", help="last generated day, YYYY-MM-DD")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--generate-jobs", type=int, default=2, help="processes generating days in parallel")
    parser.add_argument("--spark-driver-memory", default="6g",
                        help="local[2] runs inside the driver JVM; its heap (default 6g of the 24 GiB)")
    parser.add_argument("--spark-conf", type=parse_setting, action="append", default=[], metavar="KEY=VALUE",
                        help="an extra Spark setting for the Spark runs (repeatable), "
                             "e.g. spark.sql.adaptive.enabled=false")
    parser.add_argument("--pandas-memory-limit-gib", type=float, default=20.0,
                        help="kill the pandas run above this resident memory")
    parser.add_argument("--min-available-gib", type=float, default=1.0,
                        help="kill any run that leaves the machine with less available memory")
    parser.add_argument("--time-limit-s", type=float, default=14400.0,
                        help="kill a run after this many seconds (default 4 h: Spark on 50M events on 2 shared cores)")
    parser.add_argument("--keep-outputs", action="store_true", help="keep each engine's lake after its run")
    parser.add_argument("--worker", choices=("spark",), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--dates", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--summary", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.days < 3:
        parser.error("--days must be at least 3 (normalize needs train, valid and test days)")
    args.work_dir = args.work_dir.resolve()
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker == "spark":
        return spark_worker(args.config, args.dates, args.summary)
    run_benchmark(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
