"""Validate: profile each landed raw partition before clean touches it.

Input:  raw/events/dt=D/*.jsonl.gz (one JSON object per line, fields RAW_EVENT_FIELDS).
Output: reports/data_quality/dt=D/ with data_quality.json, .html and .png, the same files
        and the key numbers in the MLflow run of stage "validate" for D.

Raw data always carries some dirt that clean quarantines line by line (a malformed line, a
missing key, a bad timestamp). Validate judges the partition as a whole instead: it stops
the night only when the data is broken beyond what quarantining can absorb, because clean
would otherwise "succeed" by quarantining most of the day, or train on a renamed column's
nulls.

  hard (the run stops with one ValueError naming every violation, file and column):
    no_partition / no_files / no_lines   nothing landed for D
    unreadable_gzip                      a file is truncated or not gzip (named)
    malformed_share                      too many lines are not a JSON object (format changed)
    required_field_missing               event_id, event_time, event_type or user_id absent,
                                         null or blank in too many parseable lines (renamed)
    non_utf8_share                       too many lines are not valid UTF-8 (encoding changed)
  soft (recorded in the report, the run continues):
    null_share                           a column that should be filled is null too often
    volume_ratio                         lines vs the mean of the trailing days in raw
    unknown_event_type_share             event types outside schema.EVENT_TYPES
    outside_day_share, max_future_skew_s events outside the partition day (clock skew)

Why plain Python streaming and not Spark: the profile is one sequential pass with constant
memory (counters), and only Python sees the two defects that matter most here. Spark's text
reader turns a truncated gzip into a Java EOFException that fails the whole job without
naming the file, and decodes invalid UTF-8 into U+FFFD silently. Reading file by file also
lets every message name its file, and saves the Spark start-up before clean. The lake is a
mounted filesystem, as in ingest.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import gzip
import html
import json
import os
import re
import zlib
from pathlib import Path
from typing import Iterable, Iterator

from jobs.common.lake import days_back, parse_ds, partition_path, replace_partition
from jobs.common.night import Night
from jobs.common.schema import (
    DATA_QUALITY,
    EVENT_ID,
    EVENT_TIME,
    EVENT_TYPE,
    EVENT_TYPES,
    ITEM_EVENT_TYPES,
    ITEM_ID,
    RAW_EVENT_FIELDS,
    RAW_EVENTS,
    RAW_FILE_GLOB,
    SESSION_ID,
    USER_ID,
)

STAGE_NAME = "validate"
REPORT_FILES = ("data_quality.json", "data_quality.html", "data_quality.png")

HARD, SOFT = "hard", "soft"
REQUIRED_FIELDS = (EVENT_ID, EVENT_TIME, EVENT_TYPE, USER_ID)  # clean's missing_key rule
# Columns that should be filled on every event; item_id only on item events, and query and
# price are legitimately null (searches have no price, item events no query).
ALWAYS_FILLED = (*REQUIRED_FIELDS, SESSION_ID)

# clean's accepted event_time shape: a fraction of 1-6 digits and a mandatory offset.
TIMESTAMP_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")
SECONDS_PER_DAY = 86_400
TOP_VALUES = 10  # unknown event types and unexpected keys listed in the report


# --- Profile (pure: lines in, counters out) ---------------------------------------------

@dataclasses.dataclass
class FileProfile:
    """One raw file: how many lines it gave and which defects they had."""

    file: str
    lines: int = 0
    malformed: int = 0
    non_utf8: int = 0
    error: str | None = None  # why the file could not be read to its end


@dataclasses.dataclass
class PartitionProfile:
    """Counters over every line of one date partition."""

    ds: str
    files: list[FileProfile] = dataclasses.field(default_factory=list)
    lines: int = 0
    malformed: int = 0  # not a JSON object (includes empty lines)
    non_utf8: int = 0
    parseable: int = 0  # JSON objects: the denominator of the per-column shares
    missing: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    unexpected_keys: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    item_events: int = 0
    item_events_without_item: int = 0
    typed_events: int = 0  # lines with a non-blank event_type
    unknown_event_types: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    timestamps: int = 0  # parseable event_time values
    bad_timestamps: int = 0  # present but not in clean's format
    outside_day: int = 0
    max_future_skew_s: float | None = None  # latest event after the day's end, if any

    @property
    def unknown_event_type_count(self) -> int:
        return sum(self.unknown_event_types.values())


def profile_partition(ds: str, files: Iterable[tuple[str, Iterable[bytes]]], *,
                      allowed_future_skew_s: float) -> PartitionProfile:
    """Profile the lines of a partition's files, given as (file name, iterable of raw lines).

    An iterable may raise OSError/EOFError/zlib.error part-way (a truncated gzip): its lines
    so far count, and the file is recorded with the error.
    """
    profile = PartitionProfile(ds)
    day_start = dt.datetime.combine(parse_ds(ds), dt.time(), dt.timezone.utc).timestamp()
    day_end = day_start + SECONDS_PER_DAY
    for name, lines in files:
        file_profile = FileProfile(name)
        profile.files.append(file_profile)
        try:
            for raw_line in lines:
                _profile_line(profile, file_profile, raw_line, day_start, day_end, allowed_future_skew_s)
        except (OSError, EOFError, zlib.error) as error:
            file_profile.error = f"{type(error).__name__}: {error}"
    return profile


def _profile_line(profile: PartitionProfile, file_profile: FileProfile, raw_line: bytes,
                  day_start: float, day_end: float, allowed_future_skew_s: float) -> None:
    profile.lines += 1
    file_profile.lines += 1
    try:
        text = raw_line.decode("utf-8")
    except UnicodeDecodeError:
        profile.non_utf8 += 1
        file_profile.non_utf8 += 1
        text = raw_line.decode("utf-8", errors="replace")  # still profile the rest of the line
    record = _json_object(text)
    if record is None:
        profile.malformed += 1
        file_profile.malformed += 1
        return
    profile.parseable += 1
    for name in RAW_EVENT_FIELDS:
        if _blank(record.get(name)):
            profile.missing[name] += 1
    profile.unexpected_keys.update(key for key in record if key not in RAW_EVENT_FIELDS)
    _profile_event_type(profile, record)
    _profile_event_time(profile, record.get(EVENT_TIME), day_start, day_end, allowed_future_skew_s)


def _json_object(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except ValueError:  # JSONDecodeError, and an empty line
        return None
    return value if isinstance(value, dict) else None


def _blank(value) -> bool:
    # clean reads every field as text, so a number counts as present and "  " as blank.
    return value is None or (isinstance(value, str) and value.strip() == "")


def _profile_event_type(profile: PartitionProfile, record: dict) -> None:
    event_type = record.get(EVENT_TYPE)
    if _blank(event_type):
        return
    event_type = str(event_type)
    profile.typed_events += 1
    if event_type not in EVENT_TYPES:
        profile.unknown_event_types[event_type] += 1
    elif event_type in ITEM_EVENT_TYPES:
        profile.item_events += 1
        if _blank(record.get(ITEM_ID)):
            profile.item_events_without_item += 1


def _profile_event_time(profile: PartitionProfile, value, day_start: float, day_end: float,
                        allowed_future_skew_s: float) -> None:
    if _blank(value):
        return  # counted as missing
    seconds = parse_event_time(value)
    if seconds is None:
        profile.bad_timestamps += 1
        return
    profile.timestamps += 1
    if seconds < day_start or seconds > day_end + allowed_future_skew_s:
        profile.outside_day += 1
    if seconds > day_end:
        skew = seconds - day_end
        profile.max_future_skew_s = max(skew, profile.max_future_skew_s or 0.0)


def parse_event_time(value) -> float | None:
    """Epoch seconds of an event_time in clean's format (offset mandatory), else None."""
    if not isinstance(value, str) or not TIMESTAMP_PATTERN.fullmatch(value):
        return None
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:  # right shape, impossible date such as month 13
        return None


