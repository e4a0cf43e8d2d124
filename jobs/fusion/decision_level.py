"""Decision-level fusion: weighted reciprocal-rank fusion (RRF) of the base models' top lists.

score(i) = sum_m w_m / (k + rank_m(i)), over the models m whose top-C list holds item i
(Cormack, Clarke & Buettcher, SIGIR 2009, with per-model weights). Only list positions are
used, so models whose scores live on different scales fuse without calibration; the
constant k damps the difference between the very top positions. Items in no list score
-inf. The weights are chosen on the valid day by a grid over the simplex.

The prefix is one more list (PREFIX_LIST, on by default): an item of the prefix sits at
the position "steps since its last occurrence" (the last item at 1), so a shopper's return
to what they just saw gets a weight of its own, learned with the members'.
"""

from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import numpy as np

from jobs.common.config import default_of
from jobs.evaluation.metrics import PRIMARY_METRIC, Scorer, parse_metric, ranking_metrics
from jobs.fusion import (Candidates, build_candidates, candidate_target_ranks, prefix_signals, read_fuser,
                         scatter_to_catalog, select_scorers, write_fuser)

RRF_NAME = "fusion_rrf"
VOTE_NAME = "fusion_vote"
DEFAULT_GRID_STEPS = default_of("fusion.rrf_grid_steps")
PREFIX_LIST = "prefix_recency"  # the weight name of the prefix's own list


class RankFusion:
    """Weighted RRF over base scorers; equal weights until fit() picks better ones."""

    # A jobs.fusion.CandidateMemo shared with the other fusers of the same members (or None).
    candidate_memo = None

    def __init__(self, base_scorers: Sequence[Scorer], candidates_per_model: int = 50, rrf_k: float = 60,
                 weights: Sequence[float] | None = None, name: str = RRF_NAME, prefix_list: bool = True):
        if not base_scorers:
            raise ValueError(f"{name} needs at least one base model")
        if rrf_k < 0:
            raise ValueError(f"rrf_k must be >= 0, got {rrf_k}")
        self.name = name
        self.base_scorers = list(base_scorers)
        self.base_names = [scorer.name for scorer in self.base_scorers]
        self.candidates_per_model = int(candidates_per_model)
        self.rrf_k = float(rrf_k)
        # False for plain voting and for a fuser saved before the prefix list existed.
        self.prefix_list = bool(prefix_list)
        self.list_names = self.base_names + ([PREFIX_LIST] if self.prefix_list else [])
        self.weights = _check_weights(weights, len(self.list_names))

    @property
    def weight_by_model(self) -> dict[str, float]:
        return dict(zip(self.list_names, self.weights.tolist()))

    def fit(self, examples, metric: str = PRIMARY_METRIC, grid_steps: int = DEFAULT_GRID_STEPS,
            batch_size: int = 512) -> dict:
        """Pick the simplex grid weights with the best `metric` on examples (the valid day).

        Returns {"weights": {model: w}, "metric": metric, "best": value, "equal_weights": value},
        the last being plain equal-weight voting, for comparison.
        """
        candidates = build_candidates(self.base_scorers, examples.items, examples.types,
                                      self.candidates_per_model, batch_size, getattr(examples, "gaps", None))
        grid = simplex_grid(len(self.list_names), grid_steps)
        # The per-list contributions do not depend on the weights: computed once, each grid
        # point is then one matrix-vector product (6 models + the prefix at 5 steps: 462 points).
        contributions = rrf_contributions(candidates, self.rrf_k, self._prefixes(examples.items))
        grid_metric = TargetRanksOnGrid(candidates, contributions, examples.targets)
        values = np.array([ranking_metrics(grid_metric.ranks(weights), ks=(parse_metric(metric)[1],))[metric]
                           for weights in grid])
        self.weights = grid[_best_index(values, grid)]
        equal = np.full(len(self.list_names), 1.0 / len(self.list_names))
        return {"weights": self.weight_by_model, "metric": metric, "best": float(values.max()),
                "equal_weights": self._metric_on(candidates, contributions, equal, examples.targets, metric)}

    def score(self, items: np.ndarray, types: np.ndarray, gaps: np.ndarray | None = None) -> np.ndarray:
        """Fused scores [n, n_items + 1]; -inf for items in no base model's top-C (and column 0)."""
        candidates = build_candidates(self.base_scorers, items, types, self.candidates_per_model, gaps=gaps,
                                      memo=self.candidate_memo)
        return scatter_to_catalog(candidates, rrf_slot_scores(candidates, self.weights, self.rrf_k,
                                                              self._prefixes(items)))

    def _prefixes(self, items: np.ndarray) -> np.ndarray | None:
        return items if self.prefix_list else None

    def save(self, directory: str) -> None:
        write_fuser(directory, {"name": self.name, "level": "decision", "base_models": self.base_names,
                                "weights": self.weights.tolist(), "rrf_k": self.rrf_k,
                                "prefix_list": self.prefix_list,
                                "candidates_per_model": self.candidates_per_model})

    @classmethod
    def load(cls, directory: str, base_scorers: Mapping[str, Scorer], name: str = RRF_NAME) -> "RankFusion":
        description, _ = read_fuser(directory, name)
        scorers = select_scorers(base_scorers, description["base_models"], name)
        return cls(scorers, description["candidates_per_model"], description["rrf_k"], description["weights"], name,
                   prefix_list=bool(description.get("prefix_list", False)))

    @staticmethod
    def _metric_on(candidates: Candidates, contributions: np.ndarray, weights: np.ndarray, targets: np.ndarray,
                   metric: str) -> float:
        _, k = parse_metric(metric)
        ranks = candidate_target_ranks(candidates, contributions @ np.asarray(weights, dtype=np.float64), targets)
        return ranking_metrics(ranks, ks=(k,))[metric]


