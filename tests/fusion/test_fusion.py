"""The three fusion levels on fake base models with fixed, hand-made scores."""

import json
import os
from dataclasses import dataclass

import numpy as np
import pytest

from jobs.common.night import Night
from jobs.evaluation.metrics import evaluate_scorer, target_ranks
from jobs.fusion import (build_candidates, candidate_target_ranks, candidates_from_scores, scatter_to_catalog,
                         training_rows)
from jobs.fusion.decision_level import RankFusion, equal_weight_vote, rrf_slot_scores, simplex_grid
from jobs.fusion.feature_level import FeatureFusion
from jobs.fusion.model_level import PREFIX_FEATURES, StackingRanker, prefix_signals

NEG_INF = -np.inf
N_ITEMS = 30
HISTORY = 3


@dataclass
class FakeExamples:
    items: np.ndarray
    types: np.ndarray
    targets: np.ndarray


@dataclass
class FakeExamplesWithGaps(FakeExamples):
    gaps: np.ndarray


def numbered_gaps(n, length=HISTORY):
    """Gap buckets 10 * row + column: every row's gaps differ, so a row mix-up shows."""
    return (10 * np.arange(n)[:, None] + np.arange(length)[None, :]).astype(np.int32)


def next_item(last_items):
    """The fake world's rule: the next item is always the one after the last, cyclically."""
    return last_items % N_ITEMS + 1


def make_examples(n, seed, n_items=N_ITEMS):
    rng = np.random.default_rng(seed)
    items = rng.integers(1, n_items + 1, size=(n, HISTORY)).astype(np.int32)
    return FakeExamples(items, np.ones_like(items), next_item(items[:, -1]))


class FixedScorer:
    """The same score row for every example."""

    def __init__(self, name, row):
        self.name, self.row = name, np.asarray(row, dtype=np.float32)

    def score(self, items, types, gaps=None):
        return np.tile(self.row, (len(items), 1))


class PerfectScorer:
    """Knows the rule: the true next item scores 1, every other item 0."""

    name = "perfect"

    def score(self, items, types, gaps=None):
        scores = np.zeros((len(items), N_ITEMS + 1), np.float32)
        scores[np.arange(len(items)), next_item(items[:, -1])] = 1.0
        scores[:, 0] = NEG_INF
        return scores


class RandomScorer:
    """Uninformative: a fixed random score row per last item, unrelated to the rule."""

    name = "random"

    def __init__(self, seed=0):
        self.table = np.random.default_rng(seed).normal(size=(N_ITEMS + 1, N_ITEMS + 1)).astype(np.float32)
        self.table[:, 0] = NEG_INF

    def score(self, items, types, gaps=None):
        return self.table[items[:, -1]]


class GapRecordingScorer(PerfectScorer):
    """The perfect model, keeping every gaps argument it is given."""

    name = "recording"

    def __init__(self):
        self.received = []

    def score(self, items, types, gaps=None):
        self.received.append(None if gaps is None else gaps.copy())
        return super().score(items, types)


# --- shared candidate machinery ------------------------------------------------------

def test_candidates_union_lists_without_repeats():
    model_a = np.array([[NEG_INF, 2.0, 1.0, 3.0]])  # top-2: item 3, item 1
    model_b = np.array([[NEG_INF, 5.0, 4.0, 0.0]])  # top-2: item 1, item 2
    candidates = candidates_from_scores([model_a, model_b], per_model=2)
    # Slots: A's list [3, 1] then B's [1, 2]; the second 1 is a repeat and is emptied.
    assert candidates.items.tolist() == [[3, 1, 0, 2]]
    # Positions (0 = not listed): item 3 -> A 1st; item 1 -> A 2nd, B 1st; item 2 -> B 2nd.
    assert candidates.ranks[0].tolist() == [[1, 0], [2, 1], [0, 0], [0, 2]]
    # Model A over the catalog [2, 1, 3]: mean 2, std sqrt(2/3); item 3 -> (3 - 2) / 0.816497 = 1.224745.
    assert candidates.standardized_scores[0, 0, 0] == pytest.approx(1.224745, abs=1e-5)
    assert candidates.n_items == 3


