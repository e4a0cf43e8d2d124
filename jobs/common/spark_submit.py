"""Run a Spark stage through `spark-submit`, with the jobs package zipped and shipped.

With config["spark"]["deploy"] == "spark_submit" (env FUSIONREC_SPARK_DEPLOY) the Spark
stages do not start a driver inside the Airflow task: jobs/pipeline.py runs

    spark-submit --master <spark.master> --name fusionrec-clean-2026-11-27
        --conf k=v ...  (one per spark.conf item)  <spark.submit_args ...>
        --py-files <home>/spark/py-files/fusionrec-jobs-<hash>.zip
        <checkout>/jobs/pipeline.py clean --night-file <file> --result-file <file>

and the child runs the stage's run(night) in process (the same code path as the laptop),
with the parent's Night (its resolved config, date, window and dates) read from
--night-file. The child writes the stage's result (or its error) to --result-file; the
parent returns that result, or raises SparkSubmitError with the child's error and last
lines of output.

The driver runs where spark-submit runs (client deploy mode: standalone clusters cannot run
a Python driver in cluster mode), so the config and result files live under the state
folder, which every task of a deployment reaches.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from jobs.common.config import ENV_KEYS
from jobs.common.night import Night
from jobs.common.packaging import JOBS_DIR, module_closure

ZIP_PREFIX = "fusionrec-jobs-"
# A fixed timestamp (the earliest a zip can hold) and mode: the same sources, the same bytes.
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
ZIP_FILE_MODE = 0o100644 << 16
# spark-submit's own logging is INFO until the stage sets WARN; these lines would bury the
# child's error in the task log. A spark.conf item of the same key wins.
SUBMIT_CONF_DEFAULTS = {"spark.log.level": "WARN"}
OUTPUT_TAIL_LINES = 40
# Stages that hash user ids (jobs/etl/privacy.py) and so need the key in the child.
USER_ID_KEY_STAGES = ("clean",)
# --conf values printed as *** in the task log (credentials such as s3a keys may be in spark.conf).
SECRET_CONF_KEY = re.compile(r"secret|password|token|credential|access\.key", re.IGNORECASE)


class SparkSubmitError(RuntimeError):
    """A stage run through spark-submit failed; the message holds its error and last output."""


# --- The shipped package -----------------------------------------------------------------

def spark_entry_modules() -> tuple[list[str], list[str]]:
    """(entry modules, skipped functions) of what a spark-submit child and a Spark executor run.

    The child runs jobs/pipeline.py's CLI, which runs one Spark stage; executors run the
    Python those stages hand them. pipeline.stage_module imports every stage, the TensorFlow
    ones too, but only to find the one asked for: it is a dispatch table, not a dependency.
    Its imports are therefore not followed and each Spark stage is an entry of its own, while
    pipeline's other imports, lazy ones included (run_in_process's spark_io), are followed.
    Looking the stages up through stage_module imports the Spark stages here; none starts a JVM.
    """
    from jobs import pipeline

    dispatch = f"{pipeline.__name__}.{pipeline.stage_module.__qualname__}"
    stages = [pipeline.stage_module(stage.name).__name__ for stage in pipeline.STAGES if stage.uses_spark]
    return [pipeline.__name__, *stages], [dispatch]


def jobs_sources() -> list[tuple[str, Path]]:
    """(name inside the zip, file) of the jobs modules the Spark stages import, sorted by name."""
    entries, skipped = spark_entry_modules()
    files = module_closure(entries, JOBS_DIR, skip_functions=skipped)
    return [(path.relative_to(JOBS_DIR.parent).as_posix(), path) for path in files]


def package_jobs(dest_dir) -> str:
    """A zip of the jobs modules the Spark stages need (jobs_sources) in dest_dir, named by a
    hash of their names and content.

    Deterministic (sorted entries, fixed timestamps and modes) and built only when no zip of
    the same sources exists yet; written to a temporary name and renamed, so concurrent tasks
    never see half a zip. Returns its path.
    """
    sources = [(name, path.read_bytes()) for name, path in jobs_sources()]
    digest = hashlib.sha256()
    for name, content in sources:
        digest.update(name.encode() + b"\0" + str(len(content)).encode() + b"\0" + content)
    dest = Path(dest_dir)
    target = dest / f"{ZIP_PREFIX}{digest.hexdigest()[:16]}.zip"
    if target.is_file():
        return str(target)
    dest.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{target.name}.", dir=dest)
    try:
        with os.fdopen(handle, "wb") as raw, zipfile.ZipFile(raw, "w") as archive:
            for name, content in sources:
                entry = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
                entry.compress_type = zipfile.ZIP_DEFLATED
                entry.external_attr = ZIP_FILE_MODE
                entry.create_system = 3  # Unix, whatever the building machine
                archive.writestr(entry, content)
        os.replace(staging, target)
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    return str(target)


def py_files_dir(config: dict) -> str:
    return str(Path(config["home"]) / "spark" / "py-files")


# --- The command -------------------------------------------------------------------------

def spark_submit_executable() -> str:
    """$SPARK_HOME/bin/spark-submit when SPARK_HOME is set, else the installed pyspark's."""
    spark_home = os.environ.get("SPARK_HOME")
    if spark_home:
        executable = Path(spark_home) / "bin" / "spark-submit"
        origin = f"SPARK_HOME={spark_home}"
    else:
        import pyspark

        executable = Path(pyspark.__file__).resolve().parent / "bin" / "spark-submit"
        origin = "the installed pyspark package"
    if not executable.is_file():
        raise FileNotFoundError(f"no spark-submit at {executable} (from {origin}); "
                                f"set SPARK_HOME to a Spark installation")
    return str(executable)