# --- Checks (pure: profile and thresholds in, findings out) -----------------------------

@dataclasses.dataclass
class Finding:
    """One rule's verdict on a partition (recorded whether it passed or not)."""

    rule: str
    severity: str
    observed: float | None
    threshold: float | list[float]
    passed: bool
    column: str | None = None
    file: str | None = None
    detail: str = ""

    def message(self, ds: str) -> str:
        where = ", ".join(part for part in (f"dt={ds}", self.file and f"file {self.file}",
                                            self.column and f"column {self.column}") if part)
        observed = "n/a" if self.observed is None else f"{self.observed:.4g}"
        return f"[{where}] rule {self.rule}: observed {observed}, threshold {self.threshold}" + (
            f" ({self.detail})" if self.detail else "")


def share(count: int, total: int) -> float:
    return count / total if total else 0.0


def check_partition(profile: PartitionProfile, trailing_lines: dict[str, int], thresholds: dict) -> list[Finding]:
    """Every hard and soft rule on a profile; trailing_lines maps earlier dates to line counts."""
    presence = _presence_findings(profile)
    if profile.lines == 0:
        return presence  # nothing to measure shares on
    return [*presence, *_hard_findings(profile, thresholds), *_soft_findings(profile, trailing_lines, thresholds)]


def _presence_findings(profile: PartitionProfile) -> list[Finding]:
    findings = [Finding("no_files", HARD, len(profile.files), 1, bool(profile.files),
                        detail=f"{len(profile.files)} {RAW_FILE_GLOB} files")]
    findings += [Finding("unreadable_gzip", HARD, file.lines, 0, False, file=file.file,
                         detail=f"unreadable after {file.lines} lines: {file.error}")
                 for file in profile.files if file.error]
    if profile.files and not any(file.error for file in profile.files):
        findings.append(Finding("no_lines", HARD, profile.lines, 1, profile.lines > 0,
                                detail=f"{profile.lines} lines in the files"))
    return findings