def test_list_positions_of_slot_items_agree_with_a_direct_comparison():
    from jobs.fusion import _rank_in

    rng = np.random.default_rng(5)
    top_lists = np.stack([rng.permutation(np.arange(1, 30))[:7] for _ in range(25)])  # distinct per row
    slot_items = rng.integers(0, 30, size=(25, 12))  # 0: an empty slot, never listed
    direct = slot_items[:, :, None] == top_lists[:, None, :]
    expected = np.where(direct.any(axis=2) & (slot_items > 0), direct.argmax(axis=2) + 1, 0)
    assert _rank_in(top_lists, slot_items).tolist() == expected.tolist()
    # By hand: row [4, 9] lists 9 second and 4 first; 5 is not listed, 0 is an empty slot.
    assert _rank_in(np.array([[4, 9]]), np.array([[9, 5, 0, 4]])).tolist() == [[2, 0, 0, 1]]


class CountingScorer(FixedScorer):
    def __init__(self, name, row):
        super().__init__(name, row)
        self.calls = 0

    def score(self, items, types, gaps=None):
        self.calls += 1
        return super().score(items, types)


def test_fusers_of_the_same_members_share_one_candidate_set_per_request():
    from jobs.fusion import CandidateMemo

    a, b = CountingScorer("a", [NEG_INF, 0.9, 0.5, 0.1]), CountingScorer("b", [NEG_INF, 0.2, 0.8, 0.5])
    memo = CandidateMemo(max_bytes=10**6)
    rrf, vote = RankFusion([a, b], candidates_per_model=2), equal_weight_vote([a, b], candidates_per_model=2)
    rrf.candidate_memo = vote.candidate_memo = memo
    types = np.ones_like(ONE_EXAMPLE)
    fused, voted = rrf.score(ONE_EXAMPLE, types), vote.score(ONE_EXAMPLE.copy(), types)
    assert (a.calls, b.calls) == (1, 1) and (memo.hits, memo.misses) == (1, 1)
    # The same scores as without the memo.
    alone = RankFusion([a, b], candidates_per_model=2)
    assert np.array_equal(fused, alone.score(ONE_EXAMPLE, types))
    assert np.array_equal(voted, equal_weight_vote([a, b], candidates_per_model=2).score(ONE_EXAMPLE, types))
    shared = memo.get([a, b], 2, ONE_EXAMPLE, types, None, lambda: pytest.fail("built again"))
    with pytest.raises(ValueError):  # a shared set is read-only
        shared.items[0, 0] = 5
    # Other members (or their order), or another C, are other sets.
    for members, per_model in (([b, a], 2), ([a, b], 1)):
        other = RankFusion(members, candidates_per_model=per_model)
        other.candidate_memo = memo
        other.score(ONE_EXAMPLE, types)
    assert (memo.hits, memo.misses) == (2, 3)


def test_candidate_target_ranks_agree_with_dense_full_catalog_ranks():
    rng = np.random.default_rng(3)
    score_matrices = [rng.integers(0, 4, size=(40, 13)).astype(np.float64) for _ in range(2)]
    candidates = candidates_from_scores(score_matrices, per_model=3)
    slot_scores = rng.integers(0, 3, size=candidates.items.shape).astype(np.float64)  # many ties
    targets = rng.integers(1, 13, size=40)
    dense = scatter_to_catalog(candidates, slot_scores)
    assert candidate_target_ranks(candidates, slot_scores, targets).tolist() == target_ranks(dense, targets).tolist()


# --- decision level: reciprocal-rank fusion -------------------------------------------

MODEL_A = FixedScorer("a", [NEG_INF, 0.9, 0.5, 0.1])  # ranks: item 1 -> 1, item 2 -> 2, item 3 -> 3
MODEL_B = FixedScorer("b", [NEG_INF, 0.2, 0.8, 0.5])  # ranks: item 2 -> 1, item 3 -> 2, item 1 -> 3
ONE_EXAMPLE = np.ones((1, HISTORY), np.int32)


def test_grid_target_ranks_equal_candidate_target_ranks_for_every_weight_vector():
    from jobs.fusion.decision_level import TargetRanksOnGrid, rrf_contributions

    rng = np.random.default_rng(8)
    score_matrices = [rng.integers(0, 5, size=(60, 16)).astype(np.float64) for _ in range(3)]  # ties
    candidates = candidates_from_scores(score_matrices, per_model=4)
    targets = rng.integers(1, 16, size=60)  # some outside every list: they rank last (16)
    contributions = rrf_contributions(candidates, rrf_k=2.0)
    on_grid = TargetRanksOnGrid(candidates, contributions, targets)
    assert 0 < len(on_grid.found) < 60
    for weights in simplex_grid(3, 4):
        expected = candidate_target_ranks(candidates, contributions @ weights, targets)
        assert on_grid.ranks(weights).tolist() == expected.tolist()


