"""bench/etl.py and bench/etl_pandas.py: the pandas chain does what the Spark jobs do.

One tiny end-to-end run of the benchmark (3 generated days, about 1,600 generated lines plus
a hand-made file that trips every clean and denoise rule the generator's dirt does not) is
shared by the tests: its JSON row, then the two engines' counts and outputs, compared.
"""

import datetime as dt
import gzip
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.common.schema import (CLEAN_COLUMNS, CLEAN_EVENTS, DENOISED_EVENTS, DT, EVENT_TIME, FEATURE_ITEMS,
                         FEATURE_SEQUENCES, ITEM_FEATURE_COLUMNS, LANDING_CATALOG, LANDING_EVENTS,
                         REASON_ACCIDENTAL_CLICK, REASON_BAD_PRICE, REASON_BAD_TIMESTAMP, REASON_BOT,
                         REASON_BOT_DISTINCT_ITEMS, REASON_BOT_REGULAR_TIMING, REASON_CONSECUTIVE_REPEAT,
                         REASON_DOUBLE_CLICK, REASON_DUPLICATE, REASON_FUTURE_TIMESTAMP, REASON_HEAVY_USER_CAP,
                         REASON_MALFORMED, REASON_MISSING_KEY, REASON_SESSION_LENGTH_OUTLIER,
                         REASON_UNKNOWN_EVENT_TYPE, REASON_UNKNOWN_ITEM, REASON_WRONG_DAY, SEQUENCE_COLUMNS,
                         USER_ID)

REPO_ROOT = Path(__file__).resolve().parents[2]
SIZE, DAYS, END_DATE, SEED = 3000, 3, "2026-11-27", 42
HAND_MADE_DAY = "2026-11-26"  # the middle (validation) day
HAND_MADE_FILE = "events-99999.jsonl.gz"


