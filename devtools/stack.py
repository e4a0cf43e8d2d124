"""`make stack`: the production-shaped stack as plain processes on this machine (no containers).

    python -m devtools.stack up       # start what is not running yet (idempotent), print the UIs
    python -m devtools.stack status   # each component: running or not, healthy or not, where
    python -m devtools.stack down     # stop every process it started (PostgreSQL, Redis stay up)

The same DAG and jobs code as `make demo`; only configuration differs:

| component            | process                                   | what it does                           |
|----------------------|-------------------------------------------|----------------------------------------|
| postgres             | (already running on 127.0.0.1:5432)       | role `fusionrec`, databases            |
|                      |                                           | fusionrec_airflow / _mlflow / _serving |
| redis                | (already running on 127.0.0.1:6379)       | serving store (user <prefix>_serving)  |
| spark-master         | spark-class ...deploy.master.Master       | spark://127.0.0.1:7077                 |
| spark-worker         | spark-class ...deploy.worker.Worker       | executors of the Spark stages          |
| mlflow               | mlflow server (PostgreSQL + served artifacts) | tracking server, model registry    |
| airflow-api-server   | airflow api-server                        | UI, REST API, execution API for tasks  |
| airflow-scheduler    | airflow scheduler (LocalExecutor)         | schedules and runs the tasks           |
| airflow-dag-processor| airflow dag-processor                     | parses dags/ into the metadata DB      |

All state lives under $FUSIONREC_HOME/stack (default .fusionrec/stack): pid files, logs, the
stack's own AIRFLOW_HOME, MLflow artifacts, the tasks' lake and the FUSIONREC_CONFIG file.
Ports other than the Spark master's are picked free once and kept in ports.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from jobs.common.config import REPO_ROOT, FusionrecConfig

PG_HOST, PG_PORT, PG_ADMIN = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
ROLE = "fusionrec"
DATABASES = ("airflow", "mlflow", "serving")  # each <db_prefix>_<name>
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin"  # the stack's Airflow login (simple auth manager)
WORKER_CORES, WORKER_MEMORY = 2, "4g"  # sized for a 2-core laptop
START_TIMEOUT_S = {"spark-master": 60, "spark-worker": 60, "mlflow": 120, "airflow-api-server": 120,
                   "airflow-scheduler": 120, "airflow-dag-processor": 120}
STOP_GRACE_S = 10.0
BIN = Path(sys.executable).parent  # the venv's bin: airflow, mlflow
SPARK_HOME = Path(importlib.util.find_spec("pyspark").origin).parent  # the pinned pyspark's own Spark


@dataclasses.dataclass
class Settings:
    """What differs between `make stack` and the test's own stack."""

    home: Path  # FUSIONREC_HOME of the stack's owner; the stack lives in home/stack
    db_prefix: str = "fusionrec"
    master_port: int = 7077  # used when the stack is first made (ports.json keeps it after)
    redis_db: int = 0
    schedule: bool = True  # False: no scheduled runs, only triggered ones (tests)
    extra_config: dict = dataclasses.field(default_factory=dict)  # merged into FUSIONREC_CONFIG

    @property
    def dir(self) -> Path:
        return self.home / "stack"

    def db_url(self, name: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{ROLE}@{PG_HOST}:{PG_PORT}/{self.db_prefix}_{name}"

    def log(self, component: str) -> Path:
        return self.dir / "logs" / f"{component}.log"

    def pid_file(self, component: str) -> Path:
        return self.dir / "pids" / f"{component}.pid"

    @property
    def ports(self) -> dict:
        """Ports picked free on first start and kept, so a restart keeps the same URLs."""
        path = self.dir / "ports.json"
        ports = json.loads(path.read_text()) if path.is_file() else {}
        wanted = ("spark_master_ui", "spark_worker_ui", "mlflow", "airflow")
        if any(name not in ports for name in (*wanted, "spark_master")):
            ports = {"spark_master": self.master_port, **{name: ports.get(name) or free_port() for name in wanted}}
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(ports, indent=2))
        return ports

    def urls(self) -> dict:
        ports = self.ports
        return {"spark_master": f"spark://127.0.0.1:{ports['spark_master']}",
                "spark_master_ui": f"http://127.0.0.1:{ports['spark_master_ui']}",
                "spark_worker_ui": f"http://127.0.0.1:{ports['spark_worker_ui']}",
                "mlflow": f"http://127.0.0.1:{ports['mlflow']}",
                "airflow": f"http://127.0.0.1:{ports['airflow']}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Configuration the tasks get -----------------------------------------------------------

def fusionrec_config(settings: Settings) -> dict:
    """The FUSIONREC_CONFIG file's content: what a standalone cluster and the servers need."""
    config = {
        "spark": {
            # Standalone clusters run Python drivers in client mode only; the driver is the
            # spark-submit child of the Airflow task, on this machine.
            "submit_args": ["--deploy-mode", "client"],
            # One executor with every worker core: on 2 cores, two 1-core executors (two JVMs
            # and their Python workers started per stage) made denoise and normalize_features
            # about 25% slower (measured 2026-12-06, 2 runs each).
            "conf": {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                     "spark.driver.memory": "1g", "spark.executor.memory": "2g",
                     "spark.executor.cores": str(WORKER_CORES), "spark.cores.max": str(WORKER_CORES),
                     "spark.sql.shuffle.partitions": "4"},
        },
        # Artifacts go through the tracking server (--serve-artifacts), not a local path: the
        # empty host means the tracking server's own artifact store.
        "mlflow": {"artifact_root": "mlflow-artifacts:///fusionrec"},
    }
    if "serving_store" in FusionrecConfig.model_fields:  # the publish_serving stage's targets
        config["serving_store"] = {"targets": ["postgres", "redis"]}
    from jobs.common.config import deep_merge

    return deep_merge(config, settings.extra_config)


def user_id_key(settings: Settings) -> str:
    """The stack's user-id hashing key, made once (the tasks never mint one: create_key_file false)."""
    path = settings.dir / "secrets" / "user_id.key"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip()


def secret(settings: Settings, name: str) -> str:
    path = settings.dir / "secrets" / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


def task_environment(settings: Settings) -> dict:
    """FUSIONREC_* and connections: the production configuration of the tasks."""
    urls = settings.urls()
    config_file = settings.dir / "fusionrec-config.json"
    config_file.write_text(json.dumps(fusionrec_config(settings), indent=2))
    key = user_id_key(settings)
    return {
        "FUSIONREC_HOME": str(settings.dir / "fusionrec"),
        "FUSIONREC_LAKE": str(settings.dir / "lake"),
        "FUSIONREC_CONFIG": str(config_file),
        "FUSIONREC_SPARK_MASTER": urls["spark_master"],
        "FUSIONREC_SPARK_DEPLOY": "spark_submit",
        "FUSIONREC_MLFLOW_URI": urls["mlflow"],
        "FUSIONREC_MLFLOW_UI": urls["mlflow"],
        "FUSIONREC_CREATE_KEY_FILE": "false",
        "AIRFLOW_CONN_FUSIONREC_USER_ID_KEY": json.dumps({"conn_type": "generic", "password": key}),
        "AIRFLOW_CONN_FUSIONREC_SERVING_POSTGRES": settings.db_url("serving", "postgresql"),
        "AIRFLOW_CONN_FUSIONREC_SERVING_REDIS": (f"redis://{redis_user(settings)}:{secret(settings, 'redis_password')}"
                                                 f"@{REDIS_HOST}:{REDIS_PORT}/{settings.redis_db}"),
    }


def airflow_environment(settings: Settings) -> dict:
    port = settings.ports["airflow"]
    airflow_home = settings.dir / "airflow"
    passwords = airflow_home / "simple_auth_manager_passwords.json"
    airflow_home.mkdir(parents=True, exist_ok=True)
    if not passwords.is_file():
        passwords.write_text(json.dumps({ADMIN_USER: ADMIN_PASSWORD}) + "\n")
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": settings.db_url("airflow"),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secret(settings, "jwt_secret"),
        "AIRFLOW__API__SECRET_KEY": secret(settings, "api_secret_key"),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(settings.schedule),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
    }


