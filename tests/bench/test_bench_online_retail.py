"""bench/online_retail.py: the data it finds, the config it builds, and the multi-day split of a
few hand-made Online Retail rows landed through the pipeline's adapter (pandas only, no Spark).

The full run (Spark, four TensorFlow trainings) takes minutes even on a tiny file, so it is
not run here; `make bench-retail` runs it on the real data (bench/README.md).
"""

import datetime as dt
import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

from jobs.common.lake import partition_path
from jobs.common.schema import LANDING_CATALOG, LANDING_EVENTS

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_FILE = "retail_session.parquet.snappy"
COLUMNS = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]


def load_bench_online_retail():
    spec = importlib.util.spec_from_file_location("bench_online_retail", REPO_ROOT / "bench" / "online_retail.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = load_bench_online_retail()

# Invoices on 8 dates from 12-01 to 12-09 (none on Saturday 12-03), December: London time is
# UTC, so each invoice lands on its own date. Every date has one two-line invoice of customer
# 12345; 12-09 adds a guest basket (no CustomerID) and a cancellation: 3 lines more.
DATES = ["2011-12-01", "2011-12-02", "2011-12-04", "2011-12-05", "2011-12-06", "2011-12-07", "2011-12-08",
         "2011-12-09"]


def retail_rows() -> pd.DataFrame:
    rows = []
    for number, day in enumerate(DATES):
        time = dt.datetime.fromisoformat(f"{day}T10:{number:02d}:00")
        rows += [(f"5800{number:02d}", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", 6, time, 2.55, 12345.0, "UK"),
                 (f"5800{number:02d}", "71053", "WHITE METAL LANTERN", 2, time, 3.39, 12345.0, "UK")]
    last = dt.datetime.fromisoformat("2011-12-09T12:50:00")
    rows += [("581587", "22423", "REGENCY CAKESTAND 3 TIER", 1, last, 12.75, None, "France"),
             ("581587", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", 2, last, 2.95, None, "France"),
             ("C581588", "71053", "WHITE METAL LANTERN", -2, last, 3.39, 12345.0, "UK")]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["InvoiceDate"] = frame["InvoiceDate"].astype("datetime64[us]")  # as the real file stores it
    return frame


@pytest.fixture()
def retail_folder(tmp_path):
    folder = tmp_path / "online-retail"
    folder.mkdir()
    retail_rows().to_parquet(folder / DATA_FILE, index=False)
    return folder


def test_arguments_default_to_two_week_splits_and_reject_empty_ones(retail_folder, tmp_path):
    args = bench.parse_args(["--data", str(retail_folder), "--work-dir", str(tmp_path / "work")])
    assert (args.valid_days, args.test_days, args.work_dir) == (14, 14, tmp_path / "work")
    assert bench.data_file(args.data) == retail_folder / DATA_FILE  # a folder: its file
    assert bench.data_file(retail_folder / DATA_FILE) == retail_folder / DATA_FILE  # or the file itself
    with pytest.raises(SystemExit, match=f"no {DATA_FILE} there"):
        bench.data_file(tmp_path)
    with pytest.raises(SystemExit):
        bench.parse_args(["--test-days", "0"])


def test_the_config_covers_the_window_with_the_split_and_purchase_denoise(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONREC_HOME", "/somewhere/else")  # make exports it; the bench ignores it
    config = bench.bench_config(tmp_path, window_days=374, valid_days=14, test_days=7, raw_lines=541_909)

    assert (config["home"], config["lake_root"]) == (str(tmp_path), str(tmp_path / "lake"))
    assert (config["window_days"], config["split"]) == (374, {"valid_days": 14, "test_days": 7})
    # ceil(541,909 / 250,000) = 3 shuffle partitions (bench/etl.py's rule).
    assert config["spark"]["conf"]["spark.sql.shuffle.partitions"] == "3"
    denoise = config["denoise"]
    assert denoise["bot_max_events_per_minute"] is None and denoise["bot_regular_min_events"] is None
    assert denoise["max_events_per_session"] is None and denoise["collapse_consecutive_repeats"] is False
    assert denoise["max_events_per_user_day"] == 2000  # the other rules keep the pipeline's defaults
    assert config["privacy"]["create_key_file"] is False


def test_set_assignments_are_read_as_json_and_land_on_top_of_the_bench_config(tmp_path):
    args = bench.parse_args(["--set", "user_encoder.time_gaps=false", "--set", "user_encoder.epochs=3",
                             "--set", "mlflow.experiment=retail-ablation"])
    assert args.settings == {"user_encoder": {"time_gaps": False, "epochs": 3},
                             "mlflow": {"experiment": "retail-ablation"}}  # not JSON: kept as the string
    config = bench.bench_config(tmp_path, window_days=10, valid_days=1, test_days=1, raw_lines=10,
                                settings=args.settings)
    assert config["user_encoder"]["time_gaps"] is False and config["user_encoder"]["epochs"] == 3
    assert config["user_encoder"]["embedding_dim"] == 64  # the section's other keys stay
    assert config["mlflow"]["experiment"] == "retail-ablation"
    with pytest.raises(SystemExit):
        bench.parse_args(["--set", "no_equals_sign"])


def test_landing_and_the_multi_day_split_of_hand_made_rows(retail_folder, tmp_path):
    work_dir = tmp_path / "work"
    stale = Path(partition_path({"lake_root": str(work_dir / "lake")}, LANDING_EVENTS, "2011-11-30"))
    stale.mkdir(parents=True)  # a previous run's date: the lake is emptied first

    landed = bench.land(work_dir, bench.data_file(retail_folder))
    config, splits = bench.plan(landed, work_dir, valid_days=2, test_days=3)

    assert landed == {**{day: 2 for day in DATES[:-1]}, "2011-12-09": 5}
    assert bench.landed_lines(work_dir) == landed  # what --resume-from counts instead of landing again
    assert not stale.exists()
    assert Path(partition_path(config, LANDING_CATALOG, "2011-12-09")).is_dir()
    # Window 12-01..12-09 = 9 days. Test: the last 3, 12-07..12-09; valid: the 2 before,
    # 12-05 and 12-06; train: 12-01, 12-02 and 12-04 (12-03 has no invoices).
    assert config["window_days"] == 9
    assert (splits.train, splits.valid, splits.test) == (
        ["2011-12-01", "2011-12-02", "2011-12-04"], ["2011-12-05", "2011-12-06"],
        ["2011-12-07", "2011-12-08", "2011-12-09"])


def test_a_split_that_leaves_no_train_day_stops_before_spark(retail_folder, tmp_path):
    # 5 + 4 = 9 days = the whole window: one line naming the settings, and no results file.
    results = tmp_path / "online-retail.json"
    with pytest.raises(SystemExit, match=r"split.valid_days \(5\) \+ split.test_days \(4\) must be less than "
                                         r"window_days \(9\)"):
        bench.main(["--data", str(retail_folder), "--work-dir", str(tmp_path / "work"), "--valid-days", "5",
                    "--test-days", "4", "--results", str(results)])
    assert not results.exists()
