"""FusionrecStageOperator: runs one stage of jobs.pipeline for the run's logical date.
LandedPartitionSensor: waits for the night's landed clickstream before ingest.
log_task_failure: the DAG's on_failure_callback (one line naming task, date and log).

It resolves the config from the run's params (so a run triggered from the UI with other
params trains with them; a stage past the run's stop_after is skipped) and runs the stage with the night's context (jobs/common/night.py:
the dates ingest decided come from the night's manifest, not from upstream XComs). The
stage's small result (paths and counts) goes to XCom for people to read. Heavy libraries
are imported only inside execute(), so parsing a DAG that uses this operator stays cheap.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from airflow.sdk import BaseOperator, BaseOperatorLink, BaseSensorOperator

log = logging.getLogger(__name__)


def mlflow_ui_url() -> str:
    return os.environ.get("FUSIONREC_MLFLOW_UI", "http://127.0.0.1:5000")


class MLflowExperimentLink(BaseOperatorLink):
    """A button on each stage's task page that opens the night's runs in MLflow."""

    name = "MLflow"

    def get_link(self, operator, *, ti_key) -> str:
        return f"{mlflow_ui_url()}/#/experiments"


class FusionrecStageOperator(BaseOperator):
    operator_extra_links = (MLflowExperimentLink(),)
    ui_color = "#e8f1fb"

    def __init__(self, *, stage: str, **kwargs):
        super().__init__(**kwargs)
        self.stage = stage

    def execute(self, context):
        from airflow.sdk.exceptions import AirflowSkipException, DownstreamTasksSkipped

        from jobs.common.config import overrides_from_params, resolve_config
        from jobs.pipeline import past_the_last_stage, run_stage

        config = resolve_config(overrides_from_params(dict(context["params"])))
        if past_the_last_stage(self.stage, config["stop_after"]):
            raise AirflowSkipException(f"{self.stage}: skipped, this run stops after {config['stop_after']} "
                                       f"(param stop_after)")
        result = run_stage(self.stage, config, context["ds"])
        later = (sorted(task.task_id for task in self.get_flat_relatives(upstream=False))
                 if self.stage == config["stop_after"] else [])
        if later:
            # The run ends here: every later task is marked skipped now, as ShortCircuitOperator
            # does, instead of each starting a worker process only to skip itself (a backfill
            # of many dates would pay that for every task of every date).
            context["ti"].xcom_push(key="return_value", value=result)
            self.log.info("this run stops after %s (param stop_after): skipping %s", self.stage, ", ".join(later))
            raise DownstreamTasksSkipped(tasks=later)
        return result


class LandedPartitionSensor(BaseSensorOperator):
    """Done when `<lake>/landing/events/dt=<ds>` holds *.jsonl.gz files (the tracking export landed).

    With a public `source` configured (config source.path set) it is done at once: ingest
    lands that night itself. Run it with mode="reschedule": between pokes it frees its slot.
    """

    ui_color = "#fdf5e6"

    def poke(self, context) -> bool:
        from jobs.common import schema
        from jobs.common.config import overrides_from_params, resolve_config
        from jobs.common.lake import partition_path

        config = resolve_config(overrides_from_params(dict(context["params"])))
        if config["source"]["path"]:
            self.log.info("source %s at %s: ingest lands the night itself", config["source"]["format"],
                          config["source"]["path"])
            return True
        landing = Path(partition_path(config, schema.LANDING_EVENTS, context["ds"]))
        files = sorted(landing.glob("*.jsonl.gz"))
        self.log.info("%s: %d landed file(s)", landing, len(files))
        return bool(files)


def log_task_failure(context) -> None:
    """on_failure_callback: one line naming the task, the night and where its log is."""
    ti = context.get("ti") or context.get("task_instance")
    task_id = getattr(ti, "task_id", None) or getattr(context.get("task"), "task_id", "?")
    try:
        where = ti.log_url
    except Exception:  # noqa: BLE001 - a callback must never raise; the path is enough then
        where = None
    where = where or os.path.join(os.environ.get("AIRFLOW_HOME", "~/airflow"), "logs")
    log.error("fusionrec: task %s of %s failed for night %s (try %s); log: %s", task_id,
              getattr(ti, "dag_id", "?"), context.get("ds"), getattr(ti, "try_number", "?"), where)
