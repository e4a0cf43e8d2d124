"""train_search_ranker: tonight's personalized search ranker, from the window's searches and models.

extract    the window's denoised events (search events and the item events after them,
           jobs/search/sessions.py), tonight's catalog text (raw/catalog), normalize's
           item features and user sequences, tonight's user encoder and served fusion
transform  a BM25 index over the catalog (title, category, brand); for every search of the
           valid and test days, its candidates (the lexical top-N and the semantic top-N,
           jobs/search/semantic.py) and their features (jobs/search/features.py): query-item,
           item, the query-item cosine, the searcher's window history before the search, and
           what tonight's user encoder and served fusion variant say of each candidate for the
           last max_seq_len events of it (what they read); LightGBM LambdaRank rankers
load       models/search/dt=<ds>/ (ranker.txt in LightGBM's own format, index/, config.json,
           user_histories.parquet: each user's latest events, for requests that send a user id),
           reports/search/dt=<ds>/ (search_metrics.json, search_metrics.md, importances.json),
           and an MLflow run "train_search_ranker <ds>" with metrics search.<variant>.<metric>

The rankers learn from the train days' searches and the valid day's, early-stopped on the
searches of a held-out part of the users (search.holdout_fraction; their searches are never
fitted on), and are measured on the test day. Tonight's models' features are not computed
for train-day searches:
the user encoder and the fusion members were fitted on those days, so their scores there
would be in-sample and a ranker fitted on them would trust them more than they deserve on a
new night (the fusers are fitted on the valid day for the same reason). So `personalized`
is fitted in two stages, as gradient boosting allows: first every feature but the models'
(missing) on all those searches - that is `personal_history` - then more trees on the valid
day's fitting users with the models' features, continuing from the first stage's scores
(early-stopped on the held-out users' valid-day searches), so that the models decide only
what the earlier days could not teach. The earlier days also
count each query's searches (head / tail queries).

Variants, all over the same candidates:
  bm25              the lexical index's own list, in its order
  embedding         the semantic retriever's list (cosine order)
  hybrid            query-item, item and cosine features, nothing about the person
  personal_history  + the searcher's history features (the first stage of personalized)
  personalized      + tonight's recommendation models (the night's search ranker)
Metrics per test search (jobs/search/quality.py), in %, with bootstrap intervals resampling
users (config evaluation), overall and for new / returning users and head / tail queries.

A night whose valid or test day has no usable search (a source without search events,
privacy.query_text: drop) writes a report that says so and trains nothing: the
recommendations do not depend on search.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os

import numpy as np
import pandas as pd

from jobs.common import schema
from jobs.common.night import Night
from jobs.search.engine import (CATALOG_FILE, CONFIG_FILE, INDEX_DIR, RANKER_FILE, VOCABULARY_FILE, SearchCatalog,
                                profiles_of)
from jobs.search.features import (ALL_FEATURES, ITEM_FEATURES, MODEL_FEATURES, NIGHTLY_FEATURES, QUERY_ITEM_FEATURES,
                                  SEMANTIC_FEATURES, UserProfiles, model_signals, nightly_columns)
from jobs.search.quality import METRICS, per_search_metrics, summarize
from jobs.serving.stored_histories import USER_HISTORIES_FILE, user_histories_table

VARIANT_FEATURES = {
    "hybrid": QUERY_ITEM_FEATURES + ITEM_FEATURES + SEMANTIC_FEATURES,
    "personal_history": ALL_FEATURES + SEMANTIC_FEATURES,  # fitted over NIGHTLY_FEATURES, the models' missing
    "personalized": NIGHTLY_FEATURES,
}
SERVED_VARIANT = "personalized"
# The variants whose gain over hybrid (no personal features) the report also gives, paired.
PAIRED_WITH_HYBRID = ("personal_history", "personalized")
GAIN_OVER_HYBRID = "gain_over_hybrid"
VARIANTS = ("bm25", "embedding", *VARIANT_FEATURES)
METRICS_FILE, MARKDOWN_FILE, IMPORTANCES_FILE = "search_metrics.json", "search_metrics.md", "importances.json"
# A searcher's profile reads at most this many of their latest events (a window of 14 days
# holds about 140 for the demo's users): bounds memory at [searches, PROFILE_MAX_EVENTS].
PROFILE_MAX_EVENTS = 500
EVENT_COLUMNS = (schema.USER_ID, schema.SESSION_ID, schema.EVENT_TIME, schema.EVENT_TYPE, schema.ITEM_ID,
                 schema.QUERY)


def run(night: Night) -> dict:
    from jobs.common.features import load_features
    from jobs.common.lake import partition_path

    config, ds = night.config, night.ds
    features = load_features(config, ds)
    meta = features.meta
    searches, interactions = search_log(config, meta["train_dates"] + meta["valid_dates"] + meta["test_dates"])
    searches["day"] = pd.to_datetime(searches["time"], unit="s", utc=True).dt.strftime("%Y-%m-%d")
    valid = searches[searches["day"].isin(meta["valid_dates"])]
    test = searches[searches["day"].isin(meta["test_dates"])]
    report_dir = partition_path(config, schema.SEARCH_REPORTS, ds)
    if len(valid) < config["search"]["min_fit_searches"] or test.empty:
        reason = (f"{len(valid)} valid-day and {len(test)} test-day searches with query text and a following item "
                  f"event (at least search.min_fit_searches={config['search']['min_fit_searches']} and 1 needed)")
        write_report(report_dir, {"skipped": reason}, ds)
        print(f"train_search_ranker {ds}: no search ranker tonight: {reason} → {report_dir}")
        return {"path": report_dir, "skipped": reason}

    train = searches[searches["day"].isin(meta["train_dates"])]
    catalog = night_catalog(config, ds, features.items)
    # Positions: the valid day's searches, the test day's, then the train days' (no model features).
    built = build_rows(config, ds, features, catalog, pd.concat([valid, test, train]), interactions,
                       with_models=len(valid) + len(test))
    part = SearchParts(built, len(valid), len(test), holdout_of(pd.concat([valid, test, train]), config))
    fit_all, stop_all, fit_valid, stop_valid = (part.rows(name) for name in ("fit_all", "stop_all", "fit_valid",
                                                                             "stop_valid"))
    rankers = fit_rankers(fit_all, stop_all, fit_valid, stop_valid, config["seed"])
    tested = [search for search in built.scored if part.of(search.position) == "test"]
    test_rows = built.rows_of([search.position for search in tested])
    report = evaluate(config, rankers, test_rows, tested, built, searches[~searches["day"].isin(meta["test_dates"])])
    report["setup"] = {"catalog_items": len(catalog.item_ids), "train_searches": int(len(train)),
                       "valid_searches": int(len(valid)),
                       "fit_searches": {"all": learnable_groups(fit_all), "valid_day": learnable_groups(fit_valid)},
                       "early_stopping_searches": {"all": learnable_groups(stop_all),
                                                   "valid_day": learnable_groups(stop_valid)},
                       "test_searches": int(len(test)), "candidates": config["search"]["candidates"],
                       "semantic_candidates": config["search"]["semantic_candidates"],
                       "recommender": built.recommender, "trees": {name: r.trees for name, r in rankers.items()}}
    importances = rankers[SERVED_VARIANT].importances()
    save_models(config, ds, catalog, built.index, rankers[SERVED_VARIANT], report["setup"],
                user_histories_table(features.sequences, features.items, PROFILE_MAX_EVENTS))
    write_report(report_dir, report, ds, importances)
    log_to_mlflow(config, ds, report, report_dir)
    best = report[SERVED_VARIANT]
    print(f"train_search_ranker {ds}: {len(tested)} test searches; NDCG@10 bm25 {report['bm25']['NDCG@10']:.2f}, "
          f"{SERVED_VARIANT} {best['NDCG@10']:.2f} [{best['NDCG@10_ci'][0]:.2f}, {best['NDCG@10_ci'][1]:.2f}] "
          f"→ {report_dir}")
    return {"path": report_dir, "test_searches": len(tested), "ndcg_at_10": best["NDCG@10"]}


# --- extract ---------------------------------------------------------------------------------

def search_log(config: dict, dates: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(searches, interactions) of the dates' denoised events (jobs/search/sessions.py)."""
    from jobs.common.lake import partition_path
    from jobs.search.sessions import search_sessions

    frames = []
    for day in dates:
        folder = partition_path(config, schema.DENOISED_EVENTS, day)
        if os.path.isdir(folder):
            frames.append(pd.read_parquet(folder, columns=list(EVENT_COLUMNS)))
    events = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(EVENT_COLUMNS))
    times = pd.to_datetime(events[schema.EVENT_TIME], utc=True)
    events[schema.EVENT_TIME] = (times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return search_sessions(events)


def night_catalog(config: dict, ds: str, items: pd.DataFrame) -> SearchCatalog:
    """Tonight's catalog items with their text (raw/catalog/dt=<ds>) and normalize's features."""
    from jobs.search.lexical import item_document

    text = catalog_text(config, ds)
    listed = items[items[schema.IN_CATALOG]].sort_values(schema.ITEM_IDX, ignore_index=True)
    fields = [text.get(item, {}) for item in listed[schema.ITEM_ID]]
    documents = [item_document(f.get(schema.TITLE), f.get(schema.CATEGORY), f.get(schema.BRAND)) for f in fields]
    counts = listed[schema.POPULARITY].fillna(0).to_numpy(dtype=np.float64) + 1.0  # add-one: never log(0)
    return SearchCatalog(pd.DataFrame({
        "item": np.arange(len(listed)), "item_id": listed[schema.ITEM_ID].astype(str).to_numpy(),
        "item_idx": listed[schema.ITEM_IDX].to_numpy(dtype=np.int64),
        "brand_id": listed[schema.BRAND_IDX].to_numpy(), "category_id": listed[schema.CATEGORY_IDX].to_numpy(),
        "brand": [f.get(schema.BRAND) or "" for f in fields],
        "price_z": listed[schema.PRICE_Z].fillna(0.0).to_numpy(dtype=np.float64),
        "popularity": counts / counts.sum(), "document": documents}))


def catalog_text(config: dict, ds: str) -> dict[str, dict]:
    """{item_id: the catalog line's fields} of raw/catalog/dt=<ds> (normalize has validated it)."""
    from jobs.common.lake import partition_path

    folder = partition_path(config, schema.RAW_CATALOG, ds)
    text = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".jsonl.gz"):
            with gzip.open(os.path.join(folder, name), "rt", encoding="utf-8") as lines:
                for line in lines:
                    record = json.loads(line)
                    text[str(record[schema.ITEM_ID])] = {key: None if value is None else str(value)
                                                         for key, value in record.items()}
    return text


