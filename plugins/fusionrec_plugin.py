"""Airflow UI extensions for fusionrec: an MLflow entry in the navigation bar and the
MLflow button on every stage's task page."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from fusionrec_operators import MLflowExperimentLink, mlflow_ui_url


class FusionrecPlugin(AirflowPlugin):
    name = "fusionrec"
    operator_extra_links = [MLflowExperimentLink()]
    external_views = [
        {"name": "MLflow runs and models", "href": mlflow_ui_url(), "destination": "nav",
         "category": "browse", "url_route": "fusionrec_mlflow"},
    ]
