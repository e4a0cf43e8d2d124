"""bench/search.py end to end on the tiny search world: the results file and what it must show."""

import json

import pytest
from bench_scripts import load_bench_script


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    module = load_bench_script("search")
    output = tmp_path_factory.mktemp("search") / "search.json"
    assert module.main(["--scale", "tiny", "--days", "5", "--searches-per-day", "400", "--latency-queries", "50",
                        "--output", str(output)]) == 0
    return json.loads(output.read_text())


def test_every_variant_has_the_three_metrics_with_intervals_overall_and_per_segment(results):
    for variant in ("bm25", "hybrid", "personalized"):
        row = results[variant]
        for metric in ("NDCG@10", "MRR@10", "Recall@50"):
            low, high = row[f"{metric}_ci"]
            assert 0 <= low <= row[metric] <= high <= 100, (variant, metric, row)
        assert {"all", "returning_users", "new_users"} <= set(row["segments"])
        assert row["segments"]["returning_users"]["searches"] + row["segments"]["new_users"]["searches"] == row["searches"]
    setup = results["setup"]
    assert setup["catalog_items"] == 400 and setup["index_build_s"] > 0
    assert 0 < setup["latency_ms"]["p50"] <= setup["latency_ms"]["p95"] and setup["latency_ms"]["queries"] == 50


def test_the_learned_rankers_beat_bm25_and_personal_features_carry_weight(results):
    # The click model's users prefer their own brands and price level: the personalized ranker
    # must find that from their histories alone, and rank better than BM25's order.
    assert results["personalized"]["NDCG@10"] > results["bm25"]["NDCG@10"]
    assert results["personalized"]["NDCG@10"] > results["hybrid"]["NDCG@10"]
    gain_share = results["setup"]["feature_importance_gain_share"]
    brand_and_price = ("user_brand_share", "user_brand_share_in_category", "price_gap")
    assert sum(gain_share[name] for name in brand_and_price) > 0.1, gain_share