def load_bench_etl():
    spec = importlib.util.spec_from_file_location("bench_etl", REPO_ROOT / "bench" / "etl.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def hand_made_lines(day: str, items: list[str]) -> list[str]:
    """Lines that trip the rules generated dirt does not reach, one user per case.

    Times are seconds after the day's midnight; users are "x-..." (generated ones are "u...").
    Expected, with the default config (jobs/common/config.py):
      x-early      1 event a second before midnight           -> outside_partition_day
      x-stranger   an item not in the catalog                 -> unknown_item
      x-blank      user_id " "                                -> missing_key
      x-time       no offset                                  -> bad_timestamp; "+02:00" and
                   6 fraction digits parse and are kept
      x-price      "ten" and 100001                           -> bad_price; "12.5" is kept
      x-chain      clicks at 0, 1.5, 3 s on one item          -> 1.5 s double_click (3 s is
                   3 s after the last kept one); after clean, 3 s repeats 0 s -> consecutive_repeat
      x-crawler    40 distinct items within one minute        -> bot_distinct_items (all 40)
      x-cron       25 views exactly 60 s apart                -> bot_regular_timing (all 25)
      x-long       520 events in one session                  -> session_length_outlier (all)
      x-quick      view A, B 0.5 s later: A accidental_click; view C, C again 0.3 s later, D 5 s
                   later: the repeat is a consecutive_repeat and C's dwell skips it (5 s, kept);
                   click E then 0.8 s to F: accidental; F 1.2 s before its cart is kept, and
                   so is the cart 0.5 s before G (a cart is neither a view nor a click)
      x-heavy      2,100 irregular events in 10 sessions      -> the last 100 heavy_user_cap
      x-anonymous  600 events without a session id, a 2,000 s pause after 300: sessionized
                   into two sessions of 300, so not a session_length_outlier
      x-search     searches with an e-mail address and a long number (masked by clean)
    """
    midnight = dt.datetime.fromisoformat(day).replace(tzinfo=dt.timezone.utc)
    rng = np.random.default_rng(7)
    lines = []

    def at(seconds: float) -> str:
        return (midnight + dt.timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def event(user, seconds, item, event_type="view", session="s-x", query=None, price=10.0, time_text=None,
              user_id=None):
        record = {"event_id": f"x-{len(lines):05d}", "event_time": time_text or at(seconds),
                  "event_type": event_type, "user_id": user if user_id is None else user_id,
                  "session_id": session, "item_id": item, "query": query, "price": price}
        lines.append(json.dumps(record))

    event("x-early", -1, items[0])
    event("x-stranger", 100, "i99999")
    event("x-blank", 110, items[0], user_id=" ")
    event("x-time", 120, items[0], time_text=f"{day}T00:02:00")
    event("x-time", 130, items[1], time_text=f"{day}T02:02:10+02:00")
    event("x-time", 140, items[2], time_text=f"{day}T00:02:20.123456Z")
    event("x-price", 150, items[0], price="ten")
    event("x-price", 160, items[1], price=100001.0)
    event("x-price", 170, items[2], price="12.5")
    for offset in (0.0, 1.5, 3.0):
        event("x-chain", 3600 + offset, items[0], "click")
    for k in range(40):
        event("x-crawler", 7200 + 1.4 * k, items[k])
    for k in range(25):
        event("x-cron", 10800 + 60 * k, items[k % 40])
    seconds = 14400.0
    for k in range(520):
        event("x-long", seconds, items[k % 37], session="s-long")
        seconds += rng.uniform(5, 60)
    for offset, item, event_type in ((0, 0, "view"), (0.5, 1, "view"), (10, 2, "view"), (10.3, 2, "view"),
                                     (15, 3, "view"), (20, 4, "click"), (20.8, 5, "view"),
                                     (22, 5, "add_to_cart"), (22.5, 6, "view")):
        event("x-quick", 50000 + offset, items[item], event_type)
    seconds = 1000.0
    for k in range(2100):
        event("x-heavy", seconds, items[k % 41], session=f"s-heavy-{k // 210}")
        seconds += rng.uniform(5, 35)
    seconds = 60000.0
    for k in range(600):
        event("x-anonymous", seconds, items[k % 43], session=None)
        seconds += 2000 if k == 299 else rng.uniform(5, 10)
    for k, query in enumerate(("Mail JANE.DOE@example.com re order 12345678!", "T-Shirt XL, iPhone 15",
                               "call +1 (555) 123-4567")):
        event("x-search", 70000 + 100 * k, None, "search", query=query, price=None)
    return lines


def land_hand_made_file(etl, work_dir: Path) -> None:
    """Generate the benchmark's data, then add the hand-made file to one day (and its manifest)."""
    manifest = etl.ensure_data(work_dir, SIZE, DAYS, END_DATE, SEED, log=lambda message: None)
    landing = work_dir / "data" / f"events={SIZE}" / "landing"
    with gzip.open(landing / LANDING_CATALOG.split("/", 1)[1] / f"dt={HAND_MADE_DAY}" / "catalog.jsonl.gz",
                   "rt") as catalog:
        items = sorted(json.loads(line)["item_id"] for line in catalog)
    lines = hand_made_lines(HAND_MADE_DAY, items)
    with gzip.open(landing / LANDING_EVENTS.split("/", 1)[1] / f"dt={HAND_MADE_DAY}" / HAND_MADE_FILE, "wt") as out:
        out.write("\n".join(lines) + "\n")
    manifest["lines_per_day"][HAND_MADE_DAY] += len(lines)
    manifest["raw_lines"] += len(lines)
    (work_dir / "data" / f"events={SIZE}" / etl.MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One run of `bench/etl.py --sizes 3000` on the generated days plus the hand-made file."""
    etl = load_bench_etl()
    work_dir = tmp_path_factory.mktemp("bench-etl")
    land_hand_made_file(etl, work_dir)
    output = work_dir / "etl.json"
    command = [sys.executable, str(REPO_ROOT / "bench" / "etl.py"), "--sizes", str(SIZE), "--days", str(DAYS),
               "--end-date", END_DATE, "--seed", str(SEED), "--work-dir", str(work_dir), "--output", str(output),
               "--keep-outputs", "--time-limit-s", "600",
               # Compiling whole-stage code costs more than it saves on a few thousand rows;
               # the rules' results do not depend on it.
               "--spark-conf", "spark.sql.codegen.wholeStage=false"]
    finished = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=900,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    runs = work_dir / "runs" / f"events={SIZE}"
    return {"etl": etl, "output": output, "stdout": finished.stdout,
            "summaries": {engine: json.loads((runs / engine / "summary.json").read_text()) for engine in etl.ENGINES},
            "lakes": {engine: runs / engine / "lake" for engine in etl.ENGINES}}


def test_the_results_file_has_one_row_per_size_with_both_engines(bench_run):
    rows = json.loads(bench_run["output"].read_text())
    assert [row["events"] for row in rows] == [SIZE]
    row = rows[0]
    for engine in ("spark", "pandas"):
        assert row[f"{engine}_s"] > 0 and row[f"{engine}_error"] is None
        assert row[f"{engine}_peak_mb"] > 50  # a Python interpreter with pandas or a JVM at least
        assert set(row[f"{engine}_stages_s"]) >= {"clean", "denoise", "normalize"}
        assert row[f"{engine}_events_per_s"] == round(row["raw_lines"] / row[f"{engine}_s"])
    assert row["pandas_over_spark"] == round(row["pandas_s"] / row["spark_s"], 2)
    assert row["counts_match"] is True and row["count_differences"] == []
    assert row["spark_conf_overrides"] == {"spark.sql.codegen.wholeStage": "false"}
    assert row["raw_lines"] > SIZE  # the generated lines plus the hand-made file
    assert "| events |" in bench_run["stdout"]


def test_every_rule_fires_and_both_engines_count_alike_per_date_and_reason(bench_run):
    spark, pandas_summary = bench_run["summaries"]["spark"], bench_run["summaries"]["pandas"]
    assert bench_run["etl"].count_differences(spark, pandas_summary) == []
    clean_reasons = set().union(*[day["reasons"] for day in spark["clean"].values()])
    assert clean_reasons == {REASON_MALFORMED, REASON_MISSING_KEY, REASON_BAD_TIMESTAMP, REASON_FUTURE_TIMESTAMP,
                             REASON_WRONG_DAY, REASON_UNKNOWN_EVENT_TYPE, REASON_BAD_PRICE, REASON_UNKNOWN_ITEM,
                             REASON_DUPLICATE, REASON_DOUBLE_CLICK}
    hand_made_day = spark["denoise"][HAND_MADE_DAY]["removed"]
    # Worked out in hand_made_lines: the rows each hand-made user loses (the generator's
    # bots add bot_user rows and its repeats consecutive_repeat rows on every day).
    assert hand_made_day[REASON_BOT_DISTINCT_ITEMS] == {"rows": 40, "users": 1}
    assert hand_made_day[REASON_BOT_REGULAR_TIMING] == {"rows": 25, "users": 1}
    assert hand_made_day[REASON_SESSION_LENGTH_OUTLIER] == {"rows": 520, "users": 1}
    assert hand_made_day[REASON_ACCIDENTAL_CLICK] == {"rows": 2, "users": 1}
    assert hand_made_day[REASON_HEAVY_USER_CAP] == {"rows": 100, "users": 1}
    assert hand_made_day[REASON_BOT]["rows"] > 100
    assert hand_made_day[REASON_CONSECUTIVE_REPEAT]["rows"] >= 2  # x-chain and x-quick
    assert spark["normalize"]["n_users"] == pandas_summary["normalize"]["n_users"] > 0
    assert spark["normalize"]["events_per_split"] == pandas_summary["normalize"]["events_per_split"]


def comparable_events(lake: Path, dataset: str) -> pd.DataFrame:
    """An event dataset's rows in a fixed order, with event_time as unix microseconds."""
    frame = pd.read_parquet(lake / dataset)
    frame[DT] = frame[DT].astype(str)
    times = frame[EVENT_TIME]
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    frame[EVENT_TIME] = times.astype("datetime64[us]").astype("int64")
    columns = [*CLEAN_COLUMNS, DT]
    frame = frame[columns].astype({name: object for name in columns if name not in (EVENT_TIME, "price")})
    return frame.sort_values(columns, ignore_index=True).fillna(np.nan)


@pytest.mark.parametrize("dataset", [CLEAN_EVENTS, DENOISED_EVENTS])
def test_both_engines_write_the_same_events(bench_run, dataset):
    """Same rows and values: hashed user ids, masked queries and generated session ids included."""
    spark = comparable_events(bench_run["lakes"]["spark"], dataset)
    pandas_events = comparable_events(bench_run["lakes"]["pandas"], dataset)
    pd.testing.assert_frame_equal(spark, pandas_events, check_dtype=False)
    assert spark[USER_ID].str.fullmatch(r"[0-9a-f]{64}").all()  # pseudonymized
    anonymous_sessions = spark["session_id"][~spark["session_id"].str.startswith("s")].unique()
    assert len(anonymous_sessions) == 2  # x-anonymous's 600 events, split by the 2,000 s pause


def test_both_engines_build_the_same_features(bench_run):
    ds = END_DATE
    sequences = {engine: pd.read_parquet(lake / FEATURE_SEQUENCES / f"dt={ds}")[list(SEQUENCE_COLUMNS)]
                 .sort_values(USER_ID, ignore_index=True) for engine, lake in bench_run["lakes"].items()}
    for name in SEQUENCE_COLUMNS[1:]:
        sequences["spark"][name] = sequences["spark"][name].map(list)
        sequences["pandas"][name] = sequences["pandas"][name].map(list)
    pd.testing.assert_frame_equal(sequences["spark"], sequences["pandas"], check_dtype=False)
    items = {engine: pd.read_parquet(lake / FEATURE_ITEMS / f"dt={ds}")[list(ITEM_FEATURE_COLUMNS)]
             .sort_values("item_idx", ignore_index=True) for engine, lake in bench_run["lakes"].items()}
    items["spark"]["title_tokens"] = items["spark"]["title_tokens"].map(list)
    items["pandas"]["title_tokens"] = items["pandas"]["title_tokens"].map(list)
    pd.testing.assert_frame_equal(items["spark"], items["pandas"], check_dtype=False, rtol=1e-5)


def test_a_run_over_its_memory_cap_is_killed_with_its_children(tmp_path):
    """The cap counts the whole tree: here a grandchild holds the memory, and it dies too."""
    etl = load_bench_etl()
    marker = tmp_path / "grandchild.pid"
    hog = ("import subprocess, sys, time; "
           "child = subprocess.Popen([sys.executable, '-c', "
           "'import time; block = bytearray(300 * 1024 * 1024); time.sleep(60)']); "
           f"open({str(marker)!r}, 'w').write(str(child.pid)); time.sleep(60)")
    run = etl.run_watched([sys.executable, "-c", hog], dict(os.environ), tmp_path / "log",
                          memory_limit_bytes=200 * 1024 * 1024, min_available_bytes=0, time_limit_s=50)
    assert run.error.startswith("exceeded 0.195312 GiB resident memory")
    assert run.peak_mb > 200 and run.wall_s < 30
    assert is_gone(int(marker.read_text()))


def is_gone(pid: int, wait_s: float = 5.0) -> bool:
    """The process has exited (or is a zombie) within wait_s: SIGKILL takes effect asynchronously."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX":
                return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


def test_a_run_past_its_time_limit_is_killed(tmp_path):
    etl = load_bench_etl()
    run = etl.run_watched([sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ), tmp_path / "log",
                          memory_limit_bytes=None, min_available_bytes=0, time_limit_s=1)
    assert run.error == "exceeded the time limit of 1 s" and run.wall_s < 10


def test_a_child_sharing_its_parents_address_space_is_counted_once(tmp_path):
    # A fake /proc: the JVM (pid 20, child of the worker 10) and, while it starts a program,
    # a child 30 whose statm is exactly the JVM's (the same pages); 40 is a child with its own.
    # statm's second field is resident pages: 10 -> 5, 20 -> 500, 30 -> 500 (shared), 40 -> 7.
    def process(pid, parent, statm, comm="java"):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "statm").write_text(statm)
        (tmp_path / str(pid) / "stat").write_text(f"{pid} ({comm}) S {parent} 1 1 0")

    process(10, 1, "900 5 2 1 0 40 0")
    process(20, 10, "9000 500 20 1 0 400 0")
    process(30, 20, "9000 500 20 1 0 400 0", comm="Executor task l")
    process(40, 20, "800 7 3 1 0 30 0")
    page = os.sysconf("SC_PAGE_SIZE")
    # 5 + 500 + 7 pages; 30 left out. A pid that vanished (50) counts nothing.
    assert load_bench_etl().tree_rss_bytes([10, 20, 30, 40, 50], proc=str(tmp_path)) == (5 + 500 + 7) * page