def base_environment(settings: Settings) -> dict:
    env = dict(os.environ)
    for name in list(env):  # nothing of the caller's own state leaks in (e.g. a test's FUSIONREC_HOME)
        if name.startswith(("FUSIONREC_", "AIRFLOW", "MLFLOW_")):
            del env[name]
    env.update({
        "PATH": os.pathsep.join(filter(None, [str(BIN), env.get("PATH")])),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERAS_HOME": str(settings.dir / "keras"),
        "MPLCONFIGDIR": str(settings.dir / "matplotlib"),
        "SPARK_WORKER_DIR": str(settings.dir / "spark-work"),
        # The master's REST submission server would take the fixed port 6066 (client-mode
        # spark-submit does not use it); off, two stacks can run side by side.
        "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
    })
    return env


def full_environment(settings: Settings) -> dict:
    return {**base_environment(settings), **airflow_environment(settings), **task_environment(settings)}


# --- HTTP health checks --------------------------------------------------------------------

def http_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read().decode() or "null")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def airflow_health(settings: Settings) -> dict:
    try:
        return http_json(f"{settings.urls()['airflow']}/api/v2/monitor/health")
    except (OSError, ValueError):
        return {}


def component_healthy(health: dict, name: str, since: float | None = None) -> bool:
    """Healthy, and (since: a Unix time) with a heartbeat newer than that: a component that
    was just restarted is not taken for healthy on its predecessor's last heartbeat."""
    part = health.get(name) or {}
    if part.get("status") != "healthy":
        return False
    beat = part.get(f"latest_{name}_heartbeat")
    if since is None or not beat:
        return since is None
    import datetime as dt

    return dt.datetime.fromisoformat(beat.replace("Z", "+00:00")).timestamp() >= since


