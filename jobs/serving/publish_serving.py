"""publish_serving: tonight's recommendations, similar items and head-query search results into the shop's stores.

A night is never half visible. For every configured store (config serving_store.targets)
the night is written as a new version (jobs/serving/store.py), then checked, and only when
every store holds it and every check passes does each store's pointer switch to it, one
atomic step per store. A failing check (or an unreachable store) keeps yesterday's version
live, drops what was written of the new one and fails the task with a message naming the
check and its numbers. A store failing at the switch itself (after others switched) makes the
ones that switched go back to what they served before. After the switch, versions beyond the
last serving_store.versions_kept that were live are dropped, and so is any leftover that
never went live.

The checks (thresholds in config serving_store, explained there):
- full_user_lists: every user list has top_k items (and there is at least one user);
- full_item_lists: every catalog item has at least min_similar_items similar items;
- no_items_out_of_catalog: no listed item (or listed-for item) has left the catalog, search
  results included;
- catalog_coverage: distinct recommended items / the most the night could show;
- overlap_with_previous, similar_items_overlap_with_previous: against the live version of
  the first configured store (skipped when nothing is live, or no key is in both);
- written_version_complete: each store holds as many lists as the Parquet files.

A night older than the one whose version is live (a backfill of past dates) publishes
nothing: the shop keeps serving the newer lists, and says so.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from jobs.common import schema
from jobs.common.lake import partition_path
from jobs.common.night import Night
from jobs.serving.search_lists import query_key
from jobs.serving.store import (ITEM, LIST_COLUMNS, QUERY, USER, ServingStoreError, close_all, lists_of, open_stores, version_name,
                                version_publication)


class ServingCheckError(RuntimeError):
    """A check failed before the switch: yesterday's version stays live."""


class PartialSwitchError(ServingStoreError):
    """A store failed to switch after others had: those were switched back to the version they
    served before, and the message says what each store serves now."""


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str

    def message(self) -> str:
        return f"check {self.name} {'passed' if self.passed else 'failed'}: {self.detail}"


@dataclasses.dataclass(frozen=True)
class NightLists:
    """What a night publishes, and tonight's catalog (raw item ids)."""

    recommendations: pd.DataFrame
    similar_items: pd.DataFrame
    search_results: pd.DataFrame  # segment, query, rank, item_id, score, model_version (may be empty)
    catalog: frozenset

    def frames(self) -> dict[str, pd.DataFrame]:
        keyed = self.search_results.assign(query_key=[query_key(segment, query) for segment, query in zip(
            self.search_results["segment"], self.search_results[schema.QUERY])])
        return {USER: self.recommendations, ITEM: self.similar_items, QUERY: keyed}


def read_night_lists(config: dict, ds: str) -> NightLists:
    """The night's recommendations and similar_items partitions and its catalog, from the lake."""
    items = _read_partition(config, schema.FEATURE_ITEMS, ds, [schema.ITEM_ID, schema.IN_CATALOG])
    catalog = frozenset(items.loc[items[schema.IN_CATALOG].astype(bool), schema.ITEM_ID].astype(str))
    return NightLists(recommendations=_read_partition(config, schema.RECOMMENDATIONS, ds),
                      similar_items=_read_partition(config, schema.SIMILAR_ITEMS, ds),
                      search_results=_read_partition(config, schema.SEARCH_RESULTS, ds), catalog=catalog)


def _read_partition(config: dict, dataset: str, ds: str, columns=None) -> pd.DataFrame:
    path = partition_path(config, dataset, ds)
    try:
        return pd.read_parquet(path, columns=columns)
    except (FileNotFoundError, OSError) as error:
        raise FileNotFoundError(f"cannot read {path} ({error}): has batch_recommend run for {ds}?") from None


# --- Checks ------------------------------------------------------------------------------

def check_full_user_lists(lists: dict[str, list], top_k: int) -> Check:
    if not lists:
        return Check("full_user_lists", False, "no user lists at all")
    lengths = pd.Series([len(listed) for listed in lists.values()])
    short = int((lengths < top_k).sum())
    return Check("full_user_lists", short == 0,
                 f"{short} of {len(lengths)} users have fewer than {top_k} items (shortest {lengths.min()})")