# --- transform -------------------------------------------------------------------------------

@dataclasses.dataclass
class BuiltRows:
    """Every search's candidates and features, and where each search's rows are."""
    rows: object  # jobs.search.ranker.RankingRows
    scored: list  # jobs.search.ranker.ScoredSearch of the searches with a relevant item
    searches: pd.DataFrame  # in position order
    has_history: np.ndarray  # per search position: the searcher had events before it
    index: object  # the LexicalIndex the candidates came from
    recommender: str  # the fusion variant whose scores are features

    def positions_where(self, keep) -> list[int]:
        return [search.position for search in self.scored if keep(search.position)]

    def rows_of(self, positions):
        from jobs.search.ranker import subset

        wanted = set(positions)
        return subset(self.rows, self.scored, lambda position: position in wanted)


@dataclasses.dataclass
class SearchParts:
    """Which part each search position of BuiltRows is in: the test day's, or - valid day or
    earlier, by its user's holdout - fit_valid / stop_valid / fit_earlier / stop_earlier."""
    built: BuiltRows
    n_valid: int
    n_test: int
    holdout: np.ndarray  # per search position (test positions: ignored)

    def of(self, position: int) -> str:
        if self.n_valid <= position < self.n_valid + self.n_test:
            return "test"
        use = "stop" if self.holdout[position] else "fit"
        return f"{use}_valid" if position < self.n_valid else f"{use}_earlier"

    def rows(self, name: str):
        """The rows of a part, or of fit_all / stop_all: the earlier days' and the valid day's."""
        wanted = (name.replace("_all", "_earlier"), name.replace("_all", "_valid")) if name.endswith("_all") \
            else (name,)
        return self.built.rows_of(self.built.positions_where(lambda position: self.of(position) in wanted))


