"""jobs/common/spark_submit.py and the spark_submit deploy mode: the shipped zip, the command, a real run."""

import json
import os
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from jobs.common.night import Night
from jobs import pipeline as stages
from jobs.common import spark_submit as submit
from jobs.common.config import resolve_config
from jobs.common.lake import partition_path
from jobs.common.schema import CLEAN_EVENTS, QUARANTINE_EVENTS, RAW_CATALOG, RAW_EVENTS
from jobs.common.spark_session import ship_jobs_package

DAY = "2026-11-27"
REPO = Path(__file__).resolve().parents[2]


# --- The zip ---------------------------------------------------------------------------------

# What the Spark stages (clean, denoise, normalize_features, train_baselines) and the CLI that
# runs them import, written out by hand: helpers included, packages' __init__.py on the way.
ZIP_MUST_HOLD = {
    "jobs/__init__.py", "jobs/pipeline.py",
    "jobs/common/__init__.py", "jobs/common/night.py", "jobs/common/lake.py", "jobs/common/schema.py",
    "jobs/common/spark_io.py", "jobs/common/spark_session.py", "jobs/common/features.py",
    "jobs/etl/__init__.py", "jobs/etl/clean.py", "jobs/etl/denoise.py", "jobs/etl/normalize_features.py",
    "jobs/etl/privacy.py", "jobs/etl/sessionize.py", "jobs/etl/vocabulary.py",
    "jobs/train/__init__.py", "jobs/train/train_baselines.py", "jobs/train/baselines.py",
    "jobs/evaluation/__init__.py", "jobs/evaluation/metrics.py",
}
# Stages without Spark (TensorFlow training, fusion, serving) and what only they import.
ZIP_MUST_NOT_HOLD = ("jobs/train/train_user_encoder.py", "jobs/train/train_item_encoder.py",
                     "jobs/train/encoder_scorers.py", "jobs/train/models/", "jobs/fusion/", "jobs/serving/",
                     "jobs/etl/ingest.py", "jobs/etl/validate.py", "devtools/", "bench/")


def test_the_zip_holds_only_what_the_spark_stages_import_and_they_import_from_it_alone(tmp_path):
    package = submit.package_jobs(tmp_path)

    names = zipfile.ZipFile(package).namelist()
    assert names == sorted(names) and all(name.startswith("jobs/") and name.endswith(".py") for name in names)
    assert ZIP_MUST_HOLD <= set(names), sorted(ZIP_MUST_HOLD - set(names))
    assert [name for name in names if name.startswith(ZIP_MUST_NOT_HOLD)] == []
    # A fresh interpreter outside the checkout, with nothing but the zip on its path: every
    # Spark stage imports (through the CLI's own lookup), a TensorFlow stage does not exist.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    probe = (f"import sys; sys.path.insert(0, {package!r}); import jobs.pipeline as p\n"
             "for stage in p.STAGES:\n"
             "    if stage.uses_spark: print(p.stage_module(stage.name).__file__)\n"
             "try:\n    import jobs.train.train_user_encoder\nexcept ModuleNotFoundError: print('no encoder')\n")
    completed = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == [
        os.path.join(package, "jobs", *module) for module in (
            ("etl", "clean.py"), ("etl", "denoise.py"), ("etl", "normalize_features.py"),
            ("train", "train_baselines.py"))] + ["no encoder"]


