"""FusionrecStageOperator and the MLflow button (plugins/fusionrec_operators.py)."""

import sys
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
if str(PLUGINS) not in sys.path:  # plugins/ is no package: Airflow puts the folder on sys.path
    sys.path.insert(0, str(PLUGINS))

from fusionrec_operators import FusionrecStageOperator, MLflowExperimentLink  # noqa: E402

DS = "2026-11-27"


def fake_run_stage(monkeypatch) -> list:
    calls = []

    def run_stage(stage, config, ds):
        calls.append((stage, config, ds))
        return {"rows": 3}

    monkeypatch.setattr("jobs.pipeline.run_stage", run_stage)
    return calls


def test_execute_runs_the_stage_for_the_runs_date_with_the_params_config(monkeypatch):
    calls = fake_run_stage(monkeypatch)
    params = {"window_days": 5, "top_k": None, "spark_master": "local[1]",
              "config_overrides": {"user_encoder": {"epochs": 2}}}
    operator = FusionrecStageOperator(task_id="train_user_encoder", stage="train_user_encoder")
    assert operator.execute({"params": params, "ds": DS}) == {"rows": 3}  # the XCom
    [(stage, config, ds)] = calls
    assert (stage, ds) == ("train_user_encoder", DS)
    assert config["window_days"] == 5 and config["spark"]["master"] == "local[1]"
    assert config["user_encoder"]["epochs"] == 2


def test_params_left_at_null_keep_the_configured_values(monkeypatch):
    from jobs.common.config import resolve_config

    calls = fake_run_stage(monkeypatch)
    FusionrecStageOperator(task_id="clean", stage="clean").execute(
        {"params": {"window_days": None, "top_k": None, "config_overrides": {}}, "ds": DS})
    assert calls == [("clean", resolve_config(), DS)]


def test_a_config_overrides_param_that_is_no_object_is_named(monkeypatch):
    calls = fake_run_stage(monkeypatch)
    with pytest.raises(ValueError, match="param config_overrides must be a JSON object, got str"):
        FusionrecStageOperator(task_id="clean", stage="clean").execute({"params": {"config_overrides": "x"},
                                                                        "ds": DS})
    assert calls == []


def test_a_run_with_stop_after_runs_that_stage_and_skips_every_later_one(monkeypatch):
    from airflow.sdk.exceptions import AirflowSkipException

    calls = fake_run_stage(monkeypatch)
    context = {"params": {"stop_after": "normalize_features"}, "ds": DS}
    FusionrecStageOperator(task_id="normalize_features", stage="normalize_features").execute(context)
    for later in ("train_baselines", "publish_serving"):
        with pytest.raises(AirflowSkipException, match=f"{later}: skipped, this run stops after normalize_features"):
            FusionrecStageOperator(task_id=later, stage=later).execute(context)
    assert [stage for stage, _, _ in calls] == ["normalize_features"]
    with pytest.raises(ValueError, match="config stop_after: not a stage of the night: 'normalise'"):
        FusionrecStageOperator(task_id="clean", stage="clean").execute({"params": {"stop_after": "normalise"},
                                                                        "ds": DS})


def test_the_stop_after_stage_keeps_its_result_and_skips_every_later_task_of_the_dag_at_once(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.exceptions import DownstreamTasksSkipped

    from jobs.pipeline import STAGE_ORDER

    class TaskInstance:  # what execute uses of context["ti"]
        def __init__(self):
            self.pushed = {}

        def xcom_push(self, key, value):
            self.pushed[key] = value

    calls = fake_run_stage(monkeypatch)
    dag = DagBag(dag_folder=str(PLUGINS.parent / "dags")).dags["recsys_nightly"]
    ti = TaskInstance()
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        dag.get_task("denoise").execute({"params": {"stop_after": "denoise"}, "ds": DS, "ti": ti})
    assert [stage for stage, _, _ in calls] == ["denoise"] and ti.pushed == {"return_value": {"rows": 3}}
    # Every stage after denoise, and nothing else (no sensor or task upstream of it).
    assert skipped.value.tasks == sorted(STAGE_ORDER[STAGE_ORDER.index("denoise") + 1:])
    # The last stage has nothing after it: it just returns its result.
    assert dag.get_task("publish_serving").execute({"params": {"stop_after": "publish_serving"}, "ds": DS,
                                                    "ti": ti}) == {"rows": 3}


def test_the_mlflow_link_opens_the_ui_named_by_fusionrec_mlflow_ui(monkeypatch):
    link = MLflowExperimentLink()
    monkeypatch.setenv("FUSIONREC_MLFLOW_UI", "https://mlflow.example.org:8443")
    assert link.get_link(None, ti_key=None) == "https://mlflow.example.org:8443/#/experiments"
    monkeypatch.delenv("FUSIONREC_MLFLOW_UI")
    assert link.get_link(None, ti_key=None) == "http://127.0.0.1:5000/#/experiments"


def test_every_stage_task_carries_the_mlflow_button():
    operator = FusionrecStageOperator(task_id="fuse", stage="fuse")
    assert operator.stage == "fuse"
    assert [link.name for link in operator.operator_extra_links] == ["MLflow"]


def _sensor_context(params=None):
    return {"params": {"config_overrides": {}, **(params or {})}, "ds": DS}


def test_the_landing_sensor_waits_until_the_nights_files_landed(tmp_path, monkeypatch):
    from fusionrec_operators import LandedPartitionSensor

    monkeypatch.setenv("FUSIONREC_HOME", str(tmp_path))
    sensor = LandedPartitionSensor(task_id="wait_for_landing", mode="reschedule")
    assert sensor.poke(_sensor_context()) is False  # nothing landed
    landing = tmp_path / "lake" / "landing" / "events" / f"dt={DS}"
    landing.mkdir(parents=True)
    (landing / "_SUMMARY.json").write_text("{}")
    assert sensor.poke(_sensor_context()) is False  # a folder without an export file
    (landing / "part-0.jsonl.gz").write_bytes(b"")
    assert sensor.poke(_sensor_context()) is True


def test_the_landing_sensor_passes_at_once_for_a_configured_public_source(tmp_path, monkeypatch):
    from fusionrec_operators import LandedPartitionSensor

    monkeypatch.setenv("FUSIONREC_HOME", str(tmp_path))
    params = {"config_overrides": {"source": {"format": "rees46", "path": str(tmp_path / "2019-Oct.csv")}}}
    assert LandedPartitionSensor(task_id="wait_for_landing").poke(_sensor_context(params)) is True


def test_the_failure_callback_logs_one_line_naming_task_night_and_log(caplog):
    from types import SimpleNamespace

    from fusionrec_operators import log_task_failure

    ti = SimpleNamespace(task_id="clean", dag_id="recsys_nightly", try_number=2,
                         log_url="http://127.0.0.1:8080/dags/recsys_nightly/runs/r/tasks/clean")
    with caplog.at_level("ERROR"):
        log_task_failure({"ti": ti, "ds": DS})
    [record] = [r for r in caplog.records if "fusionrec" in r.getMessage()]
    assert all(part in record.getMessage() for part in ("clean", DS, ti.log_url))
