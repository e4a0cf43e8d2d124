"""Model-level fusion: a stacked meta-ranker that re-scores the base models' candidates.

For each (example, candidate) pair the features are, per base model, its score z-scored
within the example and 1 / (position in its top-C list) (0 when it did not list the item),
plus log(1 + training-day popularity) and what the prefix says of the candidate: how many
times it is in the prefix and 1 / (steps since its last occurrence) (1: the last item; 0:
not in the prefix). Shoppers return to items they have seen, and no member says how
recently. A logistic regression learns P(candidate is the
next item) on the valid day, where the base encoders are out-of-sample. It is linear, so
it is saved as plain numbers (JSON) and can be read off: a large weight on a model's
features means the meta-ranker trusts that model.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from jobs.evaluation.metrics import Scorer
from jobs.common.config import default_of
from jobs.fusion import (Candidates, build_candidates, prefix_signals, read_fuser, scatter_to_catalog,
                         select_scorers, training_set, write_fuser)

DEFAULT_MAX_TRAIN_EXAMPLES = default_of("fusion.stacking_max_train_examples")
PREFIX_FEATURES = ("prefix_count", "prefix_recency")
class StackingRanker:
    """Logistic-regression meta-ranker over the union of the base models' top-C lists."""

    name = "fusion_stacking"
    # A jobs.fusion.CandidateMemo shared with the other fusers of the same members (or None).
    candidate_memo = None

    def __init__(self, base_scorers: Sequence[Scorer], popularity: np.ndarray, candidates_per_model: int = 50,
                 coefficients: Sequence[float] | None = None, intercept: float = 0.0,
                 max_train_examples: int = DEFAULT_MAX_TRAIN_EXAMPLES, seed: int = 42,
                 prefix_features: bool = True):
        if not base_scorers:
            raise ValueError("fusion_stacking needs at least one base model")
        self.base_scorers = list(base_scorers)
        self.base_names = [scorer.name for scorer in self.base_scorers]
        self.popularity = np.asarray(popularity, dtype=np.float64)
        if self.popularity.ndim != 1 or (self.popularity < 0).any():
            raise ValueError("fusion_stacking popularity must be a vector [n_items + 1] of non-negative counts")
        self.log_popularity = np.log1p(self.popularity)
        self.candidates_per_model = int(candidates_per_model)
        self.coefficients = None if coefficients is None else np.asarray(coefficients, dtype=np.float64)
        self.intercept = float(intercept)
        self.max_train_examples = int(max_train_examples)
        self.seed = seed
        # False only for a fuser saved before the prefix features existed (load detects it).
        self.prefix_features = bool(prefix_features)
        if self.coefficients is not None and self.coefficients.shape != (len(self.feature_names),):
            raise ValueError(f"fusion_stacking expects {len(self.feature_names)} coefficients "
                             f"({self.feature_names}), got {self.coefficients.shape}")

    @property
    def feature_names(self) -> list[str]:
        return ([f"{name}.z_score" for name in self.base_names]
                + [f"{name}.reciprocal_rank" for name in self.base_names] + ["log_popularity"]
                + (list(PREFIX_FEATURES) if self.prefix_features else []))

    @property
    def coefficient_by_feature(self) -> dict[str, float]:
        return dict(zip(self.feature_names, self.coefficients.tolist()))

    def fit(self, examples, batch_size: int = 512, candidates: Candidates | None = None) -> dict:
        """Fit the meta-ranker on examples (the valid day; candidates: see training_set);
        returns its coefficients and row counts."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        rows, candidates = training_set(self, examples, batch_size, candidates)
        features, labels = self._labelled_rows(candidates, examples.items[rows], examples.targets[rows])
        # Standardise so the L2 penalty treats features alike, then fold the scaling into
        # the weights: the saved model is one linear function of the raw features.
        scaler = StandardScaler().fit(features)
        regression = LogisticRegression(C=1.0, max_iter=1000).fit(scaler.transform(features), labels)
        self.coefficients = regression.coef_[0] / scaler.scale_
        self.intercept = float(regression.intercept_[0] - np.sum(self.coefficients * scaler.mean_))
        return {"coefficients": self.coefficient_by_feature, "intercept": self.intercept,
                "n_candidate_rows": int(len(labels)), "n_targets_in_candidates": int(labels.sum()),
                "n_examples": int(len(rows))}

    def score(self, items: np.ndarray, types: np.ndarray, gaps: np.ndarray | None = None) -> np.ndarray:
        """P(next item) for the candidates, -inf for every other item, [n, n_items + 1]."""
        if self.coefficients is None:
            raise RuntimeError("fusion_stacking must be fitted (or loaded) before scoring")
        candidates = build_candidates(self.base_scorers, items, types, self.candidates_per_model, gaps=gaps,
                                      memo=self.candidate_memo)
        logits = self.candidate_features(candidates, items) @ self.coefficients + self.intercept
        probabilities = np.exp(-np.logaddexp(0.0, -logits))  # sigmoid without overflow
        return scatter_to_catalog(candidates, probabilities)

    def candidate_features(self, candidates: Candidates, prefixes: np.ndarray) -> np.ndarray:
        """Features [n, S, 2M + 1 (+ 2)] in the order of feature_names; prefixes: the examples' items."""
        if len(self.log_popularity) != candidates.n_items + 1:
            raise ValueError(f"fusion_stacking popularity covers {len(self.log_popularity) - 1} items but the "
                             f"base models score {candidates.n_items}")
        ranks = candidates.ranks.astype(np.float64)
        reciprocal_ranks = np.where(ranks > 0, 1.0 / np.maximum(ranks, 1.0), 0.0)
        log_popularity = self.log_popularity[candidates.items][:, :, None]
        parts = [candidates.standardized_scores.astype(np.float64), reciprocal_ranks, log_popularity]
        if self.prefix_features:
            parts.append(prefix_signals(candidates.items, prefixes))
        return np.concatenate(parts, axis=2)

    def save(self, directory: str) -> None:
        if self.coefficients is None:
            raise RuntimeError("fusion_stacking must be fitted before saving")
        write_fuser(directory, {"name": self.name, "level": "model", "base_models": self.base_names,
                                "candidates_per_model": self.candidates_per_model,
                                "features": self.feature_names, "prefix_features": self.prefix_features,
                                "coefficients": self.coefficients.tolist(),
                                "intercept": self.intercept},
                    {"popularity": self.popularity})

    @classmethod
    def load(cls, directory: str, base_scorers: Mapping[str, Scorer]) -> "StackingRanker":
        description, arrays = read_fuser(directory, cls.name)
        if "popularity" not in arrays:
            raise ValueError(f"{directory} lacks the popularity array of fusion_stacking")
        scorers = select_scorers(base_scorers, description["base_models"], cls.name)
        return cls(scorers, arrays["popularity"], description["candidates_per_model"],
                   description["coefficients"], description["intercept"],
                   prefix_features=bool(description.get("prefix_features", False)))

    def _labelled_rows(self, candidates: Candidates, prefixes: np.ndarray,
                       targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One row per filled candidate slot; label 1 when the candidate is the example's target."""
        filled = candidates.filled
        features = self.candidate_features(candidates, prefixes)[filled]
        labels = (candidates.items == targets[:, None])[filled].astype(np.int64)
        if labels.sum() == 0 or labels.all():
            raise ValueError(f"fusion_stacking needs both hits and misses among the candidates; the targets were "
                             f"among the candidates in {labels.sum()} of {len(labels)} rows "
                             f"(raise fusion.candidates_per_model?)")
        return features, labels
