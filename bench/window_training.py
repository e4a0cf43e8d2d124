"""Prefix against window training of the GRU user encoder, side by side on one night's features.

    make demo DATE=2026-11-27     # or any night in $FUSIONREC_HOME's lake
    python bench/window_training.py --ds 2026-11-27 [--epochs 6]

The nightly encoder trains on make_examples: one max_len-event history per target, so the GRU
runs max_len steps per target. make_window_examples puts the targets of max_len consecutive
positions into one window of 2 * max_len events, read once, with the loss on every position
of its second half: 2 steps per target, each target still seeing its last max_len events.
Both schemes train the same GRU (the nightly settings: cosine logits, halving rate, full
softmax, event types and time gaps; without the repeat head, which has no per-position form
yet) from the same seed, and are scored after every epoch on the same valid examples with
the serving view (max_len events, last state), as the nightly job scores (val_loss, valid
recall@20 with conservative ties). Prints both side by side with the ratio of epoch seconds
and writes bench/results/window_training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # `python bench/window_training.py` puts only bench/ on the path

RESULTS_FILE = REPO_ROOT / "bench" / "results" / "window_training.json"
# Windows per batch: about as many targets per step (16 x 20) as the nightly 256 prefixes.
WINDOWS_PER_BATCH = 16
SCHEMES = ("prefix", "window")


def build_views(n_items: int, n_event_types: int, max_len: int, settings: dict):
    """(window training model, prefix training model, serving encoder), sharing one GRU's weights."""
    import keras
    from keras import layers, ops

    from jobs.common.schema import N_GAP_BUCKETS
    from jobs.train.models.user_encoder import PAD_LOGIT, unit_rows

    dim, scale = settings["embedding_dim"], settings["logit_scale"]
    item_embedding = layers.Embedding(n_items + 1, dim, mask_zero=True)
    type_embedding = layers.Embedding(n_event_types, dim, mask_zero=True)
    gap_embedding = layers.Embedding(N_GAP_BUCKETS, dim, mask_zero=True)
    gru = layers.GRU(settings["hidden_dim"], return_sequences=True)
    projection = layers.Dense(dim)

    def user_vectors(length: int):
        inputs = [keras.Input((length,), dtype="int32") for _ in range(3)]
        events = layers.Add()([item_embedding(inputs[0]), type_embedding(inputs[1]), gap_embedding(inputs[2])])
        return inputs, projection(gru(events))

    def cosine_logits(vectors):
        table = unit_rows(item_embedding.embeddings)
        logits = scale * ops.matmul(unit_rows(vectors), ops.transpose(table))
        return ops.where(ops.arange(n_items + 1) == 0, PAD_LOGIT, logits)

    window_inputs, window_vectors = user_vectors(2 * max_len)
    # The first max_len positions only give context: no target is scored there.
    window_model = keras.Model(window_inputs, layers.Lambda(cosine_logits)(window_vectors[:, max_len:, :]))
    prefix_inputs, prefix_vectors = user_vectors(max_len)
    prefix_model = keras.Model(prefix_inputs, layers.Lambda(cosine_logits)(prefix_vectors[:, -1, :]))
    encoder = keras.Model(prefix_inputs, prefix_vectors[:, -1, :])
    return window_model, prefix_model, encoder, item_embedding, scale


def masked_cross_entropy(targets, logits):
    """Mean softmax cross-entropy over the positions with a target (target 0: no loss)."""
    from keras import ops

    targets = ops.cast(targets, "int32")
    weights = ops.cast(targets > 0, "float32")
    losses = ops.sparse_categorical_crossentropy(targets, logits, from_logits=True)
    return ops.sum(losses * weights) / ops.maximum(ops.sum(weights), 1.0)


def valid_scores(encoder, item_embedding, scale: float, valid) -> tuple[float, float]:
    """(mean full-softmax loss, recall@20) on the valid examples, ranked as the nightly job ranks
    (jobs.train.encoder_scorers.recall_at_k: full catalog, conservative ties)."""
    from keras import ops

    from jobs.train.encoder_scorers import EmbeddingScorer, recall_at_k
    from jobs.train.models.user_encoder import unit_rows

    def scaled_unit_vectors(items, types, gaps):  # the cosine logits' user side
        vectors = np.asarray(encoder.predict_on_batch([items, types, gaps]), dtype=np.float32)
        return scale * vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    scorer = EmbeddingScorer("gru", ops.convert_to_numpy(unit_rows(item_embedding.embeddings)), scaled_unit_vectors)
    losses, start = [], 0
    for logits in scorer.score_batches(valid.items, valid.types, valid.gaps):
        targets = valid.targets[start:start + len(logits)]
        start += len(logits)
        top = logits.max(axis=1)
        log_normalizer = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
        losses.append(log_normalizer - logits[np.arange(len(targets)), targets])
    recall = recall_at_k(scorer, valid.items, valid.types, valid.targets, 20, gaps=valid.gaps)
    return float(np.concatenate(losses).mean()), recall


