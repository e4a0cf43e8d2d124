"""The nightly stages in DAG order, and how one of them runs for a night.

Every stage is a module with `run(night) -> dict`: the night is jobs.common.night.Night
(config, logical date, window, the dates ingest decided), the result a small JSON-able
dict of paths and counts. `stage_module` finds a stage's module with a plain import, made
only when the stage runs, so the DAG file that imports this module stays light.

A stage runs the same way from Airflow (plugins/fusionrec_operators.py), from a shell

    python -m jobs.pipeline train_user_encoder --ds 2026-11-27

and inside spark-submit, which this module's CLI is: with config spark.deploy
"spark_submit" a Spark stage's task writes its Night to a file and runs this file through
spark-submit with --night-file (jobs/common/spark_submit.py); the child calls the same
`run(night)` and writes the result (or the error) to --result-file.

Each finished stage is recorded in the night's manifest with its seconds and peak memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time
from pathlib import Path
from types import ModuleType

from jobs.common.night import Night, record_stage


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str  # the Airflow task id and the module's name
    uses_spark: bool = False  # goes through spark-submit when spark.deploy says so
    trains: bool = False  # TensorFlow training: runs on the GPU queue of a deployment


# Task order of the nightly DAG.
STAGES = (
    Stage("ingest"),
    # Validate streams the raw files in plain Python and never starts a JVM.
    Stage("validate"),
    Stage("clean", uses_spark=True),
    Stage("denoise", uses_spark=True),
    Stage("normalize_features", uses_spark=True),
    Stage("train_baselines", uses_spark=True),  # ALS is Spark MLlib
    Stage("train_user_encoder", trains=True),
    Stage("train_item_encoder", trains=True),
    Stage("fuse", trains=True),  # feature-level fusion trains a Keras model
    Stage("evaluate"),
    Stage("train_search_ranker"),  # the search ranker uses tonight's encoder and served fusion
    Stage("register_search_ranker"),  # its own registered model and champion / challenger gate
    Stage("register_and_gate"),
    Stage("batch_recommend"),
    Stage("publish_serving"),  # into the shop's stores (serving_store.targets), switched atomically
)
STAGE_ORDER = tuple(stage.name for stage in STAGES)
STAGE_BY_NAME = {stage.name: stage for stage in STAGES}
DEPLOY_MODES = ("in_process", "spark_submit")
# The stage that plans the night (decides its dates and writes its manifest).
PLANNING_STAGE = "ingest"


def past_the_last_stage(stage: str, stop_after: str | None) -> bool:
    """Whether stage comes after stop_after, the last stage a run runs (config stop_after)."""
    if stop_after is None:
        return False
    if stop_after not in STAGE_ORDER:
        raise ValueError(f"config stop_after: not a stage of the night: {stop_after!r} "
                         f"(one of {', '.join(STAGE_ORDER)})")
    return STAGE_ORDER.index(stage) > STAGE_ORDER.index(stop_after)


def stage_module(name: str) -> ModuleType:
    """The module holding stage `name`'s run(night)."""
    if name == "ingest":
        from jobs.etl import ingest as module
    elif name == "validate":
        from jobs.etl import validate as module
    elif name == "clean":
        from jobs.etl import clean as module
    elif name == "denoise":
        from jobs.etl import denoise as module
    elif name == "normalize_features":
        from jobs.etl import normalize_features as module
    elif name == "train_baselines":
        from jobs.train import train_baselines as module
    elif name == "train_user_encoder":
        from jobs.train import train_user_encoder as module
    elif name == "train_item_encoder":
        from jobs.train import train_item_encoder as module
    elif name == "fuse":
        from jobs.fusion import fuse as module
    elif name == "evaluate":
        from jobs.evaluation import evaluate as module
    elif name == "train_search_ranker":
        from jobs.search import train_search_ranker as module
    elif name == "register_search_ranker":
        from jobs.serving import register_search_ranker as module
    elif name == "register_and_gate":
        from jobs.serving import register_and_gate as module
    elif name == "batch_recommend":
        from jobs.serving import batch_recommend as module
    elif name == "publish_serving":
        from jobs.serving import publish_serving as module
    else:
        raise ValueError(f"unknown stage {name!r}; known: {', '.join(STAGE_ORDER)}")
    return module


def deploy_mode(config: dict) -> str:
    mode = config["spark"]["deploy"]
    if mode not in DEPLOY_MODES:
        raise ValueError(f"config spark.deploy (FUSIONREC_SPARK_DEPLOY) is {mode!r}; "
                         f"choose one of {', '.join(DEPLOY_MODES)}")
    return mode


