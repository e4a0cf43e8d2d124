"""Full-catalog ranking evaluation shared by every model, baseline and fusion variant.

Every scorer in the system is duck-typed: a `name` and `score(items, types)` returning a
float matrix [n_examples, n_items + 1] whose column 0 (padding / out-of-vocabulary) is
never a valid recommendation. The target of each example is ranked against the whole
catalog -- no sampled negatives, which are known to inflate and even reorder models.

Ties are handled conservatively: a target that shares its score with other items ranks
below all of them. A model that gives every item the same score therefore gets the worst
rank instead of a lucky one, and a model cannot gain by producing ties.
"""

from __future__ import annotations

import re
from typing import Protocol

import numpy as np

DEFAULT_KS = (20,)
METRIC_KINDS = ("recall", "mrr", "ndcg")
PRIMARY_METRIC = "ndcg@20"  # the default of config["mlflow"]["primary_metric"]


class Scorer(Protocol):
    """What evaluation, fusion and batch recommendation need from a model."""

    name: str

    def score(self, items: np.ndarray, types: np.ndarray) -> np.ndarray:
        """Scores [n, n_items + 1] for left-padded histories items/types [n, L]."""


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each example's target among catalog items 1..n_items.

    rank = 1 + #{j != t: s_j > s_t} + #{j != t: s_j == s_t}, column 0 excluded.
    """
    scores, targets = _check_scores_and_targets(scores, targets)
    catalog_scores = scores[:, 1:]  # column 0 is padding: it never outranks a target
    target_scores = scores[np.arange(len(targets)), targets][:, None]
    at_least_as_high = (catalog_scores >= target_scores).sum(axis=1)
    # at_least_as_high counts the target itself once, which is exactly the "1 +".
    return at_least_as_high.astype(np.int64)


def ranking_metrics(ranks: np.ndarray, ks=DEFAULT_KS) -> dict[str, float]:
    """recall@k, mrr@k and ndcg@k averaged over examples with one target each."""
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or len(ranks) == 0:
        raise ValueError(f"ranking_metrics needs a non-empty 1-d array of ranks, got shape {ranks.shape}")
    if (ranks < 1).any():
        raise ValueError(f"ranks are 1-based; found minimum rank {ranks.min()}")
    metrics = {}
    for k in _check_ks(ks):
        hit = ranks <= k
        metrics[f"recall@{k}"] = float(hit.mean())
        metrics[f"mrr@{k}"] = float(np.where(hit, 1.0 / ranks, 0.0).mean())
        # One relevant item, so the ideal DCG is 1 and NDCG = 1 / log2(rank + 1).
        metrics[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean())
    return metrics


def scorer_ranks(scorer: Scorer, examples, batch_size: int = 2048) -> np.ndarray:
    """Target ranks of a scorer over all examples, scoring batch_size examples at a time.

    Batching bounds memory: 2048 examples x 50k items is ~400 MB of float32 scores.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n_examples = len(examples.targets)
    if n_examples == 0:
        raise ValueError(f"cannot evaluate {scorer.name!r} on zero examples")
    ranks = []
    for start in range(0, n_examples, batch_size):
        batch = slice(start, start + batch_size)
        scores = scorer.score(examples.items[batch], examples.types[batch])
        try:
            ranks.append(target_ranks(scores, examples.targets[batch]))
        except ValueError as error:
            raise ValueError(f"scorer {scorer.name!r}: {error}") from None
    return np.concatenate(ranks)


def evaluate_scorer(scorer: Scorer, examples, ks=DEFAULT_KS, batch_size: int = 2048) -> dict[str, float]:
    """Full-catalog ranking metrics of one scorer on Examples (items, types, targets)."""
    return ranking_metrics(scorer_ranks(scorer, examples, batch_size), ks)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices [n, k] of the k best items per row, best first, never column 0.

    Equal scores are broken by the lower item index, so lists are reproducible run to run.
    If the catalog has fewer than k items, all of them are returned (k = n_items).
    """
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"top_k needs scores [n, n_items + 1] with n_items >= 1, got shape {scores.shape}")
    if k < 1:
        raise ValueError(f"top_k needs k >= 1, got {k}")
    catalog_scores = scores[:, 1:]
    n_rows, n_items = catalog_scores.shape
    k = min(k, n_items)
    chosen = _mask_of_best(catalog_scores, k)
    # nonzero walks rows in order and columns ascending: exactly k per row, by index.
    indices = np.nonzero(chosen)[1].reshape(n_rows, k)
    chosen_scores = np.take_along_axis(catalog_scores, indices, axis=1)
    # A stable sort on the negated scores keeps equal scores in ascending index order.
    order = np.argsort(-chosen_scores, axis=1, kind="stable")
    return np.take_along_axis(indices, order, axis=1) + 1  # back to item indices (skip column 0)


def parse_metric(metric: str) -> tuple[str, int]:
    """'ndcg@20' -> ('ndcg', 20), with a clear error for anything else."""
    match = re.fullmatch(r"(recall|mrr|ndcg)@(\d+)", metric)
    if not match:
        raise ValueError(f"metric must look like <recall|mrr|ndcg>@<k>, e.g. 'ndcg@20'; got {metric!r}")
    return match.group(1), int(match.group(2))


def mlflow_metric_key(model_name: str, metric: str) -> str:
    """MLflow key for a model's metric, e.g. ('fusion_rrf', 'ndcg@20') -> 'fusion_rrf.ndcg_at_20'.

    MLflow rejects '@' in metric names, so it is spelled '_at_' there (and only there).
    """
    return f"{model_name}.{metric.replace('@', '_at_')}"


def _mask_of_best(catalog_scores: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask with exactly k True per row: every score above the k-th best, plus
    the lowest-index items among those tied with the k-th best. O(n x n_items), no full sort."""
    n_items = catalog_scores.shape[1]
    kth_best = np.partition(catalog_scores, n_items - k, axis=1)[:, n_items - k][:, None]
    above = catalog_scores > kth_best
    tied = catalog_scores == kth_best
    places_left = k - above.sum(axis=1, keepdims=True)
    first_tied = tied & (np.cumsum(tied, axis=1) <= places_left)
    return above | first_tied


def _check_scores_and_targets(scores, targets) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores)
    targets = np.asarray(targets)
    if scores.ndim != 2 or targets.ndim != 1 or scores.shape[0] != targets.shape[0]:
        raise ValueError(f"need scores [n, n_items + 1] and targets [n]; got {scores.shape} and {targets.shape}")
    n_items = scores.shape[1] - 1
    if len(targets) and (targets.min() < 1 or targets.max() > n_items):
        raise ValueError(f"targets must be item indices 1..{n_items} (0 is padding); "
                         f"found {targets.min()}..{targets.max()}")
    if np.isnan(scores).any():
        # NaN compares False with everything, which would silently rank a NaN target first.
        raise ValueError(f"scores contain NaN in {np.isnan(scores).any(axis=1).sum()} example(s)")
    return scores, targets.astype(np.int64)


def _check_ks(ks) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty list of positive cutoffs, got {ks}")
    return ks
