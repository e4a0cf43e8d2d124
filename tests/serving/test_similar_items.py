"""jobs/serving/similar_items.py: the merged similar-items lists, worked out by hand."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse

from jobs.common import schema
from jobs.serving.similar_items import (BOTH, ENCODER, KNN, RRF_K, merge_by_reciprocal_rank, similar_items_table,
                                        write_similar_items)
from jobs.train.baselines import ItemKNNScorer

# Five items (index 1..5, ids A..E); D (4) left the catalog. Embeddings in 2-D, unit length:
#   A (1,0)  B (0.8,0.6)  C (0,1)  D (1,0)  E (0.6,0.8)
# Cosines from A: B 0.8, E 0.6, C 0 (D 1.0 but out of catalog, A itself never).
# Cosines from C: E 0.8, B 0.6, A 0.
# Item-KNN neighbours (rows of the similarity): A -> D 0.9, C 0.5, A 0.4 (self: never), E 0.1;
# C -> A 0.3; B, E none.
# With N = 2 each source gives its 2 best catalog items:
#   A: encoder [B, E], knn [C, E]. RRF (k=60): B 1/61, E 1/62 + 1/62, C 1/61.
#      E (2/62 = 0.03226) beats B and C (1/61 = 0.01639); B and C tie, C is from the
#      co-occurrence list, so C first  ->  A: [E (both), C (item_knn)]
#   C: encoder [E, B], knn [A]. E 1/61 and A 1/61 tie: A (item_knn) first -> C: [A, E]
#   B: encoder [E, A] (0.96, 0.8), knn []  -> B: [E, A]
#   E: encoder [B, C] (0.96, 0.8), knn []  -> E: [B, C]
# D is never listed, nor given a list.
IDS = ["A", "B", "C", "D", "E"]
VECTORS = np.array([[0, 0], [1, 0], [0.8, 0.6], [0, 1], [1, 0], [0.6, 0.8]], dtype=np.float32)
EXPECTED = {"A": [("E", BOTH), ("C", KNN)], "B": [("E", ENCODER), ("A", ENCODER)],
            "C": [("A", KNN), ("E", ENCODER)], "E": [("B", ENCODER), ("C", ENCODER)]}


def items_frame() -> pd.DataFrame:
    return pd.DataFrame({schema.ITEM_IDX: [1, 2, 3, 4, 5], schema.ITEM_ID: IDS,
                         schema.IN_CATALOG: [True, True, True, False, True]})


def knn_similarity():
    dense = np.zeros((6, 6), dtype=np.float32)
    dense[1, 4], dense[1, 3], dense[1, 1], dense[1, 5] = 0.9, 0.5, 0.4, 0.1
    dense[3, 1] = 0.3
    return scipy.sparse.csr_matrix(dense)


def as_lists(table: pd.DataFrame) -> dict:
    ordered = table.sort_values([schema.ITEM_ID, "rank"])
    return {item: list(zip(group["similar_item_id"], group["source"]))
            for item, group in ordered.groupby(schema.ITEM_ID)}


def test_hand_worked_lists_never_hold_the_item_itself_or_items_out_of_the_catalog():
    table = similar_items_table(VECTORS, knn_similarity(), items_frame(), n=2)
    assert as_lists(table) == EXPECTED
    assert not (table[schema.ITEM_ID] == table["similar_item_id"]).any()
    assert "D" not in set(table["similar_item_id"]) | set(table[schema.ITEM_ID])
    a_scores = table[table[schema.ITEM_ID] == "A"]["score"].tolist()
    assert a_scores == pytest.approx([2 / (RRF_K + 2), 1 / (RRF_K + 1)])
    assert list(table.columns) == [schema.ITEM_ID, "rank", "similar_item_id", "score", "source"]


def test_merge_keeps_n_and_ranks_items_in_both_lists_first():
    merged = merge_by_reciprocal_rank([1, 2, 3], [3, 4], n=3)
    assert [item for item, _, _ in merged] == [3, 1, 4]  # 3: 1/63 + 1/61; then 1/61 (encoder) vs 1/62
    assert merged[0][2] == BOTH


def test_write_similar_items_reads_the_nights_saved_models(tmp_config):
    """The saved item encoder (embeddings + config.json) and Item-KNN (.npz) of a night, via their loaders."""
    import json
    import os

    from jobs.common.lake import partition_path

    ds = "2026-11-27"
    encoder_dir = partition_path(tmp_config, schema.MODEL_ITEM_ENCODER, ds)
    baselines_dir = partition_path(tmp_config, schema.MODEL_BASELINES, ds)
    os.makedirs(encoder_dir)
    os.makedirs(baselines_dir)
    np.save(os.path.join(encoder_dir, "item_embeddings.npy"), VECTORS * 3)  # the loader normalises
    with open(os.path.join(encoder_dir, "config.json"), "w") as handle:
        json.dump({"recency_decay": 0.8}, handle)
    ItemKNNScorer(knn_similarity()).save(baselines_dir)
    config = dict(tmp_config, serving_store=dict(tmp_config["serving_store"], similar_items_n=2))

    result = write_similar_items(config, ds, items_frame())

    assert as_lists(pd.read_parquet(result["similar_items_path"])) == EXPECTED
    assert result["similar_items_items"] == 4


def test_top_orders_only_what_can_make_the_cut_and_keeps_ties_by_the_smaller_index():
    from jobs.serving.similar_items import _top

    rng = np.random.default_rng(11)
    candidates = rng.permutation(np.arange(1, 401))
    scores = rng.integers(0, 15, size=400).astype(np.float64)  # many ties, also at the cut
    scores[:3] = -np.inf
    full_order = np.lexsort((candidates, -scores))
    for n in (1, 5, 20, 399, 400, 500):
        assert _top(candidates, scores, n) == [int(c) for c in candidates[full_order][:n]]
    # By hand: scores 0.5 (item 7), 0.9 (item 3), 0.5 (item 2): the best, then the tie by index.
    assert _top(np.array([7, 3, 2]), np.array([0.5, 0.9, 0.5]), 2) == [3, 2]
