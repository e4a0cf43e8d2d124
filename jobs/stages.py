"""The nightly stages, each a function (config, ds, upstream) -> small JSON-able dict.

`upstream` maps each upstream task id to the dict it returned (paths and counts, never
data). The Airflow operator in plugins/fusionrec_operators.py calls `run_stage`; so can a
plain Python process, which is how a stage is debugged without Airflow:

    python -m jobs.stages train_user_encoder --ds 2026-11-27
    python -m jobs.stages clean --ds 2026-11-27 --dates 2026-11-26 2026-11-27
"""

from __future__ import annotations

import argparse
import importlib
import json
import time

# Task order of the nightly DAG; each stage's module exposes the callable named here.
STAGE_ORDER = (
    "ingest", "validate", "clean", "denoise", "normalize_features", "train_user_encoder",
    "train_item_encoder", "fuse", "evaluate", "register_and_gate", "batch_recommend",
)


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
    "train_user_encoder": _path_stage("jobs.train_user_encoder"),
    "train_item_encoder": _path_stage("jobs.train_item_encoder"),
    "fuse": _path_stage("jobs.fuse"),
    "evaluate": _path_stage("jobs.evaluate"),
    "register_and_gate": _register,
    "batch_recommend": _recommend,
}


def run_stage(stage: str, config: dict, ds: str, upstream: dict | None = None) -> dict:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGE_ORDER)}")
    started = time.monotonic()
    result = STAGES[stage](config, ds, upstream or {})
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
    args = parser.parse_args(argv)
    upstream = {"cli": {"dates": args.dates or [args.ds]}}
    print(json.dumps(run_stage(args.stage, resolve_config(), args.ds, upstream), indent=2, default=str))


if __name__ == "__main__":
    main()
