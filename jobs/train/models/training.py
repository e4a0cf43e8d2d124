"""Keras training plumbing shared by the two encoder jobs.

Both jobs fit with the same rules, on any Keras 3 backend (no tf.* here): seeded shuffling
of in-memory batches (batches.ArrayBatches), mixed precision only on a GPU, early stopping on the valid split's loss with the best weights restored, and a
validation recall@k computed after every epoch and logged to MLflow beside the losses.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Callable

import numpy as np

from jobs.train.encoder_scorers import CONFIG_FILE, HISTORY_FILE, ITEM_EMBEDDINGS_FILE, MODEL_FILE

VALID_RECALL_K = 20
VALID_RECALL = f"val_recall_at_{VALID_RECALL_K}"  # MLflow metric names cannot contain '@'
MONITORED = "val_loss"


@contextlib.contextmanager
def training_precision():
    """mixed_float16 while building and fitting on a GPU, float32 on CPU; restored afterwards.

    On CPU float16 is slower, not faster, so mixed precision is only worth it on a GPU.
    """
    import keras

    previous = keras.mixed_precision.global_policy().name
    policy = "mixed_float16" if gpu_available() else "float32"
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield policy
    finally:
        keras.mixed_precision.set_global_policy(previous)


def gpu_available() -> bool:
    """Whether the Keras backend in use sees a GPU, asked through the backend's own device query."""
    import keras

    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(device.platform == "gpu" for device in jax.devices())
    if backend == "torch":
        import torch

        return bool(torch.cuda.is_available())
    return False


def make_dataset(inputs, batch_size: int, seed: int | None = None, targets: np.ndarray | None = None):
    """Batches over in-memory arrays for fit (any backend); shuffled with `seed`, every epoch anew, when one is given."""
    from jobs.train.models.batches import ArrayBatches

    return ArrayBatches(inputs, batch_size, seed=seed, targets=targets)


EpochLogger = Callable[[int, dict], None]


def fit_with_early_stopping(model, train_data, valid_data, epochs: int, patience: int,
                            valid_recall: Callable[[], float], on_epoch_end: EpochLogger | None = None,
                            max_train_minutes: float | None = None, learning_rate_decay: float = 1.0,
                            min_relative_improvement: float = 0.0) -> dict:
    """Fit, adding VALID_RECALL after every epoch; stop on val_loss and restore the best weights.

    on_epoch_end(epoch, logs) receives each epoch's complete logs (e.g. log_epoch_to_mlflow).
    max_train_minutes: a time budget (None: none); see TrainingDeadline.
    learning_rate_decay: the learning rate is multiplied by it before every epoch after the
    first (1.0: constant); see decayed_learning_rate.
    patience, min_relative_improvement: see PlateauStopping.
    Returns the history: one list per metric plus best_epoch (0-based), train_seconds and
    stopped_by_deadline.
    """
    import keras

    from jobs.train.models.plateau_stopping import PlateauStopping

    def add_valid_recall(epoch, logs):
        logs[VALID_RECALL] = valid_recall()

    started = time.monotonic()

    def print_progress(epoch, logs):
        # One line per epoch in the task log: Keras' own progress bar garbles Airflow logs.
        values = " ".join(f"{name}={value:.4f}" for name, value in sorted(logs.items()))
        print(f"epoch {epoch + 1}/{epochs}: {values} ({time.monotonic() - started:.0f} s)", flush=True)

    # Order matters: each callback sees the logs the previous ones filled in.
    check_learning_rate_decay(learning_rate_decay)
    callbacks = [keras.callbacks.LambdaCallback(on_epoch_end=add_valid_recall)]
    if learning_rate_decay != 1.0:
        # Also puts "learning_rate" into each epoch's logs, so MLflow shows the schedule.
        callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda epoch, rate: decayed_learning_rate(epoch, rate, learning_rate_decay)))
    if on_epoch_end is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end))
    callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=print_progress))
    deadline = TrainingDeadline(max_train_minutes, started)

    def stop_at_deadline(epoch, logs):
        if deadline.should_stop(epoch):
            model.stop_training = True

    callbacks.append(keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: deadline.epoch_begins(),
                                                    on_epoch_end=stop_at_deadline))
    # Last: its on_train_end restores the best epoch's weights however training ended
    # (patience, the epoch limit or the deadline).
    callbacks.append(PlateauStopping(MONITORED, patience, min_relative_improvement))
    # shuffle=False: the batches already shuffle with their seed.
    fitted = model.fit(train_data, validation_data=valid_data, epochs=epochs, callbacks=callbacks, shuffle=False,
                       verbose=0)
    history = {name: [float(value) for value in values] for name, values in fitted.history.items()}
    history["best_epoch"] = int(np.argmin(history[MONITORED]))
    history["train_seconds"] = round(time.monotonic() - started, 2)
    history["stopped_by_deadline"] = deadline.stopped
    return history


