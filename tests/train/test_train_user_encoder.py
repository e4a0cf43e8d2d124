"""GRU user encoder: the losses by hand, masking, sampling, learning a toy rule, and the nightly job end to end."""

import json
import math
import os

import keras
import numpy as np
import pandas as pd
import pytest

from jobs.common.config import section_settings
from jobs.common.night import Night
from jobs.train.encoder_scorers import load_user_encoder_scorer, recall_at_k, user_encoder_scorer
from jobs.common.features import Examples, WindowExamples, make_examples, make_window_examples, write_features
from jobs.train.models.user_encoder import (
    PopularitySampler, TiedItemLogits, alias_table, build_user_encoder, full_softmax_loss, popularity_distributions,
    sampled_softmax_loss,
)
from jobs.train.train_user_encoder import training_examples, window_fill
from jobs.common.schema import (
    BRAND_IDX, CATEGORY_IDX, EVENT_TYPE_IDX, ITEM_ID, ITEM_IDX, N_EVENT_TYPES, POPULARITY, PRICE_BUCKET, PRICE_Z,
    SPLIT, SPLIT_TRAIN, SPLIT_VALID, TIMESTAMPS, TITLE_TOKENS, USER_ID,
)


def test_full_softmax_loss_by_hand():
    # Item table rows: 0 (padding) [5, 0]; item 1 [0, 0]; item 2 [ln 3, 0]. User vector [1, 0].
    # Logits: pad masked, item 1: 0, item 2: ln 3  ->  softmax over items: 1/4, 3/4.
    # Target 2: -ln(3/4) = 0.287682; target 1: -ln(1/4) = 1.386294; mean = 0.836988.
    # (Were padding not masked, its logit 5 would dominate and the loss would be ~4.)
    embedding = keras.layers.Embedding(3, 2)
    embedding.build((None,))
    embedding.set_weights([np.array([[5.0, 0.0], [0.0, 0.0], [math.log(3.0), 0.0]], dtype=np.float32)])
    logits = TiedItemLogits(embedding)(np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32))
    loss = full_softmax_loss(np.array([2, 1]), logits)
    assert float(loss) == pytest.approx((-math.log(0.75) - math.log(0.25)) / 2, abs=1e-5)
    assert float(loss) == pytest.approx(0.836988, abs=1e-5)


# Tied table for the sampled-softmax cases: padding row 0, item 1 [1, 0], item 2 [0, 1], item 3 [1, 1].
SAMPLED_TABLE = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)


