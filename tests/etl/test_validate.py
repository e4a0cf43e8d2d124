"""validate: whole-partition profile of raw events, hard rules that stop the night, soft findings.

Every raw folder here is written by hand, a few lines each, so every expected number can be
worked out in a comment. Only two tests go through run() (and so MLflow): the rules are
checked with assess_partition, which main calls unchanged.
"""

import gzip
import json
from pathlib import Path

import pytest

from jobs.common.lake import partition_path
from jobs.common.schema import RAW_EVENTS
from jobs.etl.validate import (DATA_QUALITY, REPORT_FILES, assess_partition, count_lines, hard_violation_error,
                           profile_partition, run)
from jobs.common.night import Night

DS = "2026-11-27"


def event(event_id, time, event_type="view", user="u1", item="i1", query=None, price=9.5, session="s1") -> str:
    return json.dumps({"event_id": event_id, "event_time": time, "event_type": event_type, "user_id": user,
                       "session_id": session, "item_id": item, "query": query, "price": price})


def write_raw(config, ds, files: dict) -> Path:
    """raw/events/dt=ds/<name> for each name: list of lines (str or bytes), or raw file bytes."""
    folder = Path(partition_path(config, RAW_EVENTS, ds))
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
            continue
        lines = [line if isinstance(line, bytes) else line.encode("utf-8") for line in content]
        with gzip.open(folder / name, "wb") as stream:
            stream.write(b"".join(line + b"\n" for line in lines))
    return folder


def assess(config, ds=DS):
    return assess_partition(config, ds, config["validate"], {})


def hard_message(config, ds=DS) -> str:
    error = hard_violation_error(config, {ds: assess(config, ds)})
    assert error is not None, "expected a hard violation"
    return str(error)


def failed_rules(report, severity):
    return sorted((f["rule"], f["column"]) for f in report["findings"] if f["severity"] == severity and not f["passed"])


# 4 events: the search has no item or price, the three item events no query.
CLEAN_DAY = [
    event("e1", "2026-11-27T10:00:00Z"),
    event("e2", "2026-11-27T10:00:05.500Z", "click"),
    event("e3", "2026-11-27T12:30:00Z", "search", user="u2", item=None, query="red shoes", price=None,
          session="s2"),
    event("e4", "2026-11-27T23:59:59Z", "purchase", user="u2", item="i2", price=20.0, session="s2"),
]


def test_clean_day_passes_with_exact_numbers_report_files_and_mlflow_metrics(tmp_config):
    import mlflow

    write_raw(tmp_config, DS, {"events-00000.jsonl.gz": CLEAN_DAY})
    result = run(Night.plan(tmp_config, DS))

    report_dir = Path(partition_path(tmp_config, DATA_QUALITY, DS))
    assert result == {"dates": [DS], "summary": {DS: {"status": "passed", "lines": 4, "soft_findings": [],
                                                     "report": str(report_dir)}}}
    assert sorted(p.name for p in report_dir.iterdir()) == sorted(REPORT_FILES)
    report = json.loads((report_dir / "data_quality.json").read_text())
    # 4 parseable lines; item_id null on the search (1/4), query on the 3 item events (3/4),
    # price on the search (1/4); 3 item events all with an item; all 4 times inside the day.
    assert report["counts"] == {"files": 1, "lines": 4, "malformed": 0, "non_utf8": 0, "parseable": 4,
                                "item_events": 3, "item_events_without_item": 0, "unknown_event_types": 0,
                                "timestamps": 4, "bad_timestamps": 0, "outside_day": 0}
    assert report["null_shares"] == {"event_id": 0.0, "event_time": 0.0, "event_type": 0.0, "user_id": 0.0,
                                     "session_id": 0.0, "item_id": 0.25, "query": 0.75, "price": 0.25}
    assert report["max_future_skew_s"] is None
    assert report["trailing_lines"] == {}  # no earlier day in raw: volume not judged
    assert report["hard_violations"] == [] and report["soft_findings"] == []
    html = (report_dir / "data_quality.html").read_text()
    assert "dt=2026-11-27: passed" in html and "<td>required_field_missing</td>" in html
    assert (report_dir / "data_quality.png").read_bytes()[:4] == b"\x89PNG"

    mlflow.set_tracking_uri(tmp_config["mlflow"]["tracking_uri"])
    runs = mlflow.search_runs(experiment_names=[tmp_config["mlflow"]["experiment"]],
                              filter_string="tags.stage = 'validate'", output_format="list")
    assert len(runs) == 1
    validate_run = runs[0]  # not `run`: that name is the job under test
    assert validate_run.data.tags["ds"] == DS and validate_run.data.tags["data_quality"] == "passed"
    metrics = validate_run.data.metrics
    assert metrics["lines"] == 4.0 and metrics["hard_violations"] == 0.0 and metrics["soft_findings"] == 0.0
    assert metrics["null_share.query"] == 0.75 and metrics["malformed_share"] == 0.0
    assert "volume_ratio" not in metrics  # no baseline: no number rather than a made-up one
    assert not any("@" in name for name in metrics)
    artifacts = mlflow.MlflowClient().list_artifacts(validate_run.info.run_id, "data_quality")
    assert sorted(Path(a.path).name for a in artifacts) == sorted(REPORT_FILES)


