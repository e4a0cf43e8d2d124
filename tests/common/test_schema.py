"""Invariants of the feature contract, the config resolution and the lake layout."""

import gzip
import json
from pathlib import Path

import pytest

from jobs.common.night import Night
from jobs.common import schema
from jobs.common.config import overrides_from_params, resolve_config
from jobs.common.lake import days_back, partition_path, replace_partition


def test_event_type_ids_are_dense_and_reserve_zero_for_padding():
    assert sorted(schema.EVENT_TYPE_INDEX.values()) == list(range(1, len(schema.EVENT_TYPES) + 1))
    assert schema.N_EVENT_TYPES == len(schema.EVENT_TYPES) + 1
    assert set(schema.ITEM_EVENT_TYPES) == set(schema.EVENT_TYPES) - {schema.SEARCH}


def test_reason_codes_are_unique():
    codes = [value for name, value in vars(schema).items() if name.startswith("REASON_")]
    assert len(codes) == len(set(codes)) >= 12


def test_feature_tables_share_their_keys():
    assert schema.ITEM_IDX in schema.ITEM_FEATURE_COLUMNS and schema.ITEM_IDX in schema.SEQUENCE_COLUMNS
    assert len(set(schema.ITEM_FEATURE_COLUMNS)) == len(schema.ITEM_FEATURE_COLUMNS)
    assert sorted(schema.SPLIT_NAMES) == [schema.SPLIT_TRAIN, schema.SPLIT_VALID, schema.SPLIT_TEST]


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


def test_days_back_and_partition_paths():
    assert days_back("2026-03-01", 3) == ["2026-02-27", "2026-02-28", "2026-03-01"]
    assert partition_path({"lake_root": "/lake"}, schema.CLEAN_EVENTS, "2026-03-01") == "/lake/clean/events/dt=2026-03-01"
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        days_back("yesterday", 2)


def test_replace_partition_is_all_or_nothing(tmp_path):
    target = tmp_path / "dataset" / "dt=2026-01-01"
    with replace_partition(str(target)) as staging:
        Path(staging, "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with replace_partition(str(target)) as staging:
            Path(staging, "b.txt").write_text("half-written")
            raise RuntimeError("job died")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]  # the failed write left no trace
    assert sorted(p.name for p in target.parent.iterdir()) == ["dt=2026-01-01"]
    with replace_partition(str(target)) as staging:
        Path(staging, "c.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]


def _land(config, day, lines=("{}",)):
    for dataset, name in ((schema.LANDING_EVENTS, "events-00000.jsonl.gz"), (schema.LANDING_CATALOG, "catalog.jsonl.gz")):
        folder = Path(partition_path(config, dataset, day))
        folder.mkdir(parents=True, exist_ok=True)
        with gzip.open(folder / name, "wt") as handle:
            handle.write("\n".join(lines) + "\n")


def test_ingest_catches_up_on_unprocessed_history_then_only_the_night(tmp_config):
    from jobs.etl import ingest

    config = dict(tmp_config, window_days=3)
    for day in ("2026-05-01", "2026-05-02", "2026-05-03"):
        _land(config, day)
    assert ingest.run(Night.plan(config, "2026-05-03"))["dates"] == ["2026-05-01", "2026-05-02", "2026-05-03"]
    for day in ("2026-05-01", "2026-05-02", "2026-05-03"):  # as if denoise had run
        Path(partition_path(config, schema.DENOISED_EVENTS, day)).mkdir(parents=True)
    assert ingest.run(Night.plan(config, "2026-05-03"))["dates"] == ["2026-05-03"]
    assert sorted(p.name for p in Path(partition_path(config, schema.RAW_EVENTS, "2026-05-03")).iterdir()) == [
        "events-00000.jsonl.gz"]


def test_ingest_of_a_night_that_never_landed_names_the_folder(tmp_config):
    from jobs.etl import ingest

    with pytest.raises(FileNotFoundError, match="no landed files .* for 2026-05-09 in .*landing/events/dt=2026-05-09"):
        ingest.run(Night.plan(tmp_config, "2026-05-09"))
