"""The synthetic clickstream: deterministic, schema-exact, dirty at the planted counts, learnable.

The checks here re-derive every planted defect from the raw lines with their own rules
(not with the generator's code), so a generator that mislabels its dirt fails them.
"""

import collections
import dataclasses
import datetime as dt
import gzip
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from devtools import generate
from jobs.common import schema
from devtools.generate import generate_clickstream, main

END_DATE = "2026-11-27"
DAYS = 4
DATES = ["2026-11-24", "2026-11-25", "2026-11-26", "2026-11-27"]
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
DOUBLE_CLICK_WINDOW_MS = 2000  # the cleaners' default double_click_s


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lake")
    generate_clickstream(str(root), END_DATE, DAYS, scale="tiny", seed=7)
    return root


def landed_lines(lake: Path, dataset: str, date: str) -> list[str]:
    lines = []
    for part in sorted((lake / dataset / f"dt={date}").glob("*.jsonl.gz")):
        with gzip.open(part, "rt", encoding="utf-8") as handle:
            lines += handle.read().splitlines()
    return lines


def summary_of(lake: Path, date: str) -> dict:
    return json.loads((lake / schema.LANDING_EVENTS / f"dt={date}" / "_SUMMARY.json").read_text())


def catalog_of(lake: Path, date: str) -> dict[str, dict]:
    return {row[schema.ITEM_ID]: row for row in map(json.loads, landed_lines(lake, schema.LANDING_CATALOG, date))}


