"""features.py: examples cut from hand-made sequences, item arrays, and reading partitions."""

import os

import numpy as np
import pandas as pd
import pytest

from jobs.common.features import (
    LOG_POPULARITY, event_gap_buckets, gap_buckets, histories_before, item_feature_arrays, load_features,
    make_examples, make_window_examples,
    transition_pairs, vocabulary_size, write_features,
)
from jobs.common.lake import partition_path
from jobs.common.schema import (
    BRAND_IDX, CATEGORY_IDX, EVENT_TYPE_IDX, FEATURE_ITEMS, FEATURE_META, FEATURE_SEQUENCES, ITEM_ID, ITEM_IDX,
    POPULARITY, PRICE_BUCKET, PRICE_Z, SPLIT, SPLIT_TEST, SPLIT_TRAIN, SPLIT_VALID, TIMESTAMPS, TITLE_TOKENS,
    USER_ID,
)

T, V, X = SPLIT_TRAIN, SPLIT_VALID, SPLIT_TEST


def two_user_sequences() -> pd.DataFrame:
    # u1: 3 5 3 | 7 | 2   (train train train | valid | test)
    # u2: 4 | 6 6 1       (train | valid valid valid); 6 then 6 is a view then a click
    return pd.DataFrame({
        USER_ID: ["u1", "u2"],
        ITEM_IDX: [[3, 5, 3, 7, 2], [4, 6, 6, 1]],
        EVENT_TYPE_IDX: [[1, 2, 1, 4, 1], [1, 1, 2, 3]],
        TIMESTAMPS: [[10, 20, 30, 40, 50], [11, 21, 31, 41]],
        SPLIT: [[T, T, T, V, X], [T, V, V, V]],
    })


def test_train_examples_start_at_second_event_and_are_left_padded():
    examples = make_examples(two_user_sequences(), SPLIT_TRAIN, max_len=3)
    # u1 positions 1 and 2 are train targets (position 0 has no history); u2's only
    # train event is its first, so it gives none.
    np.testing.assert_array_equal(examples.items, [[0, 0, 3], [0, 3, 5]])
    np.testing.assert_array_equal(examples.types, [[0, 0, 1], [0, 1, 2]])
    np.testing.assert_array_equal(examples.targets, [5, 3])
    assert list(examples.user_ids) == ["u1", "u1"]
    assert examples.items.dtype == np.int32 and examples.types.dtype == np.int32


def test_valid_examples_see_earlier_splits_but_nothing_later():
    examples = make_examples(two_user_sequences(), SPLIT_VALID, max_len=3)
    # u1: target 7 after train events 3 5 3 (the test event 2 never appears).
    # u2: 6 after [4]; 6 after [4 6]; 1 after [4 6 6].
    np.testing.assert_array_equal(examples.items, [[3, 5, 3], [0, 0, 4], [0, 4, 6], [4, 6, 6]])
    np.testing.assert_array_equal(examples.types, [[1, 2, 1], [0, 0, 1], [0, 1, 1], [1, 1, 2]])
    np.testing.assert_array_equal(examples.targets, [7, 6, 6, 1])
    assert list(examples.user_ids) == ["u1", "u2", "u2", "u2"]


def test_window_examples_group_the_targets_into_windows_of_twice_max_len():
    windows = make_window_examples(two_user_sequences(), SPLIT_VALID, max_len=2)
    # u1's one valid target (7, position 3) is in block (3 - 1) // 2 = 1: inputs are positions
    # 0..3 (3 5 3 7); the last two columns predict positions 3 (7) and 4 (2, a test event: 0).
    # u2's valid targets at positions 1, 2 (block 0) and 3 (block 1): block 0 reads positions
    # -2..1 (0 0 4 6) and predicts 6 6; block 1 reads 0..3 (4 6 6 1) and predicts 1, then
    # nothing past u2's last event.
    np.testing.assert_array_equal(windows.items, [[3, 5, 3, 7], [0, 0, 4, 6], [4, 6, 6, 1]])
    np.testing.assert_array_equal(windows.types, [[1, 2, 1, 4], [0, 0, 1, 1], [1, 1, 2, 3]])
    np.testing.assert_array_equal(windows.targets, [[7, 0], [6, 6], [1, 0]])
    assert windows.gaps.shape == (3, 4) and windows.targets.dtype == np.int32