class TargetRanksOnGrid:
    """candidate_target_ranks of the slot scores contributions @ weights, for many weights.

    What does not depend on the weights is found once: which examples have their target
    among the candidates (the others rank last whatever the weights) and in which slot.
    Each weight vector then scores only those examples' slots: the same float32 scores and
    the same conservative ties as candidate_target_ranks, at a fraction of its work, which
    the grid repeats 462 times.
    """

    def __init__(self, candidates: Candidates, contributions: np.ndarray, targets: np.ndarray):
        filled = candidates.filled
        is_target = filled & (candidates.items == np.asarray(targets)[:, None])
        self.found = np.flatnonzero(is_target.any(axis=1))
        self.target_slot = is_target[self.found].argmax(axis=1)
        self.filled = filled[self.found]
        self.contributions = contributions[self.found]
        self.n_examples, self.n_items = len(targets), candidates.n_items

    def ranks(self, weights: np.ndarray) -> np.ndarray:
        slot_scores = (self.contributions @ np.asarray(weights, dtype=np.float64)).astype(np.float32)
        target_score = slot_scores[np.arange(len(self.found)), self.target_slot][:, None]
        ranks = np.full(self.n_examples, self.n_items, dtype=np.int64)
        ranks[self.found] = (self.filled & (slot_scores >= target_score)).sum(axis=1)
        return ranks


def equal_weight_vote(base_scorers: Sequence[Scorer], candidates_per_model: int = 50,
                      rrf_k: float = 60) -> RankFusion:
    """Plain voting: RRF with every model's vote worth the same, nothing learned (and no prefix list)."""
    return RankFusion(base_scorers, candidates_per_model, rrf_k, name=VOTE_NAME, prefix_list=False)


def rrf_slot_scores(candidates: Candidates, weights: np.ndarray, rrf_k: float,
                    prefixes: np.ndarray | None = None) -> np.ndarray:
    """sum_m w_m / (k + rank_m) for each candidate slot; unlisted (rank 0) contributes nothing."""
    return rrf_contributions(candidates, rrf_k, prefixes) @ np.asarray(weights, dtype=np.float64)


def rrf_contributions(candidates: Candidates, rrf_k: float, prefixes: np.ndarray | None = None) -> np.ndarray:
    """[n, S, M (+ 1)]: 1 / (k + rank_m) of each slot in model m's list, 0 where m did not list it.

    With prefixes (the examples' items), one more column: 1 / (k + steps since the slot's
    item last occurred in its prefix), 0 for items not in it.
    """
    ranks = candidates.ranks.astype(np.float64)
    contributions = np.where(ranks > 0, 1.0 / (rrf_k + np.maximum(ranks, 1.0)), 0.0)
    if prefixes is None:
        return contributions
    recency = prefix_signals(candidates.items, prefixes)[:, :, 1]  # 1 / steps, 0 when absent
    with np.errstate(divide="ignore"):
        in_prefix = np.where(recency > 0, 1.0 / (rrf_k + 1.0 / np.where(recency > 0, recency, 1.0)), 0.0)
    return np.concatenate([contributions, in_prefix[:, :, None]], axis=2)


def simplex_grid(n_models: int, steps: int) -> np.ndarray:
    """Every weight vector with entries in multiples of 1/steps that sum to 1, [G, n_models]."""
    if steps < 1:
        raise ValueError(f"grid steps must be >= 1, got {steps}")
    points = [counts for counts in itertools.product(range(steps + 1), repeat=n_models) if sum(counts) == steps]
    return np.array(points, dtype=np.float64) / steps


def _best_index(values: np.ndarray, grid: np.ndarray) -> int:
    """Best metric; among (numerically) equal bests, the most even weights, which hedge
    against a model that happened to shine on one valid day; then the first in grid order."""
    best = np.isclose(values, values.max(), rtol=0, atol=1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(grid > 0, grid * np.log(grid), 0.0).sum(axis=1)
    return int(np.argmax(np.where(best, entropy, -np.inf)))


def _check_weights(weights, n_models: int) -> np.ndarray:
    if weights is None:
        return np.full(n_models, 1.0 / n_models)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (n_models,) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"RRF weights must be {n_models} non-negative numbers, not all zero; got {weights.tolist()}")
    # Weights already summing to 1 (up to rounding) are kept bit for bit, so a saved and
    # reloaded fuser scores exactly as the fitted one.
    return weights if np.isclose(weights.sum(), 1.0) else weights / weights.sum()