def test_rrf_scores_by_hand():
    fusion = RankFusion([MODEL_A, MODEL_B], candidates_per_model=3, rrf_k=1, weights=[0.75, 0.25],
                        prefix_list=False)
    scores = fusion.score(ONE_EXAMPLE, ONE_EXAMPLE)
    # item 1: 0.75/(1+1) + 0.25/(1+3) = 0.4375
    # item 2: 0.75/(1+2) + 0.25/(1+1) = 0.375
    # item 3: 0.75/(1+3) + 0.25/(1+2) = 0.270833
    assert scores[0, 0] == NEG_INF
    assert scores[0, 1:] == pytest.approx([0.4375, 0.375, 0.2708333])


def test_rrf_items_outside_a_models_list_get_nothing_from_it():
    fusion = RankFusion([MODEL_A, MODEL_B], candidates_per_model=2, rrf_k=1, weights=[0.75, 0.25],
                        prefix_list=False)
    # Top-2 lists: A [1, 2], B [2, 3].
    # item 1: 0.75/2 = 0.375; item 2: 0.75/3 + 0.25/2 = 0.375; item 3: 0.25/3 = 0.083333
    assert fusion.score(ONE_EXAMPLE, ONE_EXAMPLE)[0, 1:] == pytest.approx([0.375, 0.375, 0.0833333])
    # With one candidate each (A: item 1, B: item 2), item 3 is in no list: -inf.
    only_top = RankFusion([MODEL_A, MODEL_B], candidates_per_model=1, rrf_k=1, weights=[0.75, 0.25],
                          prefix_list=False)
    assert only_top.score(ONE_EXAMPLE, ONE_EXAMPLE)[0].tolist() == [NEG_INF, 0.375, 0.125, NEG_INF]


def test_rrf_with_the_prefix_as_one_more_list_by_hand():
    # Prefix [3, 2, 3]: item 3 last seen 1 step ago, item 2 two steps ago, item 1 not in it.
    fusion = RankFusion([MODEL_A, MODEL_B], candidates_per_model=3, rrf_k=1, weights=[0.5, 0.25, 0.25])
    scores = fusion.score(np.array([[3, 2, 3]], np.int32), np.ones((1, HISTORY), np.int32))
    # item 1: 0.5/(1+1) + 0.25/(1+3) + 0            = 0.3125
    # item 2: 0.5/(1+2) + 0.25/(1+1) + 0.25/(1+2)   = 0.375
    # item 3: 0.5/(1+3) + 0.25/(1+2) + 0.25/(1+1)   = 0.333333
    assert scores[0, 1:] == pytest.approx([0.3125, 0.375, 0.3333333])
    assert fusion.weight_by_model == {"a": 0.5, "b": 0.25, "prefix_recency": 0.25}


def test_rrf_learns_to_weigh_the_prefix_when_shoppers_return():
    fusion = RankFusion([RandomScorer()], candidates_per_model=N_ITEMS, rrf_k=60)
    summary = fusion.fit(make_returning_examples(200, seed=35), metric="ndcg@20", grid_steps=4)
    assert summary["weights"]["prefix_recency"] > summary["weights"]["random"]
    assert evaluate_scorer(fusion, make_returning_examples(100, seed=36), ks=(1,))["recall@1"] == 1.0


def test_an_rrf_fuser_saved_before_the_prefix_list_still_loads(tmp_path):
    old = RankFusion([MODEL_A, MODEL_B], candidates_per_model=3, rrf_k=1, weights=[0.75, 0.25], prefix_list=False)
    old.save(str(tmp_path))
    description = json.loads((tmp_path / "fuser.json").read_text())
    del description["prefix_list"]  # as written before the key existed
    (tmp_path / "fuser.json").write_text(json.dumps(description))
    loaded = RankFusion.load(str(tmp_path), {"a": MODEL_A, "b": MODEL_B})
    assert not loaded.prefix_list
    np.testing.assert_array_equal(loaded.score(ONE_EXAMPLE, ONE_EXAMPLE), old.score(ONE_EXAMPLE, ONE_EXAMPLE))