def test_sampled_softmax_loss_by_hand_with_logq_correction_and_an_accidental_hit():
    # B = 2 users, targets [1, 2]; S = 2 samples given explicitly: [3, 1].
    # Candidates (columns): [1, 2 | 3, 1]  (in-batch targets | samples).
    # p_pop = [0, 1/2, 1/4, 1/4]: in-batch expected counts B * p_pop: item 1 -> 1, item 2 -> 1/2.
    # p     = [0, 1/4, 1/4, 1/2]: sampled expected counts S * p: item 3 -> 1, item 1 -> 1/2.
    # log Q per column: [0, ln 1/2, 0, ln 1/2].
    # User 0 [1, 0]: dots [1, 0, 1, 1] - log Q = [1, ln 2, 1, 1 + ln 2]; its target is 1, so
    #   column 3 (the sampler drew item 1) is an accidental hit and is masked:
    #   loss = -ln(e / (e + 2 + e)) = ln(2e + 2) - 1 = 1.006409.
    # User 1 [0, 2]: dots [0, 2, 2, 0] - log Q = [0, 2 + ln 2, 2, ln 2]; positive column 1:
    #   loss = -ln(2e^2 / (1 + 2e^2 + e^2 + 2)) = ln(3 (1 + e^2) / (2 e^2)) = 0.532393.
    # Mean: 0.769401.
    e = math.e
    user_vectors = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    log_target_frequency = np.log(np.array([1e-30, 0.5, 0.25, 0.25]))  # index 0 is never looked up
    log_sampling_probability = np.log(np.array([1e-30, 0.25, 0.25, 0.5]))
    loss = sampled_softmax_loss(user_vectors, SAMPLED_TABLE, np.array([1, 2]), np.array([3, 1]),
                                log_target_frequency, log_sampling_probability)
    expected = ((math.log(2 * e + 2) - 1) + math.log(3 * (1 + e * e) / (2 * e * e))) / 2
    assert float(loss) == pytest.approx(expected, abs=1e-5)
    assert float(loss) == pytest.approx(0.769401, abs=1e-5)

    # Probabilities 1/2 everywhere give B * p_pop = S * p = 1, log Q = 0: the raw dots, user 0
    # [1, 0, 1, masked] -> ln(2e + 1) - 1, user 1 [0, 2, 2, 0] -> ln(2 + 2e^2) - 2; mean
    # 0.841035, not 0.769401: the correction above really moved the loss.
    no_correction = np.full(4, math.log(0.5))
    uncorrected = sampled_softmax_loss(user_vectors, SAMPLED_TABLE, np.array([1, 2]), np.array([3, 1]),
                                       no_correction, no_correction)
    expected_uncorrected = ((math.log(2 * e + 1) - 1) + math.log(2 + 2 * e * e) - 2) / 2
    assert float(uncorrected) == pytest.approx(expected_uncorrected, abs=1e-5)
    assert float(uncorrected) == pytest.approx(0.841035, abs=1e-5)


def test_examples_sharing_a_target_are_not_each_others_negatives():
    # Targets [2, 2] and the sampler drew item 2 too: for each user, the other user's column
    # and the sampled column hold its own target, so both are masked and only the positive
    # remains: softmax over one column, loss exactly 0 (unmasked it would be ln 3 or more).
    user_vectors = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    flat = np.log(np.full(4, 0.25))
    loss = sampled_softmax_loss(user_vectors, SAMPLED_TABLE, np.array([2, 2]), np.array([2]), flat, flat)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    # With no samples at all (S = 0) it is the in-batch loss alone, still 0 here.
    in_batch_only = sampled_softmax_loss(user_vectors, SAMPLED_TABLE, np.array([2, 2]),
                                         np.zeros(0, dtype=np.int32), flat, flat)
    assert float(in_batch_only) == pytest.approx(0.0, abs=1e-6)


def test_popularity_distributions_floor_unseen_items_and_flatten_by_alpha():
    # Train target counts: item 1 three times, item 2 once, item 3 never (floored to 0.5).
    # p_pop = [0, 3, 1, 0.5] / 4.5 = [0, 2/3, 2/9, 1/9].
    # p = [0, 3^0.75, 1, 0.5^0.75] / 3.874111 = [0, 0.588395, 0.258124, 0.153481].
    target_frequency, sampling_probability = popularity_distributions(np.array([0, 3, 1, 0]))
    np.testing.assert_allclose(target_frequency, [0, 2 / 3, 2 / 9, 1 / 9], atol=1e-12)
    np.testing.assert_allclose(sampling_probability, [0, 0.588395, 0.258124, 0.153481], atol=1e-6)
    # Padding 0 has probability 0 even when counted (it is never a candidate).
    assert popularity_distributions(np.array([7, 1, 1]))[1][0] == 0.0


def test_alias_table_reproduces_the_distribution_exactly():
    # Bin b hands its own item acceptance[b] / n and its alias (1 - acceptance[b]) / n;
    # summed over bins that must give back p exactly (up to float rounding).
    probabilities = np.array([0.5, 0.3, 0.1, 0.07, 0.03])
    acceptance, alias = alias_table(probabilities)
    n = len(probabilities)
    rebuilt = acceptance / n + np.bincount(alias, weights=(1.0 - acceptance) / n, minlength=n)
    np.testing.assert_allclose(rebuilt, probabilities, atol=1e-12)


