"""Full-catalog ranking evaluation shared by every model, baseline and fusion variant.

Every scorer in the system is duck-typed: a `name` and `score(items, types, gaps=None)`
returning a float matrix [n_examples, n_items + 1] whose column 0 (padding /
out-of-vocabulary) is never a valid recommendation. Examples that carry time-gap buckets
(`examples.gaps`) have them passed along, batch by batch. The target of each example is
ranked against the whole catalog -- no sampled negatives, which are known to inflate and
even reorder models.

Ties are handled conservatively: a target that shares its score with other items ranks
below all of them. A model that gives every item the same score therefore gets the worst
rank instead of a lucky one, and a model cannot gain by producing ties.

Every example has exactly one target, so Recall@k is also HitRate@k (the share of examples
whose target is in the top k): the reports carry it once, as recall@k.

Beyond accuracy, `evaluate_full_catalog` also measures the top-k lists themselves, from
the same batched scores (no list is kept after its batch):
- coverage@k: the share of catalog items (1..n_items) in at least one example's top k;
- avg_popularity@k: the mean, over every recommended slot of every top-k list, of the
  item's training-day popularity divided by the catalog's largest popularity, so 1.0 means
  "only the best-seller" and 0.0 "only items nobody touched on the training days".
A slot whose score is -inf holds no recommendation (every model says "never" with -inf)
and counts for neither.

The exclude-already-seen switch gives every item of an example's history -inf before
ranking, as a shop that never re-shows what the user just looked at would. A target that
is itself in the history can then never be recommended: it gets rank NOT_RECOMMENDED, a
miss at every cutoff. That is the conservative reading: the metric measures what the user
would actually be shown. Dropping those examples instead would report more than users get,
the more so on repeat-heavy traffic; either way every model sees the same examples.

`example_segments` splits examples into new vs returning users, short vs long histories
and repeat vs new targets (is the next item already in the history?), and
`bootstrap_intervals` gives percentile-bootstrap confidence intervals from per-example
contributions (`metric_contributions`), which are computed once per model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from jobs.common.config import default_of
from jobs.common.schema import SPLIT, USER_ID

DEFAULT_KS = (20,)  # evaluate_scorer's default; the nightly report uses config["evaluation"]["ks"]
METRIC_KINDS = ("recall", "mrr", "ndcg")
PRIMARY_METRIC = default_of("mlflow.primary_metric")

# Rank of a target the exclude-seen switch removed: beyond every cutoff, so a miss at every
# k, yet small enough that 1 / rank and log2(rank + 1) stay finite in float64.
NOT_RECOMMENDED = np.iinfo(np.int64).max

SEGMENT_NEW_USERS = "new_users"
SEGMENT_RETURNING_USERS = "returning_users"
SEGMENT_SHORT_HISTORY = "short_history"
SEGMENT_LONG_HISTORY = "long_history"
# The next item is already in the history the model sees (a re-view, a comparison, a
# re-purchase), or it is not. Shops differ most here: a model weak on repeats shows at once.
SEGMENT_REPEAT_TARGET = "repeat_target"
SEGMENT_NEW_TARGET = "new_target"
SEGMENTS = (SEGMENT_NEW_USERS, SEGMENT_RETURNING_USERS, SEGMENT_SHORT_HISTORY, SEGMENT_LONG_HISTORY,
            SEGMENT_REPEAT_TARGET, SEGMENT_NEW_TARGET)


class Scorer(Protocol):
    """What evaluation, fusion and batch recommendation need from a model."""

    name: str

    def score(self, items: np.ndarray, types: np.ndarray, gaps: np.ndarray | None = None) -> np.ndarray:
        """Scores [n, n_items + 1] for left-padded histories items/types [n, L].

        gaps: int32 [n, L] time-gap buckets parallel to items (schema.GAP_BUCKET_EDGES_SECONDS),
        or None when unknown (a model that uses gaps then reads bucket 0). Scorers that do not
        use gaps accept and ignore them; wrappers forward them.
        """


class CatalogMaskedScorer:
    """A scorer whose items outside `allowed` score -inf: never recommended, ranked last.

    Vocabularies persist across nights (jobs/etl/vocabulary.py), so a model's item space can hold
    items that have left the catalog; they stay in the model (their past events still teach
    it) but must not take a slot of a top-k list. Every other attribute is the wrapped
    scorer's, so fusers built on masked base models see the same item vectors.
    """

    def __init__(self, scorer: Scorer, allowed: np.ndarray):
        self.scorer = scorer
        self.allowed = np.asarray(allowed, dtype=bool)

    def score(self, items: np.ndarray, types: np.ndarray, gaps: np.ndarray | None = None) -> np.ndarray:
        scores = np.asarray(self.scorer.score(items, types, gaps))
        if scores.shape[1:] != self.allowed.shape:
            raise ValueError(f"{self.name}: scores have {scores.shape[1]} columns, "
                             f"the catalog mask {len(self.allowed)}")
        return np.where(self.allowed[None, :], scores, -np.inf).astype(scores.dtype, copy=False)

    def __getattr__(self, attribute):
        return getattr(self.scorer, attribute)


class MemoizedScorer:
    """A scorer that remembers its latest answer, so the same batch asked again is not scored again.

    Fusers score their members on the very batch that the members have just answered on
    their own: the served search request asks the user encoder for its features and then
    the fusion, which asks it again; fuse and evaluate score each batch with every member
    and then with every fuser (evaluate_full_catalog_many). One answer is all those need,
    so memory stays one batch per member. It is kept by the exact content of the request
    (items, types, gaps), if it fits in max_bytes, and returned read-only: a caller that
    changed it in place would change the next caller's answer.
    """

    def __init__(self, scorer: Scorer, max_bytes: int):
        self.scorer = scorer
        self.latest = LatestAnswer(max_bytes)

    def score(self, items: np.ndarray, types: np.ndarray, gaps: np.ndarray | None = None) -> np.ndarray:
        return self.latest.get(request_key(items, types, gaps),
                               lambda: _read_only(np.asarray(self.scorer.score(items, types, gaps))))

    def __getattr__(self, attribute):
        return getattr(self.scorer, attribute)


class LatestAnswer:
    """The answer to the latest request, by the request's key, if its nbytes fit in max_bytes."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.key, self.answer = None, None
        self.hits = self.misses = 0

    def get(self, key, compute):
        if self.answer is not None and key == self.key:
            self.hits += 1
            return self.answer
        self.misses += 1
        self.key, self.answer = None, None  # the old answer goes before the new one is computed
        answer = compute()
        if answer.nbytes <= self.max_bytes:
            self.key, self.answer = key, answer
        return answer


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