def test_equal_weight_vote_and_slot_scores():
    vote = equal_weight_vote([MODEL_A, MODEL_B], candidates_per_model=3, rrf_k=1)
    assert vote.name == "fusion_vote"
    # item 1: 0.5/2 + 0.5/4 = 0.375; item 2: 0.5/3 + 0.5/2 = 0.416667; item 3: 0.5/4 + 0.5/3 = 0.291667
    assert vote.score(ONE_EXAMPLE, ONE_EXAMPLE)[0, 1:] == pytest.approx([0.375, 0.4166667, 0.2916667])
    candidates = candidates_from_scores([MODEL_A.score(ONE_EXAMPLE, None)], per_model=3)
    assert rrf_slot_scores(candidates, np.array([1.0]), rrf_k=0).tolist() == [[1.0, 0.5, 1 / 3]]


def test_build_candidates_hands_each_batch_its_own_gaps():
    recorder = GapRecordingScorer()
    items = np.ones((5, HISTORY), np.int32)
    build_candidates([recorder], items, items, per_model=2, batch_size=2, gaps=numbered_gaps(5))
    # Batches of 2: rows 0-1, 2-3, 4.
    assert [gaps.tolist() for gaps in recorder.received] == [numbered_gaps(5)[rows].tolist()
                                                             for rows in (slice(0, 2), slice(2, 4), slice(4, 5))]
    recorder.received.clear()
    build_candidates([recorder], items, items, per_model=2, batch_size=2)
    assert recorder.received == [None, None, None]


def test_rank_fusion_passes_gaps_to_its_base_models():
    recorder = GapRecordingScorer()
    fusion = RankFusion([recorder, RandomScorer()], candidates_per_model=2)
    examples = FakeExamplesWithGaps(*vars(make_examples(3, seed=21)).values(), gaps=numbered_gaps(3))
    fusion.fit(examples, grid_steps=1)  # fit reads the examples' own gaps
    fusion.score(examples.items[1:], examples.types[1:], examples.gaps[1:])
    assert [gaps.tolist() for gaps in recorder.received] == [examples.gaps.tolist(), examples.gaps[1:].tolist()]


def test_stacking_passes_gaps_of_its_training_rows_to_its_base_models():
    recorder = GapRecordingScorer()
    stacking = StackingRanker([recorder], popularity=np.ones(N_ITEMS + 1), candidates_per_model=2,
                              max_train_examples=4, seed=0)
    examples = FakeExamplesWithGaps(*vars(make_examples(6, seed=22)).values(), gaps=numbered_gaps(6))
    stacking.fit(examples)
    rows = training_rows(6, 4, 0, "fusion_stacking")  # 4 of the 6 examples: their gaps, row for row
    stacking.score(examples.items[:1], examples.types[:1], examples.gaps[:1])
    assert [gaps.tolist() for gaps in recorder.received] == [examples.gaps[rows].tolist(), examples.gaps[:1].tolist()]
    assert len(rows) == 4


def test_simplex_grid_covers_the_simplex():
    grid = simplex_grid(3, 2)  # multiples of 1/2 summing to 1: the 3 corners and 3 mid-edges
    assert sorted(map(tuple, grid.tolist())) == [(0, 0, 1), (0, 0.5, 0.5), (0, 1, 0), (0.5, 0, 0.5),
                                                 (0.5, 0.5, 0), (1, 0, 0)]


def test_grid_search_trusts_the_perfect_model():
    valid = make_examples(200, seed=1)
    fusion = RankFusion([RandomScorer(), PerfectScorer()], candidates_per_model=5, rrf_k=60)
    summary = fusion.fit(valid, metric="ndcg@20", grid_steps=4)
    assert summary["best"] == pytest.approx(1.0)
    assert summary["weights"]["perfect"] > summary["weights"]["random"]
    assert summary["equal_weights"] <= summary["best"]
    test = make_examples(100, seed=2)
    assert evaluate_scorer(fusion, test)["ndcg@20"] == pytest.approx(1.0)


# --- model level: stacking ------------------------------------------------------------