def test_window_examples_without_context_read_each_block_alone():
    # context 0 (SASRec): window k reads positions 2k..2k+1 and predicts 2k+1..2k+2. u1's
    # valid target 7 (position 3) is in block 1: reads 3 7, predicts 7 then 2 (test: 0).
    # u2: block 0 reads 4 6 and predicts 6 6; block 1 reads 6 1 and predicts 1, then nothing.
    windows = make_window_examples(two_user_sequences(), SPLIT_VALID, max_len=2, context=0)
    np.testing.assert_array_equal(windows.items, [[3, 7], [4, 6], [6, 1]])
    np.testing.assert_array_equal(windows.targets, [[7, 0], [6, 6], [1, 0]])
    assert windows.context == 0 and make_window_examples(two_user_sequences(), SPLIT_VALID, max_len=2).context == 2


def test_window_examples_of_one_position_are_prefixes_with_one_more_event():
    # span 1, context 2: one window per target, its 2 events before the one it follows
    # (positions k - 2 .. k for the target at k + 1). u1's 7 (position 3) reads 3 5 3;
    # u2's 6, 6, 1 (positions 1, 2, 3) read 0 0 4, 0 4 6 and 4 6 6.
    windows = make_window_examples(two_user_sequences(), SPLIT_VALID, max_len=2, context=2, span=1)
    np.testing.assert_array_equal(windows.items, [[3, 5, 3], [0, 0, 4], [0, 4, 6], [4, 6, 6]])
    np.testing.assert_array_equal(windows.targets, [[7], [6], [6], [1]])


def test_window_examples_hold_each_target_once_with_the_history_make_examples_gives_it():
    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 30, size=40)  # some users have no event at all
    sequences = pd.DataFrame({
        USER_ID: [f"u{i}" for i in range(len(lengths))],
        ITEM_IDX: [rng.integers(0, 9, size=n) for n in lengths],  # item 0: outside the catalog, never a target
        EVENT_TYPE_IDX: [rng.integers(1, 5, size=n) for n in lengths],
        TIMESTAMPS: [np.cumsum(rng.integers(1, 5000, size=n)) for n in lengths],
        SPLIT: [rng.choice([T, V], size=n) for n in lengths],
    })
    max_len = 4
    for split in (T, V):
        examples = make_examples(sequences, split, max_len)
        windows = make_window_examples(sequences, split, max_len)
        found = []
        for w, j in zip(*np.nonzero(windows.targets)):
            end = max_len + j + 1  # the history of the target after column max_len + j
            found.append((tuple(windows.items[w, end - max_len:end]), tuple(windows.types[w, end - max_len:end]),
                          tuple(windows.gaps[w, end - max_len:end]), int(windows.targets[w, j])))
        expected = [(tuple(i), tuple(t), tuple(g), int(target)) for i, t, g, target
                    in zip(examples.items, examples.types, examples.gaps, examples.targets)]
        assert sorted(found) == sorted(expected) and len(found) == len(examples)
        # Without context the same targets, each after the tail of its history within its block.
        blocks = make_window_examples(sequences, split, max_len, context=0)
        found = [(tuple(blocks.items[w, :j + 1]), int(blocks.targets[w, j]))
                 for w, j in zip(*np.nonzero(blocks.targets))]
        expected = [(tuple(i[max_len - 1 - (j % max_len):]), int(target)) for i, target, j
                    in zip(examples.items, examples.targets, steps_before_targets(sequences, split))]
        assert sorted(found) == sorted(expected)


def steps_before_targets(sequences: pd.DataFrame, split: int) -> list[int]:
    """For each make_examples target, in its order: its position in its user's sequence minus 1."""
    return [position - 1 for items, splits in zip(sequences[ITEM_IDX], sequences[SPLIT])
            for position, (item, event_split) in enumerate(zip(items, splits))
            if position >= 1 and event_split == split and item != 0]


def test_gap_buckets_count_the_edges_at_or_below_the_gap():
    # Edges (s): 10 30 60 120 300 600 1800 3600 10800 43200 86400 259200 604800 2592000.
    # 0 and 9 s: below the first edge -> 1; exactly 10 s -> 2; 95 s passes 10, 30, 60 -> 4;
    # one day passes 11 edges -> 12; 40 days passes all 14 -> 15; a negative gap counts as 0 -> 1.
    np.testing.assert_array_equal(gap_buckets([0, 9, 10, 95, 86_400, 40 * 86_400, -5]), [1, 1, 2, 4, 12, 15, 1])
    assert gap_buckets([0]).dtype == np.int32


def test_event_gap_buckets_start_at_zero_and_skip_missing_timestamps():
    # Gaps 5 s -> 1, 95 s -> 4; the missing timestamp gives 0 to its event and the next.
    np.testing.assert_array_equal(event_gap_buckets([0, 5, 100]), [0, 1, 4])
    np.testing.assert_array_equal(event_gap_buckets([0, None, 100, 100 + 86_400]), [0, 0, 0, 12])
    assert len(event_gap_buckets([])) == 0


