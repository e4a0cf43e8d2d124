"""Fusion of the base models at three levels, plus the candidate sets two of them share.

- feature level (feature_level.FeatureFusion): one model over the encoders' embeddings;
- model level (model_level.StackingRanker, gradient_boosted.GradientBoostedRanker): a
  meta-ranker over the base models' scores (logistic, or LightGBM's LambdaRank);
- decision level (decision_level.RankFusion): weighted reciprocal-rank fusion of top lists.

All three are fitted on the VALID day: the base encoders were trained on the train days,
so their scores there are out-of-sample, as they will be on the test day and in serving.

The model- and decision-level fusers only re-rank a candidate set: the union of each base
model's top-C items. Candidates are kept in "slots" [n, S] with S = n_models * C (each
model's list in turn); an item already listed by an earlier model leaves its slot empty
(item 0), so every catalog item appears at most once per example.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from jobs.evaluation.metrics import SCORING_BATCH, LatestAnswer, Scorer, request_key, top_k

# The fusion members: the two encoders and the four baselines (jobs/train/baselines.py).
BASE_MODELS = ("popularity", "session_popularity", "item_knn", "als", "user_encoder", "item_encoder")
FEATURE_FUSION_SOURCES = ("user_encoder", "item_encoder")
FUSER_FILE = "fuser.json"
ARRAYS_FILE = "arrays.npz"
Z_SCORE_LIMIT = 10.0  # an infinite score (e.g. -inf: never recommend) becomes a z-score of -/+10


@dataclass
class Candidates:
    """The union of the base models' top-C lists for a batch of examples."""

    items: np.ndarray  # int64 [n, S]; 0 = empty slot
    ranks: np.ndarray  # int32 [n, S, M]: 1-based position in model m's top-C, 0 if not listed
    standardized_scores: np.ndarray  # float32 [n, S, M]: model m's score z-scored within the example
    n_items: int  # catalog size: scores have n_items + 1 columns
    scores: np.ndarray  # float32 [n, S, M]: model m's own score (NaN in empty slots and where it is -inf)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def filled(self) -> np.ndarray:
        return self.items > 0

    @property
    def nbytes(self) -> int:
        return self.items.nbytes + self.ranks.nbytes + self.standardized_scores.nbytes + self.scores.nbytes


class CandidateMemo:
    """The latest candidate set, shared by the fusers that re-rank the same members' lists.

    The stacking ranker, weighted RRF and the equal-weight vote all start from the union of
    the same six members' top-C lists; scored on the same batch one after the other
    (jobs.evaluation.metrics.evaluate_full_catalog_many), the first builds it and the others
    reuse it. Kept by the members (the very objects), C and the exact request, if it fits
    in max_bytes; its arrays are read-only, being shared.
    """

    def __init__(self, max_bytes: int):
        self.latest = LatestAnswer(max_bytes)

    def get(self, base_scorers: Sequence[Scorer], per_model: int, items, types, gaps, build) -> Candidates:
        def built() -> Candidates:
            candidates = build()
            for array in (candidates.items, candidates.ranks, candidates.standardized_scores, candidates.scores):
                array.flags.writeable = False
            return candidates

        return self.latest.get((tuple(base_scorers), per_model, request_key(items, types, gaps)), built)

    @property
    def hits(self) -> int:
        return self.latest.hits

    @property
    def misses(self) -> int:
        return self.latest.misses


