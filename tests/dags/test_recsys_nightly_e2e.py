"""End to end: the recsys_nightly DAG runs through Airflow (`dag.test`) on tiny generated data.

One module-scoped run (plus a re-run of the same date) feeds every assertion below, so
the DAG runs twice in this file, not once per test.
"""

import datetime as dt
import gzip
import json
import sys
from pathlib import Path

import pytest

from jobs.common import schema
from jobs.common.config import overrides_from_params, resolve_config
from jobs.common.lake import partition_path
from jobs.common.night import read_manifest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DS = "2026-11-20"
DAYS = 7
RUN_CONF = {"window_days": DAYS, "user_encoder_epochs": 4, "item_encoder_epochs": 3}
STAGE_RUNS = ("validate", "train_baselines", "train_user_encoder", "train_item_encoder", "fuse", "evaluate",
              "train_search_ranker", "register_search_ranker", "register_and_gate",
              "night")  # the night's stage timings, logged after its last stage


def run_dag_once():
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags")).dags["recsys_nightly"]
    logical_date = dt.datetime.fromisoformat(DS).replace(tzinfo=dt.timezone.utc)
    return dag.test(logical_date=logical_date, run_conf=RUN_CONF)


def parquet_rows(path) -> int:
    import pyarrow.dataset as pads

    return pads.dataset(str(path), format="parquet", partitioning="hive").count_rows()


def raw_lines(config, day) -> int:
    return sum(len(gzip.open(f, "rb").read().splitlines())
               for f in Path(partition_path(config, schema.RAW_EVENTS, day)).glob("*.jsonl.gz"))


def row_counts(config, dates):
    counts = {}
    for day in dates:
        for dataset in (schema.CLEAN_EVENTS, schema.DENOISED_EVENTS):
            counts[(dataset, day)] = parquet_rows(partition_path(config, dataset, day))
        for stage in ("clean", "denoise"):
            quarantine = Path(config["lake_root"], schema.QUARANTINE_EVENTS, f"stage={stage}", f"dt={day}")
            counts[("quarantine", stage, day)] = parquet_rows(quarantine) if quarantine.exists() else 0
    for dataset in (schema.FEATURE_ITEMS, schema.FEATURE_SEQUENCES, schema.RECOMMENDATIONS):
        counts[dataset] = parquet_rows(partition_path(config, dataset, DS))
    return counts


@pytest.fixture(scope="module")
def pipeline():
    sys.path[:0] = [str(REPO / "plugins"), str(REPO)]
    from airflow.utils.db import initdb

    from devtools.generate import generate_clickstream

    config = resolve_config(overrides_from_params(RUN_CONF))
    generate_clickstream(config["lake_root"], DS, DAYS, scale="tiny", seed=7)
    initdb()
    first = run_dag_once()
    manifest = read_manifest(config, DS)
    dates = manifest["dates"] if manifest else []
    counts_after_first = row_counts(config, dates) if str(first.state) == "success" else None
    champion_after_first = _alias_version(config, "champion")
    second = run_dag_once()
    counts_after_second = row_counts(config, dates) if str(second.state) == "success" else None
    return {"config": config, "first": first, "second": second, "dates": dates, "manifest": manifest,
            "counts": (counts_after_first, counts_after_second), "champion_after_first": champion_after_first}


def _alias_version(config, alias):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from jobs.common.tracking import configure_mlflow

    configure_mlflow(config)
    try:
        return int(MlflowClient().get_model_version_by_alias(config["mlflow"]["registered_model"], alias).version)
    except MlflowException:
        return None


def test_both_runs_succeed(pipeline):
    assert str(pipeline["first"].state) == "success"
    assert str(pipeline["second"].state) == "success"


