"""The search stages on a night without searches (the full path runs in tests/dags' end-to-end night)."""

import json
import os

import pandas as pd

from jobs.common.features import write_features
from jobs.common.lake import partition_path
from jobs.common.night import Night
from jobs.common.schema import (BRAND_IDX, CATEGORY_IDX, DENOISED_EVENTS, EVENT_TYPE_IDX, ITEM_ID, ITEM_IDX,
                                POPULARITY, PRICE_BUCKET, PRICE_Z, SEARCH_REPORTS, SPLIT, TIMESTAMPS, TITLE_TOKENS,
                                USER_ID)
from jobs.search.train_search_ranker import EVENT_COLUMNS, METRICS_FILE, run

DATES = ["2026-11-25", "2026-11-26", "2026-11-27"]


def test_a_night_without_searches_says_why_and_trains_nothing(tmp_config):
    meta = {"n_items": 2, "train_dates": DATES[:1], "valid_dates": DATES[1:2], "test_dates": DATES[2:]}
    items = pd.DataFrame({ITEM_IDX: [1, 2], ITEM_ID: ["i1", "i2"], CATEGORY_IDX: [1, 1], BRAND_IDX: [1, 1],
                          PRICE_BUCKET: [1, 1], PRICE_Z: [0.0, 0.0], TITLE_TOKENS: [[1], [1]], POPULARITY: [1, 1]})
    sequences = pd.DataFrame({USER_ID: ["u1"], ITEM_IDX: [[1, 2]], EVENT_TYPE_IDX: [[1, 1]], TIMESTAMPS: [[1, 2]],
                              SPLIT: [[1, 2]]})
    write_features(tmp_config, DATES[-1], meta, items, sequences)
    for day in DATES:  # item events only: a source without search events
        folder = partition_path(tmp_config, DENOISED_EVENTS, day)
        os.makedirs(folder)
        pd.DataFrame([("u1", "s1", pd.Timestamp(f"{day}T10:00:00Z"), "view", "i1", None)],
                     columns=list(EVENT_COLUMNS)).to_parquet(os.path.join(folder, "part-0.parquet"))

    result = run(Night.plan(tmp_config, DATES[-1]))

    assert result["skipped"].startswith("0 valid-day and 0 test-day searches with query text")
    with open(os.path.join(partition_path(tmp_config, SEARCH_REPORTS, DATES[-1]), METRICS_FILE)) as handle:
        report = json.load(handle)
    assert report == {"skipped": result["skipped"]}
    # ... and the registering stage after it registers nothing, saying why.
    from jobs.serving import register_search_ranker

    skipped = register_search_ranker.run(Night.plan(tmp_config, DATES[-1]))
    assert skipped == {"skipped": f"train_search_ranker saved no ranker for {DATES[-1]} "
                                  f"(see reports/search/dt={DATES[-1]})"}
