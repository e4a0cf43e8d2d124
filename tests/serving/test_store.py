"""jobs/serving/store.py: what a web shop reads, from each store, and the store's own errors."""

import pytest

from jobs.common.connections import connection_uri
from jobs.etl.privacy import hash_user_id
from jobs.serving.search_lists import query_key
from jobs.serving.store import (ITEM, QUERY, USER, RedisStore, ServingStoreError, ServingStoreReader, lists_of,
                                open_stores, version_name)
from tests.serving.serving_nights import (CATALOG, REDIS_ENV, REDIS_URI, default_item_lists, default_search_lists,
                                          recommendations_frame, search_results_frame, similar_items_frame)

KEY = b"test-key"
RAW_USERS = ["customer-1", "customer-2", "jane@example.com"]


def night_frames():
    """Lists keyed as the lake keys them: by hash_user_id of the shop's raw id."""
    users = {hash_user_id(raw, KEY): CATALOG[index:index + 3] for index, raw in enumerate(RAW_USERS)}
    searches = search_results_frame(default_search_lists())
    searches["query_key"] = [query_key(segment, query) for segment, query in zip(searches["segment"], searches["query"])]
    return {USER: recommendations_frame(users), ITEM: similar_items_frame(default_item_lists()), QUERY: searches}


def publish_directly(stores, version="v20261127_1"):
    frames = night_frames()
    for store in stores:
        store.write_version(version, "2026-11-27", frames)
        store.switch(version)
    return frames


@pytest.mark.parametrize("target", ["sqlite", "postgres", "redis"])
def test_readers_return_exactly_the_parquet_lists(serving_config, target):
    config = dict(serving_config, serving_store=dict(serving_config["serving_store"], targets=[target]))
    stores = open_stores(config)
    frames = publish_directly(stores)
    reader = ServingStoreReader.from_config(config)
    try:
        for raw in RAW_USERS:  # as a shop asks: its own id, hashed with the pipeline's key
            expected = lists_of(frames[USER], USER)[hash_user_id(raw, KEY)]
            assert reader.recommendations(hash_user_id(raw, KEY)) == expected
        for item, similar in lists_of(frames[ITEM], ITEM).items():
            assert reader.similar_items(item) == similar
        assert reader.recommendations("unknown-user") == []
        # A head query as a shop's visitor types it: any case and spacing, a segment or none (new).
        assert reader.search_results("  LAMP ") == ["i1", "i2"]
        assert reader.search_results("lamp", "Kitchen") == ["i4", "i1"]
        assert reader.search_results("red  mug", "Kitchen") == ["i3", "i5"]
        assert reader.search_results("sofa", "Kitchen") == []
        assert stores[0].read_all("v20261127_1", ITEM) == lists_of(frames[ITEM], ITEM)
    finally:
        reader.close()
        stores[0].close()


def test_a_reader_reads_redis_first_and_the_tables_when_redis_is_unreachable(serving_config, monkeypatch):
    stores = open_stores(serving_config)
    frames = publish_directly(stores)
    for store in stores:
        store.close()
    reader = ServingStoreReader.from_config(serving_config)
    assert [type(store).__name__ for store in reader.stores] == ["RedisStore", "TableStore", "TableStore"]
    reader.stores[0].client.connection_pool.reset()
    monkeypatch.setattr(reader.stores[0].client.connection_pool, "connection_kwargs",
                        {**reader.stores[0].client.connection_pool.connection_kwargs, "port": 1})
    item = CATALOG[0]
    assert reader.similar_items(item) == lists_of(frames[ITEM], ITEM)[item]  # from PostgreSQL
    reader.close()


def test_nothing_live_reads_as_empty_lists(tmp_config):
    reader = ServingStoreReader.from_config(tmp_config)
    assert reader.recommendations("someone") == [] and reader.similar_items("i1") == []
    reader.close()


def test_redis_keys_expire_after_the_configured_ttl(serving_config):
    settings = serving_config["serving_store"]
    store = RedisStore(REDIS_URI, "fusionrec_serving_redis", settings["redis_key_prefix"], ttl_s=120)
    publish_directly([store], version_name("2026-11-27", 1))
    key = store.key("v20261127_1", ITEM, CATALOG[0])
    assert 0 < store.client.ttl(key) <= 120
    assert store.client.ttl(store.live_key) == -1  # the pointer itself never expires
    store.close()


def test_a_connection_comes_from_its_environment_variable_outside_airflow(monkeypatch):
    monkeypatch.setenv(REDIS_ENV, REDIS_URI)
    assert connection_uri("fusionrec_serving_redis") == REDIS_URI
    monkeypatch.delenv(REDIS_ENV)
    with pytest.raises(ValueError, match="no Airflow connection 'fusionrec_serving_redis' .*AIRFLOW_CONN_FUSIONREC_"
                                         "SERVING_REDIS"):
        connection_uri("fusionrec_serving_redis")


def test_an_unreachable_postgres_is_a_store_error_naming_its_address(tmp_config, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_FUSIONREC_SERVING_POSTGRES", "postgresql://postgres@127.0.0.1:1/nothing")
    config = dict(tmp_config, serving_store=dict(tmp_config["serving_store"], targets=["postgres"]))
    with pytest.raises(ServingStoreError, match=r"postgres at 127\.0\.0\.1:1/nothing .*failed while connecting"):
        open_stores(config)
