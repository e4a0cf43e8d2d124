"""A night's trained models loaded back as scorers: what evaluate measures, register_and_gate
logs and gates, and the served model answers with.

The layout of a night's models is described here once: the parts (MODEL_PARTS, each a
directory), the fusers inside the fusion part (FUSER_NAMES) and the metrics file beside them
(VALID_METRICS_FILE). The fuse stage writes that layout; it lives here rather than in
jobs/fusion/fuse.py because the served pyfunc carries as code only what it imports
(jobs/common/packaging.py), and fuse imports the fitting and MLflow logging a served
model never runs. The loaders take directories, not config, because a registered bundle
carries copies of them.
"""

from __future__ import annotations

import os

from jobs.common.features import catalog_mask
from jobs.common.lake import partition_path
from jobs.common.schema import MODEL_BASELINES, MODEL_FUSION, MODEL_ITEM_ENCODER, MODEL_USER_ENCODER
from jobs.evaluation.metrics import CatalogMaskedScorer, MemoizedScorer
from jobs.fusion import CandidateMemo
from jobs.fusion.decision_level import RRF_NAME, RankFusion
from jobs.fusion.feature_level import FeatureFusion
from jobs.fusion.gradient_boosted import GradientBoostedRanker
from jobs.fusion.model_level import StackingRanker
from jobs.train.baselines import PopularityScorer, load_baselines
from jobs.train.encoder_scorers import load_item_encoder_scorer, load_user_encoder_scorer

# The lake dataset of each part of a night's models (a bundle artifact of the same name).
MODEL_DATASETS = {"user_encoder": MODEL_USER_ENCODER, "item_encoder": MODEL_ITEM_ENCODER,
                  "baselines": MODEL_BASELINES, "fusion": MODEL_FUSION}
MODEL_PARTS = tuple(MODEL_DATASETS)
# Inside the fusion part: one directory per fuser, and the out-of-sample validation metrics
# {model: {metric: value}} of every base model and fuser, from which the served variant is picked.
FUSER_NAMES = (FeatureFusion.name, StackingRanker.name, GradientBoostedRanker.name, RRF_NAME)
VALID_METRICS_FILE = "valid_metrics.json"
# The largest answer a member (and the fusers' shared candidate set) remembers in a stage
# that scores every model on the same examples (fuse, evaluate): one batch of
# jobs.evaluation.metrics.SCORING_BATCH examples over ~100,000 items in float32; a larger
# one is scored again rather than held.
SCORING_MEMO_BYTES = 256 * 2**20


def night_model_dirs(config: dict, ds: str) -> dict:
    """{part: directory} of night ds's models, for load_base_scorers / load_all_scorers."""
    return {part: partition_path(config, dataset, ds) for part, dataset in MODEL_DATASETS.items()}


def load_base_scorers(model_dirs: dict, items_df, n_items: int, memo_bytes: int = 0) -> dict:
    """Every base model (fusion.BASE_MODELS), checked to share one catalog, catalog-masked.

    model_dirs maps user_encoder, item_encoder and baselines to their directories.
    memo_bytes > 0: each remembers its latest answer up to that size (memoized()).
    """
    base = {"popularity": PopularityScorer.from_items(items_df, n_items),
            "user_encoder": load_user_encoder_scorer(model_dirs["user_encoder"]),
            "item_encoder": load_item_encoder_scorer(model_dirs["item_encoder"]),
            **load_baselines(model_dirs["baselines"])}
    for name, scorer in base.items():
        known = len(scorer.item_vectors) - 1 if hasattr(scorer, "item_vectors") else scorer.n_items
        if known != n_items:
            directory = model_dirs.get(name, model_dirs["baselines"])
            raise ValueError(f"{directory}: {name} knows {known} items, but the items table has "
                             f"n_items={n_items}; were they trained on another night?")
    return memoized(with_catalog_mask(base, items_df, n_items), memo_bytes)


def load_all_scorers(model_dirs: dict, items_df, n_items: int, memo_bytes: int = 0) -> dict:
    """Every scorer of a night by name: the base models (fusion.BASE_MODELS) and the fusers
    (FUSER_NAMES). model_dirs is night_model_dirs() or a bundle's copies. memo_bytes > 0:
    the base models remember their latest answer and the fusers share candidate sets, so
    scoring a batch with a member and then with the fusers scores the member once."""
    base = load_base_scorers(model_dirs, items_df, n_items, memo_bytes)
    fusion_dir = model_dirs["fusion"]
    fusers = {FeatureFusion.name: FeatureFusion.load(os.path.join(fusion_dir, FeatureFusion.name), base),
              StackingRanker.name: StackingRanker.load(os.path.join(fusion_dir, StackingRanker.name), base),
              GradientBoostedRanker.name: GradientBoostedRanker.load(
                  os.path.join(fusion_dir, GradientBoostedRanker.name), base),
              RRF_NAME: RankFusion.load(os.path.join(fusion_dir, RRF_NAME), base)}
    share_candidates(fusers.values(), memo_bytes)
    return {**base, **with_catalog_mask(fusers, items_df, n_items)}


def memoized(scorers: dict, memo_bytes: int) -> dict:
    """Each scorer remembering its latest answer up to memo_bytes (0: the scorers as they are)."""
    if not memo_bytes:
        return scorers
    return {name: MemoizedScorer(scorer, memo_bytes) for name, scorer in scorers.items()}


def share_candidates(fusers, memo_bytes: int) -> None:
    """One CandidateMemo of memo_bytes for every fuser that re-ranks candidate sets (0: none)."""
    if not memo_bytes:
        return
    memo = CandidateMemo(memo_bytes)
    for fuser in fusers:
        if hasattr(fuser, "candidate_memo"):
            fuser.candidate_memo = memo


def with_catalog_mask(scorers: dict, items_df, n_items: int) -> dict:
    """Wrap every scorer so items that left tonight's catalog are never recommended."""
    allowed = catalog_mask(items_df, n_items)
    if allowed is None:
        return scorers
    return {name: CatalogMaskedScorer(scorer, allowed) for name, scorer in scorers.items()}