def check_full_item_lists(lists: dict[str, list], catalog: frozenset, min_items: int) -> Check:
    # A catalog of k items can list at most k - 1 others per item.
    required = min(min_items, max(len(catalog) - 1, 0))
    lengths = pd.Series([len(lists.get(item, [])) for item in sorted(catalog)], dtype="int64")
    short = int((lengths < required).sum())
    shortest = int(lengths.min()) if len(lengths) else 0
    return Check("full_item_lists", short == 0, f"{short} of {len(lengths)} catalog items have fewer than "
                                                f"{required} similar items (shortest {shortest})")


def check_in_catalog(night: NightLists) -> Check:
    recommended = set(night.recommendations[schema.ITEM_ID].astype(str)) - night.catalog
    similar = (set(night.similar_items[schema.ITEM_ID].astype(str))
               | set(night.similar_items["similar_item_id"].astype(str))) - night.catalog
    found = set(night.search_results[schema.ITEM_ID].astype(str)) - night.catalog
    examples = sorted(recommended | similar | found)[:5]
    return Check("no_items_out_of_catalog", not recommended and not similar and not found,
                 f"{len(recommended)} recommended, {len(similar)} similar-items and {len(found)} search-result ids "
                 f"are not in tonight's catalog of {len(night.catalog)} items"
                 + (f" (e.g. {', '.join(examples)})" if examples else ""))


def check_catalog_coverage(lists: dict[str, list], catalog: frozenset, top_k: int, minimum: float) -> Check:
    # Against what the night could show at most: 3 users x 20 items cannot cover 1,500 items.
    distinct = len({item for listed in lists.values() for item in listed})
    reachable = max(min(len(catalog), len(lists) * top_k), 1)
    coverage = distinct / reachable
    return Check("catalog_coverage", coverage >= minimum,
                 f"{coverage:.3f} {'>=' if coverage >= minimum else '<'} {minimum:.3f} "
                 f"({distinct} distinct items recommended, at most {reachable} possible)")


def check_overlap(name: str, noun: str, tonight: dict, previous: dict | None, minimum: float) -> Check | None:
    """Mean share of a list also in the previous night's list, over keys in both; None: skipped."""
    common = [key for key in tonight if previous and key in previous and tonight[key]]
    if not common:
        return None
    overlap = sum(len(set(tonight[key]) & set(previous[key])) / len(tonight[key]) for key in common) / len(common)
    return Check(name, overlap >= minimum, f"{overlap:.3f} {'>=' if overlap >= minimum else '<'} {minimum:.3f} "
                                           f"({noun} in both nights: {len(common)})")


def content_checks(night: NightLists, previous: dict | None, config: dict) -> list[Check]:
    """Every check on tonight's lists (previous: {kind: lists} of the live version, or None)."""
    settings, top_k = config["serving_store"], config["top_k"]
    users, items = lists_of(night.recommendations, USER), lists_of(night.similar_items, ITEM)
    checks = [check_full_user_lists(users, top_k),
              check_full_item_lists(items, night.catalog, settings["min_similar_items"]),
              check_in_catalog(night),
              check_catalog_coverage(users, night.catalog, top_k, settings["min_catalog_coverage"]),
              check_overlap("overlap_with_previous", "users", users, previous and previous[USER],
                            settings["min_overlap_with_previous"]),
              check_overlap("similar_items_overlap_with_previous", "items", items, previous and previous[ITEM],
                            settings["min_overlap_with_previous"])]
    return [check for check in checks if check is not None]


def check_written(store, version: str, night: NightLists) -> Check:
    expected = {kind: frame[LIST_COLUMNS[kind][1]].nunique() for kind, frame in night.frames().items()}
    stored = store.list_counts(version)
    return Check("written_version_complete", stored == expected,
                 f"{store.description} holds {stored[USER]} user, {stored[ITEM]} item and {stored[QUERY]} search "
                 f"lists of {version}, expected {expected[USER]}, {expected[ITEM]} and {expected[QUERY]}")


# --- The protocol ----------------------------------------------------------------------------

def next_version(stores, ds: str) -> str:
    """v<yyyymmdd>_<n>, n one more than any publication of ds in any store."""
    day = ds.replace("-", "")
    taken = [version_publication(record["version"])[1] for store in stores for record in store.versions()
             if version_publication(record["version"])[0] == day]
    return version_name(ds, max(taken, default=0) + 1)


def previous_lists(store, live: str | None) -> dict | None:
    """The lists of store's live version (live), or None when nothing is live."""
    if live is None:
        return None
    return {kind: store.read_all(live, kind) for kind in (USER, ITEM)}