def master_status(settings: Settings) -> dict:
    try:
        return http_json(f"{settings.urls()['spark_master_ui']}/json/")
    except (OSError, ValueError):
        return {}


# --- The components --------------------------------------------------------------------------

def spark_master(settings: Settings) -> list[str]:
    ports = settings.ports
    return [str(SPARK_HOME / "bin" / "spark-class"), "org.apache.spark.deploy.master.Master",
            "--host", "127.0.0.1", "--port", str(ports["spark_master"]), "--webui-port", str(ports["spark_master_ui"])]


def spark_worker(settings: Settings) -> list[str]:
    return [str(SPARK_HOME / "bin" / "spark-class"), "org.apache.spark.deploy.worker.Worker",
            settings.urls()["spark_master"], "--host", "127.0.0.1", "--cores", str(WORKER_CORES),
            "--memory", WORKER_MEMORY, "--webui-port", str(settings.ports["spark_worker_ui"]),
            "--work-dir", str(settings.dir / "spark-work")]


def mlflow_server(settings: Settings) -> list[str]:
    artifacts = settings.dir / "mlflow-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    return [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(settings.ports["mlflow"]),
            "--workers", "1", "--backend-store-uri", settings.db_url("mlflow"),
            "--serve-artifacts", "--artifacts-destination", str(artifacts)]


def airflow_api_server(settings: Settings) -> list[str]:
    return [str(BIN / "airflow"), "api-server"]


def airflow_scheduler(settings: Settings) -> list[str]:
    return [str(BIN / "airflow"), "scheduler"]


def airflow_dag_processor(settings: Settings) -> list[str]:
    return [str(BIN / "airflow"), "dag-processor"]


def spark_master_up(settings: Settings) -> bool:
    return master_status(settings).get("status") == "ALIVE"


def spark_worker_up(settings: Settings) -> bool:
    return any(worker.get("state") == "ALIVE" for worker in master_status(settings).get("workers", []))


def mlflow_up(settings: Settings) -> bool:
    return http_ok(f"{settings.urls()['mlflow']}/health")


def api_server_up(settings: Settings) -> bool:
    return component_healthy(airflow_health(settings), "metadatabase")


def started_at(settings: Settings, name: str) -> float | None:
    pid_file = settings.pid_file(name)
    return pid_file.stat().st_mtime if pid_file.is_file() else None


def scheduler_up(settings: Settings) -> bool:
    return component_healthy(airflow_health(settings), "scheduler", started_at(settings, "airflow-scheduler"))


def dag_processor_up(settings: Settings) -> bool:
    return component_healthy(airflow_health(settings), "dag_processor",
                             started_at(settings, "airflow-dag-processor"))


@dataclasses.dataclass(frozen=True)
class Component:
    name: str
    command: Callable[[Settings], list[str]]
    healthy: Callable[[Settings], bool]
    url: Callable[[Settings], str] = lambda settings: ""