def test_the_zip_is_deterministic_and_rebuilt_only_when_a_source_changes(tmp_path, monkeypatch):
    first = submit.package_jobs(tmp_path / "a")
    again = submit.package_jobs(tmp_path / "a")
    elsewhere = submit.package_jobs(tmp_path / "b")
    assert again == first and os.path.basename(elsewhere) == os.path.basename(first)
    assert Path(elsewhere).read_bytes() == Path(first).read_bytes()  # byte for byte
    assert Path(first).name.startswith(submit.ZIP_PREFIX) and len(os.listdir(tmp_path / "a")) == 1
    assert all(entry.date_time == submit.ZIP_DATE_TIME for entry in zipfile.ZipFile(first).infolist())

    # The same package with one module edited: a new name, the old zip stays for running tasks.
    copy_root = tmp_path / "checkout"
    for name, path in submit.jobs_sources():
        target = copy_root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    (copy_root / "jobs" / "etl" / "clean.py").write_text((copy_root / "jobs" / "etl" / "clean.py").read_text()
                                                         + "\n# edited\n")
    monkeypatch.setattr(submit, "JOBS_DIR", copy_root / "jobs")
    edited = submit.package_jobs(tmp_path / "a")
    assert edited != first and sorted(os.listdir(tmp_path / "a")) == sorted(
        [os.path.basename(first), os.path.basename(edited)])
    assert zipfile.ZipFile(edited).read("jobs/etl/clean.py").endswith(b"# edited\n")


# --- The command -----------------------------------------------------------------------------

def submit_config(tmp_path, **spark):
    return resolve_config({"home": str(tmp_path), "spark": {"master": "spark://master:7077", "deploy": "spark_submit",
                                                            "conf": {"spark.executor.memory": "2g"}, **spark}},
                          environ={})


def test_the_command_carries_master_name_each_conf_item_the_extra_args_and_the_zip(tmp_path, monkeypatch):
    monkeypatch.delenv("SPARK_HOME", raising=False)
    config = submit_config(tmp_path, submit_args=["--deploy-mode", "client", "--executor-cores", "2"])

    command = submit.spark_submit_command(config, "clean", DAY, "/tmp/night.json", "/tmp/r.json")

    import pyspark
    conf = config["spark"]["conf"]
    assert conf["spark.executor.memory"] == "2g" and len(conf) > 1  # the defaults are merged in
    expected_confs = [arg for key, value in {"spark.log.level": "WARN", **conf}.items()
                      for arg in ("--conf", f"{key}={value}")]
    assert command == [
        str(Path(pyspark.__file__).resolve().parent / "bin" / "spark-submit"),
        "--master", "spark://master:7077", "--name", f"fusionrec-clean-{DAY}",
        *expected_confs,
        "--deploy-mode", "client", "--executor-cores", "2",
        "--py-files", submit.package_jobs(submit.py_files_dir(config)),
        str(submit.JOBS_DIR / "pipeline.py"), "clean", "--night-file", "/tmp/night.json",
        "--result-file", "/tmp/r.json",
    ]
    assert os.access(command[0], os.X_OK)


def test_spark_home_picks_the_spark_submit_and_a_missing_one_is_named(tmp_path, monkeypatch):
    spark_home = tmp_path / "spark"
    (spark_home / "bin").mkdir(parents=True)
    (spark_home / "bin" / "spark-submit").write_text("#!/bin/sh\n")
    monkeypatch.setenv("SPARK_HOME", str(spark_home))
    assert submit.spark_submit_executable() == str(spark_home / "bin" / "spark-submit")
    monkeypatch.setenv("SPARK_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=f"no spark-submit at {tmp_path}/nowhere/bin/spark-submit "
                                                f"\\(from SPARK_HOME="):
        submit.spark_submit_executable()


def test_submit_args_must_be_a_list_of_strings(tmp_path):
    # The typed config refuses it when resolved, before any command is built.
    with pytest.raises(ValueError, match="config spark.submit_args: expected a list, got '--deploy-mode client'"):
        submit_config(tmp_path, submit_args="--deploy-mode client")
    with pytest.raises(ValueError, match=r"config spark.submit_args.1: expected a string, got 2"):
        submit_config(tmp_path, submit_args=["--executor-cores", 2])