def test_normal_dirt_passes_with_soft_findings(tmp_config):
    lines = [event(f"e{n}", f"2026-11-27T08:0{n}:00Z") for n in range(7)] + [
        '{"event_id": "e7", "event_time": "2026-11-27T',  # cut short: malformed
        event("e8", "2026-11-27T09:00:00Z", "hover"),  # unknown type
        event("e9", "2026-11-28T02:00:00Z"),  # 7200 s after the day's end
    ]
    write_raw(tmp_config, DS, {"events-00000.jsonl.gz": lines})
    report = assess(tmp_config)
    # malformed 1/10 = 0.1 <= 0.2; unknown 1/9 > 0.01; outside the day 1/9 > 0.01; skew 7200 > 3600.
    assert report["status"] == "passed_with_findings" and report["hard_violations"] == []
    assert failed_rules(report, "soft") == [("max_future_skew_s", "event_time"), ("outside_day_share", "event_time"),
                                           ("unknown_event_type_share", "event_type")]
    assert report["shares"]["malformed"] == 0.1
    assert report["shares"]["unknown_event_type"] == pytest.approx(1 / 9)
    assert report["max_future_skew_s"] == 7200.0
    assert report["unknown_event_types"] == {"hover": 1}
    # A stricter configured threshold turns the same dirt into a hard violation.
    tmp_config["validate"] = {**tmp_config["validate"], "max_malformed_share": 0.05}
    assert "rule malformed_share: observed 0.1, threshold 0.05" in hard_message(tmp_config)


def test_clock_skew_within_cleans_allowance_is_inside_the_day():
    lines = [event("e1", "2026-11-27T23:59:59Z").encode(),
             event("e2", "2026-11-28T00:02:00Z").encode(),  # 120 s late: clean keeps it (<= 300 s)
             event("e3", "2026-11-26T23:59:59Z").encode(),  # the day before: outside
             event("e4", "2026-11-27T10:00:00").encode()]  # no offset: clean rejects it
    profile = profile_partition(DS, [("f.jsonl.gz", lines)], allowed_future_skew_s=300)
    assert (profile.timestamps, profile.bad_timestamps, profile.outside_day) == (3, 1, 1)
    assert profile.max_future_skew_s == 120.0


def test_malformed_share_names_the_worst_file(tmp_config):
    tab_separated = ["e1\t2026-11-27T10:00:00Z\tview\tu1", "e2\t2026-11-27T10:01:00Z\tview\tu1",
                     "e3\t2026-11-27T10:02:00Z\tview\tu2"]
    write_raw(tmp_config, DS, {"a.jsonl.gz": CLEAN_DAY[:2], "b.jsonl.gz": tab_separated})
    message = hard_message(tmp_config)
    # 3 of 5 lines are not JSON, all in b.
    assert "[dt=2026-11-27, file b.jsonl.gz] rule malformed_share: observed 0.6, threshold 0.2" in message


def test_renamed_required_column_is_named_with_the_unexpected_key(tmp_config):
    renamed = [line.replace('"user_id"', '"userId"') for line in CLEAN_DAY]
    write_raw(tmp_config, DS, {"events-00000.jsonl.gz": renamed})
    message = hard_message(tmp_config)
    assert "column user_id] rule required_field_missing: observed 1, threshold 0.2" in message
    assert "unexpected keys seen: userId" in message
    assert "column event_id" not in message  # the other required fields are fine