def learnable_groups(rows) -> int:
    from jobs.search.ranker import learnable

    return int(learnable(rows).groups.size)


def build_rows(config: dict, ds: str, features, catalog: SearchCatalog, searches: pd.DataFrame,
               interactions: pd.DataFrame, with_models: int | None = None) -> BuiltRows:
    """Candidates (BM25 top-N) and NIGHTLY_FEATURES of every search, in the order given; the
    models' features only for the first with_models searches (all by default), missing after."""
    from jobs.common.features import histories_before
    from jobs.search.lexical import LexicalIndex
    from jobs.search.ranker import candidate_rows
    from jobs.search.semantic import union_candidates
    from jobs.serving.night_models import SCORING_MEMO_BYTES, load_all_scorers, night_model_dirs
    from jobs.serving.register_and_gate import choose_variant

    searches = searches.reset_index(drop=True)
    settings = config["search"]
    index = LexicalIndex.build(catalog.item_ids, catalog.documents)
    semantic = semantic_index(config, ds, catalog) if settings["semantic_candidates"] else None
    retrieved, cosines = union_candidates(index, semantic, searches[schema.QUERY], settings["candidates"],
                                          settings["semantic_candidates"])
    histories = histories_before(features.sequences, searches[schema.USER_ID], searches["time"], config["max_seq_len"])
    profiles = search_profiles(features.sequences, searches, catalog)

    recommender = choose_variant(config, ds)
    # Memoized: the served fusion asks the user encoder about the batch it has just answered.
    scorers = load_all_scorers(night_model_dirs(config, ds), features.items, features.n_items, SCORING_MEMO_BYTES)
    modelled = len(searches) if with_models is None else with_models
    candidate_idx = [catalog.item_idx[candidates] for candidates, _ in retrieved[:modelled]]
    # model_signals reads the histories of the first len(candidate_idx) searches only.
    signals = [model_signals(scorers[name], histories, candidate_idx)
               + [np.full((len(candidates), 2), np.nan) for candidates, _ in retrieved[modelled:]]
               for name in ("user_encoder", recommender)]

    relevance = {search: {catalog.position_of_id.get(item, item): grade for item, grade in zip(group[schema.ITEM_ID],
                                                                                                group["grade"])}
                 for search, group in interactions.groupby("search_id")}
    rows, scored = candidate_rows(searches[schema.QUERY], np.arange(len(searches)),
                                  [relevance.get(search) for search in searches["search_id"]], retrieved,
                                  catalog.signals, profiles,
                                  extra_features=lambda position, _: nightly_columns(
                                      cosines[position], [block[position] for block in signals]),
                                  n_extra=len(SEMANTIC_FEATURES) + len(MODEL_FEATURES))
    return BuiltRows(rows, scored, searches, histories.items.any(axis=1), index, recommender)