def test_stacking_prefers_the_perfect_model():
    stacking = StackingRanker([RandomScorer(), PerfectScorer()], popularity=np.ones(N_ITEMS + 1),
                              candidates_per_model=5)
    summary = stacking.fit(make_examples(300, seed=4))
    coefficients = summary["coefficients"]
    assert coefficients["perfect.reciprocal_rank"] > abs(coefficients["random.reciprocal_rank"])
    assert coefficients["perfect.z_score"] > abs(coefficients["random.z_score"])
    assert summary["n_targets_in_candidates"] == 300  # the perfect model always lists the target
    # Unseen examples: the target is the most probable candidate every time.
    assert evaluate_scorer(stacking, make_examples(100, seed=5), ks=(1,))["recall@1"] == 1.0


def test_stacking_explains_when_no_target_is_a_candidate():
    never = FixedScorer("never", np.r_[NEG_INF, np.arange(N_ITEMS, 0, -1)])  # always lists items 1, 2
    examples = FakeExamples(np.full((5, HISTORY), 5, np.int32), np.ones((5, HISTORY), np.int32),
                            np.full(5, 9))  # target 9 is never among the top-2
    with pytest.raises(ValueError, match="hits and misses"):
        StackingRanker([never], np.ones(N_ITEMS + 1), candidates_per_model=2).fit(examples)


def test_prefix_signals_by_hand():
    # Prefix [0 (padding), 5, 7, 5]: item 5 twice, last 1 step ago; 7 once, 2 steps ago;
    # 9 never; an empty slot (0) gets nothing although the padding is item 0 too.
    signals = prefix_signals(np.array([[5, 7, 9, 0]]), np.array([[0, 5, 7, 5]]))
    np.testing.assert_allclose(signals[0], [[2, 1.0], [1, 0.5], [0, 0.0], [0, 0.0]])


def make_returning_examples(n, seed):
    """Prefixes [x, y, x] of distinct x, y: the shopper compared two items and goes back to x."""
    rng = np.random.default_rng(seed)
    pairs = np.stack([rng.choice(np.arange(1, N_ITEMS + 1), 2, replace=False) for _ in range(n)])
    items = pairs[:, [0, 1, 0]].astype(np.int32)
    return FakeExamples(items, np.ones_like(items), pairs[:, 0])


def test_stacking_learns_that_shoppers_return_to_the_item_they_keep_viewing():
    # The only member lists every item in a random order: nothing but the prefix features
    # can tell which candidate is next. With them x (twice, last 1 step ago) beats y (once,
    # 2 steps ago) and every item not in the prefix: it is ranked first every time.
    stacking = StackingRanker([RandomScorer()], popularity=np.ones(N_ITEMS + 1), candidates_per_model=N_ITEMS)
    summary = stacking.fit(make_returning_examples(300, seed=31))
    assert set(PREFIX_FEATURES) <= set(summary["coefficients"])
    assert evaluate_scorer(stacking, make_returning_examples(100, seed=32), ks=(1,))["recall@1"] == 1.0
    without = StackingRanker([RandomScorer()], np.ones(N_ITEMS + 1), candidates_per_model=N_ITEMS,
                             prefix_features=False)
    without.fit(make_returning_examples(300, seed=31))
    assert evaluate_scorer(without, make_returning_examples(100, seed=32), ks=(1,))["recall@1"] < 0.2


def test_a_stacking_fuser_saved_before_the_prefix_features_still_loads_and_scores(tmp_path):
    old = StackingRanker([RandomScorer()], np.ones(N_ITEMS + 1), candidates_per_model=5, prefix_features=False)
    old.fit(make_examples(200, seed=33))
    old.save(str(tmp_path))
    description_path = tmp_path / "fuser.json"
    description = json.loads(description_path.read_text())
    del description["prefix_features"]  # as written before the key existed
    description_path.write_text(json.dumps(description))
    loaded = StackingRanker.load(str(tmp_path), {"random": RandomScorer()})
    assert loaded.feature_names == old.feature_names and not loaded.prefix_features
    examples = make_examples(10, seed=34)
    np.testing.assert_array_equal(loaded.score(examples.items, examples.types), old.score(examples.items, examples.types))


# --- feature level: learned embedding fusion -------------------------------------------

class InformativeEmbeddings:
    """User vector = the true next item's vector plus a little noise: the dot product finds it."""

    name = "informative"

    def __init__(self, dim=8):
        rng = np.random.default_rng(10)
        self.item_vectors = rng.normal(size=(N_ITEMS + 1, dim)).astype(np.float32)
        self.noise = rng.normal(scale=0.1, size=(N_ITEMS + 1, dim)).astype(np.float32)

    def user_vectors(self, items, types, gaps=None):
        return self.item_vectors[next_item(items[:, -1])] + self.noise[items[:, 0]]