def build_candidates(base_scorers: Sequence[Scorer], items: np.ndarray, types: np.ndarray,
                     per_model: int, batch_size: int = SCORING_BATCH, gaps: np.ndarray | None = None,
                     memo: CandidateMemo | None = None) -> Candidates:
    """Candidates for every example, scoring batch_size examples at a time.

    Each batch holds M dense score matrices [batch, n_items + 1]; 512 x 50k items x 3
    models is ~300 MB, and the candidate arrays kept are only [n, M * C]. gaps (time-gap
    buckets parallel to items, or None) reach every base scorer, sliced like items.
    memo: where a set built for the same members, C and request may already be.
    """
    if per_model < 1:
        raise ValueError(f"candidates_per_model must be >= 1, got {per_model}")
    if memo is not None:
        return memo.get(base_scorers, per_model, items, types, gaps,
                        lambda: build_candidates(base_scorers, items, types, per_model, batch_size, gaps))
    batches = []
    for start in range(0, len(items), batch_size):
        rows = slice(start, start + batch_size)
        batch_gaps = None if gaps is None else gaps[rows]
        score_matrices = [scorer.score(items[rows], types[rows], batch_gaps) for scorer in base_scorers]
        batches.append(candidates_from_scores(score_matrices, per_model))
    if not batches:
        raise ValueError("cannot build fusion candidates for zero examples")
    return Candidates(np.concatenate([batch.items for batch in batches]),
                      np.concatenate([batch.ranks for batch in batches]),
                      np.concatenate([batch.standardized_scores for batch in batches]),
                      batches[0].n_items, np.concatenate([batch.scores for batch in batches]))


def training_rows(n_examples: int, max_examples: int, seed: int, fuser: str) -> np.ndarray:
    """All example indices, or a seeded random subset of max_examples of them, in order.

    Fusers with the same max_examples and seed pick the same rows, so one candidate set
    (training_candidates) can fit them all.
    """
    if n_examples == 0:
        raise ValueError(f"{fuser} cannot be fitted on zero examples")
    if n_examples <= max_examples:
        return np.arange(n_examples)
    return np.sort(np.random.default_rng(seed).choice(n_examples, max_examples, replace=False))


def training_candidates(base_scorers: Sequence[Scorer], examples, rows: np.ndarray, per_model: int,
                        batch_size: int = SCORING_BATCH, given: Candidates | None = None) -> Candidates:
    """The candidates of examples[rows]: `given` when a caller built them already (checked to
    cover the same rows), else built here."""
    if given is not None:
        if len(given) != len(rows):
            raise ValueError(f"the candidates given cover {len(given)} examples, the fit uses {len(rows)}")
        return given
    gaps = getattr(examples, "gaps", None)
    return build_candidates(base_scorers, examples.items[rows], examples.types[rows], per_model, batch_size,
                            None if gaps is None else gaps[rows])


def training_set(fuser, examples, batch_size: int, given: Candidates | None) -> tuple[np.ndarray, Candidates]:
    """(rows, candidates) a model-level fuser fits on: training_rows with its max_train_examples
    and seed, and their candidates (given by a caller who built them for other fusers, or built)."""
    rows = training_rows(len(examples.targets), fuser.max_train_examples, fuser.seed, fuser.name)
    return rows, training_candidates(fuser.base_scorers, examples, rows, fuser.candidates_per_model, batch_size,
                                     given)


def candidates_from_scores(score_matrices: Sequence[np.ndarray], per_model: int) -> Candidates:
    """Candidate slots, per-model list positions and z-scores from M score matrices."""
    widths = {scores.shape for scores in score_matrices}
    if len(widths) != 1:
        raise ValueError(f"base models disagree on the score matrix shape: {sorted(widths)}")
    top_lists = [top_k(scores, per_model) for scores in score_matrices]
    slot_items = _drop_repeats(np.concatenate(top_lists, axis=1))
    ranks = np.stack([_rank_in(top, slot_items) for top in top_lists], axis=-1)
    standardized = np.stack([_standardized_at(scores, slot_items) for scores in score_matrices], axis=-1)
    raw = np.stack([np.take_along_axis(np.asarray(scores, dtype=np.float32), slot_items, axis=1)
                    for scores in score_matrices], axis=-1)
    raw[~np.isfinite(raw) | (slot_items == 0)[:, :, None]] = np.nan
    n_items = score_matrices[0].shape[1] - 1
    return Candidates(slot_items, ranks.astype(np.int32), standardized.astype(np.float32), n_items, raw)


