"""Mini-batches of in-memory arrays for Keras' fit, on any Keras 3 backend.

A keras.utils.PyDataset instead of tf.data, so the encoders train the same way under
TensorFlow (the product's default), JAX or PyTorch. The order is shuffled with its own
seeded generator, anew before every epoch, so a run is reproducible whatever the backend.
"""

from __future__ import annotations

import keras
import numpy as np


class ArrayBatches(keras.utils.PyDataset):
    """Batches of `inputs` (an array or a tuple of arrays), with `targets` when given.

    A batch is what a tf.data pipeline over the same arrays would yield: the inputs' slice
    (an array or a tuple) without targets, (inputs' slice, targets' slice) with them.
    seed None keeps the arrays' order; a seed shuffles it reproducibly, every epoch anew.
    """

    def __init__(self, inputs, batch_size: int, seed: int | None = None, targets: np.ndarray | None = None):
        super().__init__()  # one worker, no multiprocessing: the arrays are already in memory
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.inputs, self.targets, self.batch_size = inputs, targets, int(batch_size)
        arrays = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
        self.size = len(arrays[0])
        if any(len(array) != self.size for array in arrays) or (targets is not None and len(targets) != self.size):
            raise ValueError("inputs and targets must have the same number of rows")
        self._rng = None if seed is None else np.random.default_rng(seed)
        self._order = self._new_order()

    def _new_order(self) -> np.ndarray | None:
        return None if self._rng is None else self._rng.permutation(self.size)

    def __len__(self) -> int:
        return -(-self.size // self.batch_size)  # the last batch may be short

    def __getitem__(self, index: int):
        rows = slice(index * self.batch_size, min((index + 1) * self.batch_size, self.size))
        if self._order is not None:
            rows = self._order[rows]
        inputs = (tuple(array[rows] for array in self.inputs) if isinstance(self.inputs, (tuple, list))
                  else self.inputs[rows])
        return inputs if self.targets is None else (inputs, self.targets[rows])

    def on_epoch_end(self) -> None:
        self._order = self._new_order()
