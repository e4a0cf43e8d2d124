"""Search quality per search: NDCG@10, MRR@10 and Recall@50 of a ranked candidate list.

A search's relevance is graded (0 none, 1 opened, 2 added to cart, 3 bought) over every item
the person interacted with, whether or not the retriever found it: an item the candidates
miss costs recall and NDCG, as it does in front of the customer. Gains are 2^grade - 1.
Ties are conservative, as in the recommendation metrics: among items with the same score,
the less relevant ones come first, so a constant ranker earns nothing from luck.
"""

from __future__ import annotations

import numpy as np

NDCG_K, MRR_K, RECALL_K = 10, 10, 50
METRICS = (f"NDCG@{NDCG_K}", f"MRR@{MRR_K}", f"Recall@{RECALL_K}")


def conservative_order(scores: np.ndarray, grades: np.ndarray) -> np.ndarray:
    """Positions of the candidates, best score first; within a tie the lower grade first."""
    return np.lexsort((grades, -np.asarray(scores, dtype=np.float64)))


def search_quality(candidates: np.ndarray, scores: np.ndarray, relevance: dict) -> dict[str, float]:
    """The three metrics of one search: candidates (item ids) scored by a ranker (-inf: not listed);
    relevance {item: grade >= 1}."""
    if not relevance:
        raise ValueError("a search without any relevant item cannot be scored; leave it out")
    # A score of -inf means the ranker does not list the candidate at all (BM25's list has only
    # the items that share a token with the query).
    listed = np.asarray(scores, dtype=np.float64) > -np.inf
    candidates, scores = np.asarray(candidates, dtype=object)[listed], np.asarray(scores, dtype=np.float64)[listed]
    grades = np.array([relevance.get(item, 0) for item in candidates], dtype=np.int64)
    ranked = grades[conservative_order(scores, grades)]
    ideal = np.sort(np.fromiter(relevance.values(), dtype=np.int64))[::-1]
    discounts = 1.0 / np.log2(np.arange(2, NDCG_K + 2))
    dcg = float(((2.0 ** ranked[:NDCG_K] - 1) * discounts[:len(ranked[:NDCG_K])]).sum())
    idcg = float(((2.0 ** ideal[:NDCG_K] - 1) * discounts[:len(ideal[:NDCG_K])]).sum())
    first_relevant = np.flatnonzero(ranked[:MRR_K] > 0)
    return {f"NDCG@{NDCG_K}": dcg / idcg,
            f"MRR@{MRR_K}": 1.0 / (first_relevant[0] + 1) if len(first_relevant) else 0.0,
            f"Recall@{RECALL_K}": float((ranked[:RECALL_K] > 0).sum()) / len(relevance)}


def per_search_metrics(scores: np.ndarray, scored: list) -> dict[str, np.ndarray]:
    """{metric: [searches]} in %, for rows' scores and ranker.ScoredSearch entries (no candidates: 0)."""
    per_search = [search_quality(search.candidates, scores[search.rows], search.relevance) if len(search.candidates)
                  else dict.fromkeys(METRICS, 0.0) for search in scored]
    return {name: 100.0 * np.array([quality[name] for quality in per_search], dtype=np.float64) for name in METRICS}


def summarize(contributions: dict[str, np.ndarray], users: np.ndarray, mask: np.ndarray, resamples: int,
              confidence: float, seed: int) -> dict:
    """Means of the masked searches and their bootstrap intervals, resampling users (a user's
    searches together): {metric, metric_ci: [low, high], searches}."""
    from jobs.evaluation.metrics import bootstrap_intervals

    picked = {name: values[mask] for name, values in contributions.items()}
    intervals = bootstrap_intervals(picked, resamples, confidence, seed=seed, groups=users[mask])
    row = {name: round(float(values.mean()), 2) for name, values in picked.items()}
    row.update({f"{name}_ci": [round(low, 2), round(high, 2)] for name, (low, high) in intervals.items()})
    row["searches"] = int(mask.sum())
    return row
