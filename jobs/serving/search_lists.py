"""Ready-made search results: the night's most frequent queries, ranked for each user segment.

A shop answers most of its search traffic from a few head queries. batch_recommend writes,
next to the recommendations, search_results/dt=<ds>/ (segment, query, rank, item_id, score,
model_version): for each of the window's search.head_queries most frequent queries and each
segment, the top search.segment_results items of the registered search champion
(config mlflow.registered_search_model), which publish_serving serves beside the lists.

Segments. A user's segment is the category their window's item events fall in most (its raw
catalog name; ties go to the name first in order), or NEW_VISITORS without item events, so a
shop can tell a visitor's segment from what it shows them. A segment's list for a query
merges the personalized lists of up to search.segment_members of its users (chosen at
random, seeded) by reciprocal rank fusion (score = sum of 1 / (RRF_K + rank) over the members,
Cormack et al. 2009): the items the segment's people would be shown first, not those of one
person. New visitors get the ranker's list for an empty history.

Queries are compared by their words (jobs/search/text.py): "Lamp " and "lamp" are one query,
and a shop looks a typed query up by query_key(segment, query).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from jobs.common import schema
from jobs.search.text import words
from jobs.serving.similar_items import RRF_K

NEW_VISITORS = "new"
SEARCH_RESULT_COLUMNS = ("segment", schema.QUERY, "rank", schema.ITEM_ID, "score", "model_version")
KEY_SEPARATOR = "|"


def normalized_query(text: str | None) -> str:
    """The words of a query joined by single spaces ('' for a query without words)."""
    return " ".join(words(text))


def query_key(segment: str, query: str) -> str:
    """The serving key of a segment's list for a query (the query normalized)."""
    return f"{segment}{KEY_SEPARATOR}{normalized_query(query)}"


def head_queries(queries: pd.Series, n: int) -> list[str]:
    """The n most frequent normalized queries (ties: alphabetical); queries without words are left out."""
    counts = queries.map(normalized_query).value_counts()
    counts = counts[counts.index != ""]
    ordered = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
    return [query for query, _ in ordered[:n]]


def user_segments(sequences: pd.DataFrame, category_of_item: dict) -> dict[str, str]:
    """{user_id: segment} for every user of sequences (segment: the category name most frequent
    among their item events; ties to the first name in order; NEW_VISITORS when none has one)."""
    names = sorted(set(category_of_item.values()))
    code_of_item = {item: names.index(name) for item, name in category_of_item.items()} if names else {}
    lengths = sequences[schema.ITEM_IDX].map(len).to_numpy()
    events = pd.DataFrame({"user": np.repeat(np.arange(len(sequences)), lengths),
                           "code": pd.Series(np.concatenate([np.asarray(items) for items in sequences[schema.ITEM_IDX]])
                                             if len(sequences) else [], dtype=object).map(code_of_item).to_numpy()})
    counted = events.dropna().astype(np.int64).value_counts(["user", "code"]).rename("events").reset_index()
    # Most events first, then the smallest code: the name first in order.
    top = counted.sort_values(["user", "events", "code"], ascending=[True, False, True]).drop_duplicates("user")
    segment = np.full(len(sequences), NEW_VISITORS, dtype=object)
    segment[top["user"].to_numpy()] = [names[code] for code in top["code"]]
    return dict(zip(sequences[schema.USER_ID], segment))


def segment_members(segments: dict[str, str], per_segment: int, seed: int) -> dict[str, list[str]]:
    """{segment: up to per_segment of its users, drawn without replacement}; NEW_VISITORS maps to []
    (their list is the empty history's) and is always present."""
    rng = np.random.default_rng(seed)
    grouped: dict[str, list[str]] = {NEW_VISITORS: []}
    for user, segment in sorted(segments.items()):
        if segment != NEW_VISITORS:
            grouped.setdefault(segment, []).append(user)
    return {segment: ([str(user) for user in rng.choice(users, size=min(per_segment, len(users)), replace=False)]
                      if users else [])
            for segment, users in sorted(grouped.items())}


def reciprocal_rank_fusion(ranked_lists: list[list[str]], k: int) -> list[tuple[str, float]]:
    """The top k items of several best-first lists by sum of 1 / (RRF_K + rank) (ties: item id)."""
    scores: dict[str, float] = {}
    for ranked in ranked_lists:
        for rank, item in enumerate(ranked, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))[:k]


def segment_requests(queries: list[str], members: dict[str, list[str]], histories: dict[str, dict]) -> pd.DataFrame:
    """One search request per (segment, query, member) - one empty-history request per query for
    NEW_VISITORS - in the search pyfunc's input layout plus segment and member columns."""
    empty = {"history": [], "event_types": [], "timestamps": []}
    rows = []
    for segment, users in members.items():
        for query in queries:
            for user in users or [None]:
                rows.append({"segment": segment, "member": user, schema.QUERY: query,
                             **(histories[user] if user is not None else empty)})
    return pd.DataFrame(rows, columns=["segment", "member", schema.QUERY, "history", "event_types", "timestamps"])


