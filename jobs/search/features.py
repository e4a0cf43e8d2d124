"""One row of ranking features per (search, candidate item): query-item, item and personal signals.

query-item  bm25 (its score), bm25_rank (1 = best), word_match (share of the query's words
            that are words of the item's document), brand_in_query (the query names the
            item's brand)
item        log_popularity, price_z (price standardised within the category)
personal    from the user's history alone (what the nightly models know of them):
            user_brand_share / user_category_share (share of their history in the item's
            brand / category), user_brand_share_in_category (of their events in the item's
            category, the share that were of the item's brand: the brand they favour there;
            missing without events in that category), price_gap (|price_z - the mean price_z
            of their history|, missing without history), user_history_size, seen_before
            (times in it)

semantic    embedding_cosine: the cosine of the query and the item in the item encoder's
            space (jobs/search/semantic.py; the nightly ranker only)
nightly     from tonight's recommendation models, for the searcher's history before the
            search (the nightly ranker only): encoder_z / encoder_rank (the user encoder's
            score of the item, standardised over the catalog, and the item's rank in its
            full-catalog list), recommender_z / recommender_rank (the same for the served
            fusion variant); missing without history

`hybrid` ranks with the first two groups, `personalized` with all three (features_for);
the nightly ranker adds the semantic and nightly groups (NIGHTLY_FEATURES).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pandas as pd
from scipy import sparse

from jobs.search.text import words

QUERY_ITEM_FEATURES = ("bm25", "bm25_rank", "word_match", "brand_in_query")
ITEM_FEATURES = ("log_popularity", "price_z")
PERSONAL_FEATURES = ("user_brand_share", "user_category_share", "user_brand_share_in_category", "price_gap",
                     "user_history_size", "seen_before")
ALL_FEATURES = QUERY_ITEM_FEATURES + ITEM_FEATURES + PERSONAL_FEATURES
SEMANTIC_FEATURES = ("embedding_cosine",)
MODEL_FEATURES = ("encoder_z", "encoder_rank", "recommender_z", "recommender_rank")
NIGHTLY_FEATURES = ALL_FEATURES + SEMANTIC_FEATURES + MODEL_FEATURES


def features_for(personal: bool) -> tuple[str, ...]:
    return ALL_FEATURES if personal else QUERY_ITEM_FEATURES + ITEM_FEATURES


@dataclasses.dataclass
class CatalogSignals:
    """Per item (index position): brand and category ids, price_z, log popularity, its document's words."""
    brand_id: np.ndarray
    category_id: np.ndarray
    price_z: np.ndarray
    log_popularity: np.ndarray
    brand_word: list[str]
    document_words: list[frozenset]

    @classmethod
    def from_catalog(cls, catalog: pd.DataFrame, documents: list[str]) -> "CatalogSignals":
        """catalog: item (0..n-1 in index order), brand_id, category_id, brand, price_z, popularity."""
        if not np.array_equal(catalog["item"].to_numpy(), np.arange(len(catalog))):
            raise ValueError("catalog rows must be the index's items in order (item = 0..n-1)")
        return cls(catalog["brand_id"].to_numpy(), catalog["category_id"].to_numpy(),
                   catalog["price_z"].to_numpy(dtype=np.float64),
                   np.log(catalog["popularity"].to_numpy(dtype=np.float64) * len(catalog)),
                   [" ".join(words(brand)) for brand in catalog["brand"]],
                   [frozenset(words(document)) for document in documents])

    @functools.cached_property
    def n_brands(self) -> int:
        return int(self.brand_id.max(initial=0)) + 1

    @functools.cached_property
    def n_categories(self) -> int:
        return int(self.category_id.max(initial=0)) + 1

    def category_brand(self, items: np.ndarray) -> np.ndarray:
        """One id per (category, brand) pair of the items: a brand sold in several categories
        has a pair in each."""
        return self.category_id[items].astype(np.int64) * self.n_brands + self.brand_id[items]


