"""The nightly stages, each a function (config, ds, upstream) -> small JSON-able dict.

`upstream` maps each upstream task id to the dict it returned (paths and counts, never
data). The Airflow operator in plugins/fusionrec_operators.py calls `run_stage`; so can a
plain Python process, which is how a stage is debugged without Airflow:

    python -m jobs.stages train_user_encoder --ds 2026-11-27
    python -m jobs.stages clean --ds 2026-11-27 --dates 2026-11-26 2026-11-27

The Spark stages run where config["spark"]["deploy"] says: "in_process" starts the driver
in this process; "spark_submit" runs this same module through spark-submit with the jobs
package shipped (jobs/submit.py), which calls it with --result-file to get the result back.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

# Task order of the nightly DAG; each stage's module exposes the callable named here.
STAGE_ORDER = (
    "ingest", "validate", "clean", "denoise", "normalize_features", "train_baselines", "train_user_encoder",
    "train_item_encoder", "fuse", "evaluate", "register_and_gate", "batch_recommend",
)


# Stages that start Spark: these go through spark-submit when spark.deploy says so. Validate
# is not one: it streams the raw files in plain Python (jobs/validate.py) and never starts
# a JVM, so submitting it would only add a JVM start-up to the night.
SPARK_STAGES = ("clean", "denoise", "normalize_features", "train_baselines")  # ALS is Spark MLlib
DEPLOY_MODES = ("in_process", "spark_submit")
# Spark stages whose dates come from upstream (ingest's result); normalize takes only ds.
DATES_FROM_UPSTREAM = ("clean", "denoise")


def _etl_dates(upstream: dict) -> list[str]:
    for result in upstream.values():
        if isinstance(result, dict) and "dates" in result:
            return result["dates"]
    raise ValueError("no upstream stage reported the dates to process (expected ingest's result)")


def _ingest(config, ds, upstream):
    return importlib.import_module("jobs.ingest").main(config, ds)


def _validate(config, ds, upstream):
    dates = _etl_dates(upstream)
    return {"dates": dates, "summary": importlib.import_module("jobs.validate").main(config, dates)}


def _clean(config, ds, upstream):
    dates = _etl_dates(upstream)
    return {"dates": dates, "summary": importlib.import_module("jobs.clean").main(config, dates)}


def _denoise(config, ds, upstream):
    dates = _etl_dates(upstream)
    return {"dates": dates, "summary": importlib.import_module("jobs.denoise").main(config, dates)}


def _normalize(config, ds, upstream):
    return importlib.import_module("jobs.normalize").main(config, ds)


def _path_stage(module_name):
    """Stages whose job returns one output directory."""
    def run(config, ds, upstream):
        return {"path": importlib.import_module(module_name).main(config, ds)}
    return run


def _register(config, ds, upstream):
    return importlib.import_module("jobs.register").main(config, ds)


def _recommend(config, ds, upstream):
    return importlib.import_module("jobs.recommend").main(config, ds)


STAGES = {
    "ingest": _ingest,
    "validate": _validate,
    "clean": _clean,
    "denoise": _denoise,
    "normalize_features": _normalize,
    "train_baselines": _path_stage("jobs.train_baselines"),
    "train_user_encoder": _path_stage("jobs.train_user_encoder"),
    "train_item_encoder": _path_stage("jobs.train_item_encoder"),
    "fuse": _path_stage("jobs.fuse"),
    "evaluate": _path_stage("jobs.evaluate"),
    "register_and_gate": _register,
    "batch_recommend": _recommend,
}


def deploy_mode(config: dict) -> str:
    mode = config["spark"].get("deploy", "in_process")
    if mode not in DEPLOY_MODES:
        raise ValueError(f"config spark.deploy (FUSIONREC_SPARK_DEPLOY) is {mode!r}; "
                         f"choose one of {', '.join(DEPLOY_MODES)}")
    return mode


def run_stage(stage: str, config: dict, ds: str, upstream: dict | None = None) -> dict:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGE_ORDER)}")
    upstream = upstream or {}
    started = time.monotonic()
    if stage not in SPARK_STAGES:
        result = STAGES[stage](config, ds, upstream)
    elif deploy_mode(config) == "spark_submit":
        from jobs.submit import run_submitted

        dates = _etl_dates(upstream) if stage in DATES_FROM_UPSTREAM else [ds]
        result = run_submitted(config, stage, ds, dates)
    else:
        from jobs.spark_lake import readable_read_errors

        with readable_read_errors():  # a truncated gzip: one line naming it, not a Java trace
            result = STAGES[stage](config, ds, upstream)
    result = dict(result or {})
    result["seconds"] = round(time.monotonic() - started, 1)
    print(f"stage {stage} for {ds} finished in {result['seconds']} s")
    return result


def main(argv=None) -> None:
    from jobs.config import resolve_config

    parser = argparse.ArgumentParser(description="Run one nightly stage outside Airflow.")
    parser.add_argument("stage", choices=STAGE_ORDER)
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD")
    parser.add_argument("--dates", nargs="+", help="dates for clean / denoise (default: just --ds)")
    parser.add_argument("--result-file", help="also write the result (or the error) there as JSON "
                                              "(how a stage run through spark-submit reports back)")
    args = parser.parse_args(argv)
    upstream = {"cli": {"dates": args.dates or [args.ds]}}
    try:
        result = run_stage(args.stage, resolve_config(), args.ds, upstream)
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
    # its modules would then shadow top-level packages of the same name (evaluate, ...).
    # The jobs package comes from --py-files (or PYTHONPATH) instead.
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)
    main()
