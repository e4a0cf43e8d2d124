"""Generated product searches with a click model: what bench/search.py develops and measures search on.

The catalog is devtools.generate's world: every category owns a few words and brands, titles
read "<brand> [adjective] <word> <word>", prices sit around each brand's level, popularity
is Zipf-like. On top of it:

- Users have category tastes (Dirichlet, as in the clickstream), a favourite brand in each
  category (drawn by the brands' market share, so tastes differ from the best sellers), and
  a price level (the price z-score within a category they are most at ease with). Their
  browsing history (HISTORY_VIEWS items, drawn from those tastes) is what the nightly models
  know of them; the ranker's personal features come from it alone. NEW_USER_SHARE of the
  users have no history at all (new visitors).
- A search: the user picks a category by taste and types one of its words; with
  P_BRAND_QUERY their favourite brand before it; the word is sometimes cut short
  (P_PARTIAL, a prefix of 3+ letters) or has two neighbouring letters swapped (P_TYPO).
- The shop shows its current ranking: the BM25 order of the lexical index. Position p
  (1-based) is examined with probability p ** -EXAMINATION_DECAY, down to SHOWN results.
  An examined item is opened with probability sigmoid(attractiveness):
      OPEN_BIAS + BRAND_WEIGHT [favourite brand of its category]
      - PRICE_WEIGHT |price z - the user's level| + POPULARITY_WEIGHT log(popularity share)
      + MATCH_WEIGHT [its title holds the intended word]
  An opened item is added to the cart with probability CART_GIVEN_OPEN x sigmoid(a), a
  carted one bought with BUY_GIVEN_CART x sigmoid(a). Grades: 1 opened, 2 carted, 3 bought.
So two people typing the same word want different items (brand, price level): a ranker
that knows the person has something real to learn, and position bias is in the logs, as in
a shop's.

Deterministic: the same arguments give the same searches.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from devtools.generate import TASTE_CONCENTRATION, Scale, World, build_world, typed_word

HISTORY_VIEWS = 30
NEW_USER_SHARE = 0.2  # users without any history: personal features have nothing to say about them
P_BRAND_QUERY = 0.25
P_PARTIAL = 0.15
P_TYPO = 0.1
SHOWN = 40
EXAMINATION_DECAY = 0.7
OPEN_BIAS = -1.5
BRAND_WEIGHT = 2.0
PRICE_WEIGHT = 1.5
POPULARITY_WEIGHT = 0.3
MATCH_WEIGHT = 1.0
CART_GIVEN_OPEN = 0.5
BUY_GIVEN_CART = 0.5
HISTORY_BRAND_SHARE = 0.6  # a history view is of the favourite brand this often, else any brand's item

# A catalog of 100,000 items for the benchmark; "tiny" for tests.
SEARCH_SCALES = {
    "tiny": Scale(n_users=200, n_items=400, n_categories=8, brands_per_category=4,
                  sessions_per_user_day=1.0, users_per_part=200),
    "bench": Scale(n_users=20_000, n_items=100_000, n_categories=250, brands_per_category=10,
                   sessions_per_user_day=1.0, users_per_part=20_000),
}


@dataclasses.dataclass
class SearchUsers:
    taste: np.ndarray  # [users, categories] category tastes (rows sum to 1)
    favourite_brand: np.ndarray  # [users, categories] brand id
    price_level: np.ndarray  # [users] preferred price z-score


@dataclasses.dataclass
class SearchLog:
    world: World
    users: SearchUsers
    history: pd.DataFrame  # user, item: the browsing history (before day 0)
    searches: pd.DataFrame  # search_id, day, user, query, intended_word
    interactions: pd.DataFrame  # search_id, item, grade (1 opened, 2 carted, 3 bought)


def catalog_frame(world: World) -> pd.DataFrame:
    """The world's catalog as rows: item (position), title, category and brand names, price_z, popularity."""
    category_names = [world.words[world.category_words[c, 0]] for c in range(len(world.category_words))]
    return pd.DataFrame({"item": np.arange(world.n_items), "title": world.title,
                         "category": [category_names[c] for c in world.category],
                         "brand": [world.brand_names[b] for b in world.brand],
                         "category_id": world.category, "brand_id": world.brand,
                         "price_z": world.price_z, "popularity": world.popularity / world.popularity.sum()})


