"""bench/etl_profile.py: CPU split by thread, and a tiny profile run end to end."""

import json
import os
import subprocess
import sys

import pytest

from tests.bench.bench_scripts import BENCH, load_bench_script

etl_profile = load_bench_script("etl_profile")


def test_cpu_by_group_counts_only_what_each_thread_used_between_snapshots():
    before = {1: ("Executor task l", 10.0), 2: ("C2 CompilerThre", 4.0), 3: ("Thread-3", 1.0)}
    after = {1: ("Executor task l", 13.5),  # +3.5
             2: ("C2 CompilerThre", 6.0),  # +2.0, with the new C1 thread's 0.5: JIT 2.5
             4: ("C1 CompilerThre", 0.5),  # started between the snapshots: all of it counts
             3: ("Thread-3", 1.3),  # +0.3: driver and other
             5: ("GC Thread#1", 0.7)}  # +0.7
    assert etl_profile.cpu_by_group(before, after) == {
        "executor tasks": 3.5, "JIT compilers": 2.5, "garbage collection": 0.7, "driver and other": 0.3}


def test_stages_must_start_the_chain_because_each_run_starts_from_an_empty_lake(capsys):
    assert etl_profile.parse_args(["--stages", "clean", "denoise"]).stages == ["clean", "denoise"]
    for stages in (["normalize"], ["denoise", "normalize"], ["clean", "normalize"]):
        with pytest.raises(SystemExit):
            etl_profile.parse_args(["--stages", *stages])
        assert "--stages must start the chain clean denoise normalize" in capsys.readouterr().err


def test_a_tiny_profile_attributes_spark_stages_to_the_chain_stage_that_ran_them(tmp_path):
    # A subprocess: the profile starts its own Spark session, with the event log on.
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent)}
    completed = subprocess.run(
        [sys.executable, str(BENCH / "etl_profile.py"), "--size", "3000", "--days", "3", "--stages", "clean",
         "denoise", "--work-dir", str(tmp_path), "--spark-driver-memory", "1g"],
        env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((tmp_path / "profile" / "events=3000" / "profile.json").read_text())
    assert [(run["pass"], run["stage"]) for run in result["runs"]] == [(1, "clean"), (1, "denoise")]
    for run in result["runs"]:
        assert run["wall_s"] > 0 and run["jvm_cpu_s"]["executor tasks"] > 0
        assert run["spark_stages"] >= 1 and run["slowest_spark_stages"]
        slowest = [stage["s"] for stage in run["slowest_spark_stages"]]
        assert slowest == sorted(slowest, reverse=True)
    assert "pass 1 denoise" in completed.stdout


def test_spark_stages_times_the_demo_worlds_spark_side_stages(tmp_path):
    # bench/spark_stages.py on the tiny world, two stages: it generates, ingests and runs them.
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent)}
    completed = subprocess.run(
        [sys.executable, str(BENCH / "spark_stages.py"), "--scale", "tiny", "--days", "4", "--stages", "validate",
         "clean", "--work-dir", str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((tmp_path / "spark_stages.json").read_text())
    assert list(result["seconds"]) == ["ingest", "validate", "clean"]
    assert result["spark_side_s"] == round(result["seconds"]["validate"] + result["seconds"]["clean"], 1)
    assert result["seconds"]["clean"] > 0
