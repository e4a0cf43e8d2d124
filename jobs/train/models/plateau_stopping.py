"""Early stopping that asks each epoch for a minimum relative gain (the encoders' stopping rule)."""

from __future__ import annotations

import keras
import numpy as np


class PlateauStopping(keras.callbacks.Callback):
    """Stops once `patience` epochs in a row have not lowered the monitored loss below the last
    loss that counted as progress by at least min_relative_improvement of it; at the end of
    training (however it ended) restores the weights of the epoch with the lowest loss.

    Why a relative floor: under a decaying learning rate the last epochs still lower the valid
    loss, by ever smaller amounts (the demo night's user encoder: 0.30%, 0.07%, 0.03% in its
    epochs 4-6), so "any decrease" runs to the epoch limit for gains no metric tells from
    noise. Relative, so that one setting holds whatever the catalog's size (a full-softmax
    loss grows with log n_items). With 0 it is keras.callbacks.EarlyStopping(patience,
    restore_best_weights=True). The weights restored are the lowest loss's, also when that
    epoch's decrease was below the floor.
    """

    def __init__(self, monitor: str, patience: int, min_relative_improvement: float = 0.0):
        super().__init__()
        if patience < 0 or not 0.0 <= min_relative_improvement < 1.0:
            raise ValueError(f"patience must be >= 0 and min_relative_improvement in [0, 1), got {patience} "
                             f"and {min_relative_improvement}")
        self.monitor = monitor
        self.patience, self.min_relative_improvement = int(patience), float(min_relative_improvement)

    def on_train_begin(self, logs=None):
        self.progress_loss = self.lowest_loss = np.inf
        self.best_weights, self.epochs_without_progress = None, 0

    def on_epoch_end(self, epoch, logs=None):
        loss = float(logs[self.monitor])
        if loss < self.lowest_loss:
            self.lowest_loss, self.best_weights = loss, self.model.get_weights()
        if np.isinf(self.progress_loss) or loss < self.progress_loss * (1.0 - self.min_relative_improvement):
            self.progress_loss, self.epochs_without_progress = loss, 0
            return
        self.epochs_without_progress += 1
        if self.epochs_without_progress >= max(self.patience, 1):  # 0 acts as 1, as in Keras' EarlyStopping
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