def _hard_findings(profile: PartitionProfile, thresholds: dict) -> list[Finding]:
    malformed_share = share(profile.malformed, profile.lines)
    findings = [Finding("malformed_share", HARD, malformed_share, thresholds["max_malformed_share"],
                        malformed_share <= thresholds["max_malformed_share"],
                        file=_worst_file(profile, "malformed"),
                        detail=f"{profile.malformed} of {profile.lines} lines are not a JSON object")]
    for name in REQUIRED_FIELDS:
        missing_share = share(profile.missing[name], profile.parseable)
        passed = missing_share <= thresholds["max_required_missing_share"]
        detail = f"{profile.missing[name]} of {profile.parseable} parseable lines lack it"
        if not passed and profile.unexpected_keys:
            detail += f"; unexpected keys seen: {', '.join(k for k, _ in profile.unexpected_keys.most_common(5))}"
        findings.append(Finding("required_field_missing", HARD, missing_share,
                                thresholds["max_required_missing_share"], passed, column=name, detail=detail))
    non_utf8_share = share(profile.non_utf8, profile.lines)
    findings.append(Finding("non_utf8_share", HARD, non_utf8_share, thresholds["max_non_utf8_share"],
                            non_utf8_share <= thresholds["max_non_utf8_share"],
                            file=_worst_file(profile, "non_utf8"),
                            detail=f"{profile.non_utf8} of {profile.lines} lines are not valid UTF-8"))
    return findings


def _worst_file(profile: PartitionProfile, defect: str) -> str | None:
    """The file with the highest share of a defect (None if no line has it)."""
    worst = max(profile.files, key=lambda file: share(getattr(file, defect), file.lines))
    return worst.file if getattr(worst, defect) else None


def null_shares(profile: PartitionProfile) -> dict[str, float]:
    """Share of parseable lines where each raw field is absent, null or blank."""
    return {name: share(profile.missing[name], profile.parseable) for name in RAW_EVENT_FIELDS}


def _soft_findings(profile: PartitionProfile, trailing_lines: dict[str, int], thresholds: dict) -> list[Finding]:
    limit = thresholds["max_null_share"]
    nulls = null_shares(profile)
    findings = [Finding("null_share", SOFT, nulls[name], limit, nulls[name] <= limit, column=name)
                for name in ALWAYS_FILLED]
    item_null_share = share(profile.item_events_without_item, profile.item_events)
    findings.append(Finding("null_share", SOFT, item_null_share, limit, item_null_share <= limit, column=ITEM_ID,
                            detail=f"of {profile.item_events} item events"))
    findings.append(_volume_finding(profile.lines, trailing_lines, thresholds))
    unknown_share = share(profile.unknown_event_type_count, profile.typed_events)
    top_unknown = ", ".join(f"{name} ({count})" for name, count in profile.unknown_event_types.most_common(5))
    findings.append(Finding("unknown_event_type_share", SOFT, unknown_share,
                            thresholds["max_unknown_event_type_share"],
                            unknown_share <= thresholds["max_unknown_event_type_share"], column=EVENT_TYPE,
                            detail=f"unknown: {top_unknown}" if top_unknown else ""))
    outside_share = share(profile.outside_day, profile.timestamps)
    findings.append(Finding("outside_day_share", SOFT, outside_share, thresholds["max_outside_day_share"],
                            outside_share <= thresholds["max_outside_day_share"], column=EVENT_TIME,
                            detail=f"{profile.outside_day} of {profile.timestamps} parsed timestamps"))
    skew = profile.max_future_skew_s
    findings.append(Finding("max_future_skew_s", SOFT, skew, thresholds["max_future_skew_s"],
                            skew is None or skew <= thresholds["max_future_skew_s"], column=EVENT_TIME,
                            detail="seconds after the end of the day" if skew else "no event after the day"))
    return findings


