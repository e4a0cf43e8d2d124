"""`make demo`: land a clickstream, run the recsys_nightly DAG for one night, show the results.

    python -m devtools.demo --date 2026-11-27 --scale small --days 14 [--input LANDING_DIR]

With no --input, a seeded synthetic clickstream (devtools/generate.py) is landed for the
`--days` nights ending at --date. With --input, that folder must hold landing/events/dt=*/
and landing/catalog/dt=*/ in the same format; it is linked into the lake, not copied.
The DAG then runs in-process through Airflow (`dag.test`) on the embedded defaults.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

from jobs.common import schema
from jobs.common.config import REPO_ROOT, overrides_from_params, resolve_config
from jobs.common.lake import dataset_path, partition_path

DAG_ID = "recsys_nightly"


def land_input(config: dict, args) -> None:
    if args.input:
        source = Path(args.input).resolve()
        for dataset in (schema.LANDING_EVENTS, schema.LANDING_CATALOG):
            if not (source / dataset).is_dir():
                sys.exit(f"--input {source} has no {dataset}/dt=YYYY-MM-DD/ folders")
            target = Path(dataset_path(config, dataset))
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.exists():
                if target.is_symlink():
                    target.unlink()
                else:
                    sys.exit(f"{target} already exists; remove it (make clean-state) to land --input")
            target.symlink_to(source / dataset, target_is_directory=True)
        return
    from devtools.generate import generate_clickstream

    print(f"generating a {args.scale} synthetic clickstream: {args.days} days ending {args.date}")
    generate_clickstream(config["lake_root"], args.date, args.days, scale=args.scale, seed=config["seed"])


def run_dag(ds: str, run_conf: dict) -> str:
    """Run the DAG once for ds inside this process; return the final run state."""
    sys.path[:0] = [str(REPO_ROOT / "plugins"), str(REPO_ROOT)]
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.db import initdb

    initdb()
    dagbag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    if dagbag.import_errors:
        sys.exit(f"the DAG failed to import: {dagbag.import_errors}")
    dag = dagbag.dags[DAG_ID]
    logical_date = dt.datetime.fromisoformat(ds).replace(tzinfo=dt.timezone.utc)
    dag_run = dag.test(logical_date=logical_date, run_conf=run_conf)
    return str(dag_run.state)


def print_results(config: dict, ds: str) -> None:
    from jobs.evaluation.evaluate import markdown_table
    from jobs.evaluation.metrics import parse_metric

    report_dir = partition_path(config, schema.REPORTS, ds)
    metrics = json.loads(Path(report_dir, "metrics.json").read_text())
    primary = config["mlflow"]["primary_metric"]
    # The terminal gets the primary cutoff only; metrics.md has every cutoff, the primary
    # metric's bootstrap interval, coverage and popularity, and metrics_detail.json segments.
    suffix = f"@{parse_metric(primary)[1]}"
    at_primary_k = {name: {m: v for m, v in values.items() if m.endswith(suffix)} for name, values in metrics.items()}
    n_examples = json.loads(Path(report_dir, "metrics_detail.json").read_text())["n_examples"]
    print("\n" + "=" * 72)
    print(markdown_table(at_primary_k, primary, n_examples, ds))
    print(f"full report (every cutoff, 95% intervals, coverage, segments): {report_dir}/metrics.md, "
          "metrics.json, metrics_detail.json")
    print(registry_summary(config, config["mlflow"]["registered_model"]))
    search_report = Path(partition_path(config, schema.SEARCH_REPORTS, ds))
    print(f"search: {search_report}/search_metrics.md; "
          + registry_summary(config, config["mlflow"]["registered_search_model"]))
    recommendations = partition_path(config, schema.RECOMMENDATIONS, ds)
    print(f"top-{config['top_k']} recommendations: {recommendations}")
    print(f"lake: {config['lake_root']}   MLflow: {config['mlflow']['tracking_uri']}")
    print("\nTo browse the runs and the model registry and trigger the DAG from the web UI:\n"
          "  make ui     # Airflow on http://127.0.0.1:8080 (user admin, password printed),"
          " MLflow on http://127.0.0.1:5000")


def registry_summary(config: dict, name: str) -> str:
    """One line on the newest registered version of model name and the aliases it got from the gate."""
    from mlflow import MlflowClient

    from jobs.common.tracking import configure_mlflow

    configure_mlflow(config)
    client = MlflowClient()
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        return f"registry: no version of {name} yet"
    # Search results carry no aliases; the version itself does.
    newest = client.get_model_version(name, str(max(int(v.version) for v in versions)))
    aliases = ", ".join(newest.aliases) or "no alias"
    return f"registry: {name} v{newest.version} → {aliases}. {newest.description or ''}".rstrip()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--date", required=True, help="logical date of the night to run (YYYY-MM-DD)")
    parser.add_argument("--scale", default="small", choices=("tiny", "small", "wide", "large"))
    parser.add_argument("--days", type=int, default=14, help="days of synthetic history to land")
    parser.add_argument("--input", help="a folder with landing/events and landing/catalog to use instead")
    parser.add_argument("--conf", default="{}", help="DAG run params as JSON, e.g. '{\"user_encoder_epochs\": 3}'")
    args = parser.parse_args(argv)
    try:
        dt.date.fromisoformat(args.date)
        run_conf = json.loads(args.conf)
    except ValueError as error:
        parser.error(str(error))
    config = resolve_config(overrides_from_params(run_conf))
    os.environ.setdefault("AIRFLOW_HOME", str(Path(config["home"]) / "airflow"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    started = time.monotonic()
    land_input(config, args)
    state = run_dag(args.date, run_conf)
    print(f"\nDAG run {DAG_ID} {args.date}: {state} in {time.monotonic() - started:.0f} s")
    if state != "success":
        print("a task failed: its log is above; fix the cause and re-run `make demo` (a re-run of the date "
              "replaces only that date's partitions)")
        return 1
    print_results(config, args.date)
    return 0


if __name__ == "__main__":
    sys.exit(main())
