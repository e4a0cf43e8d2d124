"""Training plumbing shared by the encoder jobs (jobs/train/models/training.py).

The time budget and the learning-rate step are covered in tests/train/test_train_user_encoder.py;
here: early stopping on a one-weight model whose every epoch is worked out by hand, the
best-epoch metrics, the dataset and the precision choice.
"""

import contextlib

import numpy as np
import pytest

from jobs.train.models.training import (MONITORED, VALID_RECALL, copy_to_float32, final_metrics,
                                        fit_with_early_stopping, make_dataset, training_precision)


def one_weight_model():
    """y = w * x, w starting at 0, plain SGD with rate 0.25 on the mean squared error."""
    import keras

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.25), loss="mse")
    return model


def test_early_stopping_keeps_the_best_epoch_and_logs_the_valid_recall():
    # Train on x=1, y=2: the gradient of (w - 2)**2 is 2 (w - 2), so each epoch (one batch)
    # moves w to w - 0.25 * 2 (w - 2) = w / 2 + 1: 1, 1.5, 1.75, 1.875.
    # Valid on x=1, y=1.5: val_loss (w - 1.5)**2 = 0.25, 0, 0.0625, 0.140625. Best: epoch 1
    # (0-based); patience 2 stops after epoch 3; w is restored to 1.5.
    model = one_weight_model()
    recalls = iter([0.1, 0.2, 0.3, 0.4, 0.5])
    seen_logs = []
    history = fit_with_early_stopping(
        model, make_dataset(np.array([[1.0]]), 1, targets=np.array([[2.0]])),
        make_dataset(np.array([[1.0]]), 1, targets=np.array([[1.5]])), epochs=10, patience=2,
        valid_recall=lambda: next(recalls), on_epoch_end=lambda epoch, logs: seen_logs.append(dict(logs)))
    np.testing.assert_allclose(history[MONITORED], [0.25, 0.0, 0.0625, 0.140625], atol=1e-7)
    assert history[VALID_RECALL] == [0.1, 0.2, 0.3, 0.4]
    assert history["best_epoch"] == 1 and history["stopped_by_deadline"] is False
    assert float(model.get_weights()[0][0, 0]) == 1.5
    assert [logs[VALID_RECALL] for logs in seen_logs] == [0.1, 0.2, 0.3, 0.4]


def test_final_metrics_are_those_of_the_best_epoch():
    history = {"loss": [3.0, 2.0, 1.0], MONITORED: [0.5, 0.2, 0.4], VALID_RECALL: [0.1, 0.3, 0.2],
               "best_epoch": 1, "train_seconds": 12.5, "stopped_by_deadline": False}
    assert final_metrics(history) == {"best_loss": 2.0, "best_val_loss": 0.2, f"best_{VALID_RECALL}": 0.3,
                                      "best_epoch": 1, "epochs_run": 3, "train_seconds": 12.5}


def batches(dataset) -> list[list[int]]:
    """One epoch's batches (and the next epoch's order is drawn, as fit does after each)."""
    epoch = [dataset[index].tolist() for index in range(len(dataset))]
    dataset.on_epoch_end()
    return epoch


def test_make_dataset_keeps_order_without_a_seed_and_shuffles_reproducibly_with_one():
    values = np.arange(5)
    assert batches(make_dataset(values, 2)) == [[0, 1], [2, 3], [4]]
    shuffled = batches(make_dataset(values, 2, seed=7))
    assert shuffled == batches(make_dataset(values, 2, seed=7))
    assert [len(batch) for batch in shuffled] == [2, 2, 1]
    assert sorted(sum(shuffled, [])) == [0, 1, 2, 3, 4]
    reshuffled = make_dataset(values, 2, seed=7)
    epochs = [batches(reshuffled) for _ in range(4)]
    assert epochs[0] == shuffled and len({str(epoch) for epoch in epochs}) > 1  # a new order every epoch


def test_make_dataset_pairs_inputs_with_targets():
    dataset = make_dataset((np.array([1, 2, 3]), np.array([4, 5, 6])), 2, targets=np.array([10, 20, 30]))
    pairs = [((a.tolist(), b.tolist()), y.tolist()) for (a, b), y in (dataset[0], dataset[1])]
    assert pairs == [(([1, 2], [4, 5]), [10, 20]), (([3], [6]), [30])]
    with pytest.raises(ValueError, match="same number of rows"):
        make_dataset(np.array([1, 2]), 2, targets=np.array([1]))


