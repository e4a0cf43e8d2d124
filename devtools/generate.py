"""A seeded synthetic clickstream, landed exactly like the tracking system's daily export.

    python -m devtools.generate --lake DIR --end-date 2026-11-27 --days 14 --scale small --seed 42

For each of the `days` dates D ending at --end-date it writes

    <lake>/landing/events/dt=D/events-00000.jsonl.gz ...  gzip JSON lines, one event a line
    <lake>/landing/events/dt=D/_SUMMARY.json             ground truth: lines and planted defects
    <lake>/landing/catalog/dt=D/catalog.jsonl.gz         the catalog snapshot of that day

The generative story (every number below is a named constant in this module):

1. World. Items belong to categories of varying size. Every category owns a few words
   (pseudo-words such as "kelano") and a few brands; a brand sits at a price level around
   its category's base price, and an item's price scatters around its brand's level.
   A title is "<brand> [adjective] <category word> <category word>", so title text
   identifies the category and the brand. Item popularity is Zipf-like over a random
   ranking. Each category has a complementary category (think phone -> phone case).
2. Habits. Every item has SUCCESSORS_PER_ITEM likely next items, mostly in its own
   category, otherwise in the complementary one. This sparse transition structure is
   what makes "what comes next" depend on the last item rather than on popularity alone.
3. Users. Each user has Dirichlet category tastes (concentrated on a few categories), an
   activity level (Gamma) and a price sensitivity (Beta). Each day a user opens a Poisson
   number of sessions at diurnal times. A session picks a category from the user's taste
   and browses a geometric number of items: each next item is a successor of the current
   one, a fresh pick in the session's category (shown two, price-sensitive users take the
   cheaper, the others the one nearer their price level), a search result, or - rarely - a
   switch to another category of their taste. From the third step on, a session goes back
   with P_REVISIT to an item it viewed before (not the one it is on; the nearer back, the
   likelier), as shoppers compare items and return to one, and continues from there: about
   a third of the views from the third on return to an earlier item (a tenth without the
   revisits, from successor walks that come back).
   Some sessions start with a search whose query is a category word (sometimes with a
   brand); the first viewed items then contain that word in their title.
4. Search. The shop answers a word with one list that day, the same for every searcher:
   its SHOWN_RESULTS most popular items holding the word, best first (as a shop's own
   ranking does; a fresh random sample per search would put in the logs a noise no ranker
   could see). The user opens the result of highest utility:
       - RESULT_POSITION_DECAY log(position) + FAVOURITE_BRAND_WEIGHT [the user's favourite
       brand in the item's category] - PRICE_LEVEL_WEIGHT |price_z - the user's price level|
       + Gumbel noise,
   so results are opened with a position bias and by the user's own tastes: every user has
   a favourite brand per category (drawn by the brands' market share) and a price level
   (standard normal, in price_z units). The same choice picks the later search results of
   the session. Queries are sometimes cut short (P_PARTIAL_QUERY, a prefix of 3+ letters)
   or have two neighbouring letters swapped (P_TYPO_QUERY). The favourite brand shows in
   browsing too: with P_FAVOURITE_BRAND_PICK, the two items a fresh pick chooses from are
   both of the user's favourite brand there (by popularity), and the price level decides
   between them as above, so a user's history says which brands and prices they like -
   what a personalized search ranker can learn from.
5. Funnel. Every viewed item may be clicked, a clicked one added to the cart and a carted
   one purchased, with decreasing probabilities that drop further for expensive items and
   price-sensitive users. Consecutive events of a user are at least MIN_GAP_S apart, so a
   genuine event can never look like a double click.
6. Cold start. A few items (NEW_ITEM_FRACTION) are introduced during the generated window;
   a day's catalog holds only the items introduced on or before that day and events only
   reference those. New items are never planted as successors of launch items, so their
   traffic comes from category browsing and search - an attribute model can place them.
7. Dirt, planted at DEFAULT_DIRT_RATES (a fraction of the genuine events, each kind keyed
   by the quarantine reason code of jobs.common.schema that the cleaning stages should give it):
   exact duplicate lines, double clicks (a new event_id for the same user, item and type
   at most 1 s later), malformed JSON (truncated or single-quoted), a missing user_id or
   item_id, an unparseable event_time, a negative price, an unknown event type, a
   timestamp days in the future, and bot users who emit 100+ events within one calendar
   minute. Every defective line carries exactly one defect, so the counts in _SUMMARY.json
   are exactly what a correct cleaner quarantines. Total dirt is about 4-6% of the lines.

Determinism: the same arguments give byte-identical files (gzip mtime 0, seeded numpy
streams per world, user shard and date). New items are introduced relative to the first
generated date, so land a whole history with one call. Re-running replaces only the
generated date folders, each atomically. Memory is bounded by one part file: users are
processed in shards of `users_per_part`, one gzip part each.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gzip
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jobs.common import schema
from jobs.common.lake import days_back, partition_path, replace_partition


@dataclasses.dataclass(frozen=True)
class Scale:
    n_users: int
    n_items: int
    n_categories: int
    brands_per_category: int
    sessions_per_user_day: float  # mean of the users' activity distribution
    users_per_part: int  # one gzip part file per shard of this many users


SCALES = {
    # ~3.5-4k genuine events a day: the whole pipeline runs on 7 tiny days in minutes.
    "tiny": Scale(n_users=300, n_items=200, n_categories=10, brands_per_category=3,
                  sessions_per_user_day=1.3, users_per_part=300),
    # ~30k events a day: the 14-day demo.
    "small": Scale(n_users=3_000, n_items=1_500, n_categories=20, brands_per_category=5,
                   sessions_per_user_day=1.2, users_per_part=3_000),
    # A 100,000-item catalog browsed by few users (~6k events a day): a night whose served
    # models rank as many items as a mid-sized shop's (bench/search_latency.py).
    "wide": Scale(n_users=500, n_items=100_000, n_categories=40, brands_per_category=12,
                  sessions_per_user_day=1.2, users_per_part=500),
    # ~1.1M events a day (14 days = 15M+) in parts of ~230k events: benchmarks.
    "large": Scale(n_users=100_000, n_items=20_000, n_categories=40, brands_per_category=12,
                   sessions_per_user_day=1.2, users_per_part=20_000),
}

# --- World ---------------------------------------------------------------------------------
WORDS_PER_CATEGORY = 6
MIN_ITEMS_PER_CATEGORY = 8  # room for distinct successors even in the tiny world
ZIPF_EXPONENT = 0.8  # popularity of the item of rank r is proportional to r ** -0.8
SUCCESSORS_PER_ITEM = 3
SUCCESSOR_WEIGHTS = (0.55, 0.30, 0.15)
SUCCESSOR_SAME_CATEGORY = 0.7  # otherwise the successor is in the complementary category
# Successors lean only mildly towards popular items, so a popularity ranking cannot
# stand in for the transition structure.
SUCCESSOR_POPULARITY_POWER = 0.3
NEW_ITEM_FRACTION = 0.05
MAX_NEW_SHARE_OF_CATEGORY = 0.25
CATEGORY_PRICE_RANGE = (5.0, 300.0)  # log-uniform base price of a category
BRAND_PRICE_SPREAD = 0.5  # std of log(brand level / category base)
ITEM_PRICE_SPREAD = 0.2  # std of log(item price / brand level)
ADJECTIVES = ("classic", "compact", "soft", "premium", "eco", "mini", "pro", "smart", "vintage",
              "light", "deluxe", "basic", "bold", "slim", "fresh", "cozy")
P_TITLE_ADJECTIVE = 0.7

# --- Users and sessions --------------------------------------------------------------------
TASTE_CONCENTRATION = 0.3  # Dirichlet alpha: most users care about two or three categories
ACTIVITY_SHAPE = 2.0  # Gamma shape of sessions per day: some users are much busier
MAX_SESSIONS_PER_DAY = 8
MEAN_STEPS_PER_SESSION = 6.0
MAX_STEPS_PER_SESSION = 30
P_SEARCH_SESSION = 0.3
P_QUERY_WITH_BRAND = 0.3
# How the next item of a session is chosen (the rest: a fresh pick in the session category).
P_NEXT_SUCCESSOR = 0.55
P_NEXT_SEARCH_RESULT = 0.25  # only in search sessions
P_NEXT_SWITCH_CATEGORY = 0.08
# Revisits: from its third step on, a session goes back to an item it viewed before (not the
# one it is on) with P_REVISIT, the way shoppers compare two items or return to one; k
# steps back (k >= 2) with weight REVISIT_DECAY ** (k - 2), further back than the first
# item counting as the first. The session then continues from the revisited item.
P_REVISIT = 0.25
REVISIT_DECAY = 0.5
# Search results (the choice model in the module docstring) and brand loyalty in browsing.
# Strong enough for a user's brand to show in their history and to matter in their
# choices: at 1.5 and 0.4, a search ranker told each user's true favourite brands and price
# level gained 2 NDCG@10 points, and one reading them from histories nothing (README, "Search").
SHOWN_RESULTS = 10
RESULT_POSITION_DECAY = 0.7
FAVOURITE_BRAND_WEIGHT = 3.0
PRICE_LEVEL_WEIGHT = 1.0
P_PARTIAL_QUERY = 0.1
P_TYPO_QUERY = 0.05
P_FAVOURITE_BRAND_PICK = 0.7
P_DISCOUNT = 0.1
DISCOUNT = 0.9
# Hours of the day weighted by traffic (UTC): quiet nights, lunch and evening peaks.
DIURNAL_WEIGHTS = (2, 1, 1, 1, 1, 2, 3, 5, 6, 7, 8, 9, 10, 9, 8, 8, 8, 9, 10, 12, 12, 10, 7, 4)

# --- Funnel and timing ---------------------------------------------------------------------
P_CLICK_GIVEN_VIEW = 0.35
P_CART_GIVEN_CLICK = 0.30
P_PURCHASE_GIVEN_CART = 0.45
PRICE_EFFECT = 0.8  # conversion factor exp(-PRICE_EFFECT * sensitivity * price_z)
MIN_GAP_S = 3.0  # > the cleaners' double-click window (2 s), so genuine events never collide
MEAN_BROWSE_GAP_S = 25.0  # extra seconds before the next viewed item
MEAN_FUNNEL_GAP_S = 10.0  # extra seconds before a click / cart / purchase

# --- Dirt ----------------------------------------------------------------------------------
DEFAULT_DIRT_RATES = {
    schema.REASON_DUPLICATE: 0.005,
    schema.REASON_DOUBLE_CLICK: 0.005,
    schema.REASON_MALFORMED: 0.002,
    schema.REASON_MISSING_KEY: 0.002,
    schema.REASON_BAD_TIMESTAMP: 0.002,
    schema.REASON_BAD_PRICE: 0.002,
    schema.REASON_UNKNOWN_EVENT_TYPE: 0.002,
    schema.REASON_FUTURE_TIMESTAMP: 0.002,
    schema.REASON_BOT: 0.02,  # bot lines per genuine event
}
MAX_DIRT_RATE = 0.2
DOUBLE_CLICK_MAX_DELAY_S = 1.0
DUPLICATE_MAX_DELAY_S = 120.0  # a retried delivery lands a little later in the file
# A planted future time is 1-3 days after the event, and always over an hour past the end
# of the partition day: far beyond any clock-skew allowance (clean.max_future_skew_s).
FUTURE_DAYS = (1, 3)
FUTURE_MIN_PAST_DAY_END_MS = 3_600_000
BOT_MIN_EVENTS_PER_MINUTE = 110  # "hundreds a minute": well above any bot threshold
BOT_TYPICAL_BURST = 200
UNKNOWN_EVENT_TYPES = ("hover", "scroll", "wishlist", "share")
COLLECTOR_ERROR_LINE = "<html><body><h1>502 Bad Gateway</h1></body></html>"

EVENTS_PART = "events-{part:05d}.jsonl.gz"
CATALOG_FILE = "catalog.jsonl.gz"
SUMMARY_FILE = "_SUMMARY.json"
MS_PER_DAY = 86_400_000
VIEW_CODE, CLICK_CODE = schema.EVENT_TYPES.index(schema.VIEW), schema.EVENT_TYPES.index(schema.CLICK)
SEARCH_CODE = schema.EVENT_TYPES.index(schema.SEARCH)
FUNNEL_CODES = tuple(schema.EVENT_TYPES.index(t) for t in schema.ITEM_EVENT_TYPES)  # by depth

# Independent random streams, so a user shard or a date can be regenerated on its own.
STREAM_WORLD, STREAM_USERS, STREAM_DAY = 1, 2, 3
# Brand and price tastes and the choices they drive draw from streams of their own.
STREAM_TASTES, STREAM_TASTE_DAY = 4, 5
# Revisits draw from their own stream too: adding them left every other draw as it was.
STREAM_REVISIT_DAY = 6


# ===========================================================================================
# Weighted sampling within groups (categories, query words), vectorised
# ===========================================================================================
class GroupSampler:
    """Draws one member of each requested group, with probability proportional to its weight.

    Members are stored group after group with one running cumulative weight, so a draw is
    a single searchsorted for any number of requests. Zero-weight members are never drawn.
    """

    def __init__(self, group_of_member: np.ndarray, member: np.ndarray, weight: np.ndarray, n_groups: int):
        order = np.argsort(group_of_member, kind="stable")
        self.member = member[order]
        self.cumulative = np.cumsum(weight[order].astype(np.float64))
        counts = np.bincount(group_of_member, minlength=n_groups)
        self.end = np.cumsum(counts)
        self.start = self.end - counts
        before = np.concatenate([[0.0], self.cumulative])
        self.mass_before = before[self.start]
        self.mass = before[self.end] - self.mass_before

    def sample(self, groups: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        target = self.mass_before[groups] + uniform * self.mass[groups]
        position = np.searchsorted(self.cumulative, target, side="right")
        # Float round-off can land one past the group's last member.
        position = np.clip(position, self.start[groups], self.end[groups] - 1)
        return self.member[position]


# ===========================================================================================
# The world: catalog and habits (one per seed and scale)
# ===========================================================================================
@dataclasses.dataclass
class World:
    category: np.ndarray  # per item
    brand: np.ndarray  # per item
    price: np.ndarray  # per item, catalog price
    price_z: np.ndarray  # per item: log price standardised within its category
    title: list[str]  # per item
    title_words: np.ndarray  # per item: the two category word ids in its title
    popularity: np.ndarray  # per item: Zipf weight
    intro_day: np.ndarray  # per item: day offset (0 = first generated day) it appears
    successors: np.ndarray  # per item: SUCCESSORS_PER_ITEM item indices
    category_words: np.ndarray  # [n_categories, WORDS_PER_CATEGORY] word ids
    words: list[str]  # word id -> text
    brand_names: list[str]

    @property
    def n_items(self) -> int:
        return len(self.category)


def pseudo_words(rng: np.random.Generator, count: int, reserved: set[str]) -> list[str]:
    """Distinct pronounceable words ("kelano", "zorvik") not in reserved."""
    consonants, vowels = list("bdfgklmnprstvz"), list("aeiou")
    words: list[str] = []
    taken = set(reserved)
    while len(words) < count:
        syllables = rng.integers(2, 4)
        word = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(syllables))
        if rng.random() < 0.3:
            word += rng.choice(consonants)
        if word not in taken:
            taken.add(word)
            words.append(word)
    return words


def assign_categories(rng: np.random.Generator, scale: Scale) -> np.ndarray:
    """Category of each item: uneven sizes, but never below MIN_ITEMS_PER_CATEGORY."""
    spare = scale.n_items - scale.n_categories * MIN_ITEMS_PER_CATEGORY
    if spare < 0:
        raise ValueError(f"scale needs at least {MIN_ITEMS_PER_CATEGORY} items per category")
    sizes = MIN_ITEMS_PER_CATEGORY + rng.multinomial(spare, rng.dirichlet(np.full(scale.n_categories, 5.0)))
    return rng.permutation(np.repeat(np.arange(scale.n_categories), sizes))


def zipf_popularity(rng: np.random.Generator, n_items: int) -> np.ndarray:
    rank = rng.permutation(n_items) + 1
    return rank.astype(np.float64) ** -ZIPF_EXPONENT


def complementary_categories(rng: np.random.Generator, n_categories: int) -> np.ndarray:
    """Pair the categories up at random (with an odd count, the last one joins the first pair)."""
    order = rng.permutation(n_categories)
    complement = np.empty(n_categories, dtype=np.int64)
    complement[order[0::2][: n_categories // 2]] = order[1::2][: n_categories // 2]
    complement[order[1::2][: n_categories // 2]] = order[0::2][: n_categories // 2]
    if n_categories % 2:
        complement[order[-1]] = order[0]
    return complement


def item_prices(rng: np.random.Generator, category: np.ndarray, brand: np.ndarray, scale: Scale):
    low, high = np.log(CATEGORY_PRICE_RANGE)
    category_level = rng.uniform(low, high, scale.n_categories)
    n_brands = scale.n_categories * scale.brands_per_category
    brand_level = category_level[np.arange(n_brands) // scale.brands_per_category]
    brand_level = brand_level + rng.normal(0.0, BRAND_PRICE_SPREAD, n_brands)
    log_price = brand_level[brand] + rng.normal(0.0, ITEM_PRICE_SPREAD, len(brand))
    price = np.round(np.exp(log_price), 2)
    price_z = np.zeros(len(price))
    for c in range(scale.n_categories):  # standardise within the category: "expensive for a phone"
        members = category == c
        values = np.log(price[members])
        price_z[members] = (values - values.mean()) / (values.std() + 1e-9)
    return price, price_z


def item_titles(rng, category, brand, category_words, words, brand_names):
    """Titles "<brand> [adjective] <word> <word>" with two distinct words of the item's category."""
    n_items = len(category)
    picks = np.argsort(rng.random((n_items, WORDS_PER_CATEGORY)), axis=1)[:, :2]
    title_words = category_words[category[:, None], picks]
    adjectives = rng.integers(0, len(ADJECTIVES), n_items)
    with_adjective = rng.random(n_items) < P_TITLE_ADJECTIVE
    titles = []
    for i in range(n_items):
        parts = [brand_names[brand[i]]]
        if with_adjective[i]:
            parts.append(ADJECTIVES[adjectives[i]])
        parts += [words[title_words[i, 0]], words[title_words[i, 1]]]
        titles.append(" ".join(parts))
    return titles, title_words


