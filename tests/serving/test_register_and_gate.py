"""register_and_gate.log_bundle: the served model carries only the code it imports, and that is enough."""

import json
import os
import subprocess
import sys
from pathlib import Path

from jobs.common.night import Night
from tests.fusion.test_fusion import DS, write_tiny_night

# Run in a fresh interpreter: `jobs` must not be importable before the model puts its code on sys.path.
LOAD_AND_PREDICT = """
import importlib.util, json, sys

import mlflow.pyfunc
import pandas as pd

importable_before = importlib.util.find_spec("jobs") is not None
model = mlflow.pyfunc.load_model(sys.argv[1])
predictions = model.predict(pd.DataFrame({"history": [["sku1", "sku2", "sku3"]]}), params={"k": 3})
print(json.dumps({"importable_before": importable_before,
                  "fused_model": sys.modules["jobs.serving.fused_model"].__file__,
                  "item_ids": list(predictions["item_ids"][0])}))
"""


def logged_model(config, tmp_path) -> Path:
    """Fit tonight's fusers on the tiny night, log the bundle and download it to tmp_path/model."""
    import mlflow

    from jobs.common.tracking import configure_mlflow
    from jobs.fusion import fuse
    from jobs.serving.register_and_gate import log_bundle, request_frame

    write_tiny_night(config)
    fuse.run(Night.plan(config, DS))
    experiment_id = configure_mlflow(config)  # the run in it: its artifacts under tmp_path, not ./mlruns
    with mlflow.start_run(experiment_id=experiment_id):
        model_uri = log_bundle(config, DS, "fusion_rrf", request_frame([["sku1", "sku2"]], [["view", "click"]]))
    return Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path / "model")))


def test_the_logged_model_carries_only_the_served_code_and_loads_with_nothing_else(tmp_config, tmp_path):
    config = dict(tmp_config, max_seq_len=4, top_k=5,
                  fusion={**tmp_config["fusion"], "candidates_per_model": 4, "feature_fusion_epochs": 1,
                          "rrf_grid_steps": 2})
    model_dir = logged_model(config, tmp_path)

    code = sorted(path.relative_to(model_dir / "code").as_posix() for path in (model_dir / "code").rglob("*.py"))
    assert {"jobs/__init__.py", "jobs/serving/fused_model.py", "jobs/serving/night_models.py",
            "jobs/fusion/decision_level.py", "jobs/train/encoder_scorers.py"} <= set(code)
    assert [name for name in code if name.startswith(("jobs/etl/", "jobs/train/train_", "jobs/fusion/fuse.py",
                                                      "jobs/serving/register_and_gate.py", "devtools/",
                                                      "bench/"))] == []
    assert all(name.startswith("jobs/") for name in code)

    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    completed = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, str(model_dir)], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    outcome = json.loads(completed.stdout.strip().splitlines()[-1])
    assert outcome["importable_before"] is False
    assert outcome["fused_model"] == str(model_dir / "code" / "jobs" / "serving" / "fused_model.py")
    assert len(outcome["item_ids"]) == 3 and set(outcome["item_ids"]) <= {f"sku{i}" for i in range(1, 13)}


def test_a_night_serving_top_5_is_still_gated_on_the_primary_metrics_own_cutoff(tmp_config):
    # top_k 5 is what the shop shows; the gate compares ndcg@20 (top 20 of each model), the
    # primary metric, so the first version becomes champion with its ndcg@20 recorded.
    from jobs.serving import register_and_gate

    config = tiny_gated_night(tmp_config)  # top_k 5
    result = register_and_gate.run(Night.plan(config, DS))
    assert result["alias"] == "champion" and result["version"] == 1
    assert set(result["challenger"]) == {"recall@20", "mrr@20", "ndcg@20"}


def tiny_gated_night(tmp_config):
    from jobs.fusion import fuse

    config = dict(tmp_config, max_seq_len=4, top_k=5,
                  fusion={**tmp_config["fusion"], "candidates_per_model": 4, "feature_fusion_epochs": 1,
                          "rrf_grid_steps": 2})
    write_tiny_night(config)
    fuse.run(Night.plan(config, DS))
    return config


