"""The typed config: defaults declared once, precedence, validation, and the DAG's trigger params."""

import json
import re
import sys
from pathlib import Path

import pytest

from jobs.common.config import (TRIGGER_PARAMS, FusionrecConfig, overrides_from_params, resolve_config,
                                section_settings, trigger_params)

REPO = Path(__file__).resolve().parents[2]


def test_config_precedence_defaults_file_env_overrides(tmp_path):
    config_file = tmp_path / "fusionrec.json"
    config_file.write_text(json.dumps({"top_k": 10, "user_encoder": {"epochs": 2}}))
    environ = {"FUSIONREC_CONFIG": str(config_file), "FUSIONREC_HOME": str(tmp_path / "home"),
               "FUSIONREC_SPARK_MASTER": "spark://cluster:7077"}
    config = resolve_config({"user_encoder": {"epochs": 5}}, environ=environ)
    assert config["top_k"] == 10  # file beats default
    assert config["user_encoder"]["epochs"] == 5  # override beats file
    assert config["user_encoder"]["batch_size"] == 256  # untouched nested default survives
    assert config["spark"]["master"] == "spark://cluster:7077"  # env beats default
    assert config["lake_root"] == str(tmp_path / "home" / "lake")
    assert config["mlflow"]["tracking_uri"] == f"sqlite:///{tmp_path / 'home' / 'mlflow' / 'mlflow.db'}"


def test_an_mlflow_call_elsewhere_in_the_process_does_not_redirect_the_store(tmp_path):
    # mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI; the config must not follow it.
    config = resolve_config(environ={"FUSIONREC_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": "sqlite:////other.db"})
    assert config["mlflow"]["tracking_uri"] == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert resolve_config(environ={"FUSIONREC_MLFLOW_URI": "http://mlflow:5000"})["mlflow"]["tracking_uri"] == (
        "http://mlflow:5000")


def test_unreadable_config_file_is_a_clear_error(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="FUSIONREC_CONFIG=.*broken.json"):
        resolve_config(environ={"FUSIONREC_CONFIG": str(broken)})


def test_dag_params_map_onto_config_keys():
    overrides = overrides_from_params({"window_days": 7, "top_k": None, "item_encoder_epochs": 2,
                                       "config_overrides": {"fusion": {"rrf_k": 10}}})
    assert overrides == {"window_days": 7, "item_encoder": {"epochs": 2}, "fusion": {"rrf_k": 10}}
    with pytest.raises(ValueError, match="config_overrides"):
        overrides_from_params({"config_overrides": [1, 2]})


def test_file_env_and_overrides_each_beat_the_one_before(tmp_path):
    config_file = tmp_path / "fusionrec.json"
    config_file.write_text(json.dumps({"scale": "large", "spark": {"master": "from-file", "app_name": "file-app"}}))
    environ = {"FUSIONREC_CONFIG": str(config_file), "FUSIONREC_SPARK_MASTER": "from-env"}
    assert resolve_config(environ=environ)["scale"] == "large"  # file beats default
    assert resolve_config(environ=environ)["spark"]["master"] == "from-env"  # env beats file
    config = resolve_config({"spark": {"master": "from-override"}}, environ=environ)
    assert config["spark"]["master"] == "from-override"  # override beats env
    assert config["spark"]["app_name"] == "file-app"  # a sibling key from the file survives


def test_resolved_defaults_match_the_documented_values_and_serialise(tmp_path):
    config = resolve_config(environ={"FUSIONREC_HOME": str(tmp_path)})
    assert (config["seed"], config["window_days"], config["max_seq_len"], config["top_k"]) == (42, 14, 20, 20)
    assert config["split"] == {"valid_days": 1, "test_days": 1}
    assert config["validate"]["max_future_skew_s"] == 3600.0 and config["clean"]["max_future_skew_s"] == 300
    assert config["user_encoder"]["loss"] == "full_softmax" and config["user_encoder"]["logit_scale"] == 16.0
    assert config["user_encoder"]["max_train_minutes"] is None
    assert config["baselines"]["als"] == {"rank": 32, "reg_param": 0.1, "alpha": 10.0, "max_iter": 10}
    assert config["evaluation"]["ks"] == [1, 5, 10, 20]
    assert config["spark"]["conf"]["spark.sql.shuffle.partitions"] == "8"
    assert config["spark"]["conf"]["spark.sql.files.maxPartitionBytes"] == "16m"
    assert config["privacy"]["key_file"] == str(tmp_path / "secrets" / "user_id.key")
    assert config["mlflow"]["artifact_root"] == str(tmp_path / "mlflow" / "artifacts")
    assert json.loads(json.dumps(config)) == config  # plain JSON types all the way down


def test_the_model_has_a_section_for_every_configured_block():
    assert FusionrecConfig.model_fields["validate_"].alias == "validate"  # BaseModel.validate is taken
    sections = [name for name, value in resolve_config(environ={}).items() if isinstance(value, dict)]
    assert sections == ["split", "source", "spark", "mlflow", "validate", "privacy", "sessionize", "clean", "denoise",
                        "item_stats", "user_encoder", "item_encoder", "baselines", "fusion", "evaluation", "search", "serving_store",
                        "airflow"]


