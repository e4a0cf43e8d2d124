"""Decision-level fusion: weighted reciprocal-rank fusion (RRF) of the base models' top lists.

score(i) = sum_m w_m / (k + rank_m(i)), over the models m whose top-C list holds item i
(Cormack, Clarke & Buettcher, SIGIR 2009, with per-model weights). Only list positions are
used, so models whose scores live on different scales fuse without calibration; the
constant k damps the difference between the very top positions. Items in no list score
-inf. The weights are chosen on the valid day by a grid over the simplex.
"""

from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import numpy as np

from jobs.common.config import default_of
from jobs.evaluation.metrics import PRIMARY_METRIC, Scorer, parse_metric, ranking_metrics
from jobs.fusion import (Candidates, build_candidates, candidate_target_ranks, read_fuser, scatter_to_catalog,
                         select_scorers, write_fuser)

RRF_NAME = "fusion_rrf"
VOTE_NAME = "fusion_vote"
DEFAULT_GRID_STEPS = default_of("fusion.rrf_grid_steps")


class RankFusion:
    """Weighted RRF over base scorers; equal weights until fit() picks better ones."""

    def __init__(self, base_scorers: Sequence[Scorer], candidates_per_model: int = 50, rrf_k: float = 60,
                 weights: Sequence[float] | None = None, name: str = RRF_NAME):
        if not base_scorers:
            raise ValueError(f"{name} needs at least one base model")
        if rrf_k < 0:
            raise ValueError(f"rrf_k must be >= 0, got {rrf_k}")
        self.name = name
        self.base_scorers = list(base_scorers)
        self.base_names = [scorer.name for scorer in self.base_scorers]
        self.candidates_per_model = int(candidates_per_model)
        self.rrf_k = float(rrf_k)
        self.weights = _check_weights(weights, len(self.base_scorers))

    @property
    def weight_by_model(self) -> dict[str, float]:
        return dict(zip(self.base_names, self.weights.tolist()))

    def fit(self, examples, metric: str = PRIMARY_METRIC, grid_steps: int = DEFAULT_GRID_STEPS,
            batch_size: int = 512) -> dict:
        """Pick the simplex grid weights with the best `metric` on examples (the valid day).

        Returns {"weights": {model: w}, "metric": metric, "best": value, "equal_weights": value},
        the last being plain equal-weight voting, for comparison.
        """
        candidates = build_candidates(self.base_scorers, examples.items, examples.types,
                                      self.candidates_per_model, batch_size, getattr(examples, "gaps", None))
        grid = simplex_grid(len(self.base_scorers), grid_steps)
        # The per-model contributions do not depend on the weights: computed once, each grid
        # point is then one matrix-vector product (6 models at 5 steps: 252 points).
        contributions = rrf_contributions(candidates, self.rrf_k)
        values = np.array([self._metric_on(candidates, contributions, weights, examples.targets, metric)
                           for weights in grid])
        self.weights = grid[_best_index(values, grid)]
        equal = np.full(len(self.base_scorers), 1.0 / len(self.base_scorers))
        return {"weights": self.weight_by_model, "metric": metric, "best": float(values.max()),
                "equal_weights": self._metric_on(candidates, contributions, equal, examples.targets, metric)}

    def score(self, items: np.ndarray, types: np.ndarray, gaps: np.ndarray | None = None) -> np.ndarray:
        """Fused scores [n, n_items + 1]; -inf for items in no base model's top-C (and column 0)."""
        candidates = build_candidates(self.base_scorers, items, types, self.candidates_per_model, gaps=gaps)
        return scatter_to_catalog(candidates, rrf_slot_scores(candidates, self.weights, self.rrf_k))

    def save(self, directory: str) -> None:
        write_fuser(directory, {"name": self.name, "level": "decision", "base_models": self.base_names,
                                "weights": self.weights.tolist(), "rrf_k": self.rrf_k,
                                "candidates_per_model": self.candidates_per_model})

    @classmethod
    def load(cls, directory: str, base_scorers: Mapping[str, Scorer], name: str = RRF_NAME) -> "RankFusion":
        description, _ = read_fuser(directory, name)
        scorers = select_scorers(base_scorers, description["base_models"], name)
        return cls(scorers, description["candidates_per_model"], description["rrf_k"], description["weights"], name)

    @staticmethod
    def _metric_on(candidates: Candidates, contributions: np.ndarray, weights: np.ndarray, targets: np.ndarray,
                   metric: str) -> float:
        _, k = parse_metric(metric)
        ranks = candidate_target_ranks(candidates, contributions @ np.asarray(weights, dtype=np.float64), targets)
        return ranking_metrics(ranks, ks=(k,))[metric]


def equal_weight_vote(base_scorers: Sequence[Scorer], candidates_per_model: int = 50,
                      rrf_k: float = 60) -> RankFusion:
    """Plain voting: RRF with every model's vote worth the same, nothing learned."""
    return RankFusion(base_scorers, candidates_per_model, rrf_k, name=VOTE_NAME)


def rrf_slot_scores(candidates: Candidates, weights: np.ndarray, rrf_k: float) -> np.ndarray:
    """sum_m w_m / (k + rank_m) for each candidate slot; unlisted (rank 0) contributes nothing."""
    return rrf_contributions(candidates, rrf_k) @ np.asarray(weights, dtype=np.float64)


def rrf_contributions(candidates: Candidates, rrf_k: float) -> np.ndarray:
    """[n, S, M]: 1 / (k + rank_m) of each slot in model m's list, 0 where m did not list it."""
    ranks = candidates.ranks.astype(np.float64)
    return np.where(ranks > 0, 1.0 / (rrf_k + np.maximum(ranks, 1.0)), 0.0)


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
