"""Product search on generated searches: BM25 against the learned rankers, with and without personal features.

    python bench/search.py                      # 100,000 items, 8 days of 6,000 searches (make bench-search)
    python bench/search.py --scale tiny --days 4 --searches-per-day 300

devtools/search_sessions.py generates the catalog, the users (tastes, favourite brands, price
levels, browsing histories) and the searches with a position-biased click model. Days before
the last two train the rankers, the second-to-last early-stops them, the last is the test
night. Each search's candidates are the lexical index's top --candidates (BM25 over words and
character trigrams, jobs/search/lexical.py). Variants, all over the same candidates:

  bm25          the BM25 order (the index's list: equal scores in index order)
  hybrid        LightGBM LambdaRank on query-item and item features (no personal features)
  personalized  the same with the personal features (jobs/search/features.py)

Metrics per test search with at least one interaction (jobs/search/quality.py), in %:
NDCG@10, MRR@10, Recall@50, with 95% bootstrap intervals over users (a user's searches are
resampled together), overall and per segment (returning / new users, head / tail queries).
Also: the index's build seconds and the per-query latency of the personalized path (retrieve,
features, LightGBM), one query at a time. Writes bench/results/search.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from devtools.search_sessions import catalog_frame, generate_search_log  # noqa: E402
from jobs.search.features import (ALL_FEATURES, CatalogSignals, UserProfiles, candidate_features,  # noqa: E402
                                  features_for)
from jobs.search.lexical import LexicalIndex, item_document  # noqa: E402
from jobs.search.quality import METRICS, per_search_metrics, summarize  # noqa: E402
from jobs.search.ranker import SearchRanker, candidate_rows, learnable, retrieve_all  # noqa: E402

RESULTS_FILE = REPO / "bench" / "results" / "search.json"
HEAD_QUERY_MIN_TRAIN_SEARCHES = 20  # a test query typed at least this often on the training days is "head"
RESAMPLES, CONFIDENCE = 1000, 0.95


def build_index(catalog: pd.DataFrame) -> LexicalIndex:
    return LexicalIndex.build(catalog["item"].tolist(), documents_of(catalog))


def documents_of(catalog: pd.DataFrame) -> list[str]:
    return [item_document(title, category, brand) for title, category, brand in
            zip(catalog["title"], catalog["category"], catalog["brand"])]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="bench", choices=("tiny", "bench"))
    parser.add_argument("--days", type=int, default=8, help="at least 3: train days, a valid day, the test day")
    parser.add_argument("--searches-per-day", type=int, default=6000)
    parser.add_argument("--candidates", type=int, default=100, help="BM25 top-N each ranker reorders")
    parser.add_argument("--latency-queries", type=int, default=500)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", type=Path, default=RESULTS_FILE)
    args = parser.parse_args(argv)
    if args.days < 3:
        parser.error("--days must be at least 3")

    started = time.monotonic()
    build_seconds = []

    def timed_index(catalog):
        began = time.perf_counter()
        index = build_index(catalog)
        build_seconds.append(time.perf_counter() - began)
        return index

    log, index = generate_search_log(args.scale, args.days, args.searches_per_day, args.seed, timed_index)
    catalog = catalog_frame(log.world)
    signals = CatalogSignals.from_catalog(catalog, documents_of(catalog))
    profiles = UserProfiles.from_history(log.history, signals, len(log.users.price_level))
    print(f"{len(catalog):,} items, index built in {build_seconds[0]:.1f} s; {len(log.searches):,} searches, "
          f"{log.interactions['search_id'].nunique():,} with an interaction", flush=True)

    test_day, valid_day = args.days - 1, args.days - 2
    split = {name: log.searches[days(log.searches["day"])] for name, days in
             (("train", lambda d: d < valid_day), ("valid", lambda d: d == valid_day), ("test", lambda d: d == test_day))}
    relevance = {search: dict(zip(group["item"], group["grade"]))
                 for search, group in log.interactions.groupby("search_id")}
    rows, kept = {}, {}
    for name, searches in split.items():
        rows[name], kept[name] = candidate_rows(searches["query"], searches["user"],
                                                [relevance.get(search) for search in searches["search_id"]],
                                                retrieve_all(index, searches["query"], args.candidates),
                                                signals, profiles)

    rankers, columns = {}, {}
    for variant, personal in (("hybrid", False), ("personalized", True)):
        names = features_for(personal)
        columns[variant] = [ALL_FEATURES.index(name) for name in names]
        began = time.perf_counter()
        rankers[variant] = SearchRanker.fit(learnable(rows["train"]), learnable(rows["valid"]), names, columns[variant])
        print(f"{variant}: {rankers[variant].trees} trees in {time.perf_counter() - began:.0f} s", flush=True)

    test_rows, test_searches = rows["test"], kept["test"]
    # BM25 as the shop shows it: its list order (equal scores keep index order). Scored by its
    # raw score instead, the many exact ties of templated titles would fall conservatively
    # (relevant last) and understate BM25.
    scores = {"bm25": -test_rows.features[:, ALL_FEATURES.index("bm25_rank")]}
    for variant, ranker in rankers.items():
        scores[variant] = ranker.score(test_rows.features[:, columns[variant]])
    tested = split["test"].iloc[[search.position for search in test_searches]]
    users = tested["user"].to_numpy()
    train_query_counts = split["train"]["query"].value_counts()
    head = np.array([train_query_counts.get(query, 0) >= HEAD_QUERY_MIN_TRAIN_SEARCHES for query in tested["query"]])
    returning = profiles.history_size[users] > 0
    segments = {"all": np.ones(len(users), dtype=bool), "returning_users": returning, "new_users": ~returning,
                "head_queries": head, "tail_queries": ~head}
    results = {}
    print("| variant | segment | searches | NDCG@10 | MRR@10 | Recall@50 |\n|---|---|---:|---:|---:|---:|")
    for variant, variant_scores in scores.items():
        contributions = per_search_metrics(variant_scores, test_searches)
        results[variant] = {segment: summarize(contributions, users, mask, RESAMPLES, CONFIDENCE, seed=0)
                            for segment, mask in segments.items() if mask.any()}
        for segment, row in results[variant].items():
            print(f"| {variant} | {segment} | {row['searches']:,} | "
                  + " | ".join(f"{row[name]:.2f} [{row[name + '_ci'][0]:.2f}, {row[name + '_ci'][1]:.2f}]"
                               for name in METRICS) + " |", flush=True)

    latencies = personalized_latency_ms(split["test"].head(args.latency_queries), index, signals, profiles,
                                        rankers["personalized"], columns["personalized"], args.candidates)
    payload = {variant: {**rows_["all"], "segments": rows_} for variant, rows_ in results.items()}
    payload["setup"] = {"scale": args.scale, "catalog_items": len(catalog), "days": args.days,
                        "searches_per_day": args.searches_per_day, "candidates": args.candidates, "seed": args.seed,
                        "train_searches": int(len(split["train"])), "valid_searches": int(len(split["valid"])),
                        "test_searches_scored": len(test_searches),
                        "index_build_s": round(build_seconds[0], 2),
                        "latency_ms": {"p50": round(float(np.percentile(latencies, 50)), 2),
                                       "p95": round(float(np.percentile(latencies, 95)), 2),
                                       "queries": len(latencies)},
                        "trees": {variant: ranker.trees for variant, ranker in rankers.items()},
                        "feature_importance_gain_share": rankers["personalized"].importances(),
                        "seconds": round(time.monotonic() - started, 1)}
    print(f"index build {build_seconds[0]:.2f} s; personalized latency p50 {payload['setup']['latency_ms']['p50']} ms, "
          f"p95 {payload['setup']['latency_ms']['p95']} ms")
    os.makedirs(args.output.parent, exist_ok=True)
    args.output.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


def personalized_latency_ms(searches: pd.DataFrame, index: LexicalIndex, signals: CatalogSignals,
                            profiles: UserProfiles, ranker: SearchRanker, columns: list[int], n_candidates: int) -> list:
    """Milliseconds from the query text to the ranked list, one query at a time."""
    latencies = []
    for search in searches.itertuples(index=False):
        began = time.perf_counter()
        candidates, bm25 = index.search(search.query, n_candidates)
        if len(candidates):
            scores = ranker.score(candidate_features(search.query, search.user, candidates, bm25, signals,
                                                     profiles)[:, columns])
            candidates[np.argsort(-scores, kind="stable")]
        latencies.append(1000.0 * (time.perf_counter() - began))
    return latencies


if __name__ == "__main__":
    sys.exit(main())