def search_profiles(sequences: pd.DataFrame, searches: pd.DataFrame, catalog: SearchCatalog) -> UserProfiles:
    """The personal features' profiles, one per search (its row): everything its user did in the
    window before it (up to PROFILE_MAX_EVENTS, the latest), not only what the encoders read."""
    from jobs.common.features import histories_before

    return profiles_of(histories_before(sequences, searches[schema.USER_ID], searches["time"], PROFILE_MAX_EVENTS).items,
                       catalog)


def semantic_index(config: dict, ds: str, catalog: SearchCatalog):
    """The item encoder's space over tonight's catalog (jobs/search/semantic.py)."""
    from jobs.common.lake import partition_path
    from jobs.search.semantic import load_semantic_index

    return load_semantic_index(partition_path(config, schema.MODEL_ITEM_ENCODER, ds), title_vocabulary(config, ds),
                               catalog.item_idx)


def title_vocabulary(config: dict, ds: str) -> pd.DataFrame:
    """The title-token vocabulary table the night's item encoder read (the latest at or before ds)."""
    from jobs.common.lake import existing_partitions, partition_path

    dataset = f"{schema.VOCABULARIES}/title_token"
    stored = [day for day in existing_partitions(config, dataset) if day <= ds]
    if not stored:
        raise FileNotFoundError(f"no title-token vocabulary at or before {ds} under {partition_path(config, dataset, ds)}: "
                                "has normalize_features run for this night?")
    return pd.read_parquet(partition_path(config, dataset, stored[-1]), columns=[schema.VOCABULARY_VALUE,
                                                                                 schema.VOCABULARY_ID])


def holdout_of(searches: pd.DataFrame, config: dict) -> np.ndarray:
    """Per search: its user is one of the search.holdout_fraction held out from fitting."""
    from jobs.fusion.fuse import holdout_mask

    return holdout_mask(searches[schema.USER_ID].to_numpy(), config["search"]["holdout_fraction"], config["seed"],
                        "search", "fit the search rankers")


