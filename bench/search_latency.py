"""Per-request latency of the served search ranker on a 100,000-item catalog, beside BM25 alone.

    python bench/search_latency.py                 # make bench-search-latency
    python bench/search_latency.py --reuse         # measure again on the night already built

First a whole nightly run (devtools.demo, the embedded defaults) on the generated `wide`
world: 100,000 catalog items browsed by 1,500 users for --days days, so every served model
- the BM25 index, the item tower's semantic index, the user encoder, the fusion and the
LambdaRank ranker - is the night's own, at that catalog size. Its home is --home (default
$FUSIONREC_HOME/bench-search-latency), kept for --reuse.

Then the registered champion of the search model (`fusionrec-search@champion`, the MLflow
pyfunc a shop serves) answers the test day's searches one request at a time, each with the
searcher's history before it, as `register_search_ranker`'s gate asks them. Side by side, on
the same queries: the night's BM25 index alone (its top --candidates), the cheapest answer a
shop could serve. Prints p50 / p95 / p99 milliseconds of both and their ratio, and writes
bench/results/search_latency.json. Time is wall-clock per request after --warmup requests;
the machine should be otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS_FILE = REPO / "bench" / "results" / "search_latency.json"
DATE = "2026-11-27"
# Fewer epochs than the demo's defaults: the latency does not depend on how well the models fit.
RUN_CONF = {"user_encoder_epochs": 2, "item_encoder_epochs": 2}


def build_night(home: Path, days: int, date: str) -> None:
    env = {**os.environ, "FUSIONREC_HOME": str(home), "AIRFLOW_HOME": str(home / "airflow"),
           "KERAS_HOME": str(home / "keras"), "MPLCONFIGDIR": str(home / "matplotlib"),
           "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [sys.executable, "-m", "devtools.demo", "--date", date, "--scale", "wide", "--days", str(days),
               "--conf", json.dumps({**RUN_CONF, "window_days": days})]
    print(f"building the night: FUSIONREC_HOME={home} {' '.join(command[1:])}", flush=True)
    began = time.monotonic()
    if subprocess.run(command, cwd=REPO, env=env).returncode != 0:
        sys.exit(f"the nightly run on the wide world failed: its log is above (state in {home})")
    print(f"night built in {time.monotonic() - began:.0f} s", flush=True)


def percentiles(milliseconds: list[float]) -> dict:
    values = np.asarray(milliseconds)
    return {"p50": round(float(np.percentile(values, 50)), 2), "p95": round(float(np.percentile(values, 95)), 2),
            "p99": round(float(np.percentile(values, 99)), 2), "requests": int(len(values))}


def measure(requests, answer, warmup: int) -> list[float]:
    """Milliseconds per request of answer(row), after warmup unmeasured ones."""
    for position in range(min(warmup, len(requests))):
        answer(requests.iloc[[position]])
    timings = []
    for position in range(len(requests)):
        began = time.perf_counter()
        answer(requests.iloc[[position]])
        timings.append(1000.0 * (time.perf_counter() - began))
    return timings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path,
                        default=Path(os.environ.get("FUSIONREC_HOME", REPO / ".fusionrec")) / "bench-search-latency")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--date", default=DATE, help="the night's logical date")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--k", type=int, default=10, help="results per request")
    parser.add_argument("--reuse", action="store_true", help="measure on the night already in --home")
    parser.add_argument("--output", type=Path, default=RESULTS_FILE)
    args = parser.parse_args(argv)
    home = args.home.resolve()
    if not args.reuse:
        if home.exists() and any(home.iterdir()):
            sys.exit(f"{home} is not empty: pass --reuse to measure on its night, or remove it to build a new one")
        build_night(home, args.days, args.date)
    os.environ.update({"FUSIONREC_HOME": str(home), "AIRFLOW_HOME": str(home / "airflow"),
                       "KERAS_HOME": str(home / "keras"), "TF_CPP_MIN_LOG_LEVEL": "2"})
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    sys.path.insert(0, str(REPO))

    import mlflow

    from jobs.common import schema
    from jobs.common.config import resolve_config
    from jobs.common.lake import partition_path
    from jobs.common.tracking import configure_mlflow
    from jobs.search.engine import CATALOG_FILE, INDEX_DIR
    from jobs.search.lexical import LexicalIndex
    from jobs.serving.register_search_ranker import gate_requests

    config = resolve_config()
    configure_mlflow(config)
    search_dir = partition_path(config, schema.MODEL_SEARCH, args.date)
    if not os.path.isdir(search_dir):
        sys.exit(f"no search model under {search_dir}: build the night first (without --reuse)")
    requests, _ = gate_requests(config, args.date)
    requests = requests.head(args.requests)
    catalog_items = len(__import__("pandas").read_parquet(os.path.join(search_dir, CATALOG_FILE), columns=["item"]))
    name = config["mlflow"]["registered_search_model"]
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    served = measure(requests, lambda row: model.predict(row, params={"k": args.k}), args.warmup)
    index = LexicalIndex.load(os.path.join(search_dir, INDEX_DIR))
    candidates = config["search"]["candidates"]
    lexical = measure(requests, lambda row: index.search(str(row["query"].iloc[0]), candidates), args.warmup)

    result = {"catalog_items": catalog_items, "requests": len(requests), "k": args.k,
              "served_ranker_ms": percentiles(served), "bm25_alone_ms": percentiles(lexical),
              "ratio_p50": round(float(np.percentile(served, 50) / np.percentile(lexical, 50)), 1),
              "ratio_p95": round(float(np.percentile(served, 95) / np.percentile(lexical, 95)), 1),
              "home": str(home), "night": args.date}
    print(f"\n{catalog_items:,} catalog items, {len(requests)} test-day searches one at a time (k={args.k}):")
    print("| path | p50 ms | p95 ms | p99 ms |\n|---|---:|---:|---:|")
    for label, key in (("served search ranker (pyfunc)", "served_ranker_ms"), ("BM25 alone", "bm25_alone_ms")):
        row = result[key]
        print(f"| {label} | {row['p50']} | {row['p95']} | {row['p99']} |")
    print(f"served / BM25: {result['ratio_p50']}x at p50, {result['ratio_p95']}x at p95")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