def test_popularity_sampler_draws_by_popularity_never_padding_and_repeats_with_its_seed():
    counts = np.array([0, 40, 10, 0, 5])  # item 3 unseen
    _, sampling_probability = popularity_distributions(counts)
    draws = np.asarray(PopularitySampler(counts, seed=5).sample(40_000))
    assert draws.min() >= 1 and draws.max() <= 4
    frequencies = np.bincount(draws, minlength=5) / len(draws)
    # 40,000 draws: standard error of a frequency <= 0.0025, so 0.01 is 4 of them.
    np.testing.assert_allclose(frequencies, sampling_probability, atol=0.01)
    assert frequencies[3] > 0  # the floor makes unseen items drawable
    np.testing.assert_array_equal(np.asarray(PopularitySampler(counts, seed=5).sample(50)), draws[:50])


def test_left_padding_is_skipped_by_the_gru():
    # The weights do not depend on max_len, so two encoders can share them: a history of
    # 2 events must give the same user vector unpadded (max_len 2) and left-padded (max_len 4).
    keras.utils.set_random_seed(0)
    short = build_user_encoder(n_items=5, n_event_types=N_EVENT_TYPES, max_len=2, embedding_dim=8, hidden_dim=8)
    padded = build_user_encoder(n_items=5, n_event_types=N_EVENT_TYPES, max_len=4, embedding_dim=8, hidden_dim=8)
    padded.set_weights(short.get_weights())
    unpadded_vector = np.asarray(short([np.array([[3, 4]]), np.array([[1, 2]]), np.array([[0, 5]])]))
    padded_vector = np.asarray(padded([np.array([[0, 0, 3, 4]]), np.array([[0, 0, 1, 2]]), np.array([[0, 0, 0, 5]])]))
    np.testing.assert_allclose(padded_vector, unpadded_vector, atol=1e-6)
    reversed_vector = np.asarray(short([np.array([[4, 3]]), np.array([[2, 1]]), np.array([[0, 5]])]))
    assert not np.allclose(reversed_vector, unpadded_vector, atol=1e-4)  # order matters
    assert unpadded_vector.shape == (1, 8)


def test_a_first_event_with_gap_zero_is_read_and_gaps_change_the_user_vector():
    # Gap bucket 0 means "no previous event" for a user's first event as well as padding:
    # the GRU must still read that event (the item/type masks are ORed with the gap mask).
    keras.utils.set_random_seed(0)
    encoder = build_user_encoder(n_items=5, n_event_types=N_EVENT_TYPES, max_len=2, embedding_dim=8, hidden_dim=8)
    only_padding = np.asarray(encoder([np.array([[0, 0]]), np.array([[0, 0]]), np.array([[0, 0]])]))
    one_event = np.asarray(encoder([np.array([[0, 3]]), np.array([[0, 1]]), np.array([[0, 0]])]))
    assert not np.allclose(one_event, only_padding, atol=1e-4)
    seconds_apart = np.asarray(encoder([np.array([[3, 4]]), np.array([[1, 1]]), np.array([[0, 1]])]))
    weeks_apart = np.asarray(encoder([np.array([[3, 4]]), np.array([[1, 1]]), np.array([[0, 14]])]))
    assert not np.allclose(seconds_apart, weeks_apart, atol=1e-4)


def test_an_encoder_without_gaps_takes_two_inputs_and_scores_through_the_same_scorer():
    # time_gaps: false, and encoders saved before the gap input existed: the scorer feeds
    # them items and types only, whether or not the examples carry gaps.
    keras.utils.set_random_seed(0)
    encoder = build_user_encoder(n_items=5, n_event_types=N_EVENT_TYPES, max_len=2, embedding_dim=4, hidden_dim=4,
                                 time_gaps=False)
    assert [tensor.name for tensor in encoder.inputs] == ["items", "types"]
    scorer = user_encoder_scorer(encoder, np.ones((6, 4), dtype=np.float32))
    items, types = np.array([[3, 4]]), np.array([[1, 1]])
    np.testing.assert_array_equal(scorer.score(items, types, gaps=np.array([[0, 9]])), scorer.score(items, types))