class NoiseEmbeddings:
    """Vectors unrelated to the next item: random per history."""

    name = "noise"

    def __init__(self, dim=8):
        self.item_vectors = np.random.default_rng(11).normal(size=(N_ITEMS + 1, dim)).astype(np.float32)
        self.dim = dim

    def user_vectors(self, items, types, gaps=None):
        return np.stack([np.random.default_rng(list(map(int, row))).normal(size=self.dim) for row in items]
                        ).astype(np.float32)


class GapRecordingEmbeddings(InformativeEmbeddings):
    name = "recording"

    def __init__(self):
        super().__init__()
        self.received = []

    def user_vectors(self, items, types, gaps=None):
        self.received.append(None if gaps is None else gaps.copy())
        return super().user_vectors(items, types)


def test_feature_fusion_hands_gaps_to_its_sources():
    source = GapRecordingEmbeddings()
    fusion = FeatureFusion([source], dim=2, epochs=1, batch_size=4)
    examples = FakeExamplesWithGaps(*vars(make_examples(4, seed=20)).values(), gaps=numbered_gaps(4))
    fusion.fit(examples)
    fusion.score(examples.items[:2], examples.types[:2], examples.gaps[:2])
    fusion.score(examples.items[:1], examples.types[:1])
    assert [None if gaps is None else gaps.tolist() for gaps in source.received] == [
        examples.gaps.tolist(), examples.gaps[:2].tolist(), None]


def test_feature_fusion_weights_the_informative_source_more():
    fusion = FeatureFusion([NoiseEmbeddings(), InformativeEmbeddings()], dim=8, epochs=25, batch_size=32,
                           learning_rate=0.03, seed=7)
    summary = fusion.fit(make_examples(300, seed=6))
    weights = summary["source_weights"]
    assert weights["informative"] > 0.6 > weights["noise"]
    assert weights["informative"] + weights["noise"] == pytest.approx(1.0)
    assert summary["loss_by_epoch"][-1] < summary["loss_by_epoch"][0]
    # Learned well beyond chance: a random ranking of 30 items would give recall@5 ~ 5/30.
    assert evaluate_scorer(fusion, make_examples(100, seed=8), ks=(5,))["recall@5"] > 0.5


# --- persistence -------------------------------------------------------------------------

def test_save_load_round_trips_give_identical_scores(tmp_path):
    valid, test = make_examples(120, seed=12), make_examples(20, seed=13)
    base = {scorer.name: scorer for scorer in (RandomScorer(), PerfectScorer(), NoiseEmbeddings(),
                                               InformativeEmbeddings())}
    rrf = RankFusion([base["random"], base["perfect"]], candidates_per_model=4, rrf_k=60)
    rrf.fit(valid, grid_steps=2)
    stacking = StackingRanker([base["random"], base["perfect"]], np.arange(N_ITEMS + 1.0), candidates_per_model=4)
    stacking.fit(valid)
    feature = FeatureFusion([base["noise"], base["informative"]], dim=4, epochs=2, batch_size=64)
    feature.fit(valid)
    for fuser, fuser_class in ((rrf, RankFusion), (stacking, StackingRanker), (feature, FeatureFusion)):
        fuser.save(str(tmp_path / fuser.name))
        loaded = fuser_class.load(str(tmp_path / fuser.name), base)
        assert loaded.name == fuser.name
        np.testing.assert_array_equal(loaded.score(test.items, test.types), fuser.score(test.items, test.types))


def test_load_names_the_missing_base_model(tmp_path):
    RankFusion([MODEL_A, MODEL_B], candidates_per_model=2).save(str(tmp_path / "rrf"))
    with pytest.raises(ValueError, match=r"needs base model\(s\) \['b'\]"):
        RankFusion.load(str(tmp_path / "rrf"), {"a": MODEL_A})


# --- the fuse and evaluate jobs on a tiny lake ---------------------------------------------

DS = "2026-11-27"
TINY_ITEMS = 12


