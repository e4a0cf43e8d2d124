"""MLflow conventions shared by every job: one experiment, one run per stage and date.

Each run is tagged with the stage, the logical date (the data partition) and the git
commit, and carries the resolved config as `config.json`.
"""

from __future__ import annotations

import contextlib
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from jobs.common.config import REPO_ROOT

# A tracking server that does not answer its health check within this many seconds is down:
# the MLflow client would otherwise retry each request for minutes before failing.
SERVER_HEALTH_TIMEOUT_S = 10.0


class TrackingServerUnavailable(RuntimeError):
    """The configured MLflow tracking server does not answer."""


def check_tracking_server(tracking_uri: str, timeout_s: float = SERVER_HEALTH_TIMEOUT_S) -> None:
    """For an http(s) tracking URI: raise one clear line unless <uri>/health answers 200."""
    if not tracking_uri.startswith(("http://", "https://")):
        return  # a database or file store: opened directly, it fails with its own message
    health = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout_s) as response:
            if response.status == 200:
                return
            problem = f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        problem = f"HTTP {error.code}"
    except (urllib.error.URLError, OSError) as error:
        problem = str(getattr(error, "reason", error))
    raise TrackingServerUnavailable(
        f"the MLflow tracking server at {tracking_uri} is not answering ({health}: {problem}); "
        f"start it or fix config mlflow.tracking_uri (FUSIONREC_MLFLOW_URI), then retry the task")


def configure_mlflow(config: dict) -> str:
    """Point MLflow at the configured store and return the experiment id."""
    import mlflow

    mlflow_config = config["mlflow"]
    tracking_uri = mlflow_config["tracking_uri"]
    check_tracking_server(tracking_uri)
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    experiment = mlflow.get_experiment_by_name(mlflow_config["experiment"])
    if experiment is not None:
        return experiment.experiment_id
    artifact_root = mlflow_config["artifact_root"]
    if "://" not in artifact_root:
        Path(artifact_root).mkdir(parents=True, exist_ok=True)
        artifact_root = Path(artifact_root).resolve().as_uri()
    try:
        return mlflow.create_experiment(mlflow_config["experiment"], artifact_location=artifact_root)
    except Exception:  # created concurrently by another task
        return mlflow.get_experiment_by_name(mlflow_config["experiment"]).experiment_id


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@contextlib.contextmanager
def stage_run(config: dict, stage: str, ds: str):
    """Start the MLflow run of one stage for one logical date, with config and tags logged."""
    import mlflow

    experiment_id = configure_mlflow(config)
    tags = {"stage": stage, "ds": ds, "data_partition": f"dt={ds}", "git_commit": git_commit()}
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{stage} {ds}", tags=tags) as run:
        mlflow.log_dict(config, "config.json")
        yield run
