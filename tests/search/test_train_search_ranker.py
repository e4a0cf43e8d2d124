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


def test_the_served_ranker_learns_history_on_all_days_then_the_models_on_the_valid_day_only():
    # Every search: 20 candidates, one relevant. On the earlier days the relevant one is the one
    # seen before (models' features missing there, as in the stage); on the valid day it is
    # the one the encoder scores highest (encoder_z 2 against 0) while seen_before says
    # nothing. The first stage (personal_history) can learn only the former and never splits on
    # the models' features; the second stage adds trees that read encoder_z.
    import numpy as np

    from jobs.search.features import MODEL_FEATURES, NIGHTLY_FEATURES
    from jobs.search.quality import per_search_metrics
    from jobs.search.ranker import RankingRows, ScoredSearch
    from jobs.search.train_search_ranker import fit_rankers

    rng = np.random.default_rng(0)
    seen, encoder = NIGHTLY_FEATURES.index("seen_before"), NIGHTLY_FEATURES.index("encoder_z")

    def searches(n, earlier):
        features = rng.normal(size=(n * 20, len(NIGHTLY_FEATURES)))
        relevant = np.arange(n) * 20 + rng.integers(0, 20, size=n)
        grades = np.zeros(n * 20, dtype=np.int64)
        grades[relevant] = 1
        features[:, seen] = 0.0
        if earlier:
            features[relevant, seen] = 1.0
            features[:, [NIGHTLY_FEATURES.index(name) for name in MODEL_FEATURES]] = np.nan
        else:
            features[:, encoder] = np.where(grades == 1, 2.0, 0.0)
        return RankingRows(features, grades, np.full(n, 20))

    def joined(first, second):
        return RankingRows(np.vstack([first.features, second.features]), np.concatenate([first.grades, second.grades]),
                           np.concatenate([first.groups, second.groups]))

    fit_valid, stop = searches(150, False), searches(150, False)
    rankers = fit_rankers(joined(searches(400, True), fit_valid), joined(searches(200, True), stop), fit_valid, stop,
                          seed=0)

    first, served = rankers["personal_history"], rankers["personalized"]
    assert first.feature_names == served.feature_names == NIGHTLY_FEATURES
    assert not any(first.importances()[name] for name in MODEL_FEATURES)
    assert first.importances()["seen_before"] > 0.5 and served.importances()["encoder_z"] > 0
    assert served.trees > first.trees
    scored = [ScoredSearch(n, slice(20 * n, 20 * n + 20), np.arange(20), {}) for n in range(150)]
    for search in scored:
        search.relevance.update({int(np.flatnonzero(stop.grades[search.rows])[0]): 1})

    def ndcg(ranker):
        return per_search_metrics(ranker.score(stop.features), scored)["NDCG@10"].mean()  # in %

    assert ndcg(served) > 90 > ndcg(first)


def test_the_gain_over_hybrid_is_paired_so_a_steady_gain_is_outside_the_noise():
    # Six users, one search each: hybrid's NDCG@10 spreads from 10 to 60, the variant adds 2 to
    # every search. Apart, their intervals overlap widely; paired, every resample's difference
    # is 2, so the gain is 2 [2, 2]. MRR@10 and Recall@50 are equal: 0 [0, 0].
    import numpy as np

    from jobs.search.quality import summarize
    from jobs.search.train_search_ranker import paired_gain

    hybrid = {"NDCG@10": np.array([10.0, 20, 30, 40, 50, 60]), "MRR@10": np.full(6, 50.0),
              "Recall@50": np.full(6, 100.0)}
    variant = dict(hybrid, **{"NDCG@10": hybrid["NDCG@10"] + 2})
    users = np.array(list("abcdef"))
    settings = {"bootstrap_resamples": 200, "confidence": 0.95}
    apart = [summarize(row, users, np.ones(6, dtype=bool), 200, 0.95, 0)["NDCG@10_ci"] for row in (hybrid, variant)]
    assert apart[1][0] < apart[0][1]  # the separate intervals overlap
    gain = paired_gain(variant, hybrid, users, settings, seed=0)
    assert (gain["NDCG@10"], gain["NDCG@10_ci"]) == (2.0, [2.0, 2.0])
    assert (gain["MRR@10"], gain["MRR@10_ci"], gain["searches"]) == (0.0, [0.0, 0.0], 6)