_PREFIX_ROWS_PER_CHUNK = 4096  # bounds the [rows, slots, prefix length] comparison (~25 MB at 300 x 20)


def prefix_signals(candidate_items: np.ndarray, prefixes: np.ndarray) -> np.ndarray:
    """[n, S, 2]: times each candidate occurs in its example's prefix, and 1 / steps since the last time.

    prefixes [n, L] are left-padded with item 0, the last column the latest event; empty
    candidate slots (item 0) get zeros. For the prefix [5, 7, 5]: item 5 occurs twice, last
    1 step ago (recency 1); item 7 once, 2 steps ago (1/2); item 9 never (0, 0).
    """
    candidate_items, prefixes = np.asarray(candidate_items), np.asarray(prefixes)
    if len(candidate_items) != len(prefixes):
        raise ValueError(f"{len(candidate_items)} candidate rows for {len(prefixes)} prefixes")
    signals = np.zeros((*candidate_items.shape, 2), dtype=np.float64)
    for start in range(0, len(prefixes), _PREFIX_ROWS_PER_CHUNK):
        rows = slice(start, start + _PREFIX_ROWS_PER_CHUNK)
        matches = (candidate_items[rows, :, None] == prefixes[rows, None, :]) & (candidate_items[rows, :, None] > 0)
        count = matches.sum(axis=2)
        steps_since_last = matches[:, :, ::-1].argmax(axis=2) + 1  # 1: the last column
        signals[rows, :, 0] = count
        signals[rows, :, 1] = np.where(count > 0, 1.0 / steps_since_last, 0.0)
    return signals


