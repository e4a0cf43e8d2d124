"""The real local servers for the serving-store tests: a PostgreSQL database of this test
session's own (created and dropped here) and Redis under a key prefix unique per test.

A missing server FAILS the test that needs it, naming the server and its address.
"""

import os
import uuid

import pytest

from tests.serving.serving_nights import (CATALOG, POSTGRES_ADMIN_URI, POSTGRES_ENV, REDIS_ENV, REDIS_URI,
                                        default_item_lists, default_search_lists, default_user_lists,
                                        recommendations_frame, search_results_frame, similar_items_frame)


@pytest.fixture(scope="session")
def postgres_uri():
    """URI of a fresh database fusionrec_test_serving_<pid>, dropped after the session."""
    import psycopg

    database = f"fusionrec_test_serving_{os.getpid()}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URI, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        pytest.fail(f"PostgreSQL is needed at {POSTGRES_ADMIN_URI} (set FUSIONREC_TEST_POSTGRES): {error}")
    with admin:
        admin.execute(f"DROP DATABASE IF EXISTS {database}")
        admin.execute(f"CREATE DATABASE {database}")
        yield POSTGRES_ADMIN_URI.rsplit("/", 1)[0] + f"/{database}"
        admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


@pytest.fixture()
def redis_prefix():
    """A key prefix of this test's own; every key under it is deleted afterwards (never FLUSHDB)."""
    import redis

    client = redis.Redis.from_url(REDIS_URI, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.ConnectionError as error:
        pytest.fail(f"Redis is needed at {REDIS_URI} (set FUSIONREC_TEST_REDIS): {error}")
    prefix = f"fusionrec_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.unlink(*keys)
    client.close()


@pytest.fixture()
def serving_config(tmp_config, monkeypatch, postgres_uri, redis_prefix):
    """tmp_config publishing into sqlite (tmp_path), the session's PostgreSQL database and Redis."""
    monkeypatch.setenv(POSTGRES_ENV, postgres_uri)
    monkeypatch.setenv(REDIS_ENV, REDIS_URI)
    config = dict(tmp_config, top_k=3)
    # A fresh set of tables per test: the tables' names are the versions', so drop what a test left.
    _drop_all_tables(postgres_uri)
    config["serving_store"] = dict(config["serving_store"], targets=["sqlite", "postgres", "redis"],
                                   redis_key_prefix=redis_prefix, min_similar_items=2)
    return config


def _drop_all_tables(uri: str) -> None:
    import psycopg

    with psycopg.connect(uri, autocommit=True) as connection:
        tables = [row[0] for row in connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()]
        for table in tables:
            connection.execute(f'DROP TABLE "{table}"')


# --- A night's lists, landed where publish_serving reads them -------------------------------

@pytest.fixture()
def land_night():
    """land_night(config, ds, user_lists=None, item_lists=None, catalog=CATALOG, search_lists=None):
    write the night's recommendations, similar_items, search_results and catalog (features/items)
    partitions."""
    import pandas as pd

    from jobs.common import schema
    from jobs.common.lake import partition_path

    def land(config, ds, user_lists=None, item_lists=None, catalog=CATALOG, search_lists=None):
        items = pd.DataFrame({schema.ITEM_ID: list(catalog), schema.IN_CATALOG: True})
        frames = {schema.RECOMMENDATIONS: recommendations_frame(user_lists or default_user_lists()),
                  schema.SIMILAR_ITEMS: similar_items_frame(item_lists or default_item_lists()),
                  schema.SEARCH_RESULTS: search_results_frame(default_search_lists() if search_lists is None
                                                              else search_lists),
                  schema.FEATURE_ITEMS: items}
        for dataset, frame in frames.items():
            folder = partition_path(config, dataset, ds)
            os.makedirs(folder, exist_ok=True)
            frame.to_parquet(os.path.join(folder, "part-00000.parquet"), index=False)
        return frames

    return land
