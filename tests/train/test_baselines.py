"""Baselines (S-POP, Item-KNN, ALS) on hand-made sessions, and a smoke run of bench/models.py."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.train.baselines import (
    ALS_COUNT, ALS_USER, ALSScorer, ItemKNNScorer, PopularityScorer, SessionPopularityScorer, als_interactions,
    fit_spark_als, item_counts, training_sequences,
)
from jobs.evaluation.metrics import target_ranks
from jobs.common.schema import ITEM_IDX, SPLIT, SPLIT_TRAIN, SPLIT_VALID, TIMESTAMPS, USER_ID

NEG_INF = -np.inf
BENCH_SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "models.py"


def no_types(items):
    return np.ones_like(items)


# --- training sequences and counts ----------------------------------------------------------

def test_item_counts_count_every_event_and_skip_padding():
    # item 1 once, item 2 twice, item 3 once; the 0 is padding and is not an event.
    counts = item_counts([np.array([1, 2, 2]), np.array([0, 3])], n_items=3)
    np.testing.assert_array_equal(counts, [0, 1, 2, 1])


def test_recent_item_counts_count_the_last_window_of_the_split_over_all_users():
    from jobs.train.baselines import recent_item_counts

    # The train split ends at t=1000 (user b's item 3). A window of 100 s keeps the train
    # events after t=900: a's item 2 (t=950) and b's item 3; not a's 1 (t=100), nor the
    # valid-split item 4 at t=2000, which would move the window if it counted.
    sequences = pd.DataFrame({USER_ID: ["a", "b"], ITEM_IDX: [[1, 2, 4], [3]],
                              TIMESTAMPS: [[100, 950, 2000], [1000]],
                              SPLIT: [[SPLIT_TRAIN, SPLIT_TRAIN, SPLIT_VALID], [SPLIT_TRAIN]]})
    np.testing.assert_array_equal(recent_item_counts(sequences, SPLIT_TRAIN, 100, n_items=4), [0, 0, 1, 1, 0])
    assert recent_item_counts(sequences.iloc[:0], SPLIT_TRAIN, 100, n_items=4).tolist() == [0] * 5


def test_item_counts_name_the_bad_sequence():
    with pytest.raises(ValueError, match=r"training sequence 1 has item indices 1\.\.7.*n_items=3"):
        item_counts([np.array([1]), np.array([1, 7])], n_items=3)


def test_training_sequences_keep_one_split_in_time_order():
    sequences = pd.DataFrame({USER_ID: ["a", "b", "c"],
                              ITEM_IDX: [[3, 1, 2], [4], [5, 6]],
                              SPLIT: [[SPLIT_TRAIN, SPLIT_TRAIN, SPLIT_VALID], [SPLIT_VALID],
                                      [SPLIT_TRAIN, SPLIT_TRAIN]]})
    selected = training_sequences(sequences, SPLIT_TRAIN)
    # a keeps 3, 1 (its valid event 2 is dropped); b has no train event and is left out.
    assert [list(sequence) for sequence in selected] == [[3, 1], [5, 6]]


# --- S-POP --------------------------------------------------------------------------------

def test_session_popularity_counts_the_history_then_global_popularity():
    # Global counts 5, 3, 3, 1 -> dense popularity levels 2, 1, 1, 0 (3 levels).
    # Row 0: item 4 twice, item 2 once -> scores 0*3+2, 1*3+1, 0*3+1, 2*3+0 = 2, 4, 1, 6.
    # Row 1: empty history -> the levels alone, i.e. POP's order: 2, 1, 1, 0.
    scorer = SessionPopularityScorer(np.array([0, 5, 3, 3, 1]))
    items = np.array([[0, 4, 2, 4], [0, 0, 0, 0]])
    scores = scorer.score(items, no_types(items))
    np.testing.assert_array_equal(scores, [[NEG_INF, 2, 4, 1, 6], [NEG_INF, 2, 1, 1, 0]])
    assert scores.dtype == np.float32
    # Targets 1 and 3: ranks 3 (below items 4 and 2) and 3 (tied with item 2: conservative).
    np.testing.assert_array_equal(target_ranks(scores, np.array([1, 3])), [3, 3])


def test_session_popularity_fit_counts_training_events():
    # Counts over [1, 1, 2] and [1, 3]: item 1 three times, items 2 and 3 once -> levels 1, 0, 0.
    scorer = SessionPopularityScorer.fit([np.array([1, 1, 2]), np.array([1, 3])], n_items=3)
    items = np.array([[0, 3]])
    # Item 3 is in the history: 1 * 2 levels + 0 = 2 beats item 1's level 1; item 2 stays at 0.
    np.testing.assert_array_equal(scorer.score(items, no_types(items)), [[NEG_INF, 1, 0, 2]])


def test_session_popularity_rejects_items_outside_the_catalog():
    scorer = SessionPopularityScorer(np.array([0, 1, 1]))
    with pytest.raises(ValueError, match=r"session_popularity: history item indices must lie in 0\.\.n_items=2"):
        scorer.score(np.array([[0, 5]]), np.array([[0, 1]]))


# --- Item-KNN -------------------------------------------------------------------------------

# Sessions {1,2}, {1,2,3}, {3,4}: item 1, 2 and 3 each in 2 sessions, item 4 in 1.
# Co-occurrence: (1,2) 2, (1,3) 1, (2,3) 1, (3,4) 1. With alpha 0.5 and regularization 1:
# sim(1,2) = 2 / (sqrt(2*2) + 1) = 2/3, sim(1,3) = sim(2,3) = 1 / (2 + 1) = 1/3,
# sim(3,4) = 1 / (sqrt(2*1) + 1) = 0.414214.
KNN_SESSIONS = [np.array([1, 2]), np.array([1, 2, 3]), np.array([3, 4, 3])]  # the repeated 3 counts once
SIM_3_4 = 1 / (np.sqrt(2) + 1)


def test_item_knn_scores_the_similarity_to_the_last_item():
    scorer = ItemKNNScorer.fit(KNN_SESSIONS, n_items=4, regularization=1.0)
    items = np.array([[0, 1, 3], [0, 0, 1]])
    scores = scorer.score(items, no_types(items))
    # Last item 3: items 1, 2 at 1/3, itself 0 (not its own neighbour), item 4 at 0.414.
    # Last item 1: item 2 at 2/3, item 3 at 1/3, item 1 itself and item 4 at 0.
    np.testing.assert_allclose(scores, [[NEG_INF, 1 / 3, 1 / 3, 0, SIM_3_4], [NEG_INF, 0, 2 / 3, 1 / 3, 0]], rtol=1e-6)
    np.testing.assert_array_equal(target_ranks(scores, np.array([4, 2])), [1, 1])


def test_item_knn_keeps_only_the_top_neighbours():
    # Item 3's neighbours: 4 (0.414) > 1 = 2 (1/3); with one neighbour only item 4 is left.
    scorer = ItemKNNScorer.fit(KNN_SESSIONS, n_items=4, regularization=1.0, neighbours=1)
    items = np.array([[3]])
    np.testing.assert_allclose(scorer.score(items, no_types(items)), [[NEG_INF, 0, 0, 0, SIM_3_4]], rtol=1e-6)


def test_item_knn_recency_weighted_variant_sums_over_the_history():
    # History [1, 3] with decay 0.5: 0.5 * sim(1, j) + 1 * sim(3, j)
    # item 1: 0 + 1/3; item 2: 0.5*2/3 + 1/3 = 2/3; item 3: 0.5*1/3 + 0 = 1/6; item 4: 0 + 0.414.
    scorer = ItemKNNScorer.fit(KNN_SESSIONS, n_items=4, regularization=1.0, recency_decay=0.5)
    items = np.array([[1, 3]])
    np.testing.assert_allclose(scorer.score(items, no_types(items)), [[NEG_INF, 1 / 3, 2 / 3, 1 / 6, SIM_3_4]],
                               rtol=1e-6)


def test_item_knn_with_self_similarity_and_plain_cosine():
    # regularization 0 is the plain cosine: sim(3,3) = 2 / sqrt(2*2) = 1, sim(3,4) = 1 / sqrt(2).
    scorer = ItemKNNScorer.fit(KNN_SESSIONS, n_items=4, regularization=0.0, include_self=True)
    items = np.array([[3]])
    np.testing.assert_allclose(scorer.score(items, no_types(items)), [[NEG_INF, 0.5, 0.5, 1.0, 1 / np.sqrt(2)]],
                               rtol=1e-6)


def test_item_knn_rejects_a_bad_decay():
    with pytest.raises(ValueError, match="recency_decay must be None"):
        ItemKNNScorer.fit(KNN_SESSIONS, n_items=4, recency_decay=1.5)


# --- ALS ------------------------------------------------------------------------------------

def test_als_fold_in_solves_the_implicit_least_squares_by_hand():
    # Rank 2, y1 = (1, 0), y2 = (0, 1), y3 = (1, 1); Y^T Y = [[2, 1], [1, 2]]; alpha 1, reg 1.
    # History [2, 3, 3]: r2 = 1, r3 = 2, two distinct items.
    #   A = Y^T Y + 1*(y2 y2^T + 2 y3 y3^T) + 1*2*I = [[6, 3], [3, 7]]
    #   b = (1 + 1) y2 + (1 + 2) y3 = (3, 5)
    #   x = A^-1 b = [[7, -3], [-3, 6]] (3, 5) / 33 = (6, 21) / 33 = (2/11, 7/11)
    # Scores: item 1 = 2/11, item 2 = 7/11, item 3 = 9/11. An empty history scores 0 everywhere.
    scorer = ALSScorer(np.array([[0, 0], [1, 0], [0, 1], [1, 1]]), reg_param=1.0, alpha=1.0)
    items = np.array([[2, 3, 3], [0, 0, 0]])
    np.testing.assert_allclose(scorer.user_vectors(items), [[2 / 11, 7 / 11], [0, 0]], rtol=1e-12)
    np.testing.assert_allclose(scorer.score(items, no_types(items)),
                               [[NEG_INF, 2 / 11, 7 / 11, 9 / 11], [NEG_INF, 0, 0, 0]], rtol=1e-6)


def test_baselines_accept_time_gaps_and_ignore_them():
    # No baseline reads gap buckets: scoring with any gaps gives exactly the scores without them.
    items = np.array([[0, 1, 3], [2, 3, 3]])
    gaps = np.array([[0, 5, 12], [0, 1, 15]], dtype=np.int32)
    scorers = [PopularityScorer(np.array([0, 3, 1, 2, 1])), SessionPopularityScorer(np.array([0, 5, 3, 3, 1])),
               ItemKNNScorer.fit(KNN_SESSIONS, n_items=4, regularization=1.0),
               ALSScorer(np.array([[0, 0], [1, 0], [0, 1], [1, 1], [2, 1]]), reg_param=1.0, alpha=1.0)]
    for scorer in scorers:
        np.testing.assert_array_equal(scorer.score(items, no_types(items), gaps),
                                      scorer.score(items, no_types(items)), err_msg=scorer.name)


def test_als_interactions_count_each_item_per_sequence():
    frame = als_interactions([np.array([2, 1, 2]), np.array([0, 3])], n_items=3)
    assert frame.to_dict("list") == {ALS_USER: [0, 0, 1], ITEM_IDX: [1, 2, 3], ALS_COUNT: [1.0, 2.0, 1.0]}


# Two groups of shoppers: items 1 and 2 go together, so do 3 and 4.
ALS_SEQUENCES = [np.array(items) for items in ([1, 2, 1, 2], [1, 2], [2, 1, 2], [3, 4], [4, 3, 4], [3, 4], [1, 4])]


def test_als_fit_with_spark_folds_in_training_users_exactly(spark):
    model = fit_spark_als(spark, ALS_SEQUENCES, n_items=4, rank=2, reg_param=0.1, alpha=2.0, max_iter=5, seed=0)
    scorer = ALSScorer.from_spark_model(model, n_items=4, reg_param=0.1, alpha=2.0)
    # Spark's own user factors are the solution of the same normal equations (its last
    # half-step updates the users), so folding a training sequence back in must give them.
    spark_users = {row["id"]: row["features"] for row in model.userFactors.collect()}
    histories = np.zeros((len(ALS_SEQUENCES), 4), dtype=np.int64)
    for row, sequence in enumerate(ALS_SEQUENCES):
        histories[row, 4 - len(sequence):] = sequence
    folded = scorer.user_vectors(histories)
    np.testing.assert_allclose(folded, [spark_users[user] for user in range(len(ALS_SEQUENCES))], atol=1e-5)
    # And a new session that clicked item 1 is sent to item 2 before 3 or 4.
    scores = scorer.score(np.array([[0, 1]]), np.array([[0, 1]]))[0]
    assert scores[2] > max(scores[3], scores[4])


# --- bench/models.py ----------------------------------------------------------------------

def load_bench():
    spec = importlib.util.spec_from_file_location("bench_models", BENCH_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while the file executes
    spec.loader.exec_module(module)
    return module


def write_session_folder(folder: Path, train_lines: list[str], test_lines: list[str]) -> Path:
    folder.mkdir()
    (folder / "train_sessions.txt").write_text("# tiny\n" + "\n".join(train_lines) + "\n")
    (folder / "test_examples.tsv").write_text("prefix\tlabel\n" + "\n".join(test_lines) + "\n")
    return folder


def test_bench_runs_the_baselines_on_a_tiny_folder(tmp_path):
    # 25 items: counts 1:2, 2:3, 3:2 and 4..25 once each (the long session).
    # Prefix "1" -> 2: POP ranks 2 first; S-POP ranks 1 (in the session) then 2 -> rank 2;
    #   Item-KNN: item 2 is item 1's best neighbour -> rank 1.
    # Prefix "4 5" -> 25: POP: items 1, 2, 3 above, 25 tied with 21 others -> rank 25 (miss);
    #   S-POP: 4, 5, then 2, 1, 3, then 25 tied with 6..24 -> rank 25 (miss); Item-KNN: every
    #   other item of the long session ties with 25 at 1 / (1 + 20) -> rank 21 (miss).
    folder = write_session_folder(tmp_path / "tiny", ["1 2 3", "1 2", "2 3", " ".join(map(str, range(4, 26)))],
                                  ["1\t2", "4 5\t25"])
    results = load_bench().main(["--data", str(folder), "--results-dir", str(tmp_path / "results"),
                                 "--models", "pop,spop,item_knn"])
    written = json.loads((tmp_path / "results" / "tiny.json").read_text())
    assert written == results
    assert list(written) == ["pop", "spop", "item_knn"]
    for row in written.values():
        # Both targets are new (not in their prefix): no repeat cells, and new = overall.
        assert set(row) == {"P@20", "MRR@20", "P@20_ci", "MRR@20_ci", "train_s", "score_ms_per_1000", "peak_mb",
                            "repeat_share", "P@20 new", "MRR@20 new", "n_test_examples", "n_test_sessions",
                            "settings", "settings_sha", "commit"}
        assert row["train_s"] >= 0 and row["peak_mb"] > 0 and row["score_ms_per_1000"] > 0
        assert (row["repeat_share"], row["P@20 new"], row["MRR@20 new"]) == (0.0, row["P@20"], row["MRR@20"])
        assert (row["n_test_examples"], row["n_test_sessions"]) == (2, 2)
        assert len(row["settings_sha"]) == 12 and row["commit"]
    assert {model: (row["P@20"], row["MRR@20"]) for model, row in written.items()} == {
        "pop": (50.0, 50.0), "spop": (50.0, 25.0), "item_knn": (50.0, 50.0)}
    # Two sessions, one hit and one miss: a resample draws both sessions' values with
    # replacement, so its mean is 0, 50 or 100 (chances 1/4, 1/2, 1/4): the 95% interval
    # spans it all. S-POP's MRR contributions are 1/2 and 0: 0, 25 or 50.
    assert (written["pop"]["P@20_ci"], written["pop"]["MRR@20_ci"]) == ([0.0, 100.0], [0.0, 100.0])
    assert written["spop"]["MRR@20_ci"] == [0.0, 50.0]
    assert written["item_knn"]["settings"] == {"neighbours": 100, "regularization": 20.0, "include_self": False}


def test_bench_splits_every_row_by_repeat_and_new_targets(tmp_path):
    # The same sessions; a third test example "2 3" -> 2 returns to an item of its prefix.
    # POP ranks 2 first (3 train clicks, the most): "1" -> 2 rank 1, "4 5" -> 25
    # rank 25 (a miss), "2 3" -> 2 rank 1. Overall 2 hits of 3; repeat: 1 of 1; new: 1 of 2.
    folder = write_session_folder(tmp_path / "repeats", ["1 2 3", "1 2", "2 3", " ".join(map(str, range(4, 26)))],
                                  ["1\t2", "4 5\t25", "2 3\t2"])
    results = load_bench().main(["--data", str(folder), "--results-dir", str(tmp_path / "results"),
                                 "--models", "pop"])
    metric_keys = ("P@20", "MRR@20", "repeat_share", "P@20 repeat", "MRR@20 repeat", "P@20 new", "MRR@20 new")
    row = {key: results["pop"][key] for key in metric_keys}
    assert row == {"P@20": 66.667, "MRR@20": 66.667, "repeat_share": 33.333,
                   "P@20 repeat": 100.0, "MRR@20 repeat": 100.0, "P@20 new": 50.0, "MRR@20 new": 50.0}
    [pop_line] = [line for line in load_bench().results_table(results, {}).splitlines() if line.startswith("| pop |")]
    assert pop_line.startswith("| pop | 66.67 | 0.00..100.00 | 66.67 | 0.00..100.00 | - | - |")
    assert pop_line.endswith("| 100.00 | 100.00 | 50.00 | 50.00 |")
    assert load_bench().results_table({"old": {"P@20": 1.0, "MRR@20": 0.5, "train_s": 1.0, "peak_mb": 9.0}},
                                      {}).endswith("| old | 1.00 | - | 0.50 | - | - | - | 1.0 | - | 9 | - | - | - | - |")


def test_bench_numbers_the_test_sessions_from_their_chained_prefixes():
    # SR-GNN lists a session's prefixes longest first, our converters shortest first; the
    # fourth example starts the same items again after the first session ended at "1 -> 2".
    lines = [("1 2 3", 4), ("1 2", 3), ("1", 2), ("1 2 3", 4), ("5", 6), ("5 6", 7), ("5 6", 8)]
    prefixes = [np.array(list(map(int, prefix.split()))) for prefix, _ in lines]
    labels = np.array([label for _, label in lines])
    assert load_bench().test_session_numbers(prefixes, labels).tolist() == [0, 0, 0, 1, 2, 2, 3]


def test_bench_intervals_resample_whole_sessions():
    # Session 0's three examples all hit (rank 1), session 1's three all miss (rank 30 > 20).
    # Drawn by session, a resample holds 0, 1 or 2 copies of the hits: 0, 50 or 100%, so the
    # 95% interval is [0, 100]. Drawn by example, 6 draws of a fair coin: 2.5% of resamples
    # have at most 1 hit of 6, so the interval is about [16.7, 83.3], too narrow for 2 sessions.
    ranks = np.array([1, 1, 1, 30, 30, 30])
    bench = load_bench()
    by_session = bench.percent_intervals(ranks, np.array([0, 0, 0, 1, 1, 1]), seed=42)
    by_example = bench.percent_intervals(ranks, np.arange(6), seed=42)
    assert by_session == {"P@20_ci": [0.0, 100.0], "MRR@20_ci": [0.0, 100.0]}
    assert by_example["P@20_ci"] == [16.667, 83.333]


def test_bench_names_the_bad_line(tmp_path):
    folder = write_session_folder(tmp_path / "bad", ["1 2", "3 x"], ["1\t2"])
    with pytest.raises(ValueError, match=r"train_sessions.txt:3: item ids must be integers, got '3 x'"):
        load_bench().load_data(folder)


def test_session_sequences_cut_each_users_split_events_at_inactivity_gaps():
    from jobs.train.baselines import session_sequences

    # User a: train events at 0, 100, 2000 (gap 1900 > 1800: new session), 3800 (gap exactly
    # 1800: same session); the valid event is not train. User b has no train event.
    sequences = pd.DataFrame({ITEM_IDX: [[1, 2, 3, 4, 5], [6]], SPLIT: [[0, 0, 0, 0, 1], [1]],
                              TIMESTAMPS: [[0, 100, 2000, 3800, 3900], [50]]})
    assert [list(s) for s in session_sequences(sequences, 0, 1800)] == [[1, 2], [3, 4]]


def test_fitted_baselines_survive_a_save_and_load(tmp_path, spark):
    from jobs.common.config import section_settings
    from jobs.train.baselines import load_baselines
    from jobs.train.train_baselines import fit_baselines

    walks = [[(start + step) % 9 + 1 for step in range(6)] for start in range(20)]
    sequences = pd.DataFrame({ITEM_IDX: walks, SPLIT: [[0] * 6] * 20, TIMESTAMPS: [list(range(6))] * 20})
    settings = section_settings("baselines", {"als": {"rank": 4, "max_iter": 3}})
    fitted = fit_baselines(sequences, 9, settings, spark, seed=0)
    for scorer in fitted.values():
        scorer.save(str(tmp_path))
    loaded = load_baselines(str(tmp_path))

    histories = np.array([[0, 1, 2], [3, 4, 5]])
    for name, scorer in fitted.items():
        assert np.array_equal(loaded[name].score(histories, None), scorer.score(histories, None)), name
    # Item-KNN learned the walks: 4 and 6 share the most sessions with 5 (they neighbour it
    # in every walk through it), so they lead its list.
    assert set(np.argsort(-fitted["item_knn"].score(histories, None)[1])[:2]) == {4, 6}


class InputRecorder:
    """Records what it is asked to score; scores every item 0."""

    name = "recorder"

    def __init__(self):
        self.seen = []

    def score(self, items, types, gaps=None):
        self.seen.append((items, types, gaps))
        return np.zeros((len(items), 5), dtype=np.float32)


def test_truncating_scorer_cuts_gaps_like_items():
    truncating = load_bench().TruncatingScorer
    items = np.array([[1, 2, 3]])
    gaps = np.array([[0, 4, 7]], dtype=np.int32)
    # Width 2: the last two columns of each; width 4: one padding column (0) in front.
    for width, expected_items, expected_gaps in ((2, [[2, 3]], [[4, 7]]), (4, [[0, 1, 2, 3]], [[0, 0, 4, 7]])):
        recorder = InputRecorder()
        truncating("gru", recorder, width).score(items, no_types(items), gaps)
        seen_items, _, seen_gaps = recorder.seen[0]
        assert (seen_items.tolist(), seen_gaps.tolist()) == (expected_items, expected_gaps)
    recorder = InputRecorder()
    truncating("gru", recorder, 2).score(items, no_types(items))
    assert recorder.seen[0][2] is None  # unknown gaps stay unknown


def walk_sessions(n_sessions: int, n_items: int, length: int) -> list[str]:
    """Session s walks items s, s+1, ... (wrapping after n_items): the next item is always the successor."""
    return [" ".join(str((start + step) % n_items + 1) for step in range(length)) for start in range(n_sessions)]


def test_bench_fusions_reuse_the_saved_encoders_and_fit_on_the_valid_sessions(tmp_path):
    folder = write_session_folder(tmp_path / "walks", walk_sessions(40, 30, 5), ["3 4\t5", "10 11 12\t13"])
    arguments = ["--data", str(folder), "--results-dir", str(tmp_path / "results"),
                 "--cache-dir", str(tmp_path / "cache"), "--gru-epochs", "1", "--sasrec-epochs", "1",
                 "--encoder-dim", "8", "--fusion-candidates", "5", "--valid-share", "0.2"]
    bench = load_bench()
    with pytest.raises(SystemExit, match="holds no saved gru: the fusions reuse the encoders, so run --models "
                                         "gru on this --data first"):
        bench.main([*arguments, "--models", "fusion_rrf"])

    # In this process, not one per model as main() does: four TensorFlow start-ups cost minutes.
    options = bench.parse_args(arguments)
    forwarded = bench.parse_args(bench._forwarded_options(options))  # what the workers get
    assert (forwarded.cache_dir, forwarded.valid_share) == (options.cache_dir, 0.2)
    assert bench.n_fit_sessions(bench.load_data(folder), options.valid_share) == 32  # 40 walks, the last 8 valid
    with pytest.raises(SystemExit):
        bench.parse_args([*arguments, "--valid-share", "1"])
    results = {model: bench.run_model(model, folder, options)
               for model in ("gru", "sasrec", "narm", "fusion_rrf", "fusion_stacking", "fusion_gbm",
                             "fusion_rrf_without_sasrec", "fusion_stacking_with_narm")}
    assert (tmp_path / "cache" / "walks" / "sasrec" / "model.keras").is_file()
    # Item-KNN alone ranks both successors first (an item's neighbours are its predecessor
    # and its successor, and the successor follows it in more sessions); each fusion keeps
    # them within its top 20, with weights learned from the valid sessions' prefixes.
    for fusion in ("fusion_rrf", "fusion_stacking", "fusion_gbm", "fusion_rrf_without_sasrec",
                   "fusion_stacking_with_narm"):
        assert results[fusion]["P@20"] == 100.0, fusion
    assert list(results["fusion_rrf_without_sasrec"]["settings"]["members"]) == ["pop", "spop", "item_knn", "gru"]
    assert list(results["fusion_stacking_with_narm"]["settings"]["members"])[-1] == "narm"
    assert results["narm"]["settings"]["architecture"] == "narm"
    assert (tmp_path / "cache" / "walks" / "ranks" / "fusion_gbm.npy").is_file()


def test_bench_names_fusion_ablations_by_the_member_they_drop():
    bench = load_bench()
    assert bench.fusion_parts("fusion_gbm_without_gru") == ("fusion_gbm", ("pop", "spop", "item_knn", "sasrec"))
    assert bench.fusion_parts("fusion_rrf") == ("fusion_rrf", bench.FUSION_MEMBERS)
    assert bench.fusion_parts("fusion_gbm_without_als") is None  # ALS is no fusion member
    assert bench.fusion_parts("gru") is None and bench.fusion_parts("fusion_vote") is None
    with pytest.raises(SystemExit):
        bench.parse_args(["--models", "pop,fusion_gbm_without_als"])
    assert bench.parse_args(["--models", "fusion_stacking_without_spop"]).model_list == ["fusion_stacking_without_spop"]
    assert bench.fusion_parts("fusion_gbm_with_narm") == ("fusion_gbm", (*bench.FUSION_MEMBERS, "narm"))
    assert bench.fusion_parts("fusion_gbm_with_gru") is None  # already a member
