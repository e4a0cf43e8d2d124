"""Search at request time: one query and one person's recent history to a ranked list.

What the nightly stage (jobs/search/train_search_ranker.py) saves in models/search/dt=<ds>/
is everything a request needs besides the night's recommendation models:

    ranker.txt            the personalized LambdaRank model (LightGBM's own format)
    index/                the catalog's BM25 index (bm25s files and item ids)
    catalog.parquet       per index position: item ids, brand, category, price z, popularity,
                          the document the index was built from
    title_tokens.parquet  the title-token vocabulary the item encoder read (semantic retriever)
    config.json           the features in the ranker's order, the candidate counts, max_seq_len

SearchEngine scores a request exactly as the stage scored the test day's searches: the union
of the lexical and semantic candidates, NIGHTLY_FEATURES with the request's history as the
searcher's profile (the stage reads the whole window before the search; a request gives what
the caller has) and its last max_seq_len events as what the user encoder and the served
fusion read.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from jobs.search.features import (NIGHTLY_FEATURES, CatalogSignals, UserProfiles, candidate_features,
                                  model_signals, nightly_columns)

RANKER_FILE, CONFIG_FILE, INDEX_DIR = "ranker.txt", "config.json", "index"
CATALOG_FILE, VOCABULARY_FILE = "catalog.parquet", "title_tokens.parquet"
LEXICAL, SEMANTIC, BOTH = "lexical", "semantic", "both"  # which retriever found a result


class SearchCatalog:
    """A catalog in index order: position p is item_ids[p] (item_idx[p] in the night's vocabulary).

    frame: item (0..n-1), item_id, item_idx, brand_id, category_id, brand, price_z,
    popularity (a share), document.
    """

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame.reset_index(drop=True)
        self.item_ids = self.frame["item_id"].astype(str).tolist()
        self.item_idx = self.frame["item_idx"].to_numpy(dtype=np.int64)
        self.documents = self.frame["document"].tolist()
        self.signals = CatalogSignals.from_catalog(self.frame, self.documents)
        self.position_of_id = {item: position for position, item in enumerate(self.item_ids)}
        self.position_of_idx = np.full(int(self.item_idx.max(initial=0)) + 1, -1, dtype=np.int64)
        self.position_of_idx[self.item_idx] = np.arange(len(self.item_idx))

    def positions(self, item_idx: np.ndarray) -> np.ndarray:
        """Index positions of item indices; -1 for an item not in this catalog (or padding 0)."""
        item_idx = np.asarray(item_idx, dtype=np.int64)
        found = np.full(item_idx.shape, -1, dtype=np.int64)
        inside = (item_idx > 0) & (item_idx < len(self.position_of_idx))
        found[inside] = self.position_of_idx[item_idx[inside]]
        return found


def profiles_of(history_item_idx: np.ndarray, catalog: SearchCatalog) -> UserProfiles:
    """One profile per row of a left-padded [rows, L] item-index matrix (0 = padding)."""
    row, column = np.nonzero(history_item_idx)
    positions = catalog.positions(history_item_idx[row, column])
    kept = positions >= 0  # items that left the catalog say nothing about tonight's candidates
    return UserProfiles.from_history(pd.DataFrame({"user": row[kept], "item": positions[kept]}), catalog.signals,
                                     len(history_item_idx))


class SearchEngine:
    """The saved ranker over the union of both retrievers, with the night's recommendation scorers."""

    def __init__(self, catalog: SearchCatalog, lexical, semantic, booster, settings: dict, scorers: dict):
        self.catalog, self.lexical, self.semantic, self.booster = catalog, lexical, semantic, booster
        self.settings, self.scorers = settings, scorers  # scorers: user_encoder and the served fusion

    @classmethod
    def load(cls, search_dir: str, item_encoder_dir: str, scorers: dict) -> "SearchEngine":
        import lightgbm

        from jobs.search.lexical import LexicalIndex
        from jobs.search.semantic import load_semantic_index

        with open(os.path.join(search_dir, CONFIG_FILE)) as handle:
            settings = json.load(handle)
        if tuple(settings["features"]) != NIGHTLY_FEATURES:
            raise ValueError(f"{search_dir}: the ranker was fitted on features {settings['features']}, "
                             f"this code computes {list(NIGHTLY_FEATURES)}")
        catalog = SearchCatalog(pd.read_parquet(os.path.join(search_dir, CATALOG_FILE)))
        semantic = None
        if settings["search"]["semantic_candidates"]:
            semantic = load_semantic_index(item_encoder_dir, pd.read_parquet(os.path.join(search_dir, VOCABULARY_FILE)),
                                           catalog.item_idx)
        return cls(catalog, LexicalIndex.load(os.path.join(search_dir, INDEX_DIR)), semantic,
                   lightgbm.Booster(model_file=os.path.join(search_dir, RANKER_FILE)), settings, scorers)

    def search(self, queries: list[str], histories, k: int) -> list[dict]:
        """Per request: {"item_ids", "scores", "retrievers"} of its top k, best first.

        histories: (items, types, gaps) int32 [requests, L] in the night's item indices, left-padded,
        as jobs.serving.fused_model.Recommender.encode makes them from raw ids.
        """
        from jobs.search.semantic import union_candidates

        items, types, gaps = histories
        search = self.settings["search"]
        retrieved, cosines = union_candidates(self.lexical, self.semantic, queries, search["candidates"],
                                              search["semantic_candidates"])
        profiles = profiles_of(items, self.catalog)
        recent = _Histories(*(array[:, -self.settings["max_seq_len"]:] for array in (items, types, gaps)))
        candidate_idx = [self.catalog.item_idx[candidates] for candidates, _ in retrieved]
        signals = [model_signals(scorer, recent, candidate_idx) for scorer in self.scorers.values()]
        results = []
        for row, (query, (candidates, bm25)) in enumerate(zip(queries, retrieved)):
            if not len(candidates):
                results.append({"item_ids": [], "scores": [], "retrievers": []})
                continue
            features = np.hstack([candidate_features(query, row, candidates, bm25, self.catalog.signals, profiles),
                                  nightly_columns(cosines[row], [block[row] for block in signals])])
            scores = self.booster.predict(features)
            best = np.lexsort((np.arange(len(scores)), -scores))[:k]
            lexical = bm25[best] > 0
            semantic = self._semantically_found(candidates[best], cosines[row], best)
            results.append({"item_ids": [self.catalog.item_ids[position] for position in candidates[best]],
                            "scores": [float(score) for score in scores[best]],
                            "retrievers": [BOTH if lex and sem else LEXICAL if lex else SEMANTIC
                                           for lex, sem in zip(lexical, semantic)]})
        return results

    def _semantically_found(self, positions: np.ndarray, cosines: np.ndarray, best: np.ndarray) -> np.ndarray:
        """Whether each result is among the semantic retriever's top N (its cosine reaches the N-th)."""
        n = self.settings["search"]["semantic_candidates"]
        if self.semantic is None or not n or not cosines.any():
            return np.zeros(len(positions), dtype=bool)
        threshold = np.sort(cosines)[::-1][min(n, len(cosines)) - 1]
        return cosines[best] >= threshold


class _Histories:
    def __init__(self, items, types, gaps):
        self.items, self.types, self.gaps = items, types, gaps