def introduction_days(rng: np.random.Generator, category: np.ndarray, days: int) -> np.ndarray:
    """Day offset each item enters the catalog: 0 for most, later for a few new items.

    New items are taken from every category in proportion, never more than
    MAX_NEW_SHARE_OF_CATEGORY of one, so each category keeps enough launch items.
    """
    intro = np.zeros(len(category), dtype=np.int64)
    if days < 2:
        return intro
    for c in np.unique(category):
        members = np.flatnonzero(category == c)
        n_new = min(int(round(NEW_ITEM_FRACTION * len(members) + rng.random() - 0.5)),
                    int(MAX_NEW_SHARE_OF_CATEGORY * len(members)))
        new = rng.choice(members, size=max(n_new, 0), replace=False)
        intro[new] = rng.integers(1, days, size=len(new))
    return intro


def plant_successors(rng, category, complement, popularity, intro_day) -> np.ndarray:
    """SUCCESSORS_PER_ITEM distinct likely next items per item, among the launch items."""
    n_items = len(category)
    launch = intro_day == 0
    sampler = GroupSampler(category[launch], np.flatnonzero(launch),
                           popularity[launch] ** SUCCESSOR_POPULARITY_POWER, len(complement))
    # Draw spare candidates per item, then keep the first distinct ones that are not the item.
    n_candidates = 4 * SUCCESSORS_PER_ITEM
    same = rng.random((n_items, n_candidates)) < SUCCESSOR_SAME_CATEGORY
    target_category = np.where(same, category[:, None], complement[category][:, None])
    candidates = sampler.sample(target_category.ravel(), rng.random(target_category.size))
    candidates = candidates.reshape(n_items, n_candidates)
    successors = np.empty((n_items, SUCCESSORS_PER_ITEM), dtype=np.int64)
    for item in range(n_items):
        chosen = []
        for candidate in candidates[item]:
            if candidate != item and candidate not in chosen:
                chosen.append(candidate)
            if len(chosen) == SUCCESSORS_PER_ITEM:
                break
        while len(chosen) < SUCCESSORS_PER_ITEM:  # unlucky draws: pad from the own category
            extra = sampler.sample(category[[item]], rng.random(1))[0]
            if extra != item and extra not in chosen:
                chosen.append(extra)
        successors[item] = chosen
    return successors


