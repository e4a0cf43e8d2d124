"""Nightly job: train the user encoder (GRU or SASRec) on features/*/dt=<ds> -> models/user_encoder/dt=<ds>.

extract: load_features; transform: train_user_encoder (examples in, fitted encoder out);
load: the model directory, written atomically, and one MLflow run with params, per-epoch
losses and valid recall@20, final metrics and the directory as artifacts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jobs.train.encoder_scorers import encoder_inputs, recall_at_k, user_encoder_scorer
from jobs.common.features import (
    Examples, WindowExamples, load_features, make_examples, make_window_examples, vocabulary_size,
)
from jobs.common.lake import partition_path, replace_partition
from jobs.train.models.training import (
    VALID_RECALL_K, EpochLogger, copy_to_float32, final_metrics, fit_with_early_stopping, log_epoch_to_mlflow,
    make_dataset, training_precision, write_model_dir,
)
from jobs.common.schema import MODEL_USER_ENCODER, N_EVENT_TYPES, SPLIT_TRAIN, SPLIT_VALID
from jobs.common.tracking import stage_run
from jobs.common.night import Night

STAGE = "train_user_encoder"
SECTION = "user_encoder"
ARCHITECTURE_GRU = "gru"
ARCHITECTURE_SASREC = "sasrec"
ARCHITECTURE_NARM = "narm"
ARCHITECTURES = (ARCHITECTURE_GRU, ARCHITECTURE_SASREC, ARCHITECTURE_NARM)
LOSS_FULL_SOFTMAX = "full_softmax"
LOSS_SAMPLED_SOFTMAX = "sampled_softmax"
LOSSES = (LOSS_FULL_SOFTMAX, LOSS_SAMPLED_SOFTMAX)
EXAMPLES_AUTO = "auto"
EXAMPLES_WINDOWS = "windows"
EXAMPLES_PREFIXES = "prefixes"
EXAMPLE_KINDS = (EXAMPLES_AUTO, EXAMPLES_WINDOWS, EXAMPLES_PREFIXES)
# "auto" trains on windows from this share of filled positions on (see training_examples).
MIN_WINDOW_FILL = 0.8


@dataclass
class TrainedUserEncoder:
    encoder: object  # keras.Model: (items, types) -> user vector
    item_embeddings: np.ndarray  # float32 [n_items + 1, d], the tied table
    history: dict


def run(night: Night) -> dict:
    """Train on the features of `ds`; returns {"path": the model directory}."""
    import mlflow
    config, ds = night.config, night.ds

    features = load_features(config, ds)
    max_len = config["max_seq_len"]
    settings = config[SECTION]
    train = training_examples(features.sequences, settings, max_len)
    valid = make_examples(features.sequences, SPLIT_VALID, max_len)
    _require_examples(train, "train", ds)
    _require_examples(valid, "valid", ds)
    sizes = {
        "n_items": features.n_items,
        # Type ids 1..5 plus padding, or more if the features ever declare more.
        "n_event_types": max(N_EVENT_TYPES, vocabulary_size(features.meta, "n_event_types", train.types)),
        "max_len": max_len,
    }
    model_dir = partition_path(config, MODEL_USER_ENCODER, ds)
    with stage_run(config, STAGE, ds):
        mlflow.log_params({**settings, **sizes, "n_train_examples": int(np.count_nonzero(train.targets)),
                           "n_valid_examples": len(valid),
                           "trained_on": trained_on(train)})
        trained = train_user_encoder(train, valid, sizes["n_items"], sizes["n_event_types"], settings,
                                     seed=config["seed"], on_epoch_end=log_epoch_to_mlflow)
        model_config = {**settings, **sizes, "seed": config["seed"], "ds": ds, "trained_on": trained_on(train)}
        with replace_partition(model_dir) as staging:
            write_model_dir(staging, trained.encoder, trained.item_embeddings, model_config, trained.history)
        mlflow.log_metrics(final_metrics(trained.history))
        mlflow.log_artifacts(model_dir, artifact_path=SECTION)
    return {"path": model_dir}


def training_examples(sequences, settings: dict, max_len: int) -> Examples | WindowExamples:
    """The train split as settings["training_examples"] asks: windows (each architecture's
    context, see window_training.py), one prefix per target, or "auto".

    auto: for the GRU, windows if they are at least MIN_WINDOW_FILL full, else prefixes;
    for SASRec, prefixes (on windows it ended 6 epochs 1.15% higher in valid loss, though
    3.35x faster: bench/README.md, "Window training"). Why the fill: a window
    scores the catalog at every one of its trained positions, target or not, while its
    GRU or attention pass is shared by all of them. Full windows (long user histories, as
    in the nightly lake: 98.5% on the demo night) save most of the encoder's work for the
    same softmax rows; sparse ones (short sessions: a 3-event session fills 2 of 5
    positions) would score several empty positions per target, which costs more than it
    saves once the catalog is large.
    """
    kind = settings["training_examples"]
    if kind == EXAMPLES_PREFIXES:
        return make_examples(sequences, SPLIT_TRAIN, max_len)
    if kind not in (EXAMPLES_WINDOWS, EXAMPLES_AUTO):
        raise ValueError(f"user_encoder.training_examples must be one of {', '.join(EXAMPLE_KINDS)}, got {kind!r}")
    from jobs.train.models.window_training import window_context

    architecture = settings["architecture"]
    recurrent = architecture == ARCHITECTURE_GRU
    if architecture == ARCHITECTURE_NARM:
        # Its local attention reads every earlier state of the served history; a window would
        # need it per position, as the repeat head has (window_training.WindowRepeatWeights).
        if kind == EXAMPLES_WINDOWS:
            raise ValueError("user_encoder.training_examples: windows train gru and sasrec, not narm; "
                             "use prefixes or auto")
        print("training_examples auto: prefixes for narm", flush=True)
        return make_examples(sequences, SPLIT_TRAIN, max_len)
    if kind == EXAMPLES_AUTO and not recurrent:
        print("training_examples auto: prefixes for sasrec", flush=True)
        return make_examples(sequences, SPLIT_TRAIN, max_len)
    span = settings["window_positions"] if recurrent else min(settings["window_positions"], max_len)
    windows = make_window_examples(sequences, SPLIT_TRAIN, max_len, context=window_context(recurrent, max_len, span),
                                   span=span)
    fill = window_fill(windows)
    if kind == EXAMPLES_AUTO and fill < MIN_WINDOW_FILL:
        print(f"training_examples auto: prefixes (windows would be {fill:.0%} full, below {MIN_WINDOW_FILL:.0%})",
              flush=True)
        return make_examples(sequences, SPLIT_TRAIN, max_len)
    print(f"training_examples {kind}: {len(windows)} windows, {fill:.0%} full", flush=True)
    return windows


def trained_on(train: Examples | WindowExamples) -> str:
    """What the encoder was fitted on, for its config and MLflow: "windows" or "prefixes"."""
    return EXAMPLES_WINDOWS if isinstance(train, WindowExamples) else EXAMPLES_PREFIXES


def window_fill(windows: WindowExamples) -> float:
    """Share of the windows' trained positions that hold a target (0 for no window)."""
    return float(np.count_nonzero(windows.targets) / windows.targets.size) if windows.targets.size else 0.0