def test_a_retried_gate_registers_nothing_twice_and_keeps_one_run(tmp_config, capsys):
    # Attempt 1 registered v1 and made it champion; the retry (same models, same fingerprint)
    # gates v1 again in v1's own run: still one version, one run, v1 still champion.
    from mlflow import MlflowClient

    from jobs.common.tracking import configure_mlflow, stage_runs
    from jobs.serving import register_and_gate

    config = tiny_gated_night(tmp_config)
    first = register_and_gate.run(Night.plan(config, DS))
    again = register_and_gate.run(Night.plan(config, DS))
    assert (first["version"], first["alias"]) == (1, "champion")
    assert (again["version"], again["alias"], again["run_id"]) == (1, "champion", first["run_id"])
    assert "v1 already holds tonight's models" in capsys.readouterr().out
    experiment_id = configure_mlflow(config)
    name = config["mlflow"]["registered_model"]
    assert [str(v.version) for v in MlflowClient().search_model_versions(f"name = '{name}'")] == ["1"]
    assert [run.info.run_id for run in stage_runs(experiment_id, "register_and_gate", DS)] == [first["run_id"]]


def test_a_worse_model_never_becomes_champion_and_a_hand_set_champion_is_the_one_to_beat(
        tmp_config, monkeypatch, capsys):
    # Four nights' models (four fingerprints) scored ndcg@20 0.50, 0.30, 0.40 and 0.90 on the holdout.
    from mlflow import MlflowClient

    from jobs.common.tracking import configure_mlflow
    from jobs.serving import register_and_gate
    from jobs.serving.register_and_gate import serving_version

    config = tiny_gated_night(tmp_config)
    holdout = {"1": 0.50, "2": 0.30, "3": 0.40, "4": 0.90}
    scored = []

    def score_model(model_uri, requests, targets, k):
        version = model_uri.rsplit("/", 1)[1]
        scored.append(version)
        return {"recall@20": holdout[version], "mrr@20": holdout[version], "ndcg@20": holdout[version]}

    nights = iter(["night-1", "night-2", "night-3", "night-4"])
    monkeypatch.setattr(register_and_gate, "score_model", score_model)
    monkeypatch.setattr(register_and_gate, "night_fingerprint", lambda config, ds, variant: next(nights))
    configure_mlflow(config)
    client, name = MlflowClient(), config["mlflow"]["registered_model"]

    assert register_and_gate.run(Night.plan(config, DS))["alias"] == "champion"  # v1: nothing to beat
    client.set_registered_model_alias(name, "reviewed", "1")  # a person's own alias
    second = register_and_gate.run(Night.plan(config, DS))  # v2: 0.30 < 0.50
    assert (second["version"], second["alias"], second["champion_version"]) == (2, "challenger", "1")
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    # A person promotes v2 by hand: the next night must beat v2 (0.40 > 0.30), not v1.
    client.set_registered_model_alias(name, "champion", "2")
    third = register_and_gate.run(Night.plan(config, DS))
    assert (third["version"], third["alias"], third["champion_version"]) == (3, "champion", "2")
    assert scored == ["1", "2", "1", "3", "2"]  # each night: tonight's version, then the champion
    assert str(client.get_model_version_by_alias(name, "reviewed").version) == "1"  # never touched
    # A backfill: the champion v3 was trained for a later night than DS. DS's model v4 is better
    # on DS's holdout (0.90 > 0.40), but v3 has seen that holdout in training: v4 stays
    # challenger, night DS serves from v4, the later nights from v3.
    later = "2099-01-01"
    client.set_model_version_tag(name, "3", "ds", later)
    capsys.readouterr()
    backfilled = register_and_gate.run(Night.plan(config, DS))
    assert (backfilled["version"], backfilled["alias"], backfilled["champion_version"]) == (4, "challenger", "3")
    assert str(client.get_model_version_by_alias(name, "champion").version) == "3"
    assert f"a night older than champion v3's {later}" in capsys.readouterr().out
    assert scored[5:] == ["4"]  # the champion is not scored on a holdout it has seen
    assert backfilled["champion"] is None
    assert "Not promoted: trained for a night older than the champion's" in client.get_model_version(name, "4").description
    assert serving_version(client, name, DS) == ("4", f"registered for {DS} (the champion is {later}'s)")
    assert serving_version(client, name, later) == ("3", "champion")