def test_the_manifest_records_the_window_the_dates_and_every_stage(pipeline):
    from jobs.pipeline import STAGE_ORDER

    manifest = pipeline["manifest"]
    window = [(dt.date.fromisoformat(DS) - dt.timedelta(days=n)).isoformat() for n in range(DAYS - 1, -1, -1)]
    # A first night: every window date landed and none was processed, so ingest takes all of them.
    assert manifest["window"] == window and manifest["dates"] == window
    assert set(manifest["stages"]) == set(STAGE_ORDER)
    assert all(record["seconds"] >= 0 and record["peak_rss_mb"] > 0 for record in manifest["stages"].values())


def test_every_stage_wrote_a_non_empty_partition(pipeline):
    config = pipeline["config"]
    assert pipeline["dates"] == [(dt.date.fromisoformat(DS) - dt.timedelta(days=n)).isoformat()
                                 for n in range(DAYS - 1, -1, -1)]
    for dataset in (schema.RAW_EVENTS, schema.DATA_QUALITY, schema.CLEAN_EVENTS, schema.DENOISED_EVENTS,
                    schema.FEATURE_ITEMS, schema.FEATURE_SEQUENCES, schema.FEATURE_SESSIONS, schema.FEATURE_META,
                    schema.MODEL_BASELINES,
                    schema.MODEL_USER_ENCODER, schema.MODEL_ITEM_ENCODER, schema.MODEL_FUSION, schema.REPORTS,
                    schema.MODEL_SEARCH, schema.SEARCH_REPORTS,
                    schema.RECOMMENDATIONS, *[f"{schema.VOCABULARIES}/{name}" for name in schema.VOCABULARY_NAMES]):
        path = Path(partition_path(config, dataset, DS))
        assert path.is_dir() and any(path.iterdir()), f"{dataset} has no output for {DS}"


def test_no_row_is_lost_between_raw_clean_and_quarantine(pipeline):
    config = pipeline["config"]
    counts, _ = pipeline["counts"]
    for day in pipeline["dates"]:
        raw = raw_lines(config, day)
        assert raw > 0
        assert raw == counts[(schema.CLEAN_EVENTS, day)] + counts[("quarantine", "clean", day)], day
        assert counts[("quarantine", "clean", day)] > 0, "the generator plants dirt every day"
        assert (counts[(schema.CLEAN_EVENTS, day)]
                == counts[(schema.DENOISED_EVENTS, day)] + counts[("quarantine", "denoise", day)]), day


def test_rerunning_the_date_leaves_the_same_row_counts(pipeline):
    first, second = pipeline["counts"]
    assert first is not None and second is not None, "a DAG run failed: see test_both_runs_succeed"
    assert all(count > 0 for key, count in first.items() if key[0] != "quarantine"), first
    assert first == second


def test_metrics_report_covers_every_model_and_fusion_level(pipeline):
    config = pipeline["config"]
    metrics = json.loads(Path(partition_path(config, schema.REPORTS, DS), "metrics.json").read_text())
    assert {"popularity", "user_encoder", "item_encoder"} <= set(metrics)
    assert {"fusion_feature", "fusion_stacking", "fusion_gbm", "fusion_rrf"} <= set(metrics)
    for name, values in metrics.items():
        assert {"recall@20", "mrr@20", "ndcg@20"} <= set(values), name
        assert all(0.0 <= values[m] <= 1.0 for m in ("recall@20", "mrr@20", "ndcg@20")), name
    # The generator plants sequential habits: a sequence model must beat popularity.
    assert metrics["user_encoder"]["recall@20"] > metrics["popularity"]["recall@20"]


