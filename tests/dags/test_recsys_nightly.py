"""DAG integrity: the file imports cleanly, is wired as documented and parses cheaply."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXPECTED_CHAIN = [
    "wait_for_landing", "ingest", "validate", "clean", "denoise", "normalize_features", "train_baselines", "train_user_encoder",
    "train_item_encoder", "fuse", "evaluate", "train_search_ranker", "register_search_ranker", "register_and_gate", "batch_recommend",
    "publish_serving",
]


@pytest.fixture(scope="module")
def dagbag():
    sys.path.insert(0, str(REPO / "plugins"))
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_dagbag_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert list(dagbag.dag_ids) == ["recsys_nightly"]


def test_task_graph_is_the_documented_chain(dagbag):
    dag = dagbag.dags["recsys_nightly"]
    assert sorted(dag.task_ids) == sorted(EXPECTED_CHAIN)
    for upstream, downstream in zip(EXPECTED_CHAIN, EXPECTED_CHAIN[1:]):
        assert dag.get_task(downstream).upstream_task_ids == {upstream}
    assert dag.get_task("wait_for_landing").upstream_task_ids == set()


def test_every_task_has_a_finite_timeout_and_the_failure_callback(dagbag):
    from fusionrec_operators import log_task_failure

    dag = dagbag.dags["recsys_nightly"]
    for task in dag.tasks:
        assert task.execution_timeout is not None and task.execution_timeout.total_seconds() > 0, task.task_id
        assert log_task_failure in (task.on_failure_callback if isinstance(task.on_failure_callback, list)
                                    else [task.on_failure_callback]), task.task_id
    sensor = dag.get_task("wait_for_landing")
    assert sensor.mode == "reschedule" and 0 < sensor.timeout < 24 * 3600


def test_tags_retries_and_schedule(dagbag):
    dag = dagbag.dags["recsys_nightly"]
    assert {"fusionrec", "nightly"} <= set(dag.tags)
    assert all(task.retries >= 1 for task in dag.tasks)
    assert dag.max_active_runs == 1
    assert not dag.catchup


def test_retries_and_the_landing_wait_come_from_the_config_file(tmp_path, monkeypatch):
    # The stack's tests retry after 5 s and poke every 10 s; production keeps 5 min and 8 h.
    import datetime as dt
    import json

    from airflow.dag_processing.dagbag import DagBag

    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"airflow": {"retries": 2, "retry_delay_s": 5,
                                                   "landing_poke_interval_s": 10, "landing_timeout_s": 600}}))
    monkeypatch.setenv("FUSIONREC_CONFIG", str(config_file))
    monkeypatch.syspath_prepend(str(REPO / "plugins"))
    dag = DagBag(dag_folder=str(REPO / "dags")).dags["recsys_nightly"]
    assert {(task.retries, task.retry_delay) for task in dag.tasks} == {(2, dt.timedelta(seconds=5))}
    sensor = dag.get_task("wait_for_landing")
    assert (sensor.poke_interval, sensor.timeout, sensor.mode) == (10, 600, "reschedule")


def test_the_nightly_run_processes_the_day_that_just_ended(dagbag):
    import pendulum

    from airflow.timetables.base import DataInterval, TimeRestriction

    from airflow.serialization.encoders import coerce_to_core_timetable

    timetable = coerce_to_core_timetable(dagbag.dags["recsys_nightly"].timetable)
    after_first = timetable.next_dagrun_info(
        last_automated_data_interval=DataInterval(pendulum.datetime(2026, 11, 26, 2), pendulum.datetime(2026, 11, 27, 2)),
        restriction=TimeRestriction(earliest=None, latest=None, catchup=True))
    # The run due at 2026-11-28 02:00 covers 2026-11-27 02:00 → 11-28 02:00: its ds is 2026-11-27.
    assert after_first.run_after == pendulum.datetime(2026, 11, 28, 2)
    assert after_first.logical_date.date().isoformat() == "2026-11-27"


def test_params_default_to_configured_values(dagbag):
    from jobs.common.config import overrides_from_params

    params = dagbag.dags["recsys_nightly"].params.dump()
    assert overrides_from_params(params) == {}
    assert overrides_from_params({**params, "user_encoder_epochs": 3}) == {"user_encoder": {"epochs": 3}}


def test_parsing_the_dag_imports_no_heavy_library():
    # Airflow re-parses DAG files every few seconds: Spark, TF or MLflow at parse time
    # would cost seconds per parse. Parse in a fresh interpreter and look at sys.modules.
    code = (
        "import sys, runpy; sys.path[:0] = ['plugins', '.'];"
        "runpy.run_path('dags/recsys_nightly.py');"
        "heavy = [m for m in ('pyspark', 'tensorflow', 'mlflow', 'keras') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dag_params_are_the_trigger_params_declared_with_the_config(dagbag):
    from jobs.common.config import trigger_params
    from jobs.pipeline import STAGE_ORDER

    params = dagbag.dags["recsys_nightly"].params
    declared = trigger_params(STAGE_ORDER)  # stop_after: a drop-down of the stages
    assert list(params.keys()) == list(declared)
    assert {name: params.get_param(name).schema for name in params} == {
        name: param.schema for name, param in declared.items()}


def test_a_run_stopping_after_ingest_runs_in_dag_test_to_ingest_and_marks_every_later_task_skipped(
        dagbag, tmp_path, monkeypatch):
    # The embedded path (dag.test, as `make demo` runs it) handles the stop_after stage's
    # DownstreamTasksSkipped: the later tasks end skipped without running.
    import datetime as dt

    from airflow.utils.db import initdb

    from devtools.generate import generate_clickstream

    ds = "2026-10-01"
    monkeypatch.setenv("FUSIONREC_HOME", str(tmp_path))
    generate_clickstream(str(tmp_path / "lake"), ds, 3, scale="tiny", seed=3)
    initdb()
    run = dagbag.dags["recsys_nightly"].test(
        logical_date=dt.datetime.fromisoformat(ds).replace(tzinfo=dt.timezone.utc),
        run_conf={"stop_after": "ingest", "window_days": 3})
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states == {task: "success" if task in ("wait_for_landing", "ingest") else "skipped"
                      for task in EXPECTED_CHAIN}
    # Skipped all at once by ingest, not one by one: none of them ever started a try.
    assert {ti.task_id for ti in run.get_task_instances() if ti.try_number == 0} == set(EXPECTED_CHAIN[2:])
    assert (tmp_path / "lake" / "raw").is_dir() and not (tmp_path / "lake" / "clean").exists()