def request_key(items: np.ndarray, types: np.ndarray, gaps: np.ndarray | None) -> bytes:
    """The exact content of a request: shapes, dtypes and values of its arrays."""
    import hashlib

    digest = hashlib.blake2b(digest_size=20)
    for array in (items, types, gaps):
        if array is None:
            digest.update(b"none")
            continue
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.digest()


@dataclass(frozen=True)
class FullCatalogResult:
    """One scorer's pass over all examples: what every report is computed from."""

    ranks: np.ndarray  # int64 [n]: the target's 1-based rank, NOT_RECOMMENDED if excluded
    list_metrics: dict[str, float]  # coverage@k and (given popularity) avg_popularity@k

    def metrics(self, ks=DEFAULT_KS) -> dict[str, float]:
        """recall@k, mrr@k and ndcg@k of these ranks."""
        return ranking_metrics(self.ranks, ks)


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
    ranks = _check_ranks(ranks)
    return {f"{kind}@{k}": float(_contributions(ranks, kind, k).mean())
            for k in _check_ks(ks) for kind in METRIC_KINDS}


def metric_contributions(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Per-example values whose mean is the metric, e.g. 'mrr@20' -> 1/rank or 0 (float64 [n]).

    Computed once per model, they make bootstrap intervals and segment splits cheap.
    """
    kind, k = parse_metric(metric)
    return _contributions(_check_ranks(ranks), kind, k)


# Examples scored per call. The fusers' candidate builder asks its members for batches of
# this size too, so a member's answer to a batch of the evaluation is the answer a fuser
# asks for next (MemoizedScorer), and 512 x 50k items is ~100 MB of float32 scores.
SCORING_BATCH = 512


def scorer_ranks(scorer: Scorer, examples, batch_size: int = SCORING_BATCH, *, exclude_seen: bool = False) -> np.ndarray:
    """Target ranks of a scorer over all examples, scoring batch_size examples at a time.

    exclude_seen: rank without the example's history items (see the module docstring).
    """
    return np.concatenate([ranks for _, ranks in _scored_batches(scorer, examples, batch_size, exclude_seen)])


def evaluate_scorer(scorer: Scorer, examples, ks=DEFAULT_KS, batch_size: int = SCORING_BATCH, *,
                    exclude_seen: bool = False) -> dict[str, float]:
    """Full-catalog ranking metrics of one scorer on Examples (items, types, targets)."""
    return ranking_metrics(scorer_ranks(scorer, examples, batch_size, exclude_seen=exclude_seen), ks)


def evaluate_scorers(scorers: dict, examples, ks=DEFAULT_KS, batch_size: int = SCORING_BATCH) -> dict[str, dict]:
    """{name: evaluate_scorer's metrics} of every scorer, batch by batch with every scorer
    in turn on each batch (see evaluate_full_catalog_many for why)."""
    ranks = {name: [] for name in scorers}
    for batch in _batches(examples, batch_size, ", ".join(scorers)):
        for name, scorer in scorers.items():
            ranks[name].append(_scored(scorer, examples, batch, exclude_seen=False)[1])
    return {name: ranking_metrics(np.concatenate(parts), ks) for name, parts in ranks.items()}


def evaluate_full_catalog(scorer: Scorer, examples, ks=DEFAULT_KS, popularity: np.ndarray | None = None,
                          exclude_seen: bool = False, batch_size: int = SCORING_BATCH) -> FullCatalogResult:
    """Target ranks plus coverage@k and avg_popularity@k of the top-k lists, in one pass.

    popularity: float [n_items + 1], training-day counts by item index (entry 0 ignored);
    without it avg_popularity@k is not computed.
    """
    name = getattr(scorer, "name", "scorer")
    return evaluate_full_catalog_many({name: scorer}, examples, ks, popularity, exclude_seen, batch_size)[name]


def evaluate_full_catalog_many(scorers: dict, examples, ks=DEFAULT_KS, popularity: np.ndarray | None = None,
                               exclude_seen: bool = False, batch_size: int = SCORING_BATCH) -> dict:
    """{name: evaluate_full_catalog's result} of every scorer, from one pass over the batches.

    Each batch is scored by every scorer in turn (in the dict's order) before the next
    batch: a fuser then asks its members about the batch they have just answered, which
    memoized members (MemoizedScorer) and shared candidates (jobs.fusion.CandidateMemo)
    return without scoring it again, holding one batch, not the whole night.
    """
    ks = _check_ks(ks)
    ranks = {name: [] for name in scorers}
    lists = {}
    for batch in _batches(examples, batch_size, ", ".join(scorers)):
        for name, scorer in scorers.items():
            scores, batch_ranks = _scored(scorer, examples, batch, exclude_seen)
            if name not in lists:
                lists[name] = TopKListStatistics(n_items=scores.shape[1] - 1, ks=ks, popularity=popularity)
            lists[name].add(scores)
            ranks[name].append(batch_ranks)
    return {name: FullCatalogResult(ranks=np.concatenate(ranks[name]), list_metrics=lists[name].metrics())
            for name in scorers}


class TopKListStatistics:
    """Coverage and popularity of top-k lists, accumulated batch by batch.

    Holds one boolean per catalog item and cutoff, and two running sums: never the lists.
    """

    def __init__(self, n_items: int, ks=DEFAULT_KS, popularity: np.ndarray | None = None):
        if n_items < 1:
            raise ValueError(f"the catalog needs at least one item, got n_items={n_items}")
        self.n_items = n_items
        self.ks = _check_ks(ks)
        self.relative_popularity = None if popularity is None else _relative_popularity(popularity, n_items)
        self.recommended = {k: np.zeros(n_items + 1, dtype=bool) for k in self.ks}
        self.filled_slots = {k: 0 for k in self.ks}
        self.popularity_sum = {k: 0.0 for k in self.ks}

    def add(self, scores: np.ndarray) -> None:
        """Take the top max(ks) of each row of scores [n, n_items + 1] into the statistics."""
        scores = np.asarray(scores)
        if scores.ndim != 2 or scores.shape[1] != self.n_items + 1:
            raise ValueError(f"scores must be [n, {self.n_items + 1}], got shape {scores.shape}")
        best = top_k(scores, max(self.ks))  # best first, so best[:, :k] is the top k for every k
        filled = np.take_along_axis(scores, best, axis=1) > -np.inf  # -inf slots recommend nothing
        for k in self.ks:
            items = best[:, :k][filled[:, :k]]
            self.recommended[k][items] = True
            self.filled_slots[k] += items.size
            if self.relative_popularity is not None:
                self.popularity_sum[k] += float(self.relative_popularity[items].sum())

    def metrics(self) -> dict[str, float]:
        """coverage@k (share of items 1..n_items recommended at least once) and avg_popularity@k."""
        metrics = {}
        for k in self.ks:
            metrics[f"coverage@{k}"] = float(self.recommended[k][1:].sum() / self.n_items)
            if self.relative_popularity is not None:
                metrics[f"avg_popularity@{k}"] = self.popularity_sum[k] / max(self.filled_slots[k], 1)
        return metrics


def example_segments(examples, sequences, split: int, long_history_min_events: int) -> dict[str, np.ndarray]:
    """Boolean masks over examples for the segments in SEGMENTS.

    returning_users: the user has an event on a day before the examples' split (split codes
    are ordered in time: train < valid < test), within the feature window; new_users: all
    others, whose history is only earlier events of the same day. The examples' own
    histories cannot tell: they are truncated to max_len, hence the sequences.
    long_history: at least long_history_min_events non-padding events in the example's
    history (event type != 0; an out-of-catalog item is a real event with item index 0),
    counted within the max_len columns; short_history: fewer.
    repeat_target: the target item is among the example's history items (the max_len events
    the models see; index 0, out of catalog or padding, never counts); new_target: all others.
    """
    if long_history_min_events < 1:
        raise ValueError(f"long_history_min_events must be >= 1, got {long_history_min_events}")
    for column in (USER_ID, SPLIT):
        if column not in sequences.columns:
            raise ValueError(f"sequences lack column {column!r} needed to split examples into segments")
    had_earlier_day = sequences[SPLIT].map(lambda splits: bool((np.asarray(splits) < split).any()))
    returning_users = sequences.loc[had_earlier_day.to_numpy(dtype=bool), USER_ID].to_numpy(dtype=object)
    returning = np.isin(np.asarray(examples.user_ids, dtype=object), returning_users)
    long_history = (np.asarray(examples.types) != 0).sum(axis=1) >= long_history_min_events
    targets = np.asarray(examples.targets)
    repeat = (targets > 0) & (np.asarray(examples.items) == targets[:, None]).any(axis=1)
    return {SEGMENT_NEW_USERS: ~returning, SEGMENT_RETURNING_USERS: returning,
            SEGMENT_SHORT_HISTORY: ~long_history, SEGMENT_LONG_HISTORY: long_history,
            SEGMENT_REPEAT_TARGET: repeat, SEGMENT_NEW_TARGET: ~repeat}


def segment_metrics(ranks: np.ndarray, segments: dict[str, np.ndarray], ks=DEFAULT_KS) -> dict[str, dict]:
    """{segment: {"n_examples": n, recall@k, mrr@k, ndcg@k}}; an empty segment has only n_examples."""
    ranks = np.asarray(ranks)
    results = {}
    for name, mask in segments.items():
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != ranks.shape:
            raise ValueError(f"segment {name!r} has a mask of shape {mask.shape} for {ranks.shape} ranks")
        n_examples = int(mask.sum())
        results[name] = {"n_examples": n_examples, **(ranking_metrics(ranks[mask], ks) if n_examples else {})}
    return results


def bootstrap_intervals(contributions: dict[str, np.ndarray], resamples: int, confidence: float, seed: int,
                        groups: np.ndarray | None = None) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap confidence interval of the mean of each per-example vector.

    Every vector is resampled with the same indices, and the indices depend only on (seed,
    n), so two models evaluated on the same examples get paired resamples. Each resample
    costs one gather, O(n x metrics): the contributions are never recomputed.

    groups (e.g. the user of each example) makes it a cluster bootstrap: whole groups are
    drawn with replacement and the resample's value is the mean over all their examples.
    A user's examples are correlated (same tastes, same history), so resampling them one by
    one would pretend there is more independent evidence than there is and give intervals
    that are too narrow.
    """
    if not contributions:
        raise ValueError("bootstrap_intervals needs at least one contribution vector")
    if resamples < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(f"need resamples >= 1 and 0 < confidence < 1, got {resamples} and {confidence}")
    names = list(contributions)
    values = np.stack([np.asarray(contributions[name], dtype=np.float64) for name in names], axis=1)
    if values.shape[0] == 0 or not np.isfinite(values).all():
        raise ValueError(f"contributions must be non-empty and finite; got {values.shape[0]} examples")
    if groups is None:  # every example its own group
        group_sums, group_sizes = values, np.ones(len(values))
    else:
        if len(groups) != len(values):
            raise ValueError(f"groups must give one group per example: {len(groups)} for {len(values)} examples")
        _, group_of_example = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        group_sizes = np.bincount(group_of_example).astype(np.float64)
        group_sums = np.stack([np.bincount(group_of_example, weights=values[:, m]) for m in range(len(names))], axis=1)
    rng = np.random.default_rng(seed)
    n_groups = len(group_sizes)
    means = []
    for _ in range(resamples):
        drawn = rng.integers(0, n_groups, n_groups)
        means.append(group_sums[drawn].sum(axis=0) / group_sizes[drawn].sum())
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.stack(means), [tail, 1.0 - tail], axis=0)
    return {name: (float(low[m]), float(high[m])) for m, name in enumerate(names)}


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


def _scored_batches(scorer: Scorer, examples, batch_size: int, exclude_seen: bool):
    """Yield (scores, target ranks) per batch; with exclude_seen the scores are already masked."""
    for batch in _batches(examples, batch_size, getattr(scorer, "name", "scorer")):
        yield _scored(scorer, examples, batch, exclude_seen)


def _batches(examples, batch_size: int, what: str):
    """Slices of batch_size examples covering them all (a clear error for none)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n_examples = len(examples.targets)
    if n_examples == 0:
        raise ValueError(f"cannot evaluate {what!r} on zero examples")
    return [slice(start, start + batch_size) for start in range(0, n_examples, batch_size)]


def _scored(scorer: Scorer, examples, batch: slice, exclude_seen: bool) -> tuple[np.ndarray, np.ndarray]:
    """(scores, target ranks) of one batch; with exclude_seen the scores are already masked."""
    gaps = getattr(examples, "gaps", None)  # None: examples without timestamps (or a caller's own type)
    scores = scorer.score(examples.items[batch], examples.types[batch], None if gaps is None else gaps[batch])
    targets = examples.targets[batch]
    try:
        if not exclude_seen:
            return scores, target_ranks(scores, targets)
        scores, target_seen = _exclude_history(scores, examples.items[batch], targets)
        return scores, np.where(target_seen, NOT_RECOMMENDED, target_ranks(scores, targets))
    except ValueError as error:
        raise ValueError(f"scorer {scorer.name!r}: {error}") from None


def _exclude_history(scores: np.ndarray, history_items: np.ndarray,
                     targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A copy of scores with each row's history items at -inf, and which targets were among them."""
    scores = np.array(scores, dtype=np.result_type(scores, np.float32))  # a writable float copy
    history_items = np.asarray(history_items, dtype=np.int64)
    if history_items.shape[0] != scores.shape[0] or (history_items.size and history_items.max() >= scores.shape[1]):
        raise ValueError(f"history items {history_items.shape} do not fit scores {scores.shape}")
    # Padding is item 0, so it lands in column 0, which is never ranked anyway.
    np.put_along_axis(scores, history_items, -np.inf, axis=1)
    target_seen = (history_items == np.asarray(targets)[:, None]).any(axis=1)
    return scores, target_seen


def _contributions(ranks: np.ndarray, kind: str, k: int) -> np.ndarray:
    hit = ranks <= k
    if kind == "recall":
        return hit.astype(np.float64)
    if kind == "mrr":
        return np.where(hit, 1.0 / ranks, 0.0)
    # One relevant item, so the ideal DCG is 1 and NDCG = 1 / log2(rank + 1).
    return np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0)