def epoch_ms(iso_text: str) -> int:
    moment = dt.datetime.strptime(iso_text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    return round(moment.timestamp() * 1000)


def parsed_time(record: dict):
    text = record.get(schema.EVENT_TIME)
    if not isinstance(text, str) or not ISO_MS.match(text):
        return None
    try:
        return epoch_ms(text)
    except ValueError:  # e.g. hour 25 matches the pattern but is no time
        return None


def row_defect(record: dict, date: str):
    """The one defect a row (already valid JSON) can carry on its own, or None."""
    if record.get(schema.EVENT_TYPE) not in schema.EVENT_TYPES:
        return schema.REASON_UNKNOWN_EVENT_TYPE
    is_item_event = record[schema.EVENT_TYPE] in schema.ITEM_EVENT_TYPES
    if record.get(schema.USER_ID) is None or (is_item_event and record.get(schema.ITEM_ID) is None):
        return schema.REASON_MISSING_KEY
    time_ms = parsed_time(record)
    if time_ms is None:
        return schema.REASON_BAD_TIMESTAMP
    if time_ms >= epoch_ms(f"{date}T00:00:00.000Z") + 86_400_000:
        return schema.REASON_FUTURE_TIMESTAMP
    if is_item_event and record[schema.PRICE] < 0:
        return schema.REASON_BAD_PRICE
    return None


def classify_day(lines: list[str], date: str, bot_users: set[str]):
    """Count each defect kind by the cleaning rules; return (counts, the valid genuine records)."""
    counts = collections.Counter()
    seen_lines, passed = {}, []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            counts[schema.REASON_MALFORMED] += 1
            continue
        kind = row_defect(record, date)
        if kind:
            counts[kind] += 1
        elif record[schema.EVENT_ID] in seen_lines:
            assert seen_lines[record[schema.EVENT_ID]] == line, "a repeated event_id must be an exact duplicate"
            counts[schema.REASON_DUPLICATE] += 1
        else:
            seen_lines[record[schema.EVENT_ID]] = line
            passed.append(record)
    # Double clicks: the same user, item and type again within the window, after deduplication.
    valid, last_seen = [], {}
    for record in sorted(passed, key=parsed_time):
        key = (record[schema.USER_ID], record[schema.ITEM_ID], record[schema.EVENT_TYPE])
        time_ms = parsed_time(record)
        if key in last_seen and time_ms - last_seen[key] <= DOUBLE_CLICK_WINDOW_MS:
            counts[schema.REASON_DOUBLE_CLICK] += 1
        else:
            valid.append(record)
        last_seen[key] = time_ms
    counts[schema.REASON_BOT] = sum(r[schema.USER_ID] in bot_users for r in valid)
    return counts, [r for r in valid if r[schema.USER_ID] not in bot_users]


@pytest.fixture(scope="module")
def clean_days(lake) -> dict:
    """Per date: (defect counts found by the rules above, valid genuine records)."""
    days = {}
    for date in DATES:
        bots = set(summary_of(lake, date)["bot_users"])
        days[date] = classify_day(landed_lines(lake, schema.LANDING_EVENTS, date), date, bots)
    return days


def test_same_arguments_give_identical_bytes_and_another_seed_differs(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate_clickstream(str(tmp_path / name), "2026-01-02", 2, scale="tiny", seed=seed)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files_a) == 2 * 3  # per date: one events part, _SUMMARY.json, catalog
    for relative in files_a:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes(), relative
    events = Path(schema.LANDING_EVENTS, "dt=2026-01-02", "events-00000.jsonl.gz")
    assert (tmp_path / "a" / events).read_bytes() != (tmp_path / "c" / events).read_bytes()


def test_rerun_replaces_only_the_generated_dates(tmp_path):
    generate_clickstream(str(tmp_path), "2026-01-02", 2, scale="tiny", seed=3)
    stale = tmp_path / schema.LANDING_EVENTS / "dt=2026-01-02" / "events-00099.jsonl.gz"
    stale.write_bytes(b"left over from an older run")
    other_date = tmp_path / schema.LANDING_EVENTS / "dt=2025-12-01"
    other_date.mkdir()
    generate_clickstream(str(tmp_path), "2026-01-02", 1, scale="tiny", seed=3)
    assert not stale.exists()
    assert other_date.is_dir()
    assert (tmp_path / schema.LANDING_EVENTS / "dt=2026-01-01" / "events-00000.jsonl.gz").exists()


def test_a_day_streams_one_part_file_per_user_shard(tmp_path, monkeypatch):
    # Shards of 100 users turn the 300 tiny users into 3 parts, as the large scale does.
    monkeypatch.setitem(generate.SCALES, "tiny", dataclasses.replace(generate.SCALES["tiny"], users_per_part=100))
    progress = []
    generate_clickstream(str(tmp_path), "2026-01-02", 1, scale="tiny", seed=3, log=progress.append)
    assert [line.split(":")[0] for line in progress[:3]] == [f"  2026-01-02 part {n}/3" for n in (1, 2, 3)]
    users_per_part = []
    for number in range(3):
        part = tmp_path / schema.LANDING_EVENTS / "dt=2026-01-02" / f"events-{number:05d}.jsonl.gz"
        with gzip.open(part, "rt") as handle:
            records = [json.loads(line) for line in handle if line.startswith('{"') and line.rstrip().endswith("}")]
        users_per_part.append({r.get(schema.USER_ID) for r in records} - {None})
    assert not users_per_part[0] & users_per_part[1] and not users_per_part[1] & users_per_part[2]
    summary = summary_of(tmp_path, "2026-01-02")
    assert summary["parts"] == 3 and len(summary["bot_users"]) == len(set(summary["bot_users"])) == 3


def test_valid_lines_have_exactly_the_raw_fields_and_types(clean_days):
    for date, (_, records) in clean_days.items():
        assert len(records) > 2000, date  # tiny: ~3.5k genuine events a day
        for record in records:
            assert tuple(record) == schema.RAW_EVENT_FIELDS
            assert re.fullmatch(r"u\d{6}", record[schema.USER_ID])
            assert isinstance(record[schema.SESSION_ID], str) and record[schema.SESSION_ID]
            if record[schema.EVENT_TYPE] == schema.SEARCH:
                assert record[schema.ITEM_ID] is None and record[schema.PRICE] is None
                assert re.fullmatch(r"[a-z]+( [a-z]+)*", record[schema.QUERY])
            else:
                assert re.fullmatch(r"i\d{5}", record[schema.ITEM_ID]) and record[schema.QUERY] is None
                assert isinstance(record[schema.PRICE], float) and record[schema.PRICE] > 0
        assert {r[schema.EVENT_TYPE] for r in records} == set(schema.EVENT_TYPES)


def test_defects_are_found_at_exactly_the_planted_counts(lake, clean_days):
    for date, (found, _) in clean_days.items():
        summary = summary_of(lake, date)
        assert summary["lines"] == len(landed_lines(lake, schema.LANDING_EVENTS, date))
        assert dict(found) == {kind: n for kind, n in summary["defects"].items() if n}, date
        for kind, planted in summary["defects"].items():
            assert planted > 0, f"{date}: no {kind} planted"
        # Dirt stays a minority: 3-6% of the lines.
        assert 0.03 <= summary["defect_lines"] / summary["lines"] <= 0.06, date


def test_timestamps_fall_in_the_partition_day_except_planted_future_ones(lake):
    for date in DATES:
        midnight = epoch_ms(f"{date}T00:00:00.000Z")
        future = 0
        for line in landed_lines(lake, schema.LANDING_EVENTS, date):
            try:
                time_ms = parsed_time(json.loads(line))
            except json.JSONDecodeError:
                continue
            if time_ms is None:
                continue
            assert time_ms >= midnight, line
            if time_ms >= midnight + 86_400_000:
                # Over an hour past the day's end: no clock-skew allowance can excuse it.
                assert time_ms >= midnight + 86_400_000 + 3_600_000, line
                future += 1
        assert future == summary_of(lake, date)["defects"][schema.REASON_FUTURE_TIMESTAMP]


def test_bots_exceed_100_events_in_a_calendar_minute_and_people_never_do(lake):
    for date in DATES:
        per_minute = collections.Counter()
        for line in landed_lines(lake, schema.LANDING_EVENTS, date):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record.get(schema.EVENT_TIME), str):
                per_minute[(record.get(schema.USER_ID), record[schema.EVENT_TIME][:16])] += 1
        busiest = collections.defaultdict(int)
        for (user, _), count in per_minute.items():
            busiest[user] = max(busiest[user], count)
        bots = set(summary_of(lake, date)["bot_users"])
        assert bots and {user for user, count in busiest.items() if count > 100} == bots
        # People stay far below the denoise default of 60 a minute: the 3 s minimum gap allows
        # 20 genuine events a minute, plus the odd duplicate or double click.
        assert max(count for user, count in busiest.items() if user not in bots) <= 25