def write_tiny_night(config):
    """Features for 30 users walking the catalog 1, 2, 3, ... plus two saved encoders."""
    import keras
    import pandas as pd

    from jobs.train.encoder_scorers import CONFIG_FILE, ITEM_EMBEDDINGS_FILE, MODEL_FILE
    from jobs.common.features import write_features
    from jobs.common.lake import partition_path
    from jobs.common.schema import (BRAND_IDX, CATEGORY_IDX, EVENT_TYPE_IDX, ITEM_ID, ITEM_IDX, MODEL_ITEM_ENCODER,
                             MODEL_USER_ENCODER, POPULARITY, PRICE_BUCKET, PRICE_Z, SPLIT, SPLIT_TEST,
                             SPLIT_TRAIN, SPLIT_VALID, TIMESTAMPS, TITLE_TOKENS, USER_ID)

    items = pd.DataFrame({ITEM_IDX: range(1, TINY_ITEMS + 1), ITEM_ID: [f"sku{i}" for i in range(1, TINY_ITEMS + 1)],
                          CATEGORY_IDX: 1, BRAND_IDX: 1, PRICE_BUCKET: 1, PRICE_Z: 0.0,
                          TITLE_TOKENS: [[1]] * TINY_ITEMS, POPULARITY: np.arange(TINY_ITEMS, 0, -1)})
    splits = [SPLIT_TRAIN] * 6 + [SPLIT_VALID] * 2 + [SPLIT_TEST] * 2
    walks = [[(start + step) % TINY_ITEMS + 1 for step in range(len(splits))] for start in range(30)]
    sequences = pd.DataFrame({USER_ID: [f"u{n}" for n in range(30)], ITEM_IDX: walks,
                              EVENT_TYPE_IDX: [[1] * len(splits)] * 30,
                              TIMESTAMPS: [list(range(len(splits)))] * 30, SPLIT: [splits] * 30})
    write_features(config, DS, {"n_items": TINY_ITEMS}, items, sequences)

    rng = np.random.default_rng(0)
    user_dir = partition_path(config, MODEL_USER_ENCODER, DS)
    os.makedirs(user_dir)
    history, types = keras.Input((4,), dtype="int32"), keras.Input((4,), dtype="int32")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(TINY_ITEMS + 1, 4)(history))
    keras.Model([history, types], keras.layers.Dense(4)(pooled)).save(os.path.join(user_dir, MODEL_FILE))
    np.save(os.path.join(user_dir, ITEM_EMBEDDINGS_FILE), rng.normal(size=(TINY_ITEMS + 1, 4)).astype(np.float32))
    item_dir = partition_path(config, MODEL_ITEM_ENCODER, DS)
    os.makedirs(item_dir)
    np.save(os.path.join(item_dir, ITEM_EMBEDDINGS_FILE), rng.normal(size=(TINY_ITEMS + 1, 3)).astype(np.float32))
    with open(os.path.join(item_dir, CONFIG_FILE), "w") as handle:
        json.dump({"recency_decay": 0.8}, handle)
    write_tiny_baselines(config, sequences, rng)


def write_tiny_baselines(config, sequences, rng):
    """S-POP and Item-KNN fitted on the train walks; ALS with random factors (no Spark needed)."""
    from jobs.train.baselines import ALSScorer, ItemKNNScorer, SessionPopularityScorer, training_sequences
    from jobs.common.lake import partition_path
    from jobs.common.schema import MODEL_BASELINES, SPLIT_TRAIN

    walks = training_sequences(sequences, SPLIT_TRAIN)
    baseline_dir = partition_path(config, MODEL_BASELINES, DS)
    os.makedirs(baseline_dir)
    for scorer in (SessionPopularityScorer.fit(walks, TINY_ITEMS), ItemKNNScorer.fit(walks, TINY_ITEMS),
                   ALSScorer(rng.normal(size=(TINY_ITEMS + 1, 3)), reg_param=0.1, alpha=10.0)):
        scorer.save(baseline_dir)