def successor_rule_sequences(n_items: int, n_users: int, length: int, seed: int) -> pd.DataFrame:
    """Each user walks item s, s+1, ... (after n_items comes 1); the last event is the valid one."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_items, n_users)
    return walk_sequences([(start + np.arange(length)) % n_items + 1 for start in starts])


def walk_sequences(walks: list) -> pd.DataFrame:
    """One user per walk (item ids in order, one event a second); each walk's last event is the valid one."""
    length = len(walks[0])
    return pd.DataFrame({
        USER_ID: [f"u{user}" for user in range(len(walks))],
        ITEM_IDX: walks,
        EVENT_TYPE_IDX: [np.ones(length, dtype=int) for _ in walks],
        TIMESTAMPS: [np.arange(length) for _ in walks],
        SPLIT: [np.r_[np.full(length - 1, SPLIT_TRAIN), SPLIT_VALID] for _ in walks],
    })


def toy_settings(overrides: dict) -> dict:
    """The user_encoder section for the toy rules: a GRU with dot-product logits and a constant
    rate (what the rules were tuned with) and no repeat head (these tests are of the encoder
    itself; tests/train/test_repeat_head.py tests the head), then overrides."""
    return section_settings("user_encoder", {"logit_scale": 0.0, "learning_rate_decay": 1.0, "repeat_head": False,
                                             **overrides})


def train_on_successor_rule(n_items: int, n_users: int, settings: dict):
    """(trained encoder, train examples, valid examples, the encoder's valid recall@1) on a walk."""
    from jobs.train.encoder_scorers import user_encoder_scorer
    from jobs.train.train_user_encoder import train_user_encoder, training_examples

    sequences = successor_rule_sequences(n_items, n_users=n_users, length=6, seed=1)
    settings = toy_settings({"embedding_dim": 16, "hidden_dim": 16, "learning_rate": 0.02, **settings})
    train = training_examples(sequences, settings, max_len=4)  # windows unless settings ask for prefixes
    valid = make_examples(sequences, SPLIT_VALID, max_len=4)
    trained = train_user_encoder(train, valid, n_items, N_EVENT_TYPES, settings, seed=7)
    recall = recall_at_k(user_encoder_scorer(trained.encoder, trained.item_embeddings),
                         valid.items, valid.types, valid.targets, k=1)
    return trained, train, valid, recall


@pytest.mark.parametrize("examples", ["windows", "prefixes"])
def test_gru_learns_the_successor_rule_that_popularity_cannot(examples):
    trained, train, valid, gru_recall = train_on_successor_rule(
        12, n_users=240, settings={"epochs": 10, "batch_size": 64, "patience": 10, "training_examples": examples})

    # Popularity recommends the most frequent training target to everyone; starts are
    # uniform, so it is right for about 1 user in 12.
    most_popular = np.bincount(train.targets[train.targets > 0]).argmax()
    popularity_recall = float(np.mean(valid.targets == most_popular))
    assert gru_recall >= 0.95
    assert popularity_recall <= 0.2
    assert trained.history["val_recall_at_20"][-1] == pytest.approx(1.0)  # 12 items: top 20 holds them all