@pytest.mark.parametrize("overrides, message", [
    ({"user_encoder": {"epocs": 3}}, "config user_encoder.epocs: unknown key"),
    ({"baselines": {"als": {"ranks": 3}}}, "config baselines.als.ranks: unknown key"),
    ({"validate": {"max_malformed": 0.1}}, "config validate.max_malformed: unknown key"),
    ({"colour": "red"}, "config colour: unknown key"),
])
def test_an_unknown_key_is_rejected_by_its_dotted_name(overrides, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        resolve_config(overrides, environ={})


@pytest.mark.parametrize("overrides, message", [
    ({"top_k": "abc"}, "config top_k: expected an integer, got 'abc'"),
    ({"top_k": "20"}, "config top_k: expected an integer, got '20'"),  # ints stay ints: no silent parsing
    ({"user_encoder": {"epochs": 2.5}}, "config user_encoder.epochs: expected an integer, got 2.5"),
    ({"user_encoder": {"learning_rate": "fast"}}, "config user_encoder.learning_rate: expected a number, got 'fast'"),
    ({"spark": {"master": 7077}}, "config spark.master: expected a string, got 7077"),
    ({"evaluation": {"exclude_seen": 1}}, "config evaluation.exclude_seen: expected true or false, got 1"),
    ({"split": {"test_days": 0}}, "config split.test_days: input should be greater than or equal to 1, got 0"),
    ({"user_encoder": 5}, "config user_encoder: expected an object, got 5"),
])
def test_a_wrong_type_is_rejected_naming_the_key_and_the_value(overrides, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        resolve_config(overrides, environ={})


def test_a_bad_key_in_the_config_file_is_named_too(tmp_path):
    config_file = tmp_path / "fusionrec.json"
    config_file.write_text(json.dumps({"fusion": {"rrf_k": "sixty"}}))
    with pytest.raises(ValueError, match="config fusion.rrf_k: expected an integer, got 'sixty'"):
        resolve_config(environ={"FUSIONREC_CONFIG": str(config_file)})


@pytest.mark.parametrize("text, flag", [("false", False), ("False", False), ("0", False), ("no", False),
                                        ("true", True), ("1", True), (" YES ", True)])
def test_environment_text_becomes_the_create_key_file_flag(text, flag):
    # As jobs/etl/privacy.py reads it: bool("false") would be True and mint a key on a cluster.
    config = resolve_config(environ={"FUSIONREC_CREATE_KEY_FILE": text})
    assert config["privacy"]["create_key_file"] is flag


def test_environment_text_that_is_no_flag_is_refused():
    with pytest.raises(ValueError, match="config privacy.create_key_file: expected true or false, got 'sometimes'"):
        resolve_config(environ={"FUSIONREC_CREATE_KEY_FILE": "sometimes"})


def test_environment_strings_set_string_keys_unchanged(tmp_path):
    config = resolve_config(environ={"FUSIONREC_LAKE": "s3a://bucket/lake", "FUSIONREC_SPARK_DEPLOY": "spark_submit",
                                     "FUSIONREC_SOURCE_PATH": str(tmp_path)})
    assert config["lake_root"] == "s3a://bucket/lake"
    assert config["spark"]["deploy"] == "spark_submit"
    assert config["source"]["path"] == str(tmp_path)


def test_section_settings_are_the_full_checked_section():
    settings = section_settings("baselines", {"als": {"rank": 4}})
    assert settings["als"] == {"rank": 4, "reg_param": 0.1, "alpha": 10.0, "max_iter": 10}
    assert settings["item_knn"]["neighbours"] == 100
    with pytest.raises(ValueError, match="config user_encoder.epochs: expected an integer"):
        section_settings("user_encoder", {"epochs": "8"})


def test_the_dag_params_are_exactly_the_declared_trigger_params():
    params = trigger_params()
    assert list(params) == [param.name for param in TRIGGER_PARAMS] + ["config_overrides"]
    schemas = {name: param.schema for name, param in params.items()}
    assert schemas["window_days"]["type"] == ["null", "integer"] and schemas["window_days"]["minimum"] == 3
    assert schemas["top_k"]["type"] == ["null", "integer"]
    assert (schemas["top_k"]["minimum"], schemas["top_k"]["maximum"]) == (1, 1000)
    assert schemas["user_encoder_epochs"]["type"] == ["null", "integer"]
    assert schemas["item_encoder_epochs"]["type"] == ["null", "integer"]
    assert schemas["spark_master"]["type"] == ["null", "string"]
    assert "enum" not in schemas["stop_after"]
    assert trigger_params(("ingest", "validate"))["stop_after"].schema["enum"] == [None, "ingest", "validate"]
    assert schemas["config_overrides"]["type"] == "object"
    assert all(params[param.name].value is None for param in TRIGGER_PARAMS)  # None: keep the configured value
    assert all(params[param.name].description for param in TRIGGER_PARAMS)


def test_every_trigger_param_sets_a_key_the_config_has():
    for param in TRIGGER_PARAMS:
        value = {"spark_master": "local[1]", "stop_after": "denoise"}.get(param.name, 7)
        overrides = overrides_from_params({param.name: value})
        config = resolve_config(overrides, environ={})
        *parents, leaf = param.config_key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        assert node[leaf] == value


def test_the_config_module_imports_without_airflow():
    # The Spark and TF jobs import the config where Airflow is not installed: Param is lazy.
    import subprocess

    code = "import sys, jobs.common.config; sys.exit(1 if 'airflow' in sys.modules else 0)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