def later_live_versions(stores, lives: list, ds: str) -> list[str]:
    """The live versions (lives: one per store, None where nothing is live) published by
    nights later than ds."""
    day = ds.replace("-", "")
    return [f"{store.description}: {live}" for store, live in zip(stores, lives)
            if live is not None and version_publication(live)[0] > day]


def publish(stores, night: NightLists, ds: str, config: dict) -> dict:
    """Write, check, switch, prune (module docstring); returns what it did."""
    live_before = [store.live_version() for store in stores]  # read once: the night's only publisher
    later = later_live_versions(stores, live_before, ds)
    if later:  # a backfilled (or very late) night: the shop keeps the newer lists
        return {"version": None, "previous_version": None, "checks": [], "dropped": {},
                "skipped": f"a later night's lists are live ({'; '.join(later)}): an older night never "
                           f"replaces them (its lists stay in the lake)"}
    version = next_version(stores, ds)
    previous_version = live_before[0]
    previous = previous_lists(stores[0], previous_version)
    written = []
    try:
        for store in stores:
            written.append(store)  # before writing: a store that fails half-way is cleaned up too
            store.write_version(version, ds, night.frames())
        checks = content_checks(night, previous, config) + [check_written(store, version, night) for store in stores]
        failed = [check for check in checks if not check.passed]
        if failed:
            raise ServingCheckError("; ".join(check.message() for check in failed)
                                    + f" - version {version} dropped, {previous_version or 'nothing'} stays live")
    except BaseException:
        drop_quietly(written, version)
        raise
    switched = []
    for store in stores:
        try:
            store.switch(version)
        except ServingStoreError as error:
            raise PartialSwitchError(f"{error} - {switch_back(switched, live_before, version)}") from error
        switched.append(store)
    dropped = {store.description: prune(store, config["serving_store"]["versions_kept"]) for store in stores}
    return {"version": version, "previous_version": previous_version,
            "checks": [check.message() for check in checks], "dropped": dropped}


def switch_back(switched, live_before: list, version: str) -> str:
    """Point the stores that already switched to version back at the version each served
    before (the first len(switched) of live_before), so that every store serves yesterday's
    lists again; returns what each store serves now, for the task's error."""
    back, stuck = [], []
    for store, before in zip(switched, live_before):
        try:
            if before is None:
                raise ServingStoreError("no version was live before")
            store.switch(before)
            back.append(f"{store.description} back to {before}")
        except ServingStoreError as error:
            stuck.append(f"{store.description} ({error})")
    return (f"switched {'; '.join(back) or 'no store'}"
            + (f"; {version} stays live in {'; '.join(stuck)}" if stuck else f"; {version} is live nowhere"))


def drop_quietly(stores, version: str) -> None:
    """Drop a version that must not go live; a store that fails here keeps it as an unlisted
    leftover (never live), which the next successful publication prunes."""
    for store in stores:
        try:
            store.drop(version)
        except ServingStoreError as error:
            print(f"publish_serving: could not drop {version}: {error}")


def prune(store, versions_kept: int) -> list[str]:
    """Keep the live version and the versions_kept - 1 latest that were live before it."""
    live = store.live_version()
    records = store.versions()
    were_live = [record["version"] for record in records if record["switched_at"] and record["version"] != live]
    keep = {live, *were_live[-(versions_kept - 1):]}  # config: versions_kept >= 2
    dropped = [record["version"] for record in records if record["version"] not in keep]
    for version in dropped:
        store.drop(version)
    return dropped


def run(night: Night) -> dict:
    """Publish night ds's lists into every configured serving store."""
    config, ds = night.config, night.ds
    lists = read_night_lists(config, ds)
    try:
        stores = open_stores(config)
    except ServingStoreError as error:
        raise ServingStoreError(f"publish_serving {ds}: {error} - nothing written, yesterday's version "
                                f"stays live") from error
    try:
        result = publish(stores, lists, ds, config)
    except PartialSwitchError as error:
        raise PartialSwitchError(f"publish_serving {ds}: {error}") from error
    except ServingStoreError as error:
        raise ServingStoreError(f"publish_serving {ds}: {error} - nothing switched, yesterday's version "
                                f"stays live") from error
    finally:
        close_all(stores)
    if result["version"] is None:
        print(f"publish_serving {ds}: nothing published: {result['skipped']}")
        return result
    for line in result["checks"]:
        print(f"publish_serving {ds}: {line}")
    print(f"publish_serving {ds}: {result['version']} is live in {', '.join(config['serving_store']['targets'])} "
          f"(before: {result['previous_version'] or 'nothing'}); dropped {result['dropped']}")
    return result