def merge_segment_lists(requests: pd.DataFrame, predictions: pd.DataFrame, n: int, model_version: str) -> pd.DataFrame:
    """search_results rows: per (segment, query), the members' lists merged by reciprocal rank fusion."""
    frames = []
    lists = pd.DataFrame({"segment": requests["segment"].to_numpy(), schema.QUERY: requests[schema.QUERY].to_numpy(),
                          "item_ids": list(predictions["item_ids"])})
    for (segment, query), group in lists.groupby(["segment", schema.QUERY], sort=True):
        merged = reciprocal_rank_fusion([list(ids) for ids in group["item_ids"]], n)
        if merged:
            frames.append(pd.DataFrame({"segment": segment, schema.QUERY: query,
                                        "rank": np.arange(1, len(merged) + 1, dtype=np.int32),
                                        schema.ITEM_ID: [item for item, _ in merged],
                                        "score": np.array([score for _, score in merged], dtype=np.float64)}))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {"segment": pd.Series(dtype=str), schema.QUERY: pd.Series(dtype=str), "rank": pd.Series(dtype=np.int32),
         schema.ITEM_ID: pd.Series(dtype=str), "score": pd.Series(dtype=np.float64)})
    table["model_version"] = model_version
    return table.loc[:, list(SEARCH_RESULT_COLUMNS)]


def window_histories(sequences: pd.DataFrame, items: pd.DataFrame, users: list[str], max_events: int) -> dict[str, dict]:
    """{user_id: the search pyfunc's history fields} of each user's last max_events window events
    (raw ids; an event outside the night's catalog is left out: a request's history is raw ids)."""
    from jobs.serving.stored_histories import user_histories_table

    table = user_histories_table(sequences[sequences[schema.USER_ID].isin(set(users))], items, max_events)
    histories = {}
    for user, history, types, seconds in zip(table[schema.USER_ID], table["history"], table["event_types"],
                                             table["timestamps"]):
        known = [position for position, item in enumerate(history) if item is not None]
        histories[user] = {"history": [history[p] for p in known], "event_types": [types[p] for p in known],
                           "timestamps": [seconds[p] for p in known]}
    return histories


def write_search_results(config: dict, ds: str, features) -> dict:
    """Write search_results/dt=<ds>/ from the search champion (an empty partition, and a line
    saying why, when no search model is registered or the window has no searches)."""
    from jobs.common.lake import partition_path, replace_partition
    from jobs.search.train_search_ranker import catalog_text, search_log
    from jobs.serving.search_model import PROFILE_MAX_EVENTS

    settings = config["search"]
    output = partition_path(config, schema.SEARCH_RESULTS, ds)
    searches, _ = search_log(config, features.meta["train_dates"] + features.meta["valid_dates"]
                             + features.meta["test_dates"])
    queries = head_queries(searches[schema.QUERY], settings["head_queries"])
    champion = search_champion(config, ds) if queries else None
    if champion is None:
        table = merge_segment_lists(pd.DataFrame({"segment": [], schema.QUERY: []}), pd.DataFrame({"item_ids": []}),
                                    0, "")
        why = ("no search in the window" if not queries
               else f"no champion of {config['mlflow']['registered_search_model']} in the registry")
    else:
        model, version = champion
        text = catalog_text(config, ds)
        category_of_item = {idx: text[item][schema.CATEGORY] for idx, item in
                            zip(features.items[schema.ITEM_IDX], features.items[schema.ITEM_ID].astype(str))
                            if text.get(item, {}).get(schema.CATEGORY)}
        members = segment_members(user_segments(features.sequences, category_of_item), settings["segment_members"],
                                  config["seed"])
        histories = window_histories(features.sequences, features.items,
                                     [user for users in members.values() for user in users], PROFILE_MAX_EVENTS)
        requests = segment_requests(queries, members, histories)
        predictions = model.predict(requests.drop(columns=["segment", "member"]),
                                    params={"k": settings["segment_results"]})
        table = merge_segment_lists(requests, predictions, settings["segment_results"], version)
        why = f"{len(queries)} head queries x {len(members)} segments from {len(requests)} requests to v{version}"
    with replace_partition(output) as staging:
        table.to_parquet(os.path.join(staging, "part-00000.parquet"), index=False)
    return {"search_results_path": output, "search_results_lists": int(table.groupby(["segment", schema.QUERY]).ngroups),
            "search_results_note": why}


def search_champion(config: dict, ds: str):
    """(the search model night ds serves from as a pyfunc, its version) or None when the registry
    has none: the champion, or for a backfilled night its own (register_and_gate.serving_version)."""
    import mlflow
    from mlflow import MlflowClient

    from jobs.serving.register_and_gate import serving_version

    name = config["mlflow"]["registered_search_model"]
    chosen = serving_version(MlflowClient(), name, ds)
    if chosen is None:
        return None
    return mlflow.pyfunc.load_model(f"models:/{name}/{chosen[0]}"), chosen[0]