def train_scheme(scheme: str, sequences, n_items: int, n_event_types: int, max_len: int, settings: dict,
                 epochs: int, seed: int) -> list[dict]:
    """Per epoch: fit seconds, valid loss and recall@20 of one scheme, from a fresh model."""
    import keras

    from jobs.common.features import make_examples, make_window_examples
    from jobs.common.schema import SPLIT_TRAIN, SPLIT_VALID

    keras.utils.set_random_seed(seed)
    window_model, prefix_model, encoder, item_embedding, scale = build_views(n_items, n_event_types, max_len,
                                                                             settings)
    valid = make_examples(sequences, SPLIT_VALID, max_len)
    if scheme == "window":
        train, model, batch_size = make_window_examples(sequences, SPLIT_TRAIN, max_len), window_model, \
            WINDOWS_PER_BATCH
    else:
        train, model, batch_size = make_examples(sequences, SPLIT_TRAIN, max_len), prefix_model, \
            settings["batch_size"]
    optimizer = keras.optimizers.Adam(settings["learning_rate"])
    model.compile(optimizer=optimizer, loss=masked_cross_entropy, jit_compile=True)
    order_rng, rows = np.random.default_rng(seed), []
    for epoch in range(epochs):
        optimizer.learning_rate.assign(settings["learning_rate"] * settings["learning_rate_decay"] ** epoch)
        order = order_rng.permutation(len(train))
        started = time.monotonic()
        model.fit([train.items[order], train.types[order], train.gaps[order]], train.targets[order],
                  batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
        seconds = time.monotonic() - started
        loss, recall = valid_scores(encoder, item_embedding, scale, valid)
        rows.append({"epoch": epoch + 1, "fit_s": round(seconds, 1), "val_loss": round(loss, 4),
                     "val_recall_at_20": round(recall, 4)})
        print(f"{scheme}: epoch {epoch + 1}: fit {seconds:.1f} s, val_loss {loss:.4f}, "
              f"val recall@20 {recall:.4f}", flush=True)
    return rows


def compare(sequences, n_items: int, n_event_types: int, max_len: int, settings: dict, epochs: int,
            seed: int) -> dict:
    return {scheme: train_scheme(scheme, sequences, n_items, n_event_types, max_len, settings, epochs, seed)
            for scheme in SCHEMES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ds", required=True, help="the night whose features/ to read (YYYY-MM-DD)")
    parser.add_argument("--epochs", type=int, default=6)
    options = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from jobs.common.config import resolve_config
    from jobs.common.features import load_features
    from jobs.common.schema import N_EVENT_TYPES

    config = resolve_config({})
    try:
        features = load_features(config, options.ds)
    except FileNotFoundError as missing:
        print(f"window_training: no features for {options.ds} ({missing}): run `make demo DATE={options.ds}` first")
        return 2
    results = compare(features.sequences, features.n_items, N_EVENT_TYPES, config["max_seq_len"],
                      config["user_encoder"], options.epochs, config["seed"])
    print("| epoch | prefix fit s | window fit s | prefix / window | prefix val_loss | window val_loss "
          "| prefix recall@20 | window recall@20 |\n|---:|---:|---:|---:|---:|---:|---:|---:|")
    for prefix, window in zip(results["prefix"], results["window"]):
        print(f"| {prefix['epoch']} | {prefix['fit_s']} | {window['fit_s']} | {prefix['fit_s'] / window['fit_s']:.2f} "
              f"| {prefix['val_loss']} | {window['val_loss']} | {prefix['val_recall_at_20']} "
              f"| {window['val_recall_at_20']} |")
    RESULTS_FILE.write_text(json.dumps({"ds": options.ds, **results}, indent=2) + "\n")
    print(f"written {RESULTS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