def _require_examples(examples: Examples | WindowExamples, split_name: str, ds: str) -> None:
    if len(examples) == 0:
        raise ValueError(f"features/sequences/dt={ds} yields no {split_name} examples "
                         f"(no {split_name}-split event after a user's first event): cannot train the user encoder")


def train_user_encoder(train: Examples | WindowExamples, valid: Examples, n_items: int, n_event_types: int,
                       settings: dict, seed: int, on_epoch_end: EpochLogger | None = None) -> TrainedUserEncoder:
    """Fit the configured encoder (GRU or SASRec) with the configured loss; early-stop on the valid examples.

    settings: the whole user_encoder config section (jobs/common/config.py); "loss" is
    full_softmax or sampled_softmax (with "num_sampled_negatives"). train: prefixes
    (make_examples) or windows (training_examples); valid: always prefixes, scored as
    served. on_epoch_end(epoch, logs) sees every epoch's loss, val_loss and
    val_recall_at_20. val_loss is the full-softmax loss of the prefixes whatever the
    training loss and examples (see EncoderTrainer).
    """
    import keras

    from jobs.train.models.user_encoder import item_table

    loss = settings["loss"]
    if loss not in LOSSES:
        raise ValueError(f"user_encoder.loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    num_sampled_negatives = settings["num_sampled_negatives"]
    if num_sampled_negatives < 0:
        raise ValueError(f"user_encoder.num_sampled_negatives must be >= 0 (0: in-batch negatives only), "
                         f"got {num_sampled_negatives}")
    keras.utils.set_random_seed(seed)
    max_len = valid.items.shape[1]

    def build_encoder():
        return build_encoder_from_settings(settings, n_items, n_event_types, max_len)

    with training_precision():
        encoder = build_encoder()
        model, compiled_loss = training_model(encoder, loss, train, n_items, num_sampled_negatives, seed, max_len)
        # XLA fuses the GRU's per-step ops: about 1.5-2x faster per epoch on CPU (measured at
        # the small scale); Keras' "auto" leaves it off for recurrent models.
        model.compile(optimizer=keras.optimizers.Adam(settings["learning_rate"]), loss=compiled_loss,
                      jit_compile=True)

        def valid_recall() -> float:
            scorer = user_encoder_scorer(encoder, item_table(encoder))
            return recall_at_k(scorer, valid.items, valid.types, valid.targets, VALID_RECALL_K, gaps=valid.gaps)

        batch_size = settings["batch_size"]
        history = fit_with_early_stopping(
            model,
            make_dataset(_model_inputs(encoder, train), train_batch_size(train, batch_size), seed=seed,
                         targets=train.targets),
            make_dataset(_model_inputs(encoder, valid), batch_size, targets=valid.targets),
            epochs=settings["epochs"], patience=settings["patience"], valid_recall=valid_recall,
            on_epoch_end=on_epoch_end, max_train_minutes=settings["max_train_minutes"],
            learning_rate_decay=settings["learning_rate_decay"],
            min_relative_improvement=settings["min_relative_improvement"])
    exported = copy_to_float32(build_encoder, encoder)
    return TrainedUserEncoder(exported, item_table(exported), history)


def _model_inputs(encoder, examples: Examples | WindowExamples) -> tuple:
    return tuple(encoder_inputs(encoder, examples.items, examples.types, examples.gaps))


def train_batch_size(train: Examples | WindowExamples, batch_size: int) -> int:
    """Rows per step: batch_size prefixes, or as many windows as hold about batch_size target positions."""
    if isinstance(train, WindowExamples):
        return max(1, -(-batch_size // train.targets.shape[1]))
    return batch_size


def training_model(encoder, loss: str, train: Examples | WindowExamples, n_items: int, num_sampled_negatives: int,
                   seed: int, max_len: int):
    """(model to fit, loss for compile): a trainer for windows; for prefixes full-softmax logits +
    full_softmax_loss, or the sampled trainer.

    The trainers compute their own loss (compile gets None); a sampler draws by the
    popularity of each item as a train target.
    """
    from jobs.train.models.user_encoder import SampledSoftmaxTrainer, build_training_model, full_softmax_loss
    from jobs.train.models.window_training import WindowTrainer, is_recurrent, window_context

    target_counts = np.bincount(train.targets.ravel(), minlength=n_items + 1)  # item 0 (no target) is never drawn
    if isinstance(train, WindowExamples):
        if train.context != window_context(is_recurrent(encoder), max_len, train.targets.shape[1]):
            raise ValueError(f"windows with {train.context} context events do not fit this architecture "
                             "(see training_examples)")
        sampled = None if loss == LOSS_FULL_SOFTMAX else {
            "target_counts": target_counts, "num_sampled_negatives": num_sampled_negatives, "seed": seed}
        return WindowTrainer(encoder, max_len, train.targets.shape[1], sampled), None
    if loss == LOSS_FULL_SOFTMAX:
        return build_training_model(encoder), full_softmax_loss
    return SampledSoftmaxTrainer(encoder, target_counts, num_sampled_negatives, seed), None


def build_encoder_from_settings(settings: dict, n_items: int, n_event_types: int, max_len: int):
    """The encoder named by settings["architecture"], cosine logits when settings["logit_scale"] > 0."""
    from jobs.train.models.user_encoder import with_cosine_logits

    encoder = _build_architecture(settings, n_items, n_event_types, max_len)
    logit_scale = settings["logit_scale"]
    if logit_scale < 0:
        raise ValueError(f"user_encoder.logit_scale must be >= 0 (0: dot-product logits), got {logit_scale}")
    return with_cosine_logits(encoder, logit_scale) if logit_scale > 0 else encoder


def _build_architecture(settings: dict, n_items: int, n_event_types: int, max_len: int):
    from jobs.train.models import sasrec
    from jobs.train.models.narm import build_narm_encoder
    from jobs.train.models.user_encoder import build_user_encoder

    architecture = settings["architecture"]
    embedding_dim, hidden_dim, time_gaps = settings["embedding_dim"], settings["hidden_dim"], settings["time_gaps"]
    repeat_head = settings["repeat_head"]
    if architecture == ARCHITECTURE_GRU:
        return build_user_encoder(n_items, n_event_types, max_len, embedding_dim, hidden_dim, time_gaps=time_gaps,
                                  repeat_head=repeat_head)
    if architecture == ARCHITECTURE_SASREC:
        return sasrec.build_sasrec_encoder(
            n_items, n_event_types, max_len, embedding_dim, hidden_dim,
            num_blocks=settings["num_blocks"], num_heads=settings["num_heads"], dropout=settings["dropout"],
            time_gaps=time_gaps, repeat_head=repeat_head)
    if architecture == ARCHITECTURE_NARM:
        return build_narm_encoder(n_items, n_event_types, max_len, embedding_dim, hidden_dim, time_gaps=time_gaps,
                                  repeat_head=repeat_head)
    raise ValueError(f"user_encoder.architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}")
