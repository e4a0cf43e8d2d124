"""fuse: fit the three fusion levels on the valid day and save them side by side.

Output: models/fusion/dt=<ds>/
    fusion_feature/   fusion_stacking/   fusion_gbm/   fusion_rrf/
                      (each fuser.json [+ arrays.npz]; fusion_gbm also booster.txt, LightGBM's format)
    valid_metrics.json   {model: {metric: value}} for the base models and the fusers

The valid day's users are split in two (seeded, by user): the fusers are fitted on one
part and every model is measured on the other. The fusers learn from the valid day, so
measuring them on the examples they were fitted on would flatter the most flexible one;
register_and_gate picks the variant to serve from valid_metrics.json, so these numbers
must be out-of-sample.

Loading a night's models back (the base models here, every model in evaluate and serving)
and the names of what this stage writes live in jobs/serving/night_models.py.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from jobs.evaluation.metrics import (DEFAULT_KS, PRIMARY_METRIC, SCORING_BATCH, evaluate_scorers, mlflow_metric_key,
                                    parse_metric)
from jobs.fusion import BASE_MODELS, FEATURE_FUSION_SOURCES, select_scorers, training_set
from jobs.fusion.decision_level import RRF_NAME, VOTE_NAME, RankFusion, equal_weight_vote
from jobs.fusion.feature_level import FeatureFusion
from jobs.fusion.gradient_boosted import GradientBoostedRanker
from jobs.fusion.model_level import StackingRanker
from jobs.common.schema import MODEL_FUSION, SPLIT_TRAIN, SPLIT_VALID
from jobs.common.night import Night
from jobs.train.baselines import recent_item_counts
from jobs.serving.night_models import (FUSER_NAMES, SCORING_MEMO_BYTES, VALID_METRICS_FILE, load_base_scorers,
                                       night_model_dirs, share_candidates, with_catalog_mask)


# The gradient-boosted fuser's "recent popularity": the items' events on the last training day.
RECENT_WINDOW_S = 86_400


def run(night: Night) -> dict:
    """Fit and save the fusers of night ds; returns {"path": models/fusion/dt=<ds>}."""
    from jobs.common.features import load_features, make_examples
    from jobs.common.lake import partition_path, replace_partition
    from jobs.common.tracking import stage_run
    config, ds = night.config, night.ds

    settings = config["fusion"]
    primary = config["mlflow"]["primary_metric"]
    features = load_features(config, ds)
    valid = make_examples(features.sequences, SPLIT_VALID, config["max_seq_len"])
    if len(valid.targets) == 0:
        raise ValueError(f"no valid-day examples in features/sequences/dt={ds}: nothing to fit the fusers on")
    base = load_base_scorers(night_model_dirs(config, ds), features.items, features.n_items, SCORING_MEMO_BYTES)
    fit_part, holdout = split_by_user(valid, settings["holdout_fraction"], config["seed"])
    recent = recent_item_counts(features.sequences, SPLIT_TRAIN, RECENT_WINDOW_S, features.n_items)

    fusion_dir = partition_path(config, MODEL_FUSION, ds)
    with stage_run(config, "fuse", ds):
        fusers, summaries = fit_fusers(base, fit_part, settings, primary, config["seed"], recent)
        ks = _ks_with_primary(DEFAULT_KS, primary)
        vote = equal_weight_vote(select_scorers(base, BASE_MODELS, VOTE_NAME), settings["candidates_per_model"],
                                 settings["rrf_k"])
        share_candidates([*fusers.values(), vote], SCORING_MEMO_BYTES)
        masked_fusers = with_catalog_mask(fusers, features.items, features.n_items)
        # Every model on the same held-out batches in turn: the fusers reuse their members'
        # answers and one another's candidates (night_models.load_all_scorers).
        valid_metrics = evaluate_scorers({**base, **masked_fusers, VOTE_NAME: vote}, holdout, ks)
        vote_metrics = valid_metrics.pop(VOTE_NAME)
        with replace_partition(fusion_dir) as staging:
            for name, fuser in fusers.items():
                fuser.save(os.path.join(staging, name))
            with open(os.path.join(staging, VALID_METRICS_FILE), "w") as handle:
                json.dump(valid_metrics, handle, indent=2, sort_keys=True)
        _log_fuse_run(summaries, valid_metrics, vote_metrics, n_fit=len(fit_part.targets),
                      n_holdout=len(holdout.targets))
    best = max(FUSER_NAMES, key=lambda name: valid_metrics[name][primary])
    print(f"fuse {ds}: fitted {', '.join(FUSER_NAMES)} on {len(fit_part.targets)} valid examples; "
          f"best on {len(holdout.targets)} held-out: {best} {primary}={valid_metrics[best][primary]:.4f} "
          f"→ {fusion_dir}")
    return {"path": fusion_dir}


def fit_fusers(base: dict, examples, settings: dict, metric: str = PRIMARY_METRIC,
               seed: int = 42, recent_popularity=None) -> tuple[dict, dict]:
    """Fit feature-, model- (logistic and gradient-boosted) and decision-level fusion on
    examples; returns (fusers, fit summaries). recent_popularity: the items' counts on the
    last training day (None: the training days' popularity)."""
    base_models = select_scorers(base, BASE_MODELS, "fusion")
    popularity = base["popularity"].popularity
    feature = FeatureFusion(select_scorers(base, FEATURE_FUSION_SOURCES, FeatureFusion.name),
                            dim=settings["feature_fusion_dim"], epochs=settings["feature_fusion_epochs"],
                            batch_size=settings["feature_fusion_batch_size"],
                            learning_rate=settings["feature_fusion_learning_rate"], seed=seed)
    stacking = StackingRanker(base_models, base["popularity"].popularity, settings["candidates_per_model"],
                              max_train_examples=settings["stacking_max_train_examples"], seed=seed)
    gbm = GradientBoostedRanker(base_models, popularity, popularity if recent_popularity is None else recent_popularity,
                                settings["candidates_per_model"], max_train_examples=settings["gbm_max_train_examples"],
                                stopping_share=settings["gbm_stopping_share"], seed=seed)
    rrf = RankFusion(base_models, settings["candidates_per_model"], settings["rrf_k"])
    # Both model-level fusers re-rank the same members' candidates; when they pick the same
    # training rows (same cap, same seed) the members score them once for both.
    shared = None
    if (stacking.max_train_examples, stacking.seed) == (gbm.max_train_examples, gbm.seed):
        _, shared = training_set(gbm, examples, SCORING_BATCH, None)
    summaries = {
        feature.name: feature.fit(examples),
        stacking.name: stacking.fit(examples, candidates=shared),
        gbm.name: gbm.fit(examples, candidates=shared),
        rrf.name: rrf.fit(examples, metric=metric, grid_steps=settings["rrf_grid_steps"]),
    }
    return {feature.name: feature, stacking.name: stacking, gbm.name: gbm, rrf.name: rrf}, summaries


def split_by_user(examples, holdout_fraction: float, seed: int):
    """(fit, holdout) Examples; every user's examples fall wholly in one part (seeded)."""
    in_holdout = holdout_mask(examples.user_ids, holdout_fraction, seed, "fusion", "fit the fusers")
    return _subset(examples, ~in_holdout), _subset(examples, in_holdout)


def holdout_mask(user_ids: np.ndarray, holdout_fraction: float, seed: int, section: str, purpose: str) -> np.ndarray:
    """bool per row: its user is one of the round(holdout_fraction x users) held out (seeded).

    section and purpose name the config section and what the fit part is for, in errors.
    """
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"{section}.holdout_fraction must be strictly between 0 and 1, got {holdout_fraction}")
    users = np.unique(np.asarray(user_ids).astype(str))
    if len(users) < 2:
        raise ValueError(f"the valid day has {len(users)} user(s): at least 2 are needed to {purpose} "
                         f"on some and measure them on others")
    n_holdout = min(len(users) - 1, max(1, round(holdout_fraction * len(users))))
    holdout_users = np.random.default_rng(seed).permutation(users)[:n_holdout]
    return np.isin(np.asarray(user_ids).astype(str), holdout_users)