def build_world(scale: Scale, seed: int, days: int) -> World:
    rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM_WORLD]))
    n_brands = scale.n_categories * scale.brands_per_category
    vocabulary = pseudo_words(rng, scale.n_categories * WORDS_PER_CATEGORY + n_brands, set(ADJECTIVES))
    words = vocabulary[: scale.n_categories * WORDS_PER_CATEGORY]
    brand_names = vocabulary[len(words):]
    category_words = np.arange(len(words)).reshape(scale.n_categories, WORDS_PER_CATEGORY)

    category = assign_categories(rng, scale)
    # Brands are tied to a category; within it a few brands carry most items.
    brand_in_category = rng.choice(scale.brands_per_category, size=scale.n_items,
                                   p=_normalised(np.arange(1, scale.brands_per_category + 1) ** -1.0))
    brand = category * scale.brands_per_category + brand_in_category
    price, price_z = item_prices(rng, category, brand, scale)
    title, title_words = item_titles(rng, category, brand, category_words, words, brand_names)
    popularity = zipf_popularity(rng, scale.n_items)
    intro_day = introduction_days(rng, category, days)
    complement = complementary_categories(rng, scale.n_categories)
    successors = plant_successors(rng, category, complement, popularity, intro_day)
    return World(category, brand, price, price_z, title, title_words, popularity, intro_day,
                 successors, category_words, words, brand_names)


