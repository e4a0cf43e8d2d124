"""Hand-made nights for the serving-store tests: 8 catalog items, 4 users, 3 items a list."""

import os

import pandas as pd

# The local servers (the same on this machine and in CI); the variables point elsewhere.
POSTGRES_ADMIN_URI = os.environ.get("FUSIONREC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URI = os.environ.get("FUSIONREC_TEST_REDIS", "redis://127.0.0.1:6379/0")
POSTGRES_ENV, REDIS_ENV = "AIRFLOW_CONN_FUSIONREC_SERVING_POSTGRES", "AIRFLOW_CONN_FUSIONREC_SERVING_REDIS"

CATALOG = [f"i{number}" for number in range(1, 9)]  # 8 items, all in tonight's catalog


def recommendations_frame(lists: dict) -> pd.DataFrame:
    """recommendations rows of {hashed user id: [item ids]}."""
    rows = [(user, rank, item, 1.0 / rank, "7") for user, items in lists.items()
            for rank, item in enumerate(items, start=1)]
    return pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "score", "model_version"])


def similar_items_frame(lists: dict) -> pd.DataFrame:
    rows = [(item, rank, similar, 1.0 / rank, "both") for item, similars in lists.items()
            for rank, similar in enumerate(similars, start=1)]
    return pd.DataFrame(rows, columns=["item_id", "rank", "similar_item_id", "score", "source"])


def search_results_frame(lists: dict) -> pd.DataFrame:
    """search_results rows of {(segment, query): [item ids]}."""
    rows = [(segment, query, rank, item, 1.0 / rank, "3") for (segment, query), items in lists.items()
            for rank, item in enumerate(items, start=1)]
    return pd.DataFrame(rows, columns=["segment", "query", "rank", "item_id", "score", "model_version"])


def default_search_lists() -> dict:
    """Two segments' lists of two head queries; "lamp" differs by segment."""
    return {("new", "lamp"): [CATALOG[0], CATALOG[1]], ("new", "red mug"): [CATALOG[2]],
            ("Kitchen", "lamp"): [CATALOG[3], CATALOG[0]], ("Kitchen", "red mug"): [CATALOG[2], CATALOG[4]]}


def default_user_lists(shift: int = 0) -> dict:
    """4 users x 3 items; shift moves every list along the catalog (shift 0 twice: overlap 1.0)."""
    return {f"{'ab'[user % 2]}{user:063x}": [CATALOG[(user + shift + step) % 8] for step in range(3)]
            for user in range(4)}


def default_item_lists() -> dict:
    return {item: [CATALOG[(index + 1) % 8], CATALOG[(index + 2) % 8]] for index, item in enumerate(CATALOG)}


