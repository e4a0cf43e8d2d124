"""Where the Spark chain's time goes: one size, each stage's wall time, CPU by thread and slowest Spark stages.

    python bench/etl_profile.py --size 1M [--passes 2] [--stages clean denoise normalize]

It runs the nightly jobs (jobs.etl.clean, denoise, normalize_features) on bench/etl.py's
generated files for that size (generating them if missing), in this process, at local[2]
with the same settings as `make bench-etl`, and Spark's event log on. For each stage it prints

- the wall time;
- the Spark JVM's CPU seconds split by thread: the executor's task threads, the JIT
  compilers (C1 / C2), garbage collection, and the rest (driver, py4j, scheduler). The
  compilers' share is the warm-up that a fresh JVM pays for every new query plan;
- its slowest Spark stages (seconds, tasks, call site), from the event log.

--passes 2 runs the chain twice in the same JVM: the second pass has its code compiled
already, so the difference between the passes is the warm-up, and the second pass is the
cost that grows with the lines. Results also go to <work-dir>/profile/events=N/profile.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
for path in (REPO_ROOT, REPO_ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import etl as bench_etl  # noqa: E402  (bench/etl.py)

STAGES = bench_etl.SPARK_STAGES
THREAD_GROUPS = (("executor tasks", "Executor task"), ("JIT compilers", "C1 Compiler"), ("JIT compilers", "C2 Compiler"),
                 ("garbage collection", "GC Thread"), ("garbage collection", "G1 "))
SLOWEST_SPARK_STAGES = 6


def thread_cpu_seconds(pid: int) -> dict[int, tuple[str, float]]:
    """{thread id: (name, user + system CPU seconds)} of a process, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended while we looked
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        threads[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / ticks)
    return threads


def thread_group(name: str) -> str:
    return next((group for group, prefix in THREAD_GROUPS if name.startswith(prefix)), "driver and other")


def cpu_by_group(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds each thread group used between two thread_cpu_seconds snapshots."""
    used = collections.Counter()
    for thread, (name, seconds) in after.items():
        used[thread_group(name)] += seconds - before.get(thread, (name, 0.0))[1]
    return {group: round(seconds, 1) for group, seconds in used.most_common()}


def spark_stages(event_log: Path) -> list[dict]:
    """Every completed Spark stage: submitted / completed (epoch ms), tasks, call site."""
    stages = []
    for line in event_log.read_text().splitlines():
        event = json.loads(line)
        if event["Event"] == "SparkListenerStageCompleted":
            info = event["Stage Info"]
            stages.append({"submitted_ms": info["Submission Time"], "completed_ms": info["Completion Time"],
                           "tasks": info["Number of Tasks"], "name": info["Stage Name"]})
    return stages


def profile(args) -> dict:
    manifest = bench_etl.ensure_data(args.work_dir, args.size, args.days, args.end_date, args.seed, print)
    run_dir = args.work_dir / "profile" / f"events={args.size}"
    bench_etl.prepare_run_dir(run_dir, args.work_dir / "data" / f"events={args.size}" / "landing")
    event_log_dir = run_dir / "eventlog"
    event_log_dir.mkdir()
    settings = {"spark.eventLog.enabled": "true", "spark.eventLog.dir": str(event_log_dir),
                "spark.eventLog.compress": "false", "spark.eventLog.rolling.enabled": "false",
                **dict(args.spark_conf)}
    config = bench_etl.engine_config(run_dir, args.days, manifest["raw_lines"], args.spark_driver_memory, settings)
    os.environ.update({key: value for key, value in bench_etl.worker_env().items()
                       if key in ("FUSIONREC_USER_ID_KEY", "SPARK_LOCAL_IP", "PYSPARK_PYTHON")})

    from jobs.common.night import Night
    from jobs.common.spark_session import get_spark

    dates = sorted(manifest["lines_per_day"])
    night = Night.plan(config, dates[-1], dates)
    spark = get_spark(config)
    jvm_pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    runs = []
    for chain_pass in range(1, args.passes + 1):
        for stage in args.stages:
            before, started_ms, started = thread_cpu_seconds(jvm_pid), time.time() * 1000, time.perf_counter()
            bench_etl.run_spark_stage(stage, night)
            wall_s = time.perf_counter() - started
            runs.append({"pass": chain_pass, "stage": stage, "wall_s": round(wall_s, 1),
                         "jvm_cpu_s": cpu_by_group(before, thread_cpu_seconds(jvm_pid)),
                         "started_ms": started_ms, "ended_ms": time.time() * 1000})
            print(f"pass {chain_pass} {stage}: {wall_s:.1f} s, JVM CPU s {runs[-1]['jvm_cpu_s']}", flush=True)
    application = spark.sparkContext.applicationId
    spark.stop()
    stages = spark_stages(event_log_dir / application)
    for run in runs:
        inside = [stage for stage in stages if run["started_ms"] <= stage["submitted_ms"] <= run["ended_ms"]]
        for stage in inside:
            stage["s"] = round((stage["completed_ms"] - stage["submitted_ms"]) / 1000, 2)
        run["spark_stages"] = len(inside)
        run["slowest_spark_stages"] = [{key: stage[key] for key in ("s", "tasks", "name")}
                                       for stage in sorted(inside, key=lambda stage: -stage["s"])[:SLOWEST_SPARK_STAGES]]
    return {"events": args.size, "raw_lines": manifest["raw_lines"], "days": args.days, "passes": args.passes,
            "spark_conf": config["spark"]["conf"], "runs": runs}


def report(result: dict) -> str:
    lines = [f"{result['raw_lines']:,} raw lines over {result['days']} days"]
    for run in result["runs"]:
        cpu = ", ".join(f"{group} {seconds}" for group, seconds in run["jvm_cpu_s"].items())
        lines.append(f"\npass {run['pass']} {run['stage']}: {run['wall_s']} s wall; JVM CPU s: {cpu}; "
                     f"{run['spark_stages']} Spark stages, the slowest:")
        lines += [f"  {stage['s']:7.2f} s  {stage['tasks']:4d} tasks  {stage['name'][:100]}"
                  for stage in run["slowest_spark_stages"]]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=bench_etl.parse_size, default=1_000_000, help="raw lines, e.g. 1M")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                        help="in chain order; each reads what the previous wrote")
    parser.add_argument("--passes", type=int, default=1, help="run the chain this many times in one JVM")
    parser.add_argument("--work-dir", type=Path, default=bench_etl.DEFAULT_WORK_DIR)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--end-date", default="2026-11-27")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--spark-driver-memory", default="6g")
    parser.add_argument("--spark-conf", type=bench_etl.parse_setting, action="append", default=[],
                        metavar="KEY=VALUE", help="an extra Spark setting (repeatable)")
    args = parser.parse_args(argv)
    if args.passes < 1:
        parser.error("--passes must be at least 1")
    # Each run starts from an emptied lake, so a stage needs every stage before it.
    if tuple(args.stages) != STAGES[:len(args.stages)]:
        parser.error(f"--stages must start the chain {' '.join(STAGES)} (each reads what the one before "
                     f"wrote), e.g. 'clean' or 'clean denoise'; got {' '.join(args.stages)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    result = profile(args)
    output = args.work_dir / "profile" / f"events={args.size}" / "profile.json"
    output.write_text(json.dumps(result, indent=2))
    print(report(result))
    print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