def test_example_gaps_are_the_history_events_gaps_to_their_predecessors():
    # u2's timestamps 11 21 31 41: every gap is 10 s -> bucket 2; its first event has none -> 0.
    # u1 (10 20 30 | 40): the valid history 3 5 3 has gaps none, 10 s, 10 s -> 0 2 2.
    examples = make_examples(two_user_sequences(), SPLIT_VALID, max_len=3)
    np.testing.assert_array_equal(examples.gaps, [[0, 2, 2], [0, 0, 0], [0, 0, 2], [0, 2, 2]])
    # Truncated to 2 columns, u1's test history 3 7 keeps each event's gap to its real predecessor.
    np.testing.assert_array_equal(make_examples(two_user_sequences(), SPLIT_TEST, max_len=2).gaps, [[2, 2]])


def test_histories_before_a_second_hold_the_users_strictly_earlier_events():
    # u1 at second 30: events at 10 and 20 (not the one at 30 itself), last 3 columns, left-padded.
    # u2 at 100: its last 3 events (21, 31, 41 -> items 6 6 1). u1 at 5 and an unknown user: nothing.
    history = histories_before(two_user_sequences(), ["u1", "u2", "u1", "nobody"], [30, 100, 5, 99], max_len=3)
    np.testing.assert_array_equal(history.items, [[0, 3, 5], [6, 6, 1], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(history.types, [[0, 1, 2], [1, 2, 3], [0, 0, 0], [0, 0, 0]])
    # Gaps are each event's gap to its predecessor: u1's 20 - 10 = 10 s is bucket 2 (edge 10 <= 10).
    np.testing.assert_array_equal(history.gaps[0], [0, 0, 2])
    assert list(history.user_ids) == ["u1", "u2", "u1", "nobody"] and not history.targets.any()


def test_histories_before_match_a_per_request_reference_on_random_users_and_seconds():
    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 9, size=40)
    times = [np.sort(rng.integers(1_000, 1_100, size=n)) for n in lengths]  # repeated seconds too
    sequences = pd.DataFrame({USER_ID: [f"u{n}" for n in range(40)],
                              ITEM_IDX: [list(rng.integers(1, 50, size=n)) for n in lengths],
                              EVENT_TYPE_IDX: [[1] * n for n in lengths], TIMESTAMPS: [list(t) for t in times],
                              SPLIT: [[T] * n for n in lengths]})
    users = rng.integers(0, 42, size=300)  # u40 and u41 have no sequence
    seconds = rng.integers(990, 1_110, size=300)
    history = histories_before(sequences, [f"u{n}" for n in users], seconds, max_len=4)
    for row, (user, second) in enumerate(zip(users, seconds)):
        earlier = [] if user >= 40 else [item for item, t in zip(sequences[ITEM_IDX][user], times[user]) if t < second]
        expected = ([0] * 4 + earlier)[-4:]
        np.testing.assert_array_equal(history.items[row], expected)


def test_histories_are_truncated_to_the_most_recent_events():
    examples = make_examples(two_user_sequences(), SPLIT_TEST, max_len=2)
    # u1's test target 2 follows 3 5 3 7: the last two are 3 7 (types 1 4).
    np.testing.assert_array_equal(examples.items, [[3, 7]])
    np.testing.assert_array_equal(examples.types, [[1, 4]])
    np.testing.assert_array_equal(examples.targets, [2])


def test_out_of_catalog_item_is_never_a_target_but_stays_a_gap_in_history():
    sequences = pd.DataFrame({USER_ID: ["u"], ITEM_IDX: [[2, 0, 4]], EVENT_TYPE_IDX: [[1, 1, 1]],
                              TIMESTAMPS: [[1, 2, 3]], SPLIT: [[T, T, T]]})
    examples = make_examples(sequences, SPLIT_TRAIN, max_len=3)
    np.testing.assert_array_equal(examples.items, [[0, 2, 0]])
    np.testing.assert_array_equal(examples.targets, [4])


def test_no_examples_gives_empty_arrays_of_the_right_shape():
    examples = make_examples(two_user_sequences().iloc[:0], SPLIT_TRAIN, max_len=4)
    assert examples.items.shape == (0, 4) and examples.targets.shape == (0,) and len(examples) == 0


def test_transition_pairs_drop_repeats():
    sequences = two_user_sequences()
    np.testing.assert_array_equal(transition_pairs(sequences, SPLIT_TRAIN), [[3, 5], [5, 3]])
    # Valid: 3->7, 4->6, (6->6 is a repeat), 6->1.
    np.testing.assert_array_equal(transition_pairs(sequences, SPLIT_VALID), [[3, 7], [4, 6], [6, 1]])


def catalog() -> pd.DataFrame:
    return pd.DataFrame({
        ITEM_IDX: [2, 1],  # unsorted on purpose; item 3 of the catalog is absent
        ITEM_ID: ["b", "a"],
        CATEGORY_IDX: [2, 1],
        BRAND_IDX: [1, 3],
        PRICE_BUCKET: [10, 4],
        PRICE_Z: [-0.5, 1.25],
        TITLE_TOKENS: [[7, 8, 9], []],
        POPULARITY: [3, 0],
    })


def test_item_feature_arrays_are_row_aligned_with_item_idx():
    arrays = item_feature_arrays(catalog(), max_title_tokens=2, n_items=3)
    np.testing.assert_array_equal(arrays[CATEGORY_IDX], [0, 1, 2, 0])
    np.testing.assert_array_equal(arrays[BRAND_IDX], [0, 3, 1, 0])
    np.testing.assert_array_equal(arrays[PRICE_BUCKET], [0, 4, 10, 0])
    np.testing.assert_allclose(arrays[PRICE_Z], [0.0, 1.25, -0.5, 0.0])
    # Titles keep their first 2 tokens; the empty title stays all padding.
    np.testing.assert_array_equal(arrays[TITLE_TOKENS], [[0, 0], [0, 0], [7, 8], [0, 0]])
    # log1p(3) = ln 4 = 1.386294; log1p(0) = 0.
    np.testing.assert_allclose(arrays[LOG_POPULARITY], [0.0, 0.0, 1.386294, 0.0], atol=1e-6)


def test_vocabulary_size_covers_declared_and_observed_ids():
    assert vocabulary_size({"n_brands": 3}, "n_brands", np.array([1, 2])) == 4
    assert vocabulary_size({"n_brands": 3}, "n_brands", np.array([1, 5])) == 6


def test_write_then_load_round_trip(tmp_config):
    meta = {"n_items": 7, "n_categories": 2}
    write_features(tmp_config, "2026-11-27", meta, catalog(), two_user_sequences())
    features = load_features(tmp_config, "2026-11-27")
    assert features.meta == meta and features.n_items == 7
    assert list(features.items[ITEM_IDX]) == [1, 2]  # sorted
    assert list(features.sequences[ITEM_IDX].iloc[0]) == [3, 5, 3, 7, 2]


def test_missing_partition_error_names_the_path(tmp_config):
    with pytest.raises(FileNotFoundError, match="features/meta/dt=2026-11-27"):
        load_features(tmp_config, "2026-11-27")


def test_missing_column_error_names_the_column(tmp_config):
    write_features(tmp_config, "2026-11-27", {"n_items": 7}, catalog(), two_user_sequences())
    items_dir = partition_path(tmp_config, FEATURE_ITEMS, "2026-11-27")
    part = os.path.join(items_dir, "part-00000.parquet")
    pd.read_parquet(part).drop(columns=[BRAND_IDX]).to_parquet(part)
    with pytest.raises(ValueError, match=f"features/items/dt=2026-11-27 lacks columns \\['{BRAND_IDX}'\\]"):
        load_features(tmp_config, "2026-11-27")


def test_non_parallel_arrays_are_rejected_with_the_user(tmp_config):
    sequences = two_user_sequences()
    sequences.at[1, TIMESTAMPS] = [11, 21]
    write_features(tmp_config, "2026-11-27", {"n_items": 7}, catalog(), sequences)
    with pytest.raises(ValueError, match=f"column {TIMESTAMPS} is not parallel.*'u2'"):
        load_features(tmp_config, "2026-11-27")


def test_item_outside_catalog_is_rejected(tmp_config):
    # The sequences mention items up to 7 but the metadata declares 3.
    write_features(tmp_config, "2026-11-27", {"n_items": 3}, catalog(), two_user_sequences())
    expected = f"{FEATURE_SEQUENCES}/dt=2026-11-27: column {ITEM_IDX} must lie in 0..n_items=3"
    with pytest.raises(ValueError, match=expected):
        load_features(tmp_config, "2026-11-27")


def test_corrupt_meta_is_rejected(tmp_config):
    write_features(tmp_config, "2026-11-27", {"n_items": 7}, catalog(), two_user_sequences())
    with open(os.path.join(partition_path(tmp_config, FEATURE_META, "2026-11-27"), "meta.json"), "w") as handle:
        handle.write("{not json")
    with pytest.raises(ValueError, match="meta.json is not valid JSON"):
        load_features(tmp_config, "2026-11-27")
