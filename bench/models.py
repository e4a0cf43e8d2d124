"""Benchmark the baselines (and the GRU and SASRec user encoders) under the published session protocol.

    python bench/models.py --data $RECSYS_SHARED_DATA/diginetica-srgnn [--models pop,spop,item_knn]

The folder holds `train_sessions.txt` (one session per line, item ids 1..n space-separated,
`#` lines are comments) and `test_examples.tsv` (header `prefix<TAB>label`: a test session's
prefix and the item that followed). This is the SR-GNN protocol (Wu et al., AAAI 2019):
every model trains on the training sessions (each prefix predicts its next item), ranks
ALL catalog items for every test prefix, and is judged by P@20 (= recall@20, one target)
and MRR@20 (0 below rank 20), in %. Ranking and metrics are jobs/evaluation/metrics.py's: full
catalog, ties ranked conservatively (the target below every item with the same score).

Each model runs in a fresh Python process that loads the data, fits, and evaluates, so
`peak_mb` is that process's peak resident set size (resource.getrusage ru_maxrss): it
includes the interpreter, the libraries and the data, and no model pays for another.
`train_s` is the wall-clock time of fitting only (for gru, including its per-epoch
validation recall; likewise sasrec). Results go to bench/results/<folder name>.json as
{model: {"P@20": %, "MRR@20": %, "P@20_ci": [low, high], "MRR@20_ci": [low, high],
"train_s": s, "score_ms_per_1000": ms, "peak_mb": MB, "repeat_share": %, "P@20 repeat": %,
"MRR@20 repeat": %, "P@20 new": %, "MRR@20 new": %, "n_test_examples": n,
"n_test_sessions": n, "settings": {...}, "settings_sha": hex, "commit": hex}}:
- the `_ci` intervals are 95% percentile-bootstrap intervals over test sessions: the
  examples of one session (its prefixes, which share items and a shopper) are resampled
  together, so correlated examples do not pass for independent evidence;
- `score_ms_per_1000` is the wall-clock time of ranking 1,000 test prefixes against the
  full catalog (for a fusion, its members' scoring included);
- the `repeat` / `new` metrics are over the test examples whose target is already in its
  prefix (a re-view, a comparison, a re-purchase) and over the others, with the share of
  repeats;
- `settings` are the row's resolved settings (`settings_sha` their hash) and `commit` the
  checkout it ran from (`+dirty` when it had uncommitted changes).
The test examples' ranks are kept beside the saved encoders (<cache>/<folder>/ranks/<model>.npy)
for paired comparisons of rows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # `python bench/models.py` puts only bench/ on the path

from jobs.evaluation.metrics import (bootstrap_intervals, metric_contributions, ranking_metrics,  # noqa: E402
                                    scorer_ranks)
from jobs.common.config import default_of  # noqa: E402
from jobs.common.features import Examples  # noqa: E402
from jobs.common.schema import EVENT_TYPE_INDEX, VIEW  # noqa: E402

TRAIN_FILE = "train_sessions.txt"
TEST_FILE = "test_examples.tsv"
TEST_HEADER = ["prefix", "label"]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
ENCODERS = ("gru", "sasrec", "narm")
FUSIONS = ("fusion_rrf", "fusion_stacking", "fusion_gbm")
MODELS = ("pop", "spop", "item_knn", "als", *ENCODERS, *FUSIONS)
# A fusion without one of its members, e.g. fusion_gbm_without_gru: what that member adds.
ABLATION = "_without_"
ADDITION = "_with_"
# The fusions' members: the quick baselines and the two encoders (ALS, a Spark job, adds
# minutes and the weakest scores).
FUSION_MEMBERS = ("pop", "spop", "item_knn", "gru", "sasrec")
# Members a fusion takes only when asked, e.g. fusion_gbm_with_narm: what that member adds.
OPTIONAL_MEMBERS = ("narm",)
CACHE_DIR = REPO_ROOT / ".fusionrec" / "bench-models"  # the encoders' saved models, read by the fusions
DEFAULT_MODELS = ("pop", "spop", "item_knn")
# The encoders' width and logit scale on this benchmark (the nightly defaults suit the small demo catalog).
ENCODER_DIM = 64
ENCODER_LOGIT_SCALE = 16.0
# Halving the learning rate every epoch: both encoders gain their last points of recall at a small rate.
ENCODER_LR_DECAY = 0.5
K = 20
PRECISION, MRR = f"P@{K}", f"MRR@{K}"
# The rows' intervals: 95%, 1,000 resamples of test sessions (a few seconds on DIGINETICA's 15k sessions).
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 1000
# Scoring 1024 prefixes at a time keeps a [1024, n_items + 1] float32 block near 180 MB on DIGINETICA.
EVAL_BATCH = 1024
# Sessions only know clicks: every history event is a view.
VIEW_TYPE = EVENT_TYPE_INDEX[VIEW]
# The user encoders (gru, sasrec) early-stop on the prefixes of the chronologically last share of
# training sessions (--valid-share), and the fusions are fitted on them. Small, because the
# sessions just before the test period teach the most: on DIGINETICA, SASRec trained on the
# first 98% instead of 90% gained 2.15 P@20 (bench/README.md).
VALID_SHARE = 0.02

# P@20 / MRR@20 (%) as published for diginetica-srgnn: SR-GNN (Wu et al., AAAI 2019), Table 2,
# copied from $RECSYS_SHARED_DATA/README.md. ALS has no published row (BPR-MF: 5.24 / 1.98).
PUBLISHED = {
    "diginetica-srgnn": {"pop": (0.89, 0.20), "spop": (21.06, 13.68), "item_knn": (35.75, 11.57),
                         "gru": (29.45, 8.33)},
}


@dataclass(frozen=True)
class SessionData:
    train_sessions: list  # of int64 arrays, item ids in click order
    test: Examples  # full-length prefixes, left-padded
    n_items: int
    test_sessions: np.ndarray  # int64 [n test examples]: the test session each example was cut from


def read_train_sessions(path: Path) -> list[np.ndarray]:
    """One int64 array per non-comment line; errors name the file and line."""
    sessions = []
    with open(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.startswith("#") or not line.strip():
                continue
            sessions.append(_item_ids(line.split(), path, line_number))
    if not sessions:
        raise ValueError(f"{path}: no training session (every line is empty or a # comment)")
    return sessions


def read_test_examples(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """(prefixes, labels) from `prefix<TAB>label` lines after the header."""
    prefixes, labels = [], []
    with open(path) as handle:
        header = handle.readline().rstrip("\n").split("\t")
        if header != TEST_HEADER:
            raise ValueError(f"{path}: first line must be the header {'<TAB>'.join(TEST_HEADER)!r}, got {header}")
        for line_number, line in enumerate(handle, start=2):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 2 or not fields[0].strip():
                raise ValueError(f"{path}:{line_number}: expected a non-empty prefix, a TAB and a label, got {line!r}")
            prefixes.append(_item_ids(fields[0].split(), path, line_number))
            labels.append(_item_ids([fields[1]], path, line_number)[0])
    if not labels:
        raise ValueError(f"{path}: no test example after the header")
    return prefixes, np.array(labels, dtype=np.int64)


def _item_ids(tokens: list[str], path: Path, line_number: int) -> np.ndarray:
    try:
        ids = np.array([int(token) for token in tokens], dtype=np.int64)
    except ValueError:
        raise ValueError(f"{path}:{line_number}: item ids must be integers, got {' '.join(tokens)!r}") from None
    if (ids < 1).any():
        raise ValueError(f"{path}:{line_number}: item ids start at 1 (0 is padding), got {ids.min()}")
    return ids


def left_padded(sequences: list[np.ndarray], length: int) -> np.ndarray:
    """int32 [n, length]: each sequence's last `length` items, right-aligned, 0 in front."""
    matrix = np.zeros((len(sequences), length), dtype=np.int32)
    for row, sequence in enumerate(sequences):
        kept = sequence[-length:]
        matrix[row, length - len(kept):] = kept
    return matrix