def _volume_finding(lines: int, trailing_lines: dict[str, int], thresholds: dict) -> Finding:
    bounds = [thresholds["min_volume_ratio"], thresholds["max_volume_ratio"]]
    if not trailing_lines:
        return Finding("volume_ratio", SOFT, None, bounds, True, detail="no trailing days in raw to compare with")
    baseline = sum(trailing_lines.values()) / len(trailing_lines)
    ratio = lines / baseline if baseline else None
    passed = ratio is not None and bounds[0] <= ratio <= bounds[1]
    return Finding("volume_ratio", SOFT, ratio, bounds, passed,
                   detail=f"{lines} lines vs a mean of {baseline:.1f} over {len(trailing_lines)} trailing days")


def build_report(profile: PartitionProfile, trailing_lines: dict[str, int], findings: list[Finding],
                 thresholds: dict) -> dict:
    """The JSON-able data-quality report of one partition."""
    hard_failed = [f for f in findings if f.severity == HARD and not f.passed]
    soft_failed = [f for f in findings if f.severity == SOFT and not f.passed]
    status = "failed" if hard_failed else "passed_with_findings" if soft_failed else "passed"
    return {
        "ds": profile.ds,
        "status": status,
        "counts": {"files": len(profile.files), "lines": profile.lines, "malformed": profile.malformed,
                   "non_utf8": profile.non_utf8, "parseable": profile.parseable,
                   "item_events": profile.item_events,
                   "item_events_without_item": profile.item_events_without_item,
                   "unknown_event_types": profile.unknown_event_type_count,
                   "timestamps": profile.timestamps, "bad_timestamps": profile.bad_timestamps,
                   "outside_day": profile.outside_day},
        "shares": {"malformed": share(profile.malformed, profile.lines),
                   "non_utf8": share(profile.non_utf8, profile.lines),
                   "unknown_event_type": share(profile.unknown_event_type_count, profile.typed_events),
                   "outside_day": share(profile.outside_day, profile.timestamps),
                   "bad_timestamp": share(profile.bad_timestamps, profile.parseable)},
        "null_shares": null_shares(profile),
        "max_future_skew_s": profile.max_future_skew_s,
        "unknown_event_types": dict(profile.unknown_event_types.most_common(TOP_VALUES)),
        "unexpected_keys": dict(profile.unexpected_keys.most_common(TOP_VALUES)),
        "trailing_lines": trailing_lines,
        "files": [dataclasses.asdict(file) for file in profile.files],
        "thresholds": thresholds,
        "findings": [dataclasses.asdict(finding) for finding in findings],
        "hard_violations": [finding.message(profile.ds) for finding in hard_failed],
        "soft_findings": [finding.message(profile.ds) for finding in soft_failed],
    }


def report_metrics(report: dict) -> dict[str, float]:
    """The key numbers as MLflow metrics (names without '@'; None values left out)."""
    metrics = {"lines": report["counts"]["lines"], "files": report["counts"]["files"],
               "hard_violations": len(report["hard_violations"]), "soft_findings": len(report["soft_findings"]),
               **{f"{name}_share": value for name, value in report["shares"].items()},
               **{f"null_share.{name}": value for name, value in report["null_shares"].items()},
               "max_future_skew_s": report["max_future_skew_s"]}
    volume = next((f for f in report["findings"] if f["rule"] == "volume_ratio"), None)
    if volume:  # absent when nothing could be read
        metrics["volume_ratio"] = volume["observed"]
    return {name: float(value) for name, value in metrics.items() if value is not None}


# --- Extract ------------------------------------------------------------------------------

def raw_files(config: dict, ds: str) -> list[Path] | None:
    """The partition's raw event files (sorted), or None when the folder does not exist."""
    folder = Path(partition_path(config, RAW_EVENTS, ds))
    return sorted(folder.glob(RAW_FILE_GLOB)) if folder.is_dir() else None