def candidate_target_ranks(candidates: Candidates, slot_scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Full-catalog target ranks of a fuser that scores the candidates and gives -inf elsewhere.

    The same conservative rule as jobs.evaluation.metrics.target_ranks, without building the dense
    [n, n_items + 1] matrix: a candidate target is beaten or tied by the filled slots scoring
    at least as much; a target outside the candidates ties every other -inf item and so
    ranks last (n_items).
    """
    # float32, as scatter_to_catalog stores them: scores that differ only beyond float32
    # precision tie in served scores, so they must tie here too.
    slot_scores = np.asarray(slot_scores, dtype=np.float32)
    filled = candidates.filled
    is_target = filled & (candidates.items == np.asarray(targets)[:, None])
    found = is_target.any(axis=1)
    target_score = np.take_along_axis(slot_scores, is_target.argmax(axis=1)[:, None], axis=1)
    at_least_as_high = (filled & (slot_scores >= target_score)).sum(axis=1)
    return np.where(found, at_least_as_high, candidates.n_items).astype(np.int64)


def scatter_to_catalog(candidates: Candidates, slot_scores: np.ndarray) -> np.ndarray:
    """Dense scores [n, n_items + 1]: slot scores at the candidates, -inf everywhere else."""
    dense = np.full((len(candidates), candidates.n_items + 1), -np.inf, dtype=np.float32)
    rows, slots = np.nonzero(candidates.filled)
    dense[rows, candidates.items[rows, slots]] = slot_scores[rows, slots]
    return dense


def select_scorers(base_scorers: Mapping[str, Scorer], names: Sequence[str], fuser: str) -> list[Scorer]:
    """The named scorers in order, with a clear error if the caller did not provide one."""
    missing = [name for name in names if name not in base_scorers]
    if missing:
        raise ValueError(f"{fuser} needs base model(s) {missing}; got {sorted(base_scorers)}")
    return [base_scorers[name] for name in names]


def write_fuser(directory: str, description: dict, arrays: dict[str, np.ndarray] | None = None) -> None:
    """A fuser on disk: JSON for its description and small parameters, .npz for arrays (no pickle)."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, FUSER_FILE), "w") as handle:
        json.dump(description, handle, indent=2, sort_keys=True)
    if arrays:
        np.savez(os.path.join(directory, ARRAYS_FILE), **arrays)


def read_fuser(directory: str, expected_name: str) -> tuple[dict, dict[str, np.ndarray]]:
    path = os.path.join(directory, FUSER_FILE)
    try:
        with open(path) as handle:
            description = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read fuser description {path}: {error}") from None
    if description.get("name") != expected_name:
        raise ValueError(f"{path} describes {description.get('name')!r}, expected {expected_name!r}")
    arrays_path = os.path.join(directory, ARRAYS_FILE)
    arrays = {}
    if os.path.exists(arrays_path):
        with np.load(arrays_path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    return description, arrays


def _drop_repeats(slot_items: np.ndarray) -> np.ndarray:
    """Empty (0) every slot whose item already appears in an earlier slot of the same row."""
    order = np.argsort(slot_items, axis=1, kind="stable")  # stable: first occurrence stays first
    sorted_items = np.take_along_axis(slot_items, order, axis=1)
    repeat_sorted = np.zeros(sorted_items.shape, dtype=bool)
    repeat_sorted[:, 1:] = sorted_items[:, 1:] == sorted_items[:, :-1]
    repeat = np.empty_like(repeat_sorted)
    np.put_along_axis(repeat, order, repeat_sorted, axis=1)
    return np.where(repeat, 0, slot_items).astype(np.int64)


def _rank_in(top_list: np.ndarray, slot_items: np.ndarray) -> np.ndarray:
    """1-based position in top_list of each slot item, 0 if the model did not list it.

    One sorted search over all rows at once (each row's items shifted into a range of its
    own), not an [n, S, C] comparison: that cube was a fifth of fuse and evaluate. A row of
    top_list holds distinct items (top_k's), so each slot item has at most one position.
    """
    top_list, slot_items = np.asarray(top_list, dtype=np.int64), np.asarray(slot_items, dtype=np.int64)
    n, width = top_list.shape[0], int(max(top_list.max(initial=0), slot_items.max(initial=0))) + 1
    row_offsets = np.arange(n, dtype=np.int64)[:, None] * width
    listed_keys = (top_list + row_offsets).ravel()
    order = np.argsort(listed_keys, kind="stable")
    sorted_keys = listed_keys[order]
    wanted = (slot_items + row_offsets).ravel()
    at = np.minimum(np.searchsorted(sorted_keys, wanted), max(len(sorted_keys) - 1, 0))
    if not len(sorted_keys):
        return np.zeros(slot_items.shape, dtype=np.int64)
    listed = (sorted_keys[at] == wanted) & (slot_items.ravel() > 0)
    return np.where(listed, order[at] % top_list.shape[1] + 1, 0).reshape(slot_items.shape)


def _standardized_at(scores: np.ndarray, slot_items: np.ndarray) -> np.ndarray:
    """A model's scores at the slot items, z-scored over the example's whole catalog.

    Standardising within the example makes scores of differently scaled models (counts,
    dot products) comparable features for one meta-ranker.
    """
    catalog = np.asarray(scores, dtype=np.float64)[:, 1:]
    finite = np.isfinite(catalog)
    count = np.maximum(finite.sum(axis=1, keepdims=True), 1)
    mean = np.where(finite, catalog, 0.0).sum(axis=1, keepdims=True) / count
    variance = np.where(finite, (catalog - mean) ** 2, 0.0).sum(axis=1, keepdims=True) / count
    std = np.sqrt(variance)
    at_slots = np.take_along_axis(np.asarray(scores, dtype=np.float64), slot_items, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(std > 0, (at_slots - mean) / np.where(std > 0, std, 1.0), 0.0)
    z = np.nan_to_num(z, nan=0.0, posinf=Z_SCORE_LIMIT, neginf=-Z_SCORE_LIMIT)
    return np.where(slot_items > 0, z, 0.0)
