"""evaluate: every model and fusion level, ranked against the full catalog on the test day.

Output, in reports/dt=<ds>/ and as artifacts of the MLflow run "evaluate <ds>":
- metrics.json: {model: {metric: value}} with recall@k (= HitRate@k: one target per
  example), mrr@k and ndcg@k for every cutoff; register, the demo and the tests read it.
- metrics.md: the same as a Markdown table, best model first by the primary metric, plus
  the primary metric's bootstrap confidence interval, coverage and average popularity at
  the primary cutoff.
- metrics_detail.json: everything else, in this shape:
    {"n_examples": int,
     "settings": {"ks": [...], "exclude_seen": bool, "long_history_min_events": int,
                  "bootstrap_resamples": int, "confidence": float, "bootstrap_unit": "user" | "example",
                  "seed": int},
     "models": {model: {
         "lists": {"coverage@k": float, "avg_popularity@k": float, ...},
         "intervals": {metric: [low, high], ...},          # every metric of metrics.json
         "segments": {segment: {"n_examples": int, metric: float, ...}, ...}}}}
  Segments are new_users / returning_users / short_history / long_history (see
  jobs.evaluation.metrics.example_segments); an empty segment has only "n_examples".
MLflow metric names are <model>.<metric> with '@' spelled '_at_' (MLflow rejects '@'):
every metric of metrics.json, coverage and avg_popularity at every cutoff, and for the
primary metric its interval (<model>.<metric>.ci_low / .ci_high) and its value per segment
(<model>.<segment>.<metric>).

Settings come from config["evaluation"]: ks (the primary metric's cutoff is always
included), exclude_seen, long_history_min_events, bootstrap_resamples, confidence and
bootstrap_unit (by default whole users are resampled: a user's examples are correlated); the
bootstrap is seeded with config["seed"].
"""

from __future__ import annotations

import json
import os

from jobs.evaluation.metrics import (bootstrap_intervals, evaluate_full_catalog_many, example_segments,
                                    metric_contributions, mlflow_metric_key, parse_metric, segment_metrics)
from jobs.common.schema import REPORTS, SPLIT_TEST
from jobs.common.night import Night

METRICS_JSON = "metrics.json"
METRICS_MARKDOWN = "metrics.md"
METRICS_DETAIL_JSON = "metrics_detail.json"
MODEL_NAMES = ("popularity", "session_popularity", "item_knn", "als", "user_encoder", "item_encoder",
               "fusion_feature", "fusion_stacking", "fusion_gbm", "fusion_rrf")
# The settings metrics_detail.json records: config["evaluation"]'s keys, then the bootstrap seed.
SETTING_KEYS = ("ks", "exclude_seen", "long_history_min_events", "bootstrap_resamples", "bootstrap_unit",
                "confidence", "seed")


def run(night: Night) -> dict:
    """Evaluate night ds's models on its test day; returns {"path": reports/dt=<ds>}."""
    from jobs.train.baselines import PopularityScorer
    from jobs.common.features import load_features, make_examples
    from jobs.serving.night_models import SCORING_MEMO_BYTES, load_all_scorers, night_model_dirs
    from jobs.common.lake import partition_path, replace_partition
    from jobs.common.tracking import stage_run
    config, ds = night.config, night.ds

    primary = config["mlflow"]["primary_metric"]
    settings = evaluation_settings(config)
    features = load_features(config, ds)
    test = make_examples(features.sequences, SPLIT_TEST, config["max_seq_len"])
    if len(test.targets) == 0:
        raise ValueError(f"no test-day examples in features/sequences/dt={ds}: nothing to evaluate")
    scorers = load_all_scorers(night_model_dirs(config, ds), features.items, features.n_items, SCORING_MEMO_BYTES)
    popularity = PopularityScorer.from_items(features.items, features.n_items).popularity
    segments = example_segments(test, features.sequences, SPLIT_TEST, settings["long_history_min_events"])
    # Members before fusers on each batch: the fusers reuse what their members just answered.
    results = evaluate_full_catalog_many({name: scorers[name] for name in MODEL_NAMES}, test, settings["ks"],
                                         popularity, exclude_seen=settings["exclude_seen"])
    metrics = {name: result.metrics(settings["ks"]) for name, result in results.items()}
    details = detail_report(results, metrics, segments, settings, user_ids=test.user_ids)

    report_dir = partition_path(config, REPORTS, ds)
    with replace_partition(report_dir) as staging:
        write_report(staging, metrics, primary, n_examples=len(test.targets), ds=ds, details=details)
    with stage_run(config, "evaluate", ds):
        _log_evaluation_run(report_dir, metrics, len(test.targets), details, primary)
    best = ranked_models(metrics, primary)[0]
    low, high = details["models"][best]["intervals"][primary]
    print(f"evaluate {ds}: {len(test.targets)} test examples; best {best} {primary}={metrics[best][primary]:.4f} "
          f"({settings['confidence']:.0%} CI {low:.4f}..{high:.4f}) → {report_dir}")
    return {"path": report_dir}


def evaluation_settings(config: dict) -> dict:
    """config["evaluation"] (typed and checked by jobs/common/config.py) with the cutoffs
    resolved and the bootstrap seed."""
    return {**config["evaluation"], "ks": list(report_ks(config)), "seed": config["seed"]}


