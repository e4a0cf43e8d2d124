"""MLflow conventions shared by every job: one experiment, one run per stage and date.

Each run is tagged with the stage, the logical date (the data partition) and the git
commit, and carries the resolved config as `config.json`.

One run per stage and date holds across retries and re-runs: when a stage's run finishes,
the earlier runs of that stage and date (a killed attempt's run left RUNNING, a failed try,
a re-run night's predecessor) are tagged `fusionrec.superseded_by` and deleted. Deleted runs
stay restorable from the MLflow UI until `mlflow gc`; a run that is the source of a
registered model version is never deleted.
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
def stage_run(config: dict, stage: str, ds: str, resume_run_id: str | None = None):
    """Start (or, with resume_run_id, resume) the MLflow run of one stage for one logical date,
    with config and tags logged; when it ends well, earlier runs of the same are retired."""
    import mlflow

    experiment_id = configure_mlflow(config)
    tags = {"stage": stage, "ds": ds, "data_partition": f"dt={ds}", "git_commit": git_commit()}
    # resume_run_id: the run of an earlier attempt that this one completes.
    start = {"run_id": resume_run_id} if resume_run_id else {"experiment_id": experiment_id,
                                                             "run_name": f"{stage} {ds}"}
    with mlflow.start_run(**start, tags=tags) as run:
        mlflow.log_dict(config, "config.json")
        yield run
    retire_earlier_runs(experiment_id, stage, ds, keep=run.info.run_id)


NIGHT_RUN_STAGE = "night"  # the stage tag of the run that holds a whole night's stage timings


def log_night_timings(config: dict, ds: str, manifest: dict) -> str:
    """The night's per-stage record from its manifest as one MLflow run, "night <ds>": metrics
    stage_seconds.<stage> and stage_peak_rss_mb.<stage>, stages_seconds (their sum: the
    stages' own time, without the scheduler's gaps), and the manifest as manifest.json.
    Logged once the night's last stage has run; a re-run night's run replaces the earlier."""
    import mlflow

    stages = manifest.get("stages", {})
    metrics = {f"stage_seconds.{stage}": record["seconds"] for stage, record in stages.items()}
    metrics.update({f"stage_peak_rss_mb.{stage}": record["peak_rss_mb"] for stage, record in stages.items()})
    metrics["stages_seconds"] = round(sum(record["seconds"] for record in stages.values()), 1)
    with stage_run(config, NIGHT_RUN_STAGE, ds) as run:
        mlflow.log_metrics(metrics)
        mlflow.log_dict(manifest, "manifest.json")
    return run.info.run_id


def stage_runs(experiment_id: str, stage: str, ds: str) -> list:
    """The active (not deleted) runs of one stage and date, newest first."""
    from mlflow import MlflowClient

    return MlflowClient().search_runs([experiment_id], f"tags.stage = '{stage}' and tags.ds = '{ds}'",
                                      order_by=["attribute.start_time DESC"])


def retire_earlier_runs(experiment_id: str, stage: str, ds: str, keep: str) -> list[str]:
    """Delete the runs of stage and ds other than keep (module docstring); their ids."""
    from mlflow import MlflowClient

    client = MlflowClient()
    retired = []
    for earlier in stage_runs(experiment_id, stage, ds):
        run_id = earlier.info.run_id
        if run_id == keep or client.search_model_versions(f"run_id = '{run_id}'"):
            continue
        client.set_tag(run_id, "fusionrec.superseded_by", keep)
        if earlier.info.status == "RUNNING":  # its process was killed: it never ended the run
            client.set_terminated(run_id, status="KILLED")
        client.delete_run(run_id)
        retired.append(run_id)
    if retired:
        print(f"mlflow: run {keep} replaces the earlier {stage} run(s) of {ds}: {', '.join(retired)} (deleted)")
    return retired