def check_learning_rate_decay(decay: float) -> None:
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"learning_rate_decay must be in (0, 1] (1: a constant learning rate), got {decay}")


def decayed_learning_rate(epoch: int, rate: float, decay: float) -> float:
    """The rate for epoch (0-based), given the rate the previous epoch used: step decay per epoch.

    Why: a constant Adam rate leaves the last epochs oscillating around the optimum; SR-GNN
    and NARM step the rate down during training, and a late, small rate gains the last points
    of recall. Epoch 0 keeps the configured rate.
    """
    return float(rate) if epoch == 0 else float(rate) * decay


class TrainingDeadline:
    """Decides, after each epoch, whether one more epoch would overrun the time budget.

    A nightly task has a slot to finish in: rather than be killed mid-epoch (and lose the
    run), training ends early and keeps its best epoch so far. "One more epoch" is
    estimated by the epoch just finished, so the budget is rarely overrun by more than the
    validation that follows an epoch. None: no budget.
    """

    def __init__(self, max_minutes: float | None, started: float, clock: Callable[[], float] = time.monotonic):
        if max_minutes is not None and max_minutes <= 0:
            raise ValueError(f"max_train_minutes must be > 0 (or null for no budget), got {max_minutes}")
        self.max_seconds = None if max_minutes is None else 60.0 * float(max_minutes)
        self.started, self.clock = started, clock
        self.epoch_started = started
        self.stopped = False

    def epoch_begins(self) -> None:
        self.epoch_started = self.clock()

    def should_stop(self, epoch: int) -> bool:
        """After epoch (0-based) ends: True once another epoch like it would pass the budget."""
        if self.max_seconds is None:
            return False
        now = self.clock()
        self.stopped = (now - self.started) + (now - self.epoch_started) > self.max_seconds
        if self.stopped:
            print(f"time budget: stopping after epoch {epoch + 1}, another epoch would pass "
                  f"{self.max_seconds / 60:g} minutes", flush=True)
        return self.stopped


def log_epoch_to_mlflow(epoch: int, logs: dict) -> None:
    """Per-epoch metrics into the active MLflow run, step = epoch (0-based)."""
    import mlflow

    mlflow.log_metrics({name: float(value) for name, value in logs.items()}, step=epoch)


def final_metrics(history: dict) -> dict:
    """The metrics of the restored (best) epoch, prefixed best_, plus run facts."""
    best = history["best_epoch"]
    metrics = {f"best_{name}": values[best] for name, values in history.items() if isinstance(values, list)}
    metrics.update(best_epoch=best, epochs_run=len(history[MONITORED]), train_seconds=history["train_seconds"])
    return metrics


def write_json(path: str, payload: dict) -> None:
    with open(path, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)


def write_model_dir(directory: str, model, item_embeddings: np.ndarray, model_config: dict, history: dict) -> None:
    """model.keras, item_embeddings.npy (float32), config.json and history.json into directory."""
    model.save(os.path.join(directory, MODEL_FILE))
    np.save(os.path.join(directory, ITEM_EMBEDDINGS_FILE), item_embeddings.astype(np.float32))
    write_json(os.path.join(directory, CONFIG_FILE), model_config)
    write_json(os.path.join(directory, HISTORY_FILE), history)


def copy_to_float32(build_model: Callable, trained):
    """Rebuild the model under the float32 policy with the trained weights.

    The saved model then computes in float32 whatever device trained it, so scoring on a
    CPU never runs float16 kernels. (Variables are float32 under mixed precision too.)
    """
    exported = build_model()
    exported.set_weights(trained.get_weights())
    return exported
