"""The gradient-boosted fuser (LightGBM LambdaRank) on fake members with hand-made scores."""

import json
from dataclasses import dataclass

import numpy as np
import pytest

from jobs.evaluation.metrics import evaluate_scorer
from jobs.fusion import candidates_from_scores
from jobs.fusion.gradient_boosted import GradientBoostedRanker, _stopping_examples
from jobs.fusion.model_level import StackingRanker

N_ITEMS = 30
NEG_INF = -np.inf


@dataclass
class Prefixes:
    items: np.ndarray
    types: np.ndarray
    targets: np.ndarray
    user_ids: np.ndarray


class NeighbourScorer:
    """Scores the item `step` after the prefix's last one 1 (cyclically), every other item 0."""

    def __init__(self, name, step):
        self.name, self.step = name, step

    def score(self, items, types, gaps=None):
        scores = np.zeros((len(items), N_ITEMS + 1), np.float32)
        scores[np.arange(len(items)), (items[:, -1] - 1 + self.step) % N_ITEMS + 1] = 1.0
        scores[:, 0] = NEG_INF
        return scores


def short_forward_long_backward(n, seed):
    """Prefixes of 1 or 3 items (left-padded to 3): after one item the shopper moves on to the
    next item, after three they go back to the one before the last. One member knows each
    half; a linear fuser weighs members the same for every prefix, so it cannot know both."""
    rng = np.random.default_rng(seed)
    items = rng.integers(1, N_ITEMS + 1, size=(n, 3)).astype(np.int32)
    short = rng.random(n) < 0.5
    items[short, :2] = 0
    last = items[:, -1]
    targets = np.where(short, last % N_ITEMS + 1, (last - 2) % N_ITEMS + 1)
    return Prefixes(items, (items > 0).astype(np.int32), targets, np.arange(n) // 2)


def members():
    return [NeighbourScorer("forward", 1), NeighbourScorer("backward", -1)]


def test_candidate_features_by_hand():
    # One prefix [0, 5, 7, 5] over a catalog of 8 items; member a's top-2: 3 then 5; member
    # b's top-2: 5 then 1. Slots [3, 5, 0 (5 again), 1].
    a = np.array([[NEG_INF, 1.0, 0.0, 4.0, 0.0, 3.0, 0.0, 0.0, 0.0]])
    b = np.array([[NEG_INF, 2.0, 0.0, 0.0, 0.0, 6.0, 0.0, 0.0, 0.0]])
    candidates = candidates_from_scores([a, b], per_model=2)
    assert candidates.items.tolist() == [[3, 5, 0, 1]]
    popularity = np.array([0, 1, 0, 3, 0, 7, 0, 0, 0], dtype=float)
    recent = np.array([0, 0, 0, 1, 0, 0, 0, 0, 0], dtype=float)
    fuser = GradientBoostedRanker([NeighbourScorer("a", 1), NeighbourScorer("b", 1)], popularity, recent)
    features = fuser.candidate_features(candidates, np.array([[0, 5, 7, 5]]))
    named = dict(zip(fuser.feature_names, features[0, 1]))  # item 5
    # a: score 3, 2nd in its list; b: score 6, 1st. Both list it. In the prefix twice, last
    # 1 step ago; the prefix holds 3 items; log1p(7) and log1p(0).
    assert (named["a.score"], named["a.rank"], named["b.score"], named["b.rank"]) == (3, 2, 6, 1)
    assert named["n_members_listing"] == 2
    assert (named["prefix_count"], named["prefix_steps_since_last"], named["prefix_length"]) == (2, 1, 3)
    assert named["log_popularity"] == pytest.approx(np.log(8)) and named["log_recent_popularity"] == 0
    # a over the catalog [1, 0, 4, 0, 3, 0, 0, 0]: mean 1, variance (0 + 5 * 1 + 9 + 4) / 8
    # = 2.25, so item 5's z-score is (3 - 1) / 1.5 = 1.3333.
    assert named["a.z_score"] == pytest.approx(4 / 3)
    item_3 = dict(zip(fuser.feature_names, features[0, 0]))
    # b does not list item 3: its rank is missing (NaN), not a position; 3 is not in the prefix.
    assert np.isnan(item_3["b.rank"]) and np.isnan(item_3["prefix_steps_since_last"])
    assert (item_3["n_members_listing"], item_3["prefix_count"]) == (1, 0)


def test_trees_learn_whom_to_trust_from_the_prefix_length_where_a_linear_fuser_cannot():
    gbm = GradientBoostedRanker(members(), np.ones(N_ITEMS + 1), np.ones(N_ITEMS + 1), candidates_per_model=3)
    summary = gbm.fit(short_forward_long_backward(600, seed=1))
    assert summary["n_examples"] == 600 and summary["trees"] >= 1
    assert summary["gain_shares"]["prefix_length"] > 0
    test = short_forward_long_backward(200, seed=2)
    assert evaluate_scorer(gbm, test, ks=(1,))["recall@1"] == 1.0
    linear = StackingRanker(members(), np.ones(N_ITEMS + 1), candidates_per_model=3)
    linear.fit(short_forward_long_backward(600, seed=1))
    assert evaluate_scorer(linear, test, ks=(1,))["recall@1"] < 0.7


def test_a_saved_gbm_fuser_loads_and_scores_the_same(tmp_path):
    gbm = GradientBoostedRanker(members(), np.arange(N_ITEMS + 1), np.ones(N_ITEMS + 1), candidates_per_model=3)
    gbm.fit(short_forward_long_backward(300, seed=3))
    gbm.save(str(tmp_path / "fusion_gbm"))
    assert (tmp_path / "fusion_gbm" / "booster.txt").is_file()
    loaded = GradientBoostedRanker.load(str(tmp_path / "fusion_gbm"), {m.name: m for m in members()})
    test = short_forward_long_backward(50, seed=4)
    np.testing.assert_array_equal(loaded.score(test.items, test.types), gbm.score(test.items, test.types))
    with pytest.raises(ValueError, match="needs base model"):
        GradientBoostedRanker.load(str(tmp_path / "fusion_gbm"), {"forward": members()[0]})
    (tmp_path / "fusion_gbm" / "booster.txt").unlink()
    with pytest.raises(ValueError, match="not a complete fusion_gbm"):
        GradientBoostedRanker.load(str(tmp_path / "fusion_gbm"), {m.name: m for m in members()})


def test_gbm_fit_explains_when_no_target_is_a_candidate():
    examples = short_forward_long_backward(40, seed=5)
    examples.targets[:] = 0  # padding: never a candidate
    with pytest.raises(ValueError, match="next item is among the candidates"):
        GradientBoostedRanker(members(), np.ones(N_ITEMS + 1), np.ones(N_ITEMS + 1), 3).fit(examples)


def test_early_stopping_holds_out_whole_users():
    users = np.repeat(np.arange(10), 3)  # 10 users of 3 prefixes each
    stopping = _stopping_examples(users, share=0.2, seed=7)
    assert stopping.sum() == 6  # 2 users of 10
    for user in range(10):
        assert len(set(stopping[users == user])) == 1
    with pytest.raises(ValueError, match="at least 2 users"):
        _stopping_examples(np.zeros(5), 0.2, 7)


def test_learnable_keeps_only_groups_with_a_relevant_row():
    from jobs.common.lambdarank import RankingRows, learnable

    # Groups of 2, 0, 3 and 1 rows; relevant rows in the first and third only.
    rows = RankingRows(np.arange(6, dtype=float)[:, None], np.array([0, 1, 0, 0, 2, 0]), np.array([2, 0, 3, 1]))
    kept = learnable(rows)
    assert kept.groups.tolist() == [2, 3] and kept.features[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert json.dumps(kept.grades.tolist()) == "[0, 1, 0, 0, 2]"


class CountingNeighbourScorer(NeighbourScorer):
    def __init__(self, name, step):
        super().__init__(name, step)
        self.calls = 0

    def score(self, items, types, gaps=None):
        self.calls += 1
        return super().score(items, types, gaps)


def test_both_model_level_fusers_fit_on_one_candidate_set():
    from jobs.fusion import training_candidates, training_rows

    counting = [CountingNeighbourScorer("forward", 1), CountingNeighbourScorer("backward", -1)]
    examples = short_forward_long_backward(300, seed=6)
    gbm = GradientBoostedRanker(counting, np.ones(N_ITEMS + 1), np.ones(N_ITEMS + 1), 3, max_train_examples=200)
    stacking = StackingRanker(counting, np.ones(N_ITEMS + 1), 3, max_train_examples=200)
    rows = training_rows(300, 200, 42, "fusion")  # both fusers' cap and seed: the same 200 rows
    shared = training_candidates(counting, examples, rows, 3)
    calls = [scorer.calls for scorer in counting]
    gbm.fit(examples, candidates=shared)
    stacking.fit(examples, candidates=shared)
    assert [scorer.calls for scorer in counting] == calls  # no member scored the rows again
    alone = GradientBoostedRanker(members(), np.ones(N_ITEMS + 1), np.ones(N_ITEMS + 1), 3, max_train_examples=200)
    alone.fit(examples)  # builds its own candidates for the same rows: the same trees
    test = short_forward_long_backward(50, seed=7)
    np.testing.assert_array_equal(alone.score(test.items, test.types), gbm.score(test.items, test.types))
    with pytest.raises(ValueError, match="cover 200 examples, the fit uses 300"):
        GradientBoostedRanker(members(), np.ones(N_ITEMS + 1), np.ones(N_ITEMS + 1), 3).fit(examples, candidates=shared)