def fit_rankers(fit_all, stop_all, fit_valid, stop_valid, seed: int) -> dict:
    """hybrid on every fitting search; personalized in two stages (module docstring), the first of
    which is personal_history. fit_all / stop_all: the fitting / held-out users' searches of the
    earlier days and the valid day; fit_valid / stop_valid: their valid-day searches only."""
    from jobs.search.ranker import SearchRanker, learnable

    fit_all, stop_all = learnable(fit_all), learnable(stop_all)
    fit_valid, stop_valid = learnable(fit_valid), learnable(stop_valid)
    if not fit_valid.groups.size or not stop_valid.groups.size:
        raise ValueError(f"{fit_valid.groups.size} fitting and {stop_valid.groups.size} early-stopping valid-day "
                         f"searches have a relevant candidate: the rankers need both")
    every = list(range(len(NIGHTLY_FEATURES)))
    hybrid = VARIANT_FEATURES["hybrid"]
    first = SearchRanker.fit(without_models(fit_all), without_models(stop_all), NIGHTLY_FEATURES, every, seed=seed)
    if any(first.importances()[name] for name in MODEL_FEATURES):  # all missing: no tree can split on them
        raise AssertionError("the first stage split on tonight's models' features, which it never saw")
    return {"hybrid": SearchRanker.fit(fit_all, stop_all, hybrid, [NIGHTLY_FEATURES.index(name) for name in hybrid],
                                       seed=seed),
            "personal_history": first,
            "personalized": SearchRanker.fit(fit_valid, stop_valid, NIGHTLY_FEATURES, every, seed=seed,
                                             init_model=first)}


def without_models(rows):
    """The rows with tonight's models' features missing (as on the earlier days)."""
    from jobs.search.ranker import RankingRows

    features = rows.features.copy()
    features[:, [NIGHTLY_FEATURES.index(name) for name in MODEL_FEATURES]] = np.nan
    return RankingRows(features, rows.grades, rows.groups)


def evaluate(config: dict, rankers: dict, test_rows, tested: list, built: BuiltRows, earlier: pd.DataFrame) -> dict:
    """{variant: {metric, metric_ci, searches, segments: {segment: the same}}} on the test searches."""
    from jobs.search.ranker import renumbered

    settings = config["evaluation"]
    bm25_rank = test_rows.features[:, NIGHTLY_FEATURES.index("bm25_rank")]
    lexical = test_rows.features[:, NIGHTLY_FEATURES.index("bm25")] > 0
    # BM25 as the shop would show it: its own list in its own order (equal scores keep index
    # order); the semantic retriever's extra candidates are not in it.
    scores = {"bm25": np.where(lexical, -bm25_rank, -np.inf),
              "embedding": test_rows.features[:, NIGHTLY_FEATURES.index("embedding_cosine")]}
    for variant, ranker in rankers.items():
        scores[variant] = ranker.score(test_rows.features[:, [NIGHTLY_FEATURES.index(n) for n in ranker.feature_names]])
    local = renumbered(tested)  # scores are per row of test_rows, the tested searches' rows in order
    positions = [search.position for search in tested]
    rows = built.searches.iloc[positions]
    users = rows[schema.USER_ID].astype(str).to_numpy()
    returning = built.has_history[positions]
    query_counts = earlier[schema.QUERY].value_counts()
    head = rows[schema.QUERY].map(lambda query: query_counts.get(query, 0)).to_numpy() >= \
        config["search"]["head_query_min_searches"]
    segments = {"all": np.ones(len(tested), dtype=bool), "returning_users": returning, "new_users": ~returning,
                "head_queries": head, "tail_queries": ~head}
    report, contributions = {}, {}
    for variant in VARIANTS:
        contributions[variant] = per_search_metrics(scores[variant], local)
        by_segment = {segment: summarize(contributions[variant], users, mask, settings["bootstrap_resamples"],
                                         settings["confidence"], config["seed"])
                      for segment, mask in segments.items() if mask.any()}
        report[variant] = {**by_segment["all"], "segments": by_segment}
    for variant in PAIRED_WITH_HYBRID:
        report[variant][GAIN_OVER_HYBRID] = paired_gain(contributions[variant], contributions["hybrid"], users,
                                                        settings, config["seed"])
    return report


def paired_gain(variant: dict, baseline: dict, users: np.ndarray, settings: dict, seed: int) -> dict:
    """The variant's metrics minus the baseline's on the same searches, with the bootstrap
    interval of that difference (a user's searches resampled together): a gain whose interval
    excludes 0 is outside the noise, which two overlapping separate intervals cannot tell."""
    differences = {name: variant[name] - baseline[name] for name in METRICS}
    return summarize(differences, users, np.ones(len(users), dtype=bool), settings["bootstrap_resamples"],
                     settings["confidence"], seed)


# --- load ------------------------------------------------------------------------------------