def load_data(folder: Path) -> SessionData:
    for name in (TRAIN_FILE, TEST_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} does not exist: --data must hold {TRAIN_FILE} and {TEST_FILE}")
    sessions = read_train_sessions(folder / TRAIN_FILE)
    prefixes, labels = read_test_examples(folder / TEST_FILE)
    n_items = int(max(max(session.max() for session in sessions), max(p.max() for p in prefixes), labels.max()))
    # Histories keep every prefix event: S-POP counts the whole session, not a window of it.
    items = left_padded(prefixes, max(len(prefix) for prefix in prefixes))
    test = Examples(items=items, types=np.where(items != 0, VIEW_TYPE, 0).astype(np.int32),
                    targets=labels.astype(np.int32), user_ids=np.arange(len(labels)))
    return SessionData(sessions, test, n_items, test_session_numbers(prefixes, labels))


def test_session_numbers(prefixes: list[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """The session of each test example, numbered 0, 1, ... in file order.

    The protocol's files list every prefix of a test session next to one another, longest
    first (SR-GNN's DIGINETICA) or shortest first (bench/yoochoose_sessions.py), and carry no
    session id. Two neighbouring examples come from one session when one's prefix plus its
    label is the other's prefix: "1 2 3 -> 4", "1 2 -> 3", "1 -> 2" is one session, and
    "1 2 -> 3" after "1 -> 2" too. Two sessions that chain by chance merge, which only makes
    the intervals a little wider.
    """
    same_as_previous = np.zeros(len(labels), dtype=bool)
    for row in range(1, len(labels)):
        before, after = prefixes[row - 1], prefixes[row]
        same_as_previous[row] = (_extends(before, after, labels[row]) or _extends(after, before, labels[row - 1]))
    return np.cumsum(~same_as_previous) - 1


def _extends(longer: np.ndarray, shorter: np.ndarray, label: int) -> bool:
    """longer == shorter + [label]."""
    return (len(longer) == len(shorter) + 1 and longer[-1] == label
            and np.array_equal(longer[:-1], shorter))


# --- The models ---------------------------------------------------------------------------

def fit_model(model: str, data: SessionData, options: argparse.Namespace):
    """A fitted scorer, and the test examples it should be scored on."""
    from jobs.train import baselines

    if model == "pop":
        return baselines.PopularityScorer(baselines.item_counts(data.train_sessions, data.n_items)), data.test
    if model == "spop":
        return baselines.SessionPopularityScorer.fit(data.train_sessions, data.n_items), data.test
    if model == "item_knn":
        return baselines.ItemKNNScorer.fit(data.train_sessions, data.n_items, neighbours=options.knn_neighbours,
                                           regularization=options.knn_regularization,
                                           include_self=options.knn_include_self), data.test
    if model == "als":
        return _fit_als(data, options), data.test
    if model in ENCODERS:
        return _fit_user_encoder(data, options, model)
    if fusion_parts(model):
        return _fit_fusion(model, data, options), data.test
    raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")


def fusion_parts(model: str) -> tuple[str, tuple[str, ...]] | None:
    """(fusion, its members) of a fusion, of an ablation like fusion_gbm_without_gru or of an
    addition like fusion_gbm_with_narm; None otherwise."""
    fusion, _, dropped = model.partition(ABLATION)
    if dropped:
        return (fusion, tuple(member for member in FUSION_MEMBERS if member != dropped)) \
            if fusion in FUSIONS and dropped in FUSION_MEMBERS else None
    fusion, _, added = model.partition(ADDITION)
    if fusion not in FUSIONS or (added and added not in OPTIONAL_MEMBERS):
        return None
    return fusion, FUSION_MEMBERS + ((added,) if added else ())


def known_model(model: str) -> bool:
    return model in MODELS or fusion_parts(model) is not None


def _fit_als(data: SessionData, options: argparse.Namespace):
    from jobs.train.baselines import ALSScorer
    from jobs.common.config import resolve_config
    from jobs.common.spark_session import get_spark

    spark = get_spark(resolve_config({"spark": {"master": options.spark_master}}))
    try:
        return ALSScorer.fit(spark, data.train_sessions, data.n_items, rank=options.als_rank,
                             max_iter=options.als_iterations, seed=options.seed)
    finally:
        spark.stop()


def encoder_settings(model: str, options: argparse.Namespace) -> dict:
    """The configured user_encoder section with this benchmark's choices for `model` (gru, sasrec or narm)."""
    from jobs.common.config import resolve_config

    common = {"architecture": model, "embedding_dim": options.encoder_dim, "hidden_dim": options.encoder_dim,
              "logit_scale": options.encoder_logit_scale, "max_train_minutes": options.encoder_max_minutes,
              "learning_rate_decay": options.encoder_lr_decay,
              **({} if options.encoder_repeat_head is None else {"repeat_head": options.encoder_repeat_head}),
              # The sessions files carry no timestamps: every gap would be "unknown".
              "time_gaps": False}
    if model in ("gru", "narm"):  # NARM is a GRU with an attention over its states: the GRU's epochs
        choices = {**common, "epochs": options.gru_epochs}
    else:
        choices = {**common, "epochs": options.sasrec_epochs, "num_blocks": options.sasrec_blocks,
                   "num_heads": options.sasrec_heads, "dropout": options.sasrec_dropout}
    # Through resolve_config: the choices are checked like any config, and the rest is the full section.
    return resolve_config({"user_encoder": choices})["user_encoder"]


def n_fit_sessions(data: SessionData, valid_share: float) -> int:
    """Training sessions before the validation share (the file lists them in time order)."""
    return int(round(len(data.train_sessions) * (1.0 - valid_share)))


def _fit_user_encoder(data: SessionData, options: argparse.Namespace, model: str):
    """The nightly user encoder (tied embeddings) on the session prefixes; saved for the fusions.

    Its inputs are the last --gru-max-len events (the nightly max_seq_len); it early-stops on
    the prefixes of the last --valid-share of training sessions, which the file lists in
    time order, and trains on the rest. The fitted encoder is saved under the cache folder,
    where the fusions load it.
    """
    from jobs.train.encoder_scorers import user_encoder_scorer
    from jobs.train.models.training import write_model_dir
    from jobs.common.schema import N_EVENT_TYPES
    from jobs.train.train_user_encoder import train_user_encoder, trained_on

    max_len = options.gru_max_len
    n_fit = n_fit_sessions(data, options.valid_share)
    settings = encoder_settings(model, options)
    train = session_training_examples(data.train_sessions[:n_fit], settings, max_len)
    valid = prefix_examples(data.train_sessions[n_fit:], max_len)
    print(f"{model}: {int(np.count_nonzero(train.targets))} training targets in {len(train)} "
          f"{trained_on(train)} / {len(valid)} valid prefixes, settings {settings}", flush=True)
    trained = train_user_encoder(train, valid, data.n_items, N_EVENT_TYPES, settings, seed=options.seed)
    saved = encoder_cache_dir(options, model)
    saved.mkdir(parents=True, exist_ok=True)
    write_model_dir(str(saved), trained.encoder, trained.item_embeddings,
                    {**settings, "max_len": max_len, "seed": options.seed}, trained.history)
    return TruncatingScorer(model, user_encoder_scorer(trained.encoder, trained.item_embeddings), max_len), data.test


def encoder_cache_dir(options: argparse.Namespace, model: str) -> Path:
    return options.cache_dir / options.data.resolve().name / model


class TruncatingScorer:
    """A scorer that reads each history as its last max_len events (an encoder's fixed input width).

    Renamed to the benchmark's model name, so the GRU and SASRec (both "user_encoder" in the
    nightly pipeline) are distinct fusion members.
    """

    def __init__(self, name: str, scorer, max_len: int):
        self.name, self.scorer, self.max_len = name, scorer, max_len

    def score(self, items: np.ndarray, types: np.ndarray, gaps: np.ndarray | None = None) -> np.ndarray:
        gaps = None if gaps is None else fixed_width(gaps, self.max_len)  # cut like items: columns stay parallel
        return self.scorer.score(fixed_width(items, self.max_len), fixed_width(types, self.max_len), gaps)


def fixed_width(matrix: np.ndarray, width: int) -> np.ndarray:
    """A left-padded [n, L] matrix as [n, width]: its last width columns, or 0 columns added in front."""
    if matrix.shape[1] >= width:
        return matrix[:, -width:]
    return np.pad(matrix, ((0, 0), (width - matrix.shape[1], 0)))


# --- The fusions ------------------------------------------------------------------------

def _fit_fusion(model: str, data: SessionData, options: argparse.Namespace):
    """fusion_rrf (decision level), fusion_stacking or fusion_gbm (model level) over FUSION_MEMBERS,
    fitted on valid prefixes.

    As in the nightly pipeline, the fuser learns from predictions its members made on data
    they never trained on: the prefixes of the last --valid-share of training sessions.
    The encoders were trained without those sessions (and early-stopped on them); the
    baselines are refitted on the same earlier sessions for the fusion's fit, then on all
    training sessions for the test, as every benchmark row is. The feature level needs a
    second embedding source (the item-attribute encoder): session ids carry no attributes.
    """
    from jobs.fusion.decision_level import RankFusion
    from jobs.fusion.gradient_boosted import GradientBoostedRanker
    from jobs.fusion.model_level import StackingRanker

    fusion, members = fusion_parts(model)
    n_fit = n_fit_sessions(data, options.valid_share)
    valid_sessions = data.train_sessions[n_fit:]
    valid = prefix_examples(valid_sessions, max(len(session) for session in valid_sessions))
    encoders = {name: _load_cached_encoder(name, options) for name in ENCODERS if name in members}
    fit_members = fusion_members(members, _fusion_baselines(data.train_sessions[:n_fit], data.n_items, options),
                                 encoders)
    test_members = fusion_members(members, _fusion_baselines(data.train_sessions, data.n_items, options), encoders)
    per_model = options.fusion_candidates
    if fusion == "fusion_rrf":
        fuser = RankFusion(fit_members, candidates_per_model=per_model, rrf_k=options.fusion_rrf_k)
        print(f"{model}: {fuser.fit(valid, grid_steps=options.fusion_grid_steps)}", flush=True)
        return RankFusion(test_members, per_model, options.fusion_rrf_k, fuser.weights)
    if fusion == "fusion_gbm":
        # "Recent" is as much of the latest training data as the valid share: the fit members'
        # last sessions before the valid ones, the test members' last sessions before the test.
        fit_sessions = data.train_sessions[:n_fit]
        fuser = GradientBoostedRanker(fit_members, _counts(fit_sessions, data.n_items),
                                      _counts(latest(fit_sessions, options.valid_share), data.n_items), per_model,
                                      seed=options.seed)
        print(f"{model}: {fuser.fit(valid)}", flush=True)
        return GradientBoostedRanker(test_members, _counts(data.train_sessions, data.n_items),
                                     _counts(latest(data.train_sessions, options.valid_share), data.n_items),
                                     per_model, fuser.booster)
    fuser = StackingRanker(fit_members, _counts(data.train_sessions[:n_fit], data.n_items), per_model,
                           seed=options.seed)
    print(f"{model}: {fuser.fit(valid)}", flush=True)
    return StackingRanker(test_members, _counts(data.train_sessions, data.n_items), per_model,
                          fuser.coefficients, fuser.intercept)


def fusion_members(members: tuple[str, ...], baselines: dict, encoders: dict) -> list:
    """The scorers of `members` (bench model names), in their order."""
    return [{**baselines, **encoders}[name] for name in members]


def missing_encoder_message(saved: Path, model: str) -> str:
    return (f"{saved} holds no saved {model}: the fusions reuse the encoders, so run "
            f"--models {model} on this --data first")


def check_fusion_inputs(options: argparse.Namespace) -> None:
    """Before any model runs: each fusion asked for needs both encoders, saved earlier or run before it."""
    for position, model in enumerate(options.model_list):
        if not fusion_parts(model):
            continue
        for encoder in (name for name in ENCODERS if name in fusion_parts(model)[1]):
            saved = encoder_cache_dir(options, encoder)
            if encoder not in options.model_list[:position] and not (saved / "config.json").is_file():
                raise SystemExit(missing_encoder_message(saved, encoder))


def _fusion_baselines(sessions: list, n_items: int, options: argparse.Namespace) -> dict:
    from jobs.train import baselines

    knn = baselines.ItemKNNScorer.fit(sessions, n_items, neighbours=options.knn_neighbours,
                                      regularization=options.knn_regularization,
                                      include_self=options.knn_include_self)
    return {"pop": baselines.PopularityScorer(_counts(sessions, n_items)),
            "spop": baselines.SessionPopularityScorer.fit(sessions, n_items), "item_knn": knn}


def latest(sessions: list, share: float) -> list:
    """The chronologically last share of the sessions (at least one)."""
    return sessions[-max(1, int(round(len(sessions) * share))):]


def _counts(sessions: list, n_items: int) -> np.ndarray:
    from jobs.train.baselines import item_counts

    return item_counts(sessions, n_items)


def _load_cached_encoder(model: str, options: argparse.Namespace) -> TruncatingScorer:
    from jobs.train.encoder_scorers import load_user_encoder_scorer

    saved = encoder_cache_dir(options, model)
    if not (saved / "config.json").is_file():
        raise FileNotFoundError(missing_encoder_message(saved, model))
    max_len = json.loads((saved / "config.json").read_text())["max_len"]
    return TruncatingScorer(model, load_user_encoder_scorer(str(saved)), max_len)


def session_training_examples(sessions: list[np.ndarray], settings: dict, max_len: int):
    """The sessions' prefixes (prefix_examples) as the encoder trains on them: the nightly job's
    training_examples, windows by default, with each session as one user of views."""
    import pandas as pd

    from jobs.common.schema import EVENT_TYPE_IDX, ITEM_IDX, SPLIT, SPLIT_TRAIN, TIMESTAMPS, USER_ID
    from jobs.train.train_user_encoder import training_examples

    sequences = pd.DataFrame({
        USER_ID: np.arange(len(sessions)), ITEM_IDX: list(sessions),
        EVENT_TYPE_IDX: [np.full(len(session), VIEW_TYPE) for session in sessions],
        TIMESTAMPS: [np.zeros(len(session), dtype=np.int64) for session in sessions],  # no gaps: time_gaps is off
        SPLIT: [np.full(len(session), SPLIT_TRAIN) for session in sessions]})
    return training_examples(sequences, settings, max_len)


def prefix_examples(sessions: list[np.ndarray], max_len: int) -> Examples:
    """Every prefix of every session -> its next item (the SR-GNN training examples); the
    examples' user_ids are their sessions' positions, so a session's prefixes stay together
    wherever examples are split by user."""
    histories, targets, session_numbers = [], [], []
    for number, session in enumerate(sessions):
        for end in range(1, len(session)):
            histories.append(session[max(0, end - max_len):end])
            targets.append(session[end])
            session_numbers.append(number)
    items = left_padded(histories, max_len)
    return Examples(items=items, types=np.where(items != 0, VIEW_TYPE, 0).astype(np.int32),
                    targets=np.array(targets, dtype=np.int32), user_ids=np.array(session_numbers, dtype=np.int64))


def run_model(model: str, folder: Path, options: argparse.Namespace) -> dict:
    """Load, fit (timed) and evaluate one model in this process; peak RSS of the process."""
    data = load_data(folder)
    started = time.monotonic()
    scorer, test = fit_model(model, data, options)
    train_s = time.monotonic() - started
    started = time.monotonic()
    ranks = scorer_ranks(scorer, test, batch_size=EVAL_BATCH)
    score_s = time.monotonic() - started
    print(f"{model}: fit {train_s:.1f} s, evaluation {score_s:.1f} s", flush=True)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    save_ranks(ranks, options, model)
    settings = model_settings(model, options)
    return {**percent_metrics(ranks), **percent_intervals(ranks, data.test_sessions, options.seed),
            "train_s": round(train_s, 2), "score_ms_per_1000": round(1e6 * score_s / len(ranks), 1),
            "peak_mb": round(peak_kib / 1024, 1), **by_target_type(ranks, repeat_targets(data.test)),
            "n_test_examples": int(len(ranks)), "n_test_sessions": int(data.test_sessions.max() + 1),
            "settings": settings, "settings_sha": settings_hash(settings), "commit": checkout_commit()}


def percent_intervals(ranks: np.ndarray, sessions: np.ndarray, seed: int) -> dict:
    """{"P@20_ci": [low, high], "MRR@20_ci": [low, high]} in %, resampling whole test sessions."""
    intervals = bootstrap_intervals({PRECISION: metric_contributions(ranks, f"recall@{K}"),
                                     MRR: metric_contributions(ranks, f"mrr@{K}")},
                                    BOOTSTRAP_RESAMPLES, CONFIDENCE, seed, groups=sessions)
    return {f"{name}_ci": [round(100 * low, 3), round(100 * high, 3)] for name, (low, high) in intervals.items()}


def model_settings(model: str, options: argparse.Namespace) -> dict:
    """What decides the row of `model`: its own settings and the protocol's (valid share, seed)."""
    knn = {"neighbours": options.knn_neighbours, "regularization": options.knn_regularization,
           "include_self": options.knn_include_self}
    if model == "item_knn":
        return knn
    if model == "als":
        return {"rank": options.als_rank, "iterations": options.als_iterations, "seed": options.seed}
    if model in ENCODERS:
        return {**encoder_settings(model, options), "max_len": options.gru_max_len,
                "valid_share": options.valid_share, "seed": options.seed}
    if fusion_parts(model):
        fusion, members = fusion_parts(model)
        own = {"fusion_rrf": {"rrf_k": options.fusion_rrf_k, "grid_steps": options.fusion_grid_steps},
               "fusion_stacking": {"max_train_examples": default_of("fusion.stacking_max_train_examples")},
               "fusion_gbm": {"max_train_examples": default_of("fusion.gbm_max_train_examples"),
                              "stopping_share": default_of("fusion.gbm_stopping_share")}}[fusion]
        member_settings = {"pop": {}, "spop": {}, "item_knn": knn,
                           **{name: model_settings(name, options) for name in ENCODERS}}
        return {"members": {name: member_settings[name] for name in members},
                "candidates_per_model": options.fusion_candidates, **own, "valid_share": options.valid_share,
                "seed": options.seed}
    return {}  # pop and spop have none


def settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def checkout_commit() -> str:
    """The commit this checkout is at, "+dirty" if it has uncommitted changes; "unknown" outside git."""
    def git(*arguments: str) -> str:
        return subprocess.run(["git", "-C", str(REPO_ROOT), *arguments], capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def save_ranks(ranks: np.ndarray, options: argparse.Namespace, model: str) -> None:
    folder = options.cache_dir / options.data.resolve().name / "ranks"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{model}.npy", ranks)


def percent_metrics(ranks: np.ndarray, suffix: str = "") -> dict:
    """{"P@20<suffix>": %, "MRR@20<suffix>": %} of target ranks."""
    metrics = ranking_metrics(ranks, ks=(K,))
    return {f"{PRECISION}{suffix}": round(100 * metrics[f"recall@{K}"], 3),
            f"{MRR}{suffix}": round(100 * metrics[f"mrr@{K}"], 3)}


def repeat_targets(test: Examples) -> np.ndarray:
    """True where the example's target is already in its (full, unpadded) prefix."""
    return (test.targets > 0) & (test.items == test.targets[:, None]).any(axis=1)


def by_target_type(ranks: np.ndarray, repeat: np.ndarray) -> dict:
    """The share of repeat targets (%) and the metrics over repeat and over new targets (a
    type without examples has none)."""
    if len(repeat) != len(ranks):
        raise ValueError(f"{len(repeat)} target types for {len(ranks)} ranks: the examples were reordered")
    row = {"repeat_share": round(100 * float(repeat.mean()), 3)}
    for name, mask in (("repeat", repeat), ("new", ~repeat)):
        if mask.any():
            row.update(percent_metrics(ranks[mask], f" {name}"))
    return row


# --- Driver: one process per model --------------------------------------------------------

def run_in_fresh_process(model: str, options: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        output = Path(scratch) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), *_forwarded_options(options),
                   "--worker", model, "--worker-output", str(output)]
        completed = subprocess.run(command)
        if completed.returncode != 0 or not output.is_file():
            raise SystemExit(f"model {model!r} failed (exit status {completed.returncode}); its output is above")
        return json.loads(output.read_text())


def _forwarded_options(options: argparse.Namespace) -> list[str]:
    forwarded = ["--data", str(options.data)]
    if options.knn_include_self:
        forwarded.append("--knn-include-self")
    if options.encoder_repeat_head is not None:
        forwarded.append("--encoder-repeat-head" if options.encoder_repeat_head else "--no-encoder-repeat-head")
    for name in ("knn_neighbours", "knn_regularization", "als_rank", "als_iterations", "spark_master",
                 "gru_epochs", "gru_max_len", "sasrec_epochs", "sasrec_blocks", "sasrec_heads", "sasrec_dropout",
                 "encoder_dim", "encoder_logit_scale", "encoder_lr_decay", "encoder_max_minutes",
                 "fusion_candidates", "fusion_rrf_k",
                 "fusion_grid_steps", "valid_share", "cache_dir", "seed"):
        if getattr(options, name) is not None:  # None is the option's default: nothing to forward
            forwarded += [f"--{name.replace('_', '-')}", str(getattr(options, name))]
    return forwarded


TARGET_TYPE_COLUMNS = (f"{PRECISION} repeat", f"{MRR} repeat", f"{PRECISION} new", f"{MRR} new")


def results_table(results: dict, published: dict) -> str:
    lines = [f"| model | {PRECISION} | 95% interval | {MRR} | 95% interval | published {PRECISION} "
             f"| published {MRR} | train_s | score ms / 1k | peak_mb | {' | '.join(TARGET_TYPE_COLUMNS)} |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, row in results.items():
        cited = published.get(model)
        cited_cells = [f"{value:.2f}" for value in cited] if cited else ["-", "-"]
        # Rows measured before the split, the intervals or the scoring time have no such cells.
        split_cells = [f"{row[column]:.2f}" if column in row else "-" for column in TARGET_TYPE_COLUMNS]
        intervals = {name: "{:.2f}..{:.2f}".format(*row[f"{name}_ci"]) if f"{name}_ci" in row else "-"
                     for name in (PRECISION, MRR)}
        score_ms = f"{row['score_ms_per_1000']:.0f}" if "score_ms_per_1000" in row else "-"
        lines.append(f"| {model} | {row[PRECISION]:.2f} | {intervals[PRECISION]} | {row[MRR]:.2f} "
                     f"| {intervals[MRR]} | {' | '.join(cited_cells)} | {row['train_s']:.1f} | {score_ms} "
                     f"| {row['peak_mb']:.0f} | {' | '.join(split_cells)} |")
    return "\n".join(lines)


def write_results(results: dict, path: Path) -> dict:
    """Merge into the file's earlier results (a model re-run replaces its row); atomic write.

    Merging lets slow models (gru) be run separately from the quick baselines.
    """
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged.update(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".json.tmp")
    staging.write_text(json.dumps(merged, indent=2) + "\n")
    os.replace(staging, path)
    return merged


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = Path(os.environ.get("RECSYS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")) / "diginetica-srgnn"
    parser.add_argument("--data", type=Path, default=default_data,
                        help=f"folder with {TRAIN_FILE} and {TEST_FILE} (default: {default_data})")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"comma-separated, from {', '.join(MODELS)}, or a fusion without one of its members "
                             f"({', '.join(FUSION_MEMBERS)}), e.g. fusion_gbm{ABLATION}gru (default: %(default)s)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where <folder name>.json goes")
    parser.add_argument("--knn-neighbours", type=int, default=100, help="neighbours kept per item")
    parser.add_argument("--knn-regularization", type=float, default=20.0, help="added to the cosine denominator")
    parser.add_argument("--knn-include-self", action="store_true",
                        help="let an item be its own neighbour (not the published protocol)")
    parser.add_argument("--als-rank", type=int, default=64)
    parser.add_argument("--als-iterations", type=int, default=10)
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--gru-epochs", type=int, default=6, help="at most; early stopping on the valid share")
    parser.add_argument("--gru-max-len", type=int, default=20, help="history events the GRU (and SASRec) reads")
    parser.add_argument("--sasrec-epochs", type=int, default=7, help="at most; early stopping on the valid share")
    parser.add_argument("--sasrec-blocks", type=int, default=2, help="self-attention blocks")
    parser.add_argument("--sasrec-heads", type=int, default=1, help="attention heads per block")
    parser.add_argument("--sasrec-dropout", type=float, default=0.2)
    parser.add_argument("--encoder-dim", type=int, default=ENCODER_DIM,
                        help="embedding and hidden width of both encoders")
    parser.add_argument("--encoder-logit-scale", type=float, default=ENCODER_LOGIT_SCALE,
                        help="> 0: scaled-cosine logits (NISER) for both encoders; 0: dot product")
    parser.add_argument("--encoder-lr-decay", type=float, default=ENCODER_LR_DECAY,
                        help="both encoders' learning rate is multiplied by it before each epoch after the first "
                             "(1: constant)")
    parser.add_argument("--encoder-repeat-head", action=argparse.BooleanOptionalAction, default=None,
                        help="a RepeatNet repeat-explore head on both encoders (default: the config's "
                             "user_encoder.repeat_head)")
    parser.add_argument("--encoder-max-minutes", type=float, default=None,
                        help="time budget per encoder: stop after the epoch past which another would overrun it, "
                             "keeping the best epoch (default: none)")
    parser.add_argument("--fusion-candidates", type=int, default=50, help="top items each member contributes")
    parser.add_argument("--fusion-rrf-k", type=float, default=60.0)
    parser.add_argument("--fusion-grid-steps", type=int, default=5, help="RRF weights in multiples of 1/steps")
    parser.add_argument("--valid-share", type=float, default=VALID_SHARE,
                        help="the chronologically last share of training sessions that the encoders early-stop on "
                             "and the fusions are fitted on (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR,
                        help="where the encoders are saved for the fusions (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one model here
    parser.add_argument("--worker-output", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    options.model_list = [name.strip() for name in options.models.split(",") if name.strip()]
    unknown = [name for name in [*options.model_list, options.worker or "pop"] if not known_model(name)]
    if unknown or not options.model_list:
        parser.error(f"--models: unknown or empty {unknown or options.models!r}; choose from {', '.join(MODELS)}")
    if not 0.0 < options.valid_share < 1.0:
        parser.error(f"--valid-share must be between 0 and 1, got {options.valid_share}")
    return options


def main(argv=None) -> dict:
    """Run the chosen models, print the table beside the published one, write the JSON."""
    options = parse_args(argv)
    if options.worker:
        try:
            result = run_model(options.worker, options.data, options)
        except (ValueError, FileNotFoundError) as error:  # bad input: its message, not a stack trace
            raise SystemExit(f"bench {options.worker}: {error}") from None
        options.worker_output.write_text(json.dumps(result))
        return {options.worker: result}
    if not options.data.is_dir():
        raise SystemExit(f"--data {options.data} is not a folder (set RECSYS_SHARED_DATA or pass --data)")
    check_fusion_inputs(options)
    results = {model: run_in_fresh_process(model, options) for model in options.model_list}
    print(results_table(results, PUBLISHED.get(options.data.resolve().name, {})))
    results_path = options.results_dir / f"{options.data.resolve().name}.json"
    write_results(results, results_path)
    print(f"written {results_path}")
    return results


if __name__ == "__main__":
    main()
