"""bench/search_world.py on a tiny generated world: both rankers measured on the last day, and
a generator constant overridden for the run only."""

import pytest
from bench_scripts import load_bench_script


def test_both_rankers_are_measured_on_the_last_day_with_an_interval(capsys):
    module = load_bench_script("search_world")
    results = module.main(["--scale", "tiny", "--days", "5", "--set", "FAVOURITE_BRAND_WEIGHT=2.5"])
    assert set(results) == {"hybrid", "personal"}
    for row in results.values():  # (personal's gain_over_hybrid: below)
        low, high = row["NDCG@10_ci"]
        assert 0 <= low <= row["NDCG@10"] <= high <= 100 and row["searches"] > 0
    gain = results["personal"]["gain_over_hybrid"]
    # the mean of the differences is the difference of the means (each rounded to 0.01)
    assert abs(gain["NDCG@10"] - (results["personal"]["NDCG@10"] - results["hybrid"]["NDCG@10"])) <= 0.011
    out = capsys.readouterr().out
    assert "on the test day 2026-11-27; overrides: FAVOURITE_BRAND_WEIGHT=2.5" in out
    assert module.generate.FAVOURITE_BRAND_WEIGHT == 3.0  # the override lasted the run only


def test_an_unknown_constant_is_refused():
    with pytest.raises(SystemExit):
        load_bench_script("search_world").main(["--set", "NO_SUCH_WEIGHT=1"])