def test_fuse_then_evaluate_jobs_write_models_reports_and_mlflow_runs(tmp_config):
    from mlflow import MlflowClient

    from jobs.evaluation import evaluate
    from jobs.fusion import fuse
    from jobs.common.tracking import configure_mlflow

    config = dict(tmp_config, max_seq_len=4, evaluation={**tmp_config["evaluation"], "ks": [1, 5]},
                  fusion={**tmp_config["fusion"], "candidates_per_model": 4, "feature_fusion_epochs": 2,
                          "rrf_grid_steps": 2})
    write_tiny_night(config)

    fusion_dir = fuse.run(Night.plan(config, DS))['path']
    assert sorted(os.listdir(fusion_dir)) == ["fusion_feature", "fusion_gbm", "fusion_rrf", "fusion_stacking",
                                              "valid_metrics.json"]
    assert os.path.isfile(os.path.join(fusion_dir, "fusion_gbm", "booster.txt"))
    valid_metrics = json.loads(open(os.path.join(fusion_dir, "valid_metrics.json")).read())
    assert sorted(valid_metrics) == sorted(evaluate.MODEL_NAMES)
    assert all(0.0 <= values["ndcg@20"] <= 1.0 for values in valid_metrics.values())

    report_dir = evaluate.run(Night.plan(config, DS))['path']
    metrics = json.loads(open(os.path.join(report_dir, "metrics.json")).read())
    assert list(metrics) == list(evaluate.MODEL_NAMES)
    assert set(metrics["fusion_rrf"]) == {f"{kind}@{k}" for kind in ("recall", "mrr", "ndcg") for k in (1, 5, 20)}
    # Popularity 12, 11, ..., 1 ranks item i at i. User n's test targets are items
    # (n + 8) % 12 + 1 and (n + 9) % 12 + 1 for n = 0..29, i.e. items 1..5 appear
    # 6, 6, 5, 4, 4 times among the 60 targets: recall@1 = 6/60, recall@5 = 25/60.
    assert metrics["popularity"]["recall@1"] == pytest.approx(0.1)
    assert metrics["popularity"]["recall@5"] == pytest.approx(25 / 60)
    table = open(os.path.join(report_dir, "metrics.md")).read()
    assert "60 examples" in table  # 30 users x 2 test events
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "model" not in line]
    assert rows == evaluate.ranked_models(metrics, "ndcg@20") and len(rows) == 10

    runs = MlflowClient().search_runs([configure_mlflow(config)], filter_string=f"tags.ds = '{DS}'")
    by_stage = {run.data.tags["stage"]: run for run in runs}
    assert by_stage["evaluate"].data.metrics["fusion_rrf.ndcg_at_20"] == pytest.approx(metrics["fusion_rrf"]["ndcg@20"])
    fuse_metrics = by_stage["fuse"].data.metrics
    assert fuse_metrics["fusion_feature.weight.user_encoder"] + fuse_metrics["fusion_feature.weight.item_encoder"] \
        == pytest.approx(1.0)
    assert "valid.fusion_vote.ndcg_at_20" in fuse_metrics
    assert fuse_metrics["fusion_gbm.trees"] >= 1 and "fusion_gbm.gain.prefix_length" in fuse_metrics
    # 20% of the 30 valid-day users (6 users x 2 events) are held out of fitting.
    assert (fuse_metrics["valid.n_fit_examples"], fuse_metrics["valid.n_holdout_examples"]) == (48, 12)


def test_split_by_user_keeps_each_users_examples_together():
    from jobs.fusion.fuse import split_by_user

    @dataclass
    class WithUsers(FakeExamples):
        user_ids: np.ndarray

    users = np.array(["a", "a", "b", "c", "c", "c", "d", "e"], dtype=object)
    examples = WithUsers(np.arange(8)[:, None], np.ones((8, 1)), np.arange(1, 9), users)
    fit, holdout = split_by_user(examples, holdout_fraction=0.4, seed=0)
    assert len(set(holdout.user_ids)) == 2  # round(0.4 * 5 users)
    assert not set(fit.user_ids) & set(holdout.user_ids)
    assert sorted(fit.targets.tolist() + holdout.targets.tolist()) == list(range(1, 9))
    assert all(target - 1 == item for target, item in zip(holdout.targets, holdout.items[:, 0]))  # rows stay aligned

    @dataclass
    class WithGaps(WithUsers):
        gaps: np.ndarray

    fit, holdout = split_by_user(WithGaps(*vars(examples).values(), gaps=np.arange(8)[:, None] * 10), 0.4, 0)
    for part in (fit, holdout):  # gaps are cut with the other arrays: example i keeps gaps 10 * i
        assert part.gaps[:, 0].tolist() == [10 * item for item in part.items[:, 0]]
    with pytest.raises(ValueError, match="at least 2"):
        split_by_user(WithUsers(examples.items, examples.types, examples.targets, np.full(8, "a")), 0.2, 0)
