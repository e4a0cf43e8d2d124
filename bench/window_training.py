"""Prefix against window training of the nightly user encoder, side by side on one night's features.

    make demo DATE=2026-11-27     # or any night in $FUSIONREC_HOME's lake
    python bench/window_training.py --ds 2026-11-27 [--epochs 6] [--set user_encoder.architecture=sasrec]

Prefix training (make_examples) gives each target its own max_len-event history, so the
encoder reads max_len events per target; window training (make_window_examples, the
nightly default) reads each window once and trains the next item of every position in it
(jobs/train/models/window_training.py). Both runs are the nightly job's own training
(train_user_encoder) with the committed settings, repeat head included, from the same seed,
differing only in user_encoder.training_examples, for a fixed number of epochs (no early
stop, so the curves are compared epoch by epoch). After every epoch both are scored on the
same valid prefixes as the nightly job scores them (full-softmax val_loss, valid recall@20
with conservative ties). Prints both side by side with the ratio of epoch seconds and
writes bench/results/window_training[_<architecture>].json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # `python bench/window_training.py` puts only bench/ on the path

RESULTS_DIR = REPO_ROOT / "bench" / "results"
SCHEMES = ("prefixes", "windows")


def train_scheme(scheme: str, sequences, n_items: int, n_event_types: int, max_len: int, settings: dict,
                 epochs: int, seed: int) -> list[dict]:
    """Per epoch: seconds (fit and validation), valid loss and recall@20 of one scheme, from a fresh model."""
    from jobs.common.features import make_examples
    from jobs.common.schema import SPLIT_VALID
    from jobs.train.train_user_encoder import train_user_encoder, training_examples

    settings = {**settings, "training_examples": scheme, "epochs": epochs, "patience": epochs,
                "min_relative_improvement": 0.0, "max_train_minutes": None}
    train = training_examples(sequences, settings, max_len)
    valid = make_examples(sequences, SPLIT_VALID, max_len)
    rows, last = [], [time.monotonic()]

    def record(epoch: int, logs: dict) -> None:
        now = time.monotonic()
        rows.append({"epoch": epoch + 1, "epoch_s": round(now - last[0], 1), "val_loss": round(logs["val_loss"], 4),
                     "val_recall_at_20": round(logs["val_recall_at_20"], 4)})
        last[0] = now

    train_user_encoder(train, valid, n_items, n_event_types, settings, seed=seed, on_epoch_end=record)
    return rows


def compare(sequences, n_items: int, n_event_types: int, max_len: int, settings: dict, epochs: int,
            seed: int) -> dict:
    return {scheme: train_scheme(scheme, sequences, n_items, n_event_types, max_len, settings, epochs, seed)
            for scheme in SCHEMES}


def table(results: dict) -> str:
    lines = ["| epoch | prefixes s | windows s | prefixes / windows | prefixes val_loss | windows val_loss "
             "| prefixes recall@20 | windows recall@20 |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for prefix, window in zip(results["prefixes"], results["windows"]):
        lines.append(f"| {prefix['epoch']} | {prefix['epoch_s']} | {window['epoch_s']} "
                     f"| {prefix['epoch_s'] / window['epoch_s']:.2f} | {prefix['val_loss']} | {window['val_loss']} "
                     f"| {prefix['val_recall_at_20']} | {window['val_recall_at_20']} |")
    total = {scheme: sum(row["epoch_s"] for row in rows) for scheme, rows in results.items()}
    lines.append(f"| all | {total['prefixes']:.1f} | {total['windows']:.1f} "
                 f"| {total['prefixes'] / total['windows']:.2f} | | | | |")
    return "\n".join(lines)


def json_or_text(value: str):
    """A --set value: a JSON number, boolean or null as such, anything else as text (e.g. sasrec)."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ds", required=True, help="the night whose features/ to read (YYYY-MM-DD)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--set", action="append", default=[], metavar="user_encoder.KEY=VALUE",
                        help="a user_encoder setting other than the committed default (repeatable)")
    options = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from jobs.common.config import resolve_config
    from jobs.common.features import load_features
    from jobs.common.schema import N_EVENT_TYPES

    overrides = {}
    for assignment in options.set:
        key, _, value = assignment.partition("=")
        if not key.startswith("user_encoder.") or not value:
            parser.error(f"--set takes user_encoder.KEY=VALUE, got {assignment!r}")
        overrides[key.removeprefix("user_encoder.")] = json_or_text(value)
    config = resolve_config({"user_encoder": overrides})
    try:
        features = load_features(config, options.ds)
    except FileNotFoundError as missing:
        print(f"window_training: no features for {options.ds} ({missing}): run `make demo DATE={options.ds}` first")
        return 2
    settings = config["user_encoder"]
    results = compare(features.sequences, features.n_items, N_EVENT_TYPES, config["max_seq_len"], settings,
                      options.epochs, config["seed"])
    print(table(results))
    suffix = "" if settings["architecture"] == "gru" else f"_{settings['architecture']}"
    path = RESULTS_DIR / f"window_training{suffix}.json"
    path.write_text(json.dumps({"ds": options.ds, "settings": settings, **results}, indent=2) + "\n")
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
