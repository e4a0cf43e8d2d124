"""Does the generated world give search personalization something to learn? A fast stand-in
for the nightly search stage on the nightly generator's clickstream (devtools/generate.py).

    .venv/bin/python bench/search_world.py [--set FAVOURITE_BRAND_WEIGHT=2.0 ...]

It lands `--days` days of the generator's world without dirt (`--scale` small, seed 42), turns
their searches into search sessions (jobs/search/sessions.py), takes each search's BM25 top
100 as candidates and describes them with the query-item, item and personal-history features
(jobs/search/features.py): no Spark, no encoders, so none of the semantic or nightly-model
features. LambdaRank rankers are fitted on every day but the last two, early-stopped on the
day before the last and measured on the last (NDCG@10, 95% interval by user, and the paired
interval of personal's gain over hybrid): `hybrid` without the personal features and
`personal` with them. `--set NAME=VALUE` overrides one of
the generator's module constants (e.g. the choice model's weights) for this run only, to
compare worlds; the stage itself is what `make demo` measures. About 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devtools import generate  # noqa: E402
from jobs.common import schema  # noqa: E402
from jobs.search.features import ALL_FEATURES, CatalogSignals, UserProfiles, features_for  # noqa: E402
from jobs.search.lexical import LexicalIndex, item_document  # noqa: E402
from jobs.search.quality import per_search_metrics, summarize  # noqa: E402
from jobs.search.ranker import SearchRanker, candidate_rows, learnable, renumbered, retrieve_all, subset  # noqa: E402
from jobs.search.sessions import search_sessions  # noqa: E402
from jobs.search.train_search_ranker import paired_gain  # noqa: E402

END_DATE, SEED, CANDIDATES, HISTORY_EVENTS = "2026-11-27", 42, 100, 500
INTERVALS = {"resamples": 1000, "confidence": 0.95, "seed": SEED}


def landed_events(lake: str) -> pd.DataFrame:
    lines = []
    for path in sorted(Path(lake, "landing", "events").glob("dt=*/*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            lines.extend(json.loads(line) for line in handle)
    events = pd.DataFrame(lines)
    times = pd.to_datetime(events[schema.EVENT_TIME], utc=True)
    events[schema.EVENT_TIME] = (times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return events


def catalog_signals(lake: str, item_events: pd.DataFrame) -> tuple[pd.DataFrame, CatalogSignals, list[str]]:
    """The last day's catalog in file order, its CatalogSignals and documents (popularity: event counts + 1)."""
    [path] = Path(lake, "landing", "catalog", f"dt={END_DATE}").glob("*.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        catalog = pd.DataFrame([json.loads(line) for line in handle])
    log_price = np.log(catalog[schema.PRICE].astype(float))
    by_category = log_price.groupby(catalog[schema.CATEGORY])
    price_z = (log_price - by_category.transform("mean")) / by_category.transform("std")
    counts = item_events[schema.ITEM_ID].value_counts().reindex(catalog[schema.ITEM_ID], fill_value=0).to_numpy() + 1.0
    documents = [item_document(*fields) for fields in
                 zip(catalog[schema.TITLE], catalog[schema.CATEGORY], catalog[schema.BRAND])]
    frame = pd.DataFrame({"item": np.arange(len(catalog)), "brand": catalog[schema.BRAND],
                          "brand_id": catalog[schema.BRAND].astype("category").cat.codes.to_numpy(),
                          "category_id": catalog[schema.CATEGORY].astype("category").cat.codes.to_numpy(),
                          "price_z": price_z.to_numpy(), "popularity": counts / counts.sum()})
    return catalog, CatalogSignals.from_catalog(frame, documents), documents


def search_profiles(searches: pd.DataFrame, item_events: pd.DataFrame, signals: CatalogSignals) -> UserProfiles:
    """One profile per search: its user's latest HISTORY_EVENTS item events before it."""
    ordered = item_events.sort_values([schema.USER_ID, schema.EVENT_TIME])
    by_user = {user: (group[schema.EVENT_TIME].to_numpy(), group["position"].to_numpy())
               for user, group in ordered.groupby(schema.USER_ID)}
    rows, items = [], []
    for row, (user, time) in enumerate(zip(searches[schema.USER_ID], searches["time"])):
        times, positions = by_user.get(user, (np.zeros(0), np.zeros(0, dtype=np.int64)))
        end = np.searchsorted(times, time, side="left")
        history = positions[max(0, end - HISTORY_EVENTS):end]
        rows.append(np.full(len(history), row))
        items.append(history)
    return UserProfiles.from_history(pd.DataFrame({"user": np.concatenate(rows), "item": np.concatenate(items)}),
                                     signals, len(searches))


def main(argv=None) -> dict:
    """{"hybrid": ..., "personal": ...}: each variant's summarize(...) on the test day."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--scale", default="small", choices=tuple(generate.SCALES))
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a devtools.generate constant for this run")
    args = parser.parse_args(argv)
    overrides = {}
    for assignment in args.set:
        name, value = assignment.split("=", 1)
        if not hasattr(generate, name):
            parser.error(f"devtools.generate has no constant {name}")
        overrides[name] = type(getattr(generate, name))(value)
    originals = {name: getattr(generate, name) for name in overrides}
    try:
        for name, value in overrides.items():
            setattr(generate, name, value)
        return measure(args)
    finally:  # the module stays as it was for whoever imported it too
        for name, value in originals.items():
            setattr(generate, name, value)


def measure(args) -> dict:
    with tempfile.TemporaryDirectory() as lake:
        generate.generate_clickstream(lake, END_DATE, args.days, scale=args.scale, seed=SEED,
                                      dirt_rates={kind: 0.0 for kind in generate.DIRT_KINDS})
        events = landed_events(lake)
        catalog, signals, documents = catalog_signals(lake, events[events[schema.EVENT_TYPE] != schema.SEARCH])
    position = {item: index for index, item in enumerate(catalog[schema.ITEM_ID])}
    item_events = events[events[schema.EVENT_TYPE] != schema.SEARCH].assign(
        position=lambda frame: frame[schema.ITEM_ID].map(position)).dropna(subset=["position"])
    item_events["position"] = item_events["position"].astype(np.int64)
    searches, interactions = search_sessions(events)
    day = pd.to_datetime(searches["time"], unit="s", utc=True).dt.strftime("%Y-%m-%d").to_numpy()
    days = sorted(set(day))
    relevance = {search: {position[item]: grade for item, grade in zip(group[schema.ITEM_ID], group["grade"])}
                 for search, group in interactions.groupby("search_id")}
    rows, scored = candidate_rows(searches[schema.QUERY], np.arange(len(searches)),
                                  [relevance.get(search) for search in searches["search_id"]],
                                  retrieve_all(LexicalIndex.build(list(catalog[schema.ITEM_ID]), documents),
                                               searches[schema.QUERY], CANDIDATES),
                                  signals, search_profiles(searches, item_events, signals))

    def part(search_position: int) -> str:
        return {days[-1]: "test", days[-2]: "stop"}.get(day[search_position], "fit")

    fit = learnable(subset(rows, scored, lambda p: part(p) == "fit"))
    stop = learnable(subset(rows, scored, lambda p: part(p) == "stop"))
    tested = [search for search in scored if part(search.position) == "test"]
    test_rows = subset(rows, scored, lambda p: part(p) == "test")
    users = searches[schema.USER_ID].to_numpy()[[search.position for search in tested]]
    print(f"{len(searches)} searches, {len(tested)} on the test day {days[-1]}; "
          f"overrides: {', '.join(args.set) or 'none'}")
    results, per_search = {}, {}
    for variant, personal in (("hybrid", False), ("personal", True)):
        names = features_for(personal)
        columns = [ALL_FEATURES.index(name) for name in names]
        ranker = SearchRanker.fit(fit, stop, names, columns, seed=SEED)
        per_search[variant] = per_search_metrics(ranker.score(test_rows.features[:, columns]), renumbered(tested))
        results[variant] = summarize(per_search[variant], users, np.ones(len(tested), dtype=bool), **INTERVALS)
        low, high = results[variant]["NDCG@10_ci"]
        print(f"{variant}: NDCG@10 {results[variant]['NDCG@10']:.2f} [{low:.2f}, {high:.2f}] ({ranker.trees} trees)")
    gain = paired_gain(per_search["personal"], per_search["hybrid"], users,
                       {"bootstrap_resamples": INTERVALS["resamples"], "confidence": INTERVALS["confidence"]}, SEED)
    results["personal"]["gain_over_hybrid"] = gain
    low, high = gain["NDCG@10_ci"]
    print(f"personal - hybrid (paired): NDCG@10 {gain['NDCG@10']:+.2f} [{low:+.2f}, {high:+.2f}]")
    return results


if __name__ == "__main__":
    main()
