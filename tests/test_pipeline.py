"""jobs/pipeline.py: the stage list, how a stage's context is found, and the CLI.

The stage's own work is replaced by a fake module (monkeypatched stage_module): no Spark.
"""

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from jobs import pipeline
from jobs.common.night import ManifestMissingError, Night, read_manifest, start_manifest

REPO = Path(__file__).resolve().parents[1]
DS = "2026-11-27"
KNOWN = ("known: ingest, validate, clean, denoise, normalize_features, train_baselines, train_user_encoder, "
         "train_item_encoder, fuse, evaluate, train_search_ranker, register_search_ranker, register_and_gate, batch_recommend, publish_serving")


@pytest.fixture()
def config(tmp_config):
    return dict(tmp_config, window_days=3)


def fake_stage(monkeypatch, result: dict | None = None) -> list:
    """Replace every stage's module by one whose run(night) records the night and returns result."""
    nights = []

    def run(night):
        nights.append(night)
        return result

    monkeypatch.setattr(pipeline, "stage_module", lambda name: SimpleNamespace(run=run))
    return nights


def load_dag():
    sys.path.insert(0, str(REPO / "plugins"))
    spec = importlib.util.spec_from_file_location("recsys_nightly_for_test", REPO / "dags" / "recsys_nightly.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def test_stage_order_is_the_dags_task_chain():
    dag = load_dag()
    chain, task = [], dag.get_task(pipeline.STAGE_ORDER[0])
    while task is not None:
        assert len(task.upstream_task_ids) <= 1
        chain.append(task.task_id)
        downstream = sorted(task.downstream_task_ids)
        task = dag.get_task(downstream[0]) if downstream else None
    assert tuple(chain) == pipeline.STAGE_ORDER
    # Besides the stages, only the sensor that waits for the night's landed files, before ingest.
    assert set(dag.task_ids) - set(pipeline.STAGE_ORDER) == {"wait_for_landing"}
    assert dag.get_task(pipeline.STAGE_ORDER[0]).upstream_task_ids == {"wait_for_landing"}
    assert {task.task_id for task in dag.tasks if task.queue == "gpu"} == {
        stage.name for stage in pipeline.STAGES if stage.trains}


def test_every_stage_module_has_run_and_is_named_after_the_stage():
    for name in pipeline.STAGE_ORDER:
        module = pipeline.stage_module(name)
        assert callable(module.run), name
        assert Path(module.__file__).stem == name


def test_an_unknown_stage_is_a_value_error_naming_the_known_ones(config):
    night = Night.plan(config, DS)
    for call in (lambda: pipeline.stage_module("train"), lambda: pipeline.night_for("train", config, DS),
                 lambda: pipeline.run_night_stage("train", night)):
        with pytest.raises(ValueError, match=f"unknown stage 'train'; {KNOWN}$"):
            call()


def test_night_for_ingest_plans_the_night_afresh(config):
    # No manifest is needed: ingest writes it. Its dates default to just ds.
    assert pipeline.night_for("ingest", config, DS) == Night.plan(config, DS)


def test_night_for_a_later_stage_reads_the_dates_ingest_recorded(config):
    start_manifest(Night.plan(config, DS, ["2026-11-25", DS]))
    assert pipeline.night_for("clean", config, DS).dates == ("2026-11-25", DS)


def test_night_for_a_later_stage_without_a_manifest_says_to_run_ingest(config):
    with pytest.raises(ManifestMissingError, match=f"run the ingest stage for {DS} first"):
        pipeline.night_for("evaluate", config, DS)


def test_run_night_stage_returns_the_result_and_records_seconds_and_peak_memory(config, monkeypatch):
    nights = fake_stage(monkeypatch, {"rows": 3})
    night = Night.plan(config, DS)
    start_manifest(night)
    result = pipeline.run_night_stage("evaluate", night)
    assert nights == [night]
    assert result["rows"] == 3 and result["seconds"] >= 0 and result["peak_rss_mb"] > 0
    assert read_manifest(config, DS)["stages"] == {
        "evaluate": {"seconds": result["seconds"], "peak_rss_mb": result["peak_rss_mb"]}}


def test_the_night_s_last_stage_logs_every_stage_s_timing_to_one_mlflow_run(config, monkeypatch, capsys):
    from mlflow import MlflowClient

    fake_stage(monkeypatch, {})
    night = Night.plan(config, DS)
    start_manifest(night)
    first = pipeline.run_night_stage("evaluate", night)
    assert "stage timings" not in capsys.readouterr().out  # not the last stage: nothing logged yet
    last = pipeline.run_night_stage("publish_serving", night)
    run_id = capsys.readouterr().out.split("MLflow run ")[1].split()[0]
    logged = MlflowClient().get_run(run_id)
    assert logged.info.run_name == f"night {DS}" and logged.data.tags["stage"] == "night"
    assert logged.data.metrics == {
        "stage_seconds.evaluate": first["seconds"], "stage_seconds.publish_serving": last["seconds"],
        "stage_peak_rss_mb.evaluate": first["peak_rss_mb"], "stage_peak_rss_mb.publish_serving": last["peak_rss_mb"],
        "stages_seconds": round(first["seconds"] + last["seconds"], 1)}


def test_a_night_stopping_early_logs_its_timings_after_its_stop_stage(config, monkeypatch, capsys):
    fake_stage(monkeypatch, {})
    night = Night.plan(dict(config, stop_after="ingest"), DS)
    start_manifest(night)  # what the real ingest does
    pipeline.run_night_stage("ingest", night)
    assert f"stage timings of night {DS}: MLflow run" in capsys.readouterr().out


def test_an_unreachable_tracking_server_costs_the_timing_run_only(config, monkeypatch, capsys):
    fake_stage(monkeypatch, {"rows": 1})
    down = dict(config, mlflow=dict(config["mlflow"], tracking_uri="http://127.0.0.1:9"))
    night = Night.plan(down, DS)
    start_manifest(night)
    result = pipeline.run_night_stage("publish_serving", night)
    assert result["rows"] == 1 and "publish_serving" in read_manifest(down, DS)["stages"]
    out = capsys.readouterr().out
    assert "warning: the night's stage timings were not logged to MLflow (TrackingServerUnavailable" in out
    assert "manifest" in out.splitlines()[-1]


def test_run_stage_runs_ingest_with_the_planned_night_and_a_none_result_becomes_a_dict(config, monkeypatch):
    nights = fake_stage(monkeypatch, None)
    result = pipeline.run_stage("ingest", config, DS)
    assert nights == [Night.plan(config, DS)]
    assert set(result) == {"seconds", "peak_rss_mb"}


def test_deploy_mode_accepts_the_known_modes_and_rejects_others():
    for mode in pipeline.DEPLOY_MODES:
        assert pipeline.deploy_mode({"spark": {"deploy": mode}}) == mode
    with pytest.raises(ValueError, match="spark.deploy .* is 'cluster'; choose one of in_process, spark_submit"):
        pipeline.deploy_mode({"spark": {"deploy": "cluster"}})


@pytest.mark.parametrize("extra", [[], ["--ds", DS, "--night-file", "night.json"]], ids=["neither", "both"])
def test_the_cli_wants_exactly_one_of_ds_and_night_file(extra, capsys):
    with pytest.raises(SystemExit) as exited:
        pipeline.main(["evaluate", *extra])
    assert exited.value.code == 2
    assert "give exactly one of --ds and --night-file" in capsys.readouterr().err


def test_the_cli_runs_the_stage_with_exactly_the_night_file_and_writes_the_result(config, monkeypatch, tmp_path):
    nights = fake_stage(monkeypatch, {"rows": 3, "path": "/lake/x"})
    night = Night.plan(config, DS, ["2026-11-26", DS])  # no manifest: the file is the whole context
    night_file, result_file = tmp_path / "night.json", tmp_path / "result.json"
    night_file.write_text(night.to_json())
    pipeline.main(["evaluate", "--night-file", str(night_file), "--result-file", str(result_file)])
    assert nights == [night]
    assert json.loads(result_file.read_text()) == {"result": {"rows": 3, "path": "/lake/x"}}