def test_catalog_covers_every_item_event_and_grows_with_new_items(lake, clean_days):
    previous = set()
    for date in DATES:
        catalog = catalog_of(lake, date)
        for row in catalog.values():
            assert tuple(row) == schema.CATALOG_FIELDS
            assert re.fullmatch(r"c\d{2}", row[schema.CATEGORY]) and re.fullmatch(r"b\d{3}", row[schema.BRAND])
            assert row[schema.PRICE] > 0 and re.fullmatch(r"[a-z]+( [a-z]+){2,4}", row[schema.TITLE])
        referenced = {r[schema.ITEM_ID] for r in clean_days[date][1] if r[schema.ITEM_ID]}
        assert referenced <= set(catalog)
        assert previous <= set(catalog)
        previous = set(catalog)
    first, last = catalog_of(lake, DATES[0]), catalog_of(lake, DATES[-1])
    new_items = set(last) - set(first)
    assert len(new_items) >= 3, "some items appear during the window (cold start)"
    seen_last_day = {r[schema.ITEM_ID] for r in clean_days[DATES[-1]][1]}
    assert new_items & seen_last_day, "new items get traffic"


def item_sequences(clean_days, dates) -> dict[str, list[tuple[int, str, str]]]:
    """Per user: (time, item, date) of item events, with consecutive repeats of an item collapsed."""
    events = collections.defaultdict(list)
    for date in dates:
        for record in clean_days[date][1]:
            if record[schema.ITEM_ID]:
                events[record[schema.USER_ID]].append((parsed_time(record), record[schema.ITEM_ID], date))
    collapsed = {}
    for user, rows in events.items():
        rows.sort()
        collapsed[user] = [row for i, row in enumerate(rows) if i == 0 or row[1] != rows[i - 1][1]]
    return collapsed


def test_last_item_successors_beat_popularity_by_far(clean_days):
    """Planted habits: "most frequent successor of the last item" doubles popularity's hit rate@20."""
    sequences = item_sequences(clean_days, DATES)
    train_pairs, test_pairs = [], []
    for rows in sequences.values():
        for (_, before, _), (_, after, date) in zip(rows, rows[1:]):
            (test_pairs if date == DATES[-1] else train_pairs).append((before, after))
    popularity = collections.Counter(after for _, after in train_pairs)
    successors = collections.defaultdict(collections.Counter)
    for before, after in train_pairs:
        successors[before][after] += 1
    by_popularity = [item for item, _ in popularity.most_common()]

    def top20(last_item):
        # Most frequent successors first, then the popular items not already listed.
        ranked = [item for item, _ in successors[last_item].most_common(20)]
        return (ranked + [item for item in by_popularity[:40] if item not in ranked])[:20]

    hit_popularity = sum(after in by_popularity[:20] for _, after in test_pairs) / len(test_pairs)
    hit_successor = sum(after in top20(before) for before, after in test_pairs) / len(test_pairs)
    print(f"hit@20 popularity {hit_popularity:.3f} successor {hit_successor:.3f}")
    assert len(test_pairs) > 1500
    assert hit_popularity > 0.1  # popularity is a real (if weak) signal ...
    assert hit_successor >= 2 * hit_popularity  # ... the last item is a much stronger one


