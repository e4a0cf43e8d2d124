"""publish_serving against real stores: SQLite in tmp_path, the local PostgreSQL and Redis.

Every test publishes into all three at once (conftest.serving_config).
"""

import os
import socket

import pytest

from jobs.common.night import Night
from jobs.serving import publish_serving
from jobs.serving.publish_serving import ServingCheckError
from jobs.serving.store import ITEM, USER, ServingStoreError, ServingStoreReader, lists_of, open_stores
from tests.serving.serving_nights import (CATALOG, POSTGRES_ENV, REDIS_ENV, REDIS_URI, default_item_lists,
                                        default_search_lists, default_user_lists)

NIGHT_1, NIGHT_2 = "2026-11-26", "2026-11-27"


def publish(config, ds):
    return publish_serving.run(Night.plan(config, ds))


def live_versions(config) -> dict:
    stores = open_stores(config)
    try:
        return {target: store.live_version() for target, store in zip(config["serving_store"]["targets"], stores)}
    finally:
        for store in stores:
            store.close()


def stored_versions(config) -> dict:
    stores = open_stores(config)
    try:
        return {target: sorted(record["version"] for record in store.versions())
                for target, store in zip(config["serving_store"]["targets"], stores)}
    finally:
        for store in stores:
            store.close()


def search_lists_of(frame):
    return [(segment, query, group.sort_values("rank")["item_id"].tolist())
            for (segment, query), group in frame.groupby(["segment", "query"])]


def assert_serves(config, frames) -> None:
    """Every target's reader returns exactly the lists of these frames."""
    for target in config["serving_store"]["targets"]:
        reader = ServingStoreReader.from_config(
            dict(config, serving_store=dict(config["serving_store"], targets=[target])))
        try:
            for user, items in lists_of(frames["recommendations"], USER).items():
                assert reader.recommendations(user) == items, target
            for item, similar in lists_of(frames["similar_items"], ITEM).items():
                assert reader.similar_items(item) == similar, target
            for segment, query, items in search_lists_of(frames["search_results"]):
                assert reader.search_results(query, segment) == items, target
        finally:
            reader.close()


def test_publishing_twice_switches_atomically_and_keeps_the_previous_version_until_the_switch(
        serving_config, land_night, monkeypatch):
    first = land_night(serving_config, NIGHT_1)
    publish(serving_config, NIGHT_1)
    assert set(live_versions(serving_config).values()) == {"v20261126_1"}
    second = land_night(serving_config, NIGHT_2, user_lists=default_user_lists(shift=1))

    seen_before_switch = []
    real_checks = publish_serving.content_checks

    def checks_while_written(night, previous, config):
        # Tonight's version is fully written in every store here, and yesterday's still live.
        seen_before_switch.append((live_versions(serving_config), stored_versions(serving_config)))
        assert_serves(serving_config, first)
        return real_checks(night, previous, config)

    monkeypatch.setattr(publish_serving, "content_checks", checks_while_written)
    result = publish(serving_config, NIGHT_2)

    live_before, stored_before = seen_before_switch[0]
    assert set(live_before.values()) == {"v20261126_1"}
    assert set(map(tuple, stored_before.values())) == {("v20261126_1", "v20261127_1")}
    assert set(live_versions(serving_config).values()) == {"v20261127_1"}
    assert result["previous_version"] == "v20261126_1"
    assert_serves(serving_config, second)
    assert set(map(tuple, stored_versions(serving_config).values())) == {("v20261126_1", "v20261127_1")}


def test_a_rerun_of_the_same_night_publishes_a_new_version_and_old_ones_beyond_k_are_dropped(
        serving_config, land_night):
    land_night(serving_config, NIGHT_2)
    for _ in range(4):  # a re-run has overlap 1.0 with the live version and passes
        result = publish(serving_config, NIGHT_2)
    assert result["version"] == "v20261127_4"
    kept = {"v20261127_2", "v20261127_3", "v20261127_4"}  # versions_kept = 3
    assert all(set(versions) == kept for versions in stored_versions(serving_config).values())
    assert all(dropped == ["v20261127_1"] for dropped in result["dropped"].values())


def test_a_night_older_than_the_live_one_publishes_nothing_and_the_newer_lists_stay_live(
        serving_config, land_night, capsys):
    # A backfill re-runs NIGHT_1 after NIGHT_2 went live: the shop keeps NIGHT_2's lists.
    land_night(serving_config, NIGHT_1)
    second = land_night(serving_config, NIGHT_2, user_lists=default_user_lists(shift=1))
    publish(serving_config, NIGHT_2)
    result = publish(serving_config, NIGHT_1)
    assert result["version"] is None and "an older night never replaces them" in result["skipped"]
    assert "publish_serving 2026-11-26: nothing published: a later night's lists are live" in capsys.readouterr().out
    assert set(live_versions(serving_config).values()) == {"v20261127_1"}
    assert set(map(tuple, stored_versions(serving_config).values())) == {("v20261127_1",)}
    assert_serves(serving_config, second)


def out_of_catalog(config):
    lists = default_user_lists()
    lists[next(iter(lists))][0] = "gone"
    return {"user_lists": lists, "catalog": CATALOG}


def short_user_list(config):
    lists = default_user_lists()
    lists[next(iter(lists))].pop()
    return {"user_lists": lists}


def search_result_out_of_catalog(config):
    lists = default_search_lists()
    lists[("new", "lamp")] = ["gone", "i1"]
    return {"search_lists": lists}


def short_item_list(config):
    lists = default_item_lists()
    lists["i3"] = lists["i3"][:1]
    return {"item_lists": lists}


