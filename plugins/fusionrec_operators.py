"""FusionrecStageOperator: runs one stage of jobs.pipeline for the run's logical date.

It resolves the config from the run's params (so a run triggered from the UI with other
params trains with them) and runs the stage with the night's context (jobs/common/night.py:
the dates ingest decided come from the night's manifest, not from upstream XComs). The
stage's small result (paths and counts) goes to XCom for people to read. Heavy libraries
are imported only inside execute(), so parsing a DAG that uses this operator stays cheap.
"""

from __future__ import annotations

import os

from airflow.sdk import BaseOperator, BaseOperatorLink


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
        from jobs.common.config import overrides_from_params, resolve_config
        from jobs.pipeline import run_stage

        config = resolve_config(overrides_from_params(dict(context["params"])))
        return run_stage(self.stage, config, context["ds"])