def gzip_lines(path: Path) -> Iterator[bytes]:
    """The lines of a gzip file without their line ends, as bytes (decoding is checked later)."""
    with gzip.open(path, "rb") as stream:
        for line in stream:
            yield line.rstrip(b"\r\n")


def count_lines(path: Path) -> int:
    """Line count of a gzip file, decompressed in chunks (no parsing: the baseline is cheap)."""
    count, last = 0, b"\n"
    with gzip.open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")  # a last line without its newline


def trailing_volumes(config: dict, ds: str, n_days: int, known: dict[str, int]) -> dict[str, int]:
    """Lines per trailing day (before ds) that has raw files; unreadable days are left out.

    known holds counts this run already has, so a multi-date run reads each day once.
    """
    volumes = {}
    for day in days_back(ds, int(n_days) + 1)[:-1]:
        if day in known:
            volumes[day] = known[day]
            continue
        files = raw_files(config, day)
        if not files:
            continue
        try:
            volumes[day] = known[day] = sum(count_lines(path) for path in files)
        except (OSError, EOFError, zlib.error):
            continue  # that day's own validation reports the broken file
    return volumes


# --- Load: the report files and the MLflow run ---------------------------------------------

def write_report(folder: str, report: dict) -> None:
    Path(folder, "data_quality.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    Path(folder, "data_quality.html").write_text(render_html(report))
    plot_report(report, os.path.join(folder, "data_quality.png"))


def render_html(report: dict) -> str:
    """A self-contained page: the verdict, every rule, null shares and volumes."""
    def row(cells, header=False):
        tag = "th" if header else "td"
        return "<tr>" + "".join(f"<{tag}>{html.escape(str(cell))}</{tag}>" for cell in cells) + "</tr>"

    def number(value):
        return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else value

    rules = [row(("rule", "severity", "result", "column", "file", "observed", "threshold", "detail"), True)]
    for finding in report["findings"]:
        rules.append(row((finding["rule"], finding["severity"], "ok" if finding["passed"] else "VIOLATED",
                          finding["column"] or "", finding["file"] or "", number(finding["observed"]),
                          finding["threshold"], finding["detail"])))
    nulls = [row(("column", "null share"), True)] + [row((name, f"{value:.4f}"))
                                                      for name, value in report["null_shares"].items()]
    volumes = [row(("date", "lines"), True)] + [row((day, lines)) for day, lines in report["trailing_lines"].items()]
    volumes.append(row((f"{report['ds']} (this partition)", report["counts"]["lines"])))
    counts = [row(("count", "value"), True)] + [row(item) for item in report["counts"].items()]
    style = ("body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1.5em}"
             "td,th{border:1px solid #999;padding:2px 8px;text-align:left}th{background:#eee}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Data quality dt={html.escape(report['ds'])}"
            f"</title><style>{style}</style></head><body>"
            f"<h1>Data quality of raw/events dt={html.escape(report['ds'])}: {html.escape(report['status'])}</h1>"
            f"<h2>Rules</h2><table>{''.join(rules)}</table>"
            f"<h2>Counts</h2><table>{''.join(counts)}</table>"
            f"<h2>Null share per column</h2><table>{''.join(nulls)}</table>"
            f"<h2>Volume</h2><table>{''.join(volumes)}</table></body></html>\n")


def plot_report(report: dict, path: str) -> None:
    """Null share per column and lines per day (trailing days and this partition)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    from matplotlib import pyplot as plt

    figure, (null_axes, volume_axes) = plt.subplots(1, 2, figsize=(11, 4))
    # Checked columns in blue (item_id as a share of item events), the columns that are null
    # by design (query, price, item_id of all lines) in grey: only blue bars meet the limit.
    checked = {f"{f['column']} (item events)" if f["column"] == ITEM_ID else f["column"]: f["observed"]
               for f in report["findings"] if f["rule"] == "null_share"}
    unchecked = {name: value for name, value in report["null_shares"].items() if name not in checked}
    null_axes.barh(list(unchecked), list(unchecked.values()), color="tab:gray", label="null by design")
    null_axes.barh(list(checked), list(checked.values()), color="tab:blue", label="checked")
    null_axes.axvline(report["thresholds"]["max_null_share"], color="tab:red", linestyle="--",
                      label="soft limit")
    null_axes.set(title="null share per column", xlabel="share of parseable lines", xlim=(0, 1))
    null_axes.legend(loc="upper right", fontsize="small")
    days = [*report["trailing_lines"], report["ds"]]
    lines = [*report["trailing_lines"].values(), report["counts"]["lines"]]
    volume_axes.bar(range(len(days)), lines, color=["tab:gray"] * (len(days) - 1) + ["tab:blue"])
    volume_axes.set_xticks(range(len(days)), [day[5:] for day in days], rotation=45)
    if report["trailing_lines"]:
        baseline = sum(report["trailing_lines"].values()) / len(report["trailing_lines"])
        for ratio in (report["thresholds"]["min_volume_ratio"], report["thresholds"]["max_volume_ratio"]):
            volume_axes.axhline(baseline * ratio, color="tab:red", linestyle="--")
    volume_axes.set(title=f"lines per day ({report['status']})", ylabel="lines")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def log_report(config: dict, ds: str, folder: str, report: dict) -> None:
    import mlflow

    from jobs.common.tracking import stage_run

    with stage_run(config, STAGE_NAME, ds):
        mlflow.set_tag("data_quality", report["status"])
        mlflow.log_metrics(report_metrics(report))
        for name in REPORT_FILES:
            mlflow.log_artifact(os.path.join(folder, name), artifact_path="data_quality")


# --- Job ------------------------------------------------------------------------------------

def assess_partition(config: dict, ds: str, thresholds: dict, known_volumes: dict[str, int]) -> dict:
    """Profile and check one date (reads raw only); returns its report.

    known_volumes collects line counts of dates already read, for the next dates' baselines.
    """
    files = raw_files(config, ds)
    profile = profile_partition(ds, [(path.name, gzip_lines(path)) for path in files or []],
                                allowed_future_skew_s=config["clean"]["max_future_skew_s"])
    if files and not any(file.error for file in profile.files):
        known_volumes[ds] = profile.lines
    trailing = trailing_volumes(config, ds, thresholds["volume_trailing_days"], known_volumes)
    if files is None:
        folder = partition_path(config, RAW_EVENTS, ds)
        findings = [Finding("no_partition", HARD, None, 1, False,
                            detail=f"{folder} does not exist (did ingest run for this date?)")]
    else:
        findings = check_partition(profile, trailing, thresholds)
    return build_report(profile, trailing, findings, thresholds)


def publish_report(config: dict, ds: str, report: dict) -> str:
    """Write the report partition and log it to the date's MLflow run; returns the folder."""
    report_dir = partition_path(config, DATA_QUALITY, ds)
    with replace_partition(report_dir) as staging:
        write_report(staging, report)
    log_report(config, ds, report_dir, report)
    return report_dir


def hard_violation_error(config: dict, reports: dict[str, dict]) -> ValueError | None:
    """One error listing every hard violation of every date, or None."""
    violations = [message for report in reports.values() for message in report["hard_violations"]]
    if not violations:
        return None
    return ValueError(f"validate: {len(violations)} hard data-quality violation(s) in raw/events; the night "
                      f"stops before clean (reports in {partition_path(config, DATA_QUALITY, '<date>')}):\n  "
                      + "\n  ".join(violations))


def run(night: Night) -> dict:
    """Validate the raw events of the night's dates; a ValueError lists every hard violation.

    Every date gets its report and MLflow run first, so a failed night still shows why.
    Returns {"dates": [...], "summary": {date: {"status", "lines", "soft_findings": [messages],
    "report": folder}}}.
    """
    config, dates = night.config, list(night.dates)
    if not dates:
        raise ValueError("no dates given: pass at least one logical date YYYY-MM-DD")
    dates = sorted(dict.fromkeys(parse_ds(ds).isoformat() for ds in dates))  # oldest first: baselines
    thresholds = config["validate"]  # the thresholds and their defaults: jobs/common/config.py ValidateConfig
    known_volumes: dict[str, int] = {}
    reports = {ds: assess_partition(config, ds, thresholds, known_volumes) for ds in dates}
    folders = {ds: publish_report(config, ds, report) for ds, report in reports.items()}
    error = hard_violation_error(config, reports)
    if error is not None:
        raise error
    return {"dates": dates, "summary": {ds: {"status": report["status"], "lines": report["counts"]["lines"],
                                             "soft_findings": report["soft_findings"], "report": folders[ds]}
                                        for ds, report in reports.items()}}
