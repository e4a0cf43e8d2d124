"""MLflow conventions (jobs/common/tracking.py) on a temporary sqlite store."""

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from jobs.common import tracking

DS = "2026-11-27"


def test_configure_mlflow_creates_the_experiment_at_the_configured_artifact_location(tmp_config):
    experiment_id = tracking.configure_mlflow(tmp_config)
    mlflow_config = tmp_config["mlflow"]
    assert mlflow.get_tracking_uri() == mlflow_config["tracking_uri"]
    experiment = MlflowClient().get_experiment(experiment_id)
    assert experiment.name == mlflow_config["experiment"]
    assert experiment.artifact_location == Path(mlflow_config["artifact_root"]).resolve().as_uri()
    assert Path(mlflow_config["artifact_root"]).is_dir()
    assert Path(mlflow_config["tracking_uri"][len("sqlite:///"):]).is_file()


def test_configure_mlflow_reuses_an_existing_experiment(tmp_config):
    assert tracking.configure_mlflow(tmp_config) == tracking.configure_mlflow(tmp_config)
    assert [e.name for e in MlflowClient().search_experiments()].count(tmp_config["mlflow"]["experiment"]) == 1


def test_stage_run_tags_the_run_and_logs_the_config(tmp_config, monkeypatch):
    monkeypatch.setattr(tracking, "git_commit", lambda: "0123abc")
    with tracking.stage_run(tmp_config, "evaluate", DS) as run:
        run_id = run.info.run_id
        assert mlflow.active_run().info.run_id == run_id
    assert mlflow.active_run() is None
    finished = MlflowClient().get_run(run_id)
    assert finished.info.run_name == f"evaluate {DS}" and finished.info.status == "FINISHED"
    assert {key: finished.data.tags[key] for key in ("stage", "ds", "data_partition", "git_commit")} == {
        "stage": "evaluate", "ds": DS, "data_partition": f"dt={DS}", "git_commit": "0123abc"}
    assert mlflow.artifacts.load_dict(f"{finished.info.artifact_uri}/config.json") == tmp_config


def test_a_failing_stage_ends_its_run_as_failed(tmp_config):
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.stage_run(tmp_config, "fuse", DS) as run:
            raise RuntimeError("boom")
    assert MlflowClient().get_run(run.info.run_id).info.status == "FAILED"


def test_a_retry_leaves_one_run_per_stage_and_night_and_retires_the_killed_and_failed_ones(tmp_config):
    # Attempt 1 was killed outright (its run never ended: RUNNING), attempt 2 failed, attempt 3
    # succeeds; another night's and another stage's runs are not touched.
    experiment_id = tracking.configure_mlflow(tmp_config)
    client = MlflowClient()  # after configure_mlflow: bound to this test's store
    killed = client.create_run(experiment_id, tags={"stage": "fuse", "ds": DS}).info.run_id
    with pytest.raises(RuntimeError):
        with tracking.stage_run(tmp_config, "fuse", DS) as run:
            failed = run.info.run_id
            raise RuntimeError("boom")
    with tracking.stage_run(tmp_config, "fuse", "2026-11-26"):
        pass
    with tracking.stage_run(tmp_config, "evaluate", DS):
        pass
    assert len(tracking.stage_runs(experiment_id, "fuse", DS)) == 2  # a failure retires nothing
    with tracking.stage_run(tmp_config, "fuse", DS) as run:
        kept = run.info.run_id
    assert [r.info.run_id for r in tracking.stage_runs(experiment_id, "fuse", DS)] == [kept]
    for run_id, status in ((killed, "KILLED"), (failed, "FAILED")):
        retired = client.get_run(run_id)
        assert (retired.info.lifecycle_stage, retired.info.status) == ("deleted", status)
        assert retired.data.tags["fusionrec.superseded_by"] == kept
    assert len(tracking.stage_runs(experiment_id, "fuse", "2026-11-26")) == 1
    assert len(tracking.stage_runs(experiment_id, "evaluate", DS)) == 1


def test_a_run_that_registered_a_model_version_is_never_retired(tmp_config):
    experiment_id = tracking.configure_mlflow(tmp_config)
    client = MlflowClient()  # after configure_mlflow: bound to this test's store
    with tracking.stage_run(tmp_config, "register_and_gate", DS) as run:
        source = run.info.run_id
        mlflow.log_text("weights", "model/weights.txt")
    client.create_registered_model("m")
    client.create_model_version("m", f"runs:/{source}/model", run_id=source)
    with tracking.stage_run(tmp_config, "register_and_gate", DS) as run:
        pass
    assert {r.info.run_id for r in tracking.stage_runs(experiment_id, "register_and_gate", DS)} == {
        source, run.info.run_id}


def test_a_resumed_run_is_the_earlier_attempts_run_finished(tmp_config):
    experiment_id = tracking.configure_mlflow(tmp_config)
    earlier = MlflowClient().create_run(experiment_id, tags={"stage": "register_and_gate", "ds": DS}).info.run_id
    with tracking.stage_run(tmp_config, "register_and_gate", DS, resume_run_id=earlier) as run:
        assert run.info.run_id == earlier
    [only] = tracking.stage_runs(experiment_id, "register_and_gate", DS)
    assert (only.info.run_id, only.info.status, only.data.tags["stage"]) == (earlier, "FINISHED", "register_and_gate")


def test_git_commit_is_the_checkouts_head_or_unknown_outside_a_repository(tmp_path, monkeypatch):
    commit = tracking.git_commit()
    assert commit == "unknown" or (len(commit) == 40 and int(commit, 16) >= 0)
    monkeypatch.setattr(tracking, "REPO_ROOT", tmp_path)  # not a git checkout
    assert tracking.git_commit() == "unknown"


def test_a_tracking_server_that_does_not_answer_stops_the_stage_with_one_clear_line(tmp_config):
    import socket
    import time

    from jobs.common.tracking import TrackingServerUnavailable, configure_mlflow

    with socket.socket() as probe:  # a port nothing listens on: bound, closed, free again
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = dict(tmp_config, mlflow={**tmp_config["mlflow"], "tracking_uri": f"http://127.0.0.1:{port}"})
    started = time.monotonic()
    with pytest.raises(TrackingServerUnavailable) as raised:
        configure_mlflow(config)
    assert time.monotonic() - started < 15  # not the client's minutes of retries
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"the MLflow tracking server at http://127.0.0.1:{port} is not answering "
                              f"(http://127.0.0.1:{port}/health: ")
    assert "FUSIONREC_MLFLOW_URI" in message and "retry the task" in message