def _normalised(weights: np.ndarray) -> np.ndarray:
    return weights / weights.sum()


@dataclasses.dataclass
class DaySamplers:
    """Samplers restricted to the items in the catalog on one day."""
    item_in_category: GroupSampler
    item_of_brand: GroupSampler
    word_in_category: GroupSampler
    available: np.ndarray  # item indices in the catalog
    # [n_words, SHOWN_RESULTS]: the shop's results for each word that day, the same list for
    # every searcher: its most popular items holding the word, best first; -1 past the last.
    shop_results: np.ndarray


def day_samplers(world: World, day_offset: int) -> DaySamplers:
    in_catalog = world.intro_day <= day_offset
    weight = world.popularity * in_catalog
    n_categories, n_words = world.category_words.shape[0], len(world.words)
    by_category = GroupSampler(world.category, np.arange(world.n_items), weight, n_categories)
    by_brand = GroupSampler(world.brand, np.arange(world.n_items), weight, len(world.brand_names))
    word_item = np.repeat(np.arange(world.n_items), 2)  # an item holds both words of its title
    # Query words are drawn by the traffic of the items they would find.
    word_mass = np.bincount(world.title_words.ravel(), weights=weight[word_item], minlength=n_words)
    word_category = np.repeat(np.arange(n_categories), WORDS_PER_CATEGORY)
    by_word_category = GroupSampler(word_category, world.category_words.ravel(),
                                    word_mass[world.category_words.ravel()], n_categories)
    return DaySamplers(by_category, by_brand, by_word_category, np.flatnonzero(in_catalog),
                       shop_results(world, in_catalog))


def shop_results(world: World, in_catalog: np.ndarray) -> np.ndarray:
    """[n_words, SHOWN_RESULTS]: per word, its SHOWN_RESULTS most popular items in the catalog
    (ties by item), -1 where a word holds fewer."""
    word_item = np.repeat(np.arange(world.n_items), 2)
    word = world.title_words.ravel()
    word, word_item = word[in_catalog[word_item]], word_item[in_catalog[word_item]]  # a title's two words differ
    order = np.lexsort((word_item, -world.popularity[word_item], word))
    word, word_item = word[order], word_item[order]
    rank = np.arange(len(word)) - np.searchsorted(word, word)  # place within its word's run
    results = np.full((len(world.words), SHOWN_RESULTS), -1, dtype=np.int64)
    top = rank < SHOWN_RESULTS
    results[word[top], rank[top]] = word_item[top]
    return results


# ===========================================================================================
# Users (one shard of users per part file; the same shard every day)
# ===========================================================================================
@dataclasses.dataclass
class UserShard:
    first_user: int  # global index of the shard's first user
    taste_cumulative: np.ndarray  # [n_users, n_categories]
    activity: np.ndarray  # mean sessions per day
    price_sensitivity: np.ndarray  # 0 (indifferent) .. 1 (always takes the cheaper)
    favourite_brand: np.ndarray  # [n_users, n_categories] brand id (search choices)
    price_level: np.ndarray  # price_z the user is most at ease with (search choices)

    @property
    def n_users(self) -> int:
        return len(self.activity)


def user_shard(scale: Scale, seed: int, part: int) -> UserShard:
    rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM_USERS, part]))
    first = part * scale.users_per_part
    n_users = min(scale.users_per_part, scale.n_users - first)
    taste = rng.dirichlet(np.full(scale.n_categories, TASTE_CONCENTRATION), size=n_users)
    activity = rng.gamma(ACTIVITY_SHAPE, scale.sessions_per_user_day / ACTIVITY_SHAPE, n_users)
    sensitivity = rng.beta(2.0, 2.0, n_users)
    taste_rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM_TASTES, part]))
    # Favourite brands by market share: brand k of a category carries items in proportion to 1 / (k + 1).
    share = _normalised(np.arange(1, scale.brands_per_category + 1) ** -1.0)
    in_category = taste_rng.choice(scale.brands_per_category, size=(n_users, scale.n_categories), p=share)
    favourite = np.arange(scale.n_categories) * scale.brands_per_category + in_category
    return UserShard(first, np.cumsum(taste, axis=1), activity, sensitivity, favourite,
                     taste_rng.normal(0.0, 1.0, n_users))


