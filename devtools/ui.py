"""`make ui`: Airflow (standalone, SQLite) and the MLflow UI on localhost, until Ctrl-C.

Airflow: http://127.0.0.1:8080 — trigger recsys_nightly with params from the Trigger form,
backfill, read task logs. MLflow: http://127.0.0.1:5000 — runs, metrics, plots and the
model registry, where challengers wait for review. Both read the embedded-defaults state
that `make demo` wrote, so the demo's run is there to look at.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from jobs.common.config import REPO_ROOT, resolve_config


def main() -> int:
    config = resolve_config()
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ)
    env.setdefault("AIRFLOW_HOME", str(Path(config["home"]) / "airflow"))
    env.update({
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API__HOST": "127.0.0.1",  # never listen beyond this machine by default
        "AIRFLOW__CORE__PARALLELISM": "4",  # 12 processes instead of 32 on a laptop
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        # standalone starts its components as `airflow …` subprocesses: they must find ours.
        "PATH": os.pathsep.join(filter(None, [str(bin_dir), env.get("PATH")])),
        # MLflow 3's default store is ./mlflow.db: every child must use the configured one.
        "MLFLOW_TRACKING_URI": config["mlflow"]["tracking_uri"],
    })
    artifacts = Path(config["mlflow"]["artifact_root"])
    artifacts.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(bin_dir / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
    subprocess.run([str(bin_dir / "airflow"), "dags", "reserialize"], env=env, check=True, capture_output=True)
    state_dir = Path(config["home"])  # children's working directory: stray files stay in the state
    processes = [
        # Each in a session of its own, so stopping one stops its whole tree (uvicorn workers,
        # huey consumers, the scheduler, the dag processor, the triggerer, …).
        subprocess.Popen([str(bin_dir / "mlflow"), "ui", "--host", "127.0.0.1", "--port", "5000", "--workers", "1",
                          "--backend-store-uri", config["mlflow"]["tracking_uri"],
                          "--default-artifact-root", artifacts.resolve().as_uri()],
                         env=env, cwd=state_dir, start_new_session=True),
        subprocess.Popen([str(bin_dir / "airflow"), "standalone"], env=env, cwd=state_dir, start_new_session=True),
    ]
    password_file = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    print("Starting… Airflow on http://127.0.0.1:8080 (user admin, password in "
          f"{password_file}), MLflow on http://127.0.0.1:5000. Ctrl-C stops both.", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(1)
    except KeyboardInterrupt:
        print("stopping Airflow and MLflow…", flush=True)
    finally:
        stop_process_groups(processes)
    return 0


def stop_process_groups(processes, grace_s: float = 15.0) -> None:
    """SIGTERM every child's process group, then SIGKILL whatever is left after grace_s."""
    for process in processes:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for process in processes:
        _signal_group(process, signal.SIGKILL)  # also reaps grandchildren the parent left behind


def _signal_group(process, signum) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


if __name__ == "__main__":
    sys.exit(main())
