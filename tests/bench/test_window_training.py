"""bench/window_training.py: prefix and window training of the same GRU, side by side."""

import numpy as np
import pandas as pd
from bench_scripts import load_bench_script

from jobs.common.config import resolve_config
from jobs.common.schema import (EVENT_TYPE_IDX, ITEM_IDX, N_EVENT_TYPES, SPLIT, SPLIT_TRAIN, SPLIT_VALID, TIMESTAMPS,
                                USER_ID)

N_ITEMS = 60


def cyclic_sequences(users: int = 120, length: int = 30) -> pd.DataFrame:
    """Each user walks items k, k+1, ... (mod 60): the next item is learnable from the current one;
    the last 5 events of each user are the valid split."""
    rng = np.random.default_rng(0)
    starts = rng.integers(0, N_ITEMS, size=users)
    return pd.DataFrame({
        USER_ID: [f"u{i}" for i in range(users)],
        ITEM_IDX: [(start + np.arange(length)) % N_ITEMS + 1 for start in starts],
        EVENT_TYPE_IDX: [np.ones(length, dtype=np.int64)] * users,
        TIMESTAMPS: [np.arange(length, dtype=np.int64) * 60] * users,
        SPLIT: [np.array([SPLIT_TRAIN] * (length - 5) + [SPLIT_VALID] * 5)] * users,
    })


def test_both_schemes_train_the_nightly_encoder_and_learn_a_walk_through_the_catalog():
    script = load_bench_script("window_training")
    settings = {**resolve_config({})["user_encoder"], "learning_rate": 0.03, "learning_rate_decay": 1.0,
                "batch_size": 64, "embedding_dim": 16, "hidden_dim": 16}
    results = script.compare(cyclic_sequences(), N_ITEMS, N_EVENT_TYPES, max_len=5, settings=settings,
                             epochs=3, seed=1)
    assert set(results) == {"prefixes", "windows"}
    for scheme, rows in results.items():
        assert [row["epoch"] for row in rows] == [1, 2, 3], scheme
        assert rows[-1]["val_loss"] < rows[0]["val_loss"], scheme
        # Chance is 20 of 60 items (0.33); the walk makes the next item certain.
        assert rows[-1]["val_recall_at_20"] > 0.6, (scheme, rows)
    assert "| all |" in script.table(results)


def test_set_values_are_json_where_they_parse_and_text_elsewhere():
    script = load_bench_script("window_training")
    assert [script.json_or_text(value) for value in ("3", "0.5", "false", "null", "sasrec", "full_softmax")] == \
        [3, 0.5, False, None, "sasrec", "full_softmax"]


def test_a_night_without_features_is_named_with_the_command_that_makes_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FUSIONREC_HOME", str(tmp_path))
    script = load_bench_script("window_training")
    assert script.main(["--ds", "2001-01-01", "--epochs", "1"]) == 2
    assert "run `make demo DATE=2001-01-01` first" in capsys.readouterr().out