@contextlib.contextmanager
def global_policy(name: str):
    """Keras' global dtype policy set to name, the previous one restored afterwards."""
    import keras

    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def see_gpus(monkeypatch, gpus: list[str]) -> None:
    """Make the Keras backend in use report gpus through its own device query."""
    import keras

    if keras.config.backend() == "jax":
        import jax

        devices = [type("Device", (), {"platform": "gpu"})() for _ in gpus] or [type("Device", (), {"platform": "cpu"})()]
        monkeypatch.setattr(jax, "devices", lambda *args: devices)
    else:
        import tensorflow as tf

        monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: gpus if kind == "GPU" else [])


@pytest.mark.parametrize("gpus, policy", [([], "float32"), (["GPU:0"], "mixed_float16")], ids=["cpu", "gpu"])
def test_training_precision_is_mixed_only_on_a_gpu_and_restored_afterwards(monkeypatch, gpus, policy):
    import keras

    see_gpus(monkeypatch, gpus)
    with global_policy("mixed_bfloat16"):
        with training_precision() as chosen:
            assert chosen == policy == keras.mixed_precision.global_policy().name
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"


def test_the_backend_in_use_is_the_one_asked_for():
    # tests/train/test_keras_backends.py runs this file under KERAS_BACKEND=jax as well.
    import os

    import keras

    assert keras.config.backend() == os.environ.get("KERAS_BACKEND", "tensorflow")


def test_copy_to_float32_rebuilds_a_mixed_precision_model_with_its_weights():
    import keras

    def build():
        return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="ones")])

    with global_policy("mixed_float16"):
        trained = build()
        trained.set_weights([np.array([[0.5], [-2.0]], dtype=np.float32), np.array([0.25], dtype=np.float32)])
    exported = copy_to_float32(build, trained)
    assert exported.layers[0].dtype_policy.name == "float32"
    # 0.5 * 1 - 2 * 3 + 0.25 = -5.25, computed in float32.
    output = exported(np.array([[1.0, 3.0]], dtype=np.float32))
    assert output.dtype == "float32" and float(output[0, 0]) == -5.25


@pytest.mark.parametrize("min_relative_improvement, patience, stopped_after, restored", [
    # Losses 10, 9, 8.95, 8.94, 8.0. Floor 1%: epoch 1 is progress (9 < 10 * 0.99 = 9.9), epochs
    # 2 and 3 are not (8.95 and 8.94 are not below 9 * 0.99 = 8.91): patience 2 stops after
    # epoch 3 and restores epoch 3, the lowest loss, though its decrease was below the floor.
    (0.01, 2, 3, 3.0),
    (0.01, 1, 2, 2.0),  # patience 1: the first epoch without progress (2) ends the run
    (0.0, 2, None, 4.0),  # no floor: every decrease is progress, so all five epochs run
])
def test_plateau_stopping_asks_each_epoch_for_a_relative_gain_and_restores_the_lowest_loss(
        min_relative_improvement, patience, stopped_after, restored):
    import keras

    from jobs.train.models.plateau_stopping import PlateauStopping

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    stopping = PlateauStopping(MONITORED, patience, min_relative_improvement)
    stopping.set_model(model)
    stopping.on_train_begin()
    model.stop_training, ran = False, []
    for epoch, loss in enumerate([10.0, 9.0, 8.95, 8.94, 8.0]):
        model.set_weights([np.array([[float(epoch)]])])  # the weight names the epoch it comes from
        stopping.on_epoch_end(epoch, {MONITORED: loss})
        ran.append(epoch)
        if model.stop_training:
            break
    stopping.on_train_end()
    assert ran[-1] == (4 if stopped_after is None else stopped_after)
    assert float(model.get_weights()[0][0, 0]) == restored


def test_plateau_stopping_refuses_a_floor_outside_zero_to_one():
    from jobs.train.models.plateau_stopping import PlateauStopping

    with pytest.raises(ValueError, match="min_relative_improvement in \\[0, 1\\)"):
        PlateauStopping(MONITORED, 2, 1.5)