def test_sampled_softmax_learns_the_successor_rule_and_reports_the_full_softmax_val_loss():
    # 60 items, batches of 16 and 4 shared samples: each step scores 20 candidates, a third
    # of the catalog, yet the walk is learned over the whole catalog. (Most of the run time
    # is XLA compiling the train and test steps.)
    n_items = 60
    trained, train, valid, recall = train_on_successor_rule(
        n_items, n_users=300, settings={"epochs": 4, "batch_size": 16, "patience": 4, "loss": "sampled_softmax",
                                        "num_sampled_negatives": 4})
    popularity_recall = float(np.mean(valid.targets == np.bincount(train.targets[train.targets > 0]).argmax()))
    assert popularity_recall <= 0.1  # uniform starts: about 1 user in 60
    assert recall >= 0.9

    # val_loss is the full-softmax cross-entropy of the restored (best) weights on the valid set.
    user_vectors = np.asarray(trained.encoder([valid.items, valid.types, valid.gaps]))
    embedding = keras.layers.Embedding(n_items + 1, 16)
    embedding.build((None,))
    embedding.set_weights([trained.item_embeddings])
    full_loss = float(full_softmax_loss(valid.targets, TiedItemLogits(embedding)(user_vectors)))
    assert trained.history["val_loss"][trained.history["best_epoch"]] == pytest.approx(full_loss, rel=1e-4)


def test_auto_trains_on_windows_only_where_they_are_mostly_full():
    # Windows of 4 positions. Walks of 9 events, the last one valid: train targets at
    # positions 1..7, so one window for positions 1..4 (full) and one for 5..7 (3 of 4):
    # 7 / 8 = 88% full -> windows. Walks of 3 events: 1 train target in 4 positions (25%) ->
    # one prefix per target.
    settings = toy_settings({"training_examples": "auto", "window_positions": 4})
    long_walks = successor_rule_sequences(12, n_users=5, length=9, seed=2)
    short_walks = successor_rule_sequences(12, n_users=5, length=3, seed=2)
    assert isinstance(training_examples(long_walks, settings, max_len=4), WindowExamples)
    assert window_fill(make_window_examples(long_walks, SPLIT_TRAIN, max_len=4, span=4)) == pytest.approx(7 / 8)
    short = training_examples(short_walks, settings, max_len=4)
    assert isinstance(short, Examples) and len(short) == 5
    # Asked for explicitly, windows are used however sparse. SASRec trains on prefixes unless asked.
    assert isinstance(training_examples(short_walks, {**settings, "training_examples": "windows"}, max_len=4),
                      WindowExamples)
    assert isinstance(training_examples(long_walks, {**settings, "architecture": "sasrec"}, max_len=4), Examples)
    assert isinstance(training_examples(long_walks, {**settings, "architecture": "sasrec",
                                                     "training_examples": "windows"}, max_len=4), WindowExamples)


def test_unknown_loss_names_the_setting_and_the_choices():
    # The typed config refuses it when the settings are resolved, before any training.
    with pytest.raises(ValueError, match=r"config user_encoder\.loss: input should be 'full_softmax' or "
                                         r"'sampled_softmax', got 'bpr'"):
        toy_settings({"loss": "bpr"})


def tiny_catalog(n_items: int) -> pd.DataFrame:
    idx = np.arange(1, n_items + 1)
    return pd.DataFrame({ITEM_IDX: idx, ITEM_ID: [f"item-{i}" for i in idx], CATEGORY_IDX: idx % 2 + 1,
                         BRAND_IDX: idx % 3 + 1, PRICE_BUCKET: idx % 10 + 1, PRICE_Z: np.linspace(-1, 1, n_items),
                         TITLE_TOKENS: [[i, i + 1] for i in idx], POPULARITY: np.full(n_items, 5)})