def save_models(config: dict, ds: str, catalog: SearchCatalog, index, ranker, setup: dict,
                user_histories: pd.DataFrame) -> str:
    """Everything a request needs besides the night's recommendation models (jobs/search/engine.py),
    with the users' latest events for requests that send only a user id (jobs/serving/stored_histories.py)."""
    from jobs.common.lake import partition_path, replace_partition

    folder = partition_path(config, schema.MODEL_SEARCH, ds)
    with replace_partition(folder) as staging:
        ranker.booster.save_model(os.path.join(staging, RANKER_FILE), num_iteration=ranker.trees)
        index.save(os.path.join(staging, INDEX_DIR))
        catalog.frame.to_parquet(os.path.join(staging, CATALOG_FILE), index=False)
        title_vocabulary(config, ds).to_parquet(os.path.join(staging, VOCABULARY_FILE), index=False)
        user_histories.to_parquet(os.path.join(staging, USER_HISTORIES_FILE), index=False)
        with open(os.path.join(staging, CONFIG_FILE), "w") as handle:
            json.dump({"variant": SERVED_VARIANT, "features": list(ranker.feature_names),
                       "search": config["search"], "max_seq_len": config["max_seq_len"], **setup}, handle, indent=2)
    return folder


def write_report(folder: str, report: dict, ds: str, importances: dict | None = None) -> None:
    from jobs.common.lake import replace_partition

    with replace_partition(folder) as staging:
        with open(os.path.join(staging, METRICS_FILE), "w") as handle:
            json.dump(report, handle, indent=2)
        with open(os.path.join(staging, MARKDOWN_FILE), "w") as handle:
            handle.write(markdown_table(report, ds))
        if importances is not None:
            with open(os.path.join(staging, IMPORTANCES_FILE), "w") as handle:
                json.dump(importances, handle, indent=2)


def markdown_table(report: dict, ds: str) -> str:
    if "skipped" in report:
        return f"No search ranker for night {ds}: {report['skipped']}.\n"
    lines = [f"Search on the test day of night {ds}: {report['bm25']['searches']} searches, "
             f"top-{report['setup']['candidates']} BM25 candidates, 95% intervals by user.", "",
             "| variant | segment | searches | " + " | ".join(METRICS) + " |",
             "|---|---|---:|" + "---:|" * len(METRICS)]
    for variant in VARIANTS:
        for segment, row in report[variant]["segments"].items():
            cells = [f"{row[name]:.2f} [{row[name + '_ci'][0]:.2f}, {row[name + '_ci'][1]:.2f}]" for name in METRICS]
            lines.append(f"| {variant} | {segment} | {row['searches']} | " + " | ".join(cells) + " |")
    lines += ["", "Gain over hybrid on the same searches (paired; the interval is the difference's, by user):", ""]
    for variant in PAIRED_WITH_HYBRID:
        gain = report[variant][GAIN_OVER_HYBRID]
        lines.append(f"- {variant}: " + ", ".join(f"{name} {gain[name]:+.2f} [{gain[name + '_ci'][0]:+.2f}, "
                                                  f"{gain[name + '_ci'][1]:+.2f}]" for name in METRICS))
    return "\n".join(lines) + "\n"


def log_to_mlflow(config: dict, ds: str, report: dict, report_dir: str) -> None:
    import mlflow

    from jobs.common.tracking import stage_run

    with stage_run(config, "train_search_ranker", ds):
        for variant in VARIANTS:
            for segment, row in report[variant]["segments"].items():
                mlflow.log_metrics(interval_metrics(f"search.{variant}" if segment == "all"
                                                    else f"search.{variant}.{segment}", row))
        for variant in PAIRED_WITH_HYBRID:
            mlflow.log_metrics(interval_metrics(f"search.{variant}.{GAIN_OVER_HYBRID}", report[variant][GAIN_OVER_HYBRID]))
        mlflow.log_metric("search.test_searches", report["bm25"]["searches"])
        for name in (METRICS_FILE, MARKDOWN_FILE, IMPORTANCES_FILE):
            mlflow.log_artifact(os.path.join(report_dir, name))


def interval_metrics(prefix: str, row: dict) -> dict:
    """MLflow metrics of a summarize(...) row: each metric and its interval's ends."""
    from jobs.evaluation.metrics import mlflow_metric_key

    metrics = {}
    for name in METRICS:
        key = mlflow_metric_key(prefix, name)
        metrics.update({key: row[name], key + ".ci_low": row[name + "_ci"][0], key + ".ci_high": row[name + "_ci"][1]})
    return metrics