def test_attributes_carry_signal(lake, clean_days):
    """Consecutive items share a category far above chance; brands set the price level."""
    catalog = catalog_of(lake, DATES[-1])
    category = {item: row[schema.CATEGORY] for item, row in catalog.items()}
    pairs = [(a[1], b[1]) for rows in item_sequences(clean_days, DATES).values() for a, b in zip(rows, rows[1:])]
    same_category = sum(category[a] == category[b] for a, b in pairs) / len(pairs)
    shares = collections.Counter(category[b] for _, b in pairs)
    chance = sum((n / len(pairs)) ** 2 for n in shares.values())  # two independent draws agreeing
    assert same_category >= 3 * chance
    # Title words (all but brand and adjective) belong to one category each.
    word_categories = collections.defaultdict(set)
    for row in catalog.values():
        for word in row[schema.TITLE].split()[-2:]:
            word_categories[word].add(row[schema.CATEGORY])
    assert all(len(categories) == 1 for categories in word_categories.values())
    # log price varies less within a brand than across the catalog.
    log_prices = collections.defaultdict(list)
    for row in catalog.values():
        log_prices[row[schema.BRAND]].append(math.log(row[schema.PRICE]))
    everything = [p for prices in log_prices.values() for p in prices]
    within = [p - sum(prices) / len(prices) for prices in log_prices.values() for p in prices]
    assert _std(within) < 0.5 * _std(everything)