def test_nightly_job_writes_the_model_dir_and_an_mlflow_run(tmp_config):
    import mlflow

    from jobs.train import train_user_encoder

    ds = "2026-11-27"
    n_items = 8
    write_features(tmp_config, ds, {"n_items": n_items, "n_event_types": 5}, tiny_catalog(n_items),
                   successor_rule_sequences(n_items, n_users=30, length=5, seed=2))
    config = {**tmp_config, "max_seq_len": 3,
              "user_encoder": {**tmp_config["user_encoder"], "embedding_dim": 4, "hidden_dim": 4, "epochs": 2,
                               "batch_size": 16}}

    model_dir = train_user_encoder.run(Night.plan(config, ds))['path']

    assert model_dir == os.path.join(tmp_config["lake_root"], "models/user_encoder", f"dt={ds}")
    assert sorted(os.listdir(model_dir)) == ["config.json", "history.json", "item_embeddings.npy", "model.keras"]
    saved_config = json.load(open(os.path.join(model_dir, "config.json")))
    assert (saved_config["n_items"], saved_config["max_len"], saved_config["embedding_dim"]) == (8, 3, 4)
    history = json.load(open(os.path.join(model_dir, "history.json")))
    assert len(history["loss"]) == len(history["val_loss"]) == len(history["val_recall_at_20"]) == 2

    scorer = load_user_encoder_scorer(model_dir)
    assert scorer.name == "user_encoder" and scorer.item_vectors.shape == (n_items + 1, 4)
    items = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.int32)
    scores = scorer.score(items, np.ones_like(items))
    assert scores.shape == (2, n_items + 1) and scores.dtype == np.float32
    assert np.all(scores[:, 0] == -np.inf) and np.all(np.isfinite(scores[:, 1:]))
    # With the default repeat head the scores are log-probabilities over the catalog (the
    # user vectors against the saved tied table, mixed with the history's own items).
    np.testing.assert_allclose(np.exp(scores[:, 1:]).sum(axis=1), 1.0, rtol=1e-5)
    assert scorer.user_vectors(items, np.ones_like(items)).shape == (2, 4)

    run = mlflow.search_runs(experiment_names=[tmp_config["mlflow"]["experiment"]], output_format="list")[0]
    assert run.data.tags["stage"] == "train_user_encoder" and run.data.tags["ds"] == ds
    assert run.data.params["hidden_dim"] == "4"
    assert {"best_val_loss", "best_val_recall_at_20", "best_epoch"} <= set(run.data.metrics)
    client = mlflow.tracking.MlflowClient()
    assert len(client.get_metric_history(run.info.run_id, "val_recall_at_20")) == 2
    artifacts = {entry.path for entry in client.list_artifacts(run.info.run_id, "user_encoder")}
    assert "user_encoder/model.keras" in artifacts


def test_job_without_valid_events_says_so(tmp_config):
    from jobs.train import train_user_encoder

    ds = "2026-11-27"
    sequences = successor_rule_sequences(8, n_users=5, length=4, seed=3)
    sequences[SPLIT] = [np.full(4, SPLIT_TRAIN)] * len(sequences)
    write_features(tmp_config, ds, {"n_items": 8}, tiny_catalog(8), sequences)
    with pytest.raises(ValueError, match="yields no valid examples"):
        train_user_encoder.run(Night.plan(tmp_config, ds))['path']


def test_training_deadline_stops_when_another_epoch_would_overrun_the_budget():
    # Budget 10 minutes = 600 s. Epoch 1 runs 0..200 s: 200 + 200 = 400 <= 600, go on.
    # Epoch 2 runs 200..450 s: 450 + 250 = 700 > 600, stop (a third epoch would end near 700 s).
    from jobs.train.models.training import TrainingDeadline

    now = [0.0]
    deadline = TrainingDeadline(10, started=0.0, clock=lambda: now[0])
    deadline.epoch_begins()
    now[0] = 200.0
    assert not deadline.should_stop(0)
    deadline.epoch_begins()
    now[0] = 450.0
    assert deadline.should_stop(1) and deadline.stopped
    assert not TrainingDeadline(None, started=0.0, clock=lambda: 1e9).should_stop(5)
    with pytest.raises(ValueError, match="max_train_minutes must be > 0"):
        TrainingDeadline(0, started=0.0)