def test_an_unknown_deploy_mode_is_named(tmp_path):
    with pytest.raises(ValueError, match="config spark.deploy: input should be 'in_process' or 'spark_submit', "
                                         "got 'yarn'"):
        submit_config(tmp_path, deploy="yarn")
    # A config dict built by hand (not resolved) is still checked before anything runs.
    config = dict(submit_config(tmp_path), spark=dict(submit_config(tmp_path)["spark"], deploy="yarn"))
    with pytest.raises(ValueError, match="spark.deploy .* is 'yarn'; choose one of in_process, spark_submit"):
        stages.run_night_stage("clean", Night.plan(config, DAY, [DAY]))


def test_the_child_gets_the_parents_night_and_no_variable_that_would_override_it(tmp_path):
    config = submit_config(tmp_path)
    child = submit.child_config(config, "clean", DAY)
    assert child["spark"]["deploy"] == "in_process" and config["spark"]["deploy"] == "spark_submit"
    assert child["spark"]["app_name"] == f"fusionrec-clean-{DAY}" and config["spark"]["app_name"] == "fusionrec"
    env = submit.child_environment({"FUSIONREC_LAKE": "/elsewhere", "FUSIONREC_SPARK_DEPLOY": "spark_submit",
                                    "FUSIONREC_CONFIG": "/etc/other.json", "FUSIONREC_USER_ID_KEY": "k",
                                    "PATH": "/bin"})
    assert {"FUSIONREC_CONFIG", "FUSIONREC_LAKE", "FUSIONREC_SPARK_DEPLOY"}.isdisjoint(env)
    assert env["FUSIONREC_USER_ID_KEY"] == "k"  # secrets pass
    assert env["PYSPARK_PYTHON"] == sys.executable == env["PYSPARK_DRIVER_PYTHON"]
    # The night file carries the parent's context whole: config, date, window and dates.
    night = Night.plan(child, DAY, ["2026-11-25", DAY])
    assert Night.from_json(night.to_json()) == night
    assert night.window[-1] == DAY and len(night.window) == child["window_days"]