def spark_submit_command(config: dict, stage: str, ds: str, night_file, result_file) -> list[str]:
    """The spark-submit command line that runs one stage of jobs/pipeline.py."""
    spark_config = config["spark"]
    command = [spark_submit_executable(), "--master", spark_config["master"],
               "--name", application_name(config, stage, ds)]
    for key, value in {**SUBMIT_CONF_DEFAULTS, **spark_config["conf"]}.items():
        command += ["--conf", f"{key}={value}"]
    command += spark_config["submit_args"]  # a list of strings: the typed config checks it
    command += ["--py-files", package_jobs(py_files_dir(config)),
                str(JOBS_DIR / "pipeline.py"), stage, "--night-file", str(night_file),
                "--result-file", str(result_file)]
    return command


# --- Running it --------------------------------------------------------------------------

def application_name(config: dict, stage: str, ds: str) -> str:
    """What the cluster lists the stage's application as, e.g. fusionrec-clean-2026-11-27."""
    return f"{config['spark']['app_name']}-{stage}-{ds}"


def child_config(config: dict, stage: str, ds: str) -> dict:
    """The parent's resolved config, with the child running the stage in its own process.

    The child's SparkSession sets the application name from spark.app_name, which would
    override spark-submit's --name: it gets the stage's own name here instead.
    """
    resolved = copy.deepcopy(config)
    resolved["spark"]["deploy"] = "in_process"
    resolved["spark"]["app_name"] = application_name(config, stage, ds)
    return resolved


def child_environment(environ=None, secrets: dict | None = None) -> dict:
    """The parent's environment, without any other source of config: the night file is the one.

    The variables that map onto config keys (FUSIONREC_LAKE, FUSIONREC_SPARK_DEPLOY, ...) and
    FUSIONREC_CONFIG are removed, so nothing in the child can differ from the parent's config
    (a DAG run's params). secrets (name -> value) are added. Driver and executors run the
    parent's Python unless already set.
    """
    env = {name: value for name, value in (os.environ if environ is None else environ).items()
           if name not in ENV_KEYS and name != "FUSIONREC_CONFIG"}
    env.update(secrets or {})
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("PYSPARK_DRIVER_PYTHON", env["PYSPARK_PYTHON"])
    # No SPARK_LOCAL_IP default here (get_spark's 127.0.0.1 suits only a local master): on a
    # cluster the driver must listen where executors reach it (spark.driver.host/bindAddress).
    return env


def child_secrets(config: dict, stage: str) -> dict:
    """{privacy.key_env: the user-id key} for a stage that hashes ids, else {}.

    Resolved here and handed over in the variable the child reads first, because this task
    may reach the key where the child cannot: an Airflow connection kept in the metadata DB
    is served to a task through its execution API, and a spark-submit child has no channel
    to it. The key travels in the environment, never in the command line or the config file.
    """
    if stage not in USER_ID_KEY_STAGES:
        return {}
    from jobs.etl.privacy import resolve_user_id_key

    return {config["privacy"]["key_env"]: resolve_user_id_key(config).decode("utf-8")}