def low_coverage(config):
    config["serving_store"]["min_catalog_coverage"] = 0.9  # 3 distinct items of 8 possible
    return {"user_lists": {user: ["i1", "i2", "i3"] for user in default_user_lists()}}


def no_overlap(config):
    return {"user_lists": default_user_lists(shift=3)}  # every list disjoint from night 1's


@pytest.mark.parametrize("breaks, message", [
    (short_user_list, r"check full_user_lists failed: 1 of 4 users have fewer than 3 items \(shortest 2\)"),
    (short_item_list, r"check full_item_lists failed: 1 of 8 catalog items have fewer than 2 similar items"),
    (out_of_catalog, r"check no_items_out_of_catalog failed: 1 recommended, 0 similar-items and 0 search-result "
                     r"ids .*\(e\.g\. gone\)"),
    (search_result_out_of_catalog, r"check no_items_out_of_catalog failed: 0 recommended, 0 similar-items and 1 "
                                   r"search-result ids .*\(e\.g\. gone\)"),
    (low_coverage, r"check catalog_coverage failed: 0\.375 < 0\.900 \(3 distinct items recommended, at most 8"),
    (no_overlap, r"check overlap_with_previous failed: 0\.000 < 0\.050 \(users in both nights: 4\)"),
])
def test_each_failing_check_names_itself_and_leaves_yesterday_live_and_complete(
        serving_config, land_night, breaks, message):
    first = land_night(serving_config, NIGHT_1)
    publish(serving_config, NIGHT_1)
    land_night(serving_config, NIGHT_2, **breaks(serving_config))

    with pytest.raises(ServingCheckError, match=message) as failure:
        publish(serving_config, NIGHT_2)

    assert "v20261127_1 dropped, v20261126_1 stays live" in str(failure.value)
    assert set(live_versions(serving_config).values()) == {"v20261126_1"}
    assert set(map(tuple, stored_versions(serving_config).values())) == {("v20261126_1",)}
    assert_serves(serving_config, first)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_redis_refusing_the_connection_fails_clearly_and_leaves_the_previous_version_live(
        serving_config, land_night, monkeypatch):
    first = land_night(serving_config, NIGHT_1)
    publish(serving_config, NIGHT_1)
    land_night(serving_config, NIGHT_2, user_lists=default_user_lists(shift=1))
    port = closed_port()
    monkeypatch.setenv(REDIS_ENV, f"redis://127.0.0.1:{port}/0")

    with pytest.raises(ServingStoreError, match=rf"redis at 127\.0\.0\.1:{port}/0 \(connection "
                                                rf"fusionrec_serving_redis\) failed .*refused") as failure:
        publish(serving_config, NIGHT_2)

    assert "yesterday's version stays live" in str(failure.value)
    monkeypatch.setenv(REDIS_ENV, REDIS_URI)
    assert set(live_versions(serving_config).values()) == {"v20261126_1"}
    assert set(map(tuple, stored_versions(serving_config).values())) == {("v20261126_1",)}
    assert_serves(serving_config, first)


def test_postgres_refusing_the_connection_writes_nothing_anywhere_and_says_so(serving_config, land_night,
                                                                               monkeypatch):
    first = land_night(serving_config, NIGHT_1)
    publish(serving_config, NIGHT_1)
    land_night(serving_config, NIGHT_2, user_lists=default_user_lists(shift=1))
    good_uri = os.environ[POSTGRES_ENV]
    port = closed_port()
    monkeypatch.setenv(POSTGRES_ENV, f"postgresql://127.0.0.1:{port}/nothing")

    with pytest.raises(ServingStoreError, match=rf"(?s)publish_serving {NIGHT_2}: serving store postgres at "
                                                rf"127\.0\.0\.1:{port}/nothing .* refused.* - nothing written, "
                                                r"yesterday's version stays live"):
        publish(serving_config, NIGHT_2)

    monkeypatch.setenv(POSTGRES_ENV, good_uri)
    assert set(map(tuple, stored_versions(serving_config).values())) == {("v20261126_1",)}
    assert_serves(serving_config, first)


def test_the_default_target_is_a_sqlite_file_under_home(tmp_config, land_night):
    frames = land_night(tmp_config, NIGHT_2)
    config = dict(tmp_config, top_k=3, serving_store=dict(tmp_config["serving_store"], min_similar_items=2))
    publish(config, NIGHT_2)
    assert config["serving_store"]["targets"] == ["sqlite"]
    assert config["serving_store"]["sqlite_path"] == f"{config['home']}/serving/serving.db"
    assert_serves(config, frames)


def test_a_store_failing_at_the_switch_sends_the_others_back_to_yesterday_and_says_so(serving_config, land_night,
                                                                                     monkeypatch):
    from jobs.serving import store as store_module

    land_night(serving_config, NIGHT_1)
    publish(serving_config, NIGHT_1)
    land_night(serving_config, NIGHT_2, user_lists=default_user_lists(shift=1))

    def refuse(self, version):
        raise ServingStoreError("redis refused the pointer")

    with monkeypatch.context() as patch:
        patch.setattr(store_module.RedisStore, "switch", refuse)
        with pytest.raises(publish_serving.PartialSwitchError) as failure:
            publish(serving_config, NIGHT_2)
    # sqlite and postgres switch first (targets order), redis refuses: the two switch back.
    message = str(failure.value)
    assert "redis refused the pointer - switched sqlite at " in message
    assert " back to v20261126_1; postgres at " in message
    assert message.endswith(" back to v20261126_1; v20261127_1 is live nowhere")
    assert live_versions(serving_config) == {"sqlite": "v20261126_1", "postgres": "v20261126_1",
                                             "redis": "v20261126_1"}