def fake_spark_submit(tmp_path, monkeypatch, script: str) -> None:
    """A SPARK_HOME whose spark-submit is a shell script (no JVM): the protocol alone."""
    executable = tmp_path / "fake-spark" / "bin" / "spark-submit"
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\n" + script)
    executable.chmod(executable.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("SPARK_HOME", str(executable.parent.parent))


def test_a_failing_child_raises_with_its_error_and_last_lines(tmp_path, monkeypatch):
    # The child prints 50 lines, reports its error in the result file (the last argument) and exits 1.
    fake_spark_submit(tmp_path, monkeypatch, """
i=1; while [ $i -le 50 ]; do echo "log line $i"; i=$((i+1)); done
for last; do :; done
echo '{"error": "UnreadableFileError: cannot read file:/lake/raw/events/dt=2026-11-27/a.jsonl.gz"}' > "$last"
exit 1
""")
    with pytest.raises(submit.SparkSubmitError) as raised:
        stages.run_night_stage("clean", Night.plan(submit_config(tmp_path), DAY, [DAY]))
    message = str(raised.value)
    assert message.splitlines()[0] == (
        f"spark-submit of stage clean for {DAY} failed (exit code 1): "
        "UnreadableFileError: cannot read file:/lake/raw/events/dt=2026-11-27/a.jsonl.gz")
    assert message.splitlines()[1:] == ["last 40 lines of its output:"] + [
        f"  log line {n}" for n in range(11, 51)]
    assert os.listdir(tmp_path / "spark" / "submit") == []  # config and result files removed


def test_the_clean_child_gets_the_user_id_key_this_task_resolved(tmp_path, monkeypatch):
    # As if the key were an Airflow connection only this task can read: the (fake) child
    # reports the key variable it sees, and the config file it got has no key in it.
    import jobs.etl.privacy

    monkeypatch.delenv("FUSIONREC_USER_ID_KEY", raising=False)
    monkeypatch.setattr(jobs.etl.privacy, "resolve_user_id_key", lambda config: b"k3y-from-the-connection")
    fake_spark_submit(tmp_path, monkeypatch, """
for last; do :; done
night=""; previous=""
for argument; do [ "$previous" = "--night-file" ] && night="$argument"; previous="$argument"; done
printf '{"result": {"key": "%s", "key_in_config": %s}}' "$FUSIONREC_USER_ID_KEY" \
  "$(grep -c k3y "$night")" > "$last"
""")
    config = submit_config(tmp_path)
    result = stages.run_night_stage("clean", Night.plan(config, DAY, [DAY]))
    assert (result["key"], result["key_in_config"]) == ("k3y-from-the-connection", 0)
    assert stages.run_night_stage("denoise", Night.plan(config, DAY, [DAY]))["key"] == ""  # no hashing there


def test_a_child_that_dies_without_a_result_is_named_by_its_last_error_line(tmp_path, monkeypatch):
    fake_spark_submit(tmp_path, monkeypatch, 'echo "Traceback (most recent call last):"\n'
                                             'echo "ModuleNotFoundError: No module named \'jobs\'"\n'
                                             'echo "shutdown hook called"\nexit 0\n')
    with pytest.raises(submit.SparkSubmitError,
                       match=r"failed \(exit code 0\): ModuleNotFoundError: No module named 'jobs'"):
        stages.run_night_stage("normalize_features", Night.plan(submit_config(tmp_path), DAY))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat_file:  # a zombie is not alive
        return stat_file.read().rsplit(")", 1)[1].split()[0] != "Z"


def _wait_until(condition, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


def test_a_task_killed_outright_leaves_no_driver_running_into_its_retry(tmp_path, monkeypatch):
    # The fake spark-submit (the JVM's place) starts a child that outlives it (the Python
    # driver's place; its command line names the attempt's work folder, as the real one's does),
    # writes both pids and waits. The task process running it is then SIGKILLed.
    fake_spark_submit(tmp_path, monkeypatch, """
for last; do :; done
python3 -c 'import time; time.sleep(120)' "$last" &
echo "$$ $!" > "$(dirname "$(dirname "$(dirname "$last")")")/pids"
wait
""")
    config = submit_config(tmp_path)
    night_file = tmp_path / "night.json"
    night_file.write_text(Night.plan(config, DAY, [DAY]).to_json())
    task = subprocess.Popen([sys.executable, "-c", "import sys; from jobs.common.night import Night; "
                             "from jobs.pipeline import run_night_stage; "
                             "run_night_stage('denoise', Night.from_json(open(sys.argv[1]).read()))",
                             str(night_file)], env={**os.environ, "PYTHONPATH": str(REPO)})
    pids = tmp_path / "spark" / "pids"
    assert _wait_until(pids.is_file, 60), "the fake driver never started"
    jvm, driver = map(int, pids.read_text().split())
    task.kill()
    task.wait()
    # The parent-death signal ends spark-submit at once; its own child is orphaned...
    assert _wait_until(lambda: not _alive(jvm)), "spark-submit outlived the task that ran it"
    assert _alive(driver)
    # ...until the retry, which ends it before starting its own driver (one that succeeds).
    fake_spark_submit(tmp_path / "retry", monkeypatch, """
for last; do :; done
echo '{"result": {"attempt": 2}}' > "$last"
""")
    assert stages.run_night_stage("denoise", Night.plan(config, DAY, [DAY]))["attempt"] == 2
    assert not _alive(driver)
    assert os.listdir(tmp_path / "spark" / "submit") == []  # the killed attempt's files are gone too


def test_ending_an_earlier_driver_spares_a_process_that_only_shares_its_group_id(tmp_path):
    # A driver file whose group is now a stranger's (same id, another command line) ends nothing.
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        driver_file = tmp_path / "clean-2026-11-27.driver.json"
        driver_file.write_text(json.dumps({"pgid": stranger.pid, "marker": str(tmp_path / "clean-2026-11-27-x")}))
        assert submit.end_earlier_driver(driver_file) == []
        assert stranger.poll() is None and not driver_file.exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_the_cli_writes_the_error_to_the_result_file_and_still_fails(tmp_path):
    result_file = tmp_path / "result.json"
    with pytest.raises(ValueError, match="logical date must look like YYYY-MM-DD, got '2026-13-01'"):
        stages.main(["clean", "--ds", "2026-13-01", "--result-file", str(result_file)])
    assert json.loads(result_file.read_text()) == {
        "error": "ValueError: logical date must look like YYYY-MM-DD, got '2026-13-01'"}


def test_secret_looking_conf_values_are_masked_in_the_logged_command():
    command = ["spark-submit", "--conf", "spark.hadoop.fs.s3a.secret.key=abc", "--conf",
               "spark.hadoop.fs.s3a.access.key=AKIA", "--conf", "spark.executor.memory=2g", "--name", "token=x"]
    assert submit.masked(command) == ["spark-submit", "--conf", "spark.hadoop.fs.s3a.secret.key=***", "--conf",
                                      "spark.hadoop.fs.s3a.access.key=***", "--conf", "spark.executor.memory=2g",
                                      "--name", "token=x"]


def test_stages_that_do_not_start_spark_never_go_through_spark_submit(tmp_path, monkeypatch):
    fake_spark_submit(tmp_path, monkeypatch, "exit 3\n")
    config = submit_config(tmp_path)
    # validate ran here, in process: its own verdict on the missing partition, not exit code 3
    with pytest.raises(ValueError, match=f"(?s)validate: 1 hard data-quality violation.*dt={DAY}.* no_partition"):
        stages.run_night_stage("validate", Night.plan(config, DAY))


def test_a_local_master_ships_nothing_and_a_submitted_driver_is_not_shipped_twice(tmp_path, spark):
    config = submit_config(tmp_path)
    assert ship_jobs_package(spark.sparkContext, config) is None  # local[2]: executors are threads

    class ClusterContext:  # what ship_jobs_package reads of a SparkContext on a cluster
        master, applicationId = "spark://master:7077", "app-1"

        def __init__(self, py_files):
            self.py_files, self.added = py_files, []

        def getConf(self):
            return {"spark.submit.pyFiles": self.py_files}

        def addPyFile(self, path):
            self.added.append(path)

    submitted = ClusterContext(f"/state/spark/py-files/{submit.ZIP_PREFIX}0123456789abcdef.zip")
    assert ship_jobs_package(submitted, config) is None and submitted.added == []
    started_here = ClusterContext("")
    package = ship_jobs_package(started_here, config)
    assert ship_jobs_package(started_here, config) == package  # getOrCreate again: added once
    assert started_here.added == [package] == [submit.package_jobs(submit.py_files_dir(config))]


# --- Real runs ---------------------------------------------------------------------------------

def event_line(event_id, time, event_type="view", user="u1", item="i1", price=10.0, query=None):
    return json.dumps({"event_id": event_id, "event_time": time, "event_type": event_type, "user_id": user,
                       "session_id": "s1", "item_id": item, "query": query, "price": price})


# A day with kept events and one line for several of clean's rules.
DAY_LINES = [
    event_line("e1", "2026-11-27T10:00:00.000Z"),
    event_line("e2", "2026-11-27T10:00:30Z", "click"),
    event_line("e3", "2026-11-27T10:00:31Z", "click"),  # double click of e2
    event_line("e4", "2026-11-27T11:00:00Z", "search", user="u2", item=None, price=None, query="red shoes"),
    event_line("e5", "2026-11-27T12:00:00Z", "purchase", user="u2", item="i2", price=99.5),
    event_line("e5", "2026-11-27T12:00:00Z", "purchase", user="u2", item="i2", price=99.5),  # duplicate
    event_line("e6", "2026-11-27T13:00:00Z", item="i9"),  # unknown item
    event_line("e7", "2026-11-26T13:00:00Z"),  # outside the day
    event_line("e8", "2026-11-27T13:00:00Z", price=-3.0),  # bad price
    '{"event_id": "e9", "event_ti',  # malformed
]


def land_day(config, lines=DAY_LINES):
    import gzip
    for dataset, name, content in (
            (RAW_EVENTS, "events-00000.jsonl.gz", lines),
            (RAW_CATALOG, "catalog.jsonl.gz", [json.dumps({"item_id": item, "category": "c", "brand": "b",
                                                           "price": 10.0, "title": "t"}) for item in ("i1", "i2")])):
        folder = Path(partition_path(config, dataset, DAY))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(gzip.compress("".join(text + "\n" for text in content).encode()))


def stage_output(spark, config):
    """(sorted kept rows, sorted quarantine rows) of the day, read back from the lake."""
    kept = spark.read.parquet(partition_path(config, CLEAN_EVENTS, DAY))
    quarantine = spark.read.parquet(os.path.join(config["lake_root"], QUARANTINE_EVENTS, "stage=clean", f"dt={DAY}"))
    return (sorted(map(tuple, kept.collect()), key=repr), sorted(map(tuple, quarantine.collect()), key=repr))


def test_clean_through_spark_submit_writes_exactly_what_clean_in_process_writes(tmp_path, spark):
    config = resolve_config({"home": str(tmp_path), "spark": {
        "master": "local[1]", "conf": {"spark.sql.shuffle.partitions": "2", "spark.driver.memory": "1g"}}})
    land_day(config)
    in_process = stages.run_night_stage("clean", Night.plan(config, DAY))
    in_process_output = stage_output(spark, config)

    submitted_config = dict(config, spark=dict(config["spark"], deploy="spark_submit"))
    submitted = stages.run_night_stage("clean", Night.plan(submitted_config, DAY))

    assert submitted.pop("seconds") > 0 and in_process.pop("seconds") >= 0
    submitted.pop("peak_rss_mb"), in_process.pop("peak_rss_mb")
    assert submitted == in_process
    assert in_process["summary"][DAY]["raw_lines"] == 10 and in_process["summary"][DAY]["clean"] == 4
    assert stage_output(spark, config) == in_process_output  # rewritten by the child, identical
    assert os.listdir(tmp_path / "spark" / "py-files") == [os.path.basename(
        submit.package_jobs(submit.py_files_dir(config)))]


PROBE = """
import sys
sys.path.insert(0, sys.argv[2])  # the driver imports jobs from the checkout; executors cannot
from pyspark.sql import functions as F
from jobs.common.config import resolve_config
from jobs.common.spark_session import get_spark

spark = get_spark(resolve_config({"home": sys.argv[1], "spark": {"master": "local-cluster[1,1,1024]"}}))
# A Python UDF runs in the executor's Python worker: it imports jobs only if the zip got there.
origin = F.udf(lambda _: __import__("jobs.common.schema").common.schema.__file__)
print("JOBS_ON_EXECUTOR", spark.range(1).select(origin("id")).first()[0])
"""


def test_a_cluster_master_in_process_ships_the_package_to_executor_processes(tmp_path):
    # local-cluster starts a separate executor JVM and Python worker, as a real cluster does;
    # without PYTHONPATH and outside the checkout, jobs can only come from the shipped zip.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PYSPARK_PYTHON"] = sys.executable
    (tmp_path / "probe.py").write_text(PROBE)
    completed = subprocess.run([sys.executable, "probe.py", str(tmp_path), str(submit.JOBS_DIR.parent)],
                               cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    origin = next(line for line in completed.stdout.splitlines() if line.startswith("JOBS_ON_EXECUTOR"))
    assert f"{submit.ZIP_PREFIX}" in origin and origin.endswith(".zip/jobs/common/schema.py")