# Start order; stopped in reverse.
COMPONENTS = (
    Component("spark-master", spark_master, spark_master_up,
              lambda s: f"{s.urls()['spark_master']} (UI {s.urls()['spark_master_ui']})"),
    Component("spark-worker", spark_worker, spark_worker_up, lambda s: s.urls()["spark_worker_ui"]),
    Component("mlflow", mlflow_server, mlflow_up, lambda s: s.urls()["mlflow"]),
    Component("airflow-api-server", airflow_api_server, api_server_up,
              lambda s: f"{s.urls()['airflow']} (user {ADMIN_USER}, password {ADMIN_PASSWORD})"),
    Component("airflow-scheduler", airflow_scheduler, scheduler_up),
    Component("airflow-dag-processor", airflow_dag_processor, dag_processor_up),
)


# --- Servers that are already there: PostgreSQL and Redis ----------------------------------

def ensure_postgres(settings: Settings, fresh: bool = False) -> None:
    """Role and databases of the project's own (created if missing; dropped first if fresh)."""
    import psycopg
    from psycopg import sql

    try:
        connection = psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_ADMIN, dbname="postgres",
                                     autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        raise StackError(f"postgres: PostgreSQL is not reachable on {PG_HOST}:{PG_PORT} as {PG_ADMIN}: {error}")
    with connection:
        if not connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone():
            connection.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(ROLE)))
        for name in DATABASES:
            database = f"{settings.db_prefix}_{name}"
            exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
            if exists and fresh:
                connection.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                                   (database,))
                connection.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(database)))
                exists = None
            if not exists:
                connection.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(database), sql.Identifier(ROLE)))


def redis_user(settings: Settings) -> str:
    return f"{settings.db_prefix}_serving"


def redis_admin():
    import redis

    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=5)


def ensure_redis(settings: Settings) -> None:
    """The serving store's own Redis user: its password, its key prefix, no admin commands."""
    import redis

    key_prefix = fusionrec_config(settings).get("serving_store", {}).get("redis_key_prefix", "fusionrec")
    try:
        redis_admin().execute_command("ACL", "SETUSER", redis_user(settings), "reset", "on",
                                      f">{secret(settings, 'redis_password')}", f"~{key_prefix}:*",
                                      "+@all", "-@dangerous")
    except redis.RedisError as error:
        raise StackError(f"redis: Redis is not reachable on {REDIS_HOST}:{REDIS_PORT}: {error}")


def refuse_redis_user(settings: Settings, refuse: bool) -> None:
    """Fault injection: Redis refuses (or accepts again) the serving store's user; its open
    connections are closed, so every command from now on meets the refusal."""
    admin = redis_admin()
    admin.execute_command("ACL", "SETUSER", redis_user(settings), "off" if refuse else "on")
    if refuse:
        admin.execute_command("CLIENT", "KILL", "USER", redis_user(settings))


def refuse_postgres_database(settings: Settings, name: str, refuse: bool) -> None:
    """Fault injection: PostgreSQL refuses (or accepts again) connections to one of the
    stack's databases; its open sessions are ended."""
    import psycopg
    from psycopg import sql

    database = f"{settings.db_prefix}_{name}"
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_ADMIN, dbname="postgres", autocommit=True,
                         connect_timeout=5) as connection:
        connection.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
            sql.Identifier(database), sql.SQL("false" if refuse else "true")))
        if refuse:
            connection.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                               (database,))


