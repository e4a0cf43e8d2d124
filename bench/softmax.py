"""Epoch time of the user encoder with full vs sampled softmax, as the catalog grows (CPU or GPU).

    python bench/softmax.py --items 1500 50000 200000

For each catalog size: random histories and targets drawn from a Zipf-like popularity, the
nightly GRU encoder (jobs/train/train_user_encoder.py, 64-d, sequences of 20, batches of 256),
compiled with XLA as the nightly job compiles it; the first epoch (which includes the
compilation) is reported apart from the mean of the next ones. Prints full / sampled
ratios and writes bench/results/softmax.json:
    [{"n_items": N, "full_epoch_s": s, "sampled_epoch_s": s, "ratio": full / sampled, ...}]
Full softmax costs O(batch x catalog) per step; sampled O(batch x (batch + negatives)).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MAX_LEN, BATCH, DIM = 20, 256, 64


def epoch_seconds(loss: str, n_items: int, items, types, targets, negatives: int, epochs: int) -> list[float]:
    import keras

    from jobs.common.config import section_settings
    from jobs.train.encoder_scorers import encoder_inputs
    from jobs.train.models.training import make_dataset
    from jobs.common.schema import N_EVENT_TYPES
    from jobs.train.train_user_encoder import build_encoder_from_settings, training_model

    keras.utils.set_random_seed(0)
    # Dot-product logits: the loss comparison this benchmark was written for.
    settings = section_settings("user_encoder", {"embedding_dim": DIM, "hidden_dim": DIM, "logit_scale": 0.0})
    encoder = build_encoder_from_settings(settings, n_items, N_EVENT_TYPES, MAX_LEN)
    model, compiled_loss = training_model(encoder, loss, targets, n_items, negatives, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(0.003), loss=compiled_loss, jit_compile=True)
    # Gaps of 0 (unknown): the random histories have no times.
    data = make_dataset(tuple(encoder_inputs(encoder, items, types, None)), BATCH, seed=0, targets=targets)
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.fit(data, epochs=1, verbose=0, shuffle=False)
        times.append(time.perf_counter() - started)
    return times


def random_examples(n_items: int, n_examples: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8  # Zipf-like: a skewed distribution to sample
    popularity /= popularity.sum()
    catalog = np.arange(1, n_items + 1)
    items = rng.choice(catalog, size=(n_examples, MAX_LEN), p=popularity).astype(np.int32)
    targets = rng.choice(catalog, size=n_examples, p=popularity).astype(np.int32)
    return items, np.ones_like(items), targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[1500, 50000, 200000])
    parser.add_argument("--examples", type=int, default=10240)
    parser.add_argument("--negatives", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3, help="the first includes XLA compilation")
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "softmax.json"))
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2: the first epoch includes compilation")

    rows = []
    print("| n_items | full s/epoch | sampled s/epoch | full / sampled |\n|---:|---:|---:|---:|")
    for n_items in args.items:
        items, types, targets = random_examples(n_items, args.examples)
        full, sampled = (epoch_seconds(loss, n_items, items, types, targets, args.negatives, args.epochs)
                         for loss in ("full_softmax", "sampled_softmax"))
        row = {"n_items": n_items, "examples": args.examples, "batch": BATCH, "negatives": args.negatives,
               "full_epoch_s": round(float(np.mean(full[1:])), 3),
               "sampled_epoch_s": round(float(np.mean(sampled[1:])), 3),
               "full_first_epoch_s": round(full[0], 3), "sampled_first_epoch_s": round(sampled[0], 3)}
        row["ratio"] = round(row["full_epoch_s"] / row["sampled_epoch_s"], 2)
        rows.append(row)
        print(f"| {n_items:,} | {row['full_epoch_s']:.2f} | {row['sampled_epoch_s']:.2f} | {row['ratio']:.2f} |",
              flush=True)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    Path(args.output).write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