def night_for(stage: str, config: dict, ds: str) -> Night:
    """The context a stage runs with: planned afresh for ingest, as recorded for the others."""
    if stage not in STAGE_BY_NAME:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGE_ORDER)}")
    return Night.plan(config, ds) if stage == PLANNING_STAGE else Night.open(config, ds)


def run_stage(stage: str, config: dict, ds: str) -> dict:
    """Run one stage for night ds (what the Airflow task does)."""
    return run_night_stage(stage, night_for(stage, config, ds))


def run_night_stage(stage: str, night: Night) -> dict:
    """Run one stage with the given context, where config spark.deploy says; record it."""
    spec = STAGE_BY_NAME.get(stage)
    if spec is None:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGE_ORDER)}")
    started = time.monotonic()
    if spec.uses_spark and deploy_mode(night.config) == "spark_submit":
        from jobs.common.spark_submit import run_submitted

        result = run_submitted(night, stage)
    else:
        result = run_in_process(spec, night)
    result = dict(result or {})
    result["seconds"] = round(time.monotonic() - started, 1)
    result["peak_rss_mb"] = peak_rss_mb()
    record_stage(night.config, night.ds, stage, {"seconds": result["seconds"], "peak_rss_mb": result["peak_rss_mb"]})
    print(f"stage {stage} for {night.ds} finished in {result['seconds']} s (peak {result['peak_rss_mb']} MB)")
    if stage == last_stage(night.config):
        log_night_timings(night)
    return result


def last_stage(config: dict) -> str:
    """The night's last stage: config stop_after, or the DAG's last task."""
    return config.get("stop_after") or STAGE_ORDER[-1]


def log_night_timings(night: Night) -> None:
    """Every stage's seconds and peak memory of the night into MLflow (jobs.common.tracking).
    They stay in the manifest whatever happens here: the night's outputs are already
    written, so an unreachable tracking server costs this record only, said in one line."""
    from jobs.common.night import manifest_path, read_manifest
    from jobs.common.tracking import log_night_timings as log_to_mlflow

    manifest = read_manifest(night.config, night.ds)
    if manifest is None:
        return
    try:
        run_id = log_to_mlflow(night.config, night.ds, manifest)
    except Exception as error:  # noqa: BLE001 - any failure of the tracking store: say it, keep the night
        print(f"warning: the night's stage timings were not logged to MLflow ({type(error).__name__}: {error}); "
              f"they are in {manifest_path(night.config, night.ds)}")
        return
    print(f"stage timings of night {night.ds}: MLflow run {run_id} (\"night {night.ds}\")")


def run_in_process(spec: Stage, night: Night) -> dict:
    module = stage_module(spec.name)
    if not spec.uses_spark:
        return module.run(night)
    from jobs.common.spark_io import readable_read_errors

    with readable_read_errors():  # a truncated gzip: one line naming it, not a Java trace
        return module.run(night)


def peak_rss_mb() -> int:
    """Peak resident memory of this process and of its finished children (e.g. spark-submit), MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return int(max(own, children) / 1024)  # Linux reports KiB


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Run one nightly stage outside Airflow.")
    parser.add_argument("stage", choices=STAGE_ORDER)
    parser.add_argument("--ds", help="logical date YYYY-MM-DD (the night's context comes from its manifest)")
    parser.add_argument("--night-file", help="the Night as JSON instead of --ds (how spark-submit receives "
                                             "exactly its parent task's context)")
    parser.add_argument("--result-file", help="also write the result (or the error) there as JSON "
                                              "(how a stage run through spark-submit reports back)")
    args = parser.parse_args(argv)
    if bool(args.ds) == bool(args.night_file):
        parser.error("give exactly one of --ds and --night-file")
    try:
        if args.night_file:
            result = run_in_process(STAGE_BY_NAME[args.stage], Night.from_json(Path(args.night_file).read_text()))
        else:
            from jobs.common.config import resolve_config

            result = run_stage(args.stage, resolve_config(), args.ds)
    except Exception as error:
        if args.result_file:
            _write_json(args.result_file, {"error": f"{type(error).__name__}: {error}"})
        raise
    if args.result_file:
        _write_json(args.result_file, {"result": result})
    print(json.dumps(result, indent=2, default=str))


def _write_json(path: str, value: dict) -> None:
    Path(path).write_text(json.dumps(value, indent=2, default=str))


if __name__ == "__main__":
    # spark-submit runs this file as a script, which puts jobs/ itself first on sys.path;
    # its subpackages would then shadow top-level packages of the same name (evaluation, ...).
    # The jobs package comes from --py-files (or PYTHONPATH) instead.
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)
    main()