def run_submitted(night: Night, stage: str) -> dict:
    """Run a stage through spark-submit and return the result dict the child wrote."""
    config, ds = night.config, night.ds
    work_root = Path(config["home"]) / "spark" / "submit"
    work_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{stage}-{ds}-", dir=work_root))
    driver_file = work_root / f"{stage}-{ds}.driver.json"
    try:
        end_earlier_driver(driver_file)
        night_file, result_file = work / "night.json", work / "result.json"
        night_file.write_text(dataclasses.replace(night, config=child_config(config, stage, ds)).to_json())
        command = spark_submit_command(config, stage, ds, night_file, result_file)
        print(f"spark-submit: {shlex.join(masked(command))}", flush=True)
        env = child_environment(secrets=child_secrets(config, stage))
        exit_code, tail = _run_streaming(command, env, driver_file, marker=str(work))
        outcome = json.loads(result_file.read_text()) if result_file.is_file() else {}
        if exit_code != 0 or "result" not in outcome:
            error = outcome.get("error") or _last_error_line(tail) or "no error reported"
            raise SparkSubmitError(
                f"spark-submit of stage {stage} for {ds} failed (exit code {exit_code}): {error}\n"
                f"last {len(tail)} lines of its output:\n" + "\n".join(f"  {line}" for line in tail))
        return outcome["result"]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def masked(command: list[str]) -> list[str]:
    """The command with the values of secret-looking --conf keys replaced by ***."""
    shown = list(command)
    for index in range(1, len(shown)):
        key = shown[index].split("=", 1)[0]
        if shown[index - 1] == "--conf" and "=" in shown[index] and SECRET_CONF_KEY.search(key):
            shown[index] = f"{key}=***"
    return shown


# --- One driver per stage and night --------------------------------------------------------
#
# A task process killed outright (SIGKILL: the OOM killer, a lost worker) runs no cleanup, and
# its spark-submit group would run on unsupervised, writing the same partitions as the retry.
# Two guards: the JVM gets SIGKILL when the task process dies (Linux parent-death signal), and
# every attempt records its driver's process group in <home>/spark/submit/<stage>-<ds>.driver.json
# so the next attempt ends whatever of that group is still alive before it starts its own.

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
DRIVER_EXIT_WAIT_S = 30.0


def _die_with_parent() -> None:
    """preexec_fn of the spark-submit child: SIGKILL when the task process dies (Linux only)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the driver file still guards the retry
        pass


def group_members(pgid: int, marker: str) -> list[int]:
    """Live processes of process group pgid whose command line holds marker (the attempt's own
    work folder, so a recycled group id never matches a stranger); [] where /proc is absent."""
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if os.getpgid(int(entry.name)) == pgid and marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                members.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return members


def end_earlier_driver(driver_file: Path, wait_s: float = DRIVER_EXIT_WAIT_S) -> list[int]:
    """SIGKILL what is left of an earlier attempt's driver group (see above); the pids ended."""
    try:
        earlier = json.loads(driver_file.read_text())
        pgid, marker = int(earlier["pgid"]), str(earlier["marker"])
    except (OSError, ValueError, KeyError, TypeError):
        return []
    members = group_members(pgid, marker)
    if members:
        print(f"spark-submit: ending the driver of an earlier attempt still running (process group "
              f"{pgid}, pids {members}) before this attempt starts", flush=True)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + wait_s
        while group_members(pgid, marker) and time.monotonic() < deadline:
            time.sleep(0.2)
    driver_file.unlink(missing_ok=True)
    shutil.rmtree(marker, ignore_errors=True)  # the earlier attempt's work folder, left behind
    return members


def _run_streaming(command: list[str], env: dict, driver_file: Path | None = None,
                   marker: str = "") -> tuple[int, list[str]]:
    """Run command, echoing its output as it comes (the task log), and keep the last lines.

    The child leads its own process group (spark-submit's JVM, and the Python driver that
    the JVM starts): if this task is stopped (a timeout, a kill from the UI) the whole group
    is ended with it, instead of a driver running on unsupervised; if this task is killed
    outright, the group is ended by the parent-death signal and by the next attempt
    (driver_file names it, marker is a text in its command lines).
    """
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, errors="replace", start_new_session=True,
                             preexec_fn=_die_with_parent)
    if driver_file is not None:
        driver_file.write_text(json.dumps({"pgid": child.pid, "marker": marker}))
    try:
        for line in child.stdout:
            sys.stdout.write(line)
            tail.append(line.rstrip("\n"))
        exit_code = child.wait()
    except BaseException:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        raise
    finally:
        child.stdout.close()
        sys.stdout.flush()
    if driver_file is not None:
        driver_file.unlink(missing_ok=True)
    return exit_code, list(tail)


def _last_error_line(lines: list[str]) -> str | None:
    """The last 'SomeError: message' line (a Python traceback's last line), if any."""
    for line in reversed(lines):
        name = line.split(":", 1)[0]
        if ":" in line and name.isidentifier() and name.endswith(("Error", "Exception")):
            return line
    return None