@dataclasses.dataclass
class UserProfiles:
    """What each user's history says: shares per brand and category, price level, items seen."""
    brand_share: sparse.csr_matrix
    category_share: sparse.csr_matrix
    # Of a user's events in a category, the share of each brand: column category * n_brands + brand.
    brand_share_in_category: sparse.csr_matrix
    mean_price_z: np.ndarray  # nan without history
    history_size: np.ndarray
    item_counts: sparse.csr_matrix

    @classmethod
    def from_history(cls, history: pd.DataFrame, catalog: CatalogSignals, n_users: int) -> "UserProfiles":
        """history: user (0..n_users-1), item (index position), one row per event."""
        user, item = history["user"].to_numpy(), history["item"].to_numpy()
        size = np.bincount(user, minlength=n_users).astype(np.float64)
        ones = np.ones(len(user))

        def shares(columns: np.ndarray, width: int) -> sparse.csr_matrix:
            counts = sparse.csr_matrix((ones, (user, columns)), shape=(n_users, width))
            return sparse.diags(1.0 / np.maximum(size, 1.0)) @ counts

        pairs = sparse.coo_matrix((ones, (user, catalog.category_brand(item))),
                                  shape=(n_users, catalog.n_categories * catalog.n_brands))
        pairs.sum_duplicates()
        in_category = sparse.csr_matrix((ones, (user, catalog.category_id[item])), shape=(n_users, catalog.n_categories))
        if pairs.nnz:  # (indexing a sparse matrix by no positions gives an object array)
            pairs.data = pairs.data / np.asarray(in_category[pairs.row, pairs.col // catalog.n_brands]).ravel()
        price_sum = np.bincount(user, weights=catalog.price_z[item], minlength=n_users)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_price = np.where(size > 0, price_sum / size, np.nan)
        return cls(shares(catalog.brand_id[item], catalog.n_brands), shares(catalog.category_id[item], catalog.n_categories),
                   pairs.tocsr(),
                   mean_price, size,
                   sparse.csr_matrix((ones, (user, item)), shape=(n_users, len(catalog.brand_id))))


def candidate_features(query: str, user: int, candidates: np.ndarray, bm25: np.ndarray,
                       catalog: CatalogSignals, profiles: UserProfiles) -> np.ndarray:
    """[candidates, ALL_FEATURES] for one search; candidates in retrieval order (bm25 best first)."""
    query_words = words(query)
    word_match = np.array([sum(word in catalog.document_words[item] for word in query_words)
                           for item in candidates], dtype=np.float64) / max(len(query_words), 1)
    query_text = f" {' '.join(query_words)} "
    brand_in_query = np.array([f" {catalog.brand_word[item]} " in query_text for item in candidates], dtype=np.float64)
    users = np.full(len(candidates), user)
    category_share = np.asarray(profiles.category_share[users, catalog.category_id[candidates]]).ravel()
    in_category = np.asarray(profiles.brand_share_in_category[users, catalog.category_brand(candidates)]).ravel()
    brand_share_in_category = np.where(category_share > 0, in_category, np.nan)
    return np.column_stack([
        bm25, np.arange(1, len(candidates) + 1, dtype=np.float64), word_match, brand_in_query,
        catalog.log_popularity[candidates], catalog.price_z[candidates],
        np.asarray(profiles.brand_share[users, catalog.brand_id[candidates]]).ravel(),
        category_share, brand_share_in_category,
        np.abs(catalog.price_z[candidates] - profiles.mean_price_z[user]),
        np.full(len(candidates), profiles.history_size[user]),
        np.asarray(profiles.item_counts[users, candidates]).ravel(),
    ])


def nightly_columns(cosines: np.ndarray, model_blocks) -> np.ndarray:
    """The SEMANTIC_FEATURES and MODEL_FEATURES columns of one search's candidates, in NIGHTLY_FEATURES
    order after ALL_FEATURES: the cosines, then each scorer's model_signals block (user encoder, fusion).
    The nightly stage and the served engine both assemble rows through it."""
    return np.column_stack([cosines, *model_blocks])


def model_signals(scorer, histories, candidates: list[np.ndarray], batch_size: int = 512) -> list[np.ndarray]:
    """Per search: [its candidates, 2] = (z-score of the candidate's score over the catalog, its
    rank in the full-catalog list, 1 = best) from a recommendation scorer, for the searcher's
    history (histories: items / types / gaps [searches, L]); candidates are item indices.
    A search without history gets nan (the ranker treats it as missing)."""
    signals = []
    for start in range(0, len(candidates), batch_size):
        rows = slice(start, start + batch_size)
        gaps = None if histories.gaps is None else histories.gaps[rows]
        scores = np.asarray(scorer.score(histories.items[rows], histories.types[rows], gaps), dtype=np.float64)
        scores = np.where(np.isfinite(scores), scores, np.nan)  # padding and items out of the catalog
        z = (scores - np.nanmean(scores, axis=1, keepdims=True)) / np.maximum(np.nanstd(scores, axis=1, keepdims=True),
                                                                              1e-12)
        ranked = np.nan_to_num(scores, nan=-np.inf)
        for offset, items in enumerate(candidates[rows]):
            block = np.column_stack([z[offset, items], catalog_ranks(ranked[offset], items).astype(np.float64)])
            if not histories.items[start + offset].any():
                block[:] = np.nan
            signals.append(block)
    return signals


def catalog_ranks(scores: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The 1-based rank of each of items in the whole row's list, best first, equal scores in
    item order (what a stable argsort of -scores gives), without ordering the whole row: one
    sort of the scores (several times cheaper than an index sort at 100,000 items) and a count
    of the equal scores before each item where it shares its score."""
    items = np.asarray(items, dtype=np.int64)
    ascending = np.sort(scores)
    wanted = scores[items]
    above = len(scores) - np.searchsorted(ascending, wanted, side="right")
    equal = np.searchsorted(ascending, wanted, side="right") - np.searchsorted(ascending, wanted, side="left")
    before = np.zeros(len(items), dtype=np.int64)
    for value in np.unique(wanted[equal > 1]):
        sharing = wanted == value
        before[sharing] = np.searchsorted(np.flatnonzero(scores == value), items[sharing])
    return above + before + 1