def _subset(examples, rows: np.ndarray):
    """The examples at rows; every per-example array is cut, gaps included (a full-size gaps
    matrix left beside cut items would pair examples with another example's gaps)."""
    cut = {"items": examples.items[rows], "types": examples.types[rows], "targets": examples.targets[rows],
           "user_ids": examples.user_ids[rows]}
    if getattr(examples, "gaps", None) is not None:
        cut["gaps"] = examples.gaps[rows]
    return dataclasses.replace(examples, **cut)


def _ks_with_primary(ks, primary: str) -> tuple[int, ...]:
    _, primary_k = parse_metric(primary)
    return tuple(sorted({*ks, primary_k}))


def _log_fuse_run(summaries: dict, valid_metrics: dict, vote_metrics: dict, n_fit: int, n_holdout: int) -> None:
    """Learned weights, held-out valid metrics and the fit summaries, in the active MLflow run."""
    import mlflow

    metrics = {"valid.n_fit_examples": n_fit, "valid.n_holdout_examples": n_holdout}
    feature, stacking, gbm, rrf = (summaries[name] for name in (FeatureFusion.name, StackingRanker.name,
                                                                GradientBoostedRanker.name, RRF_NAME))
    metrics.update({f"fusion_feature.weight.{source}": w for source, w in feature["source_weights"].items()})
    metrics.update({f"fusion_rrf.weight.{model}": w for model, w in rrf["weights"].items()})
    metrics.update({f"fusion_stacking.coef.{name}": c for name, c in stacking["coefficients"].items()})
    metrics.update({"fusion_gbm.trees": gbm["trees"], "fusion_gbm.stopping_ndcg_at_20": gbm["stopping_ndcg@20"],
                    **{f"fusion_gbm.gain.{name}": share for name, share in gbm["gain_shares"].items()}})
    # Equal-weight voting is logged for comparison only: it is not saved or served.
    for model, values in {**valid_metrics, VOTE_NAME: vote_metrics}.items():
        metrics.update({mlflow_metric_key(f"valid.{model}", metric): value for metric, value in values.items()})
    mlflow.log_metrics(metrics)
    for epoch, loss in enumerate(feature["loss_by_epoch"]):
        mlflow.log_metric("fusion_feature.train_loss", loss, step=epoch)
    mlflow.log_dict(summaries, "fusion_summary.json")
    mlflow.log_dict(valid_metrics, VALID_METRICS_FILE)
