"""The catalog's lexical index: BM25 over item documents (title, category, brand, description).

bm25s (sparse-matrix BM25, eager scoring) was picked over tantivy for the nightly index: the
catalog is rebuilt every night in one pass, it scores any item for a query without a second
lookup (a ranker feature), and it is numpy/scipy only. Its build time and per-query latency
at 100,000 items are measured by bench/search.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jobs.search.text import search_tokens

ITEM_IDS_FILE = "item_ids.json"
# Lucene's BM25 variant with its usual constants (k1 term saturation, b length normalisation).
K1, B = 1.2, 0.75


def item_document(title: str | None, category: str | None, brand: str | None, description: str | None = None) -> str:
    """The text an item is found by: its fields joined (a missing field adds nothing)."""
    return " ".join(part for part in (title, category, brand, description) if part)


class LexicalIndex:
    """BM25 over one document per item; positions are the order of the item ids it was built with."""

    def __init__(self, item_ids: np.ndarray, retriever):
        self.item_ids = item_ids
        self._retriever = retriever

    @classmethod
    def build(cls, item_ids: Sequence[str], documents: Sequence[str]) -> "LexicalIndex":
        import bm25s

        if len(item_ids) != len(documents) or not len(item_ids):
            raise ValueError(f"need one document per item and at least one item: {len(item_ids)} ids, "
                             f"{len(documents)} documents")
        retriever = bm25s.BM25(k1=K1, b=B, method="lucene")
        retriever.index([search_tokens(document) for document in documents], show_progress=False)
        return cls(np.asarray(item_ids, dtype=object), retriever)

    def save(self, directory: str) -> None:
        """bm25s's own files plus item_ids.json, in directory (created)."""
        import json
        import os

        os.makedirs(directory, exist_ok=True)
        self._retriever.save(directory)
        with open(os.path.join(directory, ITEM_IDS_FILE), "w") as handle:
            json.dump([str(item) for item in self.item_ids], handle)

    @classmethod
    def load(cls, directory: str) -> "LexicalIndex":
        import json
        import os

        import bm25s

        with open(os.path.join(directory, ITEM_IDS_FILE)) as handle:
            item_ids = json.load(handle)
        return cls(np.asarray(item_ids, dtype=object), bm25s.BM25.load(directory))

    def scores(self, query: str) -> np.ndarray:
        """The BM25 score of every item for query (0 where no token matches), in index order."""
        tokens = [token for token in search_tokens(query) if token in self._retriever.vocab_dict]
        if not tokens:
            return np.zeros(len(self.item_ids), dtype=np.float32)
        return np.asarray(self._retriever.get_scores(tokens), dtype=np.float32)

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(item positions, scores) of the k best items with a positive score, best first.

        Ties (equal scores) keep index order, so the result never depends on chance.
        """
        return self.top(self.scores(query), k)

    @staticmethod
    def top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """search() on a query's scores() already computed."""
        k = min(k, int((scores > 0).sum()))
        if k == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.lexsort((best, -scores[best]))]
        return best, scores[best]