def make_users(world: World, scale: Scale, rng: np.random.Generator) -> SearchUsers:
    n_categories = len(world.category_words)
    taste = rng.dirichlet(np.full(n_categories, TASTE_CONCENTRATION), size=scale.n_users)
    favourite = np.empty((scale.n_users, n_categories), dtype=np.int64)
    for category in range(n_categories):
        brands, counts = np.unique(world.brand[world.category == category], return_counts=True)
        favourite[:, category] = rng.choice(brands, size=scale.n_users, p=counts / counts.sum())
    return SearchUsers(taste, favourite, rng.normal(0.0, 1.0, scale.n_users))


def browsing_history(world: World, users: SearchUsers, rng: np.random.Generator) -> pd.DataFrame:
    """HISTORY_VIEWS items per user: a category by taste, then the favourite brand's item (often) near the price level."""
    n_users = len(users.price_level)
    user = np.repeat(np.arange(n_users), HISTORY_VIEWS)
    category = _sample_rows(users.taste[user], rng)
    favourite = users.favourite_brand[user, category]
    items = np.empty(len(user), dtype=np.int64)
    returning = rng.random(n_users) >= NEW_USER_SHARE
    by_category = {c: np.flatnonzero(world.category == c) for c in np.unique(category)}
    loyal = rng.random(len(user)) < HISTORY_BRAND_SHARE
    for row in range(len(user)):
        pool = by_category[category[row]]
        if loyal[row]:
            own = pool[world.brand[pool] == favourite[row]]
            pool = own if len(own) else pool
        closeness = np.exp(-PRICE_WEIGHT * np.abs(world.price_z[pool] - users.price_level[user[row]]))
        items[row] = rng.choice(pool, p=closeness / closeness.sum())
    keep = returning[user]
    return pd.DataFrame({"user": user[keep], "item": items[keep]})


def simulate_searches(world: World, users: SearchUsers, index, days: int, searches_per_day: int,
                      rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(searches, interactions) of `days` days; index: the LexicalIndex that orders what is shown."""
    n_users = len(users.price_level)
    popularity_share = world.popularity / world.popularity.sum()
    searches, interactions = [], []
    for day in range(days):
        for number in range(searches_per_day):
            search_id = day * searches_per_day + number
            user = int(rng.integers(n_users))
            category = int(_sample_rows(users.taste[[user]], rng)[0])
            word = world.words[int(rng.choice(world.category_words[category]))]
            typed = typed_word(word, rng, P_PARTIAL, P_TYPO)
            brand = world.brand_names[users.favourite_brand[user, category]]
            query = f"{brand} {typed}" if rng.random() < P_BRAND_QUERY else typed
            searches.append((search_id, day, user, query, word))
            shown, _ = index.search(query, SHOWN)
            if not len(shown):
                continue
            examined = rng.random(len(shown)) < np.arange(1, len(shown) + 1, dtype=np.float64) ** -EXAMINATION_DECAY
            attraction = _sigmoid(OPEN_BIAS
                                  + BRAND_WEIGHT * (world.brand[shown] == users.favourite_brand[user, world.category[shown]])
                                  - PRICE_WEIGHT * np.abs(world.price_z[shown] - users.price_level[user])
                                  + POPULARITY_WEIGHT * np.log(popularity_share[shown] * world.n_items)
                                  + MATCH_WEIGHT * np.array([word in world.title[item].split() for item in shown]))
            opened = examined & (rng.random(len(shown)) < attraction)
            carted = opened & (rng.random(len(shown)) < CART_GIVEN_OPEN * attraction)
            bought = carted & (rng.random(len(shown)) < BUY_GIVEN_CART * attraction)
            grade = opened.astype(int) + carted + bought
            interactions += [(search_id, int(item), int(g)) for item, g in zip(shown, grade) if g > 0]
    return (pd.DataFrame(searches, columns=["search_id", "day", "user", "query", "intended_word"]),
            pd.DataFrame(interactions, columns=["search_id", "item", "grade"]))


def generate_search_log(scale_name: str, days: int, searches_per_day: int, seed: int, index_builder) -> tuple:
    """(SearchLog, index): the world, its users and history, the index built by index_builder(catalog), the searches."""
    scale = SEARCH_SCALES[scale_name]
    world = build_world(scale, seed, days=1)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7_001]))
    users = make_users(world, scale, rng)
    history = browsing_history(world, users, rng)
    index = index_builder(catalog_frame(world))
    searches, interactions = simulate_searches(world, users, index, days, searches_per_day, rng)
    return SearchLog(world, users, history, searches, interactions), index


def _sample_rows(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One column index per row of a row-stochastic matrix."""
    cumulative = np.cumsum(weights, axis=1)
    draws = rng.random(len(weights))[:, None] * cumulative[:, -1:]
    return np.minimum((cumulative < draws).sum(axis=1), weights.shape[1] - 1)


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))