def test_non_utf8_lines_are_a_hard_violation(tmp_config):
    latin1 = event("e5", "2026-11-27T11:00:00Z", "search", item=None, query="x", price=None).encode()
    latin1 = latin1.replace(b'"x"', b'"cr\xe8me"')  # Latin-1 e-grave: not UTF-8
    write_raw(tmp_config, DS, {"events-00000.jsonl.gz": [CLEAN_DAY[0], latin1]})
    report = assess(tmp_config)
    assert report["counts"]["non_utf8"] == 1 and report["counts"]["malformed"] == 0  # still parsed
    assert ("[dt=2026-11-27, file events-00000.jsonl.gz] rule non_utf8_share: observed 0.5, threshold 0.01"
            in hard_message(tmp_config))


def gzip_bytes(lines) -> bytes:
    return gzip.compress("".join(line + "\n" for line in lines).encode())


@pytest.mark.parametrize("broken", [gzip_bytes(CLEAN_DAY)[:-8],  # the trailer cut off
                                    b"not gzip at all\n"])
def test_unreadable_gzip_names_the_file_and_the_other_files_still_count(tmp_config, broken):
    write_raw(tmp_config, DS, {"a.jsonl.gz": CLEAN_DAY, "cut.jsonl.gz": broken})
    report = assess(tmp_config)
    assert [f["file"] for f in report["findings"] if f["rule"] == "unreadable_gzip"] == ["cut.jsonl.gz"]
    assert report["counts"]["lines"] >= 4  # a's lines are profiled all the same
    assert "file cut.jsonl.gz] rule unreadable_gzip" in hard_message(tmp_config)


@pytest.mark.parametrize("files, rule", [(None, "no_partition"), ({}, "no_files"),
                                         ({"empty.jsonl.gz": []}, "no_lines")])
def test_nothing_landed_is_a_hard_violation(tmp_config, files, rule):
    if files is not None:
        write_raw(tmp_config, DS, files)
    assert f"rule {rule}" in hard_message(tmp_config)


def test_volume_drop_against_trailing_days_is_soft(tmp_config):
    # 2026-11-24 has no raw partition and is left out: mean of 10 and 6 lines = 8; 2 / 8 = 0.25.
    write_raw(tmp_config, "2026-11-25", {"a.jsonl.gz": [CLEAN_DAY[0]] * 10})
    write_raw(tmp_config, "2026-11-26", {"a.jsonl.gz": [CLEAN_DAY[0]] * 6})
    write_raw(tmp_config, DS, {"a.jsonl.gz": CLEAN_DAY[:2]})
    report = assess(tmp_config)
    assert report["trailing_lines"] == {"2026-11-25": 10, "2026-11-26": 6}
    volume = next(f for f in report["findings"] if f["rule"] == "volume_ratio")
    assert (volume["observed"], volume["passed"], volume["severity"]) == (0.25, False, "soft")
    assert report["status"] == "passed_with_findings" and report["hard_violations"] == []


def test_run_reports_every_date_then_raises_one_error_listing_all_violations(tmp_config):
    write_raw(tmp_config, "2026-11-26", {"a.jsonl.gz": gzip_bytes(CLEAN_DAY)[:-8]})
    write_raw(tmp_config, DS, {"a.jsonl.gz": ["not json"] * 3})
    with pytest.raises(ValueError) as raised:
        run(Night.for_dates(tmp_config, [DS, "2026-11-26"]))
    message = str(raised.value)
    assert "2 hard data-quality violation(s)" in message
    assert "[dt=2026-11-26, file a.jsonl.gz] rule unreadable_gzip" in message
    assert "[dt=2026-11-27, file a.jsonl.gz] rule malformed_share: observed 1, threshold 0.2" in message
    for ds in ("2026-11-26", DS):  # the failed night still has its reports
        report = json.loads(Path(partition_path(tmp_config, DATA_QUALITY, ds), "data_quality.json").read_text())
        assert report["status"] == "failed"


@pytest.mark.parametrize("content, lines", [(b"a\nb\nc", 3), (b"a\nb\n", 2), (b"", 0)])
def test_count_lines_counts_a_last_line_without_newline(tmp_path, content, lines):
    path = tmp_path / "f.jsonl.gz"
    path.write_bytes(gzip.compress(content))
    assert count_lines(path) == lines