def detail_report(results: dict, metrics: dict, segments: dict, settings: dict, user_ids=None) -> dict:
    """The metrics_detail.json document (shape in the module docstring).

    user_ids (one per example) makes the intervals a by-user bootstrap when
    settings["bootstrap_unit"] is "user".
    """
    groups = user_ids if settings["bootstrap_unit"] == "user" else None
    models = {}
    for name, result in results.items():
        contributions = {metric: metric_contributions(result.ranks, metric) for metric in metrics[name]}
        intervals = bootstrap_intervals(contributions, settings["bootstrap_resamples"], settings["confidence"],
                                        settings["seed"], groups=groups)
        models[name] = {"lists": result.list_metrics,
                        "intervals": {metric: list(bounds) for metric, bounds in intervals.items()},
                        "segments": segment_metrics(result.ranks, segments, settings["ks"])}
    n_examples = len(next(iter(results.values())).ranks)
    return {"n_examples": n_examples, "settings": {key: settings[key] for key in SETTING_KEYS}, "models": models}


def report_ks(config: dict) -> tuple[int, ...]:
    """The configured cutoffs, always including the primary metric's."""
    _, primary_k = parse_metric(config["mlflow"]["primary_metric"])
    return tuple(sorted({*config["evaluation"]["ks"], primary_k}))


def ranked_models(metrics: dict, primary: str) -> list[str]:
    """Model names, best primary metric first (ties by name, for a stable table)."""
    missing = [name for name, values in metrics.items() if primary not in values]
    if missing:
        raise ValueError(f"primary metric {primary!r} was not computed for {missing}")
    return sorted(metrics, key=lambda name: (-metrics[name][primary], name))


def write_report(directory: str, metrics: dict, primary: str, n_examples: int, ds: str,
                 details: dict | None = None) -> None:
    """metrics.json and metrics.md, plus metrics_detail.json and its columns when details are given."""
    with open(os.path.join(directory, METRICS_JSON), "w") as handle:
        json.dump(metrics, handle, indent=2)
    extra_columns = {}
    if details is not None:
        with open(os.path.join(directory, METRICS_DETAIL_JSON), "w") as handle:
            json.dump(details, handle, indent=2)
        extra_columns = detail_columns(details, primary)
    with open(os.path.join(directory, METRICS_MARKDOWN), "w") as handle:
        handle.write(markdown_table(metrics, primary, n_examples, ds, extra_columns))


def detail_columns(details: dict, primary: str) -> dict[str, dict[str, str]]:
    """metrics.md columns from the details: the primary metric's interval, coverage and popularity at its k."""
    _, k = parse_metric(primary)
    confidence = details["settings"]["confidence"]
    columns = {f"{primary} {confidence:.0%} CI": {}, f"coverage@{k}": {}, f"avg_popularity@{k}": {}}
    for name, model in details["models"].items():
        low, high = model["intervals"][primary]
        lists = model["lists"]
        values = (f"{low:.4f}..{high:.4f}", f"{lists[f'coverage@{k}']:.4f}", f"{lists[f'avg_popularity@{k}']:.4f}")
        for column, value in zip(columns.values(), values):
            column[name] = value
    return columns


def markdown_table(metrics: dict, primary: str, n_examples: int, ds: str,
                   extra_columns: dict[str, dict[str, str]] | None = None) -> str:
    """One row per model, sorted by the primary metric; one column per metric, then the extra
    columns ({title: {model: text}}) as given."""
    columns = list(next(iter(metrics.values())))
    extra_columns = extra_columns or {}
    titles = columns + list(extra_columns)
    lines = [f"Test split of night {ds}: {n_examples} examples, full-catalog ranking, sorted by {primary}.", "",
             "| model | " + " | ".join(titles) + " |",
             "|---|" + "---:|" * len(titles)]
    for name in ranked_models(metrics, primary):
        cells = [f"{metrics[name][column]:.4f}" for column in columns]
        cells += [extra_columns[title][name] for title in extra_columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _log_evaluation_run(report_dir: str, metrics: dict, n_examples: int, details: dict, primary: str) -> None:
    import mlflow

    mlflow.log_metrics(mlflow_evaluation_metrics(metrics, details, primary))
    mlflow.log_metric("n_test_examples", n_examples)
    for file_name in (METRICS_JSON, METRICS_MARKDOWN, METRICS_DETAIL_JSON):
        mlflow.log_artifact(os.path.join(report_dir, file_name))
    mlflow.log_figure(metrics_figure(metrics), "metrics.png")


def mlflow_evaluation_metrics(metrics: dict, details: dict, primary: str) -> dict[str, float]:
    """Flat MLflow metrics: metrics.json, list metrics, and the primary metric's interval and segments."""
    flat = {mlflow_metric_key(model, metric): value for model, values in metrics.items()
            for metric, value in values.items()}
    for model, detail in details["models"].items():
        flat.update({mlflow_metric_key(model, metric): value for metric, value in detail["lists"].items()})
        low, high = detail["intervals"][primary]
        flat[mlflow_metric_key(model, primary) + ".ci_low"] = low
        flat[mlflow_metric_key(model, primary) + ".ci_high"] = high
        for segment, values in detail["segments"].items():
            flat[f"segment.{segment}.n_examples"] = values["n_examples"]
            if primary in values:
                flat[mlflow_metric_key(f"{model}.{segment}", primary)] = values[primary]
    return flat


def metrics_figure(metrics: dict):
    """Grouped bars: one group per metric, one bar per model, for the MLflow run page."""
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    from matplotlib import pyplot as plt

    names = list(metrics)
    columns = list(next(iter(metrics.values())))
    figure, axes = plt.subplots(figsize=(4 + 1.6 * len(columns), 4))
    width = 0.8 / len(names)
    for offset, name in enumerate(names):
        positions = [c + offset * width for c in range(len(columns))]
        axes.bar(positions, [metrics[name][column] for column in columns], width, label=name)
    axes.set_xticks([c + 0.4 - width / 2 for c in range(len(columns))], columns)
    axes.set_ylim(0, 1)
    axes.set_title("Holdout metrics, full-catalog ranking")
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    plt.close(figure)
    return figure