def test_the_search_ranker_is_measured_against_bm25_on_the_test_days_searches_and_saved(pipeline):
    import lightgbm

    from jobs.search.lexical import LexicalIndex
    from jobs.search.train_search_ranker import VARIANTS

    config = pipeline["config"]
    report = json.loads(Path(partition_path(config, schema.SEARCH_REPORTS, DS), "search_metrics.json").read_text())
    assert set(VARIANTS) <= set(report) and report["setup"]["test_searches"] > 50
    for variant in VARIANTS:
        row = report[variant]
        for metric in ("NDCG@10", "MRR@10", "Recall@50"):
            low, high = row[f"{metric}_ci"]
            assert 0.0 <= low <= row[metric] <= high <= 100.0, (variant, metric)
        assert {"all", "head_queries", "tail_queries"} <= set(row["segments"]), variant
    gain = report["personalized"]["gain_over_hybrid"]
    assert gain["searches"] == report["hybrid"]["searches"]
    assert gain["NDCG@10_ci"][0] <= gain["NDCG@10"] <= gain["NDCG@10_ci"][1]
    models = Path(partition_path(config, schema.MODEL_SEARCH, DS))
    booster = lightgbm.Booster(model_file=str(models / "ranker.txt"))
    assert booster.feature_name() == json.loads((models / "config.json").read_text())["features"]
    index = LexicalIndex.load(str(models / "index"))
    assert len(index.item_ids) == report["setup"]["catalog_items"]


def test_the_search_ranker_answers_a_query_as_an_mlflow_pyfunc_from_the_nights_models(pipeline, tmp_path):
    import mlflow
    import numpy as np
    import pandas as pd

    from jobs.search.engine import CATALOG_FILE
    from jobs.serving.fused_model import write_serving_settings
    from jobs.serving.night_models import night_model_dirs
    from jobs.serving.search_model import SearchRankerModel, search_signature
    from jobs.serving.stored_histories import USER_HISTORIES_FILE

    config = pipeline["config"]
    search_dir = Path(partition_path(config, schema.MODEL_SEARCH, DS))
    settings = json.loads((search_dir / "config.json").read_text())
    artifacts = {**night_model_dirs(config, DS), "items": partition_path(config, schema.FEATURE_ITEMS, DS),
                 "serving": write_serving_settings(str(tmp_path), settings["recommender"], config["max_seq_len"]),
                 "search": str(search_dir)}
    mlflow.pyfunc.save_model(str(tmp_path / "search-model"), python_model=SearchRankerModel(), artifacts=artifacts,
                             signature=search_signature(10))
    model = mlflow.pyfunc.load_model(str(tmp_path / "search-model"))

    catalog = pd.read_parquet(search_dir / CATALOG_FILE)
    # A word of the first item's title (a generated document is its title, then category and brand codes).
    word = catalog["document"].iloc[0].split()[-3]
    history = catalog["item_id"].iloc[:3].tolist()
    answers = model.predict(pd.DataFrame({"query": [word, word, "zzzzqqq"], "history": [history, [], []]}),
                            params={"k": 10})
    for answer in answers.itertuples():
        assert len(answer.item_ids) == len(answer.scores) == len(answer.retrievers)
        assert list(answer.scores) == sorted(answer.scores, reverse=True)
        assert set(answer.retrievers) <= {"lexical", "semantic", "both"}
    top = answers.iloc[0]
    assert len(top.item_ids) == 10 and set(top.item_ids) <= set(catalog["item_id"])
    documents = dict(zip(catalog["item_id"], catalog["document"]))
    assert word in documents[top.item_ids[0]].split()  # the best result names the word
    assert list(answers.iloc[2].item_ids) == []  # no token of it is in the index, no word in the vocabulary

    # A request that names only a (hashed) user id is answered as if it had sent the user's
    # events stored by the night; an unknown id as a new visitor.
    stored = pd.read_parquet(search_dir / USER_HISTORIES_FILE)
    stored = stored[[all(item is not None for item in history) for history in stored["history"]]]
    user = stored.iloc[int(np.argmax([len(history) for history in stored["history"]]))]
    requests = pd.DataFrame({
        "query": [word] * 4,
        "user_id": [user.user_id, None, "no-such-user", user.user_id],
        "history": [[], list(user.history), [], list(user.history[-2:])],
        "event_types": [None, list(user.event_types), None, list(user.event_types[-2:])],
        "timestamps": [None, [int(s) for s in user.timestamps], None, [int(s) for s in user.timestamps[-2:]]],
    })
    by_id, sent, unknown, resent = model.predict(requests, params={"k": 10}).itertuples()
    anonymous = answers.iloc[1]
    assert (list(by_id.item_ids), list(by_id.scores)) == (list(sent.item_ids), list(sent.scores))
    assert (list(resent.item_ids), list(resent.scores)) == (list(sent.item_ids), list(sent.scores))  # not twice
    assert (list(unknown.item_ids), list(unknown.scores)) == (list(anonymous.item_ids), list(anonymous.scores))
    assert list(by_id.scores) != list(anonymous.scores)  # the ranker's personal features read the history