def _std(values):
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def test_cli_prints_one_line_per_day(tmp_path, capsys):
    assert main(["--lake", str(tmp_path), "--end-date", "2026-03-02", "--days", "2", "--seed", "1",
                 "--dirt-rate", f"{schema.REASON_BOT}=0"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line[:10] for line in printed] == ["2026-03-01", "2026-03-02"]
    assert summary_of(tmp_path, "2026-03-02")["defects"][schema.REASON_BOT] == 0


@pytest.mark.parametrize("arguments, message", [
    (dict(end_date="2026-13-01"), "YYYY-MM-DD"),
    (dict(days=0), "days must be a positive integer"),
    (dict(scale="huge"), "unknown scale 'huge'"),
    (dict(seed=-1), "seed must be a non-negative integer"),
    (dict(dirt_rates={"hover": 0.1}), "unknown dirt kind 'hover'"),
    (dict(dirt_rates={schema.REASON_BOT: 0.9}), "must be a number between 0 and 0.2"),
])
def test_bad_arguments_are_named(tmp_path, arguments, message):
    call = dict(lake_root=str(tmp_path), end_date="2026-01-02", days=1) | arguments
    with pytest.raises(ValueError, match=re.escape(message)):
        generate_clickstream(**call)
    assert not (tmp_path / "landing").exists()


def test_searchers_open_results_of_their_favourite_brand_and_price_level_more_often_than_the_shop_shows_them():
    # The same word searched by every user of a shard: all see the shop's one list for it; the
    # choice model must move the opened results, away from the top of that list, towards each
    # user's favourite brand and price level.
    scale = generate.SCALES["small"]
    world = generate.build_world(scale, seed=7, days=1)
    samplers = generate.day_samplers(world, 0)
    shard = generate.user_shard(scale, seed=7, part=0)
    users = np.repeat(np.arange(shard.n_users), 4)
    words = np.full(len(users), world.category_words[0, 0])
    shown = samplers.shop_results[words[0]]
    opened = generate.search_choice(world, samplers, shard, users, words, np.random.default_rng(0))
    listed = np.broadcast_to(shown, (len(users), len(shown)))  # every user sees the same list

    def favourite_share(items):
        return np.mean(shard.favourite_brand[users[:, None], world.category[items]] == world.brand[items])

    def price_distance(items):
        return np.mean(np.abs(world.price_z[items] - shard.price_level[users][:, None]))

    assert np.isin(opened, shown).all()
    assert favourite_share(opened[:, None]) > favourite_share(listed) + 0.15
    assert price_distance(opened[:, None]) < price_distance(listed) - 0.1
    assert np.mean(opened == shown[0]) > np.mean(opened == shown[-1])  # position bias


def test_the_shop_shows_a_word_s_most_popular_items_in_the_catalog_best_first():
    # Items 0-3, all holding word 0; item 2 is not in the catalog yet. Popularity 0.1, 0.4, 0.9,
    # 0.4: the list is 1, 3 (equal popularity: by item), 0, then -1 past the last listed item.
    world = SimpleNamespace(n_items=4, words=["kelano", "other", "third"],
                            title_words=np.array([[0, 1], [0, 1], [0, 2], [2, 0]]),
                            popularity=np.array([0.1, 0.4, 0.9, 0.4]))
    results = generate.shop_results(world, np.array([True, True, False, True]))
    assert results[0].tolist() == [1, 3, 0] + [-1] * (generate.SHOWN_RESULTS - 3)
    assert results[1].tolist()[:3] == [1, 0, -1] and results[2].tolist()[:2] == [3, -1]


def test_search_queries_are_sometimes_cut_short_or_misspelled():
    rng = np.random.default_rng(0)
    typed = [generate.typed_word("kelano", rng) for _ in range(2000)]
    partial = sum(word != "kelano" and "kelano".startswith(word) for word in typed) / len(typed)
    swapped = sum(len(word) == 6 and word != "kelano" and sorted(word) == sorted("kelano") for word in typed) / len(typed)
    assert abs(partial - generate.P_PARTIAL_QUERY) < 0.03 and abs(swapped - generate.P_TYPO_QUERY) < 0.02


def one_days_views():
    """(world, shard, viewed items, their viewers, the same viewers shuffled) of a small day."""
    scale = generate.SCALES["small"]
    world = generate.build_world(scale, seed=7, days=1)
    shard = generate.user_shard(scale, seed=7, part=0)
    events = generate.simulate_day(world, generate.day_samplers(world, 0), shard, 0,
                                   np.random.default_rng(1), np.random.default_rng(2))
    items = events.item >= 0
    item, user = events.item[items], events.user[items] - shard.first_user
    return world, shard, item, user, np.random.default_rng(3).permutation(user)


def test_users_browse_their_favourite_brands_more_than_other_users_do():
    # The same items, judged by their own viewers' favourite brands and by random other users':
    # only a brand-loyal browser makes the first share clearly larger.
    world, shard, item, user, others = one_days_views()

    def favourite_share(users):
        return np.mean(shard.favourite_brand[users, world.category[item]] == world.brand[item])

    assert favourite_share(user) > favourite_share(others) + 0.1  # 0.41 against 0.27 when written


def test_users_browse_nearer_their_price_level_than_other_users_do():
    # The same items, judged by the distance to their own viewers' price levels and to random
    # other users': fresh picks near one's price level make the first distance clearly smaller.
    world, shard, item, user, others = one_days_views()

    def price_distance(users):
        return np.mean(np.abs(world.price_z[item] - shard.price_level[users]))

    assert price_distance(user) < price_distance(others) - 0.04  # 1.063 against 1.119 when written (0.025 before)


def revisit_share(revisit_rng) -> float:
    """Share of a small day's views, from a session's third on, that return to an item the
    session viewed before the previous one (a comparison or a return)."""
    scale = generate.SCALES["small"]
    world = generate.build_world(scale, seed=7, days=1)
    events = generate.simulate_day(world, generate.day_samplers(world, 0), generate.user_shard(scale, seed=7, part=0),
                                   0, np.random.default_rng(1), np.random.default_rng(2), revisit_rng)
    views = events.type_code == generate.VIEW_CODE
    by_session = pd.Series(events.item[views]).groupby(events.session[views], sort=False).agg(list)
    returns = [sequence[step] in sequence[:step - 1] and sequence[step] != sequence[step - 1]
               for sequence in by_session for step in range(2, len(sequence))]
    return float(np.mean(returns))


def test_sessions_return_to_items_they_viewed_before():
    # Successor walks alone come back now and then (0.11 when written); the revisits add
    # about P_REVISIT of the steps (0.33 when written).
    without, with_revisits = revisit_share(None), revisit_share(np.random.default_rng(4))
    assert without < 0.15
    assert with_revisits > without + 0.7 * generate.P_REVISIT