def n_parts(scale: Scale) -> int:
    return -(-scale.n_users // scale.users_per_part)


def user_id(index) -> str:
    return f"u{index + 1:06d}"


def item_id(index) -> str:
    return f"i{index + 1:05d}"


# ===========================================================================================
# One day of genuine behaviour for one user shard
# ===========================================================================================
@dataclasses.dataclass
class Sessions:
    user: np.ndarray  # shard-local user index, sessions sorted by user then start
    start_ms: np.ndarray  # ms since the day's midnight
    end_ms: np.ndarray  # the user's next session start (or midnight): events stop before it
    category: np.ndarray
    n_steps: np.ndarray  # items browsed
    query_word: np.ndarray  # word id, -1 when the session does not start with a search


@dataclasses.dataclass
class Events:
    """Genuine events of one shard and day, one entry per event, in time order."""
    user: np.ndarray  # global user index
    session: np.ndarray  # shard-local session number
    type_code: np.ndarray  # index into schema.EVENT_TYPES
    item: np.ndarray  # item index, -1 for search
    time_ms: np.ndarray  # epoch milliseconds
    price: np.ndarray  # price seen, nan for search
    query: list  # query text for search events, None otherwise

    def __len__(self) -> int:
        return len(self.user)


def sample_taste(shard: UserShard, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One category per user from their taste (inverse CDF on the cumulative rows)."""
    uniform = rng.random(len(users))[:, None]
    categories = (shard.taste_cumulative[users] < uniform).sum(axis=1)
    return np.minimum(categories, shard.taste_cumulative.shape[1] - 1)


def plan_sessions(shard: UserShard, samplers: DaySamplers, rng: np.random.Generator) -> Sessions:
    per_user = np.minimum(rng.poisson(shard.activity), MAX_SESSIONS_PER_DAY)
    user = np.repeat(np.arange(shard.n_users), per_user)
    hour = rng.choice(24, size=len(user), p=_normalised(np.asarray(DIURNAL_WEIGHTS, dtype=float)))
    start_ms = ((hour + rng.random(len(user))) * 3_600_000).astype(np.int64)
    order = np.lexsort((start_ms, user))
    user, start_ms = user[order], start_ms[order]
    # A user's sessions never overlap: each one ends where the next begins (or at midnight).
    same_user_next = np.append(user[1:] == user[:-1], False)
    end_ms = np.where(same_user_next, np.append(start_ms[1:], 0), MS_PER_DAY)
    category = sample_taste(shard, user, rng)
    n_steps = np.minimum(rng.geometric(1.0 / MEAN_STEPS_PER_SESSION, len(user)), MAX_STEPS_PER_SESSION)
    searches = rng.random(len(user)) < P_SEARCH_SESSION
    query_word = np.where(searches, samplers.word_in_category.sample(category, rng.random(len(user))), -1)
    return Sessions(user, start_ms, end_ms, category, n_steps, query_word)


def pick_in_category(world, samplers, shard, users, categories, sensitivity, rng, taste_rng) -> np.ndarray:
    """Shown two popularity-weighted items - with P_FAVOURITE_BRAND_PICK both of the user's
    favourite brand in the category, else any of the category's -, price-sensitive users tend
    to take the cheaper, the others the one nearer their price level."""
    first = samplers.item_in_category.sample(categories, rng.random(len(categories)))
    second = samplers.item_in_category.sample(categories, rng.random(len(categories)))
    brand = shard.favourite_brand[users, categories]
    # A brand none of whose items is in today's catalog yet cannot be picked.
    loyal = (taste_rng.random(len(categories)) < P_FAVOURITE_BRAND_PICK) & (samplers.item_of_brand.mass[brand] > 0)
    first = np.where(loyal, samplers.item_of_brand.sample(brand, taste_rng.random(len(categories))), first)
    second = np.where(loyal, samplers.item_of_brand.sample(brand, taste_rng.random(len(categories))), second)
    cheaper = np.where(world.price_z[second] < world.price_z[first], second, first)
    level = shard.price_level[users]
    nearer = np.where(np.abs(world.price_z[second] - level) < np.abs(world.price_z[first] - level), second, first)
    return np.where(rng.random(len(categories)) < sensitivity, cheaper, nearer)


def search_choice(world, samplers, shard, users, words, taste_rng) -> np.ndarray:
    """The result each searching user opens among the shop's results for the word (shop_results):
    the choice model of the module docstring."""
    shown = samplers.shop_results[words]
    position = np.arange(1, SHOWN_RESULTS + 1)[None, :]
    listed = shown >= 0
    item = np.maximum(shown, 0)
    favourite = shard.favourite_brand[users[:, None], world.category[item]] == world.brand[item]
    utility = (-RESULT_POSITION_DECAY * np.log(position) + FAVOURITE_BRAND_WEIGHT * favourite
               - PRICE_LEVEL_WEIGHT * np.abs(world.price_z[item] - shard.price_level[users][:, None])
               + taste_rng.gumbel(size=shown.shape))
    utility[~listed] = -np.inf
    return shown[np.arange(len(words)), np.argmax(utility, axis=1)]


def browse_items(world, samplers, shard, sessions, rng, taste_rng, revisit_rng=None) -> np.ndarray:
    """The items each session views, step by step: [n_sessions, longest session], -1 padded.

    Sessions advance in lockstep, so every step is one vectorised draw for all of them.
    revisit_rng: the stream of the revisits (None: no revisits).
    """
    n_sessions, longest = len(sessions.user), int(sessions.n_steps.max(initial=0))
    items = np.full((n_sessions, longest), -1, dtype=np.int64)
    if n_sessions == 0:
        return items
    category = sessions.category.copy()
    sensitivity = shard.price_sensitivity[sessions.user]
    searched = sessions.query_word >= 0
    results = np.zeros(n_sessions, dtype=np.int64)
    results[searched] = search_choice(world, samplers, shard, sessions.user[searched], sessions.query_word[searched],
                                      taste_rng)
    fresh = pick_in_category(world, samplers, shard, sessions.user, category, sensitivity, rng, taste_rng)
    items[:, 0] = np.where(searched, results, fresh)
    for step in range(1, longest):
        active = np.flatnonzero(sessions.n_steps > step)
        items[active, step] = next_items(world, samplers, shard, sessions, category, sensitivity,
                                         active, items[active, step - 1], rng, taste_rng)
        if revisit_rng is not None and step >= 2:
            items[active, step] = revisited_items(items[active, :step + 1], step, revisit_rng)
    return items


def revisited_items(viewed: np.ndarray, step: int, rng: np.random.Generator) -> np.ndarray:
    """viewed [n, step + 1] (this step's item last) -> this step's items, some replaced by a revisit."""
    steps_back = np.minimum(1 + rng.geometric(1.0 - REVISIT_DECAY, size=len(viewed)), step)  # 2, 3, ...
    earlier = viewed[np.arange(len(viewed)), step - steps_back]
    revisit = (rng.random(len(viewed)) < P_REVISIT) & (earlier != viewed[:, step - 1])
    return np.where(revisit, earlier, viewed[:, step])


def next_items(world, samplers, shard, sessions, category, sensitivity, active, last, rng, taste_rng):
    """One step for the active sessions: successor, search result, category switch or fresh pick."""
    choice = rng.random(len(active))
    searched = sessions.query_word[active] >= 0
    follow = choice < P_NEXT_SUCCESSOR
    result = searched & (choice >= P_NEXT_SUCCESSOR) & (choice < P_NEXT_SUCCESSOR + P_NEXT_SEARCH_RESULT)
    switch = choice >= 1.0 - P_NEXT_SWITCH_CATEGORY
    switched = np.flatnonzero(switch)
    category[active[switched]] = sample_taste(shard, sessions.user[active[switched]], rng)

    slot = rng.choice(SUCCESSORS_PER_ITEM, size=len(active), p=SUCCESSOR_WEIGHTS)
    successor = world.successors[last, slot]
    search_result = np.zeros(len(active), dtype=np.int64)
    chosen = np.flatnonzero(result)
    search_result[chosen] = search_choice(world, samplers, shard, sessions.user[active[chosen]],
                                          sessions.query_word[active[chosen]], taste_rng)
    fresh = pick_in_category(world, samplers, shard, sessions.user[active], category[active], sensitivity[active],
                             rng, taste_rng)
    return np.where(follow, successor, np.where(result, search_result, fresh))


def funnel_depth(world, shard, session_user, item, rng) -> np.ndarray:
    """1 = view only, 2 = clicked, 3 = added to cart, 4 = purchased."""
    sensitivity = shard.price_sensitivity[session_user]
    factor = np.clip(np.exp(-PRICE_EFFECT * sensitivity * world.price_z[item]), 0.25, 2.0)
    clicked = rng.random(len(item)) < np.minimum(P_CLICK_GIVEN_VIEW * factor, 0.95)
    carted = clicked & (rng.random(len(item)) < np.minimum(P_CART_GIVEN_CLICK * factor, 0.95))
    bought = carted & (rng.random(len(item)) < np.minimum(P_PURCHASE_GIVEN_CART * factor, 0.95))
    return 1 + clicked.astype(np.int64) + carted + bought


def simulate_day(world: World, samplers: DaySamplers, shard: UserShard, day_start_ms: int,
                 rng: np.random.Generator, taste_rng: np.random.Generator,
                 revisit_rng: np.random.Generator | None = None) -> Events:
    """Genuine events of one user shard on one day, in time order (brand-loyal picks, search
    choices and query typos drawn from taste_rng; revisits from revisit_rng, None: none)."""
    sessions = plan_sessions(shard, samplers, rng)
    items = browse_items(world, samplers, shard, sessions, rng, taste_rng, revisit_rng)
    session_of_step, step = np.nonzero(items >= 0)  # row-major: by session, then step
    step_item = items[session_of_step, step]
    depth = funnel_depth(world, shard, sessions.user[session_of_step], step_item, rng)
    discounted = rng.random(len(step_item)) < P_DISCOUNT
    step_price = np.round(world.price[step_item] * np.where(discounted, DISCOUNT, 1.0), 2)

    # Item events: a view, then as deep into the funnel as `depth` goes, on the same item.
    repeat = np.repeat(np.arange(len(step_item)), depth)
    level = np.arange(len(repeat)) - np.repeat(np.cumsum(depth) - depth, depth)
    # Search events open their session (position -1, before the first step).
    search_session = np.flatnonzero(sessions.query_word >= 0)
    session = np.concatenate([session_of_step[repeat], search_session])
    position = np.concatenate([step[repeat] * len(FUNNEL_CODES) + level, np.full(len(search_session), -1)])
    type_code = np.concatenate([np.asarray(FUNNEL_CODES)[level], np.full(len(search_session), SEARCH_CODE)])
    item = np.concatenate([step_item[repeat], np.full(len(search_session), -1)])
    price = np.concatenate([step_price[repeat], np.full(len(search_session), np.nan)])
    order = np.lexsort((position, session))
    session, type_code, item, price = session[order], type_code[order], item[order], price[order]

    time_in_day = sessions.start_ms[session] + session_offsets(session, type_code, rng)
    # A session cut short by the user's next session (or by midnight) loses its tail.
    kept = np.flatnonzero(time_in_day < sessions.end_ms[session] - MIN_GAP_S * 1000)
    kept = kept[np.argsort(time_in_day[kept], kind="stable")]
    queries = search_queries(world, sessions, items, rng, taste_rng)
    return Events(user=shard.first_user + sessions.user[session[kept]], session=session[kept],
                  type_code=type_code[kept], item=item[kept], time_ms=day_start_ms + time_in_day[kept],
                  price=price[kept],
                  query=[queries.get(s) if t == SEARCH_CODE else None
                         for s, t in zip(session[kept].tolist(), type_code[kept].tolist())])


def session_offsets(session: np.ndarray, type_code: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Milliseconds from the session start to each event (events sorted by session, then order)."""
    mean_extra_s = np.where(type_code == VIEW_CODE, MEAN_BROWSE_GAP_S, MEAN_FUNNEL_GAP_S)
    gap_ms = np.round((MIN_GAP_S + rng.exponential(mean_extra_s)) * 1000).astype(np.int64)
    first = np.ones(len(session), dtype=bool)
    first[1:] = session[1:] != session[:-1]
    gap_ms[first] = 0  # the first event happens at the session start
    elapsed = np.cumsum(gap_ms)
    # Subtract the running total at each session's first event: offsets restart per session.
    session_base = np.maximum.accumulate(np.where(first, elapsed, 0))
    return elapsed - session_base


def search_queries(world: World, sessions: Sessions, items: np.ndarray, rng: np.random.Generator,
                   taste_rng: np.random.Generator) -> dict:
    """Query text per search session: its word (sometimes cut short or misspelled), sometimes
    after the brand of the first result."""
    searched = np.flatnonzero(sessions.query_word >= 0)
    with_brand = rng.random(len(searched)) < P_QUERY_WITH_BRAND
    queries = {}
    for session, word, brand_too in zip(searched.tolist(), sessions.query_word[searched].tolist(),
                                        with_brand.tolist()):
        text = typed_word(world.words[word], taste_rng)
        if brand_too:
            text = f"{world.brand_names[world.brand[items[session, 0]]]} {text}"
        queries[session] = text
    return queries


def typed_word(word: str, rng: np.random.Generator, p_partial: float = P_PARTIAL_QUERY,
               p_typo: float = P_TYPO_QUERY) -> str:
    """The word as typed: sometimes a prefix of 3+ letters, sometimes two neighbouring letters swapped."""
    draw = rng.random()
    if draw < p_partial and len(word) > 4:
        return word[: int(rng.integers(3, len(word)))]
    if draw < p_partial + p_typo and len(word) > 3:
        at = int(rng.integers(0, len(word) - 1))
        return word[:at] + word[at + 1] + word[at] + word[at + 2:]
    return word


# ===========================================================================================
# Landing one part file: genuine lines, planted dirt and bots
# ===========================================================================================
@dataclasses.dataclass
class LandedPart:
    lines: list[str]  # in file order
    genuine_events: int
    defects: dict[str, int]  # reason code -> planted lines
    bot_users: list[str]


# Per-event defects, in the order targets are drawn; each event gets at most one.
EVENT_DEFECTS = (schema.REASON_DUPLICATE, schema.REASON_DOUBLE_CLICK, schema.REASON_MALFORMED,
                 schema.REASON_MISSING_KEY, schema.REASON_BAD_TIMESTAMP, schema.REASON_BAD_PRICE,
                 schema.REASON_UNKNOWN_EVENT_TYPE, schema.REASON_FUTURE_TIMESTAMP)
DIRT_KINDS = EVENT_DEFECTS + (schema.REASON_BOT,)
# Defects that change a genuine event's line (the others add lines).
IN_PLACE_DEFECTS = tuple(kind for kind in EVENT_DEFECTS
                         if kind not in (schema.REASON_DUPLICATE, schema.REASON_DOUBLE_CLICK))


def iso_times(time_ms: np.ndarray) -> list[str]:
    """ISO-8601 UTC with milliseconds, e.g. 2026-11-27T10:15:03.123Z (vectorised)."""
    text = np.datetime_as_string(np.asarray(time_ms, dtype=np.int64).astype("datetime64[ms]"), unit="ms")
    return [value + "Z" for value in text.tolist()]


def event_record(event_id, time_text, event_type, user, session, item, query, price) -> dict:
    values = (event_id, time_text, event_type, user, session, item, query, price)
    return dict(zip(schema.RAW_EVENT_FIELDS, values))


def genuine_records(events: Events, tag: str) -> list[dict]:
    """One record per genuine event; ids are unique per date and part (tag = 'YYYYMMDD-PP')."""
    items = events.item.tolist()
    prices = events.price.tolist()
    return [event_record(f"e{tag}-{index:07d}", time_text, schema.EVENT_TYPES[code], user_id(user),
                         f"s{tag}-{session:06d}", item_id(item) if item >= 0 else None, query,
                         None if item < 0 else prices[index])
            for index, (time_text, code, user, session, item, query) in enumerate(zip(
                iso_times(events.time_ms), events.type_code.tolist(), events.user.tolist(),
                events.session.tolist(), items, events.query))]


def dirt_targets(events: Events, rates: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Disjoint sets of genuine events to copy or corrupt, one per defect kind."""
    n_events = len(events)
    is_item_event = events.item >= 0
    eligible = {schema.REASON_DOUBLE_CLICK: events.type_code == CLICK_CODE,
                schema.REASON_MISSING_KEY: is_item_event, schema.REASON_BAD_PRICE: is_item_event,
                schema.REASON_UNKNOWN_EVENT_TYPE: is_item_event}
    order = rng.permutation(n_events)
    taken = np.zeros(n_events, dtype=bool)
    targets = {}
    for kind in EVENT_DEFECTS:
        count = int(round(rates[kind] * n_events))
        allowed = eligible.get(kind, np.ones(n_events, dtype=bool))
        chosen = order[allowed[order] & ~taken[order]][:count]
        taken[chosen] = True
        targets[kind] = np.sort(chosen)
    return targets


def corrupt_record(kind: str, record: dict, rng: np.random.Generator) -> None:
    """Give one record exactly one defect of the kind (in place). Malformed JSON is done on the line."""
    if kind == schema.REASON_MISSING_KEY:
        key = schema.USER_ID if rng.random() < 0.5 else schema.ITEM_ID
        if rng.random() < 0.5:
            del record[key]  # the field is absent ...
        else:
            record[key] = None  # ... or explicitly null
    elif kind == schema.REASON_BAD_TIMESTAMP:
        record[schema.EVENT_TIME] = unparseable_time(record[schema.EVENT_TIME], rng)
    elif kind == schema.REASON_BAD_PRICE:
        record[schema.PRICE] = -record[schema.PRICE]
    elif kind == schema.REASON_UNKNOWN_EVENT_TYPE:
        record[schema.EVENT_TYPE] = UNKNOWN_EVENT_TYPES[rng.integers(len(UNKNOWN_EVENT_TYPES))]
    elif kind == schema.REASON_FUTURE_TIMESTAMP:
        ahead_ms = rng.integers(FUTURE_DAYS[0] * MS_PER_DAY + FUTURE_MIN_PAST_DAY_END_MS,
                                FUTURE_DAYS[1] * MS_PER_DAY)
        future = parse_iso_ms(record[schema.EVENT_TIME]) + int(ahead_ms)
        record[schema.EVENT_TIME] = iso_times(np.array([future]))[0]


def unparseable_time(iso_text: str, rng: np.random.Generator) -> str:
    """A timestamp a strict ISO-8601 parser must reject (hour 25, day-first, or free text)."""
    date_part, clock = iso_text[:10], iso_text[11:]
    variants = (f"{date_part}T25{clock[2:]}",
                f"{date_part[8:10]}/{date_part[5:7]}/{date_part[:4]} {clock[:5]}",
                "unknown")
    return variants[rng.integers(len(variants))]


def parse_iso_ms(iso_text: str) -> int:
    return int(np.datetime64(iso_text.rstrip("Z"), "ms").astype(np.int64))


def malformed(line: str, rng: np.random.Generator) -> str:
    """A line no JSON parser accepts, however lenient: cut short, or the collector's error page.

    (Single-quoted JSON would not do: Spark's JSON reader accepts it by default.)
    """
    if rng.random() < 0.8:
        # An object without its closing brace: a buffer flushed mid-line.
        return line[: int(rng.integers(len(line) // 3, len(line) - 1))]
    return COLLECTOR_ERROR_LINE


# One compact encoder for every line (json.dumps with options would build one per call).
LINE_ENCODER = json.JSONEncoder(separators=(",", ":"))


def render(record: dict) -> str:
    return LINE_ENCODER.encode(record)


def bot_events(samplers: DaySamplers, world: World, n_genuine: int, rate: float, first_bot: int,
               day_start_ms: int, tag: str, rng: np.random.Generator) -> tuple[list[dict], list[str]]:
    """Bursts of BOT_MIN_EVENTS_PER_MINUTE+ views and clicks inside one calendar minute per bot.

    A bot never touches the same item twice in a burst, so none of its lines also looks like
    a double click: bot lines are exactly the lines a bot filter removes.
    """
    target_lines = rate * n_genuine
    if target_lines <= 0:
        return [], []
    n_bots = max(1, int(round(target_lines / BOT_TYPICAL_BURST)))
    records, bot_ids = [], []
    for bot_number in range(n_bots):
        burst = int(max(BOT_MIN_EVENTS_PER_MINUTE, target_lines / n_bots) * rng.uniform(0.95, 1.1))
        burst = min(burst, len(samplers.available))
        minute_ms = day_start_ms + int(rng.integers(0, 1440)) * 60_000
        times = iso_times(minute_ms + np.sort(rng.integers(0, 60_000, burst)))
        items = rng.choice(samplers.available, size=burst, replace=False)
        clicks = rng.random(burst) < 0.2
        bot = user_id(first_bot + bot_number)
        bot_ids.append(bot)
        records += [event_record(f"e{tag}-b{len(records) + k:06d}", times[k],
                                 schema.CLICK if clicks[k] else schema.VIEW, bot, f"s{tag}-{bot}",
                                 item_id(items[k]), None, float(world.price[items[k]]))
                    for k in range(burst)]
    return records, bot_ids


def land_part(events: Events, world: World, samplers: DaySamplers, rates: dict, first_bot: int,
              day_start_ms: int, tag: str, rng: np.random.Generator) -> LandedPart:
    """The part file's lines in arrival (time) order, with the dirt planted at `rates`."""
    records = genuine_records(events, tag)
    targets = dirt_targets(events, rates, rng)
    keyed_lines = genuine_lines(records, events, targets, rng)
    keyed_lines += duplicate_lines(records, events, targets[schema.REASON_DUPLICATE], rng)
    keyed_lines += double_click_lines(records, events, targets[schema.REASON_DOUBLE_CLICK],
                                      day_start_ms + MS_PER_DAY - 1, tag, rng)
    bots, bot_ids = bot_events(samplers, world, len(events), rates[schema.REASON_BOT], first_bot,
                               day_start_ms, tag, rng)
    keyed_lines += [(parse_iso_ms(record[schema.EVENT_TIME]), render(record)) for record in bots]
    keyed_lines.sort(key=lambda pair: pair[0])  # stable: equal times keep generation order
    defects = {kind: len(targets[kind]) for kind in EVENT_DEFECTS}
    defects[schema.REASON_BOT] = len(bots)
    return LandedPart([line for _, line in keyed_lines], len(events), defects, bot_ids)


def genuine_lines(records: list[dict], events: Events, targets: dict, rng) -> list[tuple[int, str]]:
    """(arrival ms, line) per genuine event, the in-place defects applied.

    A corrupted event still arrives when it happened: the defect is in its content only.
    """
    in_place = {int(index): kind for kind in IN_PLACE_DEFECTS for index in targets[kind]}
    keyed_lines = []
    for index, record in enumerate(records):
        kind = in_place.get(index)
        if kind is None:
            line = render(record)
        elif kind == schema.REASON_MALFORMED:
            line = malformed(render(record), rng)
        else:
            corrupt_record(kind, record, rng)
            line = render(record)
        keyed_lines.append((int(events.time_ms[index]), line))
    return keyed_lines


def duplicate_lines(records, events, sources, rng) -> list[tuple[int, str]]:
    """A retried delivery: the same line, byte for byte, arriving up to two minutes later."""
    delays = rng.integers(0, int(DUPLICATE_MAX_DELAY_S * 1000), len(sources))
    return [(int(events.time_ms[index] + delay), render(records[index]))
            for index, delay in zip(sources.tolist(), delays.tolist())]


def double_click_lines(records, events, sources, last_ms: int, tag: str, rng) -> list[tuple[int, str]]:
    """The same click again, 50 ms to 1 s later, with its own event_id."""
    delays = rng.integers(50, int(DOUBLE_CLICK_MAX_DELAY_S * 1000) + 1, len(sources))
    # Clamped to the day's last millisecond, so a double click never leaves its partition day.
    again_ms = np.minimum(events.time_ms[sources] + delays, last_ms)
    keyed_lines = []
    for number, (index, time_ms, time_text) in enumerate(zip(sources.tolist(), again_ms.tolist(),
                                                             iso_times(again_ms))):
        again = dict(records[index], **{schema.EVENT_ID: f"e{tag}-d{number:06d}", schema.EVENT_TIME: time_text})
        keyed_lines.append((time_ms, render(again)))
    return keyed_lines


# ===========================================================================================
# Files
# ===========================================================================================
def write_gzip_lines(path: Path, lines, batch: int = 50_000) -> None:
    """Gzip JSON lines with mtime 0 and no file name in the header: same lines, same bytes."""
    # Level 6 (not gzip's default 9): about twice as fast for a few percent more bytes.
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                compresslevel=6) as out:
        for start in range(0, len(lines), batch):
            out.write(("\n".join(lines[start:start + batch]) + "\n").encode("utf-8"))


def catalog_lines(world: World, available: np.ndarray) -> list[str]:
    return [render(dict(zip(schema.CATALOG_FIELDS, (
                item_id(i), f"c{world.category[i] + 1:02d}", f"b{world.brand[i] + 1:03d}",
                float(world.price[i]), world.title[i]))))
            for i in available.tolist()]


def day_start_epoch_ms(date: str) -> int:
    midnight = dt.datetime.fromisoformat(date).replace(tzinfo=dt.timezone.utc)
    return int(midnight.timestamp()) * 1000


def write_day(world: World, scale: Scale, scale_name: str, seed: int, rates: dict, date: str,
              day_offset: int, lake_root: str, log: Callable[[str], None]) -> dict:
    """Land one date: its event part files with _SUMMARY.json, then its catalog snapshot."""
    lake = {"lake_root": lake_root}
    samplers = day_samplers(world, day_offset)
    day_start_ms = day_start_epoch_ms(date)
    date_ordinal = dt.date.fromisoformat(date).toordinal()
    defects = dict.fromkeys(DIRT_KINDS, 0)
    lines = genuine = 0
    bot_users: list[str] = []
    parts = n_parts(scale)
    with replace_partition(partition_path(lake, schema.LANDING_EVENTS, date)) as staging:
        for part in range(parts):
            rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM_DAY, date_ordinal, part]))
            taste_rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM_TASTE_DAY, date_ordinal, part]))
            revisit_rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM_REVISIT_DAY, date_ordinal, part]))
            events = simulate_day(world, samplers, user_shard(scale, seed, part), day_start_ms, rng, taste_rng,
                                  revisit_rng)
            # Bot ids follow the genuine user ids, a block per part so parts never share a bot.
            first_bot = scale.n_users + part * 1000
            landed = land_part(events, world, samplers, rates, first_bot, day_start_ms,
                               f"{date.replace('-', '')}-{part:02d}", rng)
            write_gzip_lines(Path(staging) / EVENTS_PART.format(part=part), landed.lines)
            lines, genuine = lines + len(landed.lines), genuine + landed.genuine_events
            defects = {kind: defects[kind] + landed.defects[kind] for kind in DIRT_KINDS}
            bot_users += landed.bot_users
            if parts > 1:
                log(f"  {date} part {part + 1}/{parts}: {len(landed.lines):,} lines")
        summary = {"date": date, "scale": scale_name, "seed": seed, "lines": lines, "genuine_events": genuine,
                   "parts": parts, "defects": defects, "defect_lines": sum(defects.values()),
                   "bot_users": bot_users, "catalog_items": len(samplers.available),
                   "new_items": int((world.intro_day == day_offset).sum()) if day_offset else 0}
        Path(staging, SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    with replace_partition(partition_path(lake, schema.LANDING_CATALOG, date)) as staging:
        write_gzip_lines(Path(staging) / CATALOG_FILE, catalog_lines(world, samplers.available))
    return summary


# ===========================================================================================
# Entry points
# ===========================================================================================
def resolve_dirt_rates(overrides: dict | None) -> dict:
    rates = dict(DEFAULT_DIRT_RATES)
    for kind, rate in (overrides or {}).items():
        if kind not in rates:
            raise ValueError(f"unknown dirt kind {kind!r}; known kinds: {', '.join(DIRT_KINDS)}")
        if not isinstance(rate, (int, float)) or not 0.0 <= rate <= MAX_DIRT_RATE:
            raise ValueError(f"dirt rate {kind}={rate!r} must be a number between 0 and {MAX_DIRT_RATE}")
        rates[kind] = float(rate)
    return rates


def generate_clickstream(lake_root: str, end_date: str, days: int, scale: str = "tiny", seed: int = 42,
                         dirt_rates: dict | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Land `days` dates of synthetic events and catalog ending at end_date; return the summaries.

    Returns {"lake_root", "end_date", "days", "scale", "seed", "dirt_rates",
    "per_day": {date: the date's _SUMMARY.json content}}.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    if not isinstance(days, int) or days < 1:
        raise ValueError(f"days must be a positive integer, got {days!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    dates = days_back(end_date, days)  # validates end_date
    rates = resolve_dirt_rates(dirt_rates)
    log = log or (lambda message: None)
    world = build_world(SCALES[scale], seed, days)
    per_day = {}
    for day_offset, date in enumerate(dates):
        summary = write_day(world, SCALES[scale], scale, seed, rates, date, day_offset, lake_root, log)
        per_day[date] = summary
        log(f"{date}: {summary['lines']:,} lines in {summary['parts']} part(s), "
            f"{summary['defect_lines']:,} planted defects ({summary['defect_lines'] / summary['lines']:.1%}), "
            f"{summary['catalog_items']:,} catalog items ({summary['new_items']} new)")
    return {"lake_root": lake_root, "end_date": end_date, "days": days, "scale": scale, "seed": seed,
            "dirt_rates": rates, "per_day": per_day}


def parse_dirt_rate(text: str) -> tuple[str, float]:
    kind, _, rate = text.partition("=")
    try:
        return kind, float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KIND=RATE (e.g. {schema.REASON_BOT}=0.01), got {text!r}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", required=True, help="lake root folder (landing/ is written inside it)")
    parser.add_argument("--end-date", required=True, help="last date to generate, YYYY-MM-DD")
    parser.add_argument("--days", type=int, default=14, help="number of dates ending at --end-date")
    parser.add_argument("--scale", default="tiny", choices=tuple(SCALES))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dirt-rate", type=parse_dirt_rate, action="append", default=[], metavar="KIND=RATE",
                        help=f"override a dirt rate (fraction of genuine events); kinds: {', '.join(DIRT_KINDS)}")
    args = parser.parse_args(argv)
    try:
        generate_clickstream(args.lake, args.end_date, args.days, scale=args.scale, seed=args.seed,
                             dirt_rates=dict(args.dirt_rate), log=print)
    except ValueError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