def test_a_spent_time_budget_ends_training_after_the_first_epoch():
    trained, _, _, _ = train_on_successor_rule(
        12, n_users=60, settings={"epochs": 5, "batch_size": 64, "patience": 5, "max_train_minutes": 1e-6})
    assert len(trained.history["val_loss"]) == 1 and trained.history["stopped_by_deadline"] is True


def test_learning_rate_steps_down_by_the_decay_after_the_first_epoch():
    from jobs.train.models.training import check_learning_rate_decay, decayed_learning_rate

    # Rate 0.004 with decay 0.5: epoch 0 keeps it, epoch 1 gets 0.002, epoch 2 (given 0.002) 0.001.
    assert decayed_learning_rate(0, 0.004, 0.5) == 0.004
    assert decayed_learning_rate(1, 0.004, 0.5) == 0.002
    assert decayed_learning_rate(2, 0.002, 0.5) == 0.001
    for bad in (0.0, 1.5, -0.5):
        with pytest.raises(ValueError, match="learning_rate_decay must be in"):
            check_learning_rate_decay(bad)


def test_a_decaying_learning_rate_is_applied_and_logged_each_epoch():
    trained, _, _, _ = train_on_successor_rule(
        12, n_users=60, settings={"epochs": 3, "batch_size": 64, "patience": 5, "learning_rate_decay": 0.5})
    # The configured rate of train_on_successor_rule, halved before epochs 2 and 3.
    rate = trained.history["learning_rate"][0]
    np.testing.assert_allclose(trained.history["learning_rate"], [rate, rate / 2, rate / 4], rtol=1e-6)


def gap_rule_sequences(n_items: int, n_users: int, seed: int) -> pd.DataFrame:
    """The next item is the current one + 1 if the current event came 5 s after its predecessor,
    + 2 if it came a day later (mod n_items): only the time gaps tell which."""
    rng = np.random.default_rng(seed)
    length = 6
    items, timestamps = [], []
    for _ in range(n_users):
        gaps = rng.choice([5, 86_400], size=length - 1)
        walk = [int(rng.integers(n_items)), int(rng.integers(n_items))]  # the second has no gap before its source
        for gap_into_current in gaps[:-1]:
            walk.append((walk[-1] + (1 if gap_into_current == 5 else 2)) % n_items)
        items.append(np.array(walk) + 1)
        timestamps.append(np.r_[0, np.cumsum(gaps)])
    return pd.DataFrame({
        USER_ID: [f"u{user}" for user in range(len(items))], ITEM_IDX: items,
        EVENT_TYPE_IDX: [np.ones(length, dtype=int) for _ in items], TIMESTAMPS: timestamps,
        SPLIT: [np.r_[np.full(length - 1, SPLIT_TRAIN), SPLIT_VALID] for _ in items],
    })


def test_the_encoder_learns_a_rule_that_only_time_gaps_reveal():
    from jobs.train.train_user_encoder import train_user_encoder

    n_items = 10
    sequences = gap_rule_sequences(n_items, n_users=300, seed=4)
    train = make_examples(sequences, SPLIT_TRAIN, max_len=3)
    valid = make_examples(sequences, SPLIT_VALID, max_len=3)
    settings = toy_settings({"embedding_dim": 16, "hidden_dim": 16, "learning_rate": 0.02, "epochs": 12,
                             "batch_size": 64, "patience": 12})

    def valid_recall_at_1(time_gaps: bool) -> float:
        trained = train_user_encoder(train, valid, n_items, N_EVENT_TYPES, {**settings, "time_gaps": time_gaps},
                                     seed=7)
        return recall_at_k(user_encoder_scorer(trained.encoder, trained.item_embeddings), valid.items, valid.types,
                           valid.targets, 1, gaps=valid.gaps)

    # Without gaps the best guess (+1 or +2) is right half the time; with them, always.
    assert valid_recall_at_1(time_gaps=True) >= 0.9
    assert valid_recall_at_1(time_gaps=False) <= 0.7
