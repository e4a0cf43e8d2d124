"""Similar items per catalog item: what a product page shows, and a new item's neighbours.

Two views of "similar", merged:

- the item encoder (`item_encoder`): cosine of the item embeddings. It embeds every item
  from its attributes, so an item nobody has interacted with yet still gets neighbours;
- the co-occurrence model (`item_knn`): the Item-KNN baseline's neighbours (items seen in
  the same sessions), which know what people actually do but nothing of new items.

Each gives a candidate list of its N best catalog items (the item itself and items that
left the catalog are never candidates, nor listed). The two lists are merged by reciprocal
rank: score(j) = sum over the lists holding j of 1 / (RRF_K + rank of j there), so an item
both lists hold beats one that only one list ranks as high. Ties go to the item in both
lists, then to the co-occurrence list (observed behaviour before attributes), then to the
smaller item index, so the result is deterministic. The merged top N is written as
similar_items/dt=<ds> (item_id, rank, similar_item_id, score, source), source being
"both", "item_encoder" or "item_knn".
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from jobs.common import schema
from jobs.common.features import catalog_mask
from jobs.common.lake import partition_path, replace_partition
from jobs.serving.night_models import night_model_dirs
from jobs.train.baselines import ItemKNNScorer
from jobs.train.encoder_scorers import load_item_encoder_scorer

RRF_K = 60  # the usual reciprocal-rank constant (Cormack et al., 2009), also fusion.rrf_k's default
ENCODER, KNN, BOTH = "item_encoder", "item_knn", "both"
# Tie order of the sources (lower first): see the module docstring.
SOURCE_ORDER = {BOTH: 0, KNN: 1, ENCODER: 2}
SIMILAR_COLUMNS = (schema.ITEM_ID, "rank", "similar_item_id", "score", "source")
ENCODER_BLOCK_ROWS = 512  # items scored against the catalog at once: 512 x catalog floats


def allowed_items(items_df: pd.DataFrame, n_items: int) -> np.ndarray:
    """bool [n_items + 1]: tonight's catalog items (index 0, padding, never)."""
    mask = catalog_mask(items_df, n_items)
    if mask is None:
        mask = np.zeros(n_items + 1, dtype=bool)
        mask[items_df[schema.ITEM_IDX].to_numpy(dtype=np.int64)] = True
    mask[0] = False
    return mask


def encoder_neighbours(unit_vectors: np.ndarray, allowed: np.ndarray, n: int) -> dict[int, list[int]]:
    """{catalog item: its n most cosine-similar other catalog items, best first}."""
    catalog = np.flatnonzero(allowed)
    candidates = unit_vectors[catalog]
    neighbours = {}
    for start in range(0, len(catalog), ENCODER_BLOCK_ROWS):
        block = catalog[start:start + ENCODER_BLOCK_ROWS]
        scores = unit_vectors[block] @ candidates.T
        scores[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf  # never the item itself
        for item, row in zip(block, scores):
            neighbours[int(item)] = _top(catalog, row, n)
    return neighbours


def knn_neighbours(similarity, allowed: np.ndarray, n: int) -> dict[int, list[int]]:
    """{catalog item: its n best Item-KNN neighbours in the catalog, best first} (may be fewer)."""
    similarity = similarity.tocsr()
    neighbours = {}
    for item in np.flatnonzero(allowed):
        row = similarity.getrow(item)
        keep = allowed[row.indices] & (row.indices != item) & (row.data > 0)
        neighbours[int(item)] = _top(row.indices[keep], row.data[keep], n)
    return neighbours


def _top(candidates: np.ndarray, scores: np.ndarray, n: int) -> list[int]:
    """The n candidates with the highest scores, best first; ties by the smaller index.

    Only the candidates scoring at least the n-th best are ordered (all of them, so ties at
    the cut still go to the smaller index): a full order of each of 100,000 rows took most
    of batch_recommend at that catalog size.
    """
    candidates, scores = np.asarray(candidates), np.asarray(scores, dtype=np.float64)
    if n < len(scores) and not np.isnan(scores).any():
        nth_best = np.partition(scores, len(scores) - n)[len(scores) - n]
        at_least = np.flatnonzero(scores >= nth_best)
        candidates, scores = candidates[at_least], scores[at_least]
    order = np.lexsort((candidates, -scores))[:n]
    return [int(candidate) for candidate in candidates[order]]


def merge_by_reciprocal_rank(encoder_list: list[int], knn_list: list[int], n: int) -> list[tuple[int, float, str]]:
    """[(item, score, source)] of the two lists merged by reciprocal rank (module docstring)."""
    scores: dict[int, float] = {}
    sources: dict[int, str] = {}
    for source, ranked in ((ENCODER, encoder_list), (KNN, knn_list)):
        for rank, item in enumerate(ranked, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (RRF_K + rank)
            sources[item] = BOTH if item in sources else source
    order = sorted(scores, key=lambda item: (-scores[item], SOURCE_ORDER[sources[item]], item))
    return [(item, scores[item], sources[item]) for item in order[:n]]


def similar_items_table(unit_vectors: np.ndarray, knn_similarity, items_df: pd.DataFrame, n: int) -> pd.DataFrame:
    """similar_items rows for every catalog item, ids as in items_df (raw item ids)."""
    n_items = len(unit_vectors) - 1
    allowed = allowed_items(items_df, n_items)
    by_encoder = encoder_neighbours(unit_vectors, allowed, n)
    by_knn = knn_neighbours(knn_similarity, allowed, n)
    id_of = dict(zip(items_df[schema.ITEM_IDX].astype(int), items_df[schema.ITEM_ID]))
    rows = [(id_of[item], rank, id_of[similar], score, source)
            for item in by_encoder
            for rank, (similar, score, source) in enumerate(
                merge_by_reciprocal_rank(by_encoder[item], by_knn[item], n), start=1)]
    table = pd.DataFrame(rows, columns=list(SIMILAR_COLUMNS))
    return table.astype({"rank": np.int32, "score": np.float64})


def write_similar_items(config: dict, ds: str, items_df: pd.DataFrame) -> dict:
    """Compute night ds's similar items from its item encoder and Item-KNN; write the partition."""
    model_dirs = night_model_dirs(config, ds)
    unit_vectors = load_item_encoder_scorer(model_dirs["item_encoder"]).item_vectors  # unit rows
    knn = ItemKNNScorer.load(model_dirs["baselines"])
    if knn.n_items != len(unit_vectors) - 1:
        raise ValueError(f"night {ds}: item_knn knows {knn.n_items} items, the item encoder "
                         f"{len(unit_vectors) - 1}; were they trained on different nights?")
    table = similar_items_table(unit_vectors, knn.similarity, items_df, config["serving_store"]["similar_items_n"])
    output = partition_path(config, schema.SIMILAR_ITEMS, ds)
    with replace_partition(output) as staging:
        table.to_parquet(os.path.join(staging, "part-00000.parquet"), index=False)
    return {"similar_items_path": output, "similar_items_rows": int(len(table)),
            "similar_items_items": int(table[schema.ITEM_ID].nunique())}