def migrate_airflow(settings: Settings) -> None:
    """`airflow db migrate` and `airflow dags reserialize` (the DAG is listed at once)."""
    env = full_environment(settings)
    log = settings.log("airflow-migrate")
    for command in (["db", "migrate"], ["dags", "reserialize"]):
        with open(log, "a") as out:
            result = subprocess.run([str(BIN / "airflow"), *command], env=env, cwd=settings.dir,
                                    stdout=out, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            raise StackError(f"airflow {' '.join(command)} failed (exit {result.returncode}); see {log}")


# --- Processes -----------------------------------------------------------------------------

class StackError(RuntimeError):
    """A component did not come up (the message names it and its log)."""


def running_pid(settings: Settings, name: str) -> int | None:
    try:
        pid = int(settings.pid_file(name).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def start_component(settings: Settings, component: Component, env: dict) -> str:
    if running_pid(settings, component.name):
        return "already running"
    log = settings.log(component.name)
    with open(log, "a") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {component.name}\n")
        out.flush()
        # A session of its own: stopping the group stops its whole tree (JVM children,
        # gunicorn/uvicorn workers, the executor's task processes).
        process = subprocess.Popen(component.command(settings), env=env, cwd=settings.dir, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    settings.pid_file(component.name).write_text(str(process.pid))
    return "started"


def wait_healthy(settings: Settings, component: Component) -> float:
    """Seconds until component is healthy; StackError naming it and its log on exit or timeout."""
    started = time.monotonic()
    timeout = START_TIMEOUT_S[component.name]
    while not component.healthy(settings):
        if running_pid(settings, component.name) is None:
            raise StackError(f"{component.name} exited while starting; see {settings.log(component.name)}")
        if time.monotonic() - started > timeout:
            raise StackError(f"{component.name} not healthy after {timeout} s; see {settings.log(component.name)}")
        time.sleep(1)
    return time.monotonic() - started


def up(settings: Settings, fresh: bool = False, say=print) -> dict:
    """Start every component not running yet, then wait until each is healthy; return the URLs.

    Spark and MLflow start first and come up while Airflow's metadata DB is migrated; the
    Airflow processes start after the migration. fresh: drop the stack's databases first.
    """
    for sub in ("logs", "pids", "airflow", "lake", "fusionrec"):
        (settings.dir / sub).mkdir(parents=True, exist_ok=True)
    ensure_postgres(settings, fresh=fresh)
    ensure_redis(settings)
    env = full_environment(settings)
    states = {}
    for component in COMPONENTS:
        if component.name == "airflow-api-server" and not running_pid(settings, component.name):
            migrate_airflow(settings)
        states[component.name] = start_component(settings, component, env)
    for component in COMPONENTS:
        seconds = wait_healthy(settings, component)
        say(f"{component.name:22} {states[component.name]}, healthy {seconds:.0f} s later   {component.url(settings)}")
    return settings.urls()


def _signal_group(pgid: int, signum: int) -> bool:
    """Send signum to process group pgid; False when the group is gone."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_groups(pgids: list[int], grace_s: float) -> None:
    """SIGTERM every group at once, then SIGKILL what is left after grace_s (one wait for all)."""
    alive = [pgid for pgid in pgids if _signal_group(pgid, signal.SIGTERM)]
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = [pgid for pgid in alive if _signal_group(pgid, 0)]
    for pgid in alive:
        _signal_group(pgid, signal.SIGKILL)


def _started_pid(settings: Settings, name: str) -> int | None:
    """The pid recorded for a component (its process group), removing the record; None if none."""
    pid_file = settings.pid_file(name)
    if not pid_file.is_file():
        return None
    try:
        pid = int(pid_file.read_text())
    except ValueError:
        pid = 0
    pid_file.unlink(missing_ok=True)
    return pid


def stop_component(settings: Settings, name: str) -> bool:
    """Stop one component's process group; False when it was not started."""
    pid = _started_pid(settings, name)
    if pid:
        stop_groups([pid], STOP_GRACE_S)
    return pid is not None


def restart_component(settings: Settings, name: str) -> float:
    """Start one stopped component again; seconds until it is healthy."""
    [component] = [component for component in COMPONENTS if component.name == name]
    start_component(settings, component, full_environment(settings))
    return wait_healthy(settings, component)


def down(settings: Settings, say=print) -> None:
    """Stop every component's process group: all signalled at once, one grace period."""
    started = {component.name: _started_pid(settings, component.name) for component in reversed(COMPONENTS)}
    stop_groups([pid for pid in started.values() if pid], STOP_GRACE_S)
    for name, pid in started.items():
        if pid is not None:
            say(f"{name:22} stopped")


def status(settings: Settings, say=print) -> bool:
    all_up = True
    for component in COMPONENTS:
        pid = running_pid(settings, component.name)
        healthy = bool(pid) and component.healthy(settings)
        all_up &= healthy
        state = "healthy" if healthy else ("running, not healthy" if pid else "stopped")
        say(f"{component.name:22} {state:22} {component.url(settings) if pid else ''}  log {settings.log(component.name)}")
    return all_up


def settings_from_environment() -> Settings:
    home = Path(os.environ.get("FUSIONREC_HOME") or REPO_ROOT / ".fusionrec").resolve()
    return Settings(home=home)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    settings = settings_from_environment()
    if args.action == "down":
        down(settings)
        return 0
    if args.action == "status":
        return 0 if status(settings) else 1
    try:
        up(settings)
    except StackError as error:
        print(f"stack: {error}", file=sys.stderr)
        return 1
    print(f"\nstate: {settings.dir}   tasks' config: {settings.dir / 'fusionrec-config.json'}\n"
          f"trigger recsys_nightly in Airflow; `make stack-down` stops it all.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