def _relative_popularity(popularity, n_items: int) -> np.ndarray:
    """Popularity by item index divided by the catalog's largest (all zeros if nobody touched anything)."""
    popularity = np.asarray(popularity, dtype=np.float64)
    if popularity.shape != (n_items + 1,):
        raise ValueError(f"popularity must be a vector [n_items + 1] = [{n_items + 1}], got shape {popularity.shape}")
    catalog = popularity[1:]
    if not np.isfinite(catalog).all() or (catalog < 0).any():
        raise ValueError("popularity counts must be finite and non-negative")
    relative = np.zeros(n_items + 1)
    if catalog.max() > 0:
        relative[1:] = catalog / catalog.max()
    return relative


def _check_ranks(ranks) -> np.ndarray:
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or len(ranks) == 0:
        raise ValueError(f"ranking_metrics needs a non-empty 1-d array of ranks, got shape {ranks.shape}")
    if (ranks < 1).any():
        raise ValueError(f"ranks are 1-based; found minimum rank {ranks.min()}")
    return ranks


def _mask_of_best(catalog_scores: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask with exactly k True per row: every score above the k-th best, plus
    the lowest-index items among those tied with the k-th best. O(n x n_items), no full sort."""
    kth_best = _kth_best(catalog_scores, k)[:, None]
    above = catalog_scores > kth_best
    tied = catalog_scores == kth_best
    places_left = k - above.sum(axis=1, keepdims=True)
    first_tied = tied & (np.cumsum(tied, axis=1) <= places_left)
    return above | first_tied


def _kth_best(catalog_scores: np.ndarray, k: int) -> np.ndarray:
    """The k-th best score of each row (what np.partition finds).

    numpy's selection slows down by an order of magnitude on rows where most values are equal
    (12 ms instead of 0.7 ms for 100,000 items, 95% of them at zero), which is what a
    popularity-like member gives a large catalog: most items at its floor. So where a row's
    minimum is held by many items, the selection runs on the values above it only; the
    result is the same value."""
    n_items = catalog_scores.shape[1]
    if np.isnan(catalog_scores).any():  # NaN's place in a partition: leave it to numpy
        return np.partition(catalog_scores, n_items - k, axis=1)[:, n_items - k]
    lowest = catalog_scores.min(axis=1)
    floor_heavy = (catalog_scores == lowest[:, None]).sum(axis=1) > n_items // 2
    kth = np.empty(len(catalog_scores), dtype=catalog_scores.dtype)
    if not floor_heavy.all():
        kth[~floor_heavy] = np.partition(catalog_scores[~floor_heavy], n_items - k, axis=1)[:, n_items - k]
    for row in np.flatnonzero(floor_heavy):
        above_floor = catalog_scores[row][catalog_scores[row] > lowest[row]]
        kth[row] = (lowest[row] if len(above_floor) < k  # the k-th best is at the floor itself
                    else np.partition(above_floor, len(above_floor) - k)[len(above_floor) - k])
    return kth


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