def test_each_night_registers_a_search_ranker_gated_on_ndcg_at_10_against_the_champion(pipeline):
    from mlflow import MlflowClient

    from jobs.common.tracking import configure_mlflow

    config = pipeline["config"]
    configure_mlflow(config)
    name = config["mlflow"]["registered_search_model"]
    versions = sorted(MlflowClient().search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    assert [(str(v.version), v.tags["ds"]) for v in versions] == [("1", DS), ("2", DS)]
    first, second = versions
    assert "NDCG@10" in first.description and "Champion v1 on the same searches" in second.description
    # Both versions answered the same test-day searches (the same night, run twice): v2 takes
    # the champion alias exactly when its NDCG@10 is higher, else it waits as challenger.
    champion = str(MlflowClient().get_model_version_by_alias(name, "champion").version)
    second_won = float(second.tags["test_searches.NDCG_at_10"]) > float(first.tags["test_searches.NDCG_at_10"])
    assert champion == ("2" if second_won else "1")
    assert set(MlflowClient().get_model_version(name, "2").aliases) == {"champion" if second_won else "challenger"}


def test_mlflow_models_serve_answers_a_search_from_the_registered_champion(pipeline):
    import os
    import subprocess
    import time
    import urllib.request

    import pandas as pd

    from devtools.stack import free_port
    from jobs.search.engine import CATALOG_FILE
    from jobs.serving.stored_histories import USER_HISTORIES_FILE

    config = pipeline["config"]
    search_dir = Path(partition_path(config, schema.MODEL_SEARCH, DS))
    catalog = pd.read_parquet(search_dir / CATALOG_FILE)
    word = catalog["document"].iloc[0].split()[-3]  # a title word (documents end with category and brand codes)
    user = str(pd.read_parquet(search_dir / USER_HISTORIES_FILE)[schema.USER_ID].iloc[0])
    port = free_port()
    # The scoring server is started as `uvicorn` from PATH: the one beside this interpreter.
    env = {**os.environ, "MLFLOW_TRACKING_URI": config["mlflow"]["tracking_uri"],
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{config['mlflow']['registered_search_model']}"
         "@champion", "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, f"mlflow models serve exited: {server.stdout.read()[-3000:]}"
            assert time.monotonic() < deadline, "mlflow models serve did not answer /ping within 240 s"
            time.sleep(2)
        # The second request names a user whose history the night stored (and sends none).
        body = {"dataframe_split": {"columns": ["query", "user_id", "history"],
                                    "data": [[word, None, catalog["item_id"].iloc[:2].tolist()], [word, user, []]]},
                "params": {"k": 5}}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answers = json.loads(response.read())["predictions"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    assert len(answers) == 2
    for answer in answers:
        assert len(answer["item_ids"]) == 5 and set(answer["item_ids"]) <= set(catalog["item_id"])
        assert set(answer["retrievers"]) <= {"lexical", "semantic", "both"}
        assert answer["scores"] == sorted(answer["scores"], reverse=True)


def test_each_training_and_evaluation_stage_logged_one_mlflow_run_per_night_with_metrics(pipeline):
    # The night ran twice: each stage's second run replaced its first (deleted, tagged with its
    # successor), except the gate's, whose runs each registered a model version (v1, v2).
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from jobs.common.tracking import configure_mlflow
    from jobs.pipeline import STAGE_ORDER

    config = pipeline["config"]
    experiment_id = configure_mlflow(config)
    client = MlflowClient()
    active = client.search_runs([experiment_id], filter_string=f"tags.ds = '{DS}'")
    retired = client.search_runs([experiment_id], filter_string=f"tags.ds = '{DS}'",
                                 run_view_type=ViewType.DELETED_ONLY)
    for stage in STAGE_RUNS:
        kept = [r for r in active if r.data.tags.get("stage") == stage]
        replaced = [r for r in retired if r.data.tags.get("stage") == stage]
        assert all(r.data.metrics for r in kept), f"{stage} logged no metrics"
        if stage in ("register_and_gate", "register_search_ranker"):
            assert (len(kept), replaced) == (2, []), stage
            continue
        assert (len(kept), len(replaced)) == (1, 1), f"{stage}: one run per stage and night expected"
        assert replaced[0].data.tags["fusionrec.superseded_by"] == kept[0].info.run_id
        assert replaced[0].info.start_time < kept[0].info.start_time
    [night] = [r for r in active if r.data.tags.get("stage") == "night"]
    assert {f"stage_seconds.{stage}" for stage in STAGE_ORDER} <= set(night.data.metrics)


def test_first_version_is_champion_and_the_rerun_is_gated_against_it(pipeline):
    from mlflow import MlflowClient

    from jobs.common.tracking import configure_mlflow
    from jobs.evaluation.metrics import mlflow_metric_key

    config = pipeline["config"]
    name, primary = config["mlflow"]["registered_model"], config["mlflow"]["primary_metric"]
    client = MlflowClient()
    versions = {int(v.version): v for v in client.search_model_versions(f"name = '{name}'")}
    assert sorted(versions) == [1, 2]
    # v2 (the re-run) was scored against v1 on the same holdout: it may only take the
    # champion alias by being strictly better; otherwise it waits as challenger.
    assert pipeline["champion_after_first"] == 1  # no champion before: the first version takes it
    tag = mlflow_metric_key("holdout", primary)
    v1, v2 = (float(versions[v].tags[tag]) for v in (1, 2))
    # The second gate scored the champion (v1) on the same holdout as the first gate did.
    gate_runs = MlflowClient().search_runs([configure_mlflow(config)], filter_string=f"tags.ds = '{DS}' and "
                                           "tags.stage = 'register_and_gate'", order_by=["attributes.start_time"])
    assert len(gate_runs) == 2
    assert mlflow_metric_key("champion", primary) not in gate_runs[0].data.metrics
    assert gate_runs[1].data.metrics[mlflow_metric_key("champion", primary)] == pytest.approx(v1, abs=1e-6)
    assert gate_runs[1].data.tags["alias"] == ("champion" if v2 > v1 else "challenger")
    assert _alias_version(config, "champion") == (2 if v2 > v1 else 1)


def test_top20_for_every_active_user_and_nothing_already_bought(pipeline):
    import pandas as pd

    config = pipeline["config"]
    recommendations = pd.read_parquet(partition_path(config, schema.RECOMMENDATIONS, DS))
    denoised = pd.read_parquet(partition_path(config, schema.DENOISED_EVENTS, DS))
    item_events = denoised[denoised[schema.ITEM_ID].notna()]
    active_users = set(item_events[schema.USER_ID])
    assert set(recommendations[schema.USER_ID]) == active_users
    per_user = recommendations.groupby(schema.USER_ID)
    assert (per_user.size() == 20).all()
    assert (per_user[schema.ITEM_ID].nunique() == 20).all()
    window = pd.concat(pd.read_parquet(partition_path(config, schema.DENOISED_EVENTS, d))
                       for d in pipeline["dates"])
    bought = set(zip(window.loc[window[schema.EVENT_TYPE] == schema.PURCHASE, schema.USER_ID],
                     window.loc[window[schema.EVENT_TYPE] == schema.PURCHASE, schema.ITEM_ID]))
    recommended = set(zip(recommendations[schema.USER_ID], recommendations[schema.ITEM_ID]))
    assert not (recommended & bought)


def test_the_head_queries_ranked_per_segment_by_the_search_champion_are_served_beside_the_lists(pipeline):
    import pandas as pd
    from mlflow import MlflowClient

    from jobs.common.tracking import configure_mlflow
    from jobs.search.train_search_ranker import catalog_text, search_log
    from jobs.serving.search_lists import NEW_VISITORS, head_queries
    from jobs.serving.store import ServingStoreReader

    config = pipeline["config"]
    table = pd.read_parquet(partition_path(config, schema.SEARCH_RESULTS, DS))
    searches, _ = search_log(config, list(pipeline["dates"]))
    assert set(table[schema.QUERY]) == set(head_queries(searches[schema.QUERY], config["search"]["head_queries"]))
    categories = {fields[schema.CATEGORY] for fields in catalog_text(config, DS).values()}
    segments = set(table["segment"])
    assert NEW_VISITORS in segments and len(segments - {NEW_VISITORS}) >= 3 and segments - {NEW_VISITORS} <= categories
    lists = {key: group.sort_values("rank")[schema.ITEM_ID].tolist()
             for key, group in table.groupby(["segment", schema.QUERY])}
    assert all(0 < len(items) == len(set(items)) <= config["search"]["segment_results"] for items in lists.values())
    items = pd.read_parquet(partition_path(config, schema.FEATURE_ITEMS, DS))
    assert set(table[schema.ITEM_ID]) <= set(items.loc[items[schema.IN_CATALOG], schema.ITEM_ID].astype(str))
    configure_mlflow(config)
    champion = MlflowClient().get_model_version_by_alias(config["mlflow"]["registered_search_model"], "champion")
    assert set(table["model_version"]) == {str(champion.version)}
    # Segments get their own order: some head query reads differently for a segment than for new visitors.
    assert any(items != lists.get((NEW_VISITORS, query)) for (segment, query), items in lists.items()
               if segment != NEW_VISITORS)
    reader = ServingStoreReader.from_config(config)  # what publish_serving made live
    try:
        for (segment, query), items in list(lists.items())[:20]:
            assert reader.search_results(query.upper(), segment) == items
    finally:
        reader.close()


def test_the_search_latency_bench_times_the_registered_champion_beside_bm25(pipeline, tmp_path):
    # bench/search_latency.py --reuse on this night (the bench builds its own 100,000-item night
    # otherwise), in a fresh process as `make bench-search-latency` runs it.
    import os
    import subprocess

    config = pipeline["config"]
    output = tmp_path / "latency.json"
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    result = subprocess.run([sys.executable, str(REPO / "bench" / "search_latency.py"), "--reuse", "--home",
                             config["home"], "--date", DS, "--requests", "15", "--warmup", "2", "--output", str(output)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    measured = json.loads(output.read_text())
    assert measured["requests"] == 15 and measured["night"] == DS
    for path in ("served_ranker_ms", "bm25_alone_ms"):
        assert 0 < measured[path]["p50"] <= measured[path]["p95"] <= measured[path]["p99"]
    assert measured["ratio_p50"] > 1  # the served ranker does far more than one index lookup
    assert "| served search ranker (pyfunc) |" in result.stdout


def test_gate_and_recommend_work_in_a_fresh_process_like_an_airflow_worker(pipeline, tmp_path):
    # dag.test() runs every task in this process, so state one task left behind (say, the
    # MLflow tracking URI) could hide a task that fails on its own in a real worker. Run the
    # last two stages the way a LocalExecutor/Celery worker would: a new interpreter, in a
    # directory of its own, where nothing may be written.
    import os
    import subprocess

    config = pipeline["config"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "FUSIONREC_HOME": config["home"]}
    env.pop("MLFLOW_TRACKING_URI", None)
    for stage in ("register_and_gate", "batch_recommend"):
        result = subprocess.run([sys.executable, "-m", "jobs.pipeline", stage, "--ds", DS], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert list(tmp_path.iterdir()) == [], "a stage wrote into its working directory"
